//! The state of an incremental aggregation: one row per group, held once.
//!
//! A row is the group's key (its group columns) and its values: the aggregates' partial
//! state, and for a materialized view the final values next to it, so that a view's
//! groups are not kept a second time to be read. Keys are kept only in Arrow's row format,
//! which is what the index compares and hashes; the index itself holds just where each
//! group's live row is. Group columns are decoded from the keys when rows are read.
//!
//! An epoch looks up the rows of the groups it touched, merges them with the epoch's
//! partial state, and upserts the results: new rows are appended in chunks of at most
//! [`STATE_BATCH_ROWS`] and the old ones become garbage. The small chunks epochs leave at
//! the end are merged as they pile up, and the whole state is compacted (chunk by chunk,
//! so a compaction never holds the state twice) once garbage outweighs half the live rows.
//! Reads copy the live rows out in batches of at most [`STATE_BATCH_ROWS`],
//! so no single array has to hold every group (Arrow's 32-bit offsets end at 2 GiB of
//! text). What the state holds ([`GroupState::memory_bytes`]) is reserved in the server's
//! memory pool after every change; state cannot spill, so a change that the pool has no
//! room for fails with 53200, whoever holds the state (a continuous query, a view, a push
//! query).

use std::hash::{BuildHasher, RandomState};
use std::ops::Range;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions, UInt32Array,
};
use arrow::compute::{interleave, take};
use arrow::datatypes::{
    DataType, FieldRef, Fields, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use arrow::row::{Row, RowConverter, Rows, SortField};
use datafusion::execution::memory_pool::MemoryReservation;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use super::distinct::Sets;
use crate::error::{Error, Result};

/// Rows per chunk of state, and per batch read out.
pub const STATE_BATCH_ROWS: usize = 8192;

/// What one slot of the index costs: its position and its control byte.
const INDEX_SLOT_BYTES: usize = std::mem::size_of::<Slot>() + 1;

/// Small chunks at the end of the state that are merged into full ones.
const TAIL_CHUNKS: usize = 16;

/// What a chunk costs besides its rows: its arrays' and keys' headers.
const CHUNK_BYTES: usize = 512;

/// Where a group's live row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Slot {
    chunk: u32,
    row: u32,
}

/// Rows appended together: their keys and their values.
struct Chunk {
    /// The group keys in Arrow's row format (`None` without group columns: one group).
    keys: Option<Rows>,
    /// The columns after the group columns.
    values: RecordBatch,
    /// With an [`Expiry`]: when each row's group expires.
    expiry: Option<Expiries>,
}

/// When the rows of a chunk expire, and how far they have been evicted.
struct Expiries {
    at: Vec<i64>,
    /// The earliest of `at`: a chunk whose rows all expire later is not looked at.
    min: i64,
    /// Rows expiring at or before this were evicted already.
    evicted: i64,
}

impl Expiries {
    fn new(at: Vec<i64>) -> Expiries {
        Expiries {
            min: at.iter().copied().min().unwrap_or(i64::MAX),
            at,
            evicted: i64::MIN,
        }
    }
}

/// When a group expires (an event-time window closes): its group column `column`, a
/// timestamp, in microseconds since the epoch, plus `plus` microseconds. A group whose
/// column is NULL never expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    pub column: usize,
    pub plus: i64,
}

impl Expiry {
    /// When each row of `column` expires.
    fn of(&self, column: &ArrayRef) -> Result<Vec<i64>> {
        let micros =
            arrow::compute::cast(column, &DataType::Timestamp(TimeUnit::Microsecond, None))
                .map_err(internal)?;
        let micros = micros.as_primitive::<TimestampMicrosecondType>();
        Ok((0..micros.len())
            .map(|i| match micros.is_valid(i) {
                true => micros.value(i).saturating_add(self.plus),
                false => i64::MAX,
            })
            .collect())
    }
}

impl Chunk {
    fn key(&self, row: u32) -> &[u8] {
        match &self.keys {
            Some(keys) => keys.row(row as usize).data(),
            None => &[],
        }
    }

    fn bytes(&self) -> usize {
        self.keys.as_ref().map_or(0, Rows::size)
            + self.values.get_array_memory_size()
            + self.expiry.as_ref().map_or(0, |e| e.at.capacity() * 8)
            + CHUNK_BYTES
    }
}

fn key_at(chunks: &[Chunk], slot: Slot) -> &[u8] {
    chunks[slot.chunk as usize].key(slot.row)
}

/// Some of a state's columns, read out as `schema`: every group column, then `values`
/// (positions among the columns after the group columns).
#[derive(Clone, Debug)]
pub struct Columns {
    schema: SchemaRef,
    values: Vec<usize>,
}

impl Columns {
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }
}

pub struct GroupState {
    schema: SchemaRef,
    /// The leading columns of `schema` that form the group key.
    groups: usize,
    /// The schema of a chunk's values.
    values: SchemaRef,
    converter: Option<RowConverter>,
    chunks: Vec<Chunk>,
    index: HashTable<Slot>,
    hasher: RandomState,
    /// Bytes of `chunks`.
    chunk_bytes: usize,
    garbage: usize,
    /// What the state holds, reserved in the memory pool.
    memory: MemoryReservation,
    expiry: Option<Expiry>,
    /// The values each group's `count(DISTINCT …)` aggregates have counted.
    sets: Option<Sets>,
}

impl std::fmt::Debug for GroupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupState")
            .field("groups", &self.index.len())
            .field("chunks", &self.chunks.len())
            .field("garbage", &self.garbage)
            .finish()
    }
}

fn internal(e: arrow::error::ArrowError) -> Error {
    Error::Internal(format!("aggregate state: {e}"))
}

/// `rows` in buffers of its own. Aggregations hand out their groups as slices of larger
/// arrays; a slice kept in the state would keep the whole array alive (and be counted as
/// all of it), so one much smaller than its buffers is copied out of them. Lists (and
/// structs, which may hold them) are always copied: a slice of a list keeps all of its
/// values, and Arrow counts them all as the slice's.
fn owned(rows: RecordBatch) -> Result<RecordBatch> {
    let mut used = 0;
    let mut nested = false;
    for column in rows.columns() {
        used += column.to_data().get_slice_memory_size().map_err(internal)?;
        nested |= column.data_type().is_nested();
    }
    if !nested && rows.get_array_memory_size() <= 2 * used.max(4096) {
        return Ok(rows);
    }
    let all = UInt32Array::from_iter_values(0..rows.num_rows() as u32);
    take_rows(&rows, &all)
}

