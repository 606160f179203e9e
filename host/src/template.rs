//! The render stage: a notification's title and body from Jinja templates (minijinja) over Alertmanager's data model, per receiver, with translated defaults.
//!
//! Each tenant has a locale (`en`, `fr`, `de`) choosing its default templates, and each
//! receiver may override its title and body. Templates are compiled when the configuration
//! loads (a syntax error is a configuration problem with its line) and run with a fuel limit,
//! so a template cannot loop forever. A template that fails on a notification falls back to
//! the default template; the failure is reported to the caller.

use serde::Deserialize;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use minijinja::{Environment, Error, ErrorKind, Value, context};
use serde::Serialize;

use crate::plugin::{AlertStatus, Notification};

/// Instructions a template may run per render: plenty for any notification, not for a loop
/// that never ends.
const FUEL: u64 = 200_000;

/// A receiver's templates in the configuration: `[receivers.templates] title = "...", body = "..."`.
#[derive(Clone, Debug, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TemplatesConfig {
    /// The title (Slack's header, an email's subject...).
    #[serde(default)]
    pub title: Option<String>,
    /// The body.
    #[serde(default)]
    pub body: Option<String>,
}

/// The languages of the default templates.
pub const LOCALES: [&str; 3] = ["en", "fr", "de"];

fn default_title(locale: &str) -> &'static str {
    match locale {
        "fr" => {
            r#"[{% if ackedBy %}ACQUITTÉ par {{ ackedBy }}{% elif status == "firing" %}ALERTE:{{ firing|length }}{% else %}RÉSOLU{% endif %}] {% for k, v in groupLabels|dictsort %}{{ v }}{% if not loop.last %} {% endif %}{% else %}{{ commonLabels.alertname }}{% endfor %}"#
        }
        "de" => {
            r#"[{% if ackedBy %}BESTÄTIGT von {{ ackedBy }}{% elif status == "firing" %}AUSGELÖST:{{ firing|length }}{% else %}BEHOBEN{% endif %}] {% for k, v in groupLabels|dictsort %}{{ v }}{% if not loop.last %} {% endif %}{% else %}{{ commonLabels.alertname }}{% endfor %}"#
        }
        _ => {
            r#"[{% if ackedBy %}ACK by {{ ackedBy }}{% elif status == "firing" %}FIRING:{{ firing|length }}{% else %}RESOLVED{% endif %}] {% for k, v in groupLabels|dictsort %}{{ v }}{% if not loop.last %} {% endif %}{% else %}{{ commonLabels.alertname }}{% endfor %}"#
        }
    }
}

fn default_body(locale: &str) -> &'static str {
    match locale {
        "fr" => {
            "{% for a in alerts %}{% if a.status == \"firing\" %}[ALERTE]{% else %}[RÉSOLU]{% endif %} {{ a.annotations.summary or a.labels.alertname }}\n  {% for k, v in a.labels|dictsort %}{{ k }}={{ v }} {% endfor %}\n  depuis {{ a.startsAt|datetime(timezone) }}{% if a.annotations.runbook_url %}\n  procédure : {{ a.annotations.runbook_url }}{% endif %}\n{% endfor %}"
        }
        "de" => {
            "{% for a in alerts %}{% if a.status == \"firing\" %}[AUSGELÖST]{% else %}[BEHOBEN]{% endif %} {{ a.annotations.summary or a.labels.alertname }}\n  {% for k, v in a.labels|dictsort %}{{ k }}={{ v }} {% endfor %}\n  seit {{ a.startsAt|datetime(timezone) }}{% if a.annotations.runbook_url %}\n  Runbook: {{ a.annotations.runbook_url }}{% endif %}\n{% endfor %}"
        }
        _ => {
            "{% for a in alerts %}{% if a.status == \"firing\" %}[FIRING]{% else %}[RESOLVED]{% endif %} {{ a.annotations.summary or a.labels.alertname }}\n  {% for k, v in a.labels|dictsort %}{{ k }}={{ v }} {% endfor %}\n  since {{ a.startsAt|datetime(timezone) }}{% if a.annotations.runbook_url %}\n  runbook: {{ a.annotations.runbook_url }}{% endif %}\n{% endfor %}"
        }
    }
}

