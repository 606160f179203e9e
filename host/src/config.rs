//! The operator's TOML configuration: parsed strictly, checked whole, errors name file and key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::timeinterval::TimeIntervalConfig;

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The HTTP API listener.
    #[serde(default)]
    pub server: ServerConfig,
    /// The plugin runtime: isolation, cache, limits.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Where state is kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// Where the audit trail is written.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Master keys for `enc:v1:` values.
    #[serde(default)]
    pub secrets: SecretsConfig,
    /// How long alerts live.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// How long silences are kept.
    #[serde(default)]
    pub silences: SilencesConfig,
    /// Plugins by name: `[plugins.webhook] path = "..."`.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginSource>,
    /// The default tenant's receivers: a named plugin with its configuration and grants.
    #[serde(default)]
    pub receivers: Vec<ReceiverConfig>,
    /// Where the default tenant's alerts go. Without it there is no default tenant.
    #[serde(default)]
    pub route: Option<RouteConfig>,
    /// The default tenant's inhibition rules.
    #[serde(default)]
    pub inhibit_rules: Vec<InhibitRuleConfig>,
    /// The default tenant's named time intervals.
    #[serde(default)]
    pub time_intervals: Vec<TimeIntervalConfig>,
    /// The default tenant's escalation policies.
    #[serde(default)]
    pub escalation_policies: Vec<EscalationPolicyConfig>,
    /// The default tenant's on-call schedules.
    #[serde(default)]
    pub schedules: Vec<ScheduleConfig>,
    /// The default tenant's template language and time zone.
    #[serde(default)]
    pub templates: TemplateDefaults,
    /// API tokens of the default tenant, as `sha256:<hex>` (`belfry token new` makes one). With
    /// none, requests without a token act for the default tenant (single-tenant setups).
    #[serde(default)]
    pub tokens: Vec<String>,
    /// More tenants, one directory each.
    #[serde(default)]
    pub tenants: TenantsConfig,
    /// Per-tenant limits: defaults for every tenant (a tenant's `[limits]` overrides keys).
    #[serde(default)]
    pub limits: TenantLimits,
    /// Tenants read from `[tenants] dir`, in name order.
    #[serde(skip)]
    pub tenant_files: Vec<TenantFile>,
    /// Directory of the config file; relative paths in it resolve against this.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The config file, for error messages.
    #[serde(skip)]
    pub file: PathBuf,
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the HTTP API. Port 0 picks a free port (printed at start).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The URL users reach Belfry at, sent to plugins for links back. Defaults to `http://<listen>`.
    #[serde(default)]
    pub external_url: Option<String>,
    /// Largest accepted request body.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Take the tenant from the `X-Scope-OrgID` header (Mimir's convention). Only for a
    /// listener that a trusted authenticating proxy fronts: anyone who can reach it can claim
    /// any tenant.
    #[serde(default)]
    pub trust_scope_org_id: bool,
    /// Tokens (`sha256:<hex>`) allowed to call `POST /-/reload` when tenants have tokens. In a
    /// setup without any token, reload is open, as in Alertmanager.
    #[serde(default)]
    pub admin_tokens: Vec<String>,
    /// How long the acknowledge links in notifications work (default 7 days).
    #[serde(default = "default_ack_link_ttl", with = "humantime_serde")]
    pub ack_link_ttl: Duration,
    /// A new connection, or a request that has begun, must finish its headers within this.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A request's body must arrive within this once its headers are in (else 408).
    #[serde(default = "default_body_read_timeout", with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// A keep-alive connection idle this long between requests is closed.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections open at once; beyond it new ones wait in the listen backlog (logged). Keep
    /// it well under the process's file-descriptor limit (`ulimit -n`): plugins' outbound
    /// connections and the store need descriptors too.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_header_read_timeout() -> Duration {
    // A client sends its headers in one write; 10 s covers a congested link.
    Duration::from_secs(10)
}

fn default_body_read_timeout() -> Duration {
    // A 4 MiB body at 150 KB/s.
    Duration::from_secs(30)
}

fn default_idle_timeout() -> Duration {
    // Longer than Prometheus' default evaluation interval (1 m), so its connection is reused.
    Duration::from_secs(90)
}

fn default_max_connections() -> usize {
    // Under the common 1,024-descriptor soft limit with room for the rest; start raises the
    // soft limit to the hard one where it can (as Go's runtime does).
    768
}

fn default_ack_link_ttl() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_listen() -> SocketAddr {
    // Alertmanager's port, so Prometheus configs that point at :9093 work unchanged.
    SocketAddr::from(([127, 0, 0, 1], 9093))
}

fn default_max_body_bytes() -> usize {
    // Prometheus sends at most `max_alerts_per_request`... its default batch of 64 alerts fits easily.
    4 << 20
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            external_url: None,
            max_body_bytes: default_max_body_bytes(),
            trust_scope_org_id: false,
            admin_tokens: Vec::new(),
            ack_link_ttl: default_ack_link_ttl(),
            header_read_timeout: default_header_read_timeout(),
            body_read_timeout: default_body_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

/// `[tenants]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsConfig {
    /// A directory with one subdirectory per tenant, each holding a `tenant.toml`. The
    /// subdirectory's name is the tenant's name. Relative to the config file.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

/// `tenants/<name>/tenant.toml`: what one tenant owns.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// API tokens, as `sha256:<hex>`. A tenant without tokens is reachable only through a
    /// trusted proxy (`X-Scope-OrgID`).
    #[serde(default)]
    pub tokens: Vec<String>,
    /// The tenant's receivers.
    #[serde(default)]
    pub receivers: Vec<ReceiverConfig>,
    /// Where its alerts go.
    pub route: RouteConfig,
    /// Its inhibition rules.
    #[serde(default)]
    pub inhibit_rules: Vec<InhibitRuleConfig>,
    /// Its named time intervals.
    #[serde(default)]
    pub time_intervals: Vec<TimeIntervalConfig>,
    /// Its escalation policies.
    #[serde(default)]
    pub escalation_policies: Vec<EscalationPolicyConfig>,
    /// Its on-call schedules.
    #[serde(default)]
    pub schedules: Vec<ScheduleConfig>,
    /// Its template language and time zone.
    #[serde(default)]
    pub templates: TemplateDefaults,
    /// Overrides of the top-level `[limits]`, key by key.
    #[serde(default)]
    pub limits: TenantLimitsOverride,
}

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

/// A tenant read from its directory.
#[derive(Debug)]
pub struct TenantFile {
    /// The tenant's name (its directory's name).
    pub name: String,
    /// Its `tenant.toml`.
    pub file: PathBuf,
    /// What it holds.
    pub config: TenantConfig,
}

/// One tenant's part of the configuration, wherever it was written.
#[derive(Debug, Clone)]
pub struct TenantView<'a> {
    /// The tenant's name.
    pub name: &'a str,
    /// The file that defines it, for error messages.
    pub file: &'a Path,
    /// Token hashes.
    pub tokens: &'a [String],
    /// Receivers.
    pub receivers: &'a [ReceiverConfig],
    /// Routing.
    pub route: &'a RouteConfig,
    /// Inhibition rules.
    pub inhibit_rules: &'a [InhibitRuleConfig],
    /// Named time intervals.
    pub time_intervals: &'a [TimeIntervalConfig],
    /// Escalation policies.
    pub escalation_policies: &'a [EscalationPolicyConfig],
    /// On-call schedules.
    pub schedules: &'a [ScheduleConfig],
    /// Template language and time zone.
    pub templates: &'a TemplateDefaults,
    /// Its limits: the top-level `[limits]` with the tenant's overrides.
    pub limits: TenantLimits,
}

