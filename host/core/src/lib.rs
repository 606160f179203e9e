//! Belfry's domain core: the alert model, label matchers, time intervals, each tenant's alerts and their durable store, routing scripts, aggregation groups and the notification log, silences, inhibition, acknowledgements, escalation policies and on-call schedules.
//!
//! It knows no WebAssembly runtime, HTTP or configuration file: the host (`belfry`) wires it
//! up and re-exports every module under the same name. The layers, each depending only on
//! those listed below it, are in the host's `lib.rs`.

pub mod ack;
pub mod alert;
pub mod alloc;
pub mod escalate;
pub mod group;
pub mod inhibit;
pub mod matcher;
pub mod metrics;
pub mod oncall;
pub mod route;
pub mod silence;
pub mod state;
pub mod store;
pub mod timeinterval;

/// The binaries' allocator in the unit tests too, so that what it meters is tested.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: alloc::Metered = alloc::Metered;
