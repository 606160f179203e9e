//! Wires config, plugins, tenants, routing, state, dispatch and the API into the running daemon, and rebuilds the tenants on reload.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};

use tokio::net::TcpListener;

use crate::api::{self, App, Reload};
use crate::audit::AuditLog;
use crate::config::ReceiverConfig;
use crate::config::{Config, ConfigError, ConfigErrors, TenantView, parse_token_hash};
use crate::dispatch::{Backoff, Breaker, Channel, Channels, ConfigStatus, Dispatcher, Gate, Notifier, OutboxEntry, RateLimit, Routing};
use crate::dispatch::{BreakerConfig, RateLimitConfig};
use crate::group::{Groups, History};
use crate::inhibit::Inhibitor;
use crate::plugin::{BindError, HostPattern, Plugin, ReceiverSpec, Runtime, RuntimeOptions};
use crate::route::Router;
use crate::silence::Silences;
use crate::state::{AlertSettings, AlertState};
use crate::store::{Checkpoints, Record, RedbStore, Store, Table};
use crate::tenant::{Tenant, Tenants};
use crate::timeinterval::TimeInterval;

/// Notifications in the delivery pipeline (waiting, retrying or in flight) before group
/// flushes wait for room; every one of them is also in the durable outbox.
const MAX_PENDING: usize = 100_000;

/// Why the daemon did not start (or a reload was refused).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is wrong: the operator must fix it.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// Anything else (a port in use, an engine that cannot start, an unreadable store).
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

/// The store's meta entry holding the ack links' signing key.
const ACK_LINK_KEY: &str = "ack_link_key";

/// What outlives reloads: the engine, the store, the dispatcher, and every tenant's alerts.
pub struct Daemon {
    config_path: PathBuf,
    runtime: Runtime,
    store: Arc<dyn Store>,
    dispatcher: Dispatcher,
    external_url: String,
    /// Alerts, silences and groups by tenant; kept across reloads so a changed tenant keeps them.
    states: Mutex<HashMap<String, TenantState>>,
    tenants: RwLock<Arc<Tenants>>,
    /// Wakes the flusher when a group becomes due sooner than it planned to wake.
    wake: Arc<tokio::sync::Notify>,
    /// Reloads routing scripts when their files change.
    watcher: Option<crate::watch::ScriptWatcher>,
    /// Every metric.
    metrics: Arc<crate::metrics::Metrics>,
    /// The audit trail (reloads here; deliveries in the pipeline, silences in the API).
    pub(crate) audit: Arc<AuditLog>,
    /// The store file, for its size.
    store_path: PathBuf,
    /// Rate limits and breakers by (tenant, receiver); a reload keeps those whose settings stay.
    gates: Mutex<HashMap<(String, String), GateEntry>>,
    /// Signs acknowledge links; its key lives in the store, so links survive restarts.
    ack_links: Arc<std::sync::OnceLock<crate::ack::AckLinks>>,
    /// How long acknowledge links work.
    ack_link_ttl: std::time::Duration,
}

/// A receiver's gate and the settings it was made with.
struct GateEntry {
    rate: Option<RateLimitConfig>,
    breaker: BreakerConfig,
    gate: Arc<Gate>,
}

/// A tenant's alerts, silences, and router with its groups.
#[derive(Clone)]
struct TenantState {
    alerts: Arc<AlertState>,
    silences: Arc<Silences>,
    routing: Arc<Mutex<Routing>>,
    config_status: Arc<ConfigStatus>,
}

/// The records of one table, decoded as `T`, with their tenant and id; the first that does not
/// decode stops the start (`what` names the kind of record).
fn decoded<T: serde::de::DeserializeOwned>(records: Vec<Record>, what: &str) -> Result<Vec<(String, String, T)>, StartError> {
    records
        .into_iter()
        .map(|r| {
            let value = crate::store::decode(&r.value)
                .map_err(|e| anyhow::anyhow!("a stored {what} of tenant `{}` ({}) does not decode: {e}", r.tenant, r.id_text()))?;
            let id = r.id_text();
            Ok((r.tenant, id, value))
        })
        .collect()
}

