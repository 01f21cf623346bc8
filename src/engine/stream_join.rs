//! Joins of two streams: each side's rows are kept, indexed by join key, and every epoch
//! joins only what is new (DESIGN §5, the delta rule).
//!
//! For an inner equi-join `L ⋈ R` of append-only inputs, what an epoch adds to the result
//! is `ΔL ⋈ (R ∪ ΔR) ∪ L ⋈ ΔR`, where `L` and `R` are the rows of earlier epochs and `ΔL`,
//! `ΔR` the epoch's. Only the rows of `R` whose key is one of `ΔL`'s can meet a `ΔL` row,
//! so [`StreamJoinExec`] runs both sides over the epoch's records, takes from each side's
//! [`JoinState`] the rows of the keys the other side brings, and runs the query's own
//! `HashJoinExec` twice — over `ΔL` with those `R` rows and `ΔR`, then over those `L` rows
//! with `ΔR` — so every join semantic (residual filters, types, NULLs) stays DataFusion's.
//! Then `ΔL` and `ΔR` join the kept rows. An epoch costs its own rows and their matches,
//! not the whole state.
//!
//! The kept rows are what the join's sides produce — after the filters and projections
//! below the join — so a join keeps only rows that can match. They are all there is of
//! a side (inputs are append-only, and nothing bounds how late a match may come), so the
//! state grows with its inputs; it lives in memory, reserved against `--memory-limit`,
//! and is rebuilt when the query starts by running the sides over the input from where
//! the query started reading to its checkpoint (retention keeps those records while the
//! query exists).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::{cast, concat_batches, interleave_record_batch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{JoinType, NullEquality};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, collect,
};
use futures::{StreamExt, TryStreamExt};

/// The rows a join of two streams has seen on each side, kept between epochs.
pub struct JoinState {
    /// What the state is called in errors and in the memory pool.
    name: String,
    sides: Mutex<Sides>,
    /// While set, it only takes rows in, and joins nothing: its kept rows are being
    /// rebuilt, and its output was written long ago.
    rebuilding: AtomicBool,
}

struct Sides {
    /// Left, right.
    kept: [Side; 2],
    memory: Option<MemoryReservation>,
}

/// One side's rows, by join key.
#[derive(Default)]
struct Side {
    batches: Vec<RecordBatch>,
    /// Encoded join key → (batch, row) of every kept row with that key.
    by_key: HashMap<Box<[u8]>, Vec<(u32, u32)>>,
    /// The key columns' types, as encoded (the first batch's).
    key_types: Vec<DataType>,
    converter: Option<RowConverter>,
    rows: usize,
    bytes: usize,
}

/// What an index entry costs beyond its key's bytes.
const ENTRY_OVERHEAD: usize = 48;

impl fmt::Debug for JoinState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinState")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl JoinState {
    pub fn new(name: String) -> JoinState {
        JoinState {
            name,
            sides: Mutex::new(Sides {
                kept: [Side::default(), Side::default()],
                memory: None,
            }),
            rebuilding: AtomicBool::new(false),
        }
    }

    /// Takes the rows `join` (this state's [`StreamJoinExec`]) reads in, without joining
    /// them.
    pub async fn rebuild(
        &self,
        join: Arc<dyn ExecutionPlan>,
        ctx: Arc<TaskContext>,
    ) -> DfResult<()> {
        self.rebuilding.store(true, Ordering::Release);
        let out = collect(join, ctx).await;
        self.rebuilding.store(false, Ordering::Release);
        out.map(|_| ())
    }

    /// What its kept rows hold in memory.
    pub fn bytes(&self) -> usize {
        let sides = self.sides.lock().expect("join state lock");
        sides.kept.iter().map(|s| s.bytes).sum()
    }
}

impl Side {
    /// The encoded keys of `batch`'s rows (`None` for a row whose key has a NULL part and
    /// NULLs match nothing), with the key columns cast to the types this side encodes.
    fn keys(
        &mut self,
        batch: &RecordBatch,
        on: &[Arc<dyn PhysicalExpr>],
        nulls_match: bool,
    ) -> DfResult<Vec<Option<Box<[u8]>>>> {
        let mut columns: Vec<ArrayRef> = on
            .iter()
            .map(|e| e.evaluate(batch)?.into_array(batch.num_rows()))
            .collect::<DfResult<_>>()?;
        if self.converter.is_none() {
            self.key_types = columns.iter().map(|c| c.data_type().clone()).collect();
            let fields = self
                .key_types
                .iter()
                .map(|t| SortField::new(t.clone()))
                .collect();
            self.converter = Some(RowConverter::new(fields)?);
        }
        for (column, to) in columns.iter_mut().zip(&self.key_types) {
            if column.data_type() != to {
                *column = cast(column, to)?;
            }
        }
        let converter = self.converter.as_ref().expect("set above");
        let rows = converter.convert_columns(&columns)?;
        Ok((0..batch.num_rows())
            .map(|i| {
                let valid = nulls_match || columns.iter().all(|c| c.is_valid(i));
                valid.then(|| rows.row(i).as_ref().into())
            })
            .collect())
    }

