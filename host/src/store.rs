//! Durable state behind a narrow interface: ordered batches of writes, committed in groups, and a snapshot to load at start.
//!
//! The embedded backend is redb: pure Rust (no C toolchain), ACID with crash safety by default
//! (a commit is fsynced before it returns), one file, MVCC readers that never block the
//! writer. Durability costs one fsync per commit, so a single writer thread drains every batch
//! queued while the previous commit ran into one transaction (group commit): under load, many
//! requests share one fsync and each is acknowledged only once its writes are on disk.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::alert::Fingerprint;
use crate::silence::Silence;
use crate::state::AlertRecord;

/// One write. Within a batch, and across batches in submission order, later writes win.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Insert or replace a tenant's alert (keyed by its fingerprint).
    PutAlert { tenant: String, alert: AlertRecord },
    /// Remove a tenant's alert.
    DeleteAlert { tenant: String, fingerprint: Fingerprint },
    /// Insert or replace a tenant's silence (keyed by its id).
    PutSilence { tenant: String, silence: Silence },
    /// Remove a tenant's silence.
    DeleteSilence { tenant: String, id: String },
}

/// Everything stored, per tenant, as loaded at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// `(tenant, alert)` pairs.
    pub alerts: Vec<(String, AlertRecord)>,
    /// `(tenant, silence)` pairs.
    pub silences: Vec<(String, Silence)>,
}

/// A store failure: the host's fault (disk full, permissions, corruption).
#[derive(Debug, Clone, thiserror::Error)]
#[error("store {path}: {message}")]
pub struct StoreError {
    /// The store's location.
    pub path: String,
    /// What failed.
    pub message: String,
}

/// Resolves once the submitted batch is durable (or failed).
pub type Commit = oneshot::Receiver<Result<(), StoreError>>;

/// What Belfry needs from a store. A distributed backend for multi-node deployments implements
/// the same two calls.
pub trait Store: Send + Sync + 'static {
    /// Queue a batch. Never blocks; batches commit in submission order. The returned receiver
    /// resolves when the batch is durable.
    fn submit(&self, ops: Vec<Op>) -> Commit;
    /// Read everything (at start).
    fn load(&self) -> Result<Snapshot, StoreError>;
}

const ALERTS: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("alerts");
const SILENCES: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("silences");

/// Most batches folded into one transaction; bounds commit latency under a flood.
const MAX_BATCHES_PER_COMMIT: usize = 1024;

/// The embedded store: one redb file and its writer thread.
pub struct RedbStore {
    db: std::sync::Arc<redb::Database>,
    path: PathBuf,
    writer: mpsc::Sender<(Vec<Op>, oneshot::Sender<Result<(), StoreError>>)>,
}

impl RedbStore {
    /// Open (or create) the store at `path`, creating its directory.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let fail = |message: String| StoreError { path: path.display().to_string(), message };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create its directory: {e}")))?;
        }
        let db = redb::Database::create(path).map_err(|e| fail(format!("cannot open: {e}")))?;
        // Create the tables so a fresh store loads as empty.
        let txn = db.begin_write().map_err(|e| fail(e.to_string()))?;
        txn.open_table(ALERTS).map_err(|e| fail(e.to_string()))?;
        txn.open_table(SILENCES).map_err(|e| fail(e.to_string()))?;
        txn.commit().map_err(|e| fail(e.to_string()))?;
        let db = std::sync::Arc::new(db);
        let (writer, queue) = mpsc::channel();
        let (db2, shown) = (db.clone(), path.display().to_string());
        std::thread::Builder::new()
            .name("belfry-store".into())
            .spawn(move || write_loop(&db2, &shown, queue))
            .map_err(|e| fail(format!("cannot start the writer thread: {e}")))?;
        Ok(RedbStore { db, path: path.to_path_buf(), writer })
    }

    fn error(&self, message: String) -> StoreError {
        StoreError { path: self.path.display().to_string(), message }
    }
}

