//! The alert model shared by every stage: label sets, Alertmanager-compatible fingerprints, status.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};

/// Labels or annotations: unique names, kept sorted (Alertmanager sorts wherever order shows).
pub type LabelSet = BTreeMap<String, String>;

/// One alert as accepted from a client.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// Identifying labels; never empty once validated.
    pub labels: LabelSet,
    /// Informational annotations.
    pub annotations: LabelSet,
    /// When the condition started.
    pub starts_at: DateTime<Utc>,
    /// When it ended, or is expected to end; `None` for "unknown".
    pub ends_at: Option<DateTime<Utc>>,
    /// Link back to the alert's source.
    pub generator_url: String,
}

/// Firing or resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The condition holds.
    Firing,
    /// The condition no longer holds.
    Resolved,
}

impl Alert {
    /// Alertmanager's fingerprint of the labels.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.labels)
    }

    /// Resolved once `ends_at` is reached, as in Alertmanager's `Alert.Resolved()`.
    pub fn status_at(&self, now: DateTime<Utc>) -> Status {
        match self.ends_at {
            Some(end) if end <= now => Status::Resolved,
            _ => Status::Firing,
        }
    }
}

/// Alertmanager's alert fingerprint: FNV-1a (64 bit) over the label names in sorted order, each
/// name and value followed by the separator byte 0xff (prometheus/common `labelSetToFingerprint`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

const FNV_OFFSET: u64 = 14_695_981_039_346_656_037;
const FNV_PRIME: u64 = 1_099_511_628_211;
const SEPARATOR: u8 = 0xff;

impl Fingerprint {
    /// The fingerprint of `labels` (a `BTreeMap`, so already in name order).
    pub fn of(labels: &LabelSet) -> Self {
        let mut hash = FNV_OFFSET;
        let mut add = |bytes: &[u8]| {
            for &b in bytes {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(FNV_PRIME);
            }
        };
        for (name, value) in labels {
            add(name.as_bytes());
            add(&[SEPARATOR]);
            add(value.as_bytes());
            add(&[SEPARATOR]);
        }
        Fingerprint(hash)
    }
}

impl fmt::Display for Fingerprint {
    /// 16 lowercase hex digits, as Alertmanager prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Whether `name` is a valid Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Alertmanager's `LabelSet.String()`: `{a="1", b="2"}`, names sorted, values Go-quoted.
pub fn format_label_set(labels: &LabelSet) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(name);
        out.push('=');
        // serde_json's string escaping matches Go's %q for the characters labels carry.
        out.push_str(&serde_json::to_string(value).expect("strings always serialize"));
    }
    out.push('}');
    out
}

/// RFC 3339 in UTC with as many fractional digits as needed, like Go's `time.RFC3339Nano`.
pub fn format_time(t: DateTime<Utc>) -> String {
    let s = t.to_rfc3339_opts(SecondsFormat::Nanos, true);
    match s.split_once('.') {
        Some((secs, frac)) => {
            let digits = frac.trim_end_matches('Z').trim_end_matches('0');
            if digits.is_empty() { format!("{secs}Z") } else { format!("{secs}.{digits}Z") }
        }
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn fingerprints_match_prometheus_common_vectors() {
        // prometheus/common model/signature_test.go and labelset fingerprint tests.
        assert_eq!(Fingerprint::of(&LabelSet::new()).0, 14_695_981_039_346_656_037);
        let l = labels(&[("name", "garland, briggs"), ("fear", "love is not enough")]);
        assert_eq!(Fingerprint::of(&l).0, 5_799_056_148_416_392_346);
        assert_eq!(Fingerprint::of(&l).to_string(), "507a62d79ee76c9a");
    }

    #[test]
    fn label_sets_print_like_alertmanager() {
        let l = labels(&[("job", "api"), ("alertname", "High \"latency\"")]);
        assert_eq!(format_label_set(&l), r#"{alertname="High \"latency\"", job="api"}"#);
        assert_eq!(format_label_set(&LabelSet::new()), "{}");
    }

    #[test]
    fn times_print_like_go_rfc3339nano() {
        let t = DateTime::parse_from_rfc3339("2026-11-23T18:30:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(format_time(t), "2026-11-23T18:30:00Z");
        let t = DateTime::parse_from_rfc3339("2026-11-23T18:30:00.120+01:00").unwrap().with_timezone(&Utc);
        assert_eq!(format_time(t), "2026-11-23T17:30:00.12Z");
    }

    #[test]
    fn an_alert_resolves_when_its_end_passes() {
        let t0 = Utc::now();
        let mut a = Alert {
            labels: labels(&[("alertname", "x")]),
            annotations: LabelSet::new(),
            starts_at: t0,
            ends_at: None,
            generator_url: String::new(),
        };
        assert_eq!(a.status_at(t0), Status::Firing);
        a.ends_at = Some(t0);
        assert_eq!(a.status_at(t0), Status::Resolved);
        assert_eq!(a.status_at(t0 - chrono::Duration::seconds(1)), Status::Firing);
    }
}
