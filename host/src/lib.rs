//! Belfry: receives alerts, decides who must hear about them, and delivers through sandboxed plugins.
//!
//! # Layout
//!
//! Layers, from the command line down to the alert model. **Each module depends only on
//! modules listed below it** (on a later line, or later on its own line); nothing depends
//! upward and there is no cycle, file by file too: a folder's `mod.rs` declares its parts
//! and re-exports them, and the parts depend on each other in one direction.
//! `tests/tests/layers.rs` checks this list against every `use crate::`, `super::` and child
//! module path in `host/src` and `host/core/src`, and that no file grows past 800 lines.
//!
//! The layers from [`group`] down are the crate `belfry-core` (`host/core`): the domain,
//! without the WebAssembly runtime or HTTP, so that a change there rebuilds and tests in about
//! a third of the time (docs/BENCHMARKS.md, "The edit-compile-test loop").
//!
//! An alert enters at [`api`], is decoded by [`ingest`], merged into [`state`] and made
//! durable by [`store`]; [`dispatch`] routes it with the tenant's [`route`] script into
//! [`group`]s, mutes what [`silence`]s and [`inhibit`]ion rules say, and delivers through
//! [`plugin`]s.
//!
//! - [`cli`]: the `belfry` command line.
//! - [`serve`]: wires the layers below into the daemon; rebuilds the tenants on reload.
//! - [`watch`]: reloads a tenant's routing script when its file changes.
//! - [`config`]: the operator's TOML: assembles the sections the modules below own (each
//!   deserializes its own), reads tenant directories and secrets, cross-checks, and names file,
//!   key and line for every problem.
//! - [`api`]: HTTP to domain and back (Alertmanager's API v2, Belfry's additions, health).
//! - [`tenant`]: who a request acts for (token or trusted proxy header) and what each tenant owns.
//! - [`dispatch`]: ties the domain together per tenant (route, group, mute, escalate,
//!   acknowledge), then delivers: outbox, rate limit, retry, circuit breaker, failover.
//! - [`secrets`]: secret references and encrypted values in the configuration.
//! - [`audit`]: the hash-chained audit trail of every delivery attempt and outcome.
//! - [`cluster`]: several replicas on one engine (PostgreSQL): the store backend they share.
//! - [`template`]: the title and body a notification is rendered with.
//! - [`plugin`]: compiles, caches and sandboxes channel plugins; one receiver's instances never serve another.
//! - [`ingest`]: decodes and validates Alertmanager's postable alerts, within the tenant's limits.
//! - [`group`]: aggregation groups, their schedule and the notification log (dedup).
//! - [`route`]: each tenant's Rhai routing script: receivers, grouping and timing per alert.
//! - [`oncall`], [`escalate`], [`ack`]: on-call schedules, the escalation policies whose steps
//!   page them, acknowledgements.
//! - [`inhibit`], [`silence`]: what mutes a notification.
//! - [`state`]: each tenant's alerts with Alertmanager's merge semantics.
//! - [`store`]: durable tables of (tenant, id) → bytes with group commit, knowing no domain type.
//! - [`timeinterval`], [`matcher`], [`alert`]: time intervals, label matchers, the alert model
//!   (label sets, fingerprints, status).
//! - [`metrics`], [`alloc`]: Prometheus metrics with Alertmanager's names; the allocator and
//!   its per-thread meter.

pub mod api;
pub mod audit;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dispatch;
pub mod ingest;
pub mod plugin;
pub mod secrets;
pub mod serve;
pub mod template;
pub mod tenant;
pub mod watch;

// The domain core, a crate of its own (host/core): the layers from `group` down. Re-exported
// under the same names, so `crate::alert` is the same path in both crates.
pub use belfry_core::{
    ack, alert, alloc, daemon_allocator, escalate, group, inhibit, matcher, metrics, oncall, route, silence, state, store, timeinterval,
};

/// The binaries' allocator in the unit tests too, so that what it meters is tested.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: alloc::Metered = alloc::Metered;