impl Store for RedbStore {
    fn submit(&self, ops: Vec<Op>) -> Commit {
        let (done, commit) = oneshot::channel();
        if let Err(mpsc::SendError((_, done))) = self.writer.send((ops, done)) {
            let _ = done.send(Err(self.error("the writer thread stopped".into())));
        }
        commit
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        use redb::{ReadableDatabase, ReadableTable};
        let fail = |e: &dyn std::fmt::Display| self.error(e.to_string());
        let txn = self.db.begin_read().map_err(|e| fail(&e))?;
        let mut snapshot = Snapshot::default();
        for entry in txn.open_table(ALERTS).map_err(|e| fail(&e))?.iter().map_err(|e| fail(&e))? {
            let (key, value) = entry.map_err(|e| fail(&e))?;
            let (tenant, _) = split_key(key.value()).ok_or_else(|| self.error("a malformed alert key".into()))?;
            let alert: AlertRecord = serde_json::from_slice(value.value()).map_err(|e| fail(&e))?;
            snapshot.alerts.push((tenant, alert));
        }
        for entry in txn.open_table(SILENCES).map_err(|e| fail(&e))?.iter().map_err(|e| fail(&e))? {
            let (key, value) = entry.map_err(|e| fail(&e))?;
            let (tenant, _) = split_key(key.value()).ok_or_else(|| self.error("a malformed silence key".into()))?;
            let silence: Silence = serde_json::from_slice(value.value()).map_err(|e| fail(&e))?;
            snapshot.silences.push((tenant, silence));
        }
        Ok(snapshot)
    }
}

/// Key layout: tenant name, NUL, then the id bytes (tenant names never contain NUL).
fn key(tenant: &str, id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 1 + id.len());
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(id);
    k
}

fn split_key(k: &[u8]) -> Option<(String, &[u8])> {
    let nul = k.iter().position(|b| *b == 0)?;
    Some((String::from_utf8(k[..nul].to_vec()).ok()?, &k[nul + 1..]))
}

type Queued = (Vec<Op>, oneshot::Sender<Result<(), StoreError>>);

fn write_loop(db: &redb::Database, path: &str, queue: mpsc::Receiver<Queued>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_BATCHES_PER_COMMIT {
            match queue.try_recv() {
                Ok(more) => group.push(more),
                Err(_) => break,
            }
        }
        let result = commit(db, group.iter().flat_map(|(ops, _)| ops.iter()))
            .map_err(|message| StoreError { path: path.to_string(), message });
        if let Err(e) = &result {
            tracing::error!(error = %e, batches = group.len(), "store commit failed; the requests are answered with 500");
        }
        for (_, done) in group {
            let _ = done.send(result.clone());
        }
    }
}

fn commit<'a>(db: &redb::Database, ops: impl Iterator<Item = &'a Op>) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut alerts = txn.open_table(ALERTS).map_err(|e| e.to_string())?;
        let mut silences = txn.open_table(SILENCES).map_err(|e| e.to_string())?;
        for op in ops {
            match op {
                Op::PutAlert { tenant, alert } => {
                    let value = serde_json::to_vec(alert).map_err(|e| e.to_string())?;
                    alerts.insert(key(tenant, &alert.fingerprint().0.to_be_bytes()).as_slice(), value.as_slice()).map_err(|e| e.to_string())?;
                }
                Op::DeleteAlert { tenant, fingerprint } => {
                    alerts.remove(key(tenant, &fingerprint.0.to_be_bytes()).as_slice()).map_err(|e| e.to_string())?;
                }
                Op::PutSilence { tenant, silence } => {
                    let value = serde_json::to_vec(silence).map_err(|e| e.to_string())?;
                    silences.insert(key(tenant, silence.id.as_bytes()).as_slice(), value.as_slice()).map_err(|e| e.to_string())?;
                }
                Op::DeleteSilence { tenant, id } => {
                    silences.remove(key(tenant, id.as_bytes()).as_slice()).map_err(|e| e.to_string())?;
                }
            }
        }
    }
    txn.commit().map_err(|e| e.to_string())
}
