//! Appending rows to a stream or topic: the one place rows turn into an append.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use arrow::array::{AsArray, GenericStringArray, OffsetSizeTrait, RecordBatch};
use arrow::datatypes::DataType;

use super::WriteTarget;
use crate::error::{Error, Result};
use crate::storage::{Log, PartitionBatch, TopicId, now_ms};

/// Writes rows to the log. Shared by every session.
#[derive(Debug)]
pub struct RowWriter {
    log: Arc<Log>,
    /// Per topic, the round-robin position for records without a key.
    round_robin: Mutex<HashMap<TopicId, Arc<AtomicU64>>>,
}

/// Rows partitioned and waiting to be appended in one atomic write.
#[derive(Default)]
pub struct PendingWrite {
    batches: Vec<PartitionBatch>,
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

    /// The records, per partition, for a commit that carries more than rows.
    pub fn into_batches(self) -> Vec<PartitionBatch> {
        self.batches
    }

    /// Adds `other`'s records after these.
    pub fn extend(&mut self, other: PendingWrite) {
        self.batches.extend(other.batches);
        self.rows += other.rows;
        self.bytes += other.bytes;
    }
}

impl RowWriter {
    pub fn new(log: Arc<Log>) -> RowWriter {
        RowWriter {
            log,
            round_robin: Mutex::new(HashMap::new()),
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

    /// Partitions `rows` into `pending` (no I/O).
    pub fn stage(
        &self,
        target: &WriteTarget,
        rows: &RecordBatch,
        pending: &mut PendingWrite,
    ) -> Result<()> {
        refuse_nul(target, rows)?;
        let counter = self.counter(target.topic);
        let batches = target.partition(rows, &counter, now_ms())?;
        pending.rows += rows.num_rows() as u64;
        pending.bytes += batches
            .iter()
            .map(|b| b.records.get_array_memory_size())
            .sum::<usize>();
        pending.batches.extend(batches);
        Ok(())
    }

    /// Appends everything staged, atomically, once it is durable. Returns the row count.
    pub async fn commit(&self, pending: PendingWrite) -> Result<u64> {
        let rows = pending.rows;
        self.log.append(pending.batches).await?;
        Ok(rows)
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
