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
//! below the join — so a join keeps only rows that can match. Without more, they are all
//! there is of a side (inputs are append-only, and nothing bounds how late a match may
//! come), and the state grows with the inputs. When the streams have watermarks and the
//! condition bounds one stream's watermark column by a time of the other side's rows
//! (`b.ts BETWEEN a.ts AND a.ts + INTERVAL '1 hour'`), those rows can go once that
//! watermark passes the bound ([`Expiry`]): an interval join. The state lives in memory,
//! reserved against `--memory-limit`, and is rebuilt when the query starts by running the
//! sides over the input from where the query started reading to its checkpoint (retention
//! keeps those records while the query exists), then letting go of what the committed
//! watermarks have passed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::{cast, concat_batches, filter_record_batch, interleave_record_batch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{JoinSide, JoinType, NullEquality};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::split_conjunction;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, collect,
};
use futures::{StreamExt, TryStreamExt};

use super::plan::recompute;
use crate::engine::checkpoint::InputOffset;
use crate::tables::scan::StreamScanExec;

/// The rows a join of two streams has seen on each side, kept between epochs.
pub struct JoinState {
    /// What the state is called in errors and in the memory pool.
    name: String,
    /// The continuous query it belongs to (unnamed while a query is only planned).
    owner: std::sync::OnceLock<String>,
    sides: Mutex<Sides>,
    /// While set, it only takes rows in, and joins nothing: its kept rows are being
    /// rebuilt, and its output was written long ago.
    rebuilding: AtomicBool,
    /// Per side, which of its rows can go as the other side's watermark passes them, and
    /// the streams each side reads (set as the join is planned).
    bounds: Mutex<Bounds>,
    /// The watermark of each of the query's inputs, as of the last epoch committed.
    watermarks: Mutex<Vec<Option<i64>>>,
    /// Where the epoch running now starts reading each input partition.
    reading: Mutex<Arc<Vec<InputOffset>>>,
}

#[derive(Default, Clone)]
struct Bounds {
    expiry: [Option<Expiry>; 2],
    streams: [Vec<String>; 2],
}

struct Sides {
    /// Left, right.
    kept: [Side; 2],
    /// How both sides encode their join keys, so that a key of one finds the other's.
    encoder: Encoder,
    memory: Option<MemoryReservation>,
}

/// One side's rows, by join key.
#[derive(Default)]
struct Side {
    /// Each epoch's rows, by a number of their own.
    batches: BTreeMap<u32, Kept>,
    next: u32,
    /// Encoded join key → (batch, row) of every kept row with that key.
    by_key: HashMap<Box<[u8]>, Vec<(u32, u32)>>,
    rows: usize,
    bytes: usize,
}

/// An epoch's rows of one side.
struct Kept {
    batch: RecordBatch,
    /// The memory they hold, index entries included.
    bytes: usize,
    /// Once the other side's watermark passes this, none of them can match a row to come;
    /// `None`: they may match any row.
    until: Option<i64>,
    /// Where the epoch that read them started reading each input partition.
    from: Arc<Vec<InputOffset>>,
}

/// Which rows of a side can go: those whose times in `columns` (of the side's rows, each
/// shifted by its microseconds) are all below the watermark of the query's input `input`
/// (the other side's stream), as the join condition holds only for rows of that stream
/// with an event time at most that.
#[derive(Clone, Debug, PartialEq)]
pub struct Expiry {
    columns: Vec<(usize, i64)>,
    input: usize,
}

