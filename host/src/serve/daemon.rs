//! The running daemon: the tenants built from the configuration and swapped whole on reload, what outlives a reload (alerts, silences, groups, gates), and what a restart restores from the store.

use super::build::bind_receiver;
use super::build::build_router;
use super::build::load_plugins;
use super::error::StartError;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};

use crate::api::Reload;
use crate::audit::AuditLog;
use crate::config::ReceiverConfig;
use crate::config::{Config, ConfigError, ConfigErrors, TenantView, parse_token_hash};
use crate::dispatch::{Backoff, Breaker, Channel, Channels, ConfigStatus, Dispatcher, Gate, Notifier, OutboxEntry, RateLimit, Routing};
use crate::dispatch::{BreakerConfig, RateLimitConfig};
use crate::group::{Groups, History};
use crate::inhibit::Inhibitor;
use crate::plugin::{Plugin, Runtime};
use crate::route::Router;
use crate::silence::Silences;
use crate::state::{AlertSettings, AlertState};
use crate::store::{Record, Store, Table};
use crate::tenant::{Tenant, Tenants};
use crate::timeinterval::TimeInterval;

/// Notifications in the delivery pipeline (waiting, retrying or in flight) before group
/// flushes wait for room; every one of them is also in the durable outbox.
pub(super) const MAX_PENDING: usize = 100_000;

/// The store's meta entry holding the ack links' signing key.
pub(super) const ACK_LINK_KEY: &str = "ack_link_key";

/// What outlives reloads: the engine, the store, the dispatcher, and every tenant's alerts.
pub struct Daemon {
    pub(super) config_path: PathBuf,
    pub(super) runtime: Runtime,
    pub(super) store: Arc<dyn Store>,
    pub(super) dispatcher: Dispatcher,
    pub(super) external_url: String,
    /// Alerts, silences and groups by tenant; kept across reloads so a changed tenant keeps them.
    pub(super) states: Mutex<HashMap<String, TenantState>>,
    pub(super) tenants: RwLock<Arc<Tenants>>,
    /// Wakes the flusher when a group becomes due sooner than it planned to wake.
    pub(super) wake: Arc<tokio::sync::Notify>,
    /// Reloads routing scripts when their files change.
    pub(super) watcher: Option<crate::watch::ScriptWatcher>,
    /// Every metric.
    pub(super) metrics: Arc<crate::metrics::Metrics>,
    /// The audit trail (reloads here; deliveries in the pipeline, silences in the API).
    pub(crate) audit: Arc<AuditLog>,
    /// The store file, for its size.
    pub(super) store_path: PathBuf,
    /// Rate limits and breakers by (tenant, receiver); a reload keeps those whose settings stay.
    pub(super) gates: Mutex<HashMap<(String, String), GateEntry>>,
    /// Signs acknowledge links; its key lives in the store, so links survive restarts.
    pub(super) ack_links: Arc<std::sync::OnceLock<crate::ack::AckLinks>>,
    /// How long acknowledge links work.
    pub(super) ack_link_ttl: std::time::Duration,
}

/// A receiver's gate and the settings it was made with.
pub(super) struct GateEntry {
    pub(super) rate: Option<RateLimitConfig>,
    pub(super) breaker: BreakerConfig,
    pub(super) gate: Arc<Gate>,
}

/// A tenant's alerts, silences, and router with its groups.
#[derive(Clone)]
pub(super) struct TenantState {
    pub(super) alerts: Arc<AlertState>,
    pub(super) silences: Arc<Silences>,
    pub(super) routing: Arc<Mutex<Routing>>,
    pub(super) config_status: Arc<ConfigStatus>,
}

/// The records of one table, decoded as `T`, with their tenant and id; the first that does not
/// decode stops the start (`what` names the kind of record).
pub(super) fn decoded<T: serde::de::DeserializeOwned>(records: Vec<Record>, what: &str) -> Result<Vec<(String, String, T)>, StartError> {
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
pub(super) struct Built {
    pub(super) notifier: Arc<Notifier>,
    pub(super) router: Arc<Router>,
    /// Notifications a previous run left in the outbox (new tenants only).
    pub(super) outbox: Vec<(String, OutboxEntry)>,
}

impl Daemon {
    /// The current tenants.
    pub fn tenants(&self) -> Arc<Tenants> {
        self.tenants.read().expect("tenants lock").clone()
    }

    /// Load every plugin, bind every tenant's receivers, compile every routing script (with its
    /// self-tests); collect every problem before giving up. Nothing goes live until [`Daemon::commit`].
    pub(super) async fn build_tenants(&self, config: &Config) -> Result<(Tenants, Vec<Built>), StartError> {
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
                refusals: std::sync::OnceLock::new(),
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
    pub(super) fn commit(&self, tenants: Tenants, built: Vec<Built>, by: &str) -> usize {
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
    pub(super) async fn bind_channels(
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
    pub(super) fn gate(&self, tenant: &str, r: &ReceiverConfig) -> Arc<Gate> {
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