/// The tenant the top-level `[[receivers]]` and `[route]` define.
pub const DEFAULT_TENANT: &str = "default";

/// Tenant names are directory names and store keys: short, lowercase, no separators.
pub fn check_tenant_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a valid tenant name: use 1-63 lowercase letters, digits, `-` or `_`, starting with a letter or digit"))
    }
}

/// Parse `sha256:<64 hex>` into the 32-byte hash.
pub fn parse_token_hash(s: &str) -> Result<[u8; 32], String> {
    let hex =
        s.strip_prefix("sha256:").ok_or_else(|| "must look like `sha256:<64 hex digits>`; `belfry token new` prints one".to_string())?;
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("must be `sha256:` followed by 64 hex digits; `belfry token new` prints one".into());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("checked hex");
    }
    Ok(out)
}

/// `[store]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The store file, relative to the config file; created (with its directory) on first start.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
}

fn default_store_path() -> PathBuf {
    PathBuf::from("data/belfry.redb")
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { path: default_store_path() }
    }
}

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

fn default_locale() -> String {
    "en".into()
}
fn default_timezone() -> String {
    "UTC".into()
}

impl Default for TemplateDefaults {
    fn default() -> Self {
        TemplateDefaults { locale: default_locale(), timezone: default_timezone() }
    }
}

impl TenantView<'_> {
    /// The tenant's templates, compiled; a problem names the receiver's `templates.<part>`.
    pub fn templates(&self) -> Result<crate::template::Templates, Vec<ConfigError>> {
        let receivers = self.receivers.iter().map(|r| (r.name.as_str(), &r.templates));
        crate::template::Templates::new(&self.templates.locale, &self.templates.timezone, receivers).map_err(|errors| {
            errors
                .into_iter()
                .map(|e| {
                    let i = self.receivers.iter().position(|r| r.name == e.receiver).unwrap_or(0);
                    let at = e.line.map_or(String::new(), |l| format!(" at line {l} of the template"));
                    ConfigError {
                        line: None,
                        file: self.file.to_path_buf(),
                        key: format!("receivers[{i}].templates.{}", e.part),
                        message: format!("{}{at}", e.message),
                    }
                })
                .collect()
        })
    }
}

/// `[secrets]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// Master keys by id: `id = "env:NAME"` or `id = "file:/path"`, each holding 32 bytes of
    /// base64 (`belfry secrets keygen`). Several ids may be live, so keys rotate.
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
}

/// `[audit]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The hash-chained audit trail (JSON lines), relative to the config file; created on first
    /// start, appended to afterwards. `belfry audit verify` checks it.
    #[serde(default = "default_audit_path")]
    pub path: PathBuf,
    /// The live file is renamed `<path>.<n>` once it reaches this size; the chain goes on.
    #[serde(default = "default_audit_max_bytes")]
    pub max_bytes: u64,
}

fn default_audit_max_bytes() -> u64 {
    100 << 20
}

fn default_audit_path() -> PathBuf {
    PathBuf::from("data/audit.jsonl")
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { path: default_audit_path(), max_bytes: default_audit_max_bytes() }
    }
}

/// `[alerts]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// `endsAt` given to alerts posted without one (Alertmanager's `resolve_timeout`), e.g. "5m".
    #[serde(default = "default_resolve_timeout", with = "humantime_serde")]
    pub resolve_timeout: Duration,
    /// How long resolved alerts stay visible after their resolve was notified, e.g. "30m".
    #[serde(default = "default_resolved_retention", with = "humantime_serde")]
    pub resolved_retention: Duration,
    /// How often Belfry looks for alerts that resolved by timeout and for garbage, e.g. "1s".
    #[serde(default = "default_sweep_interval", with = "humantime_serde")]
    pub sweep_interval: Duration,
}

fn default_resolve_timeout() -> Duration {
    // Alertmanager's default.
    Duration::from_secs(5 * 60)
}
fn default_resolved_retention() -> Duration {
    // Alertmanager's alerts.gc-interval: resolved alerts stay listed for up to this long.
    Duration::from_secs(30 * 60)
}
fn default_sweep_interval() -> Duration {
    Duration::from_secs(1)
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            resolve_timeout: default_resolve_timeout(),
            resolved_retention: default_resolved_retention(),
            sweep_interval: default_sweep_interval(),
        }
    }
}

/// `[silences]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilencesConfig {
    /// Expired silences stay listed this long, then are deleted (Alertmanager's `data.retention`), e.g. "120h".
    #[serde(default = "default_silence_retention", with = "humantime_serde")]
    pub retention: Duration,
}

fn default_silence_retention() -> Duration {
    Duration::from_secs(120 * 3600)
}

impl Default for SilencesConfig {
    fn default() -> Self {
        SilencesConfig { retention: default_silence_retention() }
    }
}

/// `[runtime]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Where compiled plugins are cached. Relative to the config file. Must be writable by
    /// Belfry alone: its contents are loaded as native code.
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
    /// How plugin instances are shared between deliveries.
    #[serde(default)]
    pub isolation: Isolation,
    /// How instance memory is allocated.
    #[serde(default)]
    pub allocator: Allocator,
    /// Deliveries in flight at once, across all receivers.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Deliveries one receiver runs at once; also the plugin instances it keeps for reuse.
    #[serde(default = "default_max_per_receiver")]
    pub max_in_flight_per_receiver: usize,
    /// A profiler agent for plugins' compiled code (off by default).
    #[serde(default)]
    pub profiler: Profiler,
    /// Default limits for every receiver; a receiver may lower or raise them.
    #[serde(default)]
    pub limits: Limits,
}

fn default_cache_dir() -> PathBuf {
    PathBuf::from(".belfry/cache")
}

fn default_max_per_receiver() -> usize {
    // Measured (docs/BENCHMARKS.md): 16 doubles the p99 of 64 at 10K alerts/s to one receiver.
    64
}

fn default_max_in_flight() -> usize {
    256
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: default_cache_dir(),
            isolation: Isolation::default(),
            allocator: Allocator::default(),
            max_in_flight: default_max_in_flight(),
            max_in_flight_per_receiver: default_max_per_receiver(),
            profiler: Profiler::default(),
            limits: Limits::default(),
        }
    }
}

/// How plugin instances are shared.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// An instance serves deliveries of one receiver only, and is reused by them; never shared
    /// across receivers or tenants. Discarded after any trap or limit violation.
    #[default]
    PerReceiver,
    /// A fresh instance for every delivery: nothing survives a delivery, at ~5x the cost.
    PerDelivery,
}

/// How instance memory is allocated.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Allocator {
    /// Allocate on demand: no up-front reservation. Best with `per-receiver` isolation.
    #[default]
    OnDemand,
    /// Pre-reserved slots: faster instantiation, large virtual reservation.
    Pooling,
}

/// What tells a profiler the names of plugins' functions, which wasmtime compiles at run time.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Profiler {
    /// Nothing: profiles show plugins' code as anonymous addresses.
    #[default]
    None,
    /// wasmtime writes `/tmp/perf-<pid>.map`, which `perf report` reads to name each compiled
    /// function (its name in the component, if the build kept names; its index otherwise).
    Perfmap,
}