/// The rows of `batch` at `indices` (a batch without columns too, which Arrow's
/// `take_record_batch` refuses), in buffers no larger than they need: `take` grows the
/// buffers of variable-width values by doubling, up to twice what they hold.
fn take_rows(batch: &RecordBatch, indices: &UInt32Array) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .map(|c| {
            let mut taken = take(c, indices, None).map_err(internal)?;
            taken.shrink_to_fit();
            Ok(taken)
        })
        .collect::<Result<Vec<_>>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(indices.len()));
    RecordBatch::try_new_with_options(batch.schema(), columns, &options).map_err(internal)
}

impl GroupState {
    /// An empty state whose memory `memory` reserves (its consumer's name says whose).
    pub fn new(schema: SchemaRef, groups: usize, memory: MemoryReservation) -> Result<GroupState> {
        let converter = if groups == 0 {
            None
        } else {
            let fields = schema.fields()[..groups]
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect();
            Some(RowConverter::new(fields).map_err(internal)?)
        };
        let values = Arc::new(Schema::new(schema.fields()[groups..].to_vec()));
        Ok(GroupState {
            schema,
            groups,
            values,
            converter,
            chunks: vec![],
            index: HashTable::new(),
            hasher: RandomState::new(),
            chunk_bytes: 0,
            garbage: 0,
            memory,
            expiry: None,
            sets: None,
        })
    }

    /// The same state whose groups expire by `expiry` (see [`GroupState::evict`]).
    pub fn with_expiry(mut self, expiry: Option<Expiry>) -> GroupState {
        self.expiry = expiry;
        self
    }

    /// The same state keeping, per group, the values of its `count(DISTINCT …)`
    /// aggregates, which come in lists of `lists`' types (none: no sets). Rows upserted
    /// into it may then carry, after the state's columns, the values each adds to its
    /// group's sets (see [`Sets::novel`]).
    pub fn with_sets(mut self, lists: &[FieldRef]) -> Result<GroupState> {
        self.sets = match lists {
            [] => None,
            lists => Some(Sets::new(lists.to_vec())?),
        };
        Ok(self)
    }

    /// Memory the state holds: its rows (live and not yet compacted), its index and sets.
    pub fn memory_bytes(&self) -> usize {
        self.chunk_bytes
            + self.index.capacity() * INDEX_SLOT_BYTES * 8 / 7
            + self.sets.as_ref().map_or(0, Sets::memory_bytes)
    }

    /// Of `lists` (one list array per `count(DISTINCT …)`, a row per group), the values
    /// the groups of `keys` (their group columns) have not counted: per aggregate, how
    /// many per row, and those values, as lists.
    pub fn novel(
        &self,
        keys: &[ArrayRef],
        lists: &[ArrayRef],
    ) -> Result<(Vec<ArrayRef>, Vec<ArrayRef>)> {
        let Some(sets) = &self.sets else {
            return Err(Error::Internal(
                "distinct values looked up in a state without sets".into(),
            ));
        };
        let rows = lists.first().map_or(0, |l| l.len());
        let probe = self.probe(keys, rows)?;
        sets.novel(|i| probe.key(i), lists)
    }

    /// Every value the groups whose group columns lead `rows` have counted, per
    /// `count(DISTINCT …)`: a list per row (what a snapshot of the state writes).
    pub fn set_lists(&self, rows: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let Some(sets) = &self.sets else {
            return Ok(vec![]);
        };
        let probe = self.probe(&rows.columns()[..self.groups], rows.num_rows())?;
        sets.lists(|i| probe.key(i), rows.num_rows())
    }

    /// What a snapshot of the state writes, and a replay of it reads: a row per group and
    /// each value in the groups' sets.
    pub fn entries(&self) -> u64 {
        (self.len() + self.sets.as_ref().map_or(0, Sets::values)) as u64
    }

    /// Live groups.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The group columns and the value columns at `values` (positions after the group
    /// columns), read out as `schema`.
    pub fn columns(&self, schema: SchemaRef, values: Range<usize>) -> Result<Columns> {
        let values: Vec<usize> = values.collect();
        let fits = schema.fields().len() == self.groups + values.len()
            && values.iter().all(|v| *v < self.values.fields().len());
        if !fits {
            return Err(Error::Internal(format!(
                "aggregate state: {} columns cannot be read as {schema:?}",
                self.schema.fields().len()
            )));
        }
        Ok(Columns { schema, values })
    }

    /// Every column, as the state's own schema.
    pub fn all_columns(&self) -> Columns {
        Columns {
            schema: self.schema.clone(),
            values: (0..self.values.fields().len()).collect(),
        }
    }

    /// The keys of `key_columns` (`rows` rows of them).
    fn probe(&self, key_columns: &[ArrayRef], rows: usize) -> Result<Probe> {
        match &self.converter {
            None => Ok(Probe::One(rows)),
            Some(converter) => converter
                .convert_columns(key_columns)
                .map(Probe::Rows)
                .map_err(internal),
        }
    }

    fn find(&self, key: &[u8]) -> Option<Slot> {
        let hash = self.hasher.hash_one(key);
        self.index
            .find(hash, |s| key_at(&self.chunks, *s) == key)
            .copied()
    }

    /// The current rows (as `out`) of the groups that appear in `rows`, if any do; `rows`
    /// begins with the group columns.
    pub fn lookup(&self, rows: &RecordBatch, out: &Columns) -> Result<Option<RecordBatch>> {
        self.lookup_columns(&rows.columns()[..self.groups], rows.num_rows(), out)
    }

    /// The current rows (as `out`) of the groups whose group columns are `keys` (`rows`
    /// rows), if any exist.
    pub fn lookup_columns(
        &self,
        keys: &[ArrayRef],
        rows: usize,
        out: &Columns,
    ) -> Result<Option<RecordBatch>> {
        let mut found: Vec<Slot> = match self.probe(keys, rows)? {
            Probe::One(0) => vec![],
            Probe::One(_) => self.find(&[]).into_iter().collect(),
            Probe::Rows(keys) => keys.iter().filter_map(|k| self.find(k.data())).collect(),
        };
        if found.is_empty() {
            return Ok(None);
        }
        // One group may be asked for several times; its row is wanted once.
        found.sort_unstable();
        found.dedup();
        self.gather(&found, out).map(Some)
    }

    /// The rows at `slots` (sorted), as `out`.
    fn gather(&self, slots: &[Slot], out: &Columns) -> Result<RecordBatch> {
        let (chunks, at) = used_chunks(|i| &self.chunks[i as usize], slots);
        let mut columns: Vec<ArrayRef> = match &self.converter {
            None => vec![],
            Some(converter) => converter
                .convert_rows(at.iter().map(|(c, row)| chunk_key_row(chunks[*c], *row)))
                .map_err(internal)?,
        };
        for value in &out.values {
            let arrays: Vec<&dyn Array> = chunks
                .iter()
                .map(|c| c.values.column(*value).as_ref())
                .collect();
            columns.push(interleave(&arrays, &at).map_err(internal)?);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(slots.len()));
        RecordBatch::try_new_with_options(out.schema.clone(), columns, &options).map_err(internal)
    }

