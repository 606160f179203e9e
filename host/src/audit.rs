//! The audit trail: append-only JSON lines, each carrying the SHA-256 of the line before, so an edited, removed or reordered record is detected.
//!
//! A record is one line holding a JSON object: `time`, `tenant`, `action`, `actor`, the
//! action's own fields, `seq` (1, 2, ...) and `prev` (the previous record's `hash`; 64 zeros
//! for the first), then, last, `hash`: the SHA-256 of the line's bytes up to `,"hash"` with a
//! closing `}` in its place. Hashing the bytes as written (not a re-serialization) makes the
//! chain independent of JSON formatting details. [`verify`] recomputes the chain.
//!
//! Records are chained and written by the trail's own thread, so a delivery never waits on the
//! file or on another delivery's record; what queues up meanwhile goes in one `write`.
//!
//! When the live file reaches its size limit it is renamed `<name>.1`, `<name>.2`, ... (the
//! highest number the newest) and a new live file continues the chain: its first record's
//! `prev` is the last hash of the file before, and `seq` goes on.

use serde::Deserialize;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use serde::Serialize;
use serde_json::{Map, Value};

/// The `prev` of the first record.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How much of the file's end is read at start to find the last record.
const TAIL_BYTES: u64 = 1 << 20;

/// An open audit trail. [`AuditLog::record`] hands a record to the trail's writer thread,
/// which chains and writes whatever has queued in one `write`; [`AuditLog::append`] writes at
/// once. Either way a record's `seq`, `prev` and `hash` are set when it is written.
pub struct AuditLog {
    trail: Arc<Trail>,
    queue: mpsc::Sender<Queued>,
}

/// The file and its chain, shared with the writer thread.
struct Trail {
    path: PathBuf,
    max_bytes: u64,
    chain: Mutex<Chain>,
}

/// What the writer thread is handed.
enum Queued {
    /// A record's body: `{"time":...` up to its last field, without `seq`, `prev`, `hash`.
    Record(Vec<u8>),
    /// Answer once everything queued before is written.
    Flush(mpsc::SyncSender<()>),
}

/// How long the writer thread lets records gather after a write.
const GATHER: std::time::Duration = std::time::Duration::from_millis(2);

/// Most records the writer thread chains into one `write`.
const MAX_RECORDS_PER_WRITE: usize = 1024;

struct Chain {
    file: std::fs::File,
    /// Bytes in the live file.
    bytes: u64,
    /// The last record written: its `seq` and `hash`.
    seq: u64,
    prev: String,
}

impl Chain {
    /// Append `lines` (chained up to `seq`, whose hash is `last`) and move the chain there.
    fn commit(&mut self, lines: &mut Vec<u8>, seq: u64, last: &str) -> Result<(), String> {
        if lines.is_empty() {
            return Ok(());
        }
        self.file.write_all(lines).map_err(|e| format!("cannot append: {e}"))?;
        self.bytes += lines.len() as u64;
        self.seq = seq;
        self.prev = last.to_string();
        lines.clear();
        Ok(())
    }
}

