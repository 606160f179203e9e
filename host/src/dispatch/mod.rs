//! A tenant's notifications: ingested alerts into groups, due groups through mute and dedup into notifications, and those into the delivery pipeline.

mod breaker;
mod budget;
mod config_status;
mod pipeline;
mod ratelimit;
mod retry;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

pub use breaker::{Admission, Breaker, BreakerConfig, BreakerState, Verdict};
pub use budget::ScriptBudget;
pub use config_status::ConfigStatus;
pub use pipeline::{Channel, Channels, Decision, Dispatcher, Gate, Health, Job, OutboxEntry, Refusals};
pub use ratelimit::{RateLimit, RateLimitConfig, TokioClock};
pub use retry::{Backoff, RetryConfig};

use crate::ack::Ack;
use crate::alert::{self, Alert, Fingerprint, Status};
use crate::group::{Flush, FlushAlert, FlushOutcome, Groups};
use crate::inhibit::Inhibitor;
use crate::plugin::{self, AlertStatus, Notification};
use crate::route::{RouteOptions, Router};
use crate::silence::Silences;
use crate::state::{AlertRecord, AlertState, Touched};
use crate::store::{Op, Store, Table};
use crate::timeinterval::TimeInterval;

/// A tenant's router and groups, swapped together so an alert is routed by exactly one script.
pub struct Routing {
    /// The live routing script.
    pub router: Arc<Router>,
    /// The aggregation groups and the notification log.
    pub groups: Groups,
    /// Counts router swaps: a background re-route stops when a newer one starts.
    pub generation: u64,
}

impl Routing {
    /// Route an alert and put it into the groups of its routes.
    fn route_into_groups(&mut self, fp: Fingerprint, record: &AlertRecord, now: DateTime<Utc>) {
        let alert = record.to_alert();
        let decision = self.router.route(&alert, now);
        self.groups.insert(fp, &alert.labels, alert.starts_at, &decision.routes, now);
    }
}

/// One tenant's notification pipeline: ingested alerts into groups, due groups into
/// notifications, notifications to receivers.
///
/// The stages, in order (each one a function here or a module of its own):
/// route (route/) → group (group/) → mute: silences (silence.rs), inhibitions
/// (inhibit.rs), time intervals (timeinterval.rs) → dedup against the notification log
/// (group/) → outbox → rate limit, plugin, retry, breaker, failover, audit (pipeline.rs).
pub struct Notifier {
    /// The tenant.
    pub tenant: String,
    /// Router and groups; shared with the next configuration on reload.
    pub routing: Arc<Mutex<Routing>>,
    /// Its receivers by name, with their delivery policies.
    pub channels: Arc<Channels>,
    /// Receivers that want resolved notifications.
    pub send_resolved: HashSet<String>,
    /// Its inhibition rules.
    pub inhibitor: Inhibitor,
    /// Its time intervals by name.
    pub time_intervals: HashMap<String, TimeInterval>,
    /// Where deliveries go.
    pub dispatcher: Dispatcher,
    /// Tells the flusher that a group became due sooner.
    pub wake: Arc<tokio::sync::Notify>,
    /// Sent to plugins for links back.
    pub external_url: String,
    /// Its alerts.
    pub state: Arc<AlertState>,
    /// Its silences.
    pub silences: Arc<Silences>,
    /// What the tenant sees of its configuration: the live script, the last refused change.
    pub config_status: Arc<ConfigStatus>,
    /// What puts a group back in line when its notification is refused for good; made on the
    /// first job that needs it.
    pub refusals: std::sync::OnceLock<Arc<dyn Refusals>>,
    /// Where the notification log is persisted.
    pub store: Arc<dyn Store>,
    /// The tenant's limits.
    pub limits: crate::ingest::TenantLimits,
    /// The tenant's ingest rate (alerts per second, with a burst).
    pub ingest_rate: governor::DefaultDirectRateLimiter,
    /// The tenant's routing-script time: ingest is refused while it is in debt.
    pub script_budget: ScriptBudget,
    /// Where ingest and delivery are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where silence changes are recorded.
    pub audit: Arc<crate::audit::AuditLog>,
    /// Its title and body templates (the render stage, run by the pipeline).
    pub templates: Arc<crate::template::Templates>,
    /// Its escalation policies.
    pub escalation_policies: Arc<crate::escalate::Policies>,
    /// Its on-call schedules, which escalation steps page.
    pub schedules: Arc<crate::oncall::Schedules>,
    /// Signs the acknowledge links of firing notifications (set once the store is loaded).
    pub ack_links: Arc<std::sync::OnceLock<crate::ack::AckLinks>>,
}