/// A tenant's compiled templates.
pub struct Templates {
    env: Environment<'static>,
    timezone: String,
}

/// A template that did not compile: which one, where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// The receiver whose template it is.
    pub receiver: String,
    /// `title` or `body`.
    pub part: &'static str,
    /// The line in the template, if known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// One rendered notification, and what failed on the way (each fell back to the default).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    /// The title.
    pub title: String,
    /// The body.
    pub body: String,
    /// Templates that failed on this notification, with why.
    pub failures: Vec<String>,
}

impl Templates {
    /// Compile the defaults of `locale` (in `timezone` for times) and each receiver's overrides.
    pub fn new<'a>(
        locale: &str,
        timezone: &str,
        receivers: impl IntoIterator<Item = (&'a str, &'a TemplatesConfig)>,
    ) -> Result<Templates, Vec<TemplateError>> {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        env.add_filter("truncate", truncate);
        env.add_filter("datetime", datetime);
        env.add_filter("slack_escape", slack_escape);
        env.add_filter("markdown_escape", markdown_escape);
        env.add_filter("telegram_escape", telegram_escape);
        env.add_filter("html_escape", html_escape);
        let locale = if LOCALES.contains(&locale) { locale } else { "en" };
        env.add_template("default.title", default_title(locale)).expect("the default templates compile");
        env.add_template("default.body", default_body(locale)).expect("the default templates compile");
        let mut errors = Vec::new();
        for (receiver, config) in receivers {
            for (part, source) in [("title", &config.title), ("body", &config.body)] {
                let Some(source) = source else { continue };
                if let Err(e) = env.add_template_owned(format!("{receiver}.{part}"), source.clone()) {
                    errors.push(TemplateError { receiver: receiver.to_string(), part, line: e.line(), message: what(&e) });
                }
            }
        }
        if errors.is_empty() { Ok(Templates { env, timezone: timezone.to_string() }) } else { Err(errors) }
    }

    /// The title and body of `n` for its receiver: its own templates, else the defaults.
    pub fn render(&self, n: &Notification, now: DateTime<Utc>) -> Rendered {
        let ctx = data_model(n, &self.timezone, now);
        let mut out = Rendered::default();
        for part in ["title", "body"] {
            let own = format!("{}.{part}", n.receiver);
            let text = match self.env.get_template(&own) {
                Ok(t) => t.render(&ctx).or_else(|e| {
                    out.failures.push(format!("{part} template of receiver `{}`: {}", n.receiver, describe(&e)));
                    self.env.get_template(&format!("default.{part}")).and_then(|t| t.render(&ctx))
                }),
                Err(_) => self.env.get_template(&format!("default.{part}")).and_then(|t| t.render(&ctx)),
            };
            let text = text.unwrap_or_else(|e| {
                out.failures.push(format!("default {part} template: {}", describe(&e)));
                String::new()
            });
            match part {
                "title" => out.title = text.trim().to_string(),
                _ => out.body = text.trim_end().to_string(),
            }
        }
        out
    }
}

/// A template error in one line: what, and where in the template.
fn describe(e: &Error) -> String {
    let mut text = what(e);
    if let Some(line) = e.line() {
        text.push_str(&format!(" (line {line})"));
    }
    text
}

/// What a template error is, without where (a [`TemplateError`] carries its line apart).
fn what(e: &Error) -> String {
    match e.kind() {
        ErrorKind::OutOfFuel => "it ran too long (a loop that does not end?) and was stopped".to_string(),
        _ => e.detail().map_or_else(|| e.kind().to_string(), |d| format!("{}: {d}", e.kind())),
    }
}

/// One alert as templates see it (Alertmanager's field names).
#[derive(Serialize)]
struct TemplateAlert {
    status: &'static str,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    starts_at: String,
    #[serde(rename = "endsAt")]
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: String,
    fingerprint: String,
}

fn status_name(s: AlertStatus) -> &'static str {
    match s {
        AlertStatus::Firing => "firing",
        AlertStatus::Resolved => "resolved",
    }
}

