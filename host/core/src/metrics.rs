//! Prometheus metrics, with Alertmanager's names where the meaning is the same (plus a `tenant` label), so its dashboards and alerts carry over.
//!
//! Counters and histograms are updated where things happen (ingest, the delivery pipeline,
//! reloads). Gauges of state (alerts, groups, silences, breakers, store size) are read from
//! the daemon when Prometheus scrapes, so they never drift.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A metric's labels: `(name, value)` pairs in a fixed order.
pub type Labels = Vec<(&'static str, String)>;

/// Seconds, from 5 ms to 20 s (Alertmanager uses 1, 5, 10, 15, 20 s; Belfry's deliveries
/// usually take milliseconds).
const LATENCY_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 20.0];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Seconds, from 0.5 ms to 10 s: a journal commit (an `fdatasync`) takes well under a
/// millisecond on a local SSD and tens of milliseconds on a busy network disk.
const COMMIT_BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Seconds, from 5 ms to 60 s: a checkpoint rewrites the table pages of up to tens of
/// thousands of records.
const CHECKPOINT_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0];

/// How long the store's writes take. The store observes them; [`Metrics`] exports them. A slow
/// disk shows here first: every accepted POST waits for its journal commit.
#[derive(Clone)]
pub struct StoreTimings {
    /// Journal commits, each ending with an `fdatasync`.
    pub commits: Histogram,
    /// Checkpoints, which fold the journal into the tables in the background.
    pub checkpoints: Histogram,
}

impl Default for StoreTimings {
    fn default() -> Self {
        StoreTimings { commits: Histogram::new(COMMIT_BUCKETS), checkpoints: Histogram::new(CHECKPOINT_BUCKETS) }
    }
}

