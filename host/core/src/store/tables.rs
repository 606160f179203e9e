//! The store's layout on disk: a redb table per kind of record, and the journal of batches not yet folded into them.

use foldhash::HashMap;

use super::interface::{Op, Table};

type RecordTable = redb::TableDefinition<'static, &'static [u8], &'static [u8]>;

/// The redb table holding `table`'s records.
pub(super) fn definition(table: Table) -> RecordTable {
    redb::TableDefinition::new(table.name())
}

pub(super) const JOURNAL: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("journal");

/// The latest write of each key, by table, as journal entries record them.
pub(super) type Records = HashMap<(Table, Vec<u8>), Option<Vec<u8>>>;

/// The journal's entries, oldest first, folded into the latest write of each key.
pub(super) fn journal_records(journal: &redb::Database) -> Result<Records, String> {
    use redb::ReadableDatabase;
    let txn = journal.begin_read().map_err(|e| e.to_string())?;
    records_of(&txn.open_table(JOURNAL).map_err(|e| e.to_string())?)
}

fn records_of(journal: &impl redb::ReadableTable<u64, &'static [u8]>) -> Result<Records, String> {
    let mut records = Records::default();
    for entry in journal.iter().map_err(|e| e.to_string())? {
        let (_, v) = entry.map_err(|e| e.to_string())?;
        let entries: Vec<Op> = postcard::from_bytes(v.value()).map_err(|e| e.to_string())?;
        for e in entries {
            records.insert((e.table, e.key), e.value);
        }
    }
    Ok(records)
}

/// Put (or, for `None`, remove) each record in its table.
pub(super) fn write_records(txn: &redb::WriteTransaction, records: &Records) -> Result<(), String> {
    let mut tables = Vec::with_capacity(Table::ALL.len());
    for table in Table::ALL {
        tables.push((table, txn.open_table(definition(table)).map_err(|e| e.to_string())?));
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

/// Versions before the journal had its own file kept it in the store file: fold it into the
/// tables and drop it.
pub(super) fn fold_legacy_journal(tables: &redb::Database) -> Result<(), String> {
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