/// Limits on one plugin call. Every one has a default; every violation is reported with blame.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Guest execution time per call, outside host calls (epoch-checked every 10 ms).
    #[serde(default = "default_cpu_ms")]
    pub cpu_ms: u64,
    /// Linear memory per instance.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Wall time for one outbound HTTP request, response body included.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Response bodies are cut at this size.
    #[serde(default = "default_response_max_bytes")]
    pub response_max_bytes: u64,
    /// Outbound requests per call.
    #[serde(default = "default_max_requests")]
    pub max_requests: u32,
    /// Log lines per call; further lines are dropped and counted.
    #[serde(default = "default_max_log_lines")]
    pub max_log_lines: u32,
    /// Alerts passed to the plugin per notification (firing first); the rest are counted in
    /// `truncated_alerts`, as Alertmanager's webhook `max_alerts` does. Bounds the time and
    /// memory of one call whatever the size of a group.
    #[serde(default = "default_max_alerts")]
    pub max_alerts: usize,
    /// An instance whose linear memory grew past this during a call is dropped after it
    /// instead of kept for the next delivery: memory never shrinks, so idle instances hold at
    /// most `max_in_flight x keep_idle_memory_mib` per receiver.
    #[serde(default = "default_keep_idle_memory_mib")]
    pub keep_idle_memory_mib: u64,
}

fn default_keep_idle_memory_mib() -> u64 {
    // Every bundled plugin delivers in 1-3 MiB; a 1,000-alert group in about 8.
    16
}

fn default_max_alerts() -> usize {
    1000
}

fn default_cpu_ms() -> u64 {
    // Building a payload takes microseconds; 100 ms leaves room for 10,000-alert groups.
    100
}
fn default_memory_mib() -> u64 {
    64
}
fn default_request_timeout_ms() -> u64 {
    10_000
}
fn default_response_max_bytes() -> u64 {
    1 << 20
}
fn default_max_requests() -> u32 {
    8
}
fn default_max_log_lines() -> u32 {
    100
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu_ms: default_cpu_ms(),
            memory_mib: default_memory_mib(),
            request_timeout_ms: default_request_timeout_ms(),
            response_max_bytes: default_response_max_bytes(),
            max_requests: default_max_requests(),
            max_log_lines: default_max_log_lines(),
            max_alerts: default_max_alerts(),
            keep_idle_memory_mib: default_keep_idle_memory_mib(),
        }
    }
}

impl Limits {
    /// Guest CPU budget per call.
    pub fn cpu(&self) -> Duration {
        Duration::from_millis(self.cpu_ms)
    }
    /// Timeout of one outbound request.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    /// Memory cap in bytes.
    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
    }
    /// Linear memory above which an instance is not kept idle, in bytes.
    pub fn idle_memory_bytes(&self) -> usize {
        usize::try_from(self.keep_idle_memory_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
    }
    /// Wall bound of one delivery call: its CPU budget, every request's timeout, and a second.
    pub fn call_timeout(&self) -> Duration {
        self.cpu() + self.request_timeout() * self.max_requests.max(1) + Duration::from_secs(1)
    }
}

/// `[plugins.<name>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSource {
    /// The component (`.wasm`), relative to the config file.
    pub path: PathBuf,
    /// If set, the component's SHA-256 (hex) must match or the plugin is refused.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// `[[receivers]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Unique name, used by routes.
    pub name: String,
    /// Which plugin delivers (a key of `[plugins]`).
    pub plugin: String,
    /// Hosts the plugin may send HTTP requests to: `example.com`, `*.example.com`, `10.0.0.5`,
    /// optionally with `:port`. Empty means no outbound HTTP at all.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Allow addresses in loopback, private, link-local and other internal ranges. Off by
    /// default so a plugin cannot reach internal services through a lookalike hostname.
    #[serde(default)]
    pub allow_private_addresses: bool,
    /// Per-receiver limits; defaults from `[runtime.limits]`.
    #[serde(default)]
    pub limits: Option<Limits>,
    /// Notify when a group's alerts resolve (Alertmanager's `send_resolved`).
    #[serde(default = "default_true")]
    pub send_resolved: bool,
    /// Where a notification goes instead when this receiver's circuit breaker is open or its
    /// retries are exhausted: another receiver of the same tenant (which may fail over in turn).
    #[serde(default)]
    pub fallback: Option<String>,
    /// At most this many notifications per period to this receiver (e.g. Slack's 1 per second);
    /// the rest wait their turn. None: no limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// How failed deliveries are retried.
    #[serde(default)]
    pub retry: RetryConfig,
    /// When the receiver is considered down and skipped for a while.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// The plugin's configuration, checked by its `validate-config`. Strings may hold
    /// `${ENV_VAR}`, `${file:/path}` or `enc:v1:` secrets, resolved when the config loads.
    #[serde(default)]
    pub config: toml::Table,
    /// Title and body templates overriding the tenant's defaults for this receiver.
    #[serde(default)]
    pub templates: crate::template::TemplatesConfig,
    /// The SMTP server the plugin may send mail through (the email channel). Absent: the
    /// plugin has no SMTP capability at all.
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
    /// The secret values resolved into `config`, masked wherever they could show.
    #[serde(skip)]
    pub secrets: Vec<String>,
}

/// `[receivers.smtp]`: the server an email receiver sends through. The host holds it; the
/// plugin only composes messages.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// `host:port` of the SMTP server (Alertmanager's `smarthost`), e.g. `smtp.example.com:587`.
    pub smarthost: String,
    /// How the connection is secured.
    #[serde(default)]
    pub tls: SmtpTls,
    /// User name for SMTP AUTH (PLAIN or LOGIN); none: no authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for SMTP AUTH; may be a `${ENV}`, `${file:...}` or `enc:v1:` secret.
    #[serde(default)]
    pub password: Option<String>,
    /// A PEM file of extra CA certificates to trust (a private CA), besides the web's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The name sent in EHLO (default: `belfry`).
    #[serde(default)]
    pub hello: Option<String>,
    /// Time allowed for a whole send: connect, TLS, AUTH and the message (default 30s).
    #[serde(default = "default_smtp_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_smtp_timeout() -> Duration {
    Duration::from_secs(30)
}

/// The TLS mode of an SMTP connection.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which the server must offer (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Implicit,
    /// No TLS at all: only for a relay on the same host. Refused together with a password.
    None,
}

impl SmtpConfig {
    /// `smarthost` split into host and port; the error says what is wrong.
    pub fn host_port(&self) -> Result<(String, u16), String> {
        let (host, port) = self
            .smarthost
            .rsplit_once(':')
            .ok_or_else(|| format!("`{}` has no port; write host:port, e.g. smtp.example.com:587", self.smarthost))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("`{}` has no host", self.smarthost));
        }
        let port = port.parse::<u16>().map_err(|_| format!("`{port}` is not a port number"))?;
        Ok((host.to_string(), port))
    }

    /// Problems as (key under `smtp`, message).
    fn check(&self, base_dir: &Path) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let Err(why) = self.host_port() {
            problems.push(("smarthost".into(), why));
        }
        if self.password.is_some() && self.username.is_none() {
            problems.push(("username".into(), "a password needs a username".into()));
        }
        if self.tls == SmtpTls::None && self.password.is_some() {
            problems.push((
                "tls".into(),
                "`none` would send the password in clear text; use `starttls` (port 587) or `implicit` (port 465)".into(),
            ));
        }
        if let Some(path) = &self.ca_file {
            let path = if path.is_absolute() { path.clone() } else { base_dir.join(path) };
            match std::fs::read(&path) {
                Ok(pem) if String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") => {}
                Ok(_) => problems.push(("ca_file".into(), format!("{} holds no PEM certificate", path.display()))),
                Err(e) => problems.push(("ca_file".into(), format!("cannot read {}: {e}", path.display()))),
            }
        }
        if self.timeout.is_zero() {
            problems.push(("timeout".into(), "must be greater than zero".into()));
        }
        problems
    }
}

/// `rate_limit = { messages = 1, per = "1s" }`: a token bucket per receiver.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Notifications allowed per `per`.
    pub messages: u32,
    /// The period, e.g. "1s" or "1m".
    #[serde(default = "default_rate_period", with = "humantime_serde")]
    pub per: Duration,
    /// Notifications that may go at once after a quiet spell (default: `messages`).
    #[serde(default)]
    pub burst: Option<u32>,
}

