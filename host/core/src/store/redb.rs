//! The embedded backend: redb record tables, a journal in a file of its own, the writer thread's group commit, and the load that replays the journal over the tables.

use foldhash::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::oneshot;

use super::checkpoint::{Checkpointer, Checkpoints, checkpoint};
use super::interface::{Commit, Op, Record, Snapshot, Store, StoreError, Table, split_key};
use super::tables::{JOURNAL, Records, definition, fold_legacy_journal, journal_records};
use crate::metrics::StoreTimings;

/// Most batches folded into one journal commit; bounds commit latency under a flood.
const MAX_BATCHES_PER_COMMIT: usize = 1024;
/// How long background batches may wait for company before they are committed.
const BACKGROUND_WINDOW: std::time::Duration = std::time::Duration::from_millis(5);
/// redb's page cache. Its default (1 GiB) would dominate Belfry's memory; the working set is
/// the journal's tail and the pages a checkpoint touches, and a miss reads from the OS's page
/// cache. 32 → 2 MiB cost no measurable ingest throughput and 8 MiB of RSS (docs/BENCHMARKS.md).
const CACHE_BYTES: usize = 2 << 20;
/// The journal's: appends touch its last pages only.
const JOURNAL_CACHE_BYTES: usize = 512 << 10;

/// A batch on its way to the writer: its entries, their journal encoding, and who to tell.
struct Queued {
    entries: Vec<Op>,
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
            for table in Table::ALL {
                txn.open_table(definition(table)).map_err(|e| e.to_string())?;
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
        // The records were encoded by `Op::put`; the batch is one journal value.
        let encoded = postcard::to_stdvec(&ops).expect("encoding byte vectors cannot fail");
        let queued = Queued { entries: ops, encoded, done };
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
        for table in Table::ALL {
            for entry in txn.open_table(definition(table)).map_err(|e| fail(&e))?.iter().map_err(|e| fail(&e))? {
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
    /// Add one stored record to the snapshot, as stored.
    fn add(&self, snapshot: &mut Snapshot, table: Table, k: &[u8], v: Vec<u8>) -> Result<(), StoreError> {
        let (tenant, id) = split_key(k).ok_or_else(|| self.error("a malformed key".into()))?;
        snapshot.push(table, Record { tenant, id: id.into(), value: v });
        Ok(())
    }
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
fn note(pending: &mut Records, e: Op) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An alert-like record: the name is its id, the version tells its writes apart.
    fn put_x(tenant: &str, name: &str, version: Option<&str>) -> Op {
        Op::put(Table::Alerts, tenant, name.as_bytes(), &version.map(str::to_string))
    }

    fn delete_x(tenant: &str, name: &str) -> Op {
        Op::delete(Table::Alerts, tenant, name.as_bytes())
    }

    async fn put(store: &RedbStore, ops: Vec<Op>) {
        store.submit(ops).await.expect("writer alive").expect("committed");
    }

    /// (tenant, name, version) of every stored alert-like record, sorted.
    fn alert_names(snapshot: &Snapshot) -> Vec<(String, String, Option<String>)> {
        let mut out: Vec<_> = snapshot
            .records(Table::Alerts)
            .iter()
            .map(|r| (r.tenant.clone(), r.id_text(), super::super::interface::decode::<Option<String>>(&r.value).unwrap()))
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn the_journal_is_replayed_before_any_checkpoint_and_latest_writes_win() {
        let dir = tempfile::tempdir().unwrap();
        let never = Checkpoints { records: usize::MAX, idle: std::time::Duration::from_secs(3600) };
        let store = RedbStore::open_with(&dir.path().join("s.redb"), never, StoreTimings::default()).unwrap();
        put(&store, vec![put_x("a", "X", None), put_x("b", "X", None)]).await;
        put(&store, vec![put_x("a", "X", Some("2"))]).await;
        put(&store, vec![delete_x("b", "X")]).await;
        // Nothing was checkpointed: everything comes from the journal.
        assert_eq!(alert_names(&store.load().unwrap()), [("a".to_string(), "X".to_string(), Some("2".to_string()))]);
    }

    #[tokio::test]
    async fn background_batches_commit_in_order_with_the_next_awaited_one_alone_or_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let never = Checkpoints { records: usize::MAX, idle: std::time::Duration::from_secs(3600) };
        let store = RedbStore::open_with(&path, never, StoreTimings::default()).unwrap();
        // Queued before an awaited batch: durable when that one is, and the later write wins.
        store.submit_background(vec![put_x("a", "X", Some("1")), put_x("a", "Y", None)]);
        put(&store, vec![put_x("a", "X", Some("2"))]).await;
        let names = alert_names(&store.load().unwrap());
        assert_eq!(names, [("a".into(), "X".into(), Some("2".into())), ("a".into(), "Y".into(), None)]);
        // Alone: committed within its window, with no awaited batch to take it along.
        store.submit_background(vec![put_x("a", "Z", None)]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while alert_names(&store.load().unwrap()).len() < 3 {
            assert!(std::time::Instant::now() < deadline, "a background batch alone was never committed");
            tokio::task::yield_now().await;
        }
        // Queued right before the store closes: written by the writer on its way out.
        store.submit_background(vec![delete_x("a", "Y")]);
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
                let mut journal = txn.open_table(JOURNAL).unwrap();
                journal.insert(7, postcard::to_stdvec(&vec![put_x("a", "Crashed", None)]).unwrap().as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        // The next run checkpoints after every write, then crashes in turn (its store is dropped
        // after the checkpoint), and a third run must still find the first run's record.
        {
            let every = Checkpoints { records: 1, idle: std::time::Duration::from_secs(3600) };
            let store = RedbStore::open_with(&path, every, StoreTimings::default()).unwrap();
            put(&store, vec![put_x("a", "Later", None)]).await;
        }
        let names: Vec<String> = alert_names(&RedbStore::open(&path).unwrap().load().unwrap()).into_iter().map(|(_, n, _)| n).collect();
        assert_eq!(names, ["Crashed", "Later"]);
    }

    #[tokio::test]
    async fn every_table_and_host_wide_values_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            for table in Table::ALL.into_iter().filter(|t| *t != Table::Meta) {
                put(&store, vec![Op::put(table, "a", b"g1", &table.name()), Op::put(table, "a", b"g2", &"gone")]).await;
                put(&store, vec![Op::delete(table, "a", b"g2")]).await;
            }
            put(&store, vec![Op::put_meta("ack_link_key", vec![9; 32])]).await;
        }
        let snapshot = RedbStore::open(&path).unwrap().load().unwrap();
        for table in Table::ALL.into_iter().filter(|t| *t != Table::Meta) {
            let records = snapshot.records(table);
            assert_eq!(records.len(), 1, "{table:?}");
            assert_eq!((records[0].tenant.as_str(), records[0].id_text()), ("a", "g1".to_string()));
            assert_eq!(super::super::interface::decode::<String>(&records[0].value).unwrap(), table.name());
        }
        let meta = snapshot.records(Table::Meta);
        assert_eq!((meta[0].tenant.as_str(), meta[0].id_text(), meta[0].value.clone()), ("", "ack_link_key".to_string(), vec![9; 32]));
    }

    #[tokio::test]
    async fn commits_and_checkpoints_are_timed() {
        let dir = tempfile::tempdir().unwrap();
        let every = Checkpoints { records: 1, idle: std::time::Duration::from_secs(3600) };
        let timings = StoreTimings::default();
        {
            let store = RedbStore::open_with(&dir.path().join("s.redb"), every, timings.clone()).unwrap();
            put(&store, vec![put_x("a", "X", None)]).await;
            put(&store, vec![put_x("a", "Y", None)]).await;
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
            put(&store, vec![put_x("a", "X", None)]).await;
            put(&store, vec![put_x("a", "Y", None)]).await;
            put(&store, vec![delete_x("a", "X")]).await;
        }
        let store = RedbStore::open(&path).unwrap();
        use redb::{ReadableDatabase, ReadableTableMetadata};
        assert_eq!(store.journal.begin_read().unwrap().open_table(JOURNAL).unwrap().len().unwrap(), 0, "everything was folded");
        assert_eq!(store.tables.begin_read().unwrap().open_table(definition(Table::Alerts)).unwrap().len().unwrap(), 1);
        assert_eq!(alert_names(&store.load().unwrap()), [("a".to_string(), "Y".to_string(), None)]);
        // Appends continue after a reopen, and win over the checkpointed table.
        put(&store, vec![put_x("a", "Y", Some("3"))]).await;
        assert_eq!(alert_names(&store.load().unwrap()), [("a".to_string(), "Y".to_string(), Some("3".to_string()))]);
    }

    #[tokio::test]
    async fn a_journal_an_older_version_kept_in_the_store_file_is_folded_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(JOURNAL).unwrap().insert(0, postcard::to_stdvec(&vec![put_x("a", "Old", None)]).unwrap().as_slice()).unwrap();
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
                    let ops = vec![put_x("a", "Counter", Some(&i.to_string())), put_x("a", &format!("A{i}"), None)];
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
            assert!(distinct >= before, "load {loads} has {distinct} distinct records after {before} batches were acknowledged");
            loads += 1;
        }
        writes.join().unwrap();
        assert_eq!(alert_names(&store.load().unwrap()).len(), 301);
    }

    #[test]
    fn an_outbox_entry_put_and_removed_between_checkpoints_leaves_the_checkpoint_nothing() {
        let entry =
            |table, key: &str, value: Option<&str>| Op { table, key: key.as_bytes().to_vec(), value: value.map(|v| v.as_bytes().to_vec()) };
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
