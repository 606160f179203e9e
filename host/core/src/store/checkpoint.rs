//! Folding the journal into the record tables: when (thresholds), how (one transaction per file), and on which thread (its own, while appends go on).

use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;

use super::tables::{JOURNAL, Records, write_records};

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
/// Write `records` (the journal's entries before sequence number `through`, folded) into the
/// tables, then delete those entries. A crash between the two commits leaves entries that are
/// in both files: the next fold writes them again, and the newer entries after them still win.
pub(super) fn checkpoint(tables: &redb::Database, journal: &redb::Database, records: &Records, through: u64) -> Result<(), String> {
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

/// A checkpoint: the journal's entries before `through`, folded.
pub(super) struct Job {
    records: Records,
    through: u64,
}

/// A failed checkpoint gives its records back: the journal still holds them, and a later
/// checkpoint must write them before it deletes their entries.
pub(super) type Finished = Result<(), (Records, String)>;

/// The checkpoint thread, seen from the writer: one checkpoint at a time.
pub(super) struct Checkpointer {
    jobs: Option<mpsc::Sender<Job>>,
    finished: mpsc::Receiver<Finished>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub(super) running: bool,
}

impl Checkpointer {
    pub(super) fn start(
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

    pub(super) fn start_job(&mut self, records: Records, through: u64) {
        if let Some(jobs) = &self.jobs {
            self.running = jobs.send(Job { records, through }).is_ok();
        }
    }

    /// Note a finished checkpoint, if any, without waiting.
    pub(super) fn poll(&mut self, pending: &mut Records) {
        if let Ok(finished) = self.finished.try_recv() {
            self.finish(finished, pending);
        }
    }

    /// Wait for the running checkpoint, if any.
    pub(super) fn wait(&mut self, pending: &mut Records) {
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