    /// The kept rows whose key is one of `keys`, as one batch of `schema`.
    fn matching(&self, keys: &[Option<Box<[u8]>>], schema: &SchemaRef) -> DfResult<RecordBatch> {
        let mut seen = std::collections::HashSet::new();
        let mut at: Vec<(usize, usize)> = vec![];
        for key in keys.iter().flatten() {
            if seen.insert(key)
                && let Some(rows) = self.by_key.get(key)
            {
                at.extend(rows.iter().map(|(b, r)| (*b as usize, *r as usize)));
            }
        }
        if at.is_empty() {
            return Ok(RecordBatch::new_empty(schema.clone()));
        }
        let batches: Vec<&RecordBatch> = self.batches.iter().collect();
        Ok(interleave_record_batch(&batches, &at)?)
    }

    /// Keeps `batch`'s rows with a key (`keys`, one per row); returns the bytes added.
    fn keep(&mut self, batch: RecordBatch, keys: Vec<Option<Box<[u8]>>>) -> usize {
        let index = self.batches.len() as u32;
        let mut added = 0;
        let mut kept = 0;
        for (row, key) in keys.into_iter().enumerate() {
            let Some(key) = key else { continue };
            added += key.len() + ENTRY_OVERHEAD;
            self.by_key
                .entry(key)
                .or_default()
                .push((index, row as u32));
            kept += 1;
        }
        if kept == 0 {
            return 0;
        }
        added += batch.get_array_memory_size();
        self.rows += kept;
        self.batches.push(batch);
        self.bytes += added;
        added
    }
}

/// A stream–stream inner equi-join, run by the delta rule over its kept rows.
pub struct StreamJoinExec {
    /// The query's `HashJoinExec`, over the two sides as they read the epoch's records.
    join: Arc<dyn ExecutionPlan>,
    state: Arc<JoinState>,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for StreamJoinExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamJoinExec")
            .field("state", &self.state.name)
            .finish_non_exhaustive()
    }
}

/// Whether `plan` is a join that can run by the delta rule: an inner hash join (with an
/// equality between its sides).
pub fn is_delta_join(plan: &dyn ExecutionPlan) -> bool {
    plan.downcast_ref::<HashJoinExec>()
        .is_some_and(|j| *j.join_type() == JoinType::Inner)
}

impl StreamJoinExec {
    pub fn state(&self) -> &Arc<JoinState> {
        &self.state
    }

