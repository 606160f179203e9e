//! Durable state behind a narrow interface: ordered batches of writes, committed in groups, and a snapshot to load at start.
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

use foldhash::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::ack::Ack;
use crate::alert::Fingerprint;
use crate::dispatch::OutboxEntry;
use crate::escalate::Escalation;
use crate::group::NotifyEntry;
pub use crate::metrics::StoreTimings;
use crate::silence::Silence;
use crate::state::AlertRecord;

/// One write. Within a batch, and across batches in submission order, later writes win.
#[derive(Clone, Debug)]
pub enum Op {
    /// Insert or replace a tenant's alert (keyed by its fingerprint).
    PutAlert { tenant: String, alert: AlertRecord },
    /// Remove a tenant's alert.
    DeleteAlert { tenant: String, fingerprint: Fingerprint },
    /// Insert or replace a tenant's silence (keyed by its id).
    PutSilence { tenant: String, silence: Silence },
    /// Remove a tenant's silence.
    DeleteSilence { tenant: String, id: String },
    /// Record what a group was last notified about (the notification log).
    PutNotifyLog { tenant: String, group: String, entry: NotifyEntry },
    /// Forget a group's notification log entry (the group is gone).
    DeleteNotifyLog { tenant: String, group: String },
    /// A notification decided but not yet accepted by its channel (the outbox).
    PutOutbox { tenant: String, id: String, entry: Box<OutboxEntry> },
    /// The notification was delivered (or given up on): out of the outbox.
    DeleteOutbox { tenant: String, id: String },
    /// A group was acknowledged.
    PutAck { tenant: String, group: String, ack: Ack },
    /// A group's ack ended (withdrawn, re-triggered, or the group is gone).
    DeleteAck { tenant: String, group: String },
    /// A host-wide value (the ack links' signing key).
    PutMeta { name: String, value: Vec<u8> },
    /// A group's escalation started or advanced.
    PutEscalation { tenant: String, group: String, escalation: Escalation },
    /// A group's escalation stopped.
    DeleteEscalation { tenant: String, group: String },
}

/// Everything stored, per tenant, as loaded at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// `(tenant, alert)` pairs, still encoded: decoding them one at a time while restoring
    /// keeps the memory peak at start to the encoded size.
    pub alerts: Vec<(String, EncodedAlert)>,
    /// `(tenant, silence)` pairs.
    pub silences: Vec<(String, Silence)>,
    /// `(tenant, group key, entry)`: the notification log.
    pub notify_log: Vec<(String, String, NotifyEntry)>,
    /// `(tenant, id, entry)`: notifications not yet delivered.
    pub outbox: Vec<(String, String, OutboxEntry)>,
    /// `(tenant, group key, ack)`: acknowledged groups.
    pub acks: Vec<(String, String, Ack)>,
    /// `(name, value)`: host-wide values.
    pub meta: Vec<(String, Vec<u8>)>,
    /// `(tenant, group key, escalation)`: running escalations.
    pub escalations: Vec<(String, String, Escalation)>,
}

/// A stored alert, not yet decoded.
#[derive(Debug)]
pub struct EncodedAlert(Vec<u8>);

impl EncodedAlert {
    /// The alert, or why its bytes are not one (a corrupt record).
    pub fn decode(&self) -> Result<AlertRecord, String> {
        postcard::from_bytes(&self.0).map_err(|e| format!("a stored alert does not decode: {e}"))
    }
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
    /// Queue a batch nobody waits for: writes that, lost in a crash, are redone (an outbox
    /// removal, a notification-log entry). In submission order with the others; it may wait a
    /// few milliseconds to share a commit.
    fn submit_background(&self, ops: Vec<Op>) {
        drop(self.submit(ops));
    }
    /// Read everything (at start).
    fn load(&self) -> Result<Snapshot, StoreError>;
}

const ALERTS: RecordTable = redb::TableDefinition::new("alerts");
const SILENCES: RecordTable = redb::TableDefinition::new("silences");
const NOTIFY_LOG: RecordTable = redb::TableDefinition::new("notify_log");
const OUTBOX: RecordTable = redb::TableDefinition::new("outbox");
const ACKS: RecordTable = redb::TableDefinition::new("acks");
const META: RecordTable = redb::TableDefinition::new("meta");
const ESCALATIONS: RecordTable = redb::TableDefinition::new("escalations");
const JOURNAL: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("journal");

/// Most batches folded into one journal commit; bounds commit latency under a flood.
const MAX_BATCHES_PER_COMMIT: usize = 1024;
/// How long background batches may wait for company before they are committed.
const BACKGROUND_WINDOW: std::time::Duration = std::time::Duration::from_millis(5);
/// When the writer folds the journal into the tables.
#[derive(Clone, Copy, Debug)]
pub struct Checkpoints {
    /// Once this many distinct records wait in the journal. Bounds the replay at start and the
    /// writer's memory (~10 MB by default, twice that while a checkpoint runs: past twice this
    /// many, appends wait for the running checkpoint). Each checkpoint rewrites the table pages
    /// its records land on, so larger checkpoints cost less per record: 5,000 → 20,000 took
    /// the third ingest run from 44K to 66K alerts/s (docs/BENCHMARKS.md).
    pub records: usize,
    /// After this long without new batches, if anything waits.
    pub idle: std::time::Duration,
}

