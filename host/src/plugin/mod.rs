//! Channel plugins: compile and cache components, bind receivers to them, and run deliveries in sandboxes.
//!
//! A [`Runtime`] owns the engine (with epoch interruption driven by a 10 ms ticker) and the
//! linker. [`Runtime::load`] turns a `.wasm` into a [`Plugin`] (compiled once, cached on disk,
//! one `InstancePre`). [`Plugin::bind`] validates a receiver's configuration with the plugin and
//! returns a [`Receiver`], which owns the receiver's grants and its instances: an instance only
//! ever serves the receiver it was created for.

mod bindings;
mod cache;
mod error;
mod mailer;
mod outbound;
mod sandbox;
mod settings;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use bindings::belfry::receiver::http::{Method as HttpMethod, Request as HttpRequest};
pub use bindings::belfry::receiver::types::{
    Alert, AlertStatus, Config as PluginConfig, ConfigError as PluginConfigError, ConfigField, ConfigValue, DeliveryReport, FieldKind,
    Notification, PluginInfo,
};
pub use cache::LoadSource;
pub use error::{Blame, DeliveryFailure, FailureKind};
pub use mailer::{Mailer, SmtpConfig, SmtpTls};
pub use outbound::{Capture, Captured, CapturedMail, HostPattern, HttpGrant, Outbound, is_internal, shown_header};
pub use sandbox::{Redactor, Usage};
pub use settings::{Allocator, Isolation, Limits, PluginSource, Profiler, RuntimeConfig};

use bindings::ReceiverPre;
use sandbox::{Grants, Instance, State};

/// How often the epoch advances: the granularity of CPU deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// An instance is replaced after this many calls, so a slow leak in a plugin stays bounded.
const MAX_USES_PER_INSTANCE: u32 = 10_000;

/// Engine-wide options.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Where compiled components are cached.
    pub cache_dir: std::path::PathBuf,
    /// How instance memory is allocated.
    pub allocator: Allocator,
    /// Pooling only: instance slots (bounds deliveries in flight).
    pub pool_slots: u32,
    /// What tells a profiler the names of the plugins' compiled functions.
    pub profiler: Profiler,
}

/// The engine, the linker and the compile cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<State>,
    options: RuntimeOptions,
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error(
        "cannot read {path}: {source} (build the plugins first: cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml)"
    )]
    Read { path: String, source: std::io::Error },
    /// The file's SHA-256 is not the pinned one.
    #[error("{path} has sha256 {actual}, but the configuration pins {expected}; refusing to load it")]
    Integrity { path: String, expected: String, actual: String },
    /// Not a valid component, or not one implementing `belfry:receiver`.
    #[error("{path} is not a usable Belfry plugin: {message}")]
    Invalid { path: String, message: String },
}

impl Runtime {
    /// An engine configured for sandboxed plugins, and its epoch ticker.
    pub fn new(options: RuntimeOptions) -> anyhow::Result<Runtime> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        if options.profiler == Profiler::Perfmap {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if options.allocator == Allocator::Pooling {
            let mut pool = PoolingAllocationConfig::default();
            let slots = options.pool_slots.max(1);
            pool.total_component_instances(slots)
                .total_core_instances(slots * 4)
                .total_memories(slots * 2)
                .total_tables(slots * 4)
                .total_stacks(slots)
                // Above any per-receiver cap; growth beyond a receiver's cap is refused earlier.
                .max_memory_size(1 << 30)
                .linear_memory_keep_resident(1 << 20);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("cannot create the wasm engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        // Grants nothing by itself: the WasiCtx of every store is empty (see sandbox::instantiate).
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow::anyhow!("{e}"))?;
        bindings::Receiver::add_to_linker::<State, wasmtime::component::HasSelf<State>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        spawn_epoch_ticker(&engine);
        Ok(Runtime { engine, linker, options })
    }

    /// The engine (benchmarks and tests inspect it).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Load the component at `path` as the operator's plugin `key`, check its pin, compile it
    /// (or take it from the cache), link it, and ask it to `describe` itself.
    pub async fn load(&self, key: &str, path: &Path, pinned_sha256: Option<&str>) -> Result<Arc<Plugin>, LoadError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read { path: shown.clone(), source })?;
        let sha256 = hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
        if let Some(expected) = pinned_sha256
            && !expected.eq_ignore_ascii_case(&sha256)
        {
            return Err(LoadError::Integrity { path: shown, expected: expected.to_string(), actual: sha256 });
        }
        let invalid = |message: String| LoadError::Invalid { path: shown.clone(), message };
        let loaded = cache::load(&self.engine, &self.options.cache_dir, &bytes, &sha256).map_err(|e| invalid(format!("{e:#}")))?;
        let pre = self.linker.instantiate_pre(&loaded.component).map_err(|e| invalid(format!("{e:#}")))?;
        let pre = ReceiverPre::new(pre).map_err(|e| invalid(format!("it does not export belfry:receiver/plugin@0.1.0: {e:#}")))?;
        let describe_grants = Arc::new(Grants {
            tenant: String::new(),
            receiver: String::new(),
            plugin: key.to_string(),
            limits: Limits::default(),
            http: None,
            smtp: None,
            secrets: Redactor::default(),
        });
        let mut instance = sandbox::instantiate(&pre, describe_grants).await.map_err(|e| invalid(e.message))?;
        let info = instance.describe().await.map_err(|e| invalid(format!("describe failed: {}", e.message)))?;
        check_plugin_name(&info.name).map_err(invalid)?;
        let imports = loaded.component.component_type().imports(&self.engine).map(|(name, _)| name.to_string()).collect();
        Ok(Arc::new(Plugin { key: key.to_string(), info, sha256, imports, pre, source: loaded.source, load_time: loaded.elapsed }))
    }

    /// Compile `bytes` without the cache (benchmarks compare the two).
    pub fn compile_uncached(&self, bytes: &[u8]) -> anyhow::Result<Component> {
        Component::new(&self.engine, bytes).map_err(|e| anyhow::anyhow!("{e:#}"))
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("belfry-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}

/// The longest name a plugin may give itself in `describe`.
const MAX_PLUGIN_NAME: usize = 32;

/// A plugin's `describe` name must be a short identifier (`webhook`, `pagerduty-v2`): it is
/// shown beside the operator's key in `belfry plugin inspect` and the logs.
fn check_plugin_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_PLUGIN_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "describe returned the name {:?}; a plugin's name is 1-{MAX_PLUGIN_NAME} lowercase letters, digits, `-` or `_`, starting with a letter",
            sandbox::plugin_text(name, &Redactor::default()).chars().take(64).collect::<String>()
        ))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A loaded plugin: compiled once, linked once.