/// A stream a query reads, for finding a join's bounds: its name, and the column of its
/// watermark, if it has one the query follows.
pub struct Watermarked<'a> {
    pub name: &'a str,
    pub column: Option<&'a str>,
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
            owner: std::sync::OnceLock::new(),
            sides: Mutex::new(Sides {
                kept: [Side::default(), Side::default()],
                encoder: Encoder::default(),
                memory: None,
            }),
            rebuilding: AtomicBool::new(false),
            bounds: Mutex::new(Bounds::default()),
            watermarks: Mutex::new(vec![]),
            reading: Mutex::new(Arc::new(vec![])),
        }
    }

    /// Names the continuous query it belongs to, for its errors and the memory pool.
    pub fn owned_by(&self, query: &str) {
        let _ = self.owner.set(query.to_string());
    }

    /// What it is called in errors and in the memory pool.
    fn called(&self) -> String {
        match self.owner.get() {
            Some(query) => format!("{} of continuous query \"{query}\"", self.name),
            None => self.name.clone(),
        }
    }

    /// Where the epoch about to run starts reading each input partition.
    pub fn set_reading(&self, from: Vec<InputOffset>) {
        *self.reading.lock().expect("join epoch lock") = Arc::new(from);
    }

    /// Whether both sides' kept rows go as the watermarks pass them.
    pub fn bounded(&self) -> bool {
        let bounds = self.bounds.lock().expect("join bounds lock");
        bounds.expiry.iter().all(Option::is_some)
    }

    /// Per input partition, where the oldest epoch whose rows it still keeps started
    /// reading it (partitions it keeps none of are left out).
    pub fn oldest_kept(&self) -> Vec<InputOffset> {
        let sides = self.sides.lock().expect("join state lock");
        let mut oldest: Vec<InputOffset> = vec![];
        for kept in sides.kept.iter().flat_map(|s| s.batches.values()) {
            for from in kept.from.iter() {
                match oldest
                    .iter_mut()
                    .find(|o| o.topic == from.topic && o.partition == from.partition)
                {
                    Some(o) => o.offset = o.offset.min(from.offset),
                    None => oldest.push(*from),
                }
            }
        }
        oldest
    }

    /// The watermark of each of the query's inputs now: kept rows the other side's
    /// watermark has passed go in the next epoch.
    pub fn set_watermarks(&self, watermarks: Vec<Option<i64>>) {
        *self.watermarks.lock().expect("join watermarks lock") = watermarks;
    }

    /// The streams of each side whose kept rows nothing bounds, with the join condition
    /// that would: `None` if both sides' rows go once the other's watermark passes them.
    pub fn unbounded(&self) -> Option<String> {
        let bounds = self.bounds.lock().expect("join bounds lock");
        let sides: Vec<String> = (0..2)
            .filter(|k| bounds.expiry[*k].is_none())
            .map(|k| bounds.streams[k].join(", "))
            .collect();
        (!sides.is_empty()).then(|| sides.join(" and "))
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

/// Join keys in Arrow's row format, the key columns cast to the types of the first
/// batch encoded (the two sides' key types are the same but for integer widths).
#[derive(Default)]
struct Encoder {
    types: Vec<DataType>,
    converter: Option<RowConverter>,
}

impl Encoder {
    /// The encoded keys of `batch`'s rows (`None` for a row whose key has a NULL part and
    /// NULLs match nothing).
    fn keys(
        &mut self,
        batch: &RecordBatch,
        on: &[Arc<dyn PhysicalExpr>],
        nulls_match: bool,
    ) -> DfResult<Keys> {
        let mut columns: Vec<ArrayRef> = on
            .iter()
            .map(|e| e.evaluate(batch)?.into_array(batch.num_rows()))
            .collect::<DfResult<_>>()?;
        let converter = match &self.converter {
            Some(converter) => converter,
            None => {
                self.types = columns.iter().map(|c| c.data_type().clone()).collect();
                let fields = self
                    .types
                    .iter()
                    .map(|t| SortField::new(t.clone()))
                    .collect();
                self.converter.insert(RowConverter::new(fields)?)
            }
        };
        for (column, to) in columns.iter_mut().zip(&self.types) {
            if column.data_type() != to {
                *column = cast(column, to)?;
            }
        }
        let rows = converter.convert_columns(&columns)?;
        Ok((0..batch.num_rows())
            .map(|i| {
                let valid = nulls_match || columns.iter().all(|c| c.is_valid(i));
                valid.then(|| rows.row(i).as_ref().into())
            })
            .collect())
    }
}

impl Side {
    /// The kept rows whose key is one of `keys`, as one batch of `schema`.
    fn matching(&self, keys: &[Keys], schema: &SchemaRef) -> DfResult<RecordBatch> {
        let mut seen = std::collections::HashSet::new();
        let mut found: Vec<(u32, u32)> = vec![];
        for key in keys.iter().flatten().flatten() {
            if seen.insert(key)
                && let Some(rows) = self.by_key.get(key)
            {
                found.extend(rows);
            }
        }
        if found.is_empty() {
            return Ok(RecordBatch::new_empty(schema.clone()));
        }
        // The batches the rows are in, each once, and each row as (position, row).
        let mut ids: Vec<u32> = found.iter().map(|(b, _)| *b).collect();
        ids.sort_unstable();
        ids.dedup();
        let batches: Vec<&RecordBatch> = ids.iter().map(|id| &self.batches[id].batch).collect();
        let at: Vec<(usize, usize)> = found
            .iter()
            .map(|(b, r)| {
                let position = ids.binary_search(b).expect("listed above");
                (position, *r as usize)
            })
            .collect();
        Ok(interleave_record_batch(&batches, &at)?)
    }

    /// Keeps `batch`'s rows with a key (`keys`, one per row), until the other side's
    /// watermark passes `until`; returns the bytes added.
    fn keep(
        &mut self,
        batch: RecordBatch,
        keys: Vec<Option<Box<[u8]>>>,
        until: Option<i64>,
        from: Arc<Vec<InputOffset>>,
    ) -> usize {
        let id = self.next;
        let mut added = 0;
        let mut kept = 0;
        for (row, key) in keys.into_iter().enumerate() {
            let Some(key) = key else { continue };
            added += key.len() + ENTRY_OVERHEAD;
            self.by_key.entry(key).or_default().push((id, row as u32));
            kept += 1;
        }
        if kept == 0 {
            return 0;
        }
        self.next += 1;
        added += batch.get_array_memory_size();
        self.rows += kept;
        self.bytes += added;
        self.batches.insert(
            id,
            Kept {
                batch,
                bytes: added,
                until,
                from,
            },
        );
        added
    }

    /// Lets go of the epochs' rows the other side's watermark `watermark` has passed;
    /// returns the bytes freed.
    fn evict(
        &mut self,
        watermark: i64,
        encoder: &mut Encoder,
        on: &[Arc<dyn PhysicalExpr>],
        nulls_match: bool,
    ) -> DfResult<usize> {
        let gone: Vec<u32> = self
            .batches
            .iter()
            .filter(|(_, k)| k.until.is_some_and(|u| u < watermark))
            .map(|(id, _)| *id)
            .collect();
        let mut freed = 0;
        for id in gone {
            let kept = self.batches.remove(&id).expect("listed above");
            let keys = encoder.keys(&kept.batch, on, nulls_match)?;
            for (row, key) in keys.into_iter().enumerate() {
                let Some(key) = key else { continue };
                if let Some(rows) = self.by_key.get_mut(&key) {
                    rows.retain(|at| *at != (id, row as u32));
                    self.rows -= 1;
                    if rows.is_empty() {
                        self.by_key.remove(&key);
                    }
                }
            }
            self.bytes -= kept.bytes;
            freed += kept.bytes;
        }
        Ok(freed)
    }
}

/// Per row of `batch`, the latest time at which it can still match: the least of the
/// `expiry` columns (a row with a NULL there matches nothing), in microseconds.
fn until(batch: &RecordBatch, expiry: &Expiry) -> DfResult<Vec<i64>> {
    let mut least: Option<Vec<i64>> = None;
    for (c, shift) in &expiry.columns {
        let times = crate::tables::event_time::micros(batch.column(*c))
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let values: Vec<i64> = times
            .iter()
            .map(|t| t.map_or(i64::MIN, |t| t.saturating_add(*shift)))
            .collect();
        least = Some(match least {
            None => values,
            Some(l) => l.into_iter().zip(values).map(|(a, b)| a.min(b)).collect(),
        });
    }
    Ok(least.unwrap_or_default())
}

/// Encoded join keys, one per row (`None`: the row matches nothing).
type Keys = Vec<Option<Box<[u8]>>>;

/// `batch`'s rows (and their `keys`) that can still match once the other side's
/// watermark is `watermark`, and the latest time one of them can; `None` if none can.
fn still_matching(
    batch: RecordBatch,
    keys: Keys,
    until: &[i64],
    watermark: Option<i64>,
) -> DfResult<Option<(RecordBatch, Keys, i64)>> {
    let keep: Vec<bool> = until
        .iter()
        .map(|u| watermark.is_none_or(|w| *u >= w))
        .collect();
    let Some(latest) = until
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(u, _)| *u)
        .max()
    else {
        return Ok(None);
    };
    if keep.iter().all(|k| *k) {
        return Ok(Some((batch, keys, latest)));
    }
    let batch = filter_record_batch(&batch, &BooleanArray::from(keep.clone()))?;
    let keys = keys
        .into_iter()
        .zip(keep)
        .filter_map(|(key, k)| k.then_some(key))
        .collect();
    Ok(Some((batch, keys, latest)))
}

