//! The audit trail: append-only JSON lines, each carrying the SHA-256 of the line before, so an edited, removed or reordered record is detected.
//!
//! A record is one line holding a JSON object: `seq` (1, 2, ...), `time`, `tenant`, `action`,
//! `actor`, the action's own fields and `prev` (the previous record's `hash`; 64 zeros for the
//! first), then, last, `hash`: the SHA-256 of the line's bytes up to `,"hash"` with a closing `}`
//! in its place. Hashing the bytes as written (not a re-serialization) makes the chain
//! independent of JSON formatting details. [`verify`] recomputes the chain.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Map, Value};

/// The `prev` of the first record.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How much of the file's end is read at start to find the last record.
const TAIL_BYTES: u64 = 1 << 20;

/// An open audit trail. Appends are serialized; each is one `write` of one line.
pub struct AuditLog {
    path: PathBuf,
    chain: Mutex<Chain>,
}

struct Chain {
    file: std::fs::File,
    seq: u64,
    prev: String,
}

/// Why the trail could not be opened or written: the host's fault (permissions, disk).
#[derive(Debug, thiserror::Error)]
#[error("audit trail {path}: {message}")]
pub struct AuditError {
    /// The file.
    pub path: String,
    /// What failed.
    pub message: String,
}

impl AuditLog {
    /// Open (or create, with its directory) the trail at `path` and continue its chain. A torn
    /// last line (a crash mid-write) is cut off first.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let fail = |message: String| AuditError { path: path.display().to_string(), message };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create its directory: {e}")))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| fail(format!("cannot open: {e} (check [audit] path and its permissions)")))?;
        let len = file.metadata().map_err(|e| fail(e.to_string()))?.len();
        let start = len.saturating_sub(TAIL_BYTES);
        let mut tail = Vec::new();
        file.seek(SeekFrom::Start(start)).and_then(|_| file.read_to_end(&mut tail)).map_err(|e| fail(e.to_string()))?;
        let complete = tail.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if complete < tail.len() {
            tracing::warn!(path = %path.display(), bytes = tail.len() - complete, "cutting off a torn last audit record");
            file.set_len(start + complete as u64).map_err(|e| fail(format!("cannot cut off a torn last record: {e}")))?;
        }
        let (seq, prev) = match tail[..complete].split(|b| *b == b'\n').rev().find(|l| !l.is_empty()) {
            None => (0, GENESIS.to_string()),
            Some(line) => {
                let record: Map<String, Value> = serde_json::from_slice(line)
                    .map_err(|e| fail(format!("its last record is not JSON ({e}); run `belfry audit verify`")))?;
                let seq = record.get("seq").and_then(Value::as_u64);
                let hash = record.get("hash").and_then(Value::as_str);
                match (seq, hash) {
                    (Some(seq), Some(hash)) => (seq, hash.to_string()),
                    _ => return Err(fail("its last record has no seq or hash; run `belfry audit verify`".into())),
                }
            }
        };
        Ok(AuditLog { path: path.to_path_buf(), chain: Mutex::new(Chain { file, seq, prev }) })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one record: `action` by `actor` for `tenant`, with `fields` (an object's keys).
    pub fn append(&self, tenant: &str, action: &str, actor: &str, fields: Value) -> Result<(), AuditError> {
        let mut record = match fields {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => Map::from_iter([("detail".to_string(), other)]),
        };
        record.insert("time".into(), Value::String(crate::alert::format_time(chrono::Utc::now())));
        record.insert("tenant".into(), tenant.into());
        record.insert("action".into(), action.into());
        record.insert("actor".into(), actor.into());
        let mut chain = self.chain.lock().expect("audit lock");
        record.insert("seq".into(), (chain.seq + 1).into());
        record.insert("prev".into(), Value::String(chain.prev.clone()));
        record.remove("hash");
        let mut line = serde_json::to_vec(&record).expect("a JSON map serializes");
        let hash = sha256_hex(&line);
        line.pop(); // the closing brace
        line.extend_from_slice(b",\"hash\":\"");
        line.extend_from_slice(hash.as_bytes());
        line.extend_from_slice(b"\"}\n");
        chain
            .file
            .write_all(&line)
            .map_err(|e| AuditError { path: self.path.display().to_string(), message: format!("cannot append: {e}") })?;
        chain.seq += 1;
        chain.prev = hash;
        Ok(())
    }

    /// [`AuditLog::append`], logging a failure instead of returning it (the delivery it records
    /// has happened either way).
    pub fn record(&self, tenant: &str, action: &str, actor: &str, fields: Value) {
        if let Err(e) = self.append(tenant, action, actor, fields) {
            tracing::error!(error = %e, action, "an audit record was not written");
        }
    }
}

/// Lowercase hex SHA-256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out
}