impl Default for Checkpoints {
    fn default() -> Self {
        Checkpoints { records: 20_000, idle: std::time::Duration::from_millis(500) }
    }
}
/// redb's page cache. Its default (1 GiB) would dominate Belfry's memory; the working set is
/// the journal's tail and the pages a checkpoint touches, and a miss reads from the OS's page
/// cache. 32 → 2 MiB cost no measurable ingest throughput and 8 MiB of RSS (docs/BENCHMARKS.md).
const CACHE_BYTES: usize = 2 << 20;
/// The journal's: appends touch its last pages only.
const JOURNAL_CACHE_BYTES: usize = 512 << 10;

/// Which table a journal entry belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
enum Table {
    Alerts,
    Silences,
    NotifyLog,
    Outbox,
    // New tables go last: the journal encodes a table by its position.
    Acks,
    Meta,
    Escalations,
}

type RecordTable = redb::TableDefinition<'static, &'static [u8], &'static [u8]>;

impl Table {
    const ALL: [(Table, RecordTable); 7] = [
        (Table::Alerts, ALERTS),
        (Table::Silences, SILENCES),
        (Table::NotifyLog, NOTIFY_LOG),
        (Table::Outbox, OUTBOX),
        (Table::Acks, ACKS),
        (Table::Meta, META),
        (Table::Escalations, ESCALATIONS),
    ];
}

/// One encoded write: the record's key and its new value, or `None` to delete it.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    table: Table,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

fn encode(op: &Op) -> Result<Entry, String> {
    let value = |v: Result<Vec<u8>, postcard::Error>| v.map(Some).map_err(|e| e.to_string());
    Ok(match op {
        Op::PutAlert { tenant, alert } => Entry {
            table: Table::Alerts,
            key: key(tenant, &alert.fingerprint().0.to_be_bytes()),
            value: value(postcard::to_stdvec(alert))?,
        },
        Op::DeleteAlert { tenant, fingerprint } => {
            Entry { table: Table::Alerts, key: key(tenant, &fingerprint.0.to_be_bytes()), value: None }
        }
        Op::PutSilence { tenant, silence } => {
            Entry { table: Table::Silences, key: key(tenant, silence.id.as_bytes()), value: value(postcard::to_stdvec(silence))? }
        }
        Op::DeleteSilence { tenant, id } => Entry { table: Table::Silences, key: key(tenant, id.as_bytes()), value: None },
        Op::PutNotifyLog { tenant, group, entry } => {
            Entry { table: Table::NotifyLog, key: key(tenant, group.as_bytes()), value: value(postcard::to_stdvec(entry))? }
        }
        Op::DeleteNotifyLog { tenant, group } => Entry { table: Table::NotifyLog, key: key(tenant, group.as_bytes()), value: None },
        Op::PutOutbox { tenant, id, entry } => {
            Entry { table: Table::Outbox, key: key(tenant, id.as_bytes()), value: value(postcard::to_stdvec(entry))? }
        }
        Op::DeleteOutbox { tenant, id } => Entry { table: Table::Outbox, key: key(tenant, id.as_bytes()), value: None },
        Op::PutAck { tenant, group, ack } => {
            Entry { table: Table::Acks, key: key(tenant, group.as_bytes()), value: value(postcard::to_stdvec(ack))? }
        }
        Op::DeleteAck { tenant, group } => Entry { table: Table::Acks, key: key(tenant, group.as_bytes()), value: None },
        // Host-wide: no tenant (the empty name, which no tenant has).
        Op::PutMeta { name, value } => Entry { table: Table::Meta, key: key("", name.as_bytes()), value: Some(value.clone()) },
        Op::PutEscalation { tenant, group, escalation } => {
            Entry { table: Table::Escalations, key: key(tenant, group.as_bytes()), value: value(postcard::to_stdvec(escalation))? }
        }
        Op::DeleteEscalation { tenant, group } => Entry { table: Table::Escalations, key: key(tenant, group.as_bytes()), value: None },
    })
}