/// Every metric Belfry exports.
pub struct Metrics {
    registry: Registry,
    /// Alerts received, by tenant and status (`firing`, `resolved`).
    pub alerts_received: Family<Labels, Counter>,
    /// Alerts refused as invalid, by tenant.
    pub alerts_invalid: Family<Labels, Counter>,
    /// Notifications a receiver accepted or finally refused, by tenant, receiver, integration.
    pub notifications: Family<Labels, Counter>,
    /// Notifications a receiver finally refused, by tenant, receiver, integration and reason.
    pub notifications_failed: Family<Labels, Counter>,
    /// Delivery attempts (retries included), by tenant, receiver, integration.
    pub notification_requests: Family<Labels, Counter>,
    /// Failed delivery attempts, by tenant, receiver, integration and reason (the failure kind).
    pub notification_requests_failed: Family<Labels, Counter>,
    /// How long a delivery attempt took, by integration.
    pub notification_latency: Family<Labels, Histogram, fn() -> Histogram>,
    /// Notifications moved to a fallback receiver, by tenant, receiver (the one failed over from) and reason.
    pub failovers: Family<Labels, Counter>,
    /// 1 if the tenant's last configuration or script reload succeeded, by tenant.
    pub reload_successful: Family<Labels, Gauge>,
    /// When the tenant's configuration last loaded successfully, by tenant.
    pub reload_success_time: Family<Labels, Gauge>,
    /// Alerts held, by tenant and state (`active`, `suppressed`, `resolved`).
    pub alerts: Family<Labels, Gauge>,
    /// Aggregation groups, by tenant.
    pub groups: Family<Labels, Gauge>,
    /// Silences, by tenant and state (`active`, `pending`, `expired`).
    pub silences: Family<Labels, Gauge>,
    /// Circuit breaker state per receiver: 0 closed, 1 open, 2 half-open.
    pub breaker_state: Family<Labels, Gauge>,
    /// Bytes of the store file.
    pub store_bytes: Gauge,
    /// The store's commit and checkpoint durations (hand them to the store when opening it).
    pub store_timings: StoreTimings,
    /// Templates that failed on a notification (the default was used), by tenant and receiver.
    pub template_failures: Family<Labels, Counter>,
    /// Seconds plugins spent computing (in the guest), by plugin.
    pub plugin_cpu: Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// The largest linear memory a plugin's instance has grown to, by plugin.
    pub plugin_memory: Family<Labels, Gauge>,
    /// Deliveries a plugin's misbehaviour stopped, by plugin and kind (`trap`, `cpu_deadline`,
    /// `memory_limit`, `timeout`).
    pub plugin_traps: Family<Labels, Counter>,
    /// Groups acknowledged, by tenant and way (`api`, `link`).
    pub acks: Family<Labels, Counter>,
    /// Escalation levels that notified, by tenant, policy and level.
    pub escalations: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric registered and at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            alerts_received: Family::default(),
            alerts_invalid: Family::default(),
            notifications: Family::default(),
            notifications_failed: Family::default(),
            notification_requests: Family::default(),
            notification_requests_failed: Family::default(),
            notification_latency: Family::new_with_constructor(latency_histogram),
            failovers: Family::default(),
            reload_successful: Family::default(),
            reload_success_time: Family::default(),
            alerts: Family::default(),
            groups: Family::default(),
            silences: Family::default(),
            breaker_state: Family::default(),
            store_bytes: Gauge::default(),
            store_timings: StoreTimings::default(),
            template_failures: Family::default(),
            plugin_cpu: Family::default(),
            plugin_memory: Family::default(),
            plugin_traps: Family::default(),
            acks: Family::default(),
            escalations: Family::default(),
        };
        // Counters get `_total` appended by the encoder.
        registry.register("alertmanager_alerts_received", "Alerts received, by tenant and status", m.alerts_received.clone());
        registry.register("alertmanager_alerts_invalid", "Alerts refused as invalid, by tenant", m.alerts_invalid.clone());
        registry.register("alertmanager_notifications", "Notifications sent or finally failed", m.notifications.clone());
        registry.register(
            "alertmanager_notifications_failed",
            "Notifications every retry failed for (before failover)",
            m.notifications_failed.clone(),
        );
        registry.register("alertmanager_notification_requests", "Delivery attempts, retries included", m.notification_requests.clone());
        registry.register(
            "alertmanager_notification_requests_failed",
            "Failed delivery attempts, by failure kind",
            m.notification_requests_failed.clone(),
        );
        registry.register("alertmanager_notification_latency_seconds", "Duration of delivery attempts", m.notification_latency.clone());
        registry.register("belfry_notification_failovers", "Notifications moved to a fallback receiver", m.failovers.clone());
        registry.register(
            "alertmanager_config_last_reload_successful",
            "Whether the tenant's last configuration or routing-script reload succeeded",
            m.reload_successful.clone(),
        );
        registry.register(
            "alertmanager_config_last_reload_success_timestamp_seconds",
            "Timestamp of the tenant's last successful reload",
            m.reload_success_time.clone(),
        );
        registry.register("alertmanager_alerts", "Alerts held, by state", m.alerts.clone());
        registry.register("alertmanager_dispatcher_aggregation_groups", "Aggregation groups", m.groups.clone());
        registry.register("alertmanager_silences", "Silences, by state", m.silences.clone());
        registry.register("belfry_receiver_breaker_state", "Circuit breaker: 0 closed, 1 open, 2 half-open", m.breaker_state.clone());
        registry.register("belfry_store_size_bytes", "Size of the store file", m.store_bytes.clone());
        registry.register(
            "belfry_store_commit_duration_seconds",
            "Journal commits (an fdatasync each); accepted POSTs wait for theirs",
            m.store_timings.commits.clone(),
        );
        registry.register(
            "belfry_store_checkpoint_duration_seconds",
            "Checkpoints folding the journal into the store's tables, in the background",
            m.store_timings.checkpoints.clone(),
        );
        registry.register("belfry_template_failures", "Templates that failed; the default was used", m.template_failures.clone());
        registry.register("belfry_plugin_cpu_seconds", "Time plugins spent computing, by plugin", m.plugin_cpu.clone());
        registry.register("belfry_plugin_memory_bytes", "Largest linear memory of a plugin's instance", m.plugin_memory.clone());
        registry.register("belfry_plugin_traps", "Deliveries stopped for a plugin's misbehaviour, by kind", m.plugin_traps.clone());
        registry.register("belfry_acknowledgements", "Groups acknowledged, by way (api, link)", m.acks.clone());
        registry.register("belfry_escalations", "Escalation levels that notified, by policy and level", m.escalations.clone());
        Metrics { registry, ..m }
    }

    /// Record a tenant's reload outcome at `now` (seconds since the epoch).
    pub fn reloaded(&self, tenant: &str, ok: bool, now: i64) {
        let labels = tenant_labels(tenant);
        self.reload_successful.get_or_create(&labels).set(i64::from(ok));
        if ok {
            self.reload_success_time.get_or_create(&labels).set(now);
        }
    }

    /// Forget a removed tenant's series.
    pub fn forget_tenant(&self, tenant: &str) {
        let labels = tenant_labels(tenant);
        self.reload_successful.remove(&labels);
        self.reload_success_time.remove(&labels);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// `{tenant="..."}`.
pub fn tenant_labels(tenant: &str) -> Labels {
    vec![("tenant", tenant.to_string())]
}

/// `{tenant, receiver, integration}`: the labels of a receiver's series.
pub fn receiver_labels(tenant: &str, receiver: &str, integration: &str) -> Labels {
    vec![("tenant", tenant.to_string()), ("receiver", receiver.to_string()), ("integration", integration.to_string())]
}

/// One channel's series, looked up once when the channel is bound: a delivery updates five of
/// them, and looking each up per delivery built and hashed their labels five times (within
/// noise in the 20K burst, but no work per delivery is the cheaper default).
#[derive(Clone)]
pub struct Meters {
    /// `notifications` of the channel's tenant, receiver and integration.
    pub notifications: Counter,
    /// `notification_requests` of the same.
    pub requests: Counter,
    /// `notification_latency` of its integration.
    pub latency: Histogram,
    /// `plugin_cpu` of its plugin.
    pub plugin_cpu: Counter<f64, std::sync::atomic::AtomicU64>,
    /// `plugin_memory` of its plugin.
    pub plugin_memory: Gauge,
}

impl Meters {
    /// The series of receiver `receiver` of `tenant`, delivering through `plugin`.
    pub fn new(metrics: &Metrics, tenant: &str, receiver: &str, plugin: &str) -> Meters {
        let labels = receiver_labels(tenant, receiver, plugin);
        let by_plugin = vec![("plugin", plugin.to_string())];
        Meters {
            notifications: metrics.notifications.get_or_create(&labels).clone(),
            requests: metrics.notification_requests.get_or_create(&labels).clone(),
            latency: metrics.notification_latency.get_or_create(&vec![("integration", plugin.to_string())]).clone(),
            plugin_cpu: metrics.plugin_cpu.get_or_create(&by_plugin).clone(),
            plugin_memory: metrics.plugin_memory.get_or_create(&by_plugin).clone(),
        }
    }
}

/// `labels` with one more `(name, value)` pair.
pub fn with(mut labels: Labels, name: &'static str, value: &str) -> Labels {
    labels.push((name, value.to_string()));
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_alertmanager_and_carry_the_tenant() {
        let m = Metrics::new();
        m.alerts_received.get_or_create(&with(tenant_labels("acme"), "status", "firing")).inc_by(3);
        m.reloaded("acme", false, 0);
        m.notification_latency.get_or_create(&vec![("integration", "webhook".to_string())]).observe(0.02);
        let text = m.encode();
        assert!(text.contains("alertmanager_alerts_received_total{tenant=\"acme\",status=\"firing\"} 3"), "{text}");
        assert!(text.contains("alertmanager_config_last_reload_successful{tenant=\"acme\"} 0"), "{text}");
        assert!(text.contains("alertmanager_notification_latency_seconds_bucket{le=\"0.025\",integration=\"webhook\"} 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn the_dashboard_only_queries_metrics_that_exist() {
        let m = Metrics::new();
        // A family shows in the text once it has a series: give each one.
        let l = tenant_labels("t");
        for counter in [&m.alerts_received, &m.alerts_invalid, &m.notifications, &m.notifications_failed, &m.failovers, &m.plugin_traps] {
            counter.get_or_create(&l).inc();
        }
        for counter in [&m.notification_requests, &m.notification_requests_failed] {
            counter.get_or_create(&l).inc();
        }
        for gauge in [&m.reload_successful, &m.reload_success_time, &m.alerts, &m.groups, &m.silences, &m.breaker_state, &m.plugin_memory] {
            gauge.get_or_create(&l).set(1);
        }
        m.notification_latency.get_or_create(&l).observe(0.1);
        m.plugin_cpu.get_or_create(&l).inc_by(0.1);
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/grafana-dashboard.json")).expect("the dashboard is JSON");
        let text = m.encode();
        let known: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
        let panels = dashboard["panels"].as_array().unwrap();
        assert!(panels.len() >= 10);
        for target in panels.iter().flat_map(|p| p["targets"].as_array().unwrap()) {
            let expr = target["expr"].as_str().unwrap();
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("alertmanager_") || w.starts_with("belfry_"))
                .collect();
            assert!(!names.is_empty(), "{expr}");
            for name in names {
                let family = ["_total", "_bucket"].iter().fold(name, |n, suffix| n.strip_suffix(suffix).unwrap_or(n));
                assert!(known.contains(&family), "the dashboard queries `{name}`, which Belfry does not export");
            }
        }
    }
}
