//! Secrets in configuration values: `${ENV_VAR}`, `${file:/path}` and `enc:v1:<key-id>:<base64>` (AES-256-GCM with ring), resolved at load, never shown.
//!
//! A receiver's `config` strings may hold references; Belfry resolves them when the
//! configuration loads and hands the plugin the plain values, for that receiver only. Every
//! resolved value is treated as a secret: masked in every log line, error and API answer
//! whatever the plugin's schema says.
//!
//! `enc:v1:<key-id>:<base64 of nonce ‖ ciphertext ‖ tag>` is AES-256-GCM under the master key
//! `<key-id>`, with the key id as associated data (a value cannot be moved under another key
//! id). Master keys are 32 random bytes, base64, read from the environment or a file named in
//! `[secrets.keys]`; several ids may be live at once, so keys rotate without downtime.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// The prefix of an encrypted value.
pub const ENCRYPTED_PREFIX: &str = "enc:v1:";

/// The master keys, by id.
#[derive(Default)]
pub struct Keyring {
    keys: BTreeMap<String, LessSafeKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key ids only: key material never leaves this module.
        f.debug_struct("Keyring").field("ids", &self.keys.keys().collect::<Vec<_>>()).finish()
    }
}

/// Base64 (standard alphabet, padded), the way keys and ciphertexts are written.
mod b64 {
    use ::base64::Engine;
    use ::base64::engine::general_purpose::STANDARD;

    pub fn encode(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    pub fn decode(text: &str) -> Option<Vec<u8>> {
        STANDARD.decode(text.trim()).ok()
    }
}

impl Keyring {
    /// Load the keys `[secrets.keys]` names: `id = "env:NAME"` or `id = "file:/path"`
    /// (relative to `base_dir`). An error names the id and what to fix, never key material.
    pub fn load(sources: &BTreeMap<String, String>, base_dir: &Path) -> Result<Keyring, (String, String)> {
        let mut keys = BTreeMap::new();
        for (id, source) in sources {
            let fail = |message: String| (format!("secrets.keys.{id}"), message);
            if id.is_empty() || id.contains(':') {
                return Err(fail("a key id must be non-empty and contain no `:`".into()));
            }
            let text = if let Some(var) = source.strip_prefix("env:") {
                std::env::var(var).map_err(|_| fail(format!("environment variable `{var}` is not set (export the base64 key in it)")))?
            } else if let Some(file) = source.strip_prefix("file:") {
                let path = base_dir.join(file);
                std::fs::read_to_string(&path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?
            } else {
                return Err(fail("write `env:NAME` or `file:/path` (the key itself never goes in the config)".into()));
            };
            let bytes = b64::decode(&text)
                .filter(|b| b.len() == 32)
                .ok_or_else(|| fail("the key must be 32 bytes in base64 (`belfry secrets keygen` makes one)".into()))?;
            let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| fail("not an AES-256 key".into()))?;
            keys.insert(id.clone(), LessSafeKey::new(key));
        }
        Ok(Keyring { keys })
    }

    /// The ids of the loaded keys.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// `enc:v1:<key_id>:...` for `plaintext`.
    pub fn encrypt(&self, key_id: &str, plaintext: &str) -> Result<String, String> {
        let key = self.key(key_id)?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| "the system's random source failed".to_string())?;
        let mut sealed = plaintext.as_bytes().to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(key_id.as_bytes()), &mut sealed)
            .map_err(|_| "encryption failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{ENCRYPTED_PREFIX}{key_id}:{}", b64::encode(&out)))
    }

    /// The plaintext of an `enc:v1:` value. The error never contains any of the value.
    pub fn decrypt(&self, value: &str) -> Result<String, String> {
        let rest = value.strip_prefix(ENCRYPTED_PREFIX).ok_or("not an `enc:v1:` value")?;
        let (key_id, data) = rest.split_once(':').ok_or("an `enc:v1:` value is `enc:v1:<key-id>:<base64>`")?;
        let key = self.key(key_id)?;
        let bytes = b64::decode(data).filter(|b| b.len() > NONCE_LEN).ok_or("the encrypted value is not valid base64")?;
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_string())?;
        let mut sealed = sealed.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(key_id.as_bytes()), &mut sealed)
            .map_err(|_| format!("cannot decrypt with key `{key_id}`: the value was altered, or encrypted under another key"))?;
        String::from_utf8(plain.to_vec()).map_err(|_| "the decrypted value is not UTF-8".to_string())
    }

    fn key(&self, key_id: &str) -> Result<&LessSafeKey, String> {
        self.keys.get(key_id).ok_or_else(|| {
            let known: Vec<&str> = self.ids().collect();
            format!(
                "no master key `{key_id}` in [secrets.keys] (known: {})",
                if known.is_empty() { "none".into() } else { known.join(", ") }
            )
        })
    }
}

/// A new random master key, base64.
pub fn new_key() -> String {
    let mut key = [0u8; 32];
    SystemRandom::new().fill(&mut key).expect("the system's random source");
    b64::encode(&key)
}

/// What a configuration string resolves to.
#[derive(Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The value the plugin gets.
    pub value: String,
    /// The secrets in it (each resolved reference), to mask wherever they could show.
    pub secrets: Vec<String>,
}

