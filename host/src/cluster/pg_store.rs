//! The store on PostgreSQL: each batch committed in one transaction (several batches share one when they queue up, as the embedded store's group commit does), durable before its commit resolves; the snapshot read back in one query.
//!
//! One table holds every record: `belfry_records (kind, key, value)`, `kind` the store's
//! [`Table`] as a number, `key` the tenant and id as the store gives them. A batch's writes are
//! folded (the latest write of a key wins, as in the embedded store) into one upsert and one
//! delete, each a single statement over arrays, so a commit costs the same few round trips for
//! one write or ten thousand. PostgreSQL's `synchronous_commit = on` (its default) makes the
//! commit's answer wait for the WAL to be on disk: a resolved commit is durable.

use std::collections::HashMap;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Commit, Op, Snapshot, Store, StoreError, Table};

/// Most batches folded into one transaction; bounds a commit's size under a flood.
const MAX_BATCHES_PER_COMMIT: usize = 1024;

/// Where and how to reach the engine.
#[derive(Clone, Debug)]
pub struct PgStoreOptions {
    /// A libpq-style connection string (`host=... port=... user=... dbname=... password=...`).
    pub connection: String,
    /// How long to wait for a connection before the store reports the engine unreachable.
    pub connect_timeout: Duration,
}

/// Who waits for a batch to be durable (`None`: a background batch).
type Waiter = Option<oneshot::Sender<Result<(), StoreError>>>;

/// What the store's thread is asked to do.
enum Request {
    Write { ops: Vec<Op>, done: Waiter },
    Load { reply: std_mpsc::Sender<Result<Snapshot, StoreError>> },
}

