//! Starting the daemon: the store, the audit trail, the tenants, the listener; and the tasks that keep it going (flusher, sweeper, script watcher).

use super::daemon::Daemon;
use super::daemon::MAX_PENDING;
use super::error::StartError;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use tokio::net::TcpListener;

use crate::api::{self, App};
use crate::audit::AuditLog;
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::plugin::{Runtime, RuntimeOptions};
use crate::store::{Checkpoints, RedbStore, Store};
use crate::tenant::Tenants;

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
pub(super) fn descriptors_for(max_connections: usize) {
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
pub(super) async fn flusher(daemon: Arc<Daemon>) {
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
pub(super) async fn sweep(daemon: Arc<Daemon>, interval: std::time::Duration) {
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