/// The `hash` a line claims and the bytes it covers (the line up to `,"hash"`, closed by `}`).
fn split_hash(line: &[u8]) -> Option<(&str, Vec<u8>)> {
    const TAIL: usize = r#","hash":""}"#.len() + 64;
    if line.len() < TAIL + 1 || !line.ends_with(b"\"}") {
        return None;
    }
    let (head, tail) = line.split_at(line.len() - TAIL);
    let hash = std::str::from_utf8(tail.strip_prefix(br#","hash":""#)?.strip_suffix(b"\"}")?).ok()?;
    let mut covered = head.to_vec();
    covered.push(b'}');
    Some((hash, covered))
}

/// A verified trail.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    /// Records checked.
    pub records: u64,
    /// The last record's hash (empty for an empty file).
    pub last_hash: String,
}

/// The first record that breaks the chain.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}: {message}")]
pub struct ChainBroken {
    /// The file.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong there.
    pub message: String,
}

/// Check every record of the trail at `path`: each line parses, its hash matches its content,
/// its `prev` is the previous line's hash and its `seq` follows the previous one.
pub fn verify(path: &Path) -> Result<Verified, ChainBroken> {
    let file = path.display().to_string();
    let broken = |line: usize, message: String| ChainBroken { file: file.clone(), line, message };
    let text = std::fs::read(path).map_err(|e| broken(0, format!("cannot read: {e}")))?;
    let mut prev = GENESIS.to_string();
    let mut seq = 0u64;
    let body = text.strip_suffix(b"\n").unwrap_or(&text);
    for (i, line) in body.split(|b| *b == b'\n').enumerate().filter(|_| !body.is_empty()) {
        let n = i + 1;
        if line.is_empty() {
            return Err(broken(n, "an empty line: a record was removed or the file edited".into()));
        }
        let record: Map<String, Value> =
            serde_json::from_slice(line).map_err(|e| broken(n, format!("not a JSON record ({e}): the line was edited or torn")))?;
        let Some((hash, covered)) = split_hash(line) else {
            return Err(broken(n, "the line does not end with its `hash`: the record was edited".into()));
        };
        if sha256_hex(&covered) != hash {
            return Err(broken(n, "the hash does not match the record's content: the record was edited".into()));
        }
        let hash = hash.to_string();
        if record.get("prev").and_then(Value::as_str) != Some(prev.as_str()) {
            return Err(broken(
                n,
                "`prev` is not the previous record's hash: a record before it was removed, inserted or reordered".into(),
            ));
        }
        if record.get("seq").and_then(Value::as_u64) != Some(seq + 1) {
            return Err(broken(n, format!("`seq` is not {}: records were removed or reordered", seq + 1)));
        }
        seq += 1;
        prev = hash;
    }
    Ok(Verified { records: seq, last_hash: if seq == 0 { String::new() } else { prev } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn trail(name: &str, records: usize) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("belfry-audit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        for i in 0..records {
            log.append("acme", "notify", "belfry", json!({"receiver": "pager", "attempt": i})).unwrap();
        }
        path
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
    }

    #[test]
    fn an_untouched_trail_verifies_and_continues_across_reopen() {
        let path = trail("intact", 3);
        let first = verify(&path).unwrap();
        assert_eq!(first.records, 3);
        AuditLog::open(&path).unwrap().append("acme", "reload", "admin", Value::Null).unwrap();
        assert_eq!(verify(&path).unwrap().records, 4, "a reopened trail continues the chain");
    }

    #[test]
    fn an_edited_record_is_named() {
        let path = trail("edited", 4);
        let mut l = lines(&path);
        l[2] = l[2].replace("\"pager\"", "\"slack\"");
        std::fs::write(&path, l.join("\n") + "\n").unwrap();
        let err = verify(&path).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("edited"), "{err}");
    }

    #[test]
    fn a_removed_or_reordered_record_is_named() {
        let path = trail("removed", 4);
        let mut l = lines(&path);
        l.remove(1);
        std::fs::write(&path, l.join("\n") + "\n").unwrap();
        assert_eq!(verify(&path).unwrap_err().line, 2);

        let path = trail("reordered", 4);
        let mut l = lines(&path);
        l.swap(2, 3);
        std::fs::write(&path, l.join("\n") + "\n").unwrap();
        let err = verify(&path).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("reordered"), "{err}");
    }

    #[test]
    fn a_torn_last_line_is_cut_off_at_open() {
        let path = trail("torn", 2);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":3,\"ti").unwrap();
        drop(f);
        AuditLog::open(&path).unwrap().append("acme", "notify", "belfry", Value::Null).unwrap();
        assert_eq!(verify(&path).unwrap().records, 3);
    }
}
