//! Belfry: receives alerts, decides who must hear about them, and delivers through sandboxed plugins.
//!
//! # Layout
//!
//! Modules in the order an alert flows through them:
//!
//! - [`config`]: the operator's TOML, parsed strictly; errors name the file and key.
//! - [`api`]: HTTP to domain and back (`/api/v2/alerts`, health).
//! - [`tenant`]: who a request acts for (token or trusted proxy header) and what each tenant owns.
//! - [`ingest`]: decodes and validates Alertmanager's postable alerts.
//! - [`alert`]: the alert model: label sets, fingerprints, status.
//! - [`matcher`]: Alertmanager's label matchers, for API filters and silences.
//! - [`state`]: each tenant's alerts with Alertmanager's merge semantics.
//! - [`store`]: durable state (redb) behind a narrow interface, with group commit.
//! - [`route`]: each tenant's Rhai routing script: receivers, grouping and timing per alert.
//! - [`group`]: aggregation groups, their schedule and the notification log (dedup).
//! - [`silence`], [`inhibit`], [`timeinterval`]: what mutes a notification.
//! - [`ack`], [`escalate`], [`oncall`]: acknowledgements, escalation policies and the on-call
//!   schedules their steps page.
//! - [`dispatch`]: ties these together per tenant, then delivers: outbox, rate limit, retry,
//!   circuit breaker, failover.
//! - [`watch`]: reloads a tenant's routing script when its file changes.
//! - [`plugin`]: compiles, caches and sandboxes channel plugins; one receiver's instances never serve another.
//! - [`metrics`]: Prometheus metrics with Alertmanager's names.
//! - [`audit`]: the hash-chained audit trail of every delivery attempt and outcome.
//! - [`serve`]: wires the above into the daemon; rebuilds the tenants on reload.
//! - [`cli`]: the `belfry` command line.

pub mod ack;
pub mod alert;
pub mod alloc;
pub mod api;
pub mod audit;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod escalate;
pub mod group;
pub mod ingest;
pub mod inhibit;
pub mod matcher;
pub mod metrics;
pub mod oncall;
pub mod plugin;
pub mod route;
pub mod secrets;
pub mod serve;
pub mod silence;
pub mod state;
pub mod store;
pub mod template;
pub mod tenant;
pub mod timeinterval;
pub mod watch;

/// The binaries' allocator in the unit tests too, so that what it meters is tested.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: alloc::Metered = alloc::Metered;