pub struct Plugin {
    /// The operator's name for it (its `[plugins.<key>]`): what logs, metrics and the audit
    /// trail attribute its work to, whatever the plugin says it is.
    pub key: String,
    /// What the plugin says about itself (strings bounded and escaped, name checked).
    pub info: PluginInfo,
    /// SHA-256 of the `.wasm`, hex.
    pub sha256: String,
    /// Compiled now or taken from the cache.
    pub source: LoadSource,
    /// Time to compile or deserialize.
    pub load_time: Duration,
    /// The interfaces the component imports (`belfry:receiver/http@0.1.0`, `wasi:io/...`).
    pub imports: Vec<String>,
    pre: ReceiverPre<State>,
}

impl Plugin {
    /// Whether the plugin sends mail through the host, and so needs an `[receivers.smtp]` grant.
    pub fn sends_mail(&self) -> bool {
        self.imports.iter().any(|name| name.starts_with("belfry:receiver/smtp@"))
    }
}

/// What it takes to bind a receiver to a plugin.
#[derive(Clone, Debug)]
pub struct ReceiverSpec {
    /// Owning tenant.
    pub tenant: String,
    /// Receiver name.
    pub name: String,
    /// Plugin configuration, from the operator's TOML.
    pub config: toml::Table,
    /// Hosts the plugin may reach for this receiver.
    pub allowed_hosts: Vec<HostPattern>,
    /// Whether internal address ranges are reachable.
    pub allow_private_addresses: bool,
    /// The SMTP capability, for receivers with an `[receivers.smtp]` table.
    pub smtp: Option<Mailer>,
    /// Limits per call.
    pub limits: Limits,
    /// Instance sharing.
    pub isolation: Isolation,
    /// Record HTTP requests here instead of sending them (`belfry template render`).
    pub capture: Option<Capture>,
    /// Values resolved from secret references (`${...}`, `enc:v1:`): masked like the fields
    /// the plugin's schema marks secret.
    pub secrets: Vec<String>,
    /// Deliveries this receiver runs at once, and so the instances it keeps: every instance is
    /// reused, never created for a burst and dropped after it (creating one costs ~15x a delivery).
    pub max_in_flight: usize,
}

/// Why a receiver could not be bound to its plugin.
#[derive(Debug)]
pub enum BindError {
    /// Config fields the plugin rejected, with the field at fault.
    Config(Vec<PluginConfigError>),
    /// The plugin failed while validating.
    Plugin(DeliveryFailure),
}