/// A tenant built by a (re)load, and the router to route its alerts with once it goes live.
struct Built {
    notifier: Arc<Notifier>,
    router: Arc<Router>,
    /// Notifications a previous run left in the outbox (new tenants only).
    outbox: Vec<(String, OutboxEntry)>,
}

impl Daemon {
    /// The current tenants.
    pub fn tenants(&self) -> Arc<Tenants> {
        self.tenants.read().expect("tenants lock").clone()
    }

    /// Load every plugin, bind every tenant's receivers, compile every routing script (with its
    /// self-tests); collect every problem before giving up. Nothing goes live until [`Daemon::commit`].
    async fn build_tenants(&self, config: &Config) -> Result<(Tenants, Vec<Built>), StartError> {
        let mut errors = Vec::new();
        let plugins = load_plugins(&self.runtime, config, &mut errors).await;
        let settings =
            AlertSettings { resolve_timeout: config.alerts.resolve_timeout, resolved_retention: config.alerts.resolved_retention };
        let mut new_states = Vec::new();
        let mut tenants = Vec::new();
        let mut built = Vec::new();
        for view in config.tenants() {
            let channels = self.bind_channels(&view, config, &plugins, &mut errors).await;
            let Some(router) = build_router(&view, &mut errors) else { continue };
            let templates = match view.templates() {
                Ok(templates) => templates,
                Err(problems) => {
                    errors.extend(problems);
                    continue;
                }
            };
            let router = Arc::new(router);
            let state = self.states.lock().expect("states lock").get(view.name).cloned();
            let state = match state {
                Some(state) => state,
                None => {
                    let state = TenantState {
                        alerts: Arc::new(AlertState::new(view.name, settings)),
                        silences: Arc::new(Silences::new(view.name, config.silences.retention)),
                        routing: Arc::new(Mutex::new(Routing { router: router.clone(), groups: Groups::default(), generation: 0 })),
                        config_status: Arc::new(ConfigStatus::for_file(view.file, view.name == crate::config::DEFAULT_TENANT)),
                    };
                    new_states.push((view.name.to_string(), state.clone()));
                    state
                }
            };
            let notifier = Arc::new(Notifier {
                tenant: view.name.to_string(),
                routing: state.routing,
                channels: Arc::new(channels),
                send_resolved: view.receivers.iter().filter(|r| r.send_resolved).map(|r| r.name.clone()).collect(),
                inhibitor: Inhibitor::new(view.inhibit_rules).unwrap_or_default(),
                time_intervals: view
                    .time_intervals
                    .iter()
                    .filter_map(|c| TimeInterval::parse(c).ok())
                    .map(|i| (i.name.clone(), i))
                    .collect(),
                wake: self.wake.clone(),
                dispatcher: self.dispatcher.clone(),
                external_url: self.external_url.clone(),
                state: state.alerts,
                silences: state.silences,
                config_status: state.config_status,
                store: self.store.clone(),
                ingest_rate: governor::RateLimiter::direct(
                    governor::Quota::per_second(std::num::NonZeroU32::new(view.limits.ingest_rate.max(1)).expect("at least 1"))
                        .allow_burst(std::num::NonZeroU32::new(view.limits.ingest_burst.max(1)).expect("at least 1")),
                ),
                script_budget: crate::dispatch::ScriptBudget::new(
                    std::time::Duration::from_millis(view.limits.script_ms_per_second),
                    std::time::Duration::from_millis(view.limits.script_burst_ms),
                ),
                limits: view.limits.clone(),
                metrics: self.metrics.clone(),
                audit: self.audit.clone(),
                templates: Arc::new(templates),
                ack_links: self.ack_links.clone(),
                escalation_policies: Arc::new(crate::escalate::policies(view.escalation_policies)),
                schedules: Arc::new(crate::oncall::schedules(view.schedules)),
            });
            let hashes = view.tokens.iter().filter_map(|t| parse_token_hash(t).ok()).collect();
            built.push(Built { notifier: notifier.clone(), router, outbox: Vec::new() });
            tenants.push(Tenant::new(view.name.to_string(), hashes, notifier));
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors).located().into());
        }
        // New tenants (at start: all of them) get back what the store holds for them.
        if !new_states.is_empty() {
            let mut snapshot = self.store.load().map_err(|e| anyhow::anyhow!("{e}"))?;
            if self.ack_links.get().is_none() {
                let secret = match snapshot.records(Table::Meta).iter().find(|r| r.id_text() == ACK_LINK_KEY) {
                    Some(record) => record.value.clone(),
                    None => {
                        let secret = crate::ack::AckLinks::generate_secret();
                        let op = crate::store::Op::put_meta(ACK_LINK_KEY, secret.clone());
                        self.store
                            .submit(vec![op])
                            .await
                            .map_err(|_| anyhow::anyhow!("the store stopped"))?
                            .map_err(|e| anyhow::anyhow!("{e}"))?;
                        secret
                    }
                };
                let _ = self.ack_links.set(crate::ack::AckLinks::new(&secret, self.ack_link_ttl));
            }
            // Alerts stay encoded until their tenant restores them, one at a time.
            let mut alerts: HashMap<String, Vec<Record>> = HashMap::new();
            for record in snapshot.take(Table::Alerts) {
                alerts.entry(record.tenant.clone()).or_default().push(record);
            }
            let mut silences: HashMap<String, Vec<_>> = HashMap::new();
            for (tenant, _, silence) in decoded(snapshot.take(Table::Silences), "silence")? {
                silences.entry(tenant).or_default().push(silence);
            }
            let mut logs: HashMap<String, Vec<_>> = HashMap::new();
            for (tenant, group, entry) in decoded(snapshot.take(Table::NotifyLog), "notification log entry")? {
                logs.entry(tenant).or_default().push((group, entry));
            }
            let mut acks: HashMap<String, Vec<_>> = HashMap::new();
            for (tenant, group, ack) in decoded(snapshot.take(Table::Acks), "ack")? {
                acks.entry(tenant).or_default().push((group, ack));
            }
            let mut escalations: HashMap<String, Vec<_>> = HashMap::new();
            for (tenant, group, escalation) in decoded(snapshot.take(Table::Escalations), "escalation")? {
                escalations.entry(tenant).or_default().push((group, escalation));
            }
            let mut outbox: HashMap<String, Vec<(String, OutboxEntry)>> = HashMap::new();
            for record in snapshot.take(Table::Outbox) {
                match crate::store::decode(&record.value) {
                    Ok(entry) => outbox.entry(record.tenant.clone()).or_default().push((record.id_text(), entry)),
                    // One undecodable notification (say, from an incompatible version) must not stop the start.
                    Err(e) => {
                        tracing::error!(tenant = %record.tenant, id = %record.id_text(), error = %e, "skipping an undecodable outbox entry")
                    }
                }
            }
            for b in &mut built {
                if new_states.iter().any(|(name, _)| *name == b.notifier.tenant) {
                    b.outbox = outbox.remove(&b.notifier.tenant).unwrap_or_default();
                    b.outbox.sort_by_key(|(_, e)| e.decided_at);
                }
            }
            let mut states = self.states.lock().expect("states lock");
            for (name, state) in new_states {
                let encoded = alerts.remove(&name).unwrap_or_default();
                state.alerts.restore(encoded.into_iter().filter_map(|e| {
                    match crate::store::decode::<crate::state::AlertRecord>(&e.value) {
                        Ok(alert) => Some(alert),
                        Err(message) => {
                            // One corrupt record must not keep the tenant's other alerts down.
                            tracing::error!(tenant = %name, error = %message, "skipping a stored alert that does not decode");
                            None
                        }
                    }
                }));
                state.silences.restore(silences.remove(&name).unwrap_or_default());
                state.routing.lock().expect("routing lock").groups = Groups::with_history(History::from_stored(
                    logs.remove(&name).unwrap_or_default(),
                    acks.remove(&name).unwrap_or_default(),
                    escalations.remove(&name).unwrap_or_default(),
                ));
                tracing::info!(tenant = %name, alerts = state.alerts.len(), silences = state.silences.list().len(), "tenant ready");
                states.insert(name, state);
            }
        }
        let admin = config.server.admin_tokens.iter().filter_map(|t| parse_token_hash(t).ok()).collect();
        Ok((Tenants::new(tenants, config.server.trust_scope_org_id, admin), built))
    }

    /// Put built tenants live: swap them in, then route every alert with the new scripts
    /// (the notification log carries over, so nothing is notified twice).
    fn commit(&self, tenants: Tenants, built: Vec<Built>, by: &str) -> usize {
        let count = tenants.all().count();
        let live: Vec<String> = tenants.all().map(|t| t.name.clone()).collect();
        *self.tenants.write().expect("tenants lock") = Arc::new(tenants);
        // Removed tenants stop being served; their stored alerts stay for a re-add.
        self.states.lock().expect("states lock").retain(|name, _| {
            let keep = live.contains(name);
            if !keep {
                self.metrics.forget_tenant(name);
            }
            keep
        });
        let now = chrono::Utc::now();
        for name in &live {
            self.metrics.reloaded(name, true, now.timestamp());
            self.audit.record(name, "config.load", by, &serde_json::json!({"config": self.config_path.display().to_string()}));
        }
        let mut scripts = Vec::new();
        for b in built {
            scripts.extend(b.router.script_file().map(Path::to_path_buf));
            b.notifier.routing.lock().expect("routing lock").groups.set_policies(b.notifier.escalation_policies.clone());
            b.notifier.config_status.went_live(&b.router, by, now);
            b.notifier.reroute(b.router, now);
            if !b.outbox.is_empty() {
                let notifier = b.notifier.clone();
                tokio::spawn(async move { notifier.resume(b.outbox).await });
            }
        }
        if let Some(watcher) = &self.watcher {
            watcher.watch(scripts);
        }
        count
    }

    /// A tenant's routing script changed on disk: compile it, run its self-tests, and swap it
    /// in; on failure the running script stays and the error is logged.
    pub fn reload_script(&self, file: &Path) {
        for tenant in self.tenants().all() {
            let notifier = &tenant.notifier;
            let current = notifier.router();
            if current.script_file() != Some(file) {
                continue;
            }
            let written = std::fs::metadata(file).and_then(|m| m.modified()).ok();
            match Router::build(current.spec().clone()) {
                Ok(router) => {
                    notifier.config_status.went_live(&router, "file-watcher", chrono::Utc::now());
                    notifier.reroute(Arc::new(router), chrono::Utc::now());
                    self.metrics.reloaded(&tenant.name, true, chrono::Utc::now().timestamp());
                    self.audit.record(
                        &tenant.name,
                        "script.load",
                        "file-watcher",
                        &serde_json::json!({"script": file.display().to_string()}),
                    );
                    let since_write_ms = written.and_then(|w| w.elapsed().ok()).map_or(-1.0, |d| d.as_secs_f64() * 1e3);
                    tracing::info!(tenant = %tenant.name, script = %file.display(), since_write_ms, "routing script reloaded");
                }
                Err(e) => {
                    self.metrics.reloaded(&tenant.name, false, 0);
                    let fields = serde_json::json!({"script": file.display().to_string(), "error": e.to_string()});
                    self.audit.record(&tenant.name, "script.rejected", "file-watcher", &fields);
                    notifier.config_status.rejected(&e.to_string(), "file-watcher", chrono::Utc::now());
                    tracing::error!(tenant = %tenant.name, error = %e, "routing script rejected; the previous script keeps routing")
                }
            }
        }
    }

    /// Re-read the config file and swap in the new tenants; on any problem keep the old ones.
    /// Server, store and runtime settings take effect at the next start.
    /// `by` says who asked (`api`, `sighup`), for the audit trail.
    pub async fn reload(&self, by: &str) -> Result<usize, StartError> {
        let built = match Config::load(&self.config_path) {
            Ok(config) => self.build_tenants(&config).await,
            Err(e) => Err(e.into()),
        };
        let (tenants, built) = built.inspect_err(|e| {
            // Refused as a whole: no tenant took the new configuration.
            for tenant in self.tenants().all() {
                // Each tenant sees the problems in its own files, never another tenant's.
                if let StartError::Config(errors) = e {
                    let theirs: Vec<String> =
                        errors.0.iter().filter(|e| tenant.notifier.config_status.owns(&e.file)).map(ToString::to_string).collect();
                    if !theirs.is_empty() {
                        tenant.notifier.config_status.rejected(&theirs.join("\n"), by, chrono::Utc::now());
                    }
                }
                self.metrics.reloaded(&tenant.name, false, 0);
                let fields = serde_json::json!({"config": self.config_path.display().to_string(), "error": e.to_string()});
                self.audit.record(&tenant.name, "config.rejected", by, &fields);
            }
        })?;
        let count = self.commit(tenants, built, by);
        tracing::info!(tenants = count, "configuration reloaded");
        Ok(count)
    }
}

