//! Decodes and validates Alertmanager's postable alerts (`POST /api/v2/alerts`); errors name the array index and field.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::alert::{Alert, LabelSet};

/// One element of the request array, as Prometheus sends it (`PostableAlert` in Alertmanager's OpenAPI).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostableAlert {
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
}

/// A rejected request: where in the body, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestError {
    /// JSON path of the offending value, e.g. `[2].labels.severity` (`.` for the whole body).
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for IngestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Go's zero time, which Prometheus and amtool send for "unset".
const GO_ZERO_TIME_YEAR: i32 = 1;

/// Decode a JSON request body into `T`. An error names the JSON path of the offending value
/// (`.` for the whole body) and says what was `expected`; trailing data is an error too.
pub fn decode_json<T: serde::de::DeserializeOwned>(body: &[u8], expected: &str) -> Result<T, IngestError> {
    // Tracking the path costs on every value; only a body that fails is decoded again with it.
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        IngestError { path: if path.is_empty() { ".".into() } else { path }, message: format!("{} (expected {expected})", e.inner()) }
    })?;
    de.end().map_err(|e| IngestError { path: ".".into(), message: format!("trailing data after the JSON value: {e}") })?;
    Ok(value)
}

/// Decode a request body into validated alerts, with Alertmanager's defaulting: an unset
/// `startsAt` becomes `endsAt` if that is set, else `now`.
pub fn decode_postable_alerts(body: &[u8], now: DateTime<Utc>, limits: &TenantLimits) -> Result<Vec<Alert>, IngestError> {
    let postable: Vec<PostableAlert> = decode_json(body, "a JSON array of alerts with a `labels` object")?;
    if postable.len() > limits.max_alerts_per_request {
        return Err(IngestError {
            path: ".".into(),
            message: format!(
                "{} alerts in one request; the limit is {} (max_alerts_per_request): send smaller batches",
                postable.len(),
                limits.max_alerts_per_request
            ),
        });
    }
    postable.into_iter().enumerate().map(|(i, p)| validate(i, p, now, limits)).collect()
}

/// The first name or value in `set` over the limits, as (field path, message).
fn check_sizes(
    set: &BTreeMap<String, String>,
    kind: &str,
    max_value: usize,
    value_limit: &str,
    limits: &TenantLimits,
) -> Result<(), (String, String)> {
    for (name, value) in set {
        if name.len() > limits.max_label_name_bytes {
            return Err((
                format!("{kind}.{}…", &name[..name.char_indices().nth(32).map_or(name.len(), |(i, _)| i)]),
                format!("the name has {} bytes; the limit is {} (max_label_name_bytes)", name.len(), limits.max_label_name_bytes),
            ));
        }
        if value.len() > max_value {
            return Err((
                format!("{kind}.{name}"),
                format!("the value has {} bytes; the limit is {max_value} ({value_limit})", value.len()),
            ));
        }
    }
    Ok(())
}

fn validate(i: usize, p: PostableAlert, now: DateTime<Utc>, limits: &TenantLimits) -> Result<Alert, IngestError> {
    let err = |field: &str, message: String| IngestError { path: format!("[{i}].{field}"), message };
    if p.labels.is_empty() {
        return Err(err("labels", "at least one label is required (Prometheus always sends alertname)".into()));
    }
    if p.labels.len() > limits.max_labels_per_alert {
        return Err(err(
            "labels",
            format!("{} labels; the limit is {} (max_labels_per_alert)", p.labels.len(), limits.max_labels_per_alert),
        ));
    }
    check_sizes(&p.labels, "labels", limits.max_label_value_bytes, "max_label_value_bytes", limits).map_err(|(f, m)| err(&f, m))?;
    check_sizes(&p.annotations, "annotations", limits.max_annotation_value_bytes, "max_annotation_value_bytes", limits)
        .map_err(|(f, m)| err(&f, m))?;
    check_names(&p.labels).map_err(|name| err(&format!("labels.{name}"), invalid_name(&name)))?;
    check_names(&p.annotations).map_err(|name| err(&format!("annotations.{name}"), invalid_name(&name)))?;
    let starts_at = parse_time(p.starts_at.as_deref()).map_err(|m| err("startsAt", m))?;
    let ends_at = parse_time(p.ends_at.as_deref()).map_err(|m| err("endsAt", m))?;
    let starts_at = starts_at.or(ends_at).unwrap_or(now);
    if let Some(end) = ends_at
        && end < starts_at
    {
        return Err(err("endsAt", format!("{end} is before startsAt {starts_at}; an alert cannot end before it starts")));
    }
    Ok(Alert {
        labels: p.labels as LabelSet,
        annotations: p.annotations,
        starts_at,
        ends_at,
        generator_url: p.generator_url.unwrap_or_default(),
    })
}