/// The rotated files of the trail at `path` (`<name>.<n>`), oldest first.
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return Vec::new() };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let file = e.file_name().to_str()?.to_string();
            let n = file.strip_prefix(name)?.strip_prefix('.')?.parse::<u64>().ok()?;
            Some((n, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// The `seq` and `hash` of the last complete record in `tail`.
fn last_record(tail: &[u8]) -> Result<Option<(u64, String)>, String> {
    let Some(line) = tail.split(|b| *b == b'\n').rev().find(|l| !l.is_empty()) else { return Ok(None) };
    let record: Map<String, Value> =
        serde_json::from_slice(line).map_err(|e| format!("its last record is not JSON ({e}); run `belfry audit verify`"))?;
    match (record.get("seq").and_then(Value::as_u64), record.get("hash").and_then(Value::as_str)) {
        (Some(seq), Some(hash)) => Ok(Some((seq, hash.to_string()))),
        _ => Err("its last record has no seq or hash; run `belfry audit verify`".into()),
    }
}

/// The last `TAIL_BYTES` of a file.
fn tail_of(file: &mut std::fs::File) -> std::io::Result<(u64, Vec<u8>)> {
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    let mut tail = Vec::new();
    file.seek(SeekFrom::Start(start))?;
    file.read_to_end(&mut tail)?;
    Ok((start, tail))
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
    /// Open (or create, with its directory) the trail at `path` and continue its chain (from
    /// the newest rotated file when the live one is empty); rotate past `max_bytes`. A torn
    /// last line (a crash mid-write) is cut off first.
    pub fn open(path: &Path, max_bytes: u64) -> Result<AuditLog, AuditError> {
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
        let (start, tail) = tail_of(&mut file).map_err(|e| fail(e.to_string()))?;
        let complete = tail.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if complete < tail.len() {
            tracing::warn!(path = %path.display(), bytes = tail.len() - complete, "cutting off a torn last audit record");
            file.set_len(start + complete as u64).map_err(|e| fail(format!("cannot cut off a torn last record: {e}")))?;
        }
        let bytes = start + complete as u64;
        let last = match last_record(&tail[..complete]).map_err(fail)? {
            Some(last) => Some(last),
            // An empty live file after a rotation: the chain goes on from the newest rotated file.
            None => match rotated_files(path).last() {
                Some(newest) => {
                    let mut f = std::fs::File::open(newest).map_err(|e| fail(format!("cannot read {}: {e}", newest.display())))?;
                    last_record(&tail_of(&mut f).map_err(|e| fail(e.to_string()))?.1).map_err(fail)?
                }
                None => None,
            },
        };
        let (seq, prev) = last.unwrap_or((0, GENESIS.to_string()));
        let trail =
            Arc::new(Trail { path: path.to_path_buf(), max_bytes: max_bytes.max(1), chain: Mutex::new(Chain { file, bytes, seq, prev }) });
        let (queue, queued) = mpsc::channel();
        let writer = trail.clone();
        std::thread::Builder::new()
            .name("belfry-audit".into())
            .spawn(move || writer.write_queued(queued))
            .map_err(|e| fail(format!("cannot start its writer thread: {e}")))?;
        Ok(AuditLog { trail, queue })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.trail.path
    }

    /// Append one record now: `action` by `actor` for `tenant`, with `fields`: a struct or map
    /// whose keys are the record's own (anything else is kept under `detail`). The keys the
    /// trail sets (`time`, `tenant`, `action`, `actor`, `seq`, `prev`, `hash`) are not for fields.
    pub fn append(&self, tenant: &str, action: &str, actor: &str, fields: &impl Serialize) -> Result<(), AuditError> {
        self.trail.write([body(tenant, action, actor, fields)])
    }

    /// Queue one record (as [`AuditLog::append`]) for the writer thread: the caller never waits
    /// on the file, and records that queue up meanwhile share one `write`. A delivery writes
    /// one for every notification (docs/BENCHMARKS.md). A failure is logged.
    pub fn record(&self, tenant: &str, action: &str, actor: &str, fields: &impl Serialize) {
        if let Err(mpsc::SendError(Queued::Record(body))) = self.queue.send(Queued::Record(body(tenant, action, actor, fields)))
            && let Err(e) = self.trail.write([body])
        {
            tracing::error!(error = %e, action, "an audit record was not written");
        }
    }

    /// Wait until every record queued so far is written (at shutdown).
    pub fn flush(&self) {
        let (done, written) = mpsc::sync_channel(1);
        if self.queue.send(Queued::Flush(done)).is_ok() {
            let _ = written.recv();
        }
    }
}

/// A record's body: `{"time":..,"tenant":..,"action":..,"actor":..` and the fields' keys,
/// built without an intermediate map.
fn body(tenant: &str, action: &str, actor: &str, fields: &impl Serialize) -> Vec<u8> {
    let mut line = Vec::with_capacity(512);
    line.extend_from_slice(b"{\"time\":\"");
    line.extend_from_slice(crate::alert::format_time(chrono::Utc::now()).as_bytes());
    line.push(b'"');
    for (key, value) in [("tenant", tenant), ("action", action), ("actor", actor)] {
        write!(line, ",\"{key}\":").expect("writing to a Vec cannot fail");
        serde_json::to_writer(&mut line, value).expect("a string serializes");
    }
    let at = line.len();
    line.push(b',');
    serde_json::to_writer(&mut line, fields).expect("audit fields serialize to JSON");
    if line[at + 1] == b'{' {
        // An object: its keys join the record's (none for `{}`).
        line.remove(at + 1);
        line.pop();
        if line.len() == at + 1 {
            line.pop();
        }
    } else if &line[at + 1..] == b"null" {
        line.truncate(at);
    } else {
        line.splice(at + 1..at + 1, b"\"detail\":".iter().copied());
    }
    line
}

impl Trail {
    /// The writer thread: chain and write what is queued, until the log is dropped.
    fn write_queued(&self, queued: mpsc::Receiver<Queued>) {
        let mut batch = Vec::with_capacity(MAX_RECORDS_PER_WRITE);
        while let Ok(first) = queued.recv() {
            let mut flushes = Vec::new();
            for item in std::iter::once(first).chain(queued.try_iter()) {
                match item {
                    Queued::Record(body) => batch.push(body),
                    Queued::Flush(done) => flushes.push(done),
                }
                if batch.len() == MAX_RECORDS_PER_WRITE {
                    break;
                }
            }
            let records = batch.len();
            if let Err(e) = self.write(batch.drain(..)) {
                tracing::error!(error = %e, records, "audit records were not written");
            }
            for done in flushes {
                let _ = done.send(());
            }
            // Let records gather: under load a wake-up per record would cost more than the record.
            if records < MAX_RECORDS_PER_WRITE {
                std::thread::sleep(GATHER);
            }
        }
    }

    /// Chain `bodies` and append them: one `write` (more when the file rotates in between).
    /// The chain advances only past what was written.
    fn write(&self, bodies: impl IntoIterator<Item = Vec<u8>>) -> Result<(), AuditError> {
        let fail = |message: String| AuditError { path: self.path.display().to_string(), message };
        let mut chain = self.chain.lock().expect("audit lock");
        let (mut seq, mut prev) = (chain.seq, chain.prev.clone());
        let mut out = Vec::new();
        for mut line in bodies {
            write!(line, ",\"seq\":{},\"prev\":\"{prev}\"}}", seq + 1).expect("writing to a Vec cannot fail");
            let hash = sha256_hex(&line);
            line.pop(); // the closing brace
            writeln!(line, ",\"hash\":\"{hash}\"}}").expect("writing to a Vec cannot fail");
            out.extend_from_slice(&line);
            (seq, prev) = (seq + 1, hash);
            if chain.bytes + out.len() as u64 >= self.max_bytes {
                chain.commit(&mut out, seq, &prev).map_err(fail)?;
                self.rotate(&mut chain).map_err(fail)?;
            }
        }
        chain.commit(&mut out, seq, &prev).map_err(fail)
    }

    /// Rename the live file to the next `<name>.<n>` and start a new one.
    fn rotate(&self, chain: &mut Chain) -> Result<(), String> {
        let n = rotated_files(&self.path).last().and_then(|p| p.extension()?.to_str()?.parse::<u64>().ok()).map_or(1, |n| n + 1);
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(format!(".{n}"));
        std::fs::rename(&self.path, &rotated).map_err(|e| format!("cannot rotate: {e}"))?;
        chain.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("cannot start a new file after rotating: {e}"))?;
        chain.bytes = 0;
        Ok(())
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

/// Check every record of the trail at `path`, its rotated files first (oldest first): each
/// line parses, its hash matches its content, its `prev` is the previous record's hash and its
/// `seq` follows the previous one, across files.
pub fn verify(path: &Path) -> Result<Verified, ChainBroken> {
    let mut prev = GENESIS.to_string();
    let mut seq = 0u64;
    let mut files = rotated_files(path);
    files.push(path.to_path_buf());
    for file in files {
        verify_file(&file, &mut prev, &mut seq)?;
    }
    Ok(Verified { records: seq, last_hash: if seq == 0 { String::new() } else { prev } })
}

fn verify_file(path: &Path, prev: &mut String, seq: &mut u64) -> Result<(), ChainBroken> {
    let file = path.display().to_string();
    let broken = |line: usize, message: String| ChainBroken { file: file.clone(), line, message };
    let text = std::fs::read(path).map_err(|e| broken(0, format!("cannot read: {e}")))?;
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
        if record.get("seq").and_then(Value::as_u64) != Some(*seq + 1) {
            return Err(broken(n, format!("`seq` is not {}: records were removed or reordered", *seq + 1)));
        }
        *seq += 1;
        *prev = hash;
    }
    Ok(())
}

// Its section of the configuration file, which `config` assembles (docs/CONFIG.md).

/// `[audit]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The hash-chained audit trail (JSON lines), relative to the config file; created on first
    /// start, appended to afterwards. `belfry audit verify` checks it.
    #[serde(default = "default_audit_path")]
    pub path: PathBuf,
    /// The live file is renamed `<path>.<n>` once it reaches this size; the chain goes on.
    #[serde(default = "default_audit_max_bytes")]
    pub max_bytes: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { path: default_audit_path(), max_bytes: default_audit_max_bytes() }
    }
}

