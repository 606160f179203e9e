//! Wires config, plugins, receivers, routing, dispatch and the API into the running daemon.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api::{self, App};
use crate::config::{Config, ConfigError, ConfigErrors};
use crate::dispatch::{Dispatcher, Notifier, OnOutcome};
use crate::plugin::{BindError, HostPattern, Plugin, ReceiverSpec, Runtime, RuntimeOptions};
use crate::route::Router;
use crate::state::{AlertSettings, AlertState};
use crate::store::{RedbStore, Store};

/// The tenant of a single-tenant setup.
pub const DEFAULT_TENANT: &str = "default";

/// Deliveries waiting for a worker before ingest answers 503.
const QUEUE_CAPACITY: usize = 100_000;

/// Why the daemon did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is wrong: the operator must fix it.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// Anything else (a port in use, an engine that cannot start).
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

/// Everything the API needs, built from a checked configuration.
pub struct Prepared {
    /// The plugin runtime (kept alive for the daemon's life).
    pub runtime: Runtime,
    /// Loaded plugins by configured name.
    pub plugins: HashMap<String, Arc<Plugin>>,
    /// Bound receivers by name.
    pub receivers: HashMap<String, Arc<crate::plugin::Receiver>>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The default tenant's alerts, restored from the store.
    pub state: Arc<AlertState>,
}

/// Load every plugin and bind every receiver; collect every problem before giving up.
pub async fn prepare(config: &Config) -> Result<Prepared, StartError> {
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: config.resolve(&config.runtime.cache_dir),
        allocator: config.runtime.allocator,
        pool_slots: config.runtime.max_in_flight as u32,
    })?;
    let mut errors = Vec::new();
    let mut error = |key: String, message: String| errors.push(ConfigError { file: config.file.clone(), key, message });
    let mut plugins = HashMap::new();
    for (name, source) in &config.plugins {
        match runtime.load(&config.resolve(&source.path), source.sha256.as_deref()).await {
            Ok(plugin) => {
                tracing::info!(plugin = %name, version = %plugin.info.version, sha256 = %plugin.sha256, source = ?plugin.source, load_ms = plugin.load_time.as_secs_f64() * 1e3, "plugin loaded");
                plugins.insert(name.clone(), plugin);
            }
            Err(e) => error(format!("plugins.{name}.path"), e.to_string()),
        }
    }
    let mut receivers = HashMap::new();
    for (i, r) in config.receivers.iter().enumerate() {
        let Some(plugin) = plugins.get(&r.plugin) else { continue };
        let spec = ReceiverSpec {
            tenant: DEFAULT_TENANT.to_string(),
            name: r.name.clone(),
            config: r.config.clone(),
            allowed_hosts: r.allowed_hosts.iter().filter_map(|h| HostPattern::parse(h).ok()).collect(),
            allow_private_addresses: r.allow_private_addresses,
            limits: r.limits.clone().unwrap_or_else(|| config.runtime.limits.clone()),
            isolation: config.runtime.isolation,
        };
        match plugin.bind(spec).await {
            Ok(receiver) => {
                receivers.insert(r.name.clone(), Arc::new(receiver));
            }
            Err(BindError::Config(problems)) => {
                for p in problems {
                    let key = if p.field.is_empty() { format!("receivers[{i}].config") } else { format!("receivers[{i}].config.{}", p.field) };
                    error(key, format!("{} (receiver `{}`, plugin `{}`)", p.message, r.name, r.plugin));
                }
            }
            Err(BindError::Plugin(failure)) => error(
                format!("receivers[{i}]"),
                format!("plugin `{}` failed while validating receiver `{}`: {failure}", r.plugin, r.name),
            ),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors).into());
    }
    let store_path = config.resolve(&config.store.path);
    let store = RedbStore::open(&store_path).map_err(|e| anyhow::anyhow!("{e} (check [store] path and its permissions)"))?;
    let snapshot = store.load().map_err(|e| anyhow::anyhow!("{e}"))?;
    let settings = AlertSettings {
        resolve_timeout: config.alerts.resolve_timeout,
        resolved_retention: config.alerts.resolved_retention,
    };
    let state = Arc::new(AlertState::new(DEFAULT_TENANT, settings));
    let restored = snapshot.alerts.into_iter().filter(|(tenant, _)| tenant == DEFAULT_TENANT).map(|(_, a)| a);
    state.restore(restored);
    tracing::info!(path = %store_path.display(), alerts = state.len(), "store opened");
    Ok(Prepared { runtime, plugins, receivers, store: Arc::new(store), state })
}

/// A running daemon.
pub struct Running {
    /// The address the API listens on.
    pub addr: SocketAddr,
    /// Resolves when the server stops.
    pub server: tokio::task::JoinHandle<()>,
    /// The runtime, kept alive while the daemon runs.
    pub prepared: Arc<Prepared>,
}

/// Prepare, bind the listener and serve until `shutdown` resolves.
pub async fn start(config: &Config, on_outcome: OnOutcome, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<Running, StartError> {
    let prepared = Arc::new(prepare(config).await?);
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e} (set [server] listen to a free address)", config.server.listen))?;
    let addr = listener.local_addr().map_err(anyhow::Error::from)?;
    let dispatcher = Dispatcher::start(QUEUE_CAPACITY, config.runtime.max_in_flight, on_outcome);
    let notifier = Arc::new(Notifier {
        tenant: DEFAULT_TENANT.to_string(),
        router: Router::new(config.route.receiver.clone()),
        receivers: prepared.receivers.clone(),
        dispatcher,
        external_url: config.external_url(addr),
        state: prepared.state.clone(),
        store: prepared.store.clone(),
    });
    tokio::spawn(sweep(notifier.clone(), config.alerts.sweep_interval));
    let app = Arc::new(App { notifier, max_body_bytes: config.server.max_body_bytes, started: chrono::Utc::now() });
    let server = tokio::spawn(api::serve(listener, app, shutdown));
    Ok(Running { addr, server, prepared })
}

/// Every `interval`: notify changes nobody was told about (alerts that resolved by timeout,
/// changes left over by a full queue or a restart), and drop expired resolved alerts.
async fn sweep(notifier: Arc<Notifier>, interval: std::time::Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = chrono::Utc::now();
        if notifier.notify_changes(None, now).is_err() {
            tracing::warn!(tenant = %notifier.tenant, "the delivery queue is full; retrying at the next sweep");
        }
        let expired = notifier.state.collect_garbage(now);
        if !expired.is_empty() {
            tracing::debug!(tenant = %notifier.tenant, alerts = expired.len(), "collected resolved alerts");
            drop(notifier.store.submit(expired));
        }
    }
}
