//! What Belfry needs from a store, in terms that know no domain type: tables of (tenant, id) → bytes, ordered batches of writes, a snapshot to load.

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// A kind of record, each in a table of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Table {
    /// Alerts, by fingerprint.
    Alerts,
    /// Silences, by id.
    Silences,
    /// The notification log, by group key.
    NotifyLog,
    /// Notifications decided and not yet delivered, by id.
    Outbox,
    // New tables go last: the journal encodes a table by its position.
    /// Acknowledged groups, by group key.
    Acks,
    /// Host-wide values (the ack links' signing key), by name, under no tenant.
    Meta,
    /// Running escalations, by group key.
    Escalations,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 7] =
        [Table::Alerts, Table::Silences, Table::NotifyLog, Table::Outbox, Table::Acks, Table::Meta, Table::Escalations];

    /// Its name in the store.
    pub fn name(self) -> &'static str {
        match self {
            Table::Alerts => "alerts",
            Table::Silences => "silences",
            Table::NotifyLog => "notify_log",
            Table::Outbox => "outbox",
            Table::Acks => "acks",
            Table::Meta => "meta",
            Table::Escalations => "escalations",
        }
    }
}

/// One write: a record's new value, or its removal. Within a batch, and across batches in
/// submission order, later writes win.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub(super) table: Table,
    pub(super) key: Vec<u8>,
    pub(super) value: Option<Vec<u8>>,
}

impl Op {
    /// Put `record` (encoded here, on the caller's thread, so the single writer only appends
    /// bytes) as the tenant's `id` in `table`.
    pub fn put(table: Table, tenant: &str, id: &[u8], record: &impl Serialize) -> Op {
        Op { table, key: key(tenant, id), value: Some(encode(record)) }
    }

    /// Remove the tenant's `id` from `table`.
    pub fn delete(table: Table, tenant: &str, id: &[u8]) -> Op {
        Op { table, key: key(tenant, id), value: None }
    }

    /// Put a host-wide value (tenant-less: the empty name, which no tenant has).
    pub fn put_meta(name: &str, value: Vec<u8>) -> Op {
        Op { table: Table::Meta, key: key("", name.as_bytes()), value: Some(value) }
    }

    /// What a backend stores: the table, the record's key (tenant and id) and its new value,
    /// `None` to remove it. A backend keeps the key as given and gives it back in the snapshot.
    pub fn parts(&self) -> (Table, &[u8], Option<&[u8]>) {
        (self.table, &self.key, self.value.as_deref())
    }

    /// The table, tenant and id it writes, and whether it removes (for tests and logs).
    pub fn target(&self) -> (Table, String, Vec<u8>, bool) {
        let (tenant, id) = split_key(&self.key).unwrap_or_default();
        (self.table, tenant, id.to_vec(), self.value.is_none())
    }
}

/// `record` as stored: postcard, compact and fast.
pub fn encode(record: &impl Serialize) -> Vec<u8> {
    postcard::to_stdvec(record).expect("postcard encodes Belfry's records (plain data, no failing Serialize)")
}

/// A stored record, decoded; the error says what did not decode.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| e.to_string())
}

/// One stored record as loaded: its tenant, its id within the tenant, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The tenant (empty for host-wide values).
    pub tenant: String,
    /// The id within the tenant (an alert's fingerprint, a group key, a silence's id...).
    pub id: Box<[u8]>,
    /// The encoded record.
    pub value: Vec<u8>,
}

impl Record {
    /// The id as text (group keys, silence and outbox ids, meta names).
    pub fn id_text(&self) -> String {
        String::from_utf8_lossy(&self.id).into_owned()
    }
}

/// Everything stored, by table, as loaded at start; still encoded, so that decoding them one
/// at a time while restoring keeps the memory peak at start to the encoded size.
#[derive(Debug, Default)]
pub struct Snapshot {
    tables: [Vec<Record>; Table::ALL.len()],
}

impl Snapshot {
    /// Add a record of `table` as a backend stored it: its key as [`Op::parts`] gave it.
    pub fn push_stored(&mut self, table: Table, key: &[u8], value: Vec<u8>) -> Result<(), String> {
        let (tenant, id) = split_key(key).ok_or("a malformed key (no tenant)")?;
        self.push(table, Record { tenant, id: id.into(), value });
        Ok(())
    }

    /// Add a record of `table`.
    pub fn push(&mut self, table: Table, record: Record) {
        self.tables[table as usize].push(record);
    }

    /// The records of `table`, taken out of the snapshot.
    pub fn take(&mut self, table: Table) -> Vec<Record> {
        std::mem::take(&mut self.tables[table as usize])
    }

    /// The records of `table`.
    pub fn records(&self, table: Table) -> &[Record] {
        &self.tables[table as usize]
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

/// Key layout: tenant name, NUL, then the id bytes (tenant names never contain NUL).
fn key(tenant: &str, id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 1 + id.len());
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(id);
    k
}

pub(super) fn split_key(k: &[u8]) -> Option<(String, &[u8])> {
    let nul = k.iter().position(|b| *b == 0)?;
    Some((String::from_utf8(k[..nul].to_vec()).ok()?, &k[nul + 1..]))
}