/// Per side of `join`, the expiry of its rows its condition gives: for each conjunct of
/// the join filter that bounds the other side's watermark column from above by a time
/// column of this side, possibly shifted by a constant (`other.t <= this.c`, `<`, `=`, each
/// half of `BETWEEN`, `other.t <= this.c + INTERVAL '1 hour'`,
/// `other.t - INTERVAL '1 hour' <= this.c`), this side's rows can go once the other side's
/// watermark passes `c` (shifted).
fn expiries(join: &HashJoinExec, inputs: &[Watermarked]) -> [Option<Expiry>; 2] {
    let children = [join.left(), join.right()];
    // `earlier` is at most `later`.
    type Bound = ((usize, usize, i64), (usize, usize, i64));
    let mut bounds: Vec<Bound> = vec![];
    // Equal keys bound each other both ways (`p.window_end = a.window_end`).
    for (left, right) in join.on() {
        if let (Some(l), Some(r)) = (
            left.downcast_ref::<Column>(),
            right.downcast_ref::<Column>(),
        ) {
            let (l, r) = ((0, l.index(), 0), (1, r.index(), 0));
            bounds.extend([(l, r), (r, l)]);
        }
    }
    let filter = join.filter();
    // A filter column as (side, the side's column).
    let column_of = |e: &Arc<dyn PhysicalExpr>| -> Option<(usize, usize)> {
        let column = e.downcast_ref::<Column>()?;
        let index = filter?.column_indices().get(column.index())?;
        let side = match index.side {
            JoinSide::Left => 0,
            JoinSide::Right => 1,
            JoinSide::None => return None,
        };
        Some((side, index.index))
    };
    // A filter column, or one plus or minus a constant: (side, column, microseconds).
    let shifted = |e: &Arc<dyn PhysicalExpr>| -> Option<(usize, usize, i64)> {
        if let Some((side, c)) = column_of(e) {
            return Some((side, c, 0));
        }
        let binary = e.downcast_ref::<BinaryExpr>()?;
        let constant = |e: &Arc<dyn PhysicalExpr>| {
            e.downcast_ref::<Literal>()
                .and_then(|l| interval_micros(l.value()))
        };
        match binary.op() {
            Operator::Plus => match (column_of(binary.left()), column_of(binary.right())) {
                (Some((side, c)), None) => Some((side, c, constant(binary.right())?)),
                (None, Some((side, c))) => Some((side, c, constant(binary.left())?)),
                _ => None,
            },
            Operator::Minus => {
                let (side, c) = column_of(binary.left())?;
                Some((side, c, constant(binary.right())?.checked_neg()?))
            }
            _ => None,
        }
    };
    let conjuncts = filter.map_or(vec![], |f| split_conjunction(f.expression()));
    for conjunct in conjuncts {
        let Some(binary) = conjunct.downcast_ref::<BinaryExpr>() else {
            continue;
        };
        let (Some(l), Some(r)) = (shifted(binary.left()), shifted(binary.right())) else {
            continue;
        };
        match binary.op() {
            Operator::Lt | Operator::LtEq => bounds.push((l, r)),
            Operator::Gt | Operator::GtEq => bounds.push((r, l)),
            Operator::Eq => bounds.extend([(l, r), (r, l)]),
            _ => {}
        }
    }
    let mut out: [Option<Expiry>; 2] = [None, None];
    for ((other, t, t_shift), (this, c, c_shift)) in bounds {
        if other == this {
            continue;
        }
        // `t` must be the watermark column of the stream the other side reads.
        let Some((stream, column)) = scanned_column(children[other], t) else {
            continue;
        };
        let Some(input) = inputs
            .iter()
            .position(|i| i.name == stream && i.column == Some(column.as_str()))
        else {
            continue;
        };
        let timestamp = children[this]
            .schema()
            .fields()
            .get(c)
            .is_some_and(|f| matches!(f.data_type(), DataType::Timestamp(..)));
        // other.t + t_shift <= this.c + c_shift: other.t <= this.c + (c_shift - t_shift).
        let Some(shift) = c_shift.checked_sub(t_shift) else {
            continue;
        };
        if !timestamp {
            continue;
        }
        match &mut out[this] {
            Some(e) if e.input == input => e.columns.push((c, shift)),
            Some(_) => {}
            slot => {
                *slot = Some(Expiry {
                    columns: vec![(c, shift)],
                    input,
                })
            }
        }
    }
    out
}

