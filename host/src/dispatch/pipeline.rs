//! The delivery pipeline, composed in one place: outbox → render → breaker → rate limit → plugin → retry with backoff → failover → audit.
//!
//! A notification decided by a group flush is submitted here as a [`Job`] with its
//! notification-log entry. [`Pipeline::run`] takes it through its receiver and, when that
//! receiver's breaker is open or its retries are exhausted, through the receiver's fallback
//! chain; every attempt and outcome is audited. A job is written to the outbox (with its log
//! entry) as soon as it has to wait for a rate limit or a breaker or an attempt fails, and
//! leaves it when done. One delivered at its first attempt writes only its log entry: until
//! then a crash leaves its group's alerts stored and the log as it was, so the restart decides
//! the notification again. Either way a crash means a redelivery (at least once), never a loss.
//! The group key travels with every attempt as a stable dedup key.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

use super::breaker::{Admission, Breaker, Verdict};
use super::ratelimit::RateLimit;
use super::retry::Backoff;
use crate::audit::AuditLog;
use crate::metrics::{Metrics, receiver_labels, with};
use crate::plugin::{DeliveryFailure, DeliveryReport, FailureKind, Notification, Receiver};
use crate::store::{Op, Store, Table};

/// A notification waiting in the outbox for its channel to accept it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The receiver it was decided for (failover may take it elsewhere).
    pub receiver: String,
    /// What is sent.
    pub notification: Notification,
    /// When the group flush decided it.
    pub decided_at: DateTime<Utc>,
}

/// A receiver with what it takes to deliver to it reliably.
pub struct Channel {
    /// The receiver bound to its plugin.
    pub receiver: Arc<Receiver>,
    /// Where notifications go when this receiver cannot take them.
    pub fallback: Option<String>,
    /// How failed attempts are retried.
    pub backoff: Backoff,
    /// Rate limit and breaker; shared with the next configuration while its settings stay.
    pub gate: Arc<Gate>,
    /// Its metric series.
    pub meters: crate::metrics::Meters,
}

/// The per-receiver state that outlives a reload.
pub struct Gate {
    /// The token bucket, if the receiver has a rate limit.
    pub rate: Option<RateLimit>,
    /// The circuit breaker.
    pub breaker: Breaker,
    /// The last outcomes, for the health API.
    pub health: std::sync::Mutex<Health>,
}

impl Gate {
    /// A fresh gate: no rate limit unless given, a closed breaker, no history.
    pub fn new(rate: Option<RateLimit>, breaker: Breaker) -> Gate {
        Gate { rate, breaker, health: std::sync::Mutex::new(Health::default()) }
    }

    fn note<T>(&self, outcome: &Result<T, DeliveryFailure>) {
        let mut health = self.health.lock().expect("health lock");
        let now = Utc::now();
        match outcome {
            Ok(_) => health.last_success = Some(now),
            Err(f) => {
                health.last_failure = Some(now);
                health.last_error = Some((f.kind.as_str(), f.blame.as_str()));
            }
        }
    }
}

/// What a receiver's recent deliveries say about it.
#[derive(Clone, Debug, Default)]
pub struct Health {
    /// When an attempt last succeeded.
    pub last_success: Option<DateTime<Utc>>,
    /// When an attempt last failed.
    pub last_failure: Option<DateTime<Utc>>,
    /// The last failure's kind and who was to blame (`retryable`, `remote`...).
    pub last_error: Option<(&'static str, &'static str)>,
}

/// A tenant's channels by receiver name.
pub type Channels = HashMap<String, Channel>;

/// What to do when every receiver of a notification's chain refused it for good: the
/// notifier that decided it puts its group back in line (`Redecide` in dispatch/mod.rs).
pub trait Refusals: Send + Sync {
    /// The notification of group `key` decided at `decided_at` was refused for good.
    fn refused(&self, key: &str, decided_at: DateTime<Utc>);
}

