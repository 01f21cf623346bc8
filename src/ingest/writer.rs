//! Appending rows to a stream or topic: the one place rows turn into an append.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use arrow::array::{AsArray, BooleanArray, GenericStringArray, OffsetSizeTrait, RecordBatch};
use arrow::datatypes::DataType;

use super::WriteTarget;
use super::records::{Given, TableTarget};
use super::table::{KeyPosition, TableLock, TableLocks, WriteKind};
use crate::error::{Error, Result};
use crate::storage::{Log, PartitionBatch, TopicId, now_ms};

/// Writes rows to the log. Shared by every session.
#[derive(Debug)]
pub struct RowWriter {
    log: Arc<Log>,
    /// Per topic, the round-robin position for records without a key.
    round_robin: Mutex<HashMap<TopicId, Arc<AtomicU64>>>,
    /// Tables' write locks and key indexes.
    tables: TableLocks,
}

/// Rows partitioned and waiting to be appended in one atomic write.
#[derive(Default)]
pub struct PendingWrite {
    batches: Vec<PartitionBatch>,
    /// How each batch is written: checked against a table's keys, or appended.
    kinds: Vec<WriteKind>,
    /// The table written, if any (a write goes to at most one).
    table: Option<(TopicId, Arc<TableTarget>)>,
    rows: u64,
    bytes: usize,
}

impl PendingWrite {
    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The records, per partition, for a commit that carries more than rows (a continuous
    /// query's, which writes streams, never tables).
    pub fn into_batches(self) -> Vec<PartitionBatch> {
        debug_assert!(self.table.is_none(), "table writes are checked by commit");
        self.batches
    }

    /// Adds `other`'s records after these.
    pub fn extend(&mut self, other: PendingWrite) {
        self.batches.extend(other.batches);
        self.kinds.extend(other.kinds);
        self.table = self.table.take().or(other.table);
        self.rows += other.rows;
        self.bytes += other.bytes;
    }
}

impl RowWriter {
    pub fn new(log: Arc<Log>) -> RowWriter {
        RowWriter {
            log,
            round_robin: Mutex::new(HashMap::new()),
            tables: TableLocks::default(),
        }
    }

    fn counter(&self, topic: TopicId) -> Arc<AtomicU64> {
        self.round_robin
            .lock()
            .expect("round robin lock")
            .entry(topic)
            .or_default()
            .clone()
    }

    /// Partitions `rows` into `pending` (no I/O): appended to a stream, inserted into a
    /// table.
    pub fn stage(
        &self,
        target: &WriteTarget,
        rows: &RecordBatch,
        pending: &mut PendingWrite,
    ) -> Result<()> {
        let kind = match target.table {
            Some(_) => WriteKind::Insert,
            None => WriteKind::Append,
        };
        self.stage_as(target, rows, kind, pending)
    }

    /// Partitions `rows` into `pending`, to be written as `kind` says.
    pub fn stage_as(
        &self,
        target: &WriteTarget,
        rows: &RecordBatch,
        kind: WriteKind,
        pending: &mut PendingWrite,
    ) -> Result<()> {
        self.stage_keyed(target, rows, kind, None, pending)
    }

    /// [`RowWriter::stage_as`] of rows whose records have `keys` (a table's existing
    /// rows' keys, for their tombstones or their new versions) rather than keys made from
    /// the rows.
    pub fn stage_keyed(
        &self,
        target: &WriteTarget,
        rows: &RecordBatch,
        kind: WriteKind,
        keys: Option<arrow::array::BinaryArray>,
        pending: &mut PendingWrite,
    ) -> Result<()> {
        refuse_nul(target, rows)?;
        if let Some(table) = &target.table {
            match &pending.table {
                Some((topic, _)) if *topic != target.topic => {
                    return Err(Error::Internal("one write, two tables".into()));
                }
                Some(_) => {}
                None => pending.table = Some((target.topic, table.clone())),
            }
        }
        let counter = self.counter(target.topic);
        let mut given = Given::append_time(now_ms());
        if kind == WriteKind::Delete {
            given.deleted = Some(BooleanArray::from(vec![true; rows.num_rows()]));
        }
        given.keys = keys;
        let batches = target.partition(rows, &counter, &given)?;
        pending.rows += rows.num_rows() as u64;
        pending.bytes += batches
            .iter()
            .map(|b| b.records.get_array_memory_size())
            .sum::<usize>();
        pending
            .kinds
            .extend(std::iter::repeat_n(kind, batches.len()));
        pending.batches.extend(batches);
        Ok(())
    }