fn default_rate_period() -> Duration {
    Duration::from_secs(1)
}

/// `retry = { ... }`: exponential backoff with full jitter; a service's Retry-After wins when longer.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Tries in all, the first included (1 = never retry).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Upper bound of the first backoff.
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Upper bound of any backoff, Retry-After included.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
}

fn default_max_attempts() -> u32 {
    6
}
fn default_initial_backoff() -> Duration {
    Duration::from_millis(500)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { max_attempts: default_max_attempts(), initial_backoff: default_initial_backoff(), max_backoff: default_max_backoff() }
    }
}

/// `breaker = { ... }`: a per-receiver circuit breaker.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failed attempts that open the breaker.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// How long an open breaker refuses deliveries before one probe is let through.
    #[serde(default = "default_open_for", with = "humantime_serde")]
    pub open_for: Duration,
}

fn default_failure_threshold() -> u32 {
    5
}
fn default_open_for() -> Duration {
    Duration::from_secs(30)
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig { failure_threshold: default_failure_threshold(), open_for: default_open_for() }
    }
}

/// `[route]`: the tenant's routing script, its fallback receiver and the default grouping.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Where alerts go without a script, when the script returns `()`, and when it fails on
    /// an alert.
    pub receiver: String,
    /// A Rhai routing script (docs/ROUTING.md), relative to the file that names it. Reloaded
    /// when it changes.
    #[serde(default)]
    pub script: Option<PathBuf>,
    /// Labels that form a group; `["..."]` groups by all labels, `[]` puts all alerts in one
    /// group (Alertmanager's default).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// How long a new group waits for more alerts before its first notification.
    #[serde(default = "default_group_wait", with = "humantime_serde")]
    pub group_wait: Duration,
    /// How long a group waits after a notification before notifying changes.
    #[serde(default = "default_group_interval", with = "humantime_serde")]
    pub group_interval: Duration,
    /// How long before an unchanged, still firing group is notified again.
    #[serde(default = "default_repeat_interval", with = "humantime_serde")]
    pub repeat_interval: Duration,
    /// The escalation policy of the default route (a script's routes name their own).
    #[serde(default)]
    pub escalation: Option<String>,
}

/// `[[escalation_policies]]`: who is notified next while a group fires unacknowledged.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EscalationPolicyConfig {
    /// Unique within the tenant; routes name it (`escalation`).
    pub name: String,
    /// How many more times the steps run, from the first, after the last one (default 0).
    #[serde(default)]
    pub repeat: u32,
    /// The steps, in order.
    pub steps: Vec<EscalationStepConfig>,
}

/// `[[schedules]]`: an on-call schedule, named by escalation steps (`notify_on_call`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Unique within the tenant.
    pub name: String,
    /// IANA time zone of its handoffs and overrides (default UTC).
    #[serde(default)]
    pub location: Option<String>,
    /// Layers of rotations; later ones override earlier ones where they apply.
    #[serde(default)]
    pub rotations: Vec<RotationConfig>,
    /// Someone else on call for a while, over every rotation.
    #[serde(default)]
    pub overrides: Vec<OverrideConfig>,
}

/// One rotation of a schedule.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RotationConfig {
    /// Receivers of the tenant, on call in turn.
    pub receivers: Vec<String>,
    /// The first handoff, a local time (`2026-11-02T09:00`).
    pub start: String,
    /// Each turn (`1d`, `7d`, `12h`); at least 1m.
    #[serde(with = "humantime_serde")]
    pub length: Duration,
    /// The rotation applies only while one of these time intervals is active. None: always.
    #[serde(default)]
    pub active_time_intervals: Vec<String>,
}

/// An override of a schedule.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OverrideConfig {
    /// The receiver on call.
    pub receiver: String,
    /// From (local time).
    pub start: String,
    /// Until (local time, exclusive).
    pub end: String,
}

/// One step of an escalation policy.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EscalationStepConfig {
    /// How long after the previous step (for the first: after the group's first notification).
    #[serde(with = "humantime_serde")]
    pub wait: Duration,
    /// Receivers of the tenant to notify.
    #[serde(default)]
    pub notify: Vec<String>,
    /// Schedules whose on-call receiver to notify (`[[schedules]]`).
    #[serde(default)]
    pub notify_on_call: Vec<String>,
    /// The step notifies only while one of these time intervals is active (business hours);
    /// outside them it is passed over. None: always.
    #[serde(default)]
    pub active_time_intervals: Vec<String>,
}

fn default_true() -> bool {
    true
}
fn default_group_wait() -> Duration {
    crate::route::RouteOptions::default().group_wait
}
fn default_group_interval() -> Duration {
    crate::route::RouteOptions::default().group_interval
}
fn default_repeat_interval() -> Duration {
    crate::route::RouteOptions::default().repeat_interval
}

/// `[[inhibit_rules]]`: firing alerts matching `source_matchers` mute alerts matching
/// `target_matchers` that have the same values for the `equal` labels.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    /// Matchers in Alertmanager's syntax, e.g. `severity="critical"`.
    pub source_matchers: Vec<String>,
    /// Matchers the muted alerts satisfy, e.g. `severity=~"warning|info"`.
    pub target_matchers: Vec<String>,
    /// Labels whose values must be equal in source and target.
    #[serde(default)]
    pub equal: Vec<String>,
}

/// A problem with the configuration: where, and what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// The key at fault, e.g. `receivers[0].config.url`; a `line N` location for syntax errors.
    pub key: String,
    /// The line the key is on, once [`ConfigErrors::located`] looked it up.
    pub line: Option<usize>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// `file:line: key: message`, or `file:line: message` when the key is only a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match (self.line, self.key.strip_prefix("line ")) {
            (_, Some(line)) => write!(f, "{file}:{line}: {}", self.message),
            (Some(line), None) => write!(f, "{file}:{line}: {}: {}", self.key, self.message),
            (None, None) if self.key == "-" => write!(f, "{file}: {}", self.message),
            (None, None) => write!(f, "{file}: {}: {}", self.key, self.message),
        }
    }
}

impl ConfigErrors {
    /// These problems, then those a later stage of checking found, except where an earlier
    /// one already names the same key of the same file (a secret that did not resolve is not
    /// also a bad URL).
    pub fn and_then_later(mut self, later: ConfigErrors) -> ConfigErrors {
        for e in later.0 {
            if !self.0.iter().any(|earlier| earlier.file == e.file && earlier.key == e.key) {
                self.0.push(e);
            }
        }
        self
    }

    /// Every problem, with the line of its key looked up in its file (each file read once).
    pub fn located(mut self) -> ConfigErrors {
        let mut texts: std::collections::HashMap<PathBuf, Option<String>> = std::collections::HashMap::new();
        for e in &mut self.0 {
            if e.line.is_some() || e.key.starts_with("line ") {
                continue;
            }
            let text = texts.entry(e.file.clone()).or_insert_with(|| std::fs::read_to_string(&e.file).ok());
            e.line = text.as_deref().and_then(|t| line_of_key(t, &e.key));
        }
        self
    }
}