/// Resolve one configuration string: a whole-string `enc:v1:` value, or `${ENV_VAR}` and
/// `${file:/path}` references anywhere in it (`$${` is a literal `${`). The error names what
/// is missing, never a secret.
pub fn resolve(text: &str, keyring: &Keyring, base_dir: &Path) -> Result<Resolved, String> {
    if text.starts_with(ENCRYPTED_PREFIX) {
        let value = keyring.decrypt(text)?;
        return Ok(Resolved { secrets: vec![value.clone()], value });
    }
    let mut value = String::with_capacity(text.len());
    let mut secrets = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        if rest[..at].ends_with('$') {
            value.push_str(&rest[..at - 1]);
            value.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        value.push_str(&rest[..at]);
        let end = rest[at..].find('}').ok_or("`${` without its closing `}`")? + at;
        let reference = &rest[at + 2..end];
        let resolved = if let Some(file) = reference.strip_prefix("file:") {
            let path = base_dir.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
            text.trim_end_matches(['\n', '\r']).to_string()
        } else {
            std::env::var(reference)
                .map_err(|_| format!("environment variable `{reference}` is not set (export it before starting Belfry)"))?
        };
        if !resolved.is_empty() {
            secrets.push(resolved.clone());
        }
        value.push_str(&resolved);
        rest = &rest[end + 1..];
    }
    value.push_str(rest);
    Ok(Resolved { value, secrets })
}

/// Re-encrypt every `enc:v1:` value in `text` (a TOML file) under `to`, leaving everything
/// else as it is. Returns the new text and how many values changed.
pub fn rotate_text(text: &str, keyring: &Keyring, to: &str) -> Result<(String, usize), String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut count = 0;
    while let Some(at) = rest.find(ENCRYPTED_PREFIX) {
        out.push_str(&rest[..at]);
        let len = rest[at..].find(|c: char| c == '"' || c == '\'' || c.is_whitespace()).unwrap_or(rest.len() - at);
        let value = &rest[at..at + len];
        let plain = keyring.decrypt(value)?;
        out.push_str(&keyring.encrypt(to, &plain)?);
        count += 1;
        rest = &rest[at + len..];
    }
    out.push_str(rest);
    Ok((out, count))
}

// Its section of the configuration file, which `config` assembles (docs/CONFIG.md).

/// `[secrets]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// Master keys by id: `id = "env:NAME"` or `id = "file:/path"`, each holding 32 bytes of
    /// base64 (`belfry secrets keygen`). Several ids may be live, so keys rotate.
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(ids: &[&str]) -> Keyring {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut sources = BTreeMap::new();
        for id in ids {
            std::fs::write(dir.join(id), new_key()).unwrap();
            sources.insert(id.to_string(), format!("file:{}", dir.join(id).display()));
        }
        Keyring::load(&sources, dir).unwrap()
    }

    #[test]
    fn encrypted_values_decrypt_only_with_their_key_and_unaltered() {
        let k = keyring(&["k1", "k2"]);
        let sealed = k.encrypt("k1", "xoxb-secret").unwrap();
        assert!(sealed.starts_with("enc:v1:k1:") && !sealed.contains("xoxb"));
        assert_eq!(k.decrypt(&sealed).unwrap(), "xoxb-secret");
        assert_ne!(k.encrypt("k1", "xoxb-secret").unwrap(), sealed, "a fresh nonce each time");
        let moved = sealed.replace("enc:v1:k1:", "enc:v1:k2:");
        let err = k.decrypt(&moved).unwrap_err();
        assert!(err.contains("cannot decrypt with key `k2`") && !err.contains("xoxb"), "{err}");
        let mut tampered = sealed.clone();
        // Flip one base64 digit of the ciphertext (to another digit, whatever it was).
        let at = tampered.len() - 6;
        let flipped = if &tampered[at..at + 1] == "A" { "B" } else { "A" };
        tampered.replace_range(at..at + 1, flipped);
        assert_ne!(tampered, sealed);
        assert!(k.decrypt(&tampered).is_err());
        assert!(k.decrypt("enc:v1:nope:AAAA").unwrap_err().contains("no master key `nope`"));
    }

    #[test]
    fn references_resolve_and_are_reported_as_secrets() {
        let k = keyring(&[]);
        // SAFETY: tests in this module are the only readers of this variable.
        unsafe { std::env::set_var("BELFRY_TEST_TOKEN", "t0k3n") };
        let r = resolve("Bearer ${BELFRY_TEST_TOKEN}", &k, Path::new("/")).unwrap();
        assert_eq!(r, Resolved { value: "Bearer t0k3n".into(), secrets: vec!["t0k3n".into()] });
        assert_eq!(resolve("costs $${HOME} and $5", &k, Path::new("/")).unwrap().value, "costs ${HOME} and $5");
        let err = resolve("${BELFRY_TEST_UNSET_VAR}", &k, Path::new("/")).unwrap_err();
        assert!(err.contains("`BELFRY_TEST_UNSET_VAR` is not set"), "{err}");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("pw"), "hunter2\n").unwrap();
        assert_eq!(resolve("${file:pw}", &k, dir).unwrap().value, "hunter2");
        assert_eq!(resolve("plain", &k, dir).unwrap(), Resolved { value: "plain".into(), secrets: vec![] });
    }

    #[test]
    fn rotation_re_encrypts_every_value_and_keeps_the_rest() {
        let k = keyring(&["old", "new"]);
        let a = k.encrypt("old", "alpha").unwrap();
        let text = format!("url = \"{a}\"\nname = \"x\"\nlist = ['{}']\n", k.encrypt("old", "beta").unwrap());
        let (rotated, count) = rotate_text(&text, &k, "new").unwrap();
        assert_eq!(count, 2);
        assert!(!rotated.contains("enc:v1:old:") && rotated.contains("name = \"x\""));
        let values: Vec<String> =
            rotated.split(['"', '\'']).filter(|s| s.starts_with("enc:v1:new:")).map(|s| k.decrypt(s).unwrap()).collect();
        assert_eq!(values, ["alpha", "beta"]);
    }
}