impl Daemon {
    /// Bind every receiver of a tenant to its plugin (the plugin validates its config) and give
    /// it its delivery policy: retries, fallback, and the gate (rate limit, breaker) it had
    /// before if those settings did not change.
    async fn bind_channels(
        &self,
        view: &TenantView<'_>,
        config: &Config,
        plugins: &HashMap<String, Arc<Plugin>>,
        errors: &mut Vec<ConfigError>,
    ) -> Channels {
        // At once: each plugin's validate-config is bounded, but a tenant's receivers one after
        // another would add up those bounds.
        let bound = futures_util::future::join_all(view.receivers.iter().enumerate().map(|(i, r)| async move {
            let mut errors = Vec::new();
            (r, bind_receiver(view, config, plugins, i, None, &mut errors).await, errors)
        }))
        .await;
        let mut channels = HashMap::new();
        for (r, receiver, problems) in bound {
            errors.extend(problems);
            let Some(receiver) = receiver else { continue };
            let meters = crate::metrics::Meters::new(&self.metrics, view.name, &r.name, receiver.plugin_name());
            let channel = Channel {
                receiver: Arc::new(receiver),
                fallback: r.fallback.clone(),
                backoff: Backoff::from(&r.retry),
                gate: self.gate(view.name, r),
                meters,
            };
            channels.insert(r.name.clone(), channel);
        }
        channels
    }