/// The line (1-based) where `key` (`receivers[0].config.url`, `route.receiver`) is set in the
/// TOML `text`, or where the deepest part of it that exists is.
pub fn line_of_key(text: &str, key: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut found = None;
    'segments: for segment in key.split('.') {
        let (name, indexes) = segment.split_at(segment.find('[').unwrap_or(segment.len()));
        let Some((_, mut value)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == name) else { break };
        found = Some(value.span().start);
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            let (Ok(i), DeValue::Array(items)) = (index.parse::<usize>(), value.get_ref()) else { break 'segments };
            let Some(item) = items.get(i) else { break 'segments };
            found = Some(item.span().start);
            value = item;
        }
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    found.map(|at| text[..at.min(text.len())].matches('\n').count() + 1)
}

/// Every problem found in one configuration.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Read and check `file`. Plugin-specific checks happen when the plugins load.
    pub fn load(file: &Path) -> Result<Config, ConfigErrors> {
        match Config::load_all(file) {
            (Some(config), errors) if errors.0.is_empty() => Ok(config),
            (_, errors) => Err(errors),
        }
    }

    /// Read and check `file`, going on past every problem that leaves something to check: a
    /// key the file gets wrong is noted and left out, a tenant whose file does not parse is
    /// left out, a secret that does not resolve is noted, and the cross-references are checked
    /// on what remains. The configuration is `None` only when the file itself cannot be read
    /// or parsed; with problems, it is fit for checking (`belfry check` goes on to the
    /// plugins with it), never for serving.
    pub fn load_all(file: &Path) -> (Option<Config>, ConfigErrors) {
        Config::load_with(file, None)
    }

    /// [`Config::load_all`] with the tenant directory `dir` (its `tenant.toml`, script and
    /// templates, wherever it is checked out) in place of the platform's copy of that tenant:
    /// how a tenant checks their own repository against the platform's configuration. The
    /// tenant is named after the directory.
    pub fn load_with_tenant(file: &Path, dir: &Path) -> (Option<Config>, ConfigErrors) {
        Config::load_with(file, Some(dir))
    }

    fn load_with(file: &Path, local_tenant: Option<&Path>) -> (Option<Config>, ConfigErrors) {
        let error = |key: &str, message: String| ConfigError { line: None, file: file.to_path_buf(), key: key.into(), message };
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => return (None, ConfigErrors(vec![error("-", format!("cannot read the config file: {e} (check the --config path)"))])),
        };
        let (config, problems) = parse_toml_all::<Config>(&text);
        let mut errors: Vec<ConfigError> = problems.into_iter().map(|(key, message)| error(&key, message)).collect();
        let Some(mut config) = config else { return (None, ConfigErrors(errors).located()) };
        config.file = file.to_path_buf();
        config.base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        config.tenant_files = config.read_tenant_dirs(&mut errors);
        if let Some(dir) = local_tenant {
            let name = dir.canonicalize().ok().and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_default();
            config.tenant_files.retain(|t| t.name != name);
            errors.retain(|e| !e.file.ends_with(Path::new(&name).join("tenant.toml")));
            if let Some(tenant) = config.read_tenant(dir, name, &mut errors) {
                config.tenant_files.push(tenant);
            }
        }
        config.resolve_secrets(&mut errors);
        config.check(&mut errors);
        (Some(config), ConfigErrors(errors).located())
    }

    /// Every `tenants/<name>/tenant.toml`, in name order, with each problem in `errors`; a
    /// tenant whose file does not parse is left out.
    fn read_tenant_dirs(&self, errors: &mut Vec<ConfigError>) -> Vec<TenantFile> {
        let Some(dir) = &self.tenants.dir else { return Vec::new() };
        let dir = self.resolve(dir);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                errors.push(ConfigError {
                    line: None,
                    file: self.file.clone(),
                    key: "tenants.dir".into(),
                    message: format!("cannot read {}: {e}", dir.display()),
                });
                return Vec::new();
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        let mut tenants = Vec::new();
        for name in names {
            if let Some(tenant) = self.read_tenant(&dir.join(&name), name, errors) {
                tenants.push(tenant);
            }
        }
        tenants
    }

    /// The tenant `name` from its directory `dir`, with each problem in `errors`; `None` when
    /// its `tenant.toml` cannot be read or parsed, or the name is refused.
    fn read_tenant(&self, dir: &Path, name: String, errors: &mut Vec<ConfigError>) -> Option<TenantFile> {
        let file = dir.join("tenant.toml");
        let mut fail = |key: String, message: String| errors.push(ConfigError { line: None, file: file.clone(), key, message });
        if let Err(why) = check_tenant_name(&name) {
            fail("-".into(), format!("{why} (rename the directory)"));
            return None;
        }
        if name == DEFAULT_TENANT && self.route.is_some() {
            fail("-".into(), "the top-level [route] already defines tenant `default`; rename this directory or move its settings".into());
            return None;
        }
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                fail("-".into(), format!("cannot read it: {e} (every tenant directory needs a tenant.toml)"));
                return None;
            }
        };
        let (config, problems) = parse_toml_all::<TenantConfig>(&text);
        for (key, message) in problems {
            fail(key, message);
        }
        config.map(|config| TenantFile { name, file, config })
    }

    /// Every tenant: the default one (top-level `[route]`), then those from `[tenants] dir`.
    pub fn tenants(&self) -> Vec<TenantView<'_>> {
        let default = self.route.as_ref().map(|route| TenantView {
            name: DEFAULT_TENANT,
            file: &self.file,
            tokens: &self.tokens,
            receivers: &self.receivers,
            route,
            inhibit_rules: &self.inhibit_rules,
            time_intervals: &self.time_intervals,
            escalation_policies: &self.escalation_policies,
            schedules: &self.schedules,
            templates: &self.templates,
            limits: self.limits.clone(),
        });
        default
            .into_iter()
            .chain(self.tenant_files.iter().map(|t| TenantView {
                name: &t.name,
                file: &t.file,
                tokens: &t.config.tokens,
                receivers: &t.config.receivers,
                route: &t.config.route,
                inhibit_rules: &t.config.inhibit_rules,
                time_intervals: &t.config.time_intervals,
                escalation_policies: &t.config.escalation_policies,
                schedules: &t.config.schedules,
                templates: &t.config.templates,
                limits: self.limits.with(&t.config.limits),
            }))
            .collect()
    }

    /// Parse TOML text; an error comes back as (location, message).
    pub fn parse(text: &str) -> Result<Config, (String, String)> {
        parse_toml(text)
    }

    /// The keyring of `[secrets.keys]`.
    pub fn keyring(&self) -> Result<crate::secrets::Keyring, ConfigErrors> {
        crate::secrets::Keyring::load(&self.secrets.keys, &self.base_dir)
            .map_err(|(key, message)| ConfigErrors(vec![ConfigError { line: None, file: self.file.clone(), key, message }]))
    }

    /// Resolve the secret references in every receiver's `config`, in every file; each
    /// problem (in `errors`) names the field, never a secret.
    fn resolve_secrets(&mut self, errors: &mut Vec<ConfigError>) {
        let keyring = match self.keyring() {
            Ok(keyring) => keyring,
            Err(problems) => {
                errors.extend(problems.0);
                return;
            }
        };
        let base_dir = self.base_dir.clone();
        let mut files: Vec<(PathBuf, &mut Vec<ReceiverConfig>)> = vec![(self.file.clone(), &mut self.receivers)];
        files.extend(self.tenant_files.iter_mut().map(|t| (t.file.clone(), &mut t.config.receivers)));
        for (file, receivers) in files {
            // `${file:...}` is relative to the file that says it (a tenant.toml's own directory).
            let base_dir = file.parent().map_or_else(|| base_dir.clone(), Path::to_path_buf);
            for (i, r) in receivers.iter_mut().enumerate() {
                let mut secrets = Vec::new();
                for (field, value) in r.config.iter_mut() {
                    let mut fail = |path: String, message: String| {
                        errors.push(ConfigError { line: None, file: file.clone(), key: format!("receivers[{i}].config.{path}"), message })
                    };
                    let mut resolve = |text: &mut String, path: String| match crate::secrets::resolve(text, &keyring, &base_dir) {
                        Ok(resolved) => {
                            *text = resolved.value;
                            secrets.extend(resolved.secrets);
                        }
                        Err(message) => fail(path, message),
                    };
                    match value {
                        toml::Value::String(s) => resolve(s, field.clone()),
                        toml::Value::Array(items) => {
                            for (j, item) in items.iter_mut().enumerate() {
                                if let toml::Value::String(s) = item {
                                    resolve(s, format!("{field}[{j}]"));
                                }
                            }
                        }
                        toml::Value::Table(table) => {
                            for (k, item) in table.iter_mut() {
                                if let toml::Value::String(s) = item {
                                    resolve(s, format!("{field}.{k}"));
                                }
                            }
                        }
                        _ => {}
                    }
                }
                if let Some(password) = r.smtp.as_mut().and_then(|smtp| smtp.password.as_mut()) {
                    match crate::secrets::resolve(password, &keyring, &base_dir) {
                        Ok(resolved) => *password = resolved.value,
                        Err(message) => errors.push(ConfigError {
                            line: None,
                            file: file.clone(),
                            key: format!("receivers[{i}].smtp.password"),
                            message,
                        }),
                    }
                    // Masked whether it was written in the file or resolved from a reference.
                    secrets.push(password.clone());
                }
                r.secrets = secrets;
            }
        }
    }

    /// Cross-references: unique receivers, known plugins, a routed receiver, valid tokens; for
    /// every tenant, each problem named in the file that defines it.
    fn check(&self, errors: &mut Vec<ConfigError>) {
        let mut push =
            |file: &Path, key: String, message: String| errors.push(ConfigError { line: None, file: file.to_path_buf(), key, message });
        if self.route.is_none() && !self.receivers.is_empty() {
            push(&self.file, "route".into(), "the top-level [[receivers]] need a [route] table naming where alerts go".into());
        }
        if self.route.is_none() && self.tenant_files.is_empty() {
            push(
                &self.file,
                "route".into(),
                "no tenant is defined: add a [route] (and [[receivers]]) for the default tenant, or [tenants] dir".into(),
            );
        }
        for tenant in self.tenants() {
            for (i, r) in tenant.receivers.iter().enumerate() {
                if r.name.trim().is_empty() {
                    push(tenant.file, format!("receivers[{i}].name"), "must not be empty".into());
                }
                if tenant.receivers[..i].iter().any(|o| o.name == r.name) {
                    push(
                        tenant.file,
                        format!("receivers[{i}].name"),
                        format!("receiver `{}` is defined twice; give each receiver its own name", r.name),
                    );
                }
                if !self.plugins.contains_key(&r.plugin) {
                    let known: Vec<&str> = self.plugins.keys().map(String::as_str).collect();
                    push(
                        tenant.file,
                        format!("receivers[{i}].plugin"),
                        format!(
                            "unknown plugin `{}`; declare it under [plugins.{}] in {} (known: {})",
                            r.plugin,
                            r.plugin,
                            self.file.display(),
                            known.join(", ")
                        ),
                    );
                }
                for (j, host) in r.allowed_hosts.iter().enumerate() {
                    if let Err(why) = crate::plugin::HostPattern::parse(host) {
                        push(tenant.file, format!("receivers[{i}].allowed_hosts[{j}]"), why);
                    }
                }
                if let Err((key, why)) = check_delivery_policy(r, tenant.receivers) {
                    push(tenant.file, format!("receivers[{i}].{key}"), why);
                }
                for (key, why) in r.smtp.iter().flat_map(|smtp| smtp.check(&self.base_dir)) {
                    push(tenant.file, format!("receivers[{i}].smtp.{key}"), why);
                }
            }
            if !tenant.receivers.iter().any(|r| r.name == tenant.route.receiver) {
                push(
                    tenant.file,
                    "route.receiver".into(),
                    format!("no receiver is named `{}`; add a [[receivers]] entry with that name", tenant.route.receiver),
                );
            }
            let route = tenant.route;
            if let Err(why) = crate::route::GroupBy::from_names(route.group_by.clone()) {
                push(tenant.file, "route.group_by".into(), why);
            }
            if route.group_interval.is_zero() {
                push(tenant.file, "route.group_interval".into(), "must be at least 1s".into());
            }
            for (i, rule) in tenant.inhibit_rules.iter().enumerate() {
                if let Err((key, why)) = crate::inhibit::InhibitRule::parse(rule) {
                    push(tenant.file, format!("inhibit_rules[{i}].{key}"), why);
                }
            }
            if !crate::template::LOCALES.contains(&tenant.templates.locale.as_str()) {
                push(
                    tenant.file,
                    "templates.locale".into(),
                    format!("`{}` has no default templates; use one of {}", tenant.templates.locale, crate::template::LOCALES.join(", ")),
                );
            }
            if tenant.templates.timezone.parse::<chrono_tz::Tz>().is_err() {
                push(
                    tenant.file,
                    "templates.timezone".into(),
                    format!("unknown time zone `{}` (use e.g. Europe/Paris)", tenant.templates.timezone),
                );
            }
            if let Err(problems) = tenant.templates() {
                for p in problems {
                    push(tenant.file, p.key, p.message);
                }
            }
            for (i, policy) in tenant.escalation_policies.iter().enumerate() {
                let key = |k: String| format!("escalation_policies[{i}].{k}");
                if tenant.escalation_policies[..i].iter().any(|o| o.name == policy.name) {
                    push(tenant.file, key("name".into()), format!("`{}` is defined twice", policy.name));
                }
                if policy.steps.is_empty() {
                    push(tenant.file, key("steps".into()), "needs at least one step".into());
                }
                for (j, step) in policy.steps.iter().enumerate() {
                    if step.wait < Duration::from_secs(1) {
                        push(tenant.file, key(format!("steps[{j}].wait")), "must be at least 1s".into());
                    }
                    if step.notify.is_empty() && step.notify_on_call.is_empty() {
                        push(
                            tenant.file,
                            key(format!("steps[{j}].notify")),
                            "name at least one receiver (or a schedule in notify_on_call)".into(),
                        );
                    }
                    for name in step.notify_on_call.iter().filter(|n| !tenant.schedules.iter().any(|s| &s.name == *n)) {
                        push(
                            tenant.file,
                            key(format!("steps[{j}].notify_on_call")),
                            format!("no schedule is named `{name}`; add a [[schedules]] entry"),
                        );
                    }
                    for name in step.notify.iter().filter(|n| !tenant.receivers.iter().any(|r| &r.name == *n)) {
                        push(tenant.file, key(format!("steps[{j}].notify")), format!("no receiver is named `{name}`"));
                    }
                    for name in step.active_time_intervals.iter().filter(|n| !tenant.time_intervals.iter().any(|t| &t.name == *n)) {
                        push(tenant.file, key(format!("steps[{j}].active_time_intervals")), format!("no time interval is named `{name}`"));
                    }
                }
            }
            for (i, schedule) in tenant.schedules.iter().enumerate() {
                let key = |k: &str| format!("schedules[{i}].{k}");
                if tenant.schedules[..i].iter().any(|o| o.name == schedule.name) {
                    push(tenant.file, key("name"), format!("`{}` is defined twice", schedule.name));
                }
                if let Err(problems) = crate::oncall::Schedule::from_config(schedule) {
                    for (k, message) in problems {
                        push(tenant.file, key(&k), message);
                    }
                }
                let receivers = schedule
                    .rotations
                    .iter()
                    .enumerate()
                    .flat_map(|(j, r)| r.receivers.iter().map(move |n| (format!("rotations[{j}].receivers"), n)));
                let overrides = schedule.overrides.iter().enumerate().map(|(j, o)| (format!("overrides[{j}].receiver"), &o.receiver));
                for (k, name) in receivers.chain(overrides).filter(|(_, n)| !tenant.receivers.iter().any(|r| &r.name == *n)) {
                    push(tenant.file, key(&k), format!("no receiver is named `{name}`"));
                }
                for (j, r) in schedule.rotations.iter().enumerate() {
                    for name in r.active_time_intervals.iter().filter(|n| !tenant.time_intervals.iter().any(|t| &t.name == *n)) {
                        push(
                            tenant.file,
                            key(&format!("rotations[{j}].active_time_intervals")),
                            format!("no time interval is named `{name}`"),
                        );
                    }
                }
            }
            if let Some(name) = &tenant.route.escalation
                && !tenant.escalation_policies.iter().any(|p| &p.name == name)
            {
                push(
                    tenant.file,
                    "route.escalation".into(),
                    format!("no escalation policy is named `{name}`; add an [[escalation_policies]] entry"),
                );
            }
            for (i, interval) in tenant.time_intervals.iter().enumerate() {
                if tenant.time_intervals[..i].iter().any(|o| o.name == interval.name) {
                    push(tenant.file, format!("time_intervals[{i}].name"), format!("`{}` is defined twice", interval.name));
                }
                if let Err((key, why)) = crate::timeinterval::TimeInterval::parse(interval) {
                    push(tenant.file, format!("time_intervals[{i}].{key}"), why);
                }
            }
            let l = &tenant.limits;
            if l.ingest_rate == 0 || l.ingest_burst == 0 {
                push(tenant.file, "limits.ingest_rate".into(), "ingest_rate and ingest_burst must be at least 1".into());
            } else if (l.ingest_burst as usize) < l.max_alerts_per_request {
                push(
                    tenant.file,
                    "limits.ingest_burst".into(),
                    format!(
                        "{} is below max_alerts_per_request ({}): a full request could never pass; raise it",
                        l.ingest_burst, l.max_alerts_per_request
                    ),
                );
            }
            for (i, token) in tenant.tokens.iter().enumerate() {
                if let Err(why) = parse_token_hash(token) {
                    push(tenant.file, format!("tokens[{i}]"), why);
                }
            }
        }
        for (i, token) in self.server.admin_tokens.iter().enumerate() {
            if let Err(why) = parse_token_hash(token) {
                push(&self.file, format!("server.admin_tokens[{i}]"), why);
            }
        }
        if self.alerts.sweep_interval.is_zero() {
            push(&self.file, "alerts.sweep_interval".into(), "must be greater than zero, e.g. \"1s\"".into());
        }
        for (name, p) in &self.plugins {
            if let Some(sha) = &p.sha256
                && (sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()))
            {
                push(&self.file, format!("plugins.{name}.sha256"), "must be 64 hex digits (sha256sum of the .wasm)".into());
            }
        }
    }

    /// A path from the config, resolved against the config file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) }
    }

    /// The external URL, or one derived from the listen address.
    pub fn external_url(&self, bound: SocketAddr) -> String {
        self.server.external_url.clone().unwrap_or_else(|| format!("http://{bound}"))
    }
}