/// One notification to take through the pipeline.
pub struct Job {
    /// The tenant.
    pub tenant: String,
    /// Its outbox id.
    pub id: String,
    /// The notification and its receiver.
    pub entry: OutboxEntry,
    /// The tenant's channels when the job was decided (failover looks its fallbacks up here).
    pub channels: Arc<Channels>,
    /// The tenant's templates, for the render stage.
    pub templates: Arc<crate::template::Templates>,
    /// For a group's notification: puts the group back in line when every receiver refuses it.
    pub redecide: Option<Arc<dyn Refusals>>,
    /// Where the decision stands in the store.
    pub decision: Decision,
}

impl Job {
    /// The deferred log entry, if the decision is not written yet; the decision is `next` after.
    fn take_deferred(&mut self, next: Decision) -> Option<Op> {
        match std::mem::replace(&mut self.decision, next) {
            Decision::Deferred(log) => Some(log),
            settled => {
                self.decision = settled;
                None
            }
        }
    }
}

/// Where a job's decision stands in the store.
#[derive(Debug)]
pub enum Decision {
    /// In the outbox: removed when the job is done.
    InOutbox,
    /// Not written yet; this is its notification-log entry. A crash now leaves the group's
    /// alerts stored and its log as it was, so the restart decides the notification again.
    Deferred(Op),
    /// Delivered at its first attempt, its log entry written: nothing to remove.
    Logged,
}

/// Why a receiver did not take a notification.
#[derive(Debug)]
enum Refusal {
    /// The breaker is open (and stayed open for every try).
    BreakerOpen,
    /// The last attempt's failure, after retries when it was retryable.
    Failed(DeliveryFailure),
}

impl Refusal {
    fn reason(&self) -> &'static str {
        match self {
            Refusal::BreakerOpen => "breaker_open",
            Refusal::Failed(f) if f.is_retryable() => "retries_exhausted",
            Refusal::Failed(_) => "failed",
        }
    }
}

/// Takes jobs and runs them on at most `max_in_flight` tasks, the runners: at most
/// `max_pending` jobs in the pipeline (the flusher waits for room), the rest of them queued as
/// data. A job that has to wait (rate limit, breaker, a retry's backoff) or fails over leaves
/// the runners and goes on on a task of its own, so what waits never holds back the queue.
/// Under a burst the flusher decides more only once the queue is short again ([`Dispatcher::room`]).
///
/// Runners, not a task per job: a job's task is ~3.5 KB, and 20,000 of them at once (the 20K
/// burst) were allocated, copied and faulted in; queuing jobs as data took 10 % off the daemon's
/// CPU there (6 % in the profile-guided build; docs/BENCHMARKS.md).
#[derive(Clone)]
pub struct Dispatcher {
    pending: Arc<Semaphore>,
    pipeline: Arc<Pipeline>,
}

/// What every job shares.
pub struct Pipeline {
    in_flight: Semaphore,
    audit: Arc<AuditLog>,
    metrics: Arc<Metrics>,
    /// Jobs' store writes (log entries, outbox entries and their removal), written in batches.
    writes: mpsc::UnboundedSender<Op>,
    /// Jobs waiting for a runner, and how many runners there are.
    queue: std::sync::Mutex<Queue>,
    /// Told when the queue shrinks to [`Pipeline::low_water`] jobs.
    drained: tokio::sync::Notify,
    /// How few queued jobs [`Dispatcher::room`] waits for.
    low_water: usize,
}

/// Jobs waiting for a runner, first come first served.
struct Queue {
    waiting: VecDeque<(Job, OwnedSemaphorePermit)>,
    runners: usize,
    max_runners: usize,
}

/// A runner's place among the runners, held while its job runs. Given up when the job leaves
/// the runners; handed on should the task end holding it (a panic), so the queue never stalls.
struct RunnerSlot {
    pipeline: Arc<Pipeline>,
    held: bool,
}