/// A batch on its way to the writer: its entries, their journal encoding, and who to tell.
struct Queued {
    entries: Vec<Entry>,
    encoded: Vec<u8>,
    /// `None` for a background batch: nobody waits for it.
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

/// The embedded store: the record tables' redb file, the journal's, and the threads that
/// write them. Dropping it checkpoints and waits for the writer to finish.
pub struct RedbStore {
    tables: Arc<redb::Database>,
    journal: Arc<redb::Database>,
    /// Held by a checkpoint from its first table write to the deletion of what it folded, and
    /// by `load`: between the two, a record may be in both files, and a reader that saw the
    /// tables before and the journal after (or the reverse) would miss it or see it stale.
    folding: Arc<Mutex<()>>,
    path: PathBuf,
    writer: Option<mpsc::Sender<Queued>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        drop(self.writer.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Where the journal of the store at `path` lives: beside it, with `.journal` appended.
pub fn journal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

impl RedbStore {
    /// Open (or create) the store at `path`, creating its directory.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        Self::open_with(path, Checkpoints::default(), StoreTimings::default())
    }

    /// [`RedbStore::open`] with explicit checkpoint thresholds, observing how long commits and
    /// checkpoints take into `timings` (the daemon's are exported on `/metrics`).
    pub fn open_with(path: &Path, checkpoints: Checkpoints, timings: StoreTimings) -> Result<RedbStore, StoreError> {
        let fail = |message: String| StoreError { path: path.display().to_string(), message };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create its directory: {e}")))?;
        }
        let open = |path: &Path, cache: usize| {
            redb::Database::builder().set_cache_size(cache).create(path).map_err(|e| fail(format!("cannot open {}: {e}", path.display())))
        };
        let (tables, journal) = (open(path, CACHE_BYTES)?, open(&journal_path(path), JOURNAL_CACHE_BYTES)?);
        // Create the tables so a fresh store loads as empty.
        let create = || -> Result<(), String> {
            let txn = tables.begin_write().map_err(|e| e.to_string())?;
            for (_, def) in Table::ALL {
                txn.open_table(def).map_err(|e| e.to_string())?;
            }
            txn.commit().map_err(|e| e.to_string())?;
            let txn = journal.begin_write().map_err(|e| e.to_string())?;
            txn.open_table(JOURNAL).map_err(|e| e.to_string())?;
            txn.commit().map_err(|e| e.to_string())
        };
        create().map_err(fail)?;
        // What a crash left in the journal goes into the tables before anything new is written:
        // the writer's checkpoints only fold what it journaled itself.
        fold_legacy_journal(&tables)
            .map_err(|e| fail(format!("cannot fold the journal kept in the store file by an older version: {e}")))?;
        journal_records(&journal)
            .and_then(|records| checkpoint(&tables, &journal, &records, u64::MAX))
            .map_err(|e| fail(format!("cannot fold the journal a previous run left: {e}")))?;
        let (tables, journal, folding) = (Arc::new(tables), Arc::new(journal), Arc::new(Mutex::new(())));
        let (writer, queue) = mpsc::channel();
        let checkpointer =
            Checkpointer::start(tables.clone(), journal.clone(), folding.clone(), path.display().to_string(), timings.checkpoints)
                .map_err(|e| fail(format!("cannot start the checkpoint thread: {e}")))?;
        let (journal2, shown, commits) = (journal.clone(), path.display().to_string(), timings.commits);
        let thread = std::thread::Builder::new()
            .name("belfry-store".into())
            .spawn(move || Writer::new(&journal2, shown, checkpoints, checkpointer, commits).run(queue))
            .map_err(|e| fail(format!("cannot start the writer thread: {e}")))?;
        Ok(RedbStore { tables, journal, folding, path: path.to_path_buf(), writer: Some(writer), thread: Some(thread) })
    }

    fn error(&self, message: String) -> StoreError {
        StoreError { path: self.path.display().to_string(), message }
    }

    /// Encode `ops` on the caller's thread, so the single writer only appends bytes, and hand
    /// them to the writer; `done` hears the outcome.
    fn queue(&self, ops: Vec<Op>, done: Option<oneshot::Sender<Result<(), StoreError>>>) {
        let fail = |done: Option<oneshot::Sender<_>>, message: String| match done {
            Some(done) => drop(done.send(Err(self.error(message)))),
            None => tracing::error!(error = %self.error(message), "a background store write was lost"),
        };
        let entries = match ops.iter().map(encode).collect::<Result<Vec<_>, _>>() {
            Ok(entries) => entries,
            Err(e) => return fail(done, format!("cannot encode a record: {e}")),
        };
        let encoded = postcard::to_stdvec(&entries).expect("encoding byte vectors cannot fail");
        let queued = Queued { entries, encoded, done };
        let sent = match &self.writer {
            Some(writer) => writer.send(queued).map_err(|mpsc::SendError(q)| q),
            None => Err(queued),
        };
        if let Err(queued) = sent {
            fail(queued.done, "the writer thread stopped".into());
        }
    }
}

impl Store for RedbStore {
    fn submit(&self, ops: Vec<Op>) -> Commit {
        let (done, commit) = oneshot::channel();
        self.queue(ops, Some(done));
        commit
    }