    /// The receiver's gate: the existing one while its settings stay, else a fresh one.
    fn gate(&self, tenant: &str, r: &ReceiverConfig) -> Arc<Gate> {
        let mut gates = self.gates.lock().expect("gates lock");
        let key = (tenant.to_string(), r.name.clone());
        if let Some(e) = gates.get(&key)
            && e.rate == r.rate_limit
            && e.breaker == r.breaker
        {
            return e.gate.clone();
        }
        let gate = Arc::new(Gate::new(r.rate_limit.as_ref().map(RateLimit::new), Breaker::new(&r.breaker)));
        gates.insert(key, GateEntry { rate: r.rate_limit.clone(), breaker: r.breaker.clone(), gate: gate.clone() });
        gate
    }
}

impl Daemon {
    /// Every metric in Prometheus' text format, the gauges of state read now.
    pub fn metrics_text(&self) -> String {
        let now = chrono::Utc::now();
        for m in [&self.metrics.alerts, &self.metrics.groups, &self.metrics.silences, &self.metrics.breaker_state] {
            m.clear(); // tenants and receivers that are gone leave no series behind
        }
        for tenant in self.tenants().all() {
            tenant.notifier.export_state(now);
        }
        self.metrics.store_bytes.set(std::fs::metadata(&self.store_path).map_or(0, |m| m.len() as i64));
        self.metrics.encode()
    }
}