    /// Every live row (as `out`), in batches of at most [`STATE_BATCH_ROWS`] (none when
    /// empty).
    pub fn rows(&self, out: &Columns) -> Result<Vec<RecordBatch>> {
        self.live()
            .chunks(STATE_BATCH_ROWS)
            .map(|slots| self.gather(slots, out))
            .collect()
    }

    /// Where every live row is, in order.
    fn live(&self) -> Vec<Slot> {
        let mut live: Vec<Slot> = self.index.iter().copied().collect();
        live.sort_unstable();
        live
    }

    /// Rows of this state's schema: each row of `first` (one per group, in its columns),
    /// then the values of its group's row in `second` (which holds every group of `first`
    /// once, in any order). A view's rows are its groups' partial state beside their final
    /// values, which an aggregation computes in an order of its own.
    pub fn side_by_side(&self, first: &RecordBatch, second: &[RecordBatch]) -> Result<RecordBatch> {
        let n = first.num_rows();
        if n == 0 {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        let Some(one) = second.first() else {
            return Err(Error::Internal(
                "aggregate state: groups without values".into(),
            ));
        };
        let second = arrow::compute::concat_batches(&one.schema(), second).map_err(internal)?;
        let at: Vec<u32> = match &self.converter {
            None if second.num_rows() == 1 => vec![0; n],
            None => {
                return Err(Error::Internal(format!(
                    "aggregate state: {} rows of values for one group",
                    second.num_rows()
                )));
            }
            Some(converter) => same_groups(
                converter,
                &first.columns()[..self.groups],
                &second.columns()[..self.groups],
            )?,
        };
        let values = second
            .project(&(self.groups..second.num_columns()).collect::<Vec<_>>())
            .map_err(internal)?;
        let values = take_rows(&values, &UInt32Array::from(at))?;
        let mut columns = first.columns().to_vec();
        columns.extend(values.columns().iter().cloned());
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )
        .map_err(internal)
    }

    /// Makes `rows` the current rows of their groups (at most one row per group), all of
    /// them, then reserves what the state holds: over the memory limit, the state is whole
    /// and the error says so.
    pub fn upsert(&mut self, rows: RecordBatch) -> Result<()> {
        let width = self.schema.fields().len();
        let lists = self.sets.as_ref().map_or(0, Sets::len);
        let rows = if lists > 0 && rows.num_columns() == width + lists {
            let probe = self.probe(&rows.columns()[..self.groups], rows.num_rows())?;
            if let Some(sets) = &mut self.sets {
                sets.add(|i| probe.key(i), &rows.columns()[width..])?;
            }
            rows.project(&(0..width).collect::<Vec<_>>())
                .map_err(internal)?
        } else {
            rows
        };
        let mut start = 0;
        while start < rows.num_rows() {
            let len = STATE_BATCH_ROWS.min(rows.num_rows() - start);
            let piece = rows.slice(start, len);
            let keys = self
                .converter
                .as_ref()
                .map(|c| c.convert_columns(&piece.columns()[..self.groups]))
                .transpose()
                .map_err(internal)?;
            let values = RecordBatch::try_new_with_options(
                self.values.clone(),
                piece.columns()[self.groups..].to_vec(),
                &RecordBatchOptions::new().with_row_count(Some(len)),
            )
            .map_err(internal)?;
            let expiry = match &self.expiry {
                Some(e) => Some(Expiries::new(e.of(piece.column(e.column))?)),
                None => None,
            };
            self.insert(Chunk {
                keys,
                values: owned(values)?,
                expiry,
            });
            self.merge_tail()?;
            start += len;
        }
        if self.compaction_due() {
            self.compact()?;
        }
        self.reserve()
    }

    /// Removes the groups whose group columns lead `rows` (a session merged into another,
    /// whose key is gone); groups it does not hold are passed over.
    pub fn remove(&mut self, rows: &RecordBatch) -> Result<()> {
        let Probe::Rows(keys) = self.probe(&rows.columns()[..self.groups], rows.num_rows())? else {
            return Err(Error::Internal(
                "groups removed from an aggregate without group columns".into(),
            ));
        };
        for key in keys.iter() {
            if let Some(sets) = &mut self.sets {
                sets.remove(key.data());
            }
            let hash = self.hasher.hash_one(key.data());
            let chunks = &self.chunks;
            if let Ok(entry) = self
                .index
                .find_entry(hash, |s| key_at(chunks, *s) == key.data())
            {
                entry.remove();
                self.garbage += 1;
            }
        }
        if self.compaction_due() {
            self.compact()?;
        }
        self.reserve()
    }

    /// Of `rows` (rows of some groups, in this state's leading columns), those whose groups
    /// are still open after `bound`: all a changelog needs to hold of them, since a restore
    /// evicts the others again.
    pub fn open_after(&self, bound: Option<i64>, rows: &RecordBatch) -> Result<RecordBatch> {
        let (Some(expiry), Some(bound)) = (&self.expiry, bound) else {
            return Ok(rows.clone());
        };
        let open: BooleanArray = expiry
            .of(rows.column(expiry.column))?
            .into_iter()
            .map(|at| Some(at > bound))
            .collect();
        arrow::compute::filter_record_batch(rows, &open).map_err(internal)
    }

    /// The groups that expire at or before `bound` once `fresh` (newer rows of some groups,
    /// in this state's leading columns, as `out` reads them) is upserted: their rows as
    /// `out`, the state left as it is.
    pub fn expired(
        &self,
        bound: i64,
        out: &Columns,
        fresh: &RecordBatch,
    ) -> Result<Vec<RecordBatch>> {
        let Some(expiry) = &self.expiry else {
            return Ok(vec![]);
        };
        let renewed: std::collections::HashSet<Vec<u8>> =
            match self.probe(&fresh.columns()[..self.groups], fresh.num_rows())? {
                Probe::One(0) => Default::default(),
                Probe::One(_) => [vec![]].into(),
                Probe::Rows(keys) => keys.iter().map(|k| k.data().to_vec()).collect(),
            };
        let mut slots: Vec<Slot> = vec![];
        for (c, chunk) in self.chunks.iter().enumerate() {
            let Some(expiries) = &chunk.expiry else {
                continue;
            };
            if expiries.min > bound || expiries.evicted >= bound {
                continue;
            }
            for (row, at) in expiries.at.iter().enumerate() {
                let slot = Slot {
                    chunk: c as u32,
                    row: row as u32,
                };
                if *at <= bound
                    && *at > expiries.evicted
                    && self.find(key_at(&self.chunks, slot)) == Some(slot)
                    && !renewed.contains(key_at(&self.chunks, slot))
                {
                    slots.push(slot);
                }
            }
        }
        let mut rows = slots
            .chunks(STATE_BATCH_ROWS)
            .map(|slots| self.gather(slots, out))
            .collect::<Result<Vec<_>>>()?;
        let closing: BooleanArray = expiry
            .of(fresh.column(expiry.column))?
            .into_iter()
            .map(|at| Some(at <= bound))
            .collect();
        let fresh = arrow::compute::filter_record_batch(fresh, &closing).map_err(internal)?;
        if fresh.num_rows() > 0 {
            // `fresh` may carry values for the sets after its columns.
            let columns = fresh.columns()[..out.schema.fields().len()].to_vec();
            rows.push(RecordBatch::try_new(out.schema.clone(), columns).map_err(internal)?);
        }
        Ok(rows)
    }