/// Alertmanager's template data (receiver, status, alerts, groupLabels, commonLabels,
/// commonAnnotations, externalURL, groupKey) plus Belfry's (tenant, escalationLevel, ackURL, ackedBy,
/// `firing`/`resolved` alert lists, timezone, now).
fn data_model(n: &Notification, timezone: &str, now: DateTime<Utc>) -> Value {
    let map = |pairs: &[(String, String)]| pairs.iter().cloned().collect::<BTreeMap<_, _>>();
    let alerts: Vec<TemplateAlert> = n
        .alerts
        .iter()
        .map(|a| TemplateAlert {
            status: status_name(a.status),
            labels: map(&a.labels),
            annotations: map(&a.annotations),
            starts_at: a.starts_at.clone(),
            ends_at: a.ends_at.clone().unwrap_or_default(),
            generator_url: a.generator_url.clone(),
            fingerprint: a.fingerprint.clone(),
        })
        .collect();
    let firing: Vec<&TemplateAlert> = alerts.iter().filter(|a| a.status == "firing").collect();
    let resolved: Vec<&TemplateAlert> = alerts.iter().filter(|a| a.status == "resolved").collect();
    context! {
        receiver => n.receiver,
        status => status_name(n.status),
        alerts => alerts,
        firing => firing,
        resolved => resolved,
        truncatedAlerts => n.truncated_alerts,
        groupLabels => map(&n.group_labels),
        commonLabels => map(&n.common_labels),
        commonAnnotations => map(&n.common_annotations),
        externalURL => n.external_url,
        groupKey => n.group_key,
        tenant => n.tenant,
        escalationLevel => n.escalation_level,
        ackURL => n.ack_url,
        ackedBy => n.acked_by,
        timezone => timezone,
        now => crate::alert::format_time(now),
    }
}

/// `text|truncate(n)`: at most `n` characters, the last one `…` when cut.
fn truncate(text: String, n: usize) -> String {
    if text.chars().count() <= n {
        return text;
    }
    let mut out: String = text.chars().take(n.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `time|datetime(zone, format)`: an RFC 3339 time in an IANA zone (`Europe/Paris`), by default
/// as `2026-11-23 10:00 CET`.
fn datetime(value: String, zone: Option<String>, format: Option<String>) -> Result<String, Error> {
    let t = DateTime::parse_from_rfc3339(&value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("`{value}` is not an RFC 3339 time: {e}")))?;
    let zone = zone.as_deref().unwrap_or("UTC");
    let tz: chrono_tz::Tz =
        zone.parse().map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("unknown time zone `{zone}` (use e.g. Europe/Paris)")))?;
    Ok(t.with_timezone(&tz).format(format.as_deref().unwrap_or("%Y-%m-%d %H:%M %Z")).to_string())
}

/// Slack mrkdwn: `&`, `<`, `>` as entities (Slack's own rule).
fn slack_escape(text: String) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// CommonMark (Discord, MS Teams): a backslash before each markup character.
fn markdown_escape(text: String) -> String {
    escape_chars(&text, r"\`*_{}[]()#+-.!|~>")
}

/// Telegram MarkdownV2: a backslash before each of the characters its docs list.
fn telegram_escape(text: String) -> String {
    escape_chars(&text, r"\_*[]()~`>#+-=|{}.!")
}