impl Reload for Daemon {
    fn metrics(&self) -> String {
        self.metrics_text()
    }

    fn reload(&self) -> Pin<Box<dyn Future<Output = Result<usize, String>> + Send + '_>> {
        Box::pin(async move { Daemon::reload(self, "api").await.map_err(|e| e.to_string()) })
    }

    fn tenants(&self) -> Arc<Tenants> {
        Daemon::tenants(self)
    }
}

/// Load every plugin the configuration names (checking pins); a failure is a problem of its
/// `plugins.<name>.path`.
async fn load_plugins(runtime: &Runtime, config: &Config, errors: &mut Vec<ConfigError>) -> HashMap<String, Arc<Plugin>> {
    let problem =
        |name: &str, message: String| ConfigError { line: None, file: config.file.clone(), key: format!("plugins.{name}.path"), message };
    let loaded =
        futures_util::future::join_all(config.plugins.iter().map(|(name, source)| async move {
            (name, runtime.load(name, &config.resolve(&source.path), source.sha256.as_deref()).await)
        }))
        .await;
    let mut plugins = HashMap::new();
    for (name, result) in loaded {
        match result {
            // A plugin that names itself after another entry would have its work read as that one's.
            Ok(plugin) if plugin.info.name != *name && config.plugins.contains_key(&plugin.info.name) => errors.push(problem(
                name,
                format!(
                    "the component describes itself as `{}`, the name of another [plugins] entry; refusing it (check that the path points at the plugin you meant)",
                    plugin.info.name
                ),
            )),
            Ok(plugin) => {
                tracing::info!(plugin = %name, describes_itself_as = %plugin.info.name, version = %plugin.info.version, sha256 = %plugin.sha256, source = ?plugin.source, load_ms = plugin.load_time.as_secs_f64() * 1e3, "plugin loaded");
                plugins.insert(name.clone(), plugin);
            }
            Err(e) => errors.push(problem(name, e.to_string())),
        }
    }
    plugins
}

