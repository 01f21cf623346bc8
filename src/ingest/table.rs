//! Writing tables: the primary key is checked against the table's live keys, under the
//! table's write lock.
//!
//! A table's topic is a changelog: a record per upsert, a tombstone per delete, keyed by the
//! encoded primary key and partitioned by it, so every version of a key is in one partition
//! and the last one there is the current row. The [`KeyIndex`] keeps, per partition, each
//! live key's latest offset; it is built from the log (the tombstone flags and keys only) the
//! first time the table is written after a start, and caught up from the log before every
//! write, so records appended by any writer — Kafka producers too — are in it.
//!
//! A write holds the table's [`TableLock`] from reading the index to the append being
//! durable, so two statements cannot both insert a key. Statements that read the table
//! before they write (`UPDATE`, `DELETE`, `ON CONFLICT DO UPDATE`) hold it around the read
//! too, and so see every write that committed before theirs.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use arrow::array::{Array, AsArray, BinaryArray, RecordBatch, UInt32Array};
use arrow::util::display::{ArrayFormatter, FormatOptions};

use super::records::TableTarget;
use crate::error::{Error, Result};
use crate::storage::{Log, Offset, PartitionBatch, PartitionId, ReadOptions, TopicId};

/// This process's row id prefix: random, so ids made by different starts never meet.
static ROW_ID_PREFIX: LazyLock<u64> = LazyLock::new(|| {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    RandomState::new().hash_one(nanos)
});
static ROW_IDS: AtomicU64 = AtomicU64::new(0);

/// `n` new row ids: the keys of rows of a table without a primary key, as PostgreSQL's heap
/// tables have a row identity of their own. 16 bytes: a random prefix per process start,
/// then a counter.
pub fn row_ids(n: usize) -> BinaryArray {
    let first = ROW_IDS.fetch_add(n as u64, Ordering::Relaxed);
    let prefix = ROW_ID_PREFIX.to_be_bytes();
    let mut ids = arrow::array::BinaryBuilder::with_capacity(n, n * 16);
    for i in 0..n as u64 {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&prefix);
        id[8..].copy_from_slice(&(first + i).to_be_bytes());
        ids.append_value(id);
    }
    ids.finish()
}

/// How a staged batch of table rows treats keys the table already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// A stream's records: appended, nothing checked.
    Append,
    /// `INSERT`: a key the table has is a unique violation (23505).
    Insert,
    /// `INSERT … ON CONFLICT DO NOTHING`: rows whose key the table has are left out.
    InsertOrSkip,
    /// `UPDATE`, resolved `ON CONFLICT DO UPDATE`, Kafka produce: the row replaces its key's.
    Upsert,
    /// `DELETE`: tombstones.
    Delete,
}

/// Each partition's live keys and the offset of their latest record.
#[derive(Debug, Default)]
pub struct KeyIndex {
    partitions: Vec<PartitionKeys>,
}

#[derive(Debug, Default)]
struct PartitionKeys {
    /// The offset read up to.
    next: u64,
    live: HashMap<Box<[u8]>, u64>,
}

impl KeyIndex {
    fn find(&self, partition: PartitionId, key: &[u8]) -> Option<Offset> {
        self.partitions
            .get(partition.0 as usize)
            .and_then(|p| p.live.get(key))
            .map(|o| Offset(*o))
    }
}

/// A table's write lock, and its key index: changed only by the lock's holder, read by
/// scans looking keys up.
#[derive(Debug, Default)]
struct TableState {
    write: Arc<tokio::sync::Mutex<()>>,
    index: RwLock<KeyIndex>,
}

/// Where a key's current record is, as far as its table's index knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPosition {
    pub partition: PartitionId,
    /// The index has read the partition up to here; records after it are not in it.
    pub indexed_to: Offset,
    /// The key's latest record up to there, unless the key was deleted or never written.
    pub at: Option<Offset>,
}

/// The write locks and key indexes of every table written since the start.
#[derive(Debug, Default)]
pub struct TableLocks {
    tables: Mutex<HashMap<TopicId, Arc<TableState>>>,
}

impl TableLocks {
    /// Waits for the table's write lock; its index is caught up with the log.
    pub async fn lock(
        &self,
        log: &Arc<Log>,
        topic: TopicId,
        table: &TableTarget,
    ) -> Result<TableLock> {
        let state = self
            .tables
            .lock()
            .expect("table locks")
            .entry(topic)
            .or_default()
            .clone();
        let mut lock = TableLock {
            _write: state.write.clone().lock_owned().await,
            state,
            log: log.clone(),
            topic,
            table: table.clone(),
        };
        lock.catch_up().await?;
        Ok(lock)
    }

