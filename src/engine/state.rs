//! The state of an incremental aggregation: one row per group, in the aggregate's partial
//! state schema (group columns, then each aggregate's state columns).
//!
//! Rows live in Arrow batches; an index maps each group's key (its group columns in Arrow's
//! row format) to its live row. An epoch looks up the rows of the groups it touched, merges
//! them with the epoch's partial state, and upserts the results: new rows are appended and
//! the old ones become garbage, compacted away once garbage outweighs live rows. Reads copy
//! the live rows out, so they cost O(groups) per read, not per epoch; they come out (and
//! compaction rebuilds the state) in batches of at most [`STATE_BATCH_ROWS`] rows, so no
//! single array has to hold every group (Arrow's 32-bit offsets end at 2 GiB of text).
//! What the state holds ([`GroupState::memory_bytes`]) is reserved in the server's memory
//! pool after every change; state cannot spill, so a change that the pool has no room for
//! fails with 53200, whoever holds the state (a continuous query, a view, a push query).

use std::collections::HashMap;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::interleave_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use datafusion::execution::memory_pool::MemoryReservation;

use crate::error::{Error, Result};

/// Rows per batch of state read out or rebuilt.
pub const STATE_BATCH_ROWS: usize = 8192;

/// What one index entry costs beyond its key bytes: the boxed key's pointer and length, the
/// row position, and the hash table's slot and control byte.
const INDEX_ENTRY_BYTES: usize = 16 + 16 + 8;

pub struct GroupState {
    schema: SchemaRef,
    /// The leading columns of `schema` that form the group key.
    groups: usize,
    converter: Option<RowConverter>,
    batches: Vec<RecordBatch>,
    index: HashMap<Box<[u8]>, (usize, usize)>,
    /// Bytes of the keys in `index`.
    key_bytes: usize,
    /// Bytes of `batches`.
    batch_bytes: usize,
    garbage: usize,
    /// What the state holds, reserved in the memory pool.
    memory: MemoryReservation,
}

impl std::fmt::Debug for GroupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupState")
            .field("groups", &self.index.len())
            .field("garbage", &self.garbage)
            .finish()
    }
}

fn internal(e: arrow::error::ArrowError) -> Error {
    Error::Internal(format!("aggregate state: {e}"))
}