/// A receiver's fallback, rate limit, retry and breaker settings, checked against its tenant's
/// receivers: the fallback exists and no chain of fallbacks comes back to where it started.
fn check_delivery_policy(r: &ReceiverConfig, all: &[ReceiverConfig]) -> Result<(), (String, String)> {
    if let Some(rate) = &r.rate_limit
        && (rate.messages == 0 || rate.burst == Some(0) || rate.per.is_zero())
    {
        return Err(("rate_limit".into(), "messages, burst and per must be greater than zero".into()));
    }
    if r.retry.max_attempts == 0 {
        return Err(("retry.max_attempts".into(), "must be at least 1 (1 means: never retry)".into()));
    }
    if r.retry.initial_backoff.is_zero() || r.retry.max_backoff < r.retry.initial_backoff {
        return Err(("retry".into(), "initial_backoff must be greater than zero and at most max_backoff".into()));
    }
    if r.breaker.failure_threshold == 0 || r.breaker.open_for.is_zero() {
        return Err(("breaker".into(), "failure_threshold and open_for must be greater than zero".into()));
    }
    let mut chain = vec![r.name.as_str()];
    let mut next = r.fallback.as_deref();
    while let Some(name) = next {
        let Some(fallback) = all.iter().find(|o| o.name == name) else {
            return Err(("fallback".into(), format!("no receiver is named `{name}` in this tenant")));
        };
        if chain.contains(&name) {
            chain.push(name);
            return Err((
                "fallback".into(),
                format!("the fallbacks form a loop: {}; end the chain at a receiver without one", chain.join(" -> ")),
            ));
        }
        chain.push(name);
        next = fallback.fallback.as_deref();
    }
    Ok(())
}