/// A constant stretch of time in microseconds: an interval of days and smaller units, or a
/// duration; `None` for months (not a fixed length) and anything else.
fn interval_micros(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => (v.days as i64)
            .checked_mul(86_400_000_000)?
            .checked_add(v.nanoseconds / 1_000),
        ScalarValue::IntervalDayTime(Some(v)) => (v.days as i64)
            .checked_mul(86_400_000_000)?
            .checked_add(v.milliseconds as i64 * 1_000),
        ScalarValue::DurationSecond(Some(v)) => v.checked_mul(1_000_000),
        ScalarValue::DurationMillisecond(Some(v)) => v.checked_mul(1_000),
        ScalarValue::DurationMicrosecond(Some(v)) => Some(*v),
        ScalarValue::DurationNanosecond(Some(v)) => Some(v / 1_000),
        _ => None,
    }
}

/// The stream and column of a scan that column `i` of `plan`'s output is, unchanged.
fn scanned_column(plan: &Arc<dyn ExecutionPlan>, mut i: usize) -> Option<(String, String)> {
    let mut node = plan.clone();
    loop {
        if let Some(scan) = node.downcast_ref::<StreamScanExec>() {
            let name = scan.schema().field(i).name().clone();
            return Some((scan.source().stream().to_string(), name));
        }
        if let Some(p) = node.downcast_ref::<ProjectionExec>() {
            i = p.expr().get(i)?.expr.downcast_ref::<Column>()?.index();
        } else if let Some(f) = node.downcast_ref::<FilterExec>() {
            if let Some(p) = f.projection() {
                i = *p.get(i)?;
            }
        } else if !matches!(
            node.name(),
            "CoalesceBatchesExec"
                | "CoalescePartitionsExec"
                | "RepartitionExec"
                | "CooperativeExec"
        ) {
            return None;
        }
        let child = match node.children().as_slice() {
            [child] => (*child).clone(),
            _ => return None,
        };
        node = child;
    }
}