/// Bind the tenant's receiver `i` to its plugin, which validates its config; each field the
/// plugin rejects is a problem of `receivers[i].config.<field>`.
async fn bind_receiver(
    view: &TenantView<'_>,
    config: &Config,
    plugins: &HashMap<String, Arc<Plugin>>,
    i: usize,
    capture: Option<crate::plugin::Capture>,
    errors: &mut Vec<ConfigError>,
) -> Option<crate::plugin::Receiver> {
    let r = &view.receivers[i];
    let plugin = plugins.get(&r.plugin)?;
    let mut error = |key: String, message: String| errors.push(ConfigError { line: None, file: view.file.to_path_buf(), key, message });
    let smtp = match (&r.smtp, plugin.sends_mail()) {
        (Some(smtp), true) => {
            let ca = smtp.ca_file.as_ref().and_then(|path| std::fs::read(config.resolve(path)).ok());
            match crate::plugin::Mailer::new(&r.name, smtp, ca.as_deref(), capture.clone()) {
                Ok(mailer) => Some(mailer),
                Err(why) => {
                    error(format!("receivers[{i}].smtp"), why);
                    return None;
                }
            }
        }
        (None, false) => None,
        (None, true) => {
            let message = format!(
                "plugin `{}` sends mail through the host: give receiver `{}` an [receivers.smtp] table with the server's smarthost",
                r.plugin, r.name
            );
            error(format!("receivers[{i}].smtp"), message);
            return None;
        }
        (Some(_), false) => {
            let message =
                format!("plugin `{}` does not send mail, so receiver `{}` needs no SMTP grant; remove [receivers.smtp]", r.plugin, r.name);
            error(format!("receivers[{i}].smtp"), message);
            return None;
        }
    };
    let spec = ReceiverSpec {
        tenant: view.name.to_string(),
        name: r.name.clone(),
        config: r.config.clone(),
        allowed_hosts: r.allowed_hosts.iter().filter_map(|h| HostPattern::parse(h).ok()).collect(),
        allow_private_addresses: r.allow_private_addresses,
        smtp,
        limits: r.limits.clone().unwrap_or_else(|| config.runtime.limits.clone()),
        isolation: config.runtime.isolation,
        max_in_flight: config.runtime.max_in_flight_per_receiver,
        secrets: r.secrets.clone(),
        capture,
    };
    match plugin.bind(spec).await {
        Ok(receiver) => return Some(receiver),
        Err(BindError::Config(problems)) => {
            for p in problems {
                let key = if p.field.is_empty() { format!("receivers[{i}].config") } else { format!("receivers[{i}].config.{}", p.field) };
                error(key, format!("{} (receiver `{}`, plugin `{}`)", p.message, r.name, r.plugin));
            }
        }
        Err(BindError::Plugin(failure)) => {
            error(format!("receivers[{i}]"), format!("plugin `{}` failed while validating receiver `{}`: {failure}", r.plugin, r.name))
        }
    }
    None
}