/// Belfry's records in PostgreSQL. Its connection lives on a thread of its own (a runtime of
/// its own), so that [`Store::load`], which the daemon calls synchronously at start, can wait
/// for it without blocking the daemon's runtime.
pub struct PgStore {
    requests: mpsc::UnboundedSender<Request>,
    /// The engine as errors name it: host and port, never a password.
    shown: String,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PgStore {
    /// Connect, create the table if it does not exist, and start the writer.
    pub fn connect(options: &PgStoreOptions) -> Result<PgStore, StoreError> {
        let config: tokio_postgres::Config = options
            .connection
            .parse()
            .map_err(|e| StoreError { path: "postgres".into(), message: format!("the connection string does not parse: {e}") })?;
        let shown = shown(&config);
        let fail = |message: String| StoreError { path: shown.clone(), message };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(format!("cannot start the store's runtime: {e}")))?;
        let client = runtime.block_on(async {
            let connecting = config.connect(tokio_postgres::NoTls);
            let (client, connection) = tokio::time::timeout(options.connect_timeout, connecting)
                .await
                .map_err(|_| fail(format!("no connection within {} s", options.connect_timeout.as_secs())))?
                .map_err(|e| fail(format!("cannot connect: {e}")))?;
            let shown = shown.clone();
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::error!(engine = %shown, error = %e, "the store's connection to PostgreSQL ended");
                }
            });
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS belfry_records (kind smallint NOT NULL, key bytea NOT NULL, value bytea NOT NULL, PRIMARY KEY (kind, key))",
                )
                .await
                .map_err(|e| fail(format!("cannot create the records table: {e}")))?;
            Ok::<_, StoreError>(client)
        })?;
        let (requests, queue) = mpsc::unbounded_channel();
        let thread_shown = shown.clone();
        let thread = std::thread::Builder::new()
            .name("belfry-pg-store".into())
            .spawn(move || runtime.block_on(Writer { client, shown: thread_shown }.run(queue)))
            .map_err(|e| fail(format!("cannot start the store's thread: {e}")))?;
        Ok(PgStore { requests, shown, thread: Some(thread) })
    }

    fn send(&self, request: Request) -> Result<(), StoreError> {
        self.requests.send(request).map_err(|_| StoreError { path: self.shown.clone(), message: "the store's thread stopped".into() })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer commit what is queued, then stop.
        let (closed, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.requests, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Store for PgStore {
    fn submit(&self, ops: Vec<Op>) -> Commit {
        let (done, commit) = oneshot::channel();
        if let Err(e) = self.send(Request::Write { ops, done: Some(done) }) {
            let (done, commit) = oneshot::channel();
            let _ = done.send(Err(e));
            return commit;
        }
        commit
    }

    fn submit_background(&self, ops: Vec<Op>) {
        if let Err(e) = self.send(Request::Write { ops, done: None }) {
            tracing::error!(error = %e, "a background store write was lost");
        }
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        let (reply, answer) = std_mpsc::channel();
        self.send(Request::Load { reply })?;
        answer.recv().map_err(|_| StoreError { path: self.shown.clone(), message: "the store's thread stopped".into() })?
    }
}

/// The connection's owner: commits queued batches together, answers loads in order with them.
struct Writer {
    client: tokio_postgres::Client,
    shown: String,
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Request>) {
        while let Some(first) = queue.recv().await {
            let mut writes = Vec::new();
            let mut next = Some(first);
            // Every write queued behind the first goes into the same transaction; a load waits
            // for the writes before it, so it sees them.
            while let Some(request) = next.take() {
                match request {
                    Request::Write { ops, done } => writes.push((ops, done)),
                    Request::Load { reply } => {
                        self.commit(std::mem::take(&mut writes)).await;
                        let _ = reply.send(self.load().await);
                    }
                }
                if writes.len() < MAX_BATCHES_PER_COMMIT {
                    next = queue.try_recv().ok();
                }
            }
            self.commit(writes).await;
        }
    }

    /// Commit `batches` in one transaction and tell each waiter how it went.
    async fn commit(&mut self, batches: Vec<(Vec<Op>, Waiter)>) {
        if batches.is_empty() {
            return;
        }
        // The latest write of each key wins, in submission order.
        let mut latest: HashMap<(Table, Vec<u8>), Option<Vec<u8>>> = HashMap::new();
        for (ops, _) in &batches {
            for op in ops {
                let (table, key, value) = op.parts();
                latest.insert((table, key.to_vec()), value.map(<[u8]>::to_vec));
            }
        }
        let result = self.write(latest).await.map_err(|message| StoreError { path: self.shown.clone(), message });
        if let Err(e) = &result {
            tracing::error!(error = %e, batches = batches.len(), "store commit failed; the requests are answered with 500");
        }
        for (_, done) in batches {
            match done {
                Some(done) => drop(done.send(result.clone())),
                None if result.is_err() => tracing::error!("a background store write was lost"),
                None => {}
            }
        }
    }

    async fn write(&mut self, latest: HashMap<(Table, Vec<u8>), Option<Vec<u8>>>) -> Result<(), String> {
        let (mut put_kinds, mut put_keys, mut put_values) = (Vec::new(), Vec::new(), Vec::new());
        let (mut gone_kinds, mut gone_keys) = (Vec::new(), Vec::new());
        for ((table, key), value) in latest {
            match value {
                Some(value) => {
                    put_kinds.push(table as i16);
                    put_keys.push(key);
                    put_values.push(value);
                }
                None => {
                    gone_kinds.push(table as i16);
                    gone_keys.push(key);
                }
            }
        }
        let transaction = self.client.transaction().await.map_err(|e| format!("cannot begin: {e}"))?;
        if !put_keys.is_empty() {
            transaction
                .execute(
                    "INSERT INTO belfry_records (kind, key, value) SELECT * FROM UNNEST($1::smallint[], $2::bytea[], $3::bytea[])
                     ON CONFLICT (kind, key) DO UPDATE SET value = EXCLUDED.value",
                    &[&put_kinds, &put_keys, &put_values],
                )
                .await
                .map_err(|e| format!("cannot write: {e}"))?;
        }
        if !gone_keys.is_empty() {
            transaction
                .execute(
                    "DELETE FROM belfry_records WHERE (kind, key) IN (SELECT * FROM UNNEST($1::smallint[], $2::bytea[]))",
                    &[&gone_kinds, &gone_keys],
                )
                .await
                .map_err(|e| format!("cannot delete: {e}"))?;
        }
        transaction.commit().await.map_err(|e| format!("cannot commit: {e}"))
    }

    async fn load(&self) -> Result<Snapshot, StoreError> {
        let fail = |message: String| StoreError { path: self.shown.clone(), message };
        let rows = self
            .client
            .query("SELECT kind, key, value FROM belfry_records ORDER BY kind, key", &[])
            .await
            .map_err(|e| fail(format!("cannot read the records: {e}")))?;
        let mut snapshot = Snapshot::default();
        for row in rows {
            let kind: i16 = row.get(0);
            let table =
                Table::ALL.into_iter().find(|t| *t as i16 == kind).ok_or_else(|| fail(format!("a record of unknown kind {kind}")))?;
            let key: Vec<u8> = row.get(1);
            snapshot.push_stored(table, &key, row.get(2)).map_err(fail)?;
        }
        Ok(snapshot)
    }
}

/// The engine as logs and errors name it: `postgres host:port/dbname`, never a password.
fn shown(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("postgres {host}:{port}/{}", config.get_dbname().unwrap_or("postgres"))
}