/// Puts a group back in line when every receiver of its chain refused its notification: the
/// notification log forgets the decision, so the group's next flush notifies again.
#[derive(Clone)]
pub struct Redecide {
    tenant: String,
    routing: std::sync::Weak<Mutex<Routing>>,
    wake: Arc<tokio::sync::Notify>,
    store: Arc<dyn Store>,
}

impl Refusals for Redecide {
    fn refused(&self, key: &str, decided_at: DateTime<Utc>) {
        let Some(routing) = self.routing.upgrade() else { return };
        let forgotten = routing.lock().expect("routing lock").groups.forget_refused(key, decided_at, Utc::now());
        if forgotten {
            self.store.submit_background(vec![Op::delete(Table::NotifyLog, &self.tenant, key.as_bytes())]);
            self.wake.notify_one();
            tracing::info!(group = %key, "the group will notify again at its next group_interval");
        }
    }
}

/// Who acknowledged, for the audit trail and the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckVia {
    /// `POST /api/belfry/v1/acks` with a tenant token.
    Api,
    /// An acknowledge link from a notification.
    Link,
}

impl AckVia {
    /// `api` or `link`.
    pub fn as_str(self) -> &'static str {
        match self {
            AckVia::Api => "api",
            AckVia::Link => "link",
        }
    }
}