    fn submit_background(&self, ops: Vec<Op>) {
        self.queue(ops, None);
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        use redb::{ReadableDatabase, ReadableTable};
        let fail = |e: &dyn std::fmt::Display| self.error(e.to_string());
        let _no_checkpoint = self.folding.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let txn = self.tables.begin_read().map_err(|e| fail(&e))?;
        // The journal (a few thousand records at most since the last checkpoint) overrides the
        // tables, in order: the latest write of each key wins. Reading it first lets the tables
        // stream straight into the snapshot, instead of every record being copied into a map
        // first (that doubled the memory of a start, and fragmented it: docs/BENCHMARKS.md).
        // Appends that land after this read are newer than anything in the tables, which no
        // checkpoint can change while the lock is held.
        let journal = journal_records(&self.journal).map_err(|e| fail(&e))?;
        let mut snapshot = Snapshot::default();
        let mut probe = (Table::Alerts, Vec::new());
        for (table, def) in Table::ALL {
            for entry in txn.open_table(def).map_err(|e| fail(&e))?.iter().map_err(|e| fail(&e))? {
                let (k, v) = entry.map_err(|e| fail(&e))?;
                probe.0 = table;
                probe.1.clear();
                probe.1.extend_from_slice(k.value());
                if !journal.contains_key(&probe) {
                    self.add(&mut snapshot, table, k.value(), v.value().to_vec())?;
                }
            }
        }
        for ((table, k), v) in journal {
            if let Some(v) = v {
                self.add(&mut snapshot, table, &k, v)?;
            }
        }
        Ok(snapshot)
    }
}

impl RedbStore {
    /// Decode one stored record into the snapshot.
    fn add(&self, snapshot: &mut Snapshot, table: Table, k: &[u8], v: Vec<u8>) -> Result<(), StoreError> {
        let fail = |e: &dyn std::fmt::Display| self.error(e.to_string());
        let (tenant, id) = split_key(k).ok_or_else(|| self.error("a malformed key".into()))?;
        match table {
            Table::Alerts => snapshot.alerts.push((tenant, EncodedAlert(v))),
            Table::Silences => snapshot.silences.push((tenant, postcard::from_bytes(&v).map_err(|e| fail(&e))?)),
            Table::NotifyLog => {
                let group = String::from_utf8_lossy(id).into_owned();
                snapshot.notify_log.push((tenant, group, postcard::from_bytes(&v).map_err(|e| fail(&e))?));
            }
            Table::Outbox => {
                let id = String::from_utf8_lossy(id).into_owned();
                match postcard::from_bytes(&v) {
                    Ok(entry) => snapshot.outbox.push((tenant, id, entry)),
                    // One undecodable notification (say, from an incompatible version) must not stop the start.
                    Err(e) => tracing::error!(tenant = %tenant, id = %id, error = %e, "skipping an undecodable outbox entry"),
                }
            }
            Table::Acks => {
                let group = String::from_utf8_lossy(id).into_owned();
                snapshot.acks.push((tenant, group, postcard::from_bytes(&v).map_err(|e| fail(&e))?));
            }
            Table::Meta => snapshot.meta.push((String::from_utf8_lossy(id).into_owned(), v)),
            Table::Escalations => {
                let group = String::from_utf8_lossy(id).into_owned();
                snapshot.escalations.push((tenant, group, postcard::from_bytes(&v).map_err(|e| fail(&e))?));
            }
        }
        Ok(())
    }
}

/// The latest write of each key, by table, as journal entries record them.
type Records = HashMap<(Table, Vec<u8>), Option<Vec<u8>>>;

/// The journal's entries, oldest first, folded into the latest write of each key.
fn journal_records(journal: &redb::Database) -> Result<Records, String> {
    use redb::ReadableDatabase;
    let txn = journal.begin_read().map_err(|e| e.to_string())?;
    records_of(&txn.open_table(JOURNAL).map_err(|e| e.to_string())?)
}

fn records_of(journal: &impl redb::ReadableTable<u64, &'static [u8]>) -> Result<Records, String> {
    let mut records = Records::default();
    for entry in journal.iter().map_err(|e| e.to_string())? {
        let (_, v) = entry.map_err(|e| e.to_string())?;
        let entries: Vec<Entry> = postcard::from_bytes(v.value()).map_err(|e| e.to_string())?;
        for e in entries {
            records.insert((e.table, e.key), e.value);
        }
    }
    Ok(records)
}

/// Put (or, for `None`, remove) each record in its table.
fn write_records(txn: &redb::WriteTransaction, records: &Records) -> Result<(), String> {
    let mut tables = Vec::with_capacity(Table::ALL.len());
    for (table, def) in Table::ALL {
        tables.push((table, txn.open_table(def).map_err(|e| e.to_string())?));
    }
    // Sorted keys: neighbouring records share pages, so each page is copied once.
    let mut keys: Vec<&(Table, Vec<u8>)> = records.keys().collect();
    keys.sort();
    for k in keys {
        let (_, table) = tables.iter_mut().find(|(t, _)| *t == k.0).expect("every table is open");
        match &records[k] {
            Some(v) => table.insert(k.1.as_slice(), v.as_slice()).map(|_| ()),
            None => table.remove(k.1.as_slice()).map(|_| ()),
        }
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Write `records` (the journal's entries before sequence number `through`, folded) into the
/// tables, then delete those entries. A crash between the two commits leaves entries that are
/// in both files: the next fold writes them again, and the newer entries after them still win.
fn checkpoint(tables: &redb::Database, journal: &redb::Database, records: &Records, through: u64) -> Result<(), String> {
    if records.is_empty() {
        return Ok(());
    }
    let txn = tables.begin_write().map_err(|e| e.to_string())?;
    write_records(&txn, records)?;
    txn.commit().map_err(|e| e.to_string())?;
    let mut txn = journal.begin_write().map_err(|e| e.to_string())?;
    // The deletion need not be durable on its own: the next append's commit makes it so, and
    // until then a crash only brings back entries the tables already hold.
    txn.set_durability(redb::Durability::None).map_err(|e| e.to_string())?;
    txn.open_table(JOURNAL).map_err(|e| e.to_string())?.retain_in(..through, |_, _| false).map_err(|e| e.to_string())?;
    txn.commit().map_err(|e| e.to_string())
}

/// Versions before the journal had its own file kept it in the store file: fold it into the
/// tables and drop it.
fn fold_legacy_journal(tables: &redb::Database) -> Result<(), String> {
    use redb::TableHandle;
    let txn = tables.begin_write().map_err(|e| e.to_string())?;
    if !txn.list_tables().map_err(|e| e.to_string())?.any(|t| t.name() == JOURNAL.name()) {
        return Ok(());
    }
    let records = records_of(&txn.open_table(JOURNAL).map_err(|e| e.to_string())?)?;
    write_records(&txn, &records)?;
    txn.delete_table(JOURNAL).map_err(|e| e.to_string())?;
    txn.commit().map_err(|e| e.to_string())
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

/// The writer thread: journal appends with group commit; it hands checkpoints to the
/// [`Checkpointer`].
struct Writer<'a> {
    journal: &'a redb::Database,
    path: String,
    /// Next journal sequence number.
    next_seq: u64,
    /// Journal entries not yet handed to a checkpoint, latest value per key.
    pending: Records,
    checkpoints: Checkpoints,
    checkpointer: Checkpointer,
    /// How long each journal commit takes.
    commits: Histogram,
}

impl<'a> Writer<'a> {
    fn new(journal: &'a redb::Database, path: String, checkpoints: Checkpoints, checkpointer: Checkpointer, commits: Histogram) -> Self {
        use redb::ReadableTable;
        // Continue after whatever the journal still holds (usually nothing: open folded and
        // emptied it), so a new entry never overwrites one a previous run left.
        let next_seq = journal
            .begin_write()
            .ok()
            .and_then(|txn| {
                let last = txn.open_table(JOURNAL).ok()?.last().ok()??.0.value();
                Some(last + 1)
            })
            .unwrap_or(0);
        Writer { journal, path, next_seq, pending: HashMap::default(), checkpoints, checkpointer, commits }
    }

    fn run(mut self, queue: mpsc::Receiver<Queued>) {
        loop {
            let first = match queue.recv_timeout(self.checkpoints.idle) {
                Ok(q) => q,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.checkpoint_if(|pending| pending > 0);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.checkpointer.wait(&mut self.pending);
                    self.checkpoint_if(|pending| pending > 0);
                    self.checkpointer.wait(&mut self.pending);
                    return;
                }
            };
            let mut group = vec![first];
            take_queued(&queue, &mut group);
            gather_background(&queue, &mut group);
            let result = self.append(&group).map_err(|message| StoreError { path: self.path.clone(), message });
            if let Err(e) = &result {
                tracing::error!(error = %e, batches = group.len(), "store commit failed; the requests are answered with 500");
            }
            for q in group {
                if result.is_ok() {
                    for e in q.entries {
                        note(&mut self.pending, e);
                    }
                }
                if let Some(done) = q.done {
                    let _ = done.send(result.clone());
                }
            }
            let threshold = self.checkpoints.records;
            // A checkpoint slower than the appends must not let the journal grow without bound.
            if self.pending.len() >= threshold.saturating_mul(2) {
                self.checkpointer.wait(&mut self.pending);
            }
            self.checkpoint_if(|pending| pending >= threshold);
        }
    }

    fn append(&mut self, group: &[Queued]) -> Result<(), String> {
        let started = Instant::now();
        let txn = self.journal.begin_write().map_err(|e| e.to_string())?;
        let mut seq = self.next_seq;
        {
            let mut journal = txn.open_table(JOURNAL).map_err(|e| e.to_string())?;
            for q in group {
                journal.insert(seq, q.encoded.as_slice()).map_err(|e| e.to_string())?;
                seq += 1;
            }
        }
        txn.commit().map_err(|e| e.to_string())?;
        self.commits.observe(started.elapsed().as_secs_f64());
        self.next_seq = seq;
        Ok(())
    }

    /// Hand what is pending to a checkpoint when `due(pending records)` and none is running.
    fn checkpoint_if(&mut self, due: impl Fn(usize) -> bool) {
        self.checkpointer.poll(&mut self.pending);
        if self.checkpointer.running || !due(self.pending.len()) {
            return;
        }
        let records = std::mem::take(&mut self.pending);
        self.checkpointer.start_job(records, self.next_seq);
    }
}

/// When `group` holds only background batches (outbox removals, notification-log entries),
/// wait up to [`BACKGROUND_WINDOW`] for more before committing, and commit at once when a
/// batch someone waits for arrives. Each commit costs an `fdatasync` and a rewrite of the
/// journal's last pages whatever it holds: in the 20K burst, deliveries' writes alone made
/// 1,800 of 2,000 commits, and gathering them cut the daemon's CPU by 3–5 % (docs/BENCHMARKS.md).
fn gather_background(queue: &mpsc::Receiver<Queued>, group: &mut Vec<Queued>) {
    if group.iter().any(|q| q.done.is_some()) {
        return;
    }
    let deadline = std::time::Instant::now() + BACKGROUND_WINDOW;
    while group.len() < MAX_BATCHES_PER_COMMIT {
        let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else { return };
        let Ok(more) = queue.recv_timeout(left) else { return };
        let waited_for = more.done.is_some();
        group.push(more);
        if waited_for {
            take_queued(queue, group);
            return;
        }
    }
}

/// Add to `group` whatever is queued already, up to [`MAX_BATCHES_PER_COMMIT`].
fn take_queued(queue: &mpsc::Receiver<Queued>, group: &mut Vec<Queued>) {
    group.extend(queue.try_iter().take(MAX_BATCHES_PER_COMMIT.saturating_sub(group.len())));
}

/// Add a journaled write to what the next checkpoint folds.
fn note(pending: &mut Records, e: Entry) {
    let key = (e.table, e.key);
    // An outbox id is written once (a fresh UUID per notification): put and removed since the
    // last checkpoint, it never reached the table, so the checkpoint has nothing to do for it.
    // Most notifications are delivered within a checkpoint's window; this halves the records a
    // checkpoint folds per notified alert (~6 % of the daemon's CPU in the 20K burst).
    if key.0 == Table::Outbox && e.value.is_none() && matches!(pending.get(&key), Some(Some(_))) {
        pending.remove(&key);
        return;
    }
    pending.insert(key, e.value);
}

/// A checkpoint: the journal's entries before `through`, folded.
struct Job {
    records: Records,
    through: u64,
}

/// A failed checkpoint gives its records back: the journal still holds them, and a later
/// checkpoint must write them before it deletes their entries.
type Finished = Result<(), (Records, String)>;

/// The checkpoint thread, seen from the writer: one checkpoint at a time.
struct Checkpointer {
    jobs: Option<mpsc::Sender<Job>>,
    finished: mpsc::Receiver<Finished>,
    thread: Option<std::thread::JoinHandle<()>>,
    running: bool,
}

impl Checkpointer {
    fn start(
        tables: Arc<redb::Database>,
        journal: Arc<redb::Database>,
        folding: Arc<Mutex<()>>,
        path: String,
        durations: Histogram,
    ) -> std::io::Result<Checkpointer> {
        let (jobs, incoming) = mpsc::channel::<Job>();
        let (report, finished) = mpsc::channel();
        let thread = std::thread::Builder::new().name("belfry-checkpoint".into()).spawn(move || {
            for job in incoming {
                let _no_load = folding.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let started = Instant::now();
                let result = checkpoint(&tables, &journal, &job.records, job.through).map_err(|e| (job.records, format!("{path}: {e}")));
                durations.observe(started.elapsed().as_secs_f64());
                if report.send(result).is_err() {
                    return;
                }
            }
        })?;
        Ok(Checkpointer { jobs: Some(jobs), finished, thread: Some(thread), running: false })
    }

    fn start_job(&mut self, records: Records, through: u64) {
        if let Some(jobs) = &self.jobs {
            self.running = jobs.send(Job { records, through }).is_ok();
        }
    }

    /// Note a finished checkpoint, if any, without waiting.
    fn poll(&mut self, pending: &mut Records) {
        if let Ok(finished) = self.finished.try_recv() {
            self.finish(finished, pending);
        }
    }

    /// Wait for the running checkpoint, if any.
    fn wait(&mut self, pending: &mut Records) {
        if self.running {
            match self.finished.recv() {
                Ok(finished) => self.finish(finished, pending),
                Err(_) => self.running = false,
            }
        }
    }

    fn finish(&mut self, finished: Finished, pending: &mut Records) {
        self.running = false;
        if let Err((records, e)) = finished {
            // The journal still holds everything: nothing is lost, the next checkpoint retries.
            tracing::error!(error = %e, "store checkpoint failed; will retry");
            for (k, v) in records {
                pending.entry(k).or_insert(v);
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::AlertRecord;

    /// An alert whose annotation `v` tells its versions apart.
    fn record(name: &str, version: Option<&str>) -> AlertRecord {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z").unwrap().with_timezone(&chrono::Utc);
        AlertRecord {
            labels: [("alertname".to_string(), name.to_string())].into_iter().collect(),
            annotations: version.map(|v| ("v".to_string(), v.to_string())).into_iter().collect(),
            starts_at: t,
            ends_at: t + chrono::Duration::minutes(5),
            generator_url: String::new(),
            updated_at: t,
            timeout: true,
        }
    }

    async fn put(store: &RedbStore, ops: Vec<Op>) {
        store.submit(ops).await.expect("writer alive").expect("committed");
    }

    fn alert_names(snapshot: &Snapshot) -> Vec<(String, String, Option<String>)> {
        let mut out: Vec<_> = snapshot
            .alerts
            .iter()
            .map(|(t, e)| {
                let a = e.decode().unwrap();
                (t.clone(), a.labels["alertname"].clone(), a.annotations.get("v").cloned())
            })
            .collect();
        out.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
        out
    }

    #[tokio::test]
    async fn the_journal_is_replayed_before_any_checkpoint_and_latest_writes_win() {
        let dir = tempfile::tempdir().unwrap();
        let never = Checkpoints { records: usize::MAX, idle: std::time::Duration::from_secs(3600) };
        let store = RedbStore::open_with(&dir.path().join("s.redb"), never, StoreTimings::default()).unwrap();
        put(
            &store,
            vec![
                Op::PutAlert { tenant: "a".into(), alert: record("X", None) },
                Op::PutAlert { tenant: "b".into(), alert: record("X", None) },
            ],
        )
        .await;
        put(&store, vec![Op::PutAlert { tenant: "a".into(), alert: record("X", Some("2")) }]).await;
        put(&store, vec![Op::DeleteAlert { tenant: "b".into(), fingerprint: record("X", None).fingerprint() }]).await;
        // Nothing was checkpointed: everything comes from the journal.
        assert_eq!(alert_names(&store.load().unwrap()), [("a".to_string(), "X".to_string(), Some("2".to_string()))]);
    }

    #[tokio::test]
    async fn background_batches_commit_in_order_with_the_next_awaited_one_alone_or_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let never = Checkpoints { records: usize::MAX, idle: std::time::Duration::from_secs(3600) };
        let store = RedbStore::open_with(&path, never, StoreTimings::default()).unwrap();
        let put_x = |v: &str| Op::PutAlert { tenant: "a".into(), alert: record("X", Some(v)) };
        // Queued before an awaited batch: durable when that one is, and the later write wins.
        store.submit_background(vec![put_x("1"), Op::PutAlert { tenant: "a".into(), alert: record("Y", None) }]);
        put(&store, vec![put_x("2")]).await;
        let names = alert_names(&store.load().unwrap());
        assert_eq!(names, [("a".into(), "X".into(), Some("2".into())), ("a".into(), "Y".into(), None)]);
        // Alone: committed within its window, with no awaited batch to take it along.
        store.submit_background(vec![Op::PutAlert { tenant: "a".into(), alert: record("Z", None) }]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while alert_names(&store.load().unwrap()).len() < 3 {
            assert!(std::time::Instant::now() < deadline, "a background batch alone was never committed");
            tokio::task::yield_now().await;
        }
        // Queued right before the store closes: written by the writer on its way out.
        store.submit_background(vec![Op::DeleteAlert { tenant: "a".into(), fingerprint: record("Y", None).fingerprint() }]);
        drop(store);
        let names = alert_names(&RedbStore::open_with(&path, never, StoreTimings::default()).unwrap().load().unwrap());
        assert_eq!(names, [("a".into(), "X".into(), Some("2".into())), ("a".into(), "Z".into(), None)]);
    }

    #[tokio::test]
    async fn what_a_crash_left_in_the_journal_survives_the_next_run_s_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        // A run that crashed: its write is in the journal only.
        {
            let db = redb::Database::create(journal_path(&path)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let entry = encode(&Op::PutAlert { tenant: "a".into(), alert: record("Crashed", None) }).unwrap();
                let mut journal = txn.open_table(JOURNAL).unwrap();
                journal.insert(7, postcard::to_stdvec(&vec![entry]).unwrap().as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        // The next run checkpoints after every write, then crashes in turn (its store is dropped
        // after the checkpoint), and a third run must still find the first run's alert.
        {
            let every = Checkpoints { records: 1, idle: std::time::Duration::from_secs(3600) };
            let store = RedbStore::open_with(&path, every, StoreTimings::default()).unwrap();
            put(&store, vec![Op::PutAlert { tenant: "a".into(), alert: record("Later", None) }]).await;
        }
        let names: Vec<String> = alert_names(&RedbStore::open(&path).unwrap().load().unwrap()).into_iter().map(|(_, n, _)| n).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.contains(&"Crashed".to_string()) && names.contains(&"Later".to_string()), "{names:?}");
    }

    #[tokio::test]
    async fn notify_log_entries_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s.redb")).unwrap();
        let entry = NotifyEntry { firing: vec![1, 2], resolved: vec![3], at: record("X", None).starts_at };
        put(&store, vec![Op::PutNotifyLog { tenant: "a".into(), group: "r/alertname:{}".into(), entry: entry.clone() }]).await;
        put(&store, vec![Op::PutNotifyLog { tenant: "a".into(), group: "gone".into(), entry: entry.clone() }]).await;
        put(&store, vec![Op::DeleteNotifyLog { tenant: "a".into(), group: "gone".into() }]).await;
        assert_eq!(store.load().unwrap().notify_log, [("a".to_string(), "r/alertname:{}".to_string(), entry)]);
    }

    #[tokio::test]
    async fn acks_and_meta_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let ack = Ack { by: "alice".into(), comment: "on it".into(), at: record("X", None).starts_at, covers: vec![1, 2] };
        {
            let store = RedbStore::open(&path).unwrap();
            put(&store, vec![Op::PutAck { tenant: "a".into(), group: "g1".into(), ack: ack.clone() }]).await;
            put(&store, vec![Op::PutAck { tenant: "a".into(), group: "g2".into(), ack: ack.clone() }]).await;
            put(&store, vec![Op::DeleteAck { tenant: "a".into(), group: "g2".into() }]).await;
            put(&store, vec![Op::PutMeta { name: "ack_link_key".into(), value: vec![9; 32] }]).await;
        }
        let snapshot = RedbStore::open(&path).unwrap().load().unwrap();
        assert_eq!(snapshot.acks, [("a".to_string(), "g1".to_string(), ack)]);
        assert_eq!(snapshot.meta, [("ack_link_key".to_string(), vec![9; 32])]);
    }

    #[tokio::test]
    async fn commits_and_checkpoints_are_timed() {
        let dir = tempfile::tempdir().unwrap();
        let every = Checkpoints { records: 1, idle: std::time::Duration::from_secs(3600) };
        let timings = StoreTimings::default();
        {
            let store = RedbStore::open_with(&dir.path().join("s.redb"), every, timings.clone()).unwrap();
            put(&store, vec![Op::PutAlert { tenant: "a".into(), alert: record("X", None) }]).await;
            put(&store, vec![Op::PutAlert { tenant: "a".into(), alert: record("Y", None) }]).await;
            assert_eq!(timings.commits.count(), 2, "each awaited batch is its own commit");
        }
        // Closing waits for the last checkpoint.
        assert!(timings.checkpoints.count() >= 1, "a checkpoint ran once a record waited");
        assert!(timings.commits.sum() > 0.0 && timings.checkpoints.sum() > 0.0);
    }

    #[tokio::test]
    async fn a_checkpoint_folds_the_journal_and_the_tables_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let every = Checkpoints { records: 1, idle: std::time::Duration::from_secs(3600) };
        {
            let store = RedbStore::open_with(&path, every, StoreTimings::default()).unwrap();
            put(&store, vec![Op::PutAlert { tenant: "a".into(), alert: record("X", None) }]).await;
            put(&store, vec![Op::PutAlert { tenant: "a".into(), alert: record("Y", None) }]).await;
            put(&store, vec![Op::DeleteAlert { tenant: "a".into(), fingerprint: record("X", None).fingerprint() }]).await;
        }
        let store = RedbStore::open(&path).unwrap();
        use redb::{ReadableDatabase, ReadableTableMetadata};
        assert_eq!(store.journal.begin_read().unwrap().open_table(JOURNAL).unwrap().len().unwrap(), 0, "everything was folded");
        assert_eq!(store.tables.begin_read().unwrap().open_table(ALERTS).unwrap().len().unwrap(), 1);
        assert_eq!(alert_names(&store.load().unwrap()), [("a".to_string(), "Y".to_string(), None)]);
        // Appends continue after a reopen, and win over the checkpointed table.
        put(&store, vec![Op::PutAlert { tenant: "a".into(), alert: record("Y", Some("3")) }]).await;
        assert_eq!(alert_names(&store.load().unwrap()), [("a".to_string(), "Y".to_string(), Some("3".to_string()))]);
    }

    #[tokio::test]
    async fn a_journal_an_older_version_kept_in_the_store_file_is_folded_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let entry = encode(&Op::PutAlert { tenant: "a".into(), alert: record("Old", None) }).unwrap();
                txn.open_table(JOURNAL).unwrap().insert(0, postcard::to_stdvec(&vec![entry]).unwrap().as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(alert_names(&store.load().unwrap()), [("a".to_string(), "Old".to_string(), None)]);
        use redb::{ReadableDatabase, TableHandle};
        let txn = store.tables.begin_read().unwrap();
        assert!(!txn.list_tables().unwrap().any(|t| t.name() == "journal"), "the old journal table is gone");
    }

    /// Checkpoints run on their own thread while batches commit and snapshots load; a load must
    /// never miss an acknowledged record (tables read before a checkpoint, journal after it) nor
    /// return an older version of one.
    #[test]
    fn loads_during_checkpoints_see_every_acknowledged_write() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let every = Checkpoints { records: 1, idle: std::time::Duration::from_secs(3600) };
        let store = Arc::new(RedbStore::open_with(&dir.path().join("s.redb"), every, StoreTimings::default()).unwrap());
        let acknowledged = Arc::new(AtomicU64::new(0));
        let writes = {
            let (store, acknowledged) = (store.clone(), acknowledged.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                for i in 1..=300u64 {
                    let ops = vec![
                        Op::PutAlert { tenant: "a".into(), alert: record("Counter", Some(&i.to_string())) },
                        Op::PutAlert { tenant: "a".into(), alert: record(&format!("A{i}"), None) },
                    ];
                    rt.block_on(store.submit(ops)).unwrap().unwrap();
                    acknowledged.store(i, Ordering::SeqCst);
                }
            })
        };
        let mut loads = 0;
        while !writes.is_finished() || loads == 0 {
            let before = acknowledged.load(Ordering::SeqCst);
            let snapshot = store.load().unwrap();
            let names = alert_names(&snapshot);
            let counter =
                names.iter().find(|(_, n, _)| n == "Counter").and_then(|(_, _, v)| v.as_deref()).map_or(0, |v| v.parse::<u64>().unwrap());
            assert!(counter >= before, "load {loads} returned version {counter} after {before} was acknowledged");
            let distinct = names.iter().filter(|(_, n, _)| n.starts_with('A')).count() as u64;
            assert!(distinct >= before, "load {loads} has {distinct} distinct alerts after {before} batches were acknowledged");
            loads += 1;
        }
        writes.join().unwrap();
        assert_eq!(alert_names(&store.load().unwrap()).len(), 301);
    }

    #[test]
    fn an_outbox_entry_put_and_removed_between_checkpoints_leaves_the_checkpoint_nothing() {
        let entry = |table, key: &str, value: Option<&str>| Entry {
            table,
            key: key.as_bytes().to_vec(),
            value: value.map(|v| v.as_bytes().to_vec()),
        };
        let mut pending = Records::default();
        note(&mut pending, entry(Table::Outbox, "fresh", Some("n")));
        note(&mut pending, entry(Table::Outbox, "fresh", None));
        assert!(pending.is_empty(), "never reached the table: nothing to remove from it");
        // Put before the last checkpoint (not pending any more): the table has it, remove it.
        note(&mut pending, entry(Table::Outbox, "older", None));
        // Other tables keep their removals: their keys are written more than once.
        note(&mut pending, entry(Table::Alerts, "a", Some("v")));
        note(&mut pending, entry(Table::Alerts, "a", None));
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[&(Table::Outbox, b"older".to_vec())], None);
        assert_eq!(pending[&(Table::Alerts, b"a".to_vec())], None);
    }
}
