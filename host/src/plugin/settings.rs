//! The plugin runtime's sections of the configuration: `[runtime]` (isolation, allocator, cache, profiler), its `[runtime.limits]` and a receiver's `limits`, and `[plugins.<name>]`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

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

fn default_cache_dir() -> PathBuf {
    PathBuf::from(".belfry/cache")
}

fn default_max_in_flight() -> usize {
    256
}

fn default_max_per_receiver() -> usize {
    // Measured (docs/BENCHMARKS.md): 16 doubles the p99 of 64 at 10K alerts/s to one receiver.
    64
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

fn default_max_alerts() -> usize {
    1000
}

fn default_keep_idle_memory_mib() -> u64 {
    // Every bundled plugin delivers in 1-3 MiB; a 1,000-alert group in about 8.
    16
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