/// Parse TOML text into `T`; an error comes back as (`line N`, message), the message led by
/// the key at fault (`route.repeat_interval: invalid type: integer 4, expected a duration`).
fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, (String, String)> {
    let line_at = |at: usize| format!("line {}", text[..at.min(text.len())].matches('\n').count() + 1);
    let fail = toml_problem;
    let deserializer = toml::de::Deserializer::parse(text).map_err(|e| {
        let span = e.span();
        // A syntax error (a duplicate key, say): name the key its span points at.
        let key = span.clone().and_then(|s| text.get(s)).map(str::trim).filter(|k| !k.is_empty() && !k.contains('\n'));
        fail(span.map_or("-".to_string(), |s| line_at(s.start)), key.map(str::to_string), e.message())
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let key = (path != "." && !path.is_empty()).then_some(path);
        fail(inner.span().map_or("-".to_string(), |s| line_at(s.start)), key, inner.message())
    })
}

/// The most keys [`parse_toml_all`] leaves out of one file before it gives up.
const MAX_KEYS_LEFT_OUT: usize = 64;

/// Parse TOML text into `T` and report every problem, not the first: a key the schema refuses
/// (unknown, of the wrong type, an invalid value) is reported and left out, and the rest is
/// parsed again, until it parses or a problem cannot be left out (a required key missing, an
/// item of a list: leaving it out would renumber the rest). `None` when it never parsed.
/// Problems are (location, message) as [`parse_toml`] gives them.
fn parse_toml_all<T: serde::de::DeserializeOwned>(text: &str) -> (Option<T>, Vec<(String, String)>) {
    let first = match parse_toml::<T>(text) {
        Ok(value) => return (Some(value), Vec::new()),
        Err(first) => first,
    };
    // A syntax error leaves nothing to go on with.
    let Ok(mut table) = text.parse::<toml::Table>() else { return (None, vec![first]) };
    let mut problems = Vec::new();
    while problems.len() < MAX_KEYS_LEFT_OUT {
        let error = match serde_path_to_error::deserialize::<_, T>(toml::Value::Table(table.clone())) {
            // Parsed from the table although the text did not: nothing to say but the first problem.
            Ok(_) if problems.is_empty() => return (None, vec![first]),
            Ok(value) => return (Some(value), problems),
            Err(error) => error,
        };
        let path = error.path().to_string();
        let message = error.into_inner().message().trim_end().to_string();
        // `unknown field `x`` is reported at the table that holds it.
        let unknown = message.strip_prefix("unknown field `").and_then(|rest| rest.split('`').next()).map(str::to_string);
        let target = match (&unknown, path.as_str()) {
            (Some(field), "." | "") => field.clone(),
            (Some(field), parent) if !parent.ends_with(&format!(".{field}")) && parent != field => format!("{parent}.{field}"),
            (_, path) => path.to_string(),
        };
        let location = line_of_key(text, &target).map_or_else(|| target.clone(), |line| format!("line {line}"));
        let key = (path != "." && !path.is_empty()).then_some(path);
        problems.push(toml_problem(location, key, &message));
        if target.ends_with(']') || !remove_key(&mut table, &target) {
            return (None, problems);
        }
    }
    (None, problems)
}