    /// Where `keys` are in the table's index; `None` if the table has no index (it has not
    /// been written since the start) or it is being caught up right now.
    pub fn positions(
        &self,
        topic: TopicId,
        keys: &[(PartitionId, Vec<u8>)],
    ) -> Option<Vec<KeyPosition>> {
        let state = self
            .tables
            .lock()
            .expect("table locks")
            .get(&topic)?
            .clone();
        let index = state.index.try_read().ok()?;
        keys.iter()
            .map(|(partition, key)| {
                let keys = index.partitions.get(partition.0 as usize)?;
                Some(KeyPosition {
                    partition: *partition,
                    indexed_to: Offset(keys.next),
                    at: keys.live.get(key.as_slice()).map(|o| Offset(*o)),
                })
            })
            .collect()
    }

    /// Forgets a dropped table's index.
    pub fn forget(&self, topic: TopicId) {
        self.tables.lock().expect("table locks").remove(&topic);
    }
}

/// A table's write lock, with its key index.
pub struct TableLock {
    _write: tokio::sync::OwnedMutexGuard<()>,
    state: Arc<TableState>,
    log: Arc<Log>,
    topic: TopicId,
    table: TableTarget,
}

impl TableLock {
    /// Reads the records appended since the index was last caught up.
    pub async fn catch_up(&mut self) -> Result<()> {
        let topic = self
            .log
            .topic(self.topic)
            .ok_or_else(|| Error::UnknownRelation("the table was dropped".into()))?;
        let snapshot = self.log.snapshot();
        let columns = vec![self.table.tombstone, self.table.key];
        let behind = {
            let index = self.state.index.read().expect("key index lock");
            topic.partitions.iter().any(|p| {
                let next = index.partitions.get(p.id.0 as usize).map_or(0, |k| k.next);
                snapshot.high_watermark(self.topic, p.id).0 > next
            })
        };
        if !behind {
            return Ok(());
        }
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            // Scans looking keys up meanwhile read the log instead.
            let mut index = state.index.write().expect("key index lock");
            index
                .partitions
                .resize_with(topic.partitions.len(), Default::default);
            for (partition, keys) in topic.partitions.iter().zip(&mut index.partitions) {
                let high = snapshot.high_watermark(topic.spec.id, partition.id).0;
                let start = Offset(keys.next).max(partition.log_start_offset());
                let options = ReadOptions {
                    schema: topic.spec.schema.clone(),
                    projection: Some(columns.clone()),
                    min_timestamp_ms: None,
                    max_timestamp_ms: None,
                };
                for read in partition.reader(start..Offset(high), options) {
                    let read = read?;
                    let deleted = read.batch.column(0).as_boolean();
                    let key_column = read.batch.column(1).as_binary::<i32>();
                    for i in 0..read.batch.num_rows() {
                        if key_column.is_null(i) {
                            continue;
                        }
                        let key = key_column.value(i);
                        if deleted.is_valid(i) && deleted.value(i) {
                            keys.live.remove(key);
                        } else {
                            keys.live.insert(key.into(), read.offset(i).0);
                        }
                    }
                }
                keys.next = high;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Internal(format!("catching up a table's keys: {e}")))?
    }

    /// Where `key`'s current row is, if the table has it.
    pub fn find(&self, partition: PartitionId, key: &[u8]) -> Option<Offset> {
        let index = self.state.index.read().expect("key index lock");
        index.find(partition, key)
    }

    /// Checks `batches` (each staged as its kind says, in order) against the table's keys
    /// and each other, leaving out the rows `InsertOrSkip` skips; then appends them,
    /// durably, and catches the index up. Returns how many records were appended.
    pub async fn commit(&mut self, batches: Vec<(WriteKind, PartitionBatch)>) -> Result<u64> {
        let batches = self.check(batches)?;
        let rows = batches.iter().map(|b| b.records.num_rows() as u64).sum();
        self.log.append(batches).await?;
        self.catch_up().await?;
        Ok(rows)
    }