    /// Appends everything staged, atomically, once it is durable; a table's keys are
    /// checked first, under its write lock. Returns the count of rows written.
    pub async fn commit(&self, pending: PendingWrite) -> Result<u64> {
        match &pending.table {
            None => {
                let rows = pending.rows;
                self.log.append(pending.batches).await?;
                Ok(rows)
            }
            Some((topic, table)) => {
                let mut lock = self.tables.lock(&self.log, *topic, table).await?;
                self.commit_locked(&mut lock, pending).await
            }
        }
    }

    /// [`RowWriter::commit`] of a table write whose lock the caller holds.
    pub async fn commit_locked(&self, lock: &mut TableLock, pending: PendingWrite) -> Result<u64> {
        let batches = pending.kinds.into_iter().zip(pending.batches).collect();
        lock.commit(batches).await
    }

    /// Waits for `target`'s write lock (a table's); reads made while holding it see every
    /// write committed before, and no other write commits until it is dropped.
    pub async fn lock_table(&self, target: &WriteTarget) -> Result<TableLock> {
        let table = target
            .table
            .as_ref()
            .ok_or_else(|| Error::Internal(format!("\"{}\" is not a table", target.relation)))?;
        self.tables.lock(&self.log, target.topic, table).await
    }

    /// Where a table's `keys` are, as its key index knows (see [`TableLocks::positions`]).
    pub fn key_positions(
        &self,
        topic: TopicId,
        keys: &[(crate::storage::PartitionId, Vec<u8>)],
    ) -> Option<Vec<KeyPosition>> {
        self.tables.positions(topic, keys)
    }

    /// Forgets what it kept about a dropped topic.
    pub fn forget(&self, topic: TopicId) {
        self.tables.forget(topic);
        self.round_robin
            .lock()
            .expect("round robin lock")
            .remove(&topic);
    }
}

/// 22021 if a text column of `rows` holds a NUL character, which PostgreSQL's text cannot
/// (and its clients, reading C strings, would cut the value at).
pub(crate) fn refuse_nul(target: &WriteTarget, rows: &RecordBatch) -> Result<()> {
    for (field, column) in rows.schema().fields().iter().zip(rows.columns()) {
        let nul = match field.data_type() {
            DataType::Utf8 => has_nul(column.as_string::<i32>()),
            DataType::LargeUtf8 => has_nul(column.as_string::<i64>()),
            DataType::Utf8View => column
                .as_string_view()
                .iter()
                .flatten()
                .any(|v| v.contains('\0')),
            _ => false,
        };
        if nul {
            return Err(Error::data(
                "22021",
                format!(
                    "invalid byte sequence for encoding \"UTF8\": 0x00 (a NUL character in column \"{}\" of \"{}\"): text may not contain NUL",
                    field.name(),
                    target.relation
                ),
            ));
        }
    }
    Ok(())
}

/// Whether any value of `strings` (only its own slice of the shared buffer) has a NUL.
fn has_nul<O: OffsetSizeTrait>(strings: &GenericStringArray<O>) -> bool {
    let offsets = strings.value_offsets();
    let (first, last) = (offsets[0].as_usize(), offsets[offsets.len() - 1].as_usize());
    strings.values()[first..last].contains(&0)
}