/// Take `path` (`route.group_wait`, `receivers[0].config`) out of `table`; false when it names
/// nothing there.
fn remove_key(table: &mut toml::Table, path: &str) -> bool {
    let (parent, last) = path.rsplit_once('.').unwrap_or(("", path));
    let mut at = table;
    for segment in parent.split('.').filter(|s| !s.is_empty()) {
        let (name, indexes) = segment.split_at(segment.find('[').unwrap_or(segment.len()));
        let mut value = match at.get_mut(name) {
            Some(value) => value,
            None => return false,
        };
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            value = match (index.parse::<usize>(), value) {
                (Ok(i), toml::Value::Array(items)) if i < items.len() => &mut items[i],
                _ => return false,
            };
        }
        at = match value {
            toml::Value::Table(t) => t,
            _ => return false,
        };
    }
    at.remove(last).is_some()
}

/// A TOML problem as (location, message): the key it is about, what is wrong, how to write it.
fn toml_problem(location: String, key: Option<String>, message: &str) -> (String, String) {
    let mut message = message.trim_end().to_string();
    if message.contains("expected a duration") || (message.starts_with("invalid value") && key.as_deref().is_some_and(is_duration_key)) {
        message.push_str(r#"; write a duration like "30s", "5m" or "4h""#);
    }
    let key = key.map(|k| format!("{k}: ")).unwrap_or_default();
    (location, format!("{key}{message} (fix the TOML; see examples/belfry.toml)"))
}

/// Whether the last part of `key` names a duration setting.
fn is_duration_key(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    last.ends_with("_wait") || last.ends_with("_interval") || last.ends_with("_timeout") || last.ends_with("_ttl") || last == "for"
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [plugins.webhook]
        path = "webhook.wasm"

        [[receivers]]
        name = "ops"
        plugin = "webhook"
        config = { url = "http://127.0.0.1:1/" }

        [route]
        receiver = "ops"
    "#;

    #[test]
    fn a_toml_error_names_the_key_at_fault_and_its_line() {
        let cases = [
            ("repeat_interval = 4", "line 12", "route.repeat_interval: invalid type: integer `4`, expected a duration"),
            ("group_wait = \"1 fortnight\"", "line 12", "route.group_wait: "),
            ("receiver = \"again\"", "line 12", "receiver"),
        ];
        for (extra, line, needle) in cases {
            let text = format!("{MINIMAL}        {extra}\n");
            let (location, message) = Config::parse(&text).map(|_| ()).unwrap_err();
            assert_eq!(location, line, "{extra}: {message}");
            assert!(message.contains(needle), "{extra}: {message}");
        }
        let (_, message) = Config::parse(&format!("{MINIMAL}        group_wait = \"1 fortnight\"\n")).map(|_| ()).unwrap_err();
        assert!(message.contains(r#"like "30s""#), "{message}");
        let (_, message) = Config::parse(&format!("{MINIMAL}        receiver = \"again\"\n")).map(|_| ()).unwrap_err();
        assert!(message.contains("duplicate key"), "{message}");
    }

    fn load(text: &str) -> Result<Config, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("belfry.toml");
        std::fs::write(&file, text).unwrap();
        Config::load(&file)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(c.server.listen, default_listen());
        assert_eq!(c.runtime.isolation, Isolation::PerReceiver);
        assert_eq!(c.runtime.limits, Limits::default());
        assert!(c.resolve(Path::new("webhook.wasm")).ends_with("webhook.wasm"));
    }

    #[test]
    fn the_profiler_is_off_unless_asked_for_and_a_bad_one_is_named() {
        assert_eq!(load(MINIMAL).unwrap().runtime.profiler, Profiler::None);
        let with = |value: &str| MINIMAL.replace("[route]", &format!("[runtime]\nprofiler = \"{value}\"\n\n[route]"));
        assert_eq!(load(&with("perfmap")).unwrap().runtime.profiler, Profiler::Perfmap);
        let err = load(&with("vtune")).unwrap_err().to_string();
        assert!(err.contains("belfry.toml:11") && err.contains("unknown variant `vtune`") && err.contains("perfmap"), "{err}");
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = load(&MINIMAL.replace("[route]", "[route]\nrecevier = \"x\"")).unwrap_err().to_string();
        assert!(err.contains("belfry.toml:11: route.recevier: unknown field"), "{err}"); // the line and the bad key
        assert!(err.contains("recevier"), "{err}");
    }

    #[test]
    fn unknown_plugin_and_missing_receiver_are_both_reported() {
        let text = MINIMAL.replace("plugin = \"webhook\"", "plugin = \"slak\"").replace("receiver = \"ops\"", "receiver = \"nobody\"");
        let err = load(&text).unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["receivers[0].plugin", "route.receiver"]);
        assert!(err.0[0].message.contains("[plugins.slak]"));
    }

    #[test]
    fn bad_allowed_host_is_rejected() {
        let text = MINIMAL.replace("plugin = \"webhook\"", "plugin = \"webhook\"\nallowed_hosts = [\"http://x/\"]");
        let err = load(&text).unwrap_err();
        assert_eq!(err.0[0].key, "receivers[0].allowed_hosts[0]");
    }

    #[test]
    fn fallback_must_exist_and_not_loop() {
        let two = |a: &str, b: &str| {
            format!(
                "[plugins.webhook]\npath = \"w.wasm\"\n[[receivers]]\nname = \"a\"\nplugin = \"webhook\"\n{a}\n\
                 [[receivers]]\nname = \"b\"\nplugin = \"webhook\"\n{b}\n[route]\nreceiver = \"a\"\n"
            )
        };
        assert!(load(&two("fallback = \"b\"", "")).is_ok());
        let err = load(&two("fallback = \"c\"", "")).unwrap_err();
        assert_eq!(err.0[0].key, "receivers[0].fallback");
        assert!(err.0[0].message.contains("`c`"), "{err}");
        let err = load(&two("fallback = \"b\"", "fallback = \"a\"")).unwrap_err();
        assert!(err.0[0].message.contains("a -> b -> a"), "{err}");
        let err = load(&two("retry = { max_attempts = 0 }", "")).unwrap_err();
        assert_eq!(err.0[0].key, "receivers[0].retry.max_attempts");
        let err = load(&two("rate_limit = { messages = 0 }", "")).unwrap_err();
        assert_eq!(err.0[0].key, "receivers[0].rate_limit");
    }

    #[test]
    fn keys_are_located_on_their_lines() {
        let text = "[server]\nlisten = \"x\"\n\n[[receivers]]\nname = \"a\"\n\n[[receivers]]\nname = \"b\"\nconfig = { url = \"u\" }\n";
        assert_eq!(line_of_key(text, "server.listen"), Some(2));
        assert_eq!(line_of_key(text, "receivers[1].config.url"), Some(9));
        assert_eq!(line_of_key(text, "receivers[1].name"), Some(8));
        assert_eq!(line_of_key(text, "receivers[1].nothing"), Some(7), "the deepest part that exists");
        assert_eq!(line_of_key(text, "route.receiver"), None);
        let err = load(&MINIMAL.replace("receiver = \"ops\"", "receiver = \"nobody\"")).unwrap_err().to_string();
        assert!(err.contains("belfry.toml:11: route.receiver: no receiver is named `nobody`"), "{err}");
    }

    #[test]
    fn missing_file_says_so() {
        let err = Config::load(Path::new("/nonexistent/belfry.toml")).unwrap_err().to_string();
        assert!(err.contains("cannot read the config file"), "{err}");
    }
}
