//! Running as several replicas on one engine, PostgreSQL (docs/HA.md): the store backend that keeps Belfry's records there.
//!
//! Built so far: [`PgStore`], the [`Store`](crate::store::Store) the replicas will share. The
//! `[cluster]` configuration, the leases that give each tenant's pipeline one owner, and the
//! takeover are the next steps of issue 28.

mod pg_store;

pub use pg_store::{PgStore, PgStoreOptions};