impl RunnerSlot {
    /// Leave the runners: a new runner takes the next queued job in this one's place (or there
    /// is one runner less).
    fn leave(&mut self) {
        if std::mem::take(&mut self.held)
            && let Some((job, permit)) = self.pipeline.next_queued()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            // Without a runtime (only when it is being torn down) the job is dropped: its
            // group decides it again after the restart, or it is in the outbox.
            runtime.spawn(self.pipeline.clone().runner(job, permit));
        }
    }
}

impl Drop for RunnerSlot {
    fn drop(&mut self) {
        self.leave();
    }
}

/// The fewest queued jobs [`Dispatcher::room`] waits for, whatever `max_in_flight` is.
const MIN_LOW_WATER: usize = 8;

/// Most writes in one store batch.
const MAX_WRITES_PER_BATCH: usize = 1024;

/// How long the writes of finished jobs gather before they go to the store as one batch.
const GATHER_WRITES: std::time::Duration = std::time::Duration::from_millis(2);

/// Writes what jobs hand over, in order: what arrives within [`GATHER_WRITES`] of the first goes
/// in one batch. Not awaited: should a write be lost in a crash, the notification is decided or
/// delivered again (at least once).
async fn write_behind(store: Arc<dyn Store>, mut writes: mpsc::UnboundedReceiver<Op>) {
    let mut ops = Vec::new();
    while writes.recv_many(&mut ops, MAX_WRITES_PER_BATCH).await > 0 {
        // Under load a batch (and a wake-up of the store's writer) per finished job cost 4 % of
        // the daemon's CPU in the 20K burst.
        if ops.len() < MAX_WRITES_PER_BATCH {
            tokio::time::sleep(GATHER_WRITES).await;
            while ops.len() < MAX_WRITES_PER_BATCH
                && let Ok(op) = writes.try_recv()
            {
                ops.push(op);
            }
        }
        store.submit_background(std::mem::take(&mut ops));
    }
}

impl Dispatcher {
    /// Start a dispatcher writing outbox removals to `store` and outcomes to `audit`.
    pub fn start(
        max_pending: usize,
        max_in_flight: usize,
        store: Arc<dyn Store>,
        audit: Arc<AuditLog>,
        metrics: Arc<Metrics>,
    ) -> Dispatcher {
        let (writes, queued) = mpsc::unbounded_channel();
        tokio::spawn(write_behind(store, queued));
        let max_in_flight = max_in_flight.max(1);
        let queue = Queue { waiting: VecDeque::new(), runners: 0, max_runners: max_in_flight };
        Dispatcher {
            pending: Arc::new(Semaphore::new(max_pending.max(1))),
            pipeline: Arc::new(Pipeline {
                in_flight: Semaphore::new(max_in_flight),
                audit,
                metrics,
                writes,
                queue: std::sync::Mutex::new(queue),
                drained: tokio::sync::Notify::new(),
                low_water: max_in_flight.max(MIN_LOW_WATER),
            }),
        }
    }

    /// Start a job, waiting while `max_pending` are already under way: on a new runner if
    /// there is room for one, else queued for the next free runner.
    pub async fn submit(&self, job: Job) {
        let permit = self.pending.clone().acquire_owned().await.expect("the semaphore is never closed");
        {
            let mut queue = self.pipeline.queue();
            if queue.runners == queue.max_runners {
                queue.waiting.push_back((job, permit));
                return;
            }
            queue.runners += 1;
        }
        // No tracing span per job: building one cost ~4 % of the daemon's CPU in the 20K burst
        // (docs/BENCHMARKS.md). The job's log lines carry its tenant and `notification` id (the
        // correlation id of its audit records) themselves; the plugin's carry tenant, receiver
        // and plugin.
        tokio::spawn(self.pipeline.clone().runner(job, permit));
    }

    /// How many due groups of a tenant the flusher decides in one pass: twice what the
    /// runners take at once.
    pub fn flush_batch(&self) -> usize {
        2 * self.pipeline.low_water
    }

