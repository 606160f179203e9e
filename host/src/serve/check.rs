//! What `belfry check` and `belfry template render` run: every check a start makes, and a notification rendered and delivered into a recording, without a store or a listener.

use super::build::bind_receiver;
use super::build::build_router;
use super::build::load_plugins;
use super::error::StartError;

use crate::config::{Config, ConfigError, ConfigErrors};
use crate::plugin::{Runtime, RuntimeOptions};

/// A firing notification of one sample alert, for checking templates.
pub(super) fn sample_notification(tenant: &str, receiver: &str) -> crate::plugin::Notification {
    let now = chrono::Utc::now();
    let alert = crate::alert::Alert {
        labels: [("alertname", "SampleAlert"), ("instance", "host-1:9100"), ("severity", "critical")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: [("summary", "A sample alert for belfry check"), ("runbook_url", "https://runbooks.example/sample")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        starts_at: now,
        ends_at: None,
        generator_url: "http://prometheus.example/graph".into(),
    };
    crate::dispatch::single_alert_notification(tenant, receiver, &alert, "http://belfry.example", now)
}

/// A runtime for the commands that load plugins without serving (`check`, `template render`):
/// the configured compile cache, no pooled slots.
pub(super) fn offline_runtime(config: &Config) -> Result<Runtime, StartError> {
    Ok(Runtime::new(RuntimeOptions {
        cache_dir: config.resolve(&config.runtime.cache_dir),
        allocator: crate::plugin::Allocator::OnDemand,
        pool_slots: 1,
        profiler: crate::plugin::Profiler::None,
    })?)
}

/// What `belfry check` went through.
#[derive(Debug)]
pub struct Checked {
    /// Tenants checked.
    pub tenants: usize,
    /// Plugins loaded.
    pub plugins: usize,
    /// Receivers validated by their plugins.
    pub receivers: usize,
    /// Routing scripts compiled with their self-tests.
    pub scripts: usize,
}

/// Everything a start checks, without opening the store or listening: the TOML and its
/// cross-references (already done by [`Config::load`]), every plugin (pins included), every
/// receiver's config through its plugin's `validate-config`, every routing script with its
/// self-tests. All problems at once, each with file and line. With `only`, the tenants other
/// than that one are left out (a tenant checking their own directory).
pub async fn check(config: &Config, only: Option<&str>) -> Result<Checked, StartError> {
    let runtime = offline_runtime(config)?;
    let mut errors = Vec::new();
    let plugins = load_plugins(&runtime, config, &mut errors).await;
    let mut checked = Checked { tenants: 0, plugins: plugins.len(), receivers: 0, scripts: 0 };
    for view in config.tenants().into_iter().filter(|v| only.is_none_or(|name| v.name == name)) {
        checked.tenants += 1;
        for i in 0..view.receivers.len() {
            checked.receivers += usize::from(bind_receiver(&view, config, &plugins, i, None, &mut errors).await.is_some());
        }
        if build_router(&view, &mut errors).is_some() && view.route.script.is_some() {
            checked.scripts += 1;
        }
        // Every template renders a sample notification (e.g. a time zone that does not exist
        // only shows when rendering).
        if let Ok(templates) = view.templates() {
            for (i, r) in view.receivers.iter().enumerate() {
                let sample = sample_notification(view.name, &r.name);
                for failure in templates.render(&sample, chrono::Utc::now()).failures {
                    errors.push(ConfigError {
                        line: None,
                        file: view.file.to_path_buf(),
                        key: format!("receivers[{i}].templates"),
                        message: format!("rendering a sample alert failed: {failure}"),
                    });
                }
            }
        }
    }
    if errors.is_empty() { Ok(checked) } else { Err(ConfigErrors(errors).located().into()) }
}

/// What `belfry template render` shows: the rendered title and body, and each request the
/// plugin made (recorded, not sent), secrets masked.
#[derive(Debug)]
pub struct Preview {
    /// The notification's title and body after the render stage.
    pub title: String,
    /// The body.
    pub body: String,
    /// Templates that failed (the default was used).
    pub template_failures: Vec<String>,
    /// `METHOD URL`, headers and body of each request, and each mail with its envelope; masked.
    pub requests: Vec<String>,
    /// What the plugin answered, masked.
    pub outcome: String,
    /// The operator's name of the receiver's plugin.
    pub plugin: String,
    /// Whether that plugin shows title and body (a webhook sends the alerts' data instead).
    pub uses_text: bool,
    /// The sample acknowledge link the notification carried (firing groups only).
    pub ack_url: Option<String>,
}

/// Render `alerts` (as one group) for the tenant's `receiver` and run its plugin with HTTP
/// recorded instead of sent.
pub async fn preview(config: &Config, tenant: &str, receiver: &str, alerts: Vec<crate::alert::Alert>) -> Result<Preview, StartError> {
    let views = config.tenants();
    let view = views.iter().find(|v| v.name == tenant).ok_or_else(|| {
        anyhow::anyhow!("no tenant `{tenant}` (tenants: {})", views.iter().map(|v| v.name).collect::<Vec<_>>().join(", "))
    })?;
    let i = view.receivers.iter().position(|r| r.name == receiver).ok_or_else(|| {
        let known: Vec<&str> = view.receivers.iter().map(|r| r.name.as_str()).collect();
        anyhow::anyhow!("tenant `{tenant}` has no receiver `{receiver}` (receivers: {})", known.join(", "))
    })?;
    let runtime = offline_runtime(config)?;
    let mut errors = Vec::new();
    let plugins = load_plugins(&runtime, config, &mut errors).await;
    let capture = crate::plugin::Capture::default();
    let bound = bind_receiver(view, config, &plugins, i, Some(capture.clone()), &mut errors).await;
    let templates = view.templates().map_err(|e| ConfigErrors(e).located())?;
    let Some(bound) = bound else { return Err(ConfigErrors(errors).located().into()) };
    if alerts.is_empty() {
        return Err(anyhow::anyhow!("the alert file holds no alert").into());
    }
    let now = chrono::Utc::now();
    let settings = config.alerts.resolve_timeout;
    let records: Vec<_> = alerts.into_iter().map(|a| crate::state::AlertRecord::from_posted(a, now, settings)).collect();
    let group_by = crate::route::GroupBy::from_names(view.route.group_by.clone()).map_err(|e| anyhow::anyhow!("route.group_by: {e}"))?;
    let labels = group_by.group_labels(&records[0].labels);
    let key = crate::group::group_key(receiver, &group_by.names(), &labels);
    let url = config.external_url(config.server.listen);
    let mut n = crate::dispatch::notification(tenant, receiver, &key, &labels, &records, &url, now);
    // A firing group's notification carries its acknowledge link, as the daemon's do; this one
    // is signed with a throwaway key, so it has the real shape and acknowledges nothing.
    if n.status == crate::plugin::AlertStatus::Firing {
        let links = crate::ack::AckLinks::new(&crate::ack::AckLinks::generate_secret(), config.server.ack_link_ttl);
        n.ack_url = Some(links.link(&url, tenant, &key, now));
    }
    let rendered = templates.render(&n, now);
    n.title = Some(rendered.title.clone());
    n.body = Some(rendered.body.clone());
    let outcome = match bound.deliver(&n).await {
        Ok(report) => {
            let status = report.status.map_or("no status".to_string(), |s| format!("status {s}"));
            format!("delivered ({status}, remote id {})", report.remote_id.as_deref().unwrap_or("none"))
        }
        Err(failure) => failure.to_string(),
    };
    let mask = |text: &str| bound.redactor().redact(text);
    let captured = std::mem::take(&mut *capture.lock().expect("capture lock"));
    let mut requests: Vec<String> = captured
        .requests
        .iter()
        .map(|r| {
            let headers: String = r.headers.iter().map(|(k, v)| format!("{k}: {}\n", crate::plugin::shown_header(k, v, &mask))).collect();
            let body = String::from_utf8_lossy(&r.body);
            let body = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or_else(|| body.into_owned());
            use crate::plugin::HttpMethod;
            let method = match r.method {
                HttpMethod::Get => "GET",
                HttpMethod::Post => "POST",
                HttpMethod::Put => "PUT",
                HttpMethod::Patch => "PATCH",
                HttpMethod::Delete => "DELETE",
            };
            format!("{method} {}\n{headers}\n{}", mask(&r.url), mask(&body))
        })
        .collect();
    requests.extend(captured.mails.iter().map(|m| {
        let to: String = m.to.iter().map(|a| format!("RCPT TO:<{a}>\n")).collect();
        format!("SMTP {}\nMAIL FROM:<{}>\n{to}\n{}", m.smarthost, m.from, mask(&m.message))
    }));
    Ok(Preview {
        title: rendered.title,
        body: rendered.body,
        template_failures: rendered.failures,
        requests,
        outcome: mask(&outcome),
        plugin: bound.plugin_name().to_string(),
        uses_text: bound.uses_text(),
        ack_url: n.ack_url.clone(),
    })
}