/// Compile the tenant's routing script and run its self-tests; a failure is a problem at the
/// script's line.
fn build_router(view: &TenantView<'_>, errors: &mut Vec<ConfigError>) -> Option<Router> {
    let spec = view.router_spec();
    // A script that cannot be read is a problem of the key that names it.
    if let Some(script) = &spec.script
        && let Err(e) = std::fs::metadata(script)
    {
        let message = format!("cannot read the routing script {}: {e} (tenant `{}`)", script.display(), view.name);
        errors.push(ConfigError { line: None, file: view.file.to_path_buf(), key: "route.script".into(), message });
        return None;
    }
    match Router::build(spec) {
        Ok(router) => Some(router),
        Err(e) => {
            let key = e.line.map_or("-".to_string(), |l| format!("line {l}"));
            errors.push(ConfigError { line: None, file: e.file, key, message: format!("{} (tenant `{}`)", e.message, view.name) });
            None
        }
    }
}

/// A firing notification of one sample alert, for checking templates.
fn sample_notification(tenant: &str, receiver: &str) -> crate::plugin::Notification {
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
fn offline_runtime(config: &Config) -> Result<Runtime, StartError> {
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

/// A running daemon.
pub struct Running {
    /// The address the API listens on.
    pub addr: SocketAddr,
    /// Resolves when the server stops.
    pub server: tokio::task::JoinHandle<()>,
    /// The daemon (reload, tenants).
    pub daemon: Arc<Daemon>,
}

/// Open the store, load plugins, build the tenants, bind the listener and serve until
/// `shutdown` resolves.
pub async fn start(
    config_path: PathBuf,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, StartError> {
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: config.resolve(&config.runtime.cache_dir),
        allocator: config.runtime.allocator,
        pool_slots: config.runtime.max_in_flight as u32,
        profiler: config.runtime.profiler,
    })?;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let store_path = config.resolve(&config.store.path);
    let store = RedbStore::open_with(&store_path, Checkpoints::default(), metrics.store_timings.clone())
        .map_err(|e| anyhow::anyhow!("{e} (check [store] path and its permissions)"))?;
    tracing::info!(path = %store_path.display(), "store opened");
    let store: Arc<dyn Store> = Arc::new(store);
    let audit_path = config.resolve(&config.audit.path);
    let audit = Arc::new(AuditLog::open(&audit_path, config.audit.max_bytes).map_err(|e| anyhow::anyhow!("{e}"))?);
    tracing::info!(path = %audit_path.display(), "audit trail opened");
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e} (set [server] listen to a free address)", config.server.listen))?;
    let addr = listener.local_addr().map_err(anyhow::Error::from)?;
    descriptors_for(config.server.max_connections);
    let (changed_scripts, script_events) = tokio::sync::mpsc::unbounded_channel();
    let watcher = match crate::watch::ScriptWatcher::new(changed_scripts) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch routing scripts; reload them with SIGHUP or POST /-/reload");
            None
        }
    };
    let daemon = Arc::new(Daemon {
        config_path,
        runtime,
        store: store.clone(),
        dispatcher: Dispatcher::start(MAX_PENDING, config.runtime.max_in_flight, store, audit.clone(), metrics.clone()),
        audit,
        metrics,
        store_path,
        external_url: config.external_url(addr),
        states: Mutex::new(HashMap::new()),
        tenants: RwLock::new(Arc::new(Tenants::new(Vec::new(), false, Vec::new()))),
        wake: Arc::new(tokio::sync::Notify::new()),
        watcher,
        gates: Mutex::new(HashMap::new()),
        ack_links: Arc::new(std::sync::OnceLock::new()),
        ack_link_ttl: config.server.ack_link_ttl,
    });
    let (tenants, built) = daemon.build_tenants(config).await?;
    daemon.commit(tenants, built, "start");
    let reloading = daemon.clone();
    tokio::spawn(crate::watch::reload_changed_scripts(move |path| reloading.reload_script(path), script_events));
    tokio::spawn(flusher(daemon.clone()));
    tokio::spawn(sweep(daemon.clone(), config.alerts.sweep_interval));
    tokio::spawn(crate::alloc::return_freed_memory());
    let app = Arc::new(App {
        daemon: daemon.clone(),
        max_body_bytes: config.server.max_body_bytes,
        body_read_timeout: config.server.body_read_timeout,
        timeouts: api::Timeouts { header_read: config.server.header_read_timeout, idle: config.server.idle_timeout },
        max_connections: config.server.max_connections,
        started: chrono::Utc::now(),
        ack_links: daemon.ack_links.clone(),
    });
    let server = tokio::spawn(api::serve(listener, app, shutdown));
    Ok(Running { addr, server, daemon })
}