    /// Removes the groups that expire at or before `bound` and returns their rows (as
    /// `out`, in batches of at most [`STATE_BATCH_ROWS`]). Only chunks holding rows that
    /// expire in the newly passed span are looked at.
    pub fn evict(&mut self, bound: i64, out: &Columns) -> Result<Vec<RecordBatch>> {
        let mut gone: Vec<Slot> = vec![];
        for (c, chunk) in self.chunks.iter_mut().enumerate() {
            let Some(expiry) = &mut chunk.expiry else {
                continue;
            };
            if expiry.min > bound || expiry.evicted >= bound {
                continue;
            }
            for (row, at) in expiry.at.iter().enumerate() {
                if *at <= bound && *at > expiry.evicted {
                    gone.push(Slot {
                        chunk: c as u32,
                        row: row as u32,
                    });
                }
            }
            expiry.evicted = bound;
        }
        // Rows superseded by a later row of their group are garbage already.
        gone.retain(|slot| self.find(key_at(&self.chunks, *slot)) == Some(*slot));
        if gone.is_empty() {
            return Ok(vec![]);
        }
        let rows = gone
            .chunks(STATE_BATCH_ROWS)
            .map(|slots| self.gather(slots, out))
            .collect::<Result<Vec<_>>>()?;
        for slot in &gone {
            if let Some(sets) = &mut self.sets {
                sets.remove(key_at(&self.chunks, *slot));
            }
            let hash = self.hasher.hash_one(key_at(&self.chunks, *slot));
            if let Ok(entry) = self.index.find_entry(hash, |s| s == slot) {
                entry.remove();
                self.garbage += 1;
            }
        }
        if self.compaction_due() {
            self.compact()?;
        }
        self.reserve()?;
        Ok(rows)
    }

    /// Garbage outweighs half the live rows.
    fn compaction_due(&self) -> bool {
        self.garbage > (self.index.len() / 2).max(1024)
    }

    /// Resizes the reservation to what the state holds now.
    fn reserve(&mut self) -> Result<()> {
        let bytes = self.memory_bytes();
        self.memory.try_resize(bytes).map_err(|e| {
            Error::plan(
                "53200",
                format!(
                    "out of memory: the {} holds {} MiB, more than --memory-limit leaves it ({e})",
                    self.memory.consumer().name(),
                    bytes >> 20
                ),
            )
        })
    }

    /// Appends `chunk` and points its groups at its rows.
    fn insert(&mut self, chunk: Chunk) {
        let at = self.chunks.len() as u32;
        let rows = chunk.values.num_rows();
        self.chunk_bytes += chunk.bytes();
        self.chunks.push(chunk);
        let GroupState {
            chunks,
            index,
            hasher,
            garbage,
            ..
        } = self;
        for row in 0..rows as u32 {
            let slot = Slot { chunk: at, row };
            let key = key_at(chunks, slot);
            let hash = hasher.hash_one(key);
            let entry = index.entry(
                hash,
                |s| key_at(chunks, *s) == key,
                |s| hasher.hash_one(key_at(chunks, *s)),
            );
            match entry {
                Entry::Occupied(mut old) => {
                    *old.get_mut() = slot;
                    *garbage += 1;
                }
                Entry::Vacant(free) => {
                    free.insert(slot);
                }
            }
        }
    }

    /// Drops the rows no group points at any more, rewriting the live ones into full
    /// chunks. Each old chunk is freed once its last live row has moved, so the state is
    /// never held twice.
    fn compact(&mut self) -> Result<()> {
        let live = self.live();
        let mut old: Vec<Option<Chunk>> = std::mem::take(&mut self.chunks)
            .into_iter()
            .map(Some)
            .collect();
        self.index = HashTable::with_capacity(live.len());
        self.chunk_bytes = 0;
        self.garbage = 0;
        for slots in live.chunks(STATE_BATCH_ROWS) {
            let chunk = {
                let (chunks, at) = used_chunks(
                    |i| {
                        old[i as usize]
                            .as_ref()
                            .expect("a chunk with live rows is kept")
                    },
                    slots,
                );
                self.rebuild(&chunks, &at)?
            };
            // Every chunk before the last one these rows came from is used up.
            let last = slots[slots.len() - 1].chunk as usize;
            old[..last].iter_mut().for_each(|c| *c = None);
            self.insert(chunk);
        }
        Ok(())
    }

    /// Merges the small chunks at the end, once there are [`TAIL_CHUNKS`] of them, into
    /// full ones, dropping their garbage: epochs that each change a few groups leave few
    /// chunks, at a cost per epoch that does not grow with the state.
    fn merge_tail(&mut self) -> Result<()> {
        let start = self
            .chunks
            .iter()
            .rposition(|c| c.values.num_rows() >= STATE_BATCH_ROWS)
            .map_or(0, |full| full + 1);
        if self.chunks.len() - start < TAIL_CHUNKS {
            return Ok(());
        }
        // The tail's live rows leave the index first, while every slot is valid.
        let mut live: Vec<(usize, usize)> = vec![];
        for (i, chunk) in self.chunks[start..].iter().enumerate() {
            for row in 0..chunk.values.num_rows() as u32 {
                let slot = Slot {
                    chunk: (start + i) as u32,
                    row,
                };
                let hash = self.hasher.hash_one(chunk.key(row));
                match self.index.find_entry(hash, |s| *s == slot) {
                    Ok(entry) => {
                        entry.remove();
                        live.push((i, row as usize));
                    }
                    Err(_) => self.garbage = self.garbage.saturating_sub(1),
                }
            }
        }
        let tail = self.chunks.split_off(start);
        self.chunk_bytes -= tail.iter().map(Chunk::bytes).sum::<usize>();
        let tail: Vec<&Chunk> = tail.iter().collect();
        for at in live.chunks(STATE_BATCH_ROWS) {
            let chunk = self.rebuild(&tail, at)?;
            self.insert(chunk);
        }
        Ok(())
    }