    /// Wait until no more jobs are queued for a runner than the runners take at once.
    ///
    /// The flusher waits here while groups are still due, so a burst is decided about as fast
    /// as it is delivered rather than all at once: its notifications do not pile up as queued
    /// jobs (20,000 of them at ~3 KB each in the 20K burst), and another tenant's groups are
    /// decided, and queued, between the burst's batches rather than behind all of it.
    pub async fn room(&self) {
        loop {
            let drained = self.pipeline.drained.notified();
            if self.pipeline.queue().waiting.len() <= self.pipeline.low_water {
                return;
            }
            drained.await;
        }
    }
}

impl Pipeline {
    /// The queue, even after a panic elsewhere held its lock: a deque and a count stay
    /// consistent, and a runner's slot is handed on from a `Drop` that must not panic again.
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A runner: the job, then queued ones until none is left or one leaves the runners.
    async fn runner(self: Arc<Self>, mut job: Job, mut permit: OwnedSemaphorePermit) {
        let mut slot = RunnerSlot { pipeline: self.clone(), held: true };
        loop {
            self.run(job, &mut slot).await;
            drop(permit);
            if !slot.held {
                return;
            }
            match self.next_queued() {
                Some((next, next_permit)) => (job, permit) = (next, next_permit),
                None => {
                    slot.held = false;
                    return;
                }
            }
        }
    }

    /// The next queued job for a runner that is done with its own; none retires the runner.
    fn next_queued(&self) -> Option<(Job, OwnedSemaphorePermit)> {
        let mut queue = self.queue();
        let next = queue.waiting.pop_front();
        match next {
            None => queue.runners -= 1,
            // Stored if nobody waits yet: `room` then finds it on its next wait and looks again.
            Some(_) if queue.waiting.len() == self.low_water => self.drained.notify_one(),
            Some(_) => {}
        }
        next
    }

    /// The whole pipeline for one job: its receiver, then its fallbacks, then out of the outbox.
    async fn run(&self, mut job: Job, slot: &mut RunnerSlot) {
        self.render(&mut job);
        let channels = job.channels.clone();
        let mut target = job.entry.receiver.clone();
        let mut tried: Vec<String> = Vec::new();
        loop {
            let Some(channel) = channels.get(&target) else {
                self.audit(&job, &target, "notify.dropped", json!({"reason": "unknown_receiver"}));
                tracing::error!(tenant = %job.tenant, notification = %job.id, receiver = %target, "no such receiver any more; the notification is dropped");
                break;
            };
            tried.push(target.clone());
            let outcome = self.deliver(&mut job, &target, channel, slot).await;
            channel.meters.notifications.inc();
            let labels = || receiver_labels(&job.tenant, &target, channel.receiver.plugin_name());
            if let Err(refusal) = &outcome {
                self.metrics.notifications_failed.get_or_create(&with(labels(), "reason", refusal.reason())).inc();
            }
            match outcome {
                Ok(_) => break,
                Err(refusal) => match &channel.fallback {
                    Some(next) if !tried.contains(next) => {
                        tracing::warn!(tenant = %job.tenant, notification = %job.id, from = %target, to = %next, reason = refusal.reason(), "failing over");
                        self.metrics.failovers.get_or_create(&with(labels(), "reason", refusal.reason())).inc();
                        self.audit(&job, &target, "notify.failover", json!({"to": next, "reason": refusal.reason()}));
                        target = next.clone();
                    }
                    _ => {
                        tracing::error!(
                            tenant = %job.tenant,
                            notification = %job.id,
                            group_key = %job.entry.notification.group_key,
                            receiver = %target,
                            reason = refusal.reason(),
                            "giving up on the notification"
                        );
                        self.audit(&job, &target, "notify.dropped", json!({"reason": refusal.reason()}));
                        // As Alertmanager: what was not delivered is not logged as notified, so
                        // the group's next flush (a group_interval on) tries again.
                        if let Some(redecide) = &job.redecide {
                            redecide.refused(&job.entry.notification.group_key, job.entry.decided_at);
                        }
                        break;
                    }
                },
            }
        }
        self.settle(&mut job);
        if let Decision::InOutbox = job.decision {
            let _ = self.writes.send(Op::delete(Table::Outbox, &job.tenant, job.id.as_bytes()));
        }
    }