    fn check(&self, batches: Vec<(WriteKind, PartitionBatch)>) -> Result<Vec<PartitionBatch>> {
        let index = self.state.index.read().expect("key index lock");
        // The keys this write has touched so far, and whether they are live after it.
        let mut written: HashMap<(PartitionId, &[u8]), bool> = HashMap::new();
        let mut skipped: Vec<Vec<u32>> = vec![vec![]; batches.len()];
        for (b, (kind, batch)) in batches.iter().enumerate() {
            let keys = batch.records.column(self.table.key).as_binary::<i32>();
            for i in 0..batch.records.num_rows() {
                let key = (batch.partition, keys.value(i));
                let live = || {
                    written
                        .get(&key)
                        .copied()
                        .unwrap_or_else(|| index.find(key.0, key.1).is_some())
                };
                match kind {
                    WriteKind::Append | WriteKind::Upsert => {
                        written.insert(key, true);
                    }
                    WriteKind::Delete => {
                        written.insert(key, false);
                    }
                    WriteKind::Insert => {
                        if live() {
                            return Err(self.duplicate(&batch.records, i));
                        }
                        written.insert(key, true);
                    }
                    WriteKind::InsertOrSkip => {
                        if live() {
                            skipped[b].push(i as u32);
                        } else {
                            written.insert(key, true);
                        }
                    }
                }
            }
        }
        batches
            .into_iter()
            .zip(skipped)
            .map(|((_, batch), skipped)| {
                if skipped.is_empty() {
                    return Ok(batch);
                }
                let kept: UInt32Array = (0..batch.records.num_rows() as u32)
                    .filter(|i| skipped.binary_search(i).is_err())
                    .collect();
                let records = arrow::compute::take_record_batch(&batch.records, &kept)
                    .map_err(|e| Error::Internal(format!("leaving out rows: {e}")))?;
                Ok(PartitionBatch { records, ..batch })
            })
            .collect()
    }

    /// 23505 for the row at `i` of `records`, as PostgreSQL words it.
    fn duplicate(&self, records: &RecordBatch, i: usize) -> Error {
        let schema = records.schema();
        let names: Vec<&str> = self
            .table
            .key_columns
            .iter()
            .map(|c| schema.field(*c).name().as_str())
            .collect();
        let options = FormatOptions::default().with_null("null");
        let values: Vec<String> = self
            .table
            .key_columns
            .iter()
            .map(|c| {
                ArrayFormatter::try_new(records.column(*c).as_ref(), &options)
                    .map(|f| f.value(i).to_string())
                    .unwrap_or_else(|_| "?".into())
            })
            .collect();
        Error::Constraint {
            code: "23505",
            message: format!(
                "duplicate key value violates unique constraint \"{}\"",
                self.table.constraint
            ),
            detail: Some(format!(
                "Key ({})=({}) already exists.",
                names.join(", "),
                values.join(", ")
            )),
        }
    }

    /// The current rows (every stored value column) of `keys`, `None` for keys the
    /// table does not have.
    pub async fn current(
        &self,
        keys: &[(PartitionId, Vec<u8>)],
    ) -> Result<Vec<Option<RecordBatch>>> {
        let topic = self
            .log
            .topic(self.topic)
            .ok_or_else(|| Error::UnknownRelation("the table was dropped".into()))?;
        let found: Vec<Option<(PartitionId, Offset)>> = keys
            .iter()
            .map(|(p, k)| self.find(*p, k).map(|o| (*p, o)))
            .collect();
        let columns: Vec<usize> = (0..self.table.tombstone).collect();
        tokio::task::spawn_blocking(move || {
            found
                .into_iter()
                .map(|at| {
                    let Some((p, offset)) = at else {
                        return Ok(None);
                    };
                    let options = ReadOptions {
                        schema: topic.spec.schema.clone(),
                        projection: Some(columns.clone()),
                        min_timestamp_ms: None,
                        max_timestamp_ms: None,
                    };
                    let partition = topic.partition(p)?;
                    for read in partition.reader(offset..Offset(offset.0 + 1), options) {
                        let read = read?;
                        if let Some(at) = read.position_of(offset) {
                            return Ok(Some(read.batch.slice(at, 1)));
                        }
                    }
                    Err(Error::Internal(format!(
                        "a table's current row at {}:{} is missing",
                        p.0, offset.0
                    )))
                })
                .collect()
        })
        .await
        .map_err(|e| Error::Internal(format!("reading a table's rows: {e}")))?
    }
}