/// The streams `plan` reads.
fn streams_read(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<String>) {
    if let Some(scan) = plan.downcast_ref::<StreamScanExec>() {
        let name = scan.source().stream().to_string();
        if !out.contains(&name) {
            out.push(name);
        }
    }
    for child in plan.children() {
        streams_read(child, out);
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

    /// `join` (an inner `HashJoinExec`, see [`is_delta_join`]) with `state`, in a query
    /// reading `inputs`.
    pub fn planned(
        join: Arc<dyn ExecutionPlan>,
        state: Arc<JoinState>,
        inputs: &[Watermarked],
    ) -> StreamJoinExec {
        if let Some(hash) = join.downcast_ref::<HashJoinExec>() {
            let mut streams: [Vec<String>; 2] = Default::default();
            streams_read(hash.left(), &mut streams[0]);
            streams_read(hash.right(), &mut streams[1]);
            *state.bounds.lock().expect("join bounds lock") = Bounds {
                expiry: expiries(hash, inputs),
                streams,
            };
        }
        StreamJoinExec::new(join, state)
    }

    fn new(join: Arc<dyn ExecutionPlan>, state: Arc<JoinState>) -> StreamJoinExec {
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
        // Each side's new keys, and the other side's kept rows of those keys.
        let (kept_left, kept_right, left_keys, right_keys);
        {
            let mut sides = state.sides.lock().expect("join state lock");
            let Sides { kept, encoder, .. } = &mut *sides;
            let mut keys = |batches: &[RecordBatch], on: &[Arc<dyn PhysicalExpr>]| {
                batches
                    .iter()
                    .map(|b| encoder.keys(b, on, nulls_match))
                    .collect::<DfResult<Vec<Keys>>>()
            };
            left_keys = keys(&new_left, &left_on)?;
            right_keys = keys(&new_right, &right_on)?;
            let probe = |side: &Side, keys: &[Keys], schema: SchemaRef| {
                if side.batches.is_empty() || !joining {
                    return Ok(RecordBatch::new_empty(schema));
                }
                side.matching(keys, &schema)
            };
            kept_right = probe(&kept[1], &left_keys, right.schema())?;
            kept_left = probe(&kept[0], &right_keys, left.schema())?;
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

        // The epoch's rows join the kept ones, and the kept rows the other side's watermark
        // has passed go.
        {
            let bounds = state.bounds.lock().expect("join bounds lock").clone();
            let watermarks = state
                .watermarks
                .lock()
                .expect("join watermarks lock")
                .clone();
            let reading = state.reading.lock().expect("join epoch lock").clone();
            let mut sides = state.sides.lock().expect("join state lock");
            let Sides {
                kept,
                encoder,
                memory,
            } = &mut *sides;
            let memory = memory.get_or_insert_with(|| {
                MemoryConsumer::new(state.called()).register(ctx.memory_pool())
            });
            let mut added = 0;
            let mut freed = 0;
            for (k, (new, keys)) in [(new_left, left_keys), (new_right, right_keys)]
                .into_iter()
                .enumerate()
            {
                for (batch, keys) in new.into_iter().zip(keys) {
                    let (batch, keys, until) = match &bounds.expiry[k] {
                        // Rows the watermark has passed are not kept at all (after a
                        // restart, most of what is read again).
                        Some(expiry) => {
                            let w = watermarks.get(expiry.input).copied().flatten();
                            let times = until(&batch, expiry)?;
                            match still_matching(batch, keys, &times, w)? {
                                Some((batch, keys, latest)) => (batch, keys, Some(latest)),
                                None => continue,
                            }
                        }
                        None => (batch, keys, None),
                    };
                    added += kept[k].keep(batch, keys, until, reading.clone());
                }
                let on = if k == 0 { &left_on } else { &right_on };
                if let Some(expiry) = &bounds.expiry[k]
                    && let Some(Some(w)) = watermarks.get(expiry.input)
                {
                    freed += kept[k].evict(*w, encoder, on, nulls_match)?;
                }
            }
            tracing::debug!(
                ?watermarks,
                added,
                freed,
                rows = kept[0].rows + kept[1].rows,
                "join of streams: kept rows"
            );
            memory.try_grow(added)?;
            memory.shrink(freed.min(memory.size()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{IntervalDayTime, IntervalMonthDayNano};

    #[test]
    fn constant_shifts_are_fixed_lengths_of_time() {
        let day = 86_400_000_000;
        let interval = |months, days, nanoseconds| {
            ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano {
                months,
                days,
                nanoseconds,
            }))
        };
        assert_eq!(interval_micros(&interval(0, 1, 5_000)), Some(day + 5));
        assert_eq!(
            interval_micros(&interval(0, 0, -20_000_000_000)),
            Some(-20_000_000)
        );
        assert_eq!(
            interval_micros(&interval(1, 0, 0)),
            None,
            "a month has no one length"
        );
        let day_time = ScalarValue::IntervalDayTime(Some(IntervalDayTime {
            days: 2,
            milliseconds: 3,
        }));
        assert_eq!(interval_micros(&day_time), Some(2 * day + 3_000));
        assert_eq!(
            interval_micros(&ScalarValue::DurationSecond(Some(7))),
            Some(7_000_000)
        );
        assert_eq!(interval_micros(&ScalarValue::Int64(Some(7))), None);
        assert_eq!(
            interval_micros(&interval(0, i32::MAX, i64::MAX)),
            None,
            "overflow"
        );
    }
}