fn invalid_name(name: &str) -> String {
    format!("`{name}` is not a valid name: use letters, digits and underscores, not starting with a digit")
}

/// The first name that is not a valid Prometheus label name.
fn check_names(set: &BTreeMap<String, String>) -> Result<(), String> {
    match set.keys().find(|name| !crate::alert::is_valid_label_name(name)) {
        Some(name) => Err(name.clone()),
        None => Ok(()),
    }
}

/// RFC 3339; absent, empty or Go's zero time mean "unset".
fn parse_time(value: Option<&str>) -> Result<Option<DateTime<Utc>>, String> {
    let Some(s) = value.filter(|s| !s.is_empty()) else { return Ok(None) };
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("`{s}` is not an RFC 3339 time ({e}); write e.g. 2026-11-23T18:30:00Z"))?
        .with_timezone(&Utc);
    use chrono::Datelike;
    Ok((t.year() != GO_ZERO_TIME_YEAR).then_some(t))
}

// Its section of the configuration file, which `config` assembles (docs/CONFIG.md).

/// Defines [`TenantLimits`] (every limit, with its default) and [`TenantLimitsOverride`]
/// (the same keys, each optional) from one list, so the two cannot drift apart.
macro_rules! tenant_limits {
    ($($(#[doc = $doc:literal])* $name:ident: $ty:ty = $default:expr;)*) => {
        /// `[limits]`: what one tenant may do. Every limit answers with a 4xx naming it.
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct TenantLimits {
            $($(#[doc = $doc])* pub $name: $ty,)*
        }

        impl Default for TenantLimits {
            fn default() -> Self {
                TenantLimits { $($name: $default,)* }
            }
        }

        /// A tenant's `[limits]`: keys set here replace the top-level ones.
        #[derive(Debug, Clone, Default, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct TenantLimitsOverride {
            $($(#[doc = $doc])* #[serde(default)] pub $name: Option<$ty>,)*
        }

        impl TenantLimits {
            /// These limits with `o`'s keys applied.
            pub fn with(&self, o: &TenantLimitsOverride) -> TenantLimits {
                TenantLimits { $($name: o.$name.unwrap_or(self.$name),)* }
            }
        }
    };
}

tenant_limits! {
    /// Alerts in one `POST /api/v2/alerts` (Prometheus sends 64 at most by default).
    max_alerts_per_request: usize = 10_000;
    /// Labels on one alert.
    max_labels_per_alert: usize = 64;
    /// Bytes in one label or annotation name.
    max_label_name_bytes: usize = 256;
    /// Bytes in one label value.
    max_label_value_bytes: usize = 2_048;
    /// Bytes in one annotation value.
    max_annotation_value_bytes: usize = 16_384;
    /// Alerts a tenant holds (firing, or resolved and not yet collected).
    max_alerts: usize = 100_000;
    /// Pending and active silences a tenant holds.
    max_silences: usize = 10_000;
    /// Alerts per second a tenant may post, sustained.
    ingest_rate: u32 = 50_000;
    /// Alerts a tenant may post in a burst above the rate.
    ingest_burst: u32 = 100_000;
    /// Routing-script time a tenant may use per second, in milliseconds, sustained: past it
    /// (and its burst) its posts get 429 with Retry-After until the time is paid back. 500 is
    /// half a core; a 7-rule script routes 50,000 alerts/s in about 300.
    script_ms_per_second: u64 = 500;
    /// Routing-script time a tenant may use at once above the sustained rate, in milliseconds.
    script_burst_ms: u64 = 5_000;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn decode(body: &str) -> Result<Vec<Alert>, IngestError> {
        decode_postable_alerts(body.as_bytes(), now(), &TenantLimits::default())
    }

    #[test]
    fn limits_are_enforced_and_named() {
        let limits = TenantLimits {
            max_alerts_per_request: 2,
            max_labels_per_alert: 2,
            max_label_name_bytes: 8,
            max_label_value_bytes: 4,
            max_annotation_value_bytes: 6,
            ..TenantLimits::default()
        };
        let decode = |body: &str| decode_postable_alerts(body.as_bytes(), now(), &limits);
        assert!(decode(r#"[{"labels":{"a":"1234"},"annotations":{"s":"123456"}}]"#).is_ok());
        for (body, path, limit) in [
            (r#"[{"labels":{"a":"1"}},{"labels":{"a":"2"}},{"labels":{"a":"3"}}]"#, ".", "max_alerts_per_request"),
            (r#"[{"labels":{"a":"1","b":"2","c":"3"}}]"#, "[0].labels", "max_labels_per_alert"),
            (r#"[{"labels":{"a":"12345"}}]"#, "[0].labels.a", "max_label_value_bytes"),
            (r#"[{"labels":{"a":"1"},"annotations":{"s":"1234567"}}]"#, "[0].annotations.s", "max_annotation_value_bytes"),
            (r#"[{"labels":{"a":"1","abcdefghi":"x"}}]"#, "[0].labels.abcdefghi…", "max_label_name_bytes"),
        ] {
            let e = decode(body).unwrap_err();
            assert_eq!(e.path, path, "{body}");
            assert!(e.message.contains(limit), "{body}: {e}");
        }
    }

    #[test]
    fn prometheus_shaped_alerts_decode() {
        let alerts = decode(
            r#"[{"labels":{"alertname":"Up","job":"api"},"annotations":{"summary":"down"},
                "startsAt":"2026-11-23T11:00:00.5Z","endsAt":"2026-11-23T12:04:00Z","generatorURL":"http://prom/graph"}]"#,
        )
        .unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].labels["job"], "api");
        assert_eq!(alerts[0].annotations["summary"], "down");
        assert_eq!(alerts[0].generator_url, "http://prom/graph");
        assert_eq!(alerts[0].starts_at.to_rfc3339(), "2026-11-23T11:00:00.500+00:00");
    }

    #[test]
    fn unset_times_default_like_alertmanager() {
        let a = decode(r#"[{"labels":{"a":"b"},"startsAt":"0001-01-01T00:00:00Z","endsAt":"0001-01-01T00:00:00Z"}]"#).unwrap();
        assert_eq!(a[0].starts_at, now());
        assert_eq!(a[0].ends_at, None);
        let a = decode(r#"[{"labels":{"a":"b"},"endsAt":"2026-11-23T11:00:00Z"}]"#).unwrap();
        assert_eq!(Some(a[0].starts_at), a[0].ends_at);
    }

    #[test]
    fn errors_name_index_and_field() {
        let cases = [
            (r#"[{"labels":{"a":"b"}},{"labels":{}}]"#, "[1].labels"),
            (r#"[{"labels":{"a":"b"}},{"labels":{"1bad":"x"}}]"#, "[1].labels.1bad"),
            (r#"[{"labels":{"a":"b"},"annotations":{"bad-name":"x"}}]"#, "[0].annotations.bad-name"),
            (r#"[{"labels":{"a":"b"},"startsAt":"yesterday"}]"#, "[0].startsAt"),
            (r#"[{"labels":{"a":"b"},"startsAt":"2026-11-23T11:00:00Z","endsAt":"2026-11-23T10:00:00Z"}]"#, "[0].endsAt"),
            (r#"[{"labels":{"a":"b"}},{"labels":{"a":1}}]"#, "[1].labels.a"),
            (r#"[{"annotations":{}}]"#, "[0]"),
            (r#"{"labels":{}}"#, "."),
            (r#"[{"labels":{"a":"b"}}] x"#, "."),
            ("[", "."),
        ];
        for (body, path) in cases {
            let e = decode(body).unwrap_err();
            assert_eq!(e.path, path, "{body}: {e}");
            assert!(!e.message.is_empty());
        }
    }
}

/// How long a firing alert received from an upstream Alertmanager's webhook stays firing
/// without news. The upstream re-sends firing groups every `repeat_interval` (4h by default)
/// and sends resolves explicitly, so this only bounds an upstream that vanished.
pub const WEBHOOK_FIRING_TTL: chrono::Duration = chrono::Duration::hours(24);

/// Alertmanager's webhook payload (`notify/webhook`), as an upstream Alertmanager sends it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookMessage {
    alerts: Vec<WebhookAlert>,
}

/// A webhook alert: a postable alert with a status (its fingerprint is recomputed, not trusted).
#[derive(Debug, Deserialize)]
struct WebhookAlert {
    status: String,
    #[serde(flatten)]
    alert: PostableAlert,
}

/// Decode an upstream Alertmanager's webhook payload. Resolved alerts end at their `endsAt`;
/// firing ones (whose `endsAt` the upstream zeroes) stay firing for [`WEBHOOK_FIRING_TTL`].
pub fn decode_alertmanager_webhook(body: &[u8], now: DateTime<Utc>, limits: &TenantLimits) -> Result<Vec<Alert>, IngestError> {
    let message: WebhookMessage = decode_json(body, "Alertmanager's webhook payload: {\"alerts\": [...]}")?;
    if message.alerts.len() > limits.max_alerts_per_request {
        return Err(IngestError {
            path: "alerts".into(),
            message: format!(
                "{} alerts in one request; the limit is {} (max_alerts_per_request)",
                message.alerts.len(),
                limits.max_alerts_per_request
            ),
        });
    }
    message
        .alerts
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let firing = match a.status.as_str() {
                "firing" => true,
                "resolved" => false,
                other => {
                    return Err(IngestError {
                        path: format!("alerts[{i}].status"),
                        message: format!("`{other}` is neither firing nor resolved"),
                    });
                }
            };
            let postable = PostableAlert { ends_at: if firing { None } else { a.alert.ends_at }, ..a.alert };
            let mut alert = validate(i, postable, now, limits).map_err(|e| IngestError { path: format!("alerts{}", e.path), ..e })?;
            if firing {
                alert.ends_at = Some(now + WEBHOOK_FIRING_TTL);
            } else if alert.ends_at.is_none() {
                alert.ends_at = Some(now);
            }
            Ok(alert)
        })
        .collect()
}

/// One event from a system that is not Prometheus (`POST /api/belfry/v1/events`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// What happened, one line.
    pub summary: String,
    /// `critical`, `error`, `warning` or `info` (default `error`).
    #[serde(default)]
    pub severity: Option<String>,
    /// Where it happened (a host, a service).
    pub source: String,
    /// More labels, for routing.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Identifies the event across trigger and resolve; derived from source and summary if absent.
    #[serde(default)]
    pub dedup_key: Option<String>,
    /// `true` resolves the event with this dedup key.
    #[serde(default)]
    pub resolve: bool,
}

/// Decode a generic event into an alert: labels `alertname` (default `event`), `source`,
/// `severity`, `dedup_key` and the event's own labels; annotation `summary`.
pub fn decode_event(body: &[u8], now: DateTime<Utc>, limits: &TenantLimits) -> Result<(Event, Alert), IngestError> {
    let event: Event = decode_json(body, "an event: summary, source, and optionally severity, labels, dedup_key, resolve")?;
    let severity = event.severity.clone().unwrap_or_else(|| "error".into());
    if !["critical", "error", "warning", "info"].contains(&severity.as_str()) {
        return Err(IngestError { path: "severity".into(), message: format!("`{severity}` is not one of critical, error, warning, info") });
    }
    if event.summary.trim().is_empty() || event.source.trim().is_empty() {
        return Err(IngestError {
            path: if event.summary.trim().is_empty() { "summary" } else { "source" }.into(),
            message: "must not be empty".into(),
        });
    }
    let dedup_key = event.dedup_key.clone().unwrap_or_else(|| {
        let digest = ring::digest::digest(&ring::digest::SHA256, format!("{}\0{}", event.source, event.summary).as_bytes());
        digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
    });
    let mut labels = event.labels.clone();
    labels.entry("alertname".into()).or_insert_with(|| "event".into());
    labels.insert("source".into(), event.source.clone());
    labels.insert("severity".into(), severity);
    labels.insert("dedup_key".into(), dedup_key);
    let postable = PostableAlert {
        labels,
        annotations: [("summary".to_string(), event.summary.clone())].into_iter().collect(),
        starts_at: None,
        ends_at: None,
        generator_url: None,
    };
    let mut alert =
        validate(0, postable, now, limits).map_err(|e| IngestError { path: e.path.trim_start_matches("[0].").to_string(), ..e })?;
    if event.resolve {
        alert.ends_at = Some(now);
    }
    Ok((event, alert))
}