impl Plugin {
    /// Convert and validate `spec.config` with the plugin; on success, a receiver ready to deliver.
    pub async fn bind(self: &Arc<Self>, spec: ReceiverSpec) -> Result<Receiver, BindError> {
        let config = to_plugin_config(&spec.config).map_err(BindError::Config)?;
        let mut secrets = secret_values(&self.info, &config);
        secrets.extend(spec.secrets.iter().cloned());
        let secrets = Redactor::new(secrets);
        let http = (!spec.allowed_hosts.is_empty()).then(|| {
            Outbound::new(HttpGrant {
                receiver: spec.name.clone(),
                allowed_hosts: spec.allowed_hosts.clone(),
                allow_private: spec.allow_private_addresses,
                timeout: spec.limits.request_timeout(),
                max_response_bytes: spec.limits.response_max_bytes,
                capture: spec.capture.clone(),
            })
        });
        let grants = Arc::new(Grants {
            tenant: spec.tenant.clone(),
            receiver: spec.name.clone(),
            plugin: self.key.clone(),
            limits: spec.limits.clone(),
            http,
            smtp: spec.smtp,
            secrets,
        });
        let receiver = Receiver {
            plugin: self.clone(),
            grants,
            config,
            isolation: spec.isolation,
            idle: Mutex::new(Vec::new()),
            max_idle: spec.max_in_flight.max(1),
            slots: tokio::sync::Semaphore::new(spec.max_in_flight.max(1)),
        };
        let mut instance = receiver.checkout().await.map_err(BindError::Plugin)?;
        match instance.validate_config(&receiver.config).await {
            Ok(Ok(())) => {
                receiver.checkin(instance, true);
                let unreachable = self.unreachable_urls(&receiver.config, &spec.allowed_hosts, &spec.name);
                if !unreachable.is_empty() {
                    return Err(BindError::Config(
                        unreachable
                            .into_iter()
                            .map(|e| PluginConfigError { message: receiver.grants.secrets.redact(&e.message), ..e })
                            .collect(),
                    ));
                }
                Ok(receiver)
            }
            // Bounded, escaped and masked by the sandbox.
            Ok(Err(errors)) => Err(BindError::Config(errors)),
            Err(failure) => Err(BindError::Plugin(failure)),
        }
    }
}

impl Plugin {
    /// The URL-typed fields of `config` (by the plugin's schema) whose host `allowed_hosts` does
    /// not list: the plugin could never reach them, so the first delivery would fail.
    fn unreachable_urls(&self, config: &PluginConfig, allowed_hosts: &[HostPattern], receiver: &str) -> Vec<PluginConfigError> {
        let is_url = |name: &str| self.info.config_schema.iter().any(|f| f.name == name && f.kind == FieldKind::Url);
        config
            .iter()
            .filter(|(name, _)| is_url(name))
            .filter_map(|(name, value)| match value {
                ConfigValue::Text(url) if !url.is_empty() => Some((name, url)),
                _ => None,
            })
            // A URL that does not parse is the plugin's to report (validate-config did).
            .filter_map(|(name, url)| outbound::Target::parse(url).ok().map(|t| (name, t)))
            .filter(|(_, t)| !outbound::allows(allowed_hosts, &t.host, t.port))
            .map(|(name, t)| PluginConfigError { field: name.clone(), message: outbound::not_allowed(&t.host, t.port, receiver) })
            .collect()
    }
}