    /// The job has to wait, or an attempt failed: into the outbox with its log entry, if not
    /// there yet, and off the runners.
    fn hold(&self, job: &mut Job, slot: &mut RunnerSlot) {
        slot.leave();
        if let Some(log) = job.take_deferred(Decision::InOutbox) {
            let _ = self.writes.send(Op::put(Table::Outbox, &job.tenant, job.id.as_bytes(), &job.entry));
            let _ = self.writes.send(log);
        }
    }

    /// The job is done without having been held: its log entry alone.
    fn settle(&self, job: &mut Job) {
        if let Some(log) = job.take_deferred(Decision::Logged) {
            let _ = self.writes.send(log);
        }
    }

    /// The render stage, on this job's own task (so the flusher that decides notifications
    /// never waits on templates): title and body from the receiver's templates; a template
    /// that fails falls back to the default and is reported (log line, metric).
    fn render(&self, job: &mut Job) {
        // Rendering costs CPU: skip it when no receiver of the failover chain shows text.
        let mut chain = Some(job.entry.receiver.as_str());
        let mut uses_text = false;
        let mut hops = 0;
        while let Some(name) = chain
            && hops <= job.channels.len()
        {
            let Some(channel) = job.channels.get(name) else { break };
            uses_text |= channel.receiver.uses_text();
            chain = channel.fallback.as_deref();
            hops += 1;
        }
        if !uses_text {
            return;
        }
        let n = &mut job.entry.notification;
        let rendered = job.templates.render(n, Utc::now());
        for failure in &rendered.failures {
            tracing::warn!(tenant = %job.tenant, receiver = %n.receiver, error = %failure, "template failed; the default template was used");
            let labels = with(crate::metrics::tenant_labels(&job.tenant), "receiver", &n.receiver);
            self.metrics.template_failures.get_or_create(&labels).inc();
        }
        n.title = Some(rendered.title);
        n.body = Some(rendered.body);
    }