    /// `join` (an inner `HashJoinExec`, see [`is_delta_join`]) with `state`.
    pub fn new(join: Arc<dyn ExecutionPlan>, state: Arc<JoinState>) -> StreamJoinExec {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(join.schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        StreamJoinExec {
            join,
            state,
            properties: Arc::new(properties),
        }
    }

    async fn run(
        join: Arc<dyn ExecutionPlan>,
        state: Arc<JoinState>,
        ctx: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let hash = join
            .downcast_ref::<HashJoinExec>()
            .ok_or_else(|| DataFusionError::Internal("a stream join is a hash join".into()))?;
        let nulls_match = hash.null_equality == NullEquality::NullEqualsNull;
        let (left_on, right_on): (Vec<_>, Vec<_>) = hash.on().iter().cloned().unzip();
        let children = join.children();
        let [left, right] = children.as_slice() else {
            return Err(DataFusionError::Internal("a join has two sides".into()));
        };
        let (left, right) = ((*left).clone(), (*right).clone());
        // Each side's new rows in one batch of buffers of their own (a scan's batches may
        // be slices of larger ones, which kept as they are would hold all of those).
        let new_left = compact(&left.schema(), collect(left.clone(), ctx.clone()).await?)?;
        let new_right = compact(&right.schema(), collect(right.clone(), ctx.clone()).await?)?;

        let joining = !state.rebuilding.load(Ordering::Acquire);
        let (kept_left, kept_right, left_keys, right_keys);
        {
            let mut sides = state.sides.lock().expect("join state lock");
            let [l, r] = &mut sides.kept;
            let mut lk = vec![];
            for batch in &new_left {
                lk.push(l.keys(batch, &left_on, nulls_match)?);
            }
            let mut rk = vec![];
            for batch in &new_right {
                rk.push(r.keys(batch, &right_on, nulls_match)?);
            }
            // The other side's kept rows of the keys each side brings, encoded as that side
            // encodes them.
            let probe = |side: &mut Side,
                         batches: &[RecordBatch],
                         on: &[Arc<dyn PhysicalExpr>],
                         schema: SchemaRef|
             -> DfResult<RecordBatch> {
                if side.batches.is_empty() || !joining {
                    return Ok(RecordBatch::new_empty(schema));
                }
                let mut keys = vec![];
                for batch in batches {
                    keys.extend(side.keys(batch, on, nulls_match)?);
                }
                side.matching(&keys, &schema)
            };
            kept_right = probe(r, &new_left, &left_on, right.schema())?;
            kept_left = probe(l, &new_right, &right_on, left.schema())?;
            (left_keys, right_keys) = (lk, rk);
        }

        tracing::debug!(
            new_left = new_left.iter().map(|b| b.num_rows()).sum::<usize>(),
            new_right = new_right.iter().map(|b| b.num_rows()).sum::<usize>(),
            kept_left = kept_left.num_rows(),
            kept_right = kept_right.num_rows(),
            "join of streams"
        );
        // ΔL ⋈ (R ∪ ΔR), then L ⋈ ΔR.
        let mut first_right = vec![kept_right];
        first_right.extend(new_right.iter().cloned());
        let first = join
            .clone()
            .replace_children(
                vec![
                    memory(new_left.clone(), left.schema())?,
                    memory(first_right, right.schema())?,
                ],
                recompute(),
            )?
            .reset_state()?;
        // (Each its own build side: a hash join built once shares it with its copies.)
        let second = join
            .clone()
            .replace_children(
                vec![
                    memory(vec![kept_left], left.schema())?,
                    memory(new_right.clone(), right.schema())?,
                ],
                recompute(),
            )?
            .reset_state()?;
        let mut out = vec![];
        if joining {
            out = collect(first, ctx.clone()).await?;
            out.extend(collect(second, ctx.clone()).await?);
        }

        // The epoch's rows join the kept ones.
        {
            let mut sides = state.sides.lock().expect("join state lock");
            let Sides { kept, memory } = &mut *sides;
            let memory = memory.get_or_insert_with(|| {
                MemoryConsumer::new(state.name.clone()).register(ctx.memory_pool())
            });
            let mut added = 0;
            for (batch, keys) in new_left.into_iter().zip(left_keys) {
                added += kept[0].keep(batch, keys);
            }
            for (batch, keys) in new_right.into_iter().zip(right_keys) {
                added += kept[1].keep(batch, keys);
            }
            memory.try_grow(added)?;
        }
        let schema = join.schema();
        let stream = futures::stream::iter(out.into_iter().map(Ok));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// `batches` as at most one batch, in buffers of its own.
fn compact(schema: &SchemaRef, batches: Vec<RecordBatch>) -> DfResult<Vec<RecordBatch>> {
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Ok(vec![]);
    }
    Ok(vec![concat_batches(schema, &batches)?])
}

fn memory(batches: Vec<RecordBatch>, schema: SchemaRef) -> DfResult<Arc<dyn ExecutionPlan>> {
    super::plan::memory(batches, schema).map_err(|e| DataFusionError::External(Box::new(e)))
}

fn recompute() -> ReplaceChildrenOptions {
    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute)
}

impl DisplayAs for StreamJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamJoinExec: {}", self.state.name)
    }
}

impl ExecutionPlan for StreamJoinExec {
    fn name(&self) -> &'static str {
        "StreamJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.join.children()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let join = self.join.clone().replace_children(children, options)?;
        Ok(Arc::new(StreamJoinExec::new(join, self.state.clone())))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, recompute())
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "StreamJoinExec has one partition, not {partition}"
            )));
        }
        let run = Self::run(self.join.clone(), self.state.clone(), ctx);
        let stream = futures::stream::once(run).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.join.schema(),
            stream.boxed(),
        )))
    }
}