fn default_audit_path() -> PathBuf {
    PathBuf::from("data/audit.jsonl")
}

fn default_audit_max_bytes() -> u64 {
    100 << 20
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A trail of `records` records in a fresh directory, removed when the guard drops.
    fn trail(records: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, u64::MAX).unwrap();
        for i in 0..records {
            log.append("acme", "notify", "belfry", &json!({"receiver": "pager", "attempt": i})).unwrap();
        }
        (dir, path)
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
    }

    #[test]
    fn an_untouched_trail_verifies_and_continues_across_reopen() {
        let (_dir, path) = trail(3);
        let first = verify(&path).unwrap();
        assert_eq!(first.records, 3);
        AuditLog::open(&path, u64::MAX).unwrap().append("acme", "reload", "admin", &Value::Null).unwrap();
        assert_eq!(verify(&path).unwrap().records, 4, "a reopened trail continues the chain");
    }

    #[test]
    fn fields_of_every_shape_become_the_records_keys_and_verify() {
        #[derive(Serialize)]
        struct Attempt<'a> {
            plugin: &'a str,
            attempt: u32,
            remote_id: Option<&'a str>,
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, u64::MAX).unwrap();
        log.append("acme", "notify", "belfry", &Attempt { plugin: "slack", attempt: 2, remote_id: None }).unwrap();
        log.append("acme", "silence.set", "ana \"the\" admin", &json!({"comment": "line\nbreak"})).unwrap();
        log.append("acme", "reload", "api", &json!({})).unwrap();
        log.append("acme", "reload", "api", &Value::Null).unwrap();
        log.append("acme", "odd", "api", &json!(["a", 1])).unwrap();
        assert_eq!(verify(&path).unwrap().records, 5);
        let records: Vec<Map<String, Value>> = lines(&path).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        let keys = |r: &Map<String, Value>| r.keys().cloned().collect::<std::collections::BTreeSet<String>>();
        let base = ["action", "actor", "hash", "prev", "seq", "tenant", "time"].map(String::from);
        let with = |extra: &[&str]| base.iter().cloned().chain(extra.iter().map(|k| k.to_string())).collect();
        assert_eq!(keys(&records[0]), with(&["attempt", "plugin", "remote_id"]));
        assert_eq!(
            (records[0]["plugin"].as_str(), records[0]["attempt"].as_u64(), &records[0]["remote_id"]),
            (Some("slack"), Some(2), &Value::Null)
        );
        assert_eq!(records[1]["actor"], "ana \"the\" admin");
        assert_eq!(records[1]["comment"], "line\nbreak");
        assert_eq!(keys(&records[2]), with(&[]));
        assert_eq!(keys(&records[3]), with(&[]));
        assert_eq!(records[4]["detail"], json!(["a", 1]));
        assert_eq!(records[4]["seq"], 5);
        assert_eq!(records[4]["prev"], records[3]["hash"]);
    }

    #[test]
    fn flush_returns_once_every_queued_record_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, u64::MAX).unwrap();
        for i in 0..100 {
            log.record("acme", "notify", "belfry", &json!({"attempt": i}));
        }
        log.flush();
        assert_eq!(lines(&path).len(), 100);
        assert_eq!(verify(&path).unwrap().records, 100);
    }

    #[test]
    fn an_edited_record_is_named() {
        let (_dir, path) = trail(4);
        let mut l = lines(&path);
        l[2] = l[2].replace("\"pager\"", "\"slack\"");
        std::fs::write(&path, l.join("\n") + "\n").unwrap();
        let err = verify(&path).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("edited"), "{err}");
    }

    #[test]
    fn a_removed_or_reordered_record_is_named() {
        let (_dir, path) = trail(4);
        let mut l = lines(&path);
        l.remove(1);
        std::fs::write(&path, l.join("\n") + "\n").unwrap();
        assert_eq!(verify(&path).unwrap_err().line, 2);

        let (_dir, path) = trail(4);
        let mut l = lines(&path);
        l.swap(2, 3);
        std::fs::write(&path, l.join("\n") + "\n").unwrap();
        let err = verify(&path).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("reordered"), "{err}");
    }

    #[test]
    fn rotation_by_size_keeps_one_chain_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, 600).unwrap();
        for i in 0..10 {
            log.append("acme", "notify", "belfry", &json!({"attempt": i})).unwrap();
        }
        drop(log);
        let rotated = rotated_files(&path);
        assert!(rotated.len() >= 2, "{rotated:?}");
        assert_eq!(verify(&path).unwrap().records, 10, "one chain across {} files", rotated.len() + 1);
        // A crash right after a rotation's rename leaves no live file: the chain continues
        // from the newest rotated file.
        let next = format!("{}.{}", path.display(), rotated.len() + 1);
        std::fs::rename(&path, &next).unwrap();
        AuditLog::open(&path, 600).unwrap().append("acme", "reload", "api", &Value::Null).unwrap();
        assert_eq!(verify(&path).unwrap().records, 11);
        let rotated = rotated_files(&path);
        // A removed middle file is caught at the first record after the gap.
        std::fs::remove_file(&rotated[1]).unwrap();
        let err = verify(&path).unwrap_err();
        assert!(err.message.contains("`prev`"), "{err}");
    }

    #[test]
    fn a_torn_last_line_is_cut_off_at_open() {
        let (_dir, path) = trail(2);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":3,\"ti").unwrap();
        drop(f);
        AuditLog::open(&path, u64::MAX).unwrap().append("acme", "notify", "belfry", &Value::Null).unwrap();
        assert_eq!(verify(&path).unwrap().records, 3);
    }
}