/// TOML → the WIT config: strings, integers, booleans, lists of strings, tables of strings.
fn to_plugin_config(table: &toml::Table) -> Result<PluginConfig, Vec<PluginConfigError>> {
    let mut out = Vec::with_capacity(table.len());
    let mut errors = Vec::new();
    for (key, value) in table {
        let converted = match value {
            toml::Value::String(s) => Some(ConfigValue::Text(s.clone())),
            toml::Value::Integer(n) => Some(ConfigValue::Integer(*n)),
            toml::Value::Boolean(b) => Some(ConfigValue::Boolean(*b)),
            toml::Value::Array(items) => {
                items.iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<Vec<_>>>().map(ConfigValue::TextList)
            }
            toml::Value::Table(t) => {
                t.iter().map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect::<Option<Vec<_>>>().map(ConfigValue::TextMap)
            }
            _ => None,
        };
        match converted {
            Some(v) => out.push((key.clone(), v)),
            None => errors.push(PluginConfigError {
                field: key.clone(),
                message: "plugin settings must be strings, integers, booleans, lists of strings or tables of strings".into(),
            }),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// Values of the fields the plugin's schema marks secret.
fn secret_values(info: &PluginInfo, config: &PluginConfig) -> Vec<String> {
    let mut out = Vec::new();
    for (name, value) in config {
        if !info.config_schema.iter().any(|f| &f.name == name && f.secret) {
            continue;
        }
        match value {
            ConfigValue::Text(s) => out.push(s.clone()),
            ConfigValue::TextList(v) => out.extend(v.iter().cloned()),
            ConfigValue::TextMap(m) => out.extend(m.iter().map(|(_, v)| v.clone())),
            ConfigValue::Integer(_) | ConfigValue::Boolean(_) => {}
        }
    }
    out
}

/// A receiver bound to its plugin: its validated configuration, its grants and its instances.
pub struct Receiver {
    plugin: Arc<Plugin>,
    grants: Arc<Grants>,
    config: PluginConfig,
    isolation: Isolation,
    idle: Mutex<Vec<Instance>>,
    /// Bounds concurrent deliveries, and so instances.
    slots: tokio::sync::Semaphore,
    max_idle: usize,
}

impl Receiver {
    /// Receiver name.
    pub fn name(&self) -> &str {
        &self.grants.receiver
    }

    /// Owning tenant.
    pub fn tenant(&self) -> &str {
        &self.grants.tenant
    }

    /// The plugin's name: the operator's `[plugins.<key>]`.
    pub fn plugin_name(&self) -> &str {
        &self.plugin.key
    }

    /// Whether the plugin shows title and body (so they are worth rendering).
    pub fn uses_text(&self) -> bool {
        self.plugin.info.uses_text
    }

    /// Masks this receiver's secrets.
    pub fn redactor(&self) -> &Redactor {
        &self.grants.secrets
    }

    /// Deliver `notification` through the plugin, in an instance that serves this receiver only.
    pub async fn deliver(&self, notification: &Notification) -> Result<DeliveryReport, DeliveryFailure> {
        self.deliver_measured(notification).await.0
    }

    /// [`Receiver::deliver`], with what the call used (none if no instance could be made).
    pub async fn deliver_measured(&self, notification: &Notification) -> (Result<DeliveryReport, DeliveryFailure>, Usage) {
        let _slot = self.slots.acquire().await.expect("the semaphore is never closed");
        let mut instance = match self.checkout().await {
            Ok(instance) => instance,
            Err(failure) => return (Err(failure), Usage::default()),
        };
        let max = self.grants.limits.max_alerts.max(1);
        let capped;
        let notification = if notification.alerts.len() > max {
            let mut n = notification.clone();
            let dropped = n.alerts.len() - max;
            n.alerts.truncate(max);
            n.truncated_alerts = n.truncated_alerts.saturating_add(u32::try_from(dropped).unwrap_or(u32::MAX));
            capped = n;
            &capped
        } else {
            notification
        };
        let outcome = instance.deliver(&self.config, notification).await;
        self.checkin(instance, outcome.reusable);
        (outcome.result, outcome.usage)
    }

    async fn checkout(&self) -> Result<Instance, DeliveryFailure> {
        if self.isolation == Isolation::PerReceiver
            && let Some(instance) = self.idle.lock().expect("idle pool lock").pop()
        {
            return Ok(instance);
        }
        sandbox::instantiate(&self.plugin.pre, self.grants.clone()).await
    }

    fn checkin(&self, instance: Instance, reusable: bool) {
        if !reusable || self.isolation == Isolation::PerDelivery || instance.uses >= MAX_USES_PER_INSTANCE {
            return;
        }
        // Linear memory never shrinks: an instance that grew for one large notification would
        // hold that memory while idle, up to max_in_flight x memory_mib per receiver.
        if instance.memory_bytes() > self.grants.limits.idle_memory_bytes() {
            return;
        }
        let mut idle = self.idle.lock().expect("idle pool lock");
        if idle.len() < self.max_idle {
            idle.push(instance);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_config_converts_to_plugin_values_sorted() {
        let table: toml::Table = toml::from_str(
            r#"
            url = "http://x/"
            max_alerts = 3
            send_resolved = true
            tags = ["a", "b"]
            headers = { X-A = "1" }
            "#,
        )
        .unwrap();
        let config = to_plugin_config(&table).unwrap();
        let names: Vec<&str> = config.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["headers", "max_alerts", "send_resolved", "tags", "url"]);
        assert!(matches!(&config[1].1, ConfigValue::Integer(3)));
        assert!(matches!(&config[0].1, ConfigValue::TextMap(m) if m == &[("X-A".to_string(), "1".to_string())]));
    }

    #[test]
    fn a_plugin_name_is_a_short_identifier() {
        for good in ["webhook", "pagerduty-v2", "ms_teams2"] {
            assert!(check_plugin_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Webhook", "web hook", "webhook\u{1b}[31m", "a\nb", "2fa", &"x".repeat(33)] {
            let e = check_plugin_name(bad).unwrap_err();
            assert!(e.contains("lowercase letters") && !e.contains('\u{1b}') && !e.contains('\n'), "{bad:?}: {e}");
        }
    }

    #[test]
    fn nested_or_mixed_values_are_refused_with_the_field() {
        let table: toml::Table = toml::from_str("a = 1.5\nb = [1, 2]\nc = { d = { e = 1 } }").unwrap();
        let errors = to_plugin_config(&table).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["a", "b", "c"]);
    }
}