impl Notifier {
    fn routing(&self) -> std::sync::MutexGuard<'_, Routing> {
        self.routing.lock().expect("routing lock")
    }

    /// The live router.
    pub fn router(&self) -> Arc<Router> {
        self.routing().router.clone()
    }

    /// Put ingested alerts into groups: new ones are routed, changed ones make their groups due.
    /// The routing script runs outside the routing lock (which the flusher takes for every
    /// tenant), and the time this takes is charged to the tenant's script budget. It blocks for
    /// as long as the script runs: call it off the async workers.
    pub fn on_ingested(&self, touched: &[Touched], now: DateTime<Utc>) {
        let started = std::time::Instant::now();
        let (unrouted, router, generation) = {
            let mut routing = self.routing();
            let mut unrouted = HashSet::new();
            for t in touched {
                if routing.groups.is_member(t.fingerprint) {
                    if t.changed {
                        routing.groups.changed(t.fingerprint, now);
                    }
                } else {
                    unrouted.insert(t.fingerprint);
                }
            }
            (unrouted, routing.router.clone(), routing.generation)
        };
        // With inhibition rules, a changed source alert changes what is muted.
        let changed: HashSet<Fingerprint> =
            if self.inhibitor.is_empty() { HashSet::new() } else { touched.iter().filter(|t| t.changed).map(|t| t.fingerprint).collect() };
        let mut inhibition_changed = false;
        let mut decided = Vec::with_capacity(unrouted.len());
        for (fp, record) in self.state.records(unrouted.union(&changed).copied()) {
            if unrouted.contains(&fp) {
                let alert = record.to_alert();
                let routes = router.route(&alert, now).routes;
                decided.push((fp, alert, routes));
            }
            if changed.contains(&fp) && self.inhibitor.is_source(&record.labels) {
                inhibition_changed = true;
            }
        }
        {
            let mut routing = self.routing();
            for (fp, alert, routes) in decided {
                // Another request with the same alert may have put it in its groups meanwhile.
                if routing.groups.is_member(fp) {
                    continue;
                }
                // A reload swapped the router meanwhile: the new script decides.
                let routes = if routing.generation == generation { routes } else { routing.router.route(&alert, now).routes };
                routing.groups.insert(fp, &alert.labels, alert.starts_at, &routes, now);
            }
            if inhibition_changed {
                routing.groups.touch_all(now);
            }
        }
        self.script_budget.charge(started.elapsed());
        self.wake.notify_one();
    }

    /// Silences or inhibitions changed: every group re-evaluates at its next boundary.
    pub fn touch_all(&self, now: DateTime<Utc>) {
        self.routing().groups.touch_all(now);
        self.wake.notify_one();
    }

    /// Route every held alert with `router` into fresh groups that keep the notification log,
    /// and swap them in with the router. Alerts that arrive meanwhile are routed by the new
    /// router right after the swap, so each alert is routed exactly once.
    pub fn rebuild(&self, router: Arc<Router>, now: DateTime<Utc>) {
        let mut fresh = Routing { router, groups: Groups::default(), generation: 0 };
        // The log tells the rebuilt groups when each last notified (`Groups::insert`); the
        // live history (acks and escalations too) replaces this copy at the swap below.
        fresh.groups.copy_log_from(&self.routing().groups);
        fresh.groups.set_policies(self.escalation_policies.clone());
        // A thousand records at a time: all of them at once (100K alerts at a start) would
        // be a transient copy of the whole state.
        for chunk in self.state.fingerprints().chunks(1000) {
            for (fp, record) in self.state.records(chunk.iter().copied()) {
                fresh.route_into_groups(fp, &record, now);
            }
        }
        let orphaned = {
            let mut routing = self.routing();
            fresh.groups.set_history(routing.groups.take_history());
            fresh.generation = routing.generation + 1;
            *routing = fresh;
            // Alerts ingested while the fresh groups were built.
            let late: Vec<Fingerprint> = self.state.fingerprints().into_iter().filter(|fp| !routing.groups.is_member(*fp)).collect();
            for (fp, record) in self.state.records(late) {
                routing.route_into_groups(fp, &record, now);
            }
            let orphaned = routing.groups.orphaned_log_keys();
            for key in &orphaned {
                routing.groups.forget_log(key);
            }
            orphaned
        };
        if !orphaned.is_empty() {
            let ops = orphaned
                .iter()
                .flat_map(|k| {
                    [Op::delete(Table::NotifyLog, &self.tenant, k.as_bytes()), Op::delete(Table::Acks, &self.tenant, k.as_bytes())]
                })
                .collect();
            self.store.submit_background(ops);
        }
        self.wake.notify_one();
    }

    /// Put a reloaded `router` in effect at once, and move the held alerts to the groups it
    /// decides in the background. From the swap on, every routing decision is the new
    /// script's; a held alert stays in its groups (and keeps being notified there) until its
    /// turn comes, a chunk at a time, so ingest and flushes never wait for the whole re-route.
    /// Each alert is routed by one script at any moment, and never dropped. A tenant with no
    /// groups yet (at start, or just added) is routed at once instead. Resolves when every
    /// held alert is re-routed (or a newer reload took over).
    pub fn reroute(self: &Arc<Self>, router: Arc<Router>, now: DateTime<Utc>) -> Option<tokio::task::JoinHandle<()>> {
        let generation = {
            let mut routing = self.routing();
            if routing.groups.is_empty() {
                drop(routing);
                self.rebuild(router, now);
                return None;
            }
            routing.router = router.clone();
            routing.generation += 1;
            routing.generation
        };
        self.wake.notify_one();
        let notifier = self.clone();
        Some(tokio::spawn(async move { notifier.reroute_held(router, generation).await }))
    }

    async fn reroute_held(&self, router: Arc<Router>, generation: u64) {
        /// Alerts decided per step: ~5 ms of script time, then a lock hold of well under 1 ms.
        const CHUNK: usize = 1000;
        let started = std::time::Instant::now();
        let fingerprints = self.state.fingerprints();
        let total = fingerprints.len();
        for chunk in fingerprints.chunks(CHUNK) {
            let now = Utc::now();
            // Decide outside the lock: the script is the expensive part.
            let decided: Vec<_> = self
                .state
                .records(chunk.iter().copied())
                .into_iter()
                .map(|(fp, record)| {
                    let alert = record.to_alert();
                    let routes = router.route(&alert, now).routes;
                    (fp, alert.labels, alert.starts_at, routes)
                })
                .collect();
            let (ended, acks) = {
                let mut routing = self.routing();
                if routing.generation != generation {
                    return;
                }
                let mut ended = Vec::new();
                for (fp, labels, starts_at, routes) in &decided {
                    ended.extend(routing.groups.reassign(*fp, labels, *starts_at, routes, now));
                }
                (ended, self.history_ops(&mut routing.groups))
            };
            let mut ops = acks;
            ops.extend(ended.iter().map(|k| Op::delete(Table::NotifyLog, &self.tenant, k.as_bytes())));
            if !ops.is_empty() {
                self.store.submit_background(ops);
            }
            self.wake.notify_one();
            tokio::task::yield_now().await;
        }
        let ms = started.elapsed().as_secs_f64() * 1e3;
        if router.script_file().is_some() {
            tracing::info!(tenant = %self.tenant, alerts = total, reroute_ms = ms, "held alerts re-routed by the new script");
        } else {
            tracing::info!(tenant = %self.tenant, alerts = total, reroute_ms = ms, "held alerts re-routed by the new configuration");
        }
    }

    /// Set the gauges of this tenant's state: alerts by state, groups, silences, breakers.
    pub fn export_state(&self, now: DateTime<Utc>) {
        use crate::metrics::{receiver_labels, tenant_labels, with};
        let m = &self.metrics;
        let tenant = tenant_labels(&self.tenant);
        let (mut firing, mut suppressed) = (0i64, 0i64);
        if self.inhibitor.is_empty() && self.silences.list().is_empty() {
            self.state.for_each_firing(now, &mut |_, _| firing += 1);
        } else {
            // Only tenants with silences or inhibition rules pay for a copy of their firing alerts.
            let sources = (!self.inhibitor.is_empty()).then(|| self.inhibitor.sources(&self.state, now));
            for record in self.state.select(&|a| a.ends_at() > now) {
                firing += 1;
                let muted = !self.silences.silencing(&record.labels, now).is_empty()
                    || sources.as_ref().is_some_and(|s| self.inhibitor.inhibited_by(s, record.fingerprint(), &record.labels).is_some());
                suppressed += i64::from(muted);
            }
        }
        let held = self.state.len() as i64;
        m.alerts.get_or_create(&with(tenant.clone(), "state", "active")).set(firing - suppressed);
        m.alerts.get_or_create(&with(tenant.clone(), "state", "suppressed")).set(suppressed);
        m.alerts.get_or_create(&with(tenant.clone(), "state", "resolved")).set(held - firing);
        m.groups.get_or_create(&tenant).set(self.routing().groups.len() as i64);
        let mut by_state = std::collections::BTreeMap::from([("active", 0i64), ("pending", 0), ("expired", 0)]);
        for silence in self.silences.list() {
            *by_state.entry(silence.state_at(now).as_str()).or_default() += 1;
        }
        for (state, count) in by_state {
            m.silences.get_or_create(&with(tenant.clone(), "state", state)).set(count);
        }
        for (name, channel) in self.channels.iter() {
            let (state, _) = channel.gate.breaker.state();
            let value = match state {
                BreakerState::Closed => 0,
                BreakerState::Open { .. } => 1,
                BreakerState::HalfOpen => 2,
            };
            m.breaker_state.get_or_create(&receiver_labels(&self.tenant, name, channel.receiver.plugin_name())).set(value);
        }
    }

    /// Acknowledge the group `key`: its repeats (and escalation) stop until an alert the ack
    /// does not cover fires, or the group ends. Durable and audited before it returns; `None`
    /// if the tenant has no such group.
    pub async fn ack(&self, key: &str, by: &str, comment: &str, via: AckVia, now: DateTime<Utc>) -> Result<Option<Ack>, String> {
        let (ack, changes) = {
            let mut routing = self.routing();
            let ack = routing.groups.ack(key, by, comment, now);
            (ack, self.history_ops(&mut routing.groups))
        };
        let Some(ack) = ack else { return Ok(None) };
        self.persist(changes).await?;
        // Tell the group's receiver: PagerDuty and Opsgenie acknowledge their incident too.
        let mut ops = Vec::new();
        if let Some(job) = self.ack_notification(key, by, now, &mut ops) {
            self.store.submit_background(ops);
            self.dispatcher.submit(job).await;
        }
        self.audit.record(&self.tenant, "group.ack", by, &serde_json::json!({"group": key, "comment": comment, "via": via.as_str()}));
        self.metrics.acks.get_or_create(&crate::metrics::with(crate::metrics::tenant_labels(&self.tenant), "via", via.as_str())).inc();
        tracing::info!(tenant = %self.tenant, group = %key, by, via = via.as_str(), "group acknowledged");
        Ok(Some(ack))
    }

    /// The notification that tells the group's receiver of an ack: its alerts as they are.
    fn ack_notification(&self, key: &str, by: &str, now: DateTime<Utc>, ops: &mut Vec<Op>) -> Option<Job> {
        let (receiver, labels, records) = self.firing_of(key, now)?;
        let mut notification = notification(&self.tenant, &receiver, key, &labels, &records, &self.external_url, now);
        notification.acked_by = Some(by.to_string());
        let entry = OutboxEntry { receiver, notification, decided_at: now };
        Some(self.outboxed(entry, ops))
    }

    /// Withdraw the ack of the group `key`: it repeats again. Whether it was acked.
    pub async fn unack(&self, key: &str, by: &str, now: DateTime<Utc>) -> Result<bool, String> {
        let (removed, changes) = {
            let mut routing = self.routing();
            let removed = routing.groups.unack(key, now);
            (removed, self.history_ops(&mut routing.groups))
        };
        if removed {
            self.persist(changes).await?;
            self.audit.record(&self.tenant, "group.unack", by, &serde_json::json!({"group": key}));
            self.wake.notify_one();
        }
        Ok(removed)
    }

    /// The ack of the group `key`, if it is acknowledged.
    pub fn ack_of(&self, key: &str) -> Option<Ack> {
        self.routing().groups.ack_of(key).cloned()
    }

    /// The tenant's acknowledged groups, by key.
    pub fn acks(&self) -> Vec<(String, Ack)> {
        let mut acks: Vec<(String, Ack)> = self.routing().groups.acks().map(|(k, a)| (k.to_string(), a.clone())).collect();
        acks.sort_by(|a, b| a.0.cmp(&b.0));
        acks
    }

    async fn persist(&self, ops: Vec<Op>) -> Result<(), String> {
        match self.store.submit(ops).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the store stopped".into()),
        }
    }

    /// The store writes for the acks and escalations the groups changed since last asked.
    fn history_ops(&self, groups: &mut Groups) -> Vec<Op> {
        let tenant = &self.tenant;
        let acks = groups.take_ack_changes().into_iter().map(|(key, ack)| match ack {
            Some(ack) => Op::put(Table::Acks, tenant, key.as_bytes(), &ack),
            None => Op::delete(Table::Acks, tenant, key.as_bytes()),
        });
        let escalations = groups.take_escalation_changes().into_iter().map(|(key, e)| match e {
            Some(escalation) => Op::put(Table::Escalations, tenant, key.as_bytes(), &escalation),
            None => Op::delete(Table::Escalations, tenant, key.as_bytes()),
        });
        acks.chain(escalations).collect()
    }

    /// The group `key`'s receiver, group labels and firing alerts; `None` if it has none.
    fn firing_of(&self, key: &str, now: DateTime<Utc>) -> Option<(String, alert::LabelSet, Vec<AlertRecord>)> {
        let (receiver, options, members) = {
            let routing = self.routing();
            let group = routing.groups.get(key)?;
            (group.receiver.clone(), group.options.clone(), group.alerts.iter().copied().collect::<Vec<_>>())
        };
        let records: Vec<AlertRecord> =
            self.state.records(members).into_iter().map(|(_, r)| r).filter(|r| r.status_at(now) == Status::Firing).collect();
        let labels = options.group_by.group_labels(&records.first()?.labels);
        Some((receiver, labels, records))
    }

    /// A job for `entry`, and its outbox write added to `ops`.
    fn outboxed(&self, entry: OutboxEntry, ops: &mut Vec<Op>) -> Job {
        let job = self.job(new_outbox_id(), entry, None, Decision::InOutbox);
        ops.push(Op::put(Table::Outbox, &self.tenant, job.id.as_bytes(), &job.entry));
        job
    }

    /// Job `id` for `entry`, whose store writes stand as `decision` says.
    fn job(&self, id: String, entry: OutboxEntry, redecide: Option<Arc<dyn Refusals>>, decision: Decision) -> Job {
        Job {
            tenant: self.tenant.clone(),
            id,
            entry,
            channels: self.channels.clone(),
            templates: self.templates.clone(),
            redecide,
            decision,
        }
    }

    /// The tenant's refusal callback, made once and shared by every job (not a copy per job).
    fn redecide(&self) -> Arc<dyn Refusals> {
        self.refusals
            .get_or_init(|| {
                Arc::new(Redecide {
                    tenant: self.tenant.clone(),
                    routing: Arc::downgrade(&self.routing),
                    wake: self.wake.clone(),
                    store: self.store.clone(),
                })
            })
            .clone()
    }

    /// The earliest time a group is due.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.routing().groups.next_due()
    }

    /// The receivers an alert goes to: those of its groups, or what the router says.
    pub fn receivers_of(&self, record: &AlertRecord, now: DateTime<Utc>) -> Vec<String> {
        let router = {
            let routing = self.routing();
            let mut names: Vec<String> = routing.groups.groups_of(record.fingerprint()).map(|g| g.receiver.clone()).collect();
            if !names.is_empty() {
                names.dedup();
                return names;
            }
            routing.router.clone()
        };
        router.route(&record.to_alert(), now).receivers()
    }

    /// Flush the groups due at `now`, at most `limit` of them (the earliest first), and every
    /// escalation level due: mute, dedup, persist the log, dispatch. True if more groups are due.
    pub async fn flush_due(&self, now: DateTime<Utc>, limit: usize) -> bool {
        let (due, escalations, more) = {
            let mut routing = self.routing();
            let due = routing.groups.take_due(now, limit);
            let more = routing.groups.any_due(now);
            (due, routing.groups.take_due_escalations(now), more)
        };
        if due.is_empty() && escalations.is_empty() {
            return more;
        }
        let sources = (!self.inhibitor.is_empty()).then(|| self.inhibitor.sources(&self.state, now));
        let mut ops = Vec::new();
        let mut jobs = Vec::new();
        let mut source_resolved = false;
        for key in due {
            let (members, receiver, options) = {
                let routing = self.routing();
                let Some(group) = routing.groups.get(&key) else { continue };
                (group.alerts.iter().copied().collect::<Vec<_>>(), group.receiver.clone(), group.options.clone())
            };
            let alerts: Vec<FlushAlert> = self
                .state
                .records(members)
                .into_iter()
                .map(|(fp, record)| {
                    let muted = !self.silences.silencing(&record.labels, now).is_empty()
                        || sources.as_ref().is_some_and(|s| self.inhibitor.inhibited_by(s, fp, &record.labels).is_some());
                    FlushAlert { record, muted }
                })
                .collect();
            if !self.inhibitor.is_empty()
                && alerts.iter().any(|a| a.record.status_at(now) == Status::Resolved && self.inhibitor.is_source(&a.record.labels))
            {
                source_resolved = true;
            }
            let time_muted = self.time_muted(&options, now);
            let send_resolved = self.send_resolved.contains(&receiver);
            let outcome = self.routing().groups.flush(&key, now, alerts, time_muted, send_resolved);
            match outcome {
                FlushOutcome::Notify(mut flush) => {
                    let log = Op::put(Table::NotifyLog, &self.tenant, flush.key.as_bytes(), &flush.entry);
                    if flush.alerts.is_empty() {
                        ops.push(log);
                        continue;
                    }
                    let mut notification = group_notification(&self.tenant, &mut flush, &self.external_url, now);
                    if notification.status == AlertStatus::Firing
                        && let Some(links) = self.ack_links.get()
                    {
                        notification.ack_url = Some(links.link(&self.external_url, &self.tenant, &flush.key, now));
                    }
                    let entry = OutboxEntry { receiver: flush.receiver.clone(), notification, decided_at: now };
                    // The log entry goes with the job: the pipeline writes it, with the outbox
                    // entry if delivery has to wait or fails. Until then a crash leaves the
                    // group's alerts stored and its log as it was, so the restart decides again.
                    jobs.push(self.job(new_outbox_id(), entry, Some(self.redecide()), Decision::Deferred(log)));
                }
                FlushOutcome::Gone => ops.push(Op::delete(Table::NotifyLog, &self.tenant, key.as_bytes())),
                FlushOutcome::Held | FlushOutcome::Unchanged => {}
            }
        }
        {
            let mut routing = self.routing();
            if source_resolved {
                routing.groups.touch_all(now);
            }
            // Acks and escalations these flushes started, re-triggered or ended.
            ops.extend(self.history_ops(&mut routing.groups));
        }
        for due in escalations {
            jobs.extend(self.escalation_jobs(&due, now, &mut ops));
        }
        if !ops.is_empty() {
            // Not awaited: losing a log entry in a crash means notifying again (at least once).
            self.store.submit_background(ops);
        }
        for job in jobs {
            self.dispatcher.submit(job).await;
        }
        more
    }

    /// The notifications of an escalation level: the group's firing alerts to each receiver
    /// of the step, at that level, unless the step's time intervals are all inactive.
    fn escalation_jobs(&self, due: &crate::group::DueEscalation, now: DateTime<Utc>, ops: &mut Vec<Op>) -> Vec<Job> {
        let step = &due.step;
        let fields = |skipped: bool, notify: &[String], on_call: &serde_json::Map<String, serde_json::Value>| {
            let mut fields =
                serde_json::json!({"group": &*due.key, "policy": due.policy, "level": due.level, "notify": notify, "skipped": skipped});
            if !on_call.is_empty() {
                fields["on_call"] = on_call.clone().into();
            }
            fields
        };
        if !step.active_time_intervals.is_empty() && !step.active_time_intervals.iter().any(|name| self.interval_active(name, now)) {
            self.audit.record(&self.tenant, "escalation.step", "belfry", &fields(true, &step.notify, &serde_json::Map::new()));
            tracing::info!(tenant = %self.tenant, group = %due.key, level = due.level, "escalation step passed over: outside its time intervals");
            return Vec::new();
        }
        let Some((_, labels, records)) = self.firing_of(&due.key, now) else { return Vec::new() };
        // The step's receivers, then whoever each of its schedules has on call now.
        let mut receivers = step.notify.clone();
        let mut on_call = serde_json::Map::new();
        for name in &step.notify_on_call {
            let found = self.on_call(name, now);
            if found.is_none() {
                tracing::warn!(tenant = %self.tenant, group = %due.key, schedule = %name, "nobody is on call in the schedule: the step pages no one from it");
            }
            on_call.insert(name.clone(), found.as_ref().map(|o| o.receiver.clone()).into());
            if let Some(o) = found
                && !receivers.contains(&o.receiver)
            {
                receivers.push(o.receiver);
            }
        }
        self.audit.record(&self.tenant, "escalation.step", "belfry", &fields(false, &receivers, &on_call));
        let level = due.level.to_string();
        let metric =
            crate::metrics::with(crate::metrics::with(crate::metrics::tenant_labels(&self.tenant), "policy", &due.policy), "level", &level);
        self.metrics.escalations.get_or_create(&metric).inc();
        tracing::info!(tenant = %self.tenant, group = %due.key, level = due.level, receivers = ?receivers, "escalating");
        let mut jobs = Vec::new();
        for receiver in &receivers {
            let mut notification = notification(&self.tenant, receiver, &due.key, &labels, &records, &self.external_url, now);
            notification.escalation_level = due.level;
            if let Some(links) = self.ack_links.get() {
                notification.ack_url = Some(links.link(&self.external_url, &self.tenant, &due.key, now));
            }
            let entry = OutboxEntry { receiver: receiver.clone(), notification, decided_at: now };
            jobs.push(self.outboxed(entry, ops));
        }
        jobs
    }

    /// Who schedule `name` has on call at `at`.
    pub fn on_call(&self, name: &str, at: DateTime<Utc>) -> Option<crate::oncall::OnCall> {
        self.schedules.get(name)?.on_call(at, &|interval| self.interval_active(interval, at))
    }

    /// Whether the tenant's time interval `name` is active at `at` (an unknown name never is).
    fn interval_active(&self, name: &str, at: DateTime<Utc>) -> bool {
        self.time_intervals.get(name).is_some_and(|i| i.contains(at))
    }

    /// Resubmit notifications a previous run left in the outbox (decided, not yet accepted).
    pub async fn resume(&self, pending: Vec<(String, OutboxEntry)>) {
        for (id, entry) in pending {
            tracing::info!(tenant = %self.tenant, receiver = %entry.receiver, id = %id, "redelivering a notification from the outbox");
            // An acknowledgement's notification is not a group's decision: nothing to redo.
            let redecide = entry.notification.acked_by.is_none().then(|| self.redecide());
            self.dispatcher.submit(self.job(id, entry, redecide, Decision::InOutbox)).await;
        }
    }

    /// Whether the route's time intervals hold notifications back at `now`.
    fn time_muted(&self, options: &RouteOptions, now: DateTime<Utc>) -> bool {
        let active = |name: &String| self.interval_active(name, now);
        options.mute_time_intervals.iter().any(active)
            || (!options.active_time_intervals.is_empty() && !options.active_time_intervals.iter().any(active))
    }
}