/// Raise the file-descriptor soft limit to the hard one (as Go's runtime does at start), and
/// say so if `max_connections` clients would still leave too few for the rest.
fn descriptors_for(max_connections: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    /// Descriptors besides the API's connections: the store, the audit trail, plugins' outbound
    /// connections, the script watcher.
    const RESERVED: u64 = 256;
    let limit = getrlimit(Resource::Nofile);
    let mut soft = limit.current.unwrap_or(u64::MAX);
    if limit.current < limit.maximum || limit.maximum.is_none() {
        let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            soft = limit.maximum.unwrap_or(u64::MAX);
        }
    }
    if (max_connections as u64).saturating_add(RESERVED) > soft {
        tracing::warn!(
            max_connections,
            descriptor_limit = soft,
            "[server] max_connections leaves fewer than {RESERVED} file descriptors for the store and plugins; lower it or raise `ulimit -n`"
        );
    }
}

/// Flushes every tenant's due groups, a batch of each tenant's per pass, then sleeps until the
/// next one is due or a group becomes due sooner. With nothing due it does not wake at all,
/// however many groups exist.
async fn flusher(daemon: Arc<Daemon>) {
    loop {
        let now = chrono::Utc::now();
        let mut next: Option<chrono::DateTime<chrono::Utc>> = None;
        let mut more = false;
        for tenant in daemon.tenants().all() {
            more |= tenant.notifier.flush_due(now, daemon.dispatcher.flush_batch()).await;
            if let Some(due) = tenant.notifier.next_due() {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        if more {
            // More groups are due than one pass decides: the next pass once the runners have
            // caught up, so each tenant's next batch is decided as it can be delivered.
            daemon.dispatcher.room().await;
            continue;
        }
        let sleep = match next {
            Some(at) => (at - chrono::Utc::now()).to_std().unwrap_or_default(),
            None => std::time::Duration::from_secs(3600),
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = daemon.wake.notified() => {}
        }
    }
}

/// Every `interval`, for every tenant: drop expired alerts and silences, and let groups
/// re-evaluate when a silence started or ended since the last sweep.
async fn sweep(daemon: Arc<Daemon>, interval: std::time::Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = chrono::Utc::now();
    loop {
        tick.tick().await;
        let now = chrono::Utc::now();
        for tenant in daemon.tenants().all() {
            let notifier = &tenant.notifier;
            if notifier.silences.changed_between(last, now) {
                notifier.touch_all(now);
            }
            let mut expired = {
                let routing = notifier.routing.lock().expect("routing lock");
                notifier.state.collect_garbage(now, &|fp| routing.groups.is_member(fp))
            };
            expired.extend(notifier.silences.collect_garbage(now));
            if !expired.is_empty() {
                tracing::debug!(tenant = %tenant.name, records = expired.len(), "collected expired alerts and silences");
                notifier.store.submit_background(expired);
            }
        }
        last = now;
    }
}