/// `rows` in buffers of its own. Aggregations hand out their groups as slices of larger
/// arrays; a slice kept in the state would keep the whole array alive (and be counted as
/// all of it), so one much smaller than its buffers is copied out of them.
fn owned(rows: RecordBatch) -> Result<RecordBatch> {
    let mut used = 0;
    for column in rows.columns() {
        used += column.to_data().get_slice_memory_size().map_err(internal)?;
    }
    if rows.get_array_memory_size() <= 2 * used.max(4096) {
        return Ok(rows);
    }
    let all = arrow::array::UInt32Array::from_iter_values(0..rows.num_rows() as u32);
    arrow::compute::take_record_batch(&rows, &all).map_err(internal)
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
        Ok(GroupState {
            schema,
            groups,
            converter,
            batches: vec![],
            index: HashMap::new(),
            key_bytes: 0,
            batch_bytes: 0,
            garbage: 0,
            memory,
        })
    }

    /// Memory the state holds: its rows (live and not yet compacted) and its index.
    pub fn memory_bytes(&self) -> usize {
        self.batch_bytes + self.key_bytes + self.index.capacity() * INDEX_ENTRY_BYTES
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Live groups.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The group keys of `rows` (which have this state's schema), in row order.
    fn keys(&self, rows: &RecordBatch) -> Result<Vec<Box<[u8]>>> {
        match &self.converter {
            None => Ok(vec![Box::from(&[][..]); rows.num_rows()]),
            Some(converter) => {
                let columns: Vec<ArrayRef> = rows.columns()[..self.groups].to_vec();
                let converted = converter.convert_columns(&columns).map_err(internal)?;
                Ok(converted.iter().map(|r| Box::from(r.as_ref())).collect())
            }
        }
    }

    /// The current rows of the groups that appear in `rows`, if any do.
    pub fn lookup(&self, rows: &RecordBatch) -> Result<Option<RecordBatch>> {
        self.lookup_keys(self.keys(rows)?)
    }

    /// The current rows of the groups whose key columns are `keys`, if any exist.
    pub fn lookup_columns(&self, keys: &[ArrayRef]) -> Result<Option<RecordBatch>> {
        let Some(converter) = &self.converter else {
            return Ok(self.rows()?.pop());
        };
        let converted = converter.convert_columns(keys).map_err(internal)?;
        self.lookup_keys(converted.iter().map(|r| Box::from(r.as_ref())).collect())
    }

    fn lookup_keys(&self, keys: Vec<Box<[u8]>>) -> Result<Option<RecordBatch>> {
        let mut found: Vec<(usize, usize)> = vec![];
        for key in keys {
            if let Some(at) = self.index.get(&key) {
                found.push(*at);
            }
        }
        if found.is_empty() {
            return Ok(None);
        }
        // One group may appear in `rows` several times; its old row is wanted once.
        found.sort_unstable();
        found.dedup();
        let batches: Vec<&RecordBatch> = self.batches.iter().collect();
        interleave_record_batch(&batches, &found)
            .map(Some)
            .map_err(internal)
    }

    /// Makes `rows` the current rows of their groups (at most one row per group).
    pub fn upsert(&mut self, rows: RecordBatch) -> Result<()> {
        self.upsert_all([rows])
    }

    /// Makes each batch's rows the current rows of their groups, all of them, then reserves
    /// what the state holds: over the memory limit, the state is whole and the error says so.
    pub fn upsert_all(&mut self, batches: impl IntoIterator<Item = RecordBatch>) -> Result<()> {
        for rows in batches.into_iter().filter(|b| b.num_rows() > 0) {
            self.insert(rows)?;
            if self.garbage > self.index.len().max(1024) {
                self.compact()?;
            }
        }
        self.reserve()
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

    fn insert(&mut self, rows: RecordBatch) -> Result<()> {
        let keys = self.keys(&rows)?;
        let at = self.batches.len();
        let rows = owned(rows)?;
        self.batch_bytes += rows.get_array_memory_size();
        self.batches.push(rows);
        for (row, key) in keys.into_iter().enumerate() {
            let len = key.len();
            if self.index.insert(key, (at, row)).is_some() {
                self.garbage += 1;
            } else {
                self.key_bytes += len;
            }
        }
        Ok(())
    }

    /// Every live row, in batches of at most [`STATE_BATCH_ROWS`] (none when empty).
    pub fn rows(&self) -> Result<Vec<RecordBatch>> {
        let mut live: Vec<(usize, usize)> = self.index.values().copied().collect();
        live.sort_unstable();
        let batches: Vec<&RecordBatch> = self.batches.iter().collect();
        live.chunks(STATE_BATCH_ROWS)
            .map(|chunk| interleave_record_batch(&batches, chunk).map_err(internal))
            .collect()
    }

    /// Drops the rows no group points at any more, rebuilding the state in bounded batches.
    fn compact(&mut self) -> Result<()> {
        let live = self.rows()?;
        self.batches.clear();
        self.index.clear();
        self.key_bytes = 0;
        self.batch_bytes = 0;
        self.garbage = 0;
        for batch in live {
            self.insert(batch)?;
        }
        self.index.shrink_to_fit();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
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

    fn contents(state: &GroupState) -> Vec<(Option<String>, i64)> {
        let mut out = vec![];
        for rows in state.rows().unwrap() {
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
            .lookup(&rows(
                &[Some("b"), Some("zzz"), Some("b"), None],
                &[0, 0, 0, 0],
            ))
            .unwrap()
            .unwrap();
        assert_eq!(found.num_rows(), 2, "b once, NULL once, zzz absent");
        assert!(state.lookup(&rows(&[Some("zzz")], &[0])).unwrap().is_none());
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
        let sizes: Vec<usize> = state.rows().unwrap().iter().map(|b| b.num_rows()).collect();
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
        let rows = state.rows().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].column(0).as_primitive::<Int64Type>().value(0), 7);
        assert!(state.lookup(&one(0)).unwrap().is_some());
    }
}