/// A fresh outbox id (also the job's correlation id in logs and audit records).
fn new_outbox_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The notification for a flushed group; takes the flush's alerts rather than copying them.
pub fn group_notification(tenant: &str, flush: &mut Flush, external_url: &str, now: DateTime<Utc>) -> Notification {
    let alerts = std::mem::take(&mut flush.alerts);
    notification_of(tenant, &flush.receiver, &flush.key, &flush.labels, alerts, external_url, now)
}

/// A notification of `alerts` (at least one) to `receiver`, as the plugins receive it.
pub fn notification(
    tenant: &str,
    receiver: &str,
    group_key: &str,
    group_labels: &alert::LabelSet,
    alerts: &[AlertRecord],
    external_url: &str,
    now: DateTime<Utc>,
) -> Notification {
    notification_of(tenant, receiver, group_key, group_labels, alerts.to_vec(), external_url, now)
}

/// [`notification`], taking the alerts: their labels and annotations move into it.
fn notification_of(
    tenant: &str,
    receiver: &str,
    group_key: &str,
    group_labels: &alert::LabelSet,
    alerts: Vec<AlertRecord>,
    external_url: &str,
    now: DateTime<Utc>,
) -> Notification {
    let pairs = |set: &alert::LabelSet| set.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>();
    // The pairs every alert has, in the first alert's (sorted) order.
    let common = |pick: fn(&AlertRecord) -> &alert::LabelSet| -> Vec<(String, String)> {
        let Some((first, rest)) = alerts.split_first() else { return Vec::new() };
        pick(first).iter().filter(|(k, v)| rest.iter().all(|a| pick(a).get(*k) == Some(*v))).map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let (common_labels, common_annotations) = (common(|a| &a.labels), common(|a| &a.annotations));
    let firing = alerts.iter().any(|a| a.status_at(now) == Status::Firing);
    Notification {
        tenant: tenant.to_string(),
        receiver: receiver.to_string(),
        status: if firing { AlertStatus::Firing } else { AlertStatus::Resolved },
        group_key: group_key.to_string(),
        group_labels: pairs(group_labels),
        common_labels,
        common_annotations,
        alerts: alerts
            .into_iter()
            .map(|a| {
                let status = wit_status(a.status_at(now));
                plugin::Alert {
                    fingerprint: a.fingerprint().to_string(),
                    status,
                    starts_at: alert::format_time(a.starts_at),
                    // Alertmanager sends a zero endsAt for alerts that are still firing.
                    ends_at: match status {
                        AlertStatus::Resolved => Some(alert::format_time(a.ends_at)),
                        AlertStatus::Firing => None,
                    },
                    labels: a.labels.into_iter().collect(),
                    annotations: a.annotations.into_iter().collect(),
                    generator_url: a.generator_url,
                }
            })
            .collect(),
        truncated_alerts: 0,
        title: None,
        body: None,
        external_url: external_url.to_string(),
        ack_url: None,
        acked_by: None,
        escalation_level: 0,
    }
}

/// A notification of one alert, grouped by all its labels (for tests and benchmarks).
pub fn single_alert_notification(tenant: &str, receiver: &str, alert: &Alert, external_url: &str, now: DateTime<Utc>) -> Notification {
    let record = AlertRecord::from_posted(alert.clone(), now, std::time::Duration::from_secs(300));
    let key = crate::group::group_key(receiver, &["...".to_string()], &alert.labels);
    notification(tenant, receiver, &key, &alert.labels, std::slice::from_ref(&record), external_url, now)
}

fn wit_status(s: Status) -> AlertStatus {
    match s {
        Status::Firing => AlertStatus::Firing,
        Status::Resolved => AlertStatus::Resolved,
    }
}