    /// A chunk of the rows `at` of `chunks`.
    fn rebuild(&self, chunks: &[&Chunk], at: &[(usize, usize)]) -> Result<Chunk> {
        let keys = self.converter.as_ref().map(|converter| {
            let bytes = at
                .iter()
                .map(|(c, row)| chunks[*c].key(*row as u32).len())
                .sum();
            let mut keys = converter.empty_rows(at.len(), bytes);
            for (c, row) in at {
                keys.push(chunk_key_row(chunks[*c], *row));
            }
            keys
        });
        let values = interleave_values(chunks, at, &self.values)?;
        let expiry = self.expiry.map(|_| {
            Expiries::new(
                at.iter()
                    .map(|(c, row)| chunks[*c].expiry.as_ref().map_or(i64::MAX, |e| e.at[*row]))
                    .collect(),
            )
        });
        Ok(Chunk {
            keys,
            values,
            expiry,
        })
    }
}

/// An aggregation's groups as its task and a view's readers share them: one row per group
/// holding its partial state (what the next epoch merges into) and, for a view, its final
/// values beside it (what `SELECT` reads).
pub struct Groups {
    state: RwLock<GroupState>,
    /// Each group's partial state, as the aggregation merges it.
    pub partial: Columns,
    /// A view's final values of each group, as the aggregation outputs them.
    pub finals: Option<Columns>,
    /// A group's partial state followed by the values it adds to its sets: what an
    /// epoch's merge returns and its changelog records.
    pub changelog: SchemaRef,
}

impl Groups {
    /// Empty groups of an aggregation whose partial state is `partial` (group columns
    /// first, `groups` of them) and, for a view, whose final values are `finals`; with
    /// sets of the values of the `count(DISTINCT …)` aggregates whose values come in
    /// lists of `sets`' types.
    pub fn new(
        partial: &SchemaRef,
        finals: Option<&SchemaRef>,
        groups: usize,
        expiry: Option<Expiry>,
        sets: &[FieldRef],
        memory: MemoryReservation,
    ) -> Result<Groups> {
        let width = partial.fields().len() - groups;
        let mut fields = partial.fields().to_vec();
        if let Some(finals) = finals {
            fields.extend(finals.fields()[groups..].iter().cloned());
        }
        let state = GroupState::new(Arc::new(Schema::new(fields)), groups, memory)?
            .with_expiry(expiry)
            .with_sets(sets)?;
        let partial_columns = state.columns(partial.clone(), 0..width)?;
        let final_columns = match finals {
            Some(finals) => {
                let values = finals.fields().len() - groups;
                Some(state.columns(finals.clone(), width..width + values)?)
            }
            None => None,
        };
        Ok(Groups {
            state: RwLock::new(state),
            partial: partial_columns,
            finals: final_columns,
            changelog: Arc::new(Schema::new(changelog_fields(partial, sets))),
        })
    }

    pub fn read(&self) -> RwLockReadGuard<'_, GroupState> {
        self.state.read().expect("state lock")
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, GroupState> {
        self.state.write().expect("state lock")
    }

    /// The stored partial state of the groups in `rows`, if any.
    pub fn lookup_partial(&self, rows: &RecordBatch) -> Result<Option<RecordBatch>> {
        self.read().lookup(rows, &self.partial)
    }

    /// See [`GroupState::novel`].
    pub fn novel(
        &self,
        keys: &[ArrayRef],
        lists: &[ArrayRef],
    ) -> Result<(Vec<ArrayRef>, Vec<ArrayRef>)> {
        self.read().novel(keys, lists)
    }

    /// What is stored for groups whose merged partial state (and values added to their
    /// sets) is `merged` and whose final values are `finals`.
    pub fn to_store(&self, merged: &RecordBatch, finals: &[RecordBatch]) -> Result<RecordBatch> {
        if self.finals.is_none() {
            return Ok(merged.clone());
        }
        let width = self.partial.schema.fields().len();
        let partial = merged
            .project(&(0..width).collect::<Vec<_>>())
            .map_err(internal)?;
        let stored = self.read().side_by_side(&partial, finals)?;
        if merged.num_columns() == width {
            return Ok(stored);
        }
        let mut fields = stored.schema().fields().to_vec();
        fields.extend(self.changelog.fields()[width..].iter().cloned());
        let mut columns = stored.columns().to_vec();
        columns.extend(merged.columns()[width..].iter().cloned());
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(internal)
    }

    /// What changelog rows `rows` hold, counted as [`GroupState::entries`] counts: a row
    /// each, and each value they add to sets.
    pub fn entries(&self, rows: &RecordBatch) -> u64 {
        let width = self.partial.schema.fields().len();
        let values: usize = rows
            .columns()
            .iter()
            .skip(width)
            .map(|c| {
                let offsets = c.as_list::<i32>().offsets();
                (offsets[offsets.len() - 1] - offsets[0]) as usize
            })
            .sum();
        (rows.num_rows() + values) as u64
    }

    /// Every group's partial state and all the values in its sets, as changelog rows: a
    /// snapshot of `state` (these groups', read).
    pub fn changelog_rows(&self, state: &GroupState) -> Result<Vec<RecordBatch>> {
        state
            .rows(&self.partial)?
            .into_iter()
            .map(|rows| {
                let mut columns = rows.columns().to_vec();
                columns.extend(state.set_lists(&rows)?);
                RecordBatch::try_new(self.changelog.clone(), columns).map_err(internal)
            })
            .collect()
    }
}

/// A group's partial state (`partial`) followed by the lists of values it adds to its
/// `sets`: what its changelog records.
pub fn changelog_fields(partial: &SchemaRef, sets: &[FieldRef]) -> Fields {
    partial.fields().iter().chain(sets).cloned().collect()
}

/// For each row of the group columns `rows`, the row of the group columns `of` that is the
/// same group (each group is in `of` once); `converter` converts such columns.
pub fn same_groups(
    converter: &RowConverter,
    rows: &[ArrayRef],
    of: &[ArrayRef],
) -> Result<Vec<u32>> {
    let theirs = converter.convert_columns(of).map_err(internal)?;
    let position: std::collections::HashMap<&[u8], u32> = theirs
        .iter()
        .enumerate()
        .map(|(i, key)| (key.data(), i as u32))
        .collect();
    let ours = converter.convert_columns(rows).map_err(internal)?;
    ours.iter()
        .map(|key| {
            position
                .get(key.data())
                .copied()
                .ok_or_else(|| Error::Internal("aggregate state: a group without its row".into()))
        })
        .collect()
}