/// HTML (email): `&`, `<`, `>`, `"`, `'` as entities.
fn html_escape(text: String) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn escape_chars(text: &str, special: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if special.contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

// Its section of the configuration file, which `config` assembles (docs/CONFIG.md).

/// `[templates]`: the default templates' language and the time zone times are shown in.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateDefaults {
    /// `en`, `fr` or `de`.
    #[serde(default = "default_locale")]
    pub locale: String,
    /// An IANA time zone, e.g. `Europe/Paris`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

impl Default for TemplateDefaults {
    fn default() -> Self {
        TemplateDefaults { locale: default_locale(), timezone: default_timezone() }
    }
}

fn default_locale() -> String {
    "en".into()
}

fn default_timezone() -> String {
    "UTC".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(receiver: &str) -> Notification {
        let now: DateTime<Utc> = "2026-11-23T10:00:00Z".parse().unwrap();
        let mut alert = crate::alert::Alert {
            labels: [("alertname", "DiskFull"), ("instance", "db1"), ("team", "storage")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: Default::default(),
            starts_at: now,
            ends_at: None,
            generator_url: String::new(),
        };
        alert.annotations.insert("summary".into(), "Disk <90%> full & rising".into());
        let mut n = crate::dispatch::single_alert_notification("acme", receiver, &alert, "http://belfry", now);
        n.group_labels = vec![("alertname".into(), "DiskFull".into()), ("team".into(), "storage".into())];
        n
    }

    fn now() -> DateTime<Utc> {
        "2026-11-23T10:05:00Z".parse().unwrap()
    }

    #[test]
    fn defaults_speak_the_tenant_language() {
        let none: [(&str, &TemplatesConfig); 0] = [];
        let en = Templates::new("en", "Europe/Paris", none).unwrap().render(&notification("ops"), now());
        assert_eq!(en.title, "[FIRING:1] DiskFull storage");
        assert!(en.body.contains("[FIRING] Disk <90%> full & rising"), "{}", en.body);
        assert!(en.body.contains("since 2026-11-23 11:00 CET"), "{}", en.body);
        let fr = Templates::new("fr", "UTC", none).unwrap().render(&notification("ops"), now());
        assert_eq!(fr.title, "[ALERTE:1] DiskFull storage");
        assert!(fr.body.contains("depuis 2026-11-23 10:00 UTC"), "{}", fr.body);
        let de = Templates::new("de", "UTC", none).unwrap().render(&notification("ops"), now());
        assert_eq!(de.title, "[AUSGELÖST:1] DiskFull storage");
        assert!(en.failures.is_empty() && fr.failures.is_empty() && de.failures.is_empty());
    }

    #[test]
    fn a_receiver_overrides_with_filters_for_its_channel() {
        let own = TemplatesConfig {
            title: Some("{{ commonLabels.alertname }} on {{ commonLabels.instance }} ({{ tenant }})".into()),
            body: Some("{% for a in alerts %}{{ a.annotations.summary|slack_escape|truncate(20) }}{% endfor %}".into()),
        };
        let t = Templates::new("en", "UTC", [("slack", &own)]).unwrap();
        let r = t.render(&notification("slack"), now());
        assert_eq!(r.title, "DiskFull on db1 (acme)");
        assert_eq!(r.body, "Disk &lt;90%&gt; fu…", "20 characters at most");
        // Another receiver keeps the defaults.
        assert_eq!(t.render(&notification("pager"), now()).title, "[FIRING:1] DiskFull storage");
    }

    #[test]
    fn a_syntax_error_names_receiver_part_and_line() {
        let bad = TemplatesConfig { title: None, body: Some("line one\n{% for a in alerts %}\n{{ a.labels.x }".into()) };
        let errors = Templates::new("en", "UTC", [("slack", &bad)]).err().unwrap();
        assert_eq!((errors[0].receiver.as_str(), errors[0].part, errors[0].line), ("slack", "body", Some(3)));
    }

    #[test]
    fn a_failing_or_endless_template_falls_back_to_the_default_and_is_reported() {
        let failing = TemplatesConfig { title: Some("{{ alerts[0].startsAt|datetime('Mars/Olympus') }}".into()), body: None };
        let endless = TemplatesConfig {
            title: None,
            body: Some("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}".into()),
        };
        let t = Templates::new("en", "UTC", [("a", &failing), ("b", &endless)]).unwrap();
        let r = t.render(&notification("a"), now());
        assert_eq!(r.title, "[FIRING:1] DiskFull storage");
        assert!(r.failures[0].contains("unknown time zone `Mars/Olympus`"), "{:?}", r.failures);
        let r = t.render(&notification("b"), now());
        assert!(r.body.starts_with("[FIRING]"), "{}", r.body);
        assert!(r.failures[0].contains("ran too long"), "{:?}", r.failures);
    }

    #[test]
    fn escapes_follow_each_channel() {
        assert_eq!(telegram_escape("a_b.c!".into()), r"a\_b\.c\!");
        assert_eq!(markdown_escape("**x**".into()), r"\*\*x\*\*");
        assert_eq!(html_escape("<a href='x'>".into()), "&lt;a href=&#39;x&#39;&gt;");
        assert_eq!(truncate("héllo".into(), 3), "hé…");
    }
}