    /// One receiver's stages: breaker → rate limit → plugin → verdict → retry or return.
    async fn deliver(&self, job: &mut Job, name: &str, channel: &Channel, slot: &mut RunnerSlot) -> Result<DeliveryReport, Refusal> {
        let gate = &channel.gate;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Admission::Refused { retry_at } = gate.breaker.admit(Instant::now()) {
                self.hold(job, slot);
                // With a fallback, fail over at once; without one, wait for the probe, within the retry budget.
                if channel.fallback.is_some() || !channel.backoff.may_retry(attempt) {
                    return Err(Refusal::BreakerOpen);
                }
                tokio::time::sleep_until(retry_at).await;
                continue;
            }
            if let Some(rate) = &gate.rate
                && rate.try_acquire().is_err()
            {
                self.hold(job, slot);
                rate.acquire().await;
            }
            let plugin = channel.receiver.plugin_name();
            let outcome = {
                let _slot = self.in_flight.acquire().await.expect("the semaphore is never closed");
                let started = Instant::now();
                let (outcome, usage) = channel.receiver.deliver_measured(&job.entry.notification).await;
                let meters = &channel.meters;
                meters.latency.observe(started.elapsed().as_secs_f64());
                meters.plugin_cpu.inc_by(usage.guest_time.as_secs_f64());
                meters.plugin_memory.set(meters.plugin_memory.get().max(usage.memory_bytes as i64));
                if let Err(f) = &outcome
                    && f.blame == crate::plugin::Blame::Plugin
                {
                    let by_plugin = vec![("plugin", plugin.to_string()), ("kind", f.kind.as_str().to_string())];
                    self.metrics.plugin_traps.get_or_create(&by_plugin).inc();
                }
                outcome
            };
            channel.meters.requests.inc();
            if let Err(failure) = &outcome {
                let labels = with(receiver_labels(&job.tenant, name, plugin), "reason", failure.kind.as_str());
                self.metrics.notification_requests_failed.get_or_create(&labels).inc();
            }
            gate.note(&outcome);
            if gate.breaker.record(Verdict::of(&outcome), Instant::now()) {
                tracing::warn!(tenant = %job.tenant, receiver = %name, "circuit breaker opened");
            }
            let failure = match outcome {
                Ok(report) => {
                    self.settle(job);
                    self.audit_attempt(job, name, channel, attempt, &Ok(&report), None);
                    return Ok(report);
                }
                Err(failure) => failure,
            };
            self.hold(job, slot);
            if !failure.is_retryable() || !channel.backoff.may_retry(attempt) {
                self.audit_attempt(job, name, channel, attempt, &Err(&failure), None);
                return Err(Refusal::Failed(failure));
            }
            let retry_after = match failure.kind {
                FailureKind::Retryable { retry_after } => retry_after,
                _ => None,
            };
            let wait = channel.backoff.delay(attempt, retry_after, rand::random::<f64>());
            self.audit_attempt(job, name, channel, attempt, &Err(&failure), Some(wait));
            tokio::time::sleep(wait).await;
        }
    }

    /// Audit and log one attempt; `retry_in` is set when another follows.
    fn audit_attempt(
        &self,
        job: &Job,
        name: &str,
        channel: &Channel,
        attempt: u32,
        outcome: &Result<&DeliveryReport, &DeliveryFailure>,
        retry_in: Option<std::time::Duration>,
    ) {
        let alerts = job.entry.notification.alerts.len();
        let plugin = channel.receiver.plugin_name();
        match outcome {
            Ok(report) => {
                tracing::debug!(
                    tenant = %job.tenant, notification = %job.id, receiver = %name, plugin = %plugin, alerts, attempt,
                    remote_id = report.remote_id.as_deref().unwrap_or(""), status = report.status, "delivered"
                );
                let fields = Delivered { plugin, attempt, response_status: report.status, remote_id: report.remote_id.as_deref() };
                self.audit(job, name, "notify.delivered", fields);
            }
            Err(failure) => {
                let retry_in_ms = retry_in.map(|d| d.as_millis() as u64);
                tracing::warn!(
                    tenant = %job.tenant,
                    notification = %job.id,
                    group_key = %job.entry.notification.group_key,
                    receiver = %name, plugin = %plugin, alerts, attempt,
                    blame = failure.blame.as_str(),
                    kind = failure.kind.as_str(),
                    retry_in_ms,
                    error = %failure.message,
                    "delivery failed"
                );
                self.audit(
                    job,
                    name,
                    "notify.failed",
                    json!({
                        "plugin": plugin,
                        "attempt": attempt,
                        "blame": failure.blame.as_str(),
                        "kind": failure.kind.as_str(),
                        "error": failure.message,
                        "retry_in_ms": retry_in_ms,
                    }),
                );
            }
        }
    }

    /// One audit record of `job`: the action's `fields`, then what every record of a job says.
    fn audit(&self, job: &Job, receiver: &str, action: &str, fields: impl Serialize) {
        let n = &job.entry.notification;
        let record = JobRecord {
            fields,
            receiver,
            group_key: &n.group_key,
            notification: &job.id,
            alerts: n.alerts.len(),
            status: if n.status == crate::plugin::AlertStatus::Firing { "firing" } else { "resolved" },
        };
        self.audit.record(&job.tenant, action, "belfry", &record);
    }
}

/// An audit record of a job: the action's own fields, then the job's.
#[derive(Serialize)]
struct JobRecord<'a, F> {
    #[serde(flatten)]
    fields: F,
    receiver: &'a str,
    group_key: &'a str,
    /// The outbox id: the correlation id of the job's records and log lines.
    notification: &'a str,
    alerts: usize,
    status: &'static str,
}

/// The fields of `notify.delivered`, one per notification: a struct, not a JSON map, to keep it cheap.
#[derive(Serialize)]
struct Delivered<'a> {
    plugin: &'a str,
    attempt: u32,
    response_status: Option<u16>,
    remote_id: Option<&'a str>,
}
