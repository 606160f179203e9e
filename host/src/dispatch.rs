//! Turns routed alerts into notifications and runs their deliveries, bounded in queue length and concurrency.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;

use std::collections::HashMap;

use crate::alert::{self, Alert, Fingerprint, Status};
use crate::plugin::{self, AlertStatus, DeliveryFailure, DeliveryReport, Notification, Receiver};
use crate::route::Router;
use crate::silence::Silences;
use crate::state::AlertState;
use crate::store::Store;

/// One notification on its way to one receiver.
pub struct Delivery {
    /// Where it goes.
    pub receiver: Arc<Receiver>,
    /// What is sent.
    pub notification: Notification,
}

/// Reports every finished delivery (the daemon logs them; tests and benchmarks count them).
pub type OnOutcome = Arc<dyn Fn(&Delivery, &Result<DeliveryReport, DeliveryFailure>) + Send + Sync>;

/// Accepts deliveries and runs them on background tasks.
#[derive(Clone)]
pub struct Dispatcher {
    queue: mpsc::Sender<Delivery>,
}

/// The queue is full: the caller should shed load (HTTP 503 with Retry-After).
#[derive(Debug)]
pub struct QueueFull;

impl Dispatcher {
    /// Start the dispatcher: at most `queue_capacity` waiting, `max_in_flight` running.
    pub fn start(queue_capacity: usize, max_in_flight: usize, on_outcome: OnOutcome) -> Dispatcher {
        let (queue, mut rx) = mpsc::channel::<Delivery>(queue_capacity.max(1));
        let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
        tokio::spawn(async move {
            while let Some(delivery) = rx.recv().await {
                let permit = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
                let on_outcome = on_outcome.clone();
                let span = tracing::info_span!(
                    "delivery",
                    tenant = %delivery.notification.tenant,
                    receiver = %delivery.notification.receiver,
                    plugin = %delivery.receiver.plugin_name(),
                    group_key = %delivery.notification.group_key,
                );
                tokio::spawn(
                    async move {
                        let outcome = delivery.receiver.deliver(&delivery.notification).await;
                        on_outcome(&delivery, &outcome);
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
        });
        Dispatcher { queue }
    }

    /// Queue every delivery, or none of them when the queue lacks room for all.
    pub fn submit_all(&self, deliveries: Vec<Delivery>) -> Result<(), QueueFull> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let permits = self.queue.try_reserve_many(deliveries.len()).map_err(|_| QueueFull)?;
        for (permit, delivery) in permits.zip(deliveries) {
            permit.send(delivery);
        }
        Ok(())
    }
}

/// Turns one tenant's alert changes that nobody was told about yet into deliveries.
pub struct Notifier {
    /// The tenant.
    pub tenant: String,
    /// Its routing.
    pub router: Router,
    /// Its receivers by name.
    pub receivers: HashMap<String, Arc<Receiver>>,
    /// Where deliveries go.
    pub dispatcher: Dispatcher,
    /// Sent to plugins for links back.
    pub external_url: String,
    /// Its alerts.
    pub state: Arc<AlertState>,
    /// Its silences: a silenced alert's changes wait until the silence ends.
    pub silences: Arc<Silences>,
    /// Where the `notified` marks are persisted.
    pub store: Arc<dyn Store>,
    /// The tenant's limits.
    pub limits: crate::config::TenantLimits,
    /// The tenant's ingest rate (alerts per second, with a burst).
    pub ingest_rate: governor::DefaultDirectRateLimiter,
}

impl Notifier {
    /// Dispatch every unnotified change (all alerts, or those in `only`). When the queue is
    /// full nothing is dispatched and the changes stay unnotified for the next sweep.
    pub fn notify_changes(&self, only: Option<&[Fingerprint]>, now: DateTime<Utc>) -> Result<usize, QueueFull> {
        let muted = |labels: &alert::LabelSet| !self.silences.silencing(labels, now).is_empty();
        let taken = self.state.take_unnotified(only, now, &muted);
        if taken.is_empty() {
            return Ok(0);
        }
        let mut deliveries = Vec::with_capacity(taken.len());
        for t in &taken {
            let alert = t.record.to_alert();
            for name in self.router.route(&alert).receivers {
                match self.receivers.get(&name) {
                    Some(receiver) => deliveries.push(Delivery {
                        receiver: receiver.clone(),
                        notification: single_alert_notification(&self.tenant, &name, &alert, &self.external_url, now),
                    }),
                    None => tracing::error!(tenant = %self.tenant, receiver = %name, "route names a receiver that does not exist"),
                }
            }
        }
        match self.dispatcher.submit_all(deliveries) {
            Ok(()) => {
                // Not awaited: losing these marks in a crash only means notifying again (at least once).
                drop(self.store.submit(self.state.persist_ops(&taken)));
                Ok(taken.len())
            }
            Err(full) => {
                self.state.unmark(&taken);
                Err(full)
            }
        }
    }
}

/// The daemon's outcome handler: one structured log line per delivery, with blame on failure.
pub fn log_outcome(delivery: &Delivery, outcome: &Result<DeliveryReport, DeliveryFailure>) {
    let alerts = delivery.notification.alerts.len();
    match outcome {
        Ok(report) => tracing::info!(alerts, remote_id = report.remote_id.as_deref().unwrap_or(""), status = report.status, "delivered"),
        Err(failure) => tracing::warn!(
            alerts,
            blame = failure.blame.as_str(),
            kind = failure.kind.as_str(),
            retryable = failure.is_retryable(),
            error = %failure.message,
            "delivery failed"
        ),
    }
}

/// The notification for one alert routed to `receiver`: a group of one, keyed on all its
/// labels (Alertmanager's `group_by: ['...']`), until grouping lands.
pub fn single_alert_notification(tenant: &str, receiver: &str, alert: &Alert, external_url: &str, now: DateTime<Utc>) -> Notification {
    let status = wit_status(alert.status_at(now));
    let pairs = |set: &alert::LabelSet| set.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>();
    let labels = pairs(&alert.labels);
    Notification {
        tenant: tenant.to_string(),
        receiver: receiver.to_string(),
        status,
        group_key: format!("{{}}:{}", alert::format_label_set(&alert.labels)),
        group_labels: labels.clone(),
        common_labels: labels.clone(),
        common_annotations: pairs(&alert.annotations),
        alerts: vec![plugin::Alert {
            fingerprint: alert.fingerprint().to_string(),
            status,
            labels,
            annotations: pairs(&alert.annotations),
            starts_at: alert::format_time(alert.starts_at),
            // Alertmanager sends a zero endsAt for alerts that are still firing.
            ends_at: match status {
                AlertStatus::Resolved => alert.ends_at.map(alert::format_time),
                AlertStatus::Firing => None,
            },
            generator_url: alert.generator_url.clone(),
        }],
        truncated_alerts: 0,
        title: None,
        body: None,
        external_url: external_url.to_string(),
        escalation_level: 0,
    }
}

fn wit_status(s: Status) -> AlertStatus {
    match s {
        Status::Firing => AlertStatus::Firing,
        Status::Resolved => AlertStatus::Resolved,
    }
}