/// The keys of the rows an index is asked about.
enum Probe {
    /// Rows of a state without group columns: they are all its one group.
    One(usize),
    Rows(Rows),
}

impl Probe {
    fn key(&self, i: usize) -> &[u8] {
        match self {
            Probe::One(_) => &[],
            Probe::Rows(rows) => rows.row(i).data(),
        }
    }
}

fn chunk_key_row(chunk: &Chunk, row: usize) -> Row<'_> {
    chunk
        .keys
        .as_ref()
        .expect("a state with group columns has keys")
        .row(row)
}

/// Every value column of the rows `at` of `chunks`, as one batch of `schema`.
fn interleave_values(
    chunks: &[&Chunk],
    at: &[(usize, usize)],
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let columns = (0..schema.fields().len())
        .map(|i| {
            let arrays: Vec<&dyn Array> =
                chunks.iter().map(|c| c.values.column(i).as_ref()).collect();
            interleave(&arrays, at).map_err(internal)
        })
        .collect::<Result<Vec<_>>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(at.len()));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options).map_err(internal)
}

/// The distinct chunks `slots` (sorted) point into, and each slot as (position among
/// them, row): reading a few rows touches only their chunks.
fn used_chunks<'a>(
    chunk: impl Fn(u32) -> &'a Chunk,
    slots: &[Slot],
) -> (Vec<&'a Chunk>, Vec<(usize, usize)>) {
    let mut used: Vec<&Chunk> = vec![];
    let mut at = Vec::with_capacity(slots.len());
    let mut previous = None;
    for slot in slots {
        if previous != Some(slot.chunk) {
            used.push(chunk(slot.chunk));
            previous = Some(slot.chunk);
        }
        at.push((used.len() - 1, slot.row as usize));
    }
    (used, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
    use datafusion::execution::memory_pool::{
        GreedyMemoryPool, MemoryConsumer, MemoryPool, UnboundedMemoryPool,
    };

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("count", DataType::Int64, false),
        ]))
    }

    fn unbounded() -> MemoryReservation {
        let pool: Arc<dyn MemoryPool> = Arc::new(UnboundedMemoryPool::default());
        MemoryConsumer::new("state").register(&pool)
    }

    fn rows(keys: &[Option<&str>], counts: &[i64]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(keys.to_vec())),
                Arc::new(Int64Array::from(counts.to_vec())),
            ],
        )
        .unwrap()
    }

    /// Every row is live or counted as garbage, and every group's slot holds its key.
    fn check(state: &GroupState) {
        let rows: usize = state.chunks.iter().map(|c| c.values.num_rows()).sum();
        assert_eq!(rows, state.len() + state.garbage);
        for slot in state.index.iter() {
            assert_eq!(state.find(key_at(&state.chunks, *slot)), Some(*slot));
        }
    }

    fn contents(state: &GroupState) -> Vec<(Option<String>, i64)> {
        check(state);
        let mut out = vec![];
        for rows in state.rows(&state.all_columns()).unwrap() {
            assert!(rows.num_rows() <= STATE_BATCH_ROWS);
            let keys = rows.column(0).as_string::<i32>();
            let counts = rows.column(1).as_primitive::<Int64Type>();
            out.extend((0..rows.num_rows()).map(|i| {
                (
                    keys.is_valid(i).then(|| keys.value(i).to_string()),
                    counts.value(i),
                )
            }));
        }
        out.sort();
        out
    }

    use arrow::array::Array;

    #[test]
    fn removed_groups_are_gone_and_others_stay() {
        let mut state = GroupState::new(schema(), 1, unbounded()).unwrap();
        state
            .upsert(rows(&[Some("a"), Some("b"), None], &[1, 2, 3]))
            .unwrap();
        state
            .remove(&rows(&[None, Some("a"), Some("nope")], &[0, 0, 0]))
            .unwrap();
        assert_eq!(contents(&state), [(Some("b".into()), 2)]);
        state.upsert(rows(&[Some("a")], &[7])).unwrap();
        assert_eq!(
            contents(&state),
            [(Some("a".into()), 7), (Some("b".into()), 2)],
            "a removed group can come again"
        );
    }

    #[test]
    fn upserts_replace_groups_and_lookups_find_them() {
        let mut state = GroupState::new(schema(), 1, unbounded()).unwrap();
        state
            .upsert(rows(&[Some("a"), Some("b"), None], &[1, 2, 3]))
            .unwrap();
        state.upsert(rows(&[Some("b")], &[20])).unwrap();
        assert_eq!(state.len(), 3);
        assert_eq!(
            contents(&state),
            vec![(None, 3), (Some("a".into()), 1), (Some("b".into()), 20)]
        );
        let found = state
            .lookup(
                &rows(&[Some("b"), Some("zzz"), Some("b"), None], &[0, 0, 0, 0]),
                &state.all_columns(),
            )
            .unwrap()
            .unwrap();
        assert_eq!(found.num_rows(), 2, "b once, NULL once, zzz absent");
        assert!(
            state
                .lookup(&rows(&[Some("zzz")], &[0]), &state.all_columns())
                .unwrap()
                .is_none()
        );
    }

    /// Groups of (window end, key) with a count.
    fn windows(ends: &[i64], keys: &[&str], counts: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "window_end",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                true,
            ),
            Field::new("k", DataType::Utf8, true),
            Field::new("count", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(arrow::array::TimestampMicrosecondArray::from(ends.to_vec())),
                Arc::new(StringArray::from(keys.to_vec())),
                Arc::new(Int64Array::from(counts.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn closed_windows_leave_the_state_once_with_their_latest_rows() {
        let empty = windows(&[], &[], &[]);
        let expiry = Expiry { column: 0, plus: 0 };
        let mut state = GroupState::new(empty.schema(), 2, unbounded())
            .unwrap()
            .with_expiry(Some(expiry));
        let all = state.all_columns();
        state
            .upsert(windows(
                &[10, 10, 20, 30],
                &["a", "b", "a", "a"],
                &[1, 1, 1, 1],
            ))
            .unwrap();
        state
            .upsert(windows(&[10, 20], &["a", "a"], &[5, 7]))
            .unwrap();
        assert!(
            state.evict(9, &all).unwrap().is_empty(),
            "nothing ends by 9"
        );
        let gone = state.evict(20, &all).unwrap();
        let gone = arrow::compute::concat_batches(&all.schema, &gone).unwrap();
        let mut counts: Vec<(i64, String, i64)> = (0..gone.num_rows())
            .map(|i| {
                (
                    gone.column(0)
                        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                        .value(i),
                    gone.column(1).as_string::<i32>().value(i).to_string(),
                    gone.column(2).as_primitive::<Int64Type>().value(i),
                )
            })
            .collect();
        counts.sort();
        assert_eq!(
            counts,
            vec![
                (10, "a".into(), 5),
                (10, "b".into(), 1),
                (20, "a".into(), 7)
            ],
            "each closed group once, as last upserted"
        );
        assert_eq!(state.len(), 1);
        check(&state);
        assert!(state.evict(20, &all).unwrap().is_empty(), "evicted once");
        // Groups of a closed window that come again (a replay) close again.
        state.upsert(windows(&[10], &["a"], &[5])).unwrap();
        assert_eq!(state.evict(25, &all).unwrap()[0].num_rows(), 1);
        // Compaction carries the expiries along.
        let ends: Vec<i64> = (0..3000).map(|i| 100 + i % 3).collect();
        let keys: Vec<String> = (0..3000).map(|i| format!("k{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
        state.upsert(windows(&ends, &keys, &vec![1; 3000])).unwrap();
        state.upsert(windows(&ends, &keys, &vec![2; 3000])).unwrap();
        check(&state);
        let gone: usize = state
            .evict(101, &all)
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(
            gone, 2001,
            "window 30's group, and 100's and 101's thousands"
        );
        assert_eq!(state.len(), 1000);
        check(&state);
    }

    #[test]
    fn a_changelog_needs_only_the_groups_still_open() {
        let rows = windows(
            &[10, 20, 30, i64::MIN],
            &["a", "b", "c", "d"],
            &[1, 2, 3, 4],
        );
        let state = GroupState::new(rows.schema(), 2, unbounded()).unwrap();
        assert_eq!(state.open_after(Some(20), &rows).unwrap().num_rows(), 4);
        let state = state.with_expiry(Some(Expiry { column: 0, plus: 5 }));
        assert_eq!(state.open_after(None, &rows).unwrap().num_rows(), 4);
        let open = state.open_after(Some(20), &rows).unwrap();
        let keys: Vec<&str> = open.column(1).as_string::<i32>().iter().flatten().collect();
        assert_eq!(
            keys,
            ["b", "c"],
            "ends 15 and the far past are closed by 20"
        );
    }

    #[test]
    fn compaction_keeps_exactly_the_live_rows() {
        let mut state = GroupState::new(schema(), 1, unbounded()).unwrap();
        for round in 0..50 {
            let keys: Vec<String> = (0..100).map(|k| format!("k{k}")).collect();
            let keys: Vec<Option<&str>> = keys.iter().map(|k| Some(k.as_str())).collect();
            state.upsert(rows(&keys, &[round; 100])).unwrap();
        }
        assert_eq!(state.len(), 100);
        assert!(state.garbage <= 1024, "compacted: {}", state.garbage);
        assert!(contents(&state).iter().all(|(_, c)| *c == 49));
    }

    #[test]
    fn many_groups_come_out_in_bounded_batches_and_memory_is_counted() {
        let mut state = GroupState::new(schema(), 1, unbounded()).unwrap();
        let empty = state.memory_bytes();
        let n = STATE_BATCH_ROWS * 2 + 10;
        let keys: Vec<String> = (0..n).map(|k| format!("key-{k:08}")).collect();
        let keys: Vec<Option<&str>> = keys.iter().map(|k| Some(k.as_str())).collect();
        state.upsert(rows(&keys, &vec![1; n])).unwrap();
        let held = state.memory_bytes();
        assert!(held > empty + n * 12, "{held}");
        let sizes: Vec<usize> = state
            .rows(&state.all_columns())
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .collect();
        assert_eq!(sizes, vec![STATE_BATCH_ROWS, STATE_BATCH_ROWS, 10]);
        // Rewriting every group twice leaves garbage; compaction gives its memory back.
        state.upsert(rows(&keys, &vec![2; n])).unwrap();
        state.upsert(rows(&keys, &vec![3; n])).unwrap();
        assert_eq!(state.len(), n);
        assert!(
            state.memory_bytes() < held * 2,
            "{} vs {held}",
            state.memory_bytes()
        );
        assert!(contents(&state).iter().all(|(_, c)| *c == 3));
    }

    #[test]
    fn slices_of_larger_arrays_are_held_and_counted_as_their_own_rows() {
        let n = 100_000;
        let keys: Vec<String> = (0..n).map(|k| format!("key-{k:08}")).collect();
        let keys: Vec<Option<&str>> = keys.iter().map(|k| Some(k.as_str())).collect();
        let big = rows(&keys, &vec![1; n]);
        let mut state = GroupState::new(schema(), 1, unbounded()).unwrap();
        for start in (0..n).step_by(10_000) {
            state.upsert(big.slice(start, 10_000)).unwrap();
        }
        // Ten slices of one batch: counted once, not ten times.
        assert!(
            state.memory_bytes() < 3 * big.get_array_memory_size(),
            "{} vs {}",
            state.memory_bytes(),
            big.get_array_memory_size()
        );
        assert_eq!(state.len(), n);
    }

    #[test]
    fn lists_are_held_in_buffers_the_size_of_their_rows() {
        // Groups keyed by number, each with a list of two texts: a list state.
        let item = Arc::new(Field::new_list_field(DataType::Utf8, true));
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("texts", DataType::List(item.clone()), true),
        ]));
        let n = 100_000;
        let texts: Vec<String> = (0..2 * n).map(|t| format!("text-{t:020}")).collect();
        let lists = arrow::array::ListArray::new(
            item,
            arrow::buffer::OffsetBuffer::from_lengths(std::iter::repeat_n(2, n)),
            Arc::new(StringArray::from(texts)),
            None,
        );
        let big = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
                Arc::new(lists),
            ],
        )
        .unwrap();
        let used: usize = big
            .columns()
            .iter()
            .map(|c| c.to_data().get_slice_memory_size().unwrap())
            .sum();
        let mut state = GroupState::new(schema, 1, unbounded()).unwrap();
        for start in (0..n).step_by(10_000) {
            state.upsert(big.slice(start, 10_000)).unwrap();
        }
        // A slice of a list holds all of its values: each slice would count the batch's,
        // ten times over; and copies made by growing buffers would hold up to twice what
        // they use. Held: the values once, their keys, the index.
        assert!(
            state.memory_bytes() < used * 3 / 2 + n * 32,
            "{} vs {used} used",
            state.memory_bytes()
        );
        assert_eq!(state.len(), n);
    }

    #[test]
    fn a_state_the_pool_has_no_room_for_is_refused_with_53200() {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(64 * 1024));
        let memory = MemoryConsumer::new("state of continuous query \"q\"").register(&pool);
        let mut state = GroupState::new(schema(), 1, memory).unwrap();
        state.upsert(rows(&[Some("a")], &[1])).unwrap();
        assert_eq!(pool.reserved(), state.memory_bytes());
        let keys: Vec<String> = (0..10_000).map(|k| format!("key-{k:08}")).collect();
        let keys: Vec<Option<&str>> = keys.iter().map(|k| Some(k.as_str())).collect();
        let error = state.upsert(rows(&keys, &vec![1; keys.len()])).unwrap_err();
        assert_eq!(error.sqlstate(), "53200");
        assert!(error.to_string().contains("query \"q\""), "{error}");
    }

    #[test]
    fn a_global_aggregate_has_one_group() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "count",
            DataType::Int64,
            false,
        )]));
        let mut state = GroupState::new(schema.clone(), 0, unbounded()).unwrap();
        let one = |n: i64| {
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![n]))]).unwrap()
        };
        state.upsert(one(5)).unwrap();
        state.upsert(one(7)).unwrap();
        assert_eq!(state.len(), 1);
        let rows = state.rows(&state.all_columns()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].column(0).as_primitive::<Int64Type>().value(0), 7);
        assert!(
            state
                .lookup(&one(0), &state.all_columns())
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn a_group_is_held_once_with_its_key_in_one_place() {
        // 100-byte keys: the key is not kept both in the row and in the index.
        let n = 50_000;
        let keys: Vec<String> = (0..n).map(|k| format!("{k:0100}")).collect();
        let keys: Vec<Option<&str>> = keys.iter().map(|k| Some(k.as_str())).collect();
        let mut state = GroupState::new(schema(), 1, unbounded()).unwrap();
        state.upsert(rows(&keys, &vec![1; n])).unwrap();
        let per_group = state.memory_bytes() / n;
        assert!(per_group < 200, "{per_group} bytes per group");
        // Upserting every group again and again, one small chunk at a time, keeps it so.
        for round in 0..4 {
            for keys in keys.chunks(500) {
                state.upsert(rows(keys, &vec![round; keys.len()])).unwrap();
            }
        }
        assert_eq!(state.len(), n);
        assert!(
            state.chunks.len() <= 2 * n.div_ceil(STATE_BATCH_ROWS) + TAIL_CHUNKS,
            "{} chunks",
            state.chunks.len()
        );
        let per_group = state.memory_bytes() / n;
        assert!(
            per_group < 300,
            "{per_group} bytes per group, garbage included"
        );
        assert!(contents(&state).iter().all(|(_, c)| *c == 3));
        let found = state
            .lookup_columns(
                &[Arc::new(StringArray::from(vec![keys[7], keys[n - 1]])) as ArrayRef],
                2,
                &state.all_columns(),
            )
            .unwrap()
            .unwrap();
        assert_eq!(found.num_rows(), 2);
    }

    #[test]
    fn final_values_are_stored_beside_their_groups_partial_state() {
        let finals_schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("doubled", DataType::Int64, false),
        ]));
        let groups =
            Groups::new(&schema(), Some(&finals_schema), 1, None, &[], unbounded()).unwrap();
        let merged = rows(&[Some("a"), None, Some("c")], &[1, 2, 3]);
        // The aggregation computes final values in an order of its own.
        let finals = RecordBatch::try_new(
            finals_schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![Some("c"), Some("a"), None])),
                Arc::new(Int64Array::from(vec![6, 2, 4])),
            ],
        )
        .unwrap();
        let stored = groups
            .to_store(&merged, &[finals.slice(0, 1), finals.slice(1, 2)])
            .unwrap();
        groups.write().upsert(stored).unwrap();
        let finals = groups.finals.as_ref().unwrap();
        let state = groups.read();
        let out = state.rows(finals).unwrap();
        assert_eq!(out[0].schema(), finals_schema);
        let keys = out[0].column(0).as_string::<i32>();
        let values = out[0].column(1).as_primitive::<Int64Type>();
        let mut pairs: Vec<(Option<&str>, i64)> = (0..3)
            .map(|i| (keys.is_valid(i).then(|| keys.value(i)), values.value(i)))
            .collect();
        pairs.sort();
        assert_eq!(pairs, vec![(None, 4), (Some("a"), 2), (Some("c"), 6)]);
        let partial = state.lookup(&merged, &groups.partial).unwrap().unwrap();
        assert_eq!(partial.schema(), schema());
        // Values missing for a group are an error, not a row of someone else's values.
        drop(state);
        let other = RecordBatch::try_new(
            finals_schema,
            vec![
                Arc::new(StringArray::from(vec![Some("zzz")])),
                Arc::new(Int64Array::from(vec![0])),
            ],
        )
        .unwrap();
        assert!(
            groups
                .to_store(&rows(&[Some("a")], &[1]), &[other])
                .is_err()
        );
    }

    #[test]
    fn epochs_of_few_groups_leave_few_chunks() {
        let mut state = GroupState::new(schema(), 1, unbounded()).unwrap();
        for i in 0..20_000 {
            // A new group, and an update of a hot one.
            let key = format!("k{i}");
            state
                .upsert(rows(&[Some(&key), Some("hot")], &[i, i]))
                .unwrap();
            if i % 997 == 0 {
                check(&state);
            }
        }
        assert_eq!(state.len(), 20_001);
        assert!(
            state.chunks.len() <= 3 + TAIL_CHUNKS,
            "{} chunks",
            state.chunks.len()
        );
        let all = contents(&state);
        assert_eq!(all[all.len() - 1], (Some("k9999".into()), 9999));
        assert!(all.contains(&(Some("hot".into()), 19_999)));
    }

    #[test]
    fn groups_without_aggregate_values_are_held_too() {
        // `SELECT DISTINCT k` (no aggregate): rows are keys alone, for a view too.
        let keys = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true)]));
        let groups = Groups::new(&keys, Some(&keys), 1, None, &[], unbounded()).unwrap();
        let batch = |k: &[&str]| {
            RecordBatch::try_new(keys.clone(), vec![Arc::new(StringArray::from(k.to_vec()))])
                .unwrap()
        };
        for round in 0..3 {
            let merged = batch(&["a", "b", "c"]);
            let stored = groups
                .to_store(&merged, &[batch(&["c", "b", "a"])])
                .unwrap();
            groups.write().upsert(stored).unwrap();
            assert_eq!(groups.read().len(), 3, "round {round}");
        }
        let state = groups.read();
        let out = state.rows(groups.finals.as_ref().unwrap()).unwrap();
        assert_eq!(out[0].num_rows(), 3);
        assert!(
            state
                .lookup(&batch(&["b"]), &groups.partial)
                .unwrap()
                .is_some()
        );
    }
}
