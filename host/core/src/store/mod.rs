//! Durable state behind a narrow interface that knows no domain type: ordered batches of writes to (table, tenant, id) → bytes, committed in groups, and a snapshot to load at start.
//!
//! Each domain module encodes its own records (`Op::put`) and decodes them from a
//! [`Snapshot`] (`serve` restores them at start), so this module sits below all of them, and a
//! backend for another engine implements [`Store`] over the same tables, keys and bytes.
//!
//! The embedded backend is redb: pure Rust (no C toolchain), ACID with crash safety by default
//! (a commit is fsynced before it returns), MVCC readers that never block the writer.
//!
//! Writes go through a journal, so that acknowledging a request costs a sequential append, not
//! a rewrite of one B-tree page per alert (records are keyed by fingerprint, i.e. at random):
//!
//! - `submit` encodes a batch on the caller's thread and queues it for the writer thread;
//! - the writer appends every queued batch to the journal in one transaction (group commit:
//!   many requests share one fsync) and acknowledges each once it is durable; batches nobody
//!   waits for (`submit_background`: outbox removals, notification-log entries) wait up to
//!   5 ms for one somebody waits for, instead of each costing a commit;
//! - a checkpoint folds the journal into the record tables (each record written once per
//!   checkpoint however often it changed, e.g. an alert re-sent by Prometheus every 30 s), then
//!   deletes the folded entries, when enough has accumulated or the writer is idle;
//! - `load` reads the tables and replays the journal in order, so a crash at any point loses
//!   nothing that was acknowledged.
//!
//! The journal is a redb file of its own (`<path>.journal`), so a checkpoint runs on its own
//! thread while appends go on: sharing one file, and so redb's one write transaction, every
//! checkpoint stalled every commit, which halved ingest (docs/BENCHMARKS.md).

use serde::Deserialize;
use std::path::PathBuf;

mod checkpoint;
mod interface;
mod redb;
mod tables;

pub use self::checkpoint::Checkpoints;
pub use self::interface::{Commit, Op, Record, Snapshot, Store, StoreError, Table, decode, encode};
pub use self::redb::{RedbStore, journal_path};
pub use crate::metrics::StoreTimings;

// Its section of the configuration file, which `config` assembles (docs/CONFIG.md).

/// `[store]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The store file, relative to the config file; created (with its directory) on first start.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { path: default_store_path() }
    }
}

fn default_store_path() -> PathBuf {
    PathBuf::from("data/belfry.redb")
}
