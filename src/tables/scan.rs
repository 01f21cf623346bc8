//! Bounded scans of a stream: which offset ranges to read, and the plan node that reads them.
//!
//! [`ScanBounds`] turns the filters DataFusion pushes down into ranges: predicates on
//! `_partition` choose partitions, on `_offset` an offset range, on `_timestamp` a time range
//! (the time index finds where to start; frames entirely outside it are skipped). Filters it
//! does not understand are left to DataFusion, which applies every filter anyway.
//!
//! [`StreamScanExec`] reads one output partition per log partition, each on a blocking
//! thread, decoding only the projected columns of each frame.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

use super::blocking_scan::{BlockingScanExec, BlockingSource};
use super::event_time::EventTimeScan;
use crate::catalog::{OFFSET_COLUMN, PARTITION_COLUMN};
use crate::error::Error;
use crate::storage::{Offset, PartitionId, ReadOptions, Snapshot, TIMESTAMP_COLUMN, Topic};

/// Where a table column comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableColumn {
    /// A column of the topic's storage schema, by index.
    Stored(usize),
    /// `_partition`, constant per log partition.
    Partition,
    /// `_offset`, the record's position.
    Offset,
}

/// What the filters of a scan allow it to skip.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanBounds {
    /// `None`: every partition.
    pub partitions: Option<BTreeSet<u32>>,
    pub offsets: Range<u64>,
    /// Inclusive bounds on the record timestamp, in ms.
    pub min_timestamp_ms: Option<i64>,
    pub max_timestamp_ms: Option<i64>,
}

impl ScanBounds {
    pub fn all() -> ScanBounds {
        ScanBounds {
            partitions: None,
            offsets: 0..u64::MAX,
            min_timestamp_ms: None,
            max_timestamp_ms: None,
        }
    }

    /// Bounds from the conjuncts of `filters` on the hidden columns. A partition named by
    /// `=` or `IN` that the stream does not have is an error, not an empty result: it is
    /// almost always a mistake.
    pub fn from_filters(
        filters: &[Expr],
        schema: &Schema,
        stream: &str,
        partitions: u32,
    ) -> Result<ScanBounds, Error> {
        let mut bounds = ScanBounds::all();
        let known = |c: &str| schema.field_with_name(c).is_ok();
        for expr in filters.iter().flat_map(|f| split_conjunction(f)) {
            // `_partition IN (…)` arrives as an OR of equalities once simplified.
            if let Some(values) = partition_alternatives(expr)
                && known(PARTITION_COLUMN)
            {
                let mut set = BTreeSet::new();
                for v in values {
                    set.insert(check_partition(v, stream, partitions)?);
                }
                bounds.restrict_partitions(set);
                continue;
            }
            match expr {
                Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                    let (column, op, value) = match (
                        column_of(left),
                        literal_of(right),
                        column_of(right),
                        literal_of(left),
                    ) {
                        (Some(c), Some(v), _, _) => (c, *op, v),
                        (_, _, Some(c), Some(v)) => match op.swap() {
                            Some(op) => (c, op, v),
                            None => continue,
                        },
                        _ => continue,
                    };
                    if !known(column) {
                        continue;
                    }
                    bounds.apply(column, op, &value, stream, partitions)?;
                }
                Expr::Between(between) if !between.negated => {
                    if let (Some(c), Some(lo), Some(hi)) = (
                        column_of(&between.expr),
                        literal_of(&between.low),
                        literal_of(&between.high),
                    ) && known(c)
                    {
                        bounds.apply(c, Operator::GtEq, &lo, stream, partitions)?;
                        bounds.apply(c, Operator::LtEq, &hi, stream, partitions)?;
                    }
                }
                Expr::InList(list)
                    if !list.negated
                        && column_of(&list.expr) == Some(PARTITION_COLUMN)
                        && known(PARTITION_COLUMN) =>
                {
                    let values: Option<Vec<i64>> = list
                        .list
                        .iter()
                        .map(|e| literal_of(e).and_then(|v| as_i64(&v)))
                        .collect();
                    if let Some(values) = values {
                        let mut set = BTreeSet::new();
                        for v in values {
                            set.insert(check_partition(v, stream, partitions)?);
                        }
                        bounds.restrict_partitions(set);
                    }
                }
                _ => {}
            }
        }
        Ok(bounds)
    }

    fn restrict_partitions(&mut self, set: BTreeSet<u32>) {
        self.partitions = Some(match self.partitions.take() {
            Some(old) => old.intersection(&set).copied().collect(),
            None => set,
        });
    }

    fn apply(
        &mut self,
        column: &str,
        op: Operator,
        value: &ScalarValue,
        stream: &str,
        partitions: u32,
    ) -> Result<(), Error> {
        match column {
            PARTITION_COLUMN => {
                let Some(v) = as_i64(value) else {
                    return Ok(());
                };
                let all = 0..partitions as i64;
                let keep: BTreeSet<u32> = match op {
                    Operator::Eq => BTreeSet::from([check_partition(v, stream, partitions)?]),
                    Operator::Lt => all.filter(|p| *p < v).map(|p| p as u32).collect(),
                    Operator::LtEq => all.filter(|p| *p <= v).map(|p| p as u32).collect(),
                    Operator::Gt => all.filter(|p| *p > v).map(|p| p as u32).collect(),
                    Operator::GtEq => all.filter(|p| *p >= v).map(|p| p as u32).collect(),
                    _ => return Ok(()),
                };
                self.restrict_partitions(keep);
            }
            OFFSET_COLUMN => {
                let Some(v) = as_i64(value) else {
                    return Ok(());
                };
                let at_least = |v: i64| v.max(0) as u64;
                let (lo, hi) = match op {
                    Operator::Eq => (at_least(v), Some(at_least(v.saturating_add(1)))),
                    Operator::Lt => (0, Some(at_least(v))),
                    Operator::LtEq => (0, Some(at_least(v.saturating_add(1)))),
                    Operator::Gt => (at_least(v.saturating_add(1)), None),
                    Operator::GtEq => (at_least(v), None),
                    _ => return Ok(()),
                };
                self.offsets = self.offsets.start.max(lo)
                    ..hi.map_or(self.offsets.end, |hi| self.offsets.end.min(hi));
            }
            TIMESTAMP_COLUMN => {
                // Conservative: round outward to whole milliseconds.
                let Some((floor, ceil)) = timestamp_ms(value) else {
                    return Ok(());
                };
                let (lo, hi) = match op {
                    Operator::Eq => (Some(floor), Some(ceil)),
                    Operator::Gt | Operator::GtEq => (Some(floor), None),
                    Operator::Lt | Operator::LtEq => (None, Some(ceil)),
                    _ => return Ok(()),
                };
                if let Some(lo) = lo {
                    self.min_timestamp_ms = Some(self.min_timestamp_ms.map_or(lo, |m| m.max(lo)));
                }
                if let Some(hi) = hi {
                    self.max_timestamp_ms = Some(self.max_timestamp_ms.map_or(hi, |m| m.min(hi)));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The partitions of `_partition = a OR _partition = b OR …`, if that is what `expr` is.
fn partition_alternatives(expr: &Expr) -> Option<Vec<i64>> {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let mut values = partition_alternatives(left)?;
            values.extend(partition_alternatives(right)?);
            Some(values)
        }
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            let (column, value) = match (column_of(left), column_of(right)) {
                (Some(c), None) => (c, literal_of(right)?),
                (None, Some(c)) => (c, literal_of(left)?),
                _ => return None,
            };
            (column == PARTITION_COLUMN)
                .then_some(as_i64(&value)?)
                .map(|v| vec![v])
        }
        _ => None,
    }
}

fn check_partition(v: i64, stream: &str, partitions: u32) -> Result<u32, Error> {
    if v < 0 || v >= partitions as i64 {
        return Err(Error::data(
            "22023",
            format!("partition {v} does not exist in stream \"{stream}\" (it has {partitions})"),
        ));
    }
    Ok(v as u32)
}

/// The column an expression reads, looking through casts DataFusion adds for comparisons.
fn column_of(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) => column_of(&c.expr),
        Expr::TryCast(c) => column_of(&c.expr),
        _ => None,
    }
}

/// A non-null literal, through casts DataFusion puts on it.
pub(crate) fn literal_of(expr: &Expr) -> Option<ScalarValue> {
    match expr {
        Expr::Literal(v, _) if !v.is_null() => Some(v.clone()),
        Expr::Cast(c) => literal_of(&c.expr).and_then(|v| v.cast_to(c.field.data_type()).ok()),
        _ => None,
    }
}

fn as_i64(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::Int8(Some(x)) => Some(*x as i64),
        ScalarValue::Int16(Some(x)) => Some(*x as i64),
        ScalarValue::Int32(Some(x)) => Some(*x as i64),
        ScalarValue::Int64(Some(x)) => Some(*x),
        ScalarValue::UInt8(Some(x)) => Some(*x as i64),
        ScalarValue::UInt16(Some(x)) => Some(*x as i64),
        ScalarValue::UInt32(Some(x)) => Some(*x as i64),
        ScalarValue::UInt64(Some(x)) => i64::try_from(*x).ok(),
        _ => None,
    }
}

/// A timestamp literal as (floor, ceil) milliseconds since the epoch.
fn timestamp_ms(v: &ScalarValue) -> Option<(i64, i64)> {
    let (value, per_ms) = match v {
        ScalarValue::TimestampSecond(Some(x), _) => return Some((x * 1000, x * 1000)),
        ScalarValue::TimestampMillisecond(Some(x), _) => return Some((*x, *x)),
        ScalarValue::TimestampMicrosecond(Some(x), _) => (*x, 1_000),
        ScalarValue::TimestampNanosecond(Some(x), _) => (*x, 1_000_000),
        _ => return None,
    };
    Some((
        value.div_euclid(per_ms),
        (value + per_ms - 1).div_euclid(per_ms),
    ))
}

/// A stream scan: offset ranges of a stream's partitions.
pub type StreamScanExec = BlockingScanExec<StreamScan>;

/// What a [`StreamScanExec`] reads: one offset range per partition.
#[derive(Debug)]
pub struct StreamScan {
    stream: String,
    topic: Arc<Topic>,
    columns: Vec<TableColumn>,
    /// Storage columns to decode, ascending.
    decode: Vec<usize>,
    ranges: Ranges,
    /// How many threads read the ranges: each reads every `parallelism`-th one, in turn.
    parallelism: usize,
    bounds: ScanBounds,
    /// A continuous query's epoch over a stream with a watermark: event times noted, late
    /// rows dropped.
    event_time: Option<Arc<EventTimeScan>>,
}

/// Offset ranges to read, one per partition.
pub type Ranges = Vec<(PartitionId, Range<Offset>)>;

impl StreamScan {
    /// The ranges of `topic` that `bounds` select, below the high watermarks of `snapshot`.
    pub fn new(
        stream: String,
        topic: Arc<Topic>,
        snapshot: &Snapshot,
        columns: Vec<TableColumn>,
        bounds: ScanBounds,
    ) -> StreamScan {
        let mut ranges = vec![];
        for partition in &topic.partitions {
            if bounds
                .partitions
                .as_ref()
                .is_some_and(|set| !set.contains(&partition.id.0))
            {
                continue;
            }
            let high = snapshot.high_watermark(topic.spec.id, partition.id);
            let start = Offset(bounds.offsets.start).max(partition.log_start_offset());
            let end = Offset(bounds.offsets.end).min(high);
            if start < end {
                ranges.push((partition.id, start..end));
            }
        }
        StreamScan::of_ranges(stream, topic, columns, ranges, usize::MAX, bounds, None)
    }

    /// Exactly `ranges` (a continuous query's epoch), read by up to `parallelism` threads:
    /// the epoch's plan runs in parallel up to its first aggregate, or to the end. No more
    /// threads than cores, since the partial aggregate of each gives a row per group it
    /// saw, which the epoch then merges on one.
    pub fn of_epoch(
        stream: String,
        topic: Arc<Topic>,
        columns: Vec<TableColumn>,
        ranges: Ranges,
        parallelism: usize,
        event_time: Option<Arc<EventTimeScan>>,
    ) -> StreamScan {
        let ranges = ranges
            .into_iter()
            .filter(|(_, r)| r.start < r.end)
            .collect();
        StreamScan::of_ranges(
            stream,
            topic,
            columns,
            ranges,
            parallelism.max(1),
            ScanBounds::all(),
            event_time,
        )
    }

    fn of_ranges(
        stream: String,
        topic: Arc<Topic>,
        columns: Vec<TableColumn>,
        ranges: Ranges,
        parallelism: usize,
        bounds: ScanBounds,
        event_time: Option<Arc<EventTimeScan>>,
    ) -> StreamScan {
        let mut decode: Vec<usize> = columns
            .iter()
            .filter_map(|c| match c {
                TableColumn::Stored(i) => Some(*i),
                _ => None,
            })
            .chain(event_time.as_ref().map(|e| e.column))
            .collect();
        decode.sort();
        decode.dedup();
        StreamScan {
            stream,
            topic,
            columns,
            decode,
            ranges,
            parallelism,
            bounds,
            event_time,
        }
    }

    /// The stream or topic it reads.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    fn read_range(
        &self,
        (partition_id, range): (PartitionId, Range<Offset>),
        schema: &SchemaRef,
        emit: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> DfResult<bool> {
        let partition = &self.topic.partitions[partition_id.0 as usize];
        let options = ReadOptions {
            schema: self.topic.spec.schema.clone(),
            projection: Some(self.decode.clone()),
            min_timestamp_ms: self.bounds.min_timestamp_ms,
            max_timestamp_ms: self.bounds.max_timestamp_ms,
        };
        for read in partition.reader(range, options) {
            let read = read.map_err(Error::from)?;
            let rows = read.batch.num_rows();
            let out: Vec<ArrayRef> = self
                .columns
                .iter()
                .map(|c| match c {
                    TableColumn::Stored(s) => {
                        let at = self
                            .decode
                            .binary_search(s)
                            .expect("decoded columns include every stored one");
                        read.batch.column(at).clone()
                    }
                    TableColumn::Partition => {
                        Arc::new(Int32Array::from_value(partition_id.0 as i32, rows))
                    }
                    TableColumn::Offset => Arc::new(Int64Array::from_iter_values(
                        (0..rows).map(|i| read.offset(i).0 as i64),
                    )),
                })
                .collect();
            let options = RecordBatchOptions::new().with_row_count(Some(rows));
            let mut batch = RecordBatch::try_new_with_options(schema.clone(), out, &options)?;
            if let Some(event_time) = &self.event_time {
                let at = self
                    .decode
                    .binary_search(&event_time.column)
                    .expect("the event time column is decoded");
                batch = event_time.apply(
                    partition_id,
                    &|i| read.offset(i),
                    read.batch.column(at),
                    batch,
                )?;
            }
            if !emit(batch) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl BlockingSource for StreamScan {
    fn name(&self) -> &'static str {
        "StreamScanExec"
    }

    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream={}, ranges=[", self.stream)?;
        for (i, (p, r)) in self.ranges.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{}:{}..{}", p.0, r.start, r.end)?;
        }
        write!(f, "]")?;
        if self.bounds.min_timestamp_ms.is_some() || self.bounds.max_timestamp_ms.is_some() {
            let show = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
            write!(
                f,
                ", timestamp_ms=[{}, {}]",
                show(self.bounds.min_timestamp_ms),
                show(self.bounds.max_timestamp_ms)
            )?;
        }
        Ok(())
    }

    fn partitions(&self) -> usize {
        self.ranges.len().min(self.parallelism)
    }

    fn read(
        &self,
        i: usize,
        schema: &SchemaRef,
        emit: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> DfResult<()> {
        for range in self.ranges.iter().skip(i).step_by(self.partitions()) {
            if !self.read_range(range.clone(), schema, emit)? {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, TimeUnit};
    use datafusion::logical_expr::{col, lit};

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("url", DataType::Utf8, true),
            Field::new(PARTITION_COLUMN, DataType::Int32, false),
            Field::new(OFFSET_COLUMN, DataType::Int64, false),
            Field::new(
                TIMESTAMP_COLUMN,
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
        ])
    }

    fn bounds(filters: Vec<Expr>) -> Result<ScanBounds, Error> {
        ScanBounds::from_filters(&filters, &schema(), "clicks", 3)
    }

    #[test]
    fn partition_and_offset_predicates_narrow_the_scan() {
        let b = bounds(vec![
            col(PARTITION_COLUMN)
                .eq(lit(0i32))
                .and(col(OFFSET_COLUMN).gt_eq(lit(100i64))),
        ])
        .unwrap();
        assert_eq!(b.partitions, Some(BTreeSet::from([0])));
        assert_eq!(b.offsets, 100..u64::MAX);
        let b = bounds(vec![
            col(OFFSET_COLUMN).lt(lit(10i64)),
            lit(5i64).lt(col(OFFSET_COLUMN)),
        ])
        .unwrap();
        assert_eq!(b.offsets, 6..10);
        let b = bounds(vec![
            col(PARTITION_COLUMN).in_list(vec![lit(1i32), lit(2i32)], false),
            col(PARTITION_COLUMN).lt(lit(2i32)),
        ])
        .unwrap();
        assert_eq!(b.partitions, Some(BTreeSet::from([1])));
    }

    #[test]
    fn in_lists_simplified_to_ors_still_choose_partitions() {
        let either = col(PARTITION_COLUMN)
            .eq(lit(0i32))
            .or(col(PARTITION_COLUMN).eq(lit(2i32)));
        assert_eq!(
            bounds(vec![either]).unwrap().partitions,
            Some(BTreeSet::from([0, 2]))
        );
        let bad = col(PARTITION_COLUMN)
            .eq(lit(0i32))
            .or(col(PARTITION_COLUMN).eq(lit(5i32)));
        assert_eq!(bounds(vec![bad]).unwrap_err().sqlstate(), "22023");
        let mixed = col(PARTITION_COLUMN)
            .eq(lit(0i32))
            .or(col("url").eq(lit("/")));
        assert_eq!(
            bounds(vec![mixed]).unwrap().partitions,
            None,
            "not only partitions: no pruning"
        );
    }

    #[test]
    fn a_missing_partition_is_an_error() {
        let err = bounds(vec![col(PARTITION_COLUMN).eq(lit(7i32))]).unwrap_err();
        assert_eq!(err.sqlstate(), "22023");
        assert_eq!(
            err.to_string(),
            "partition 7 does not exist in stream \"clicks\" (it has 3)"
        );
    }

    #[test]
    fn timestamp_predicates_bound_the_time_range() {
        let t = ScalarValue::TimestampNanosecond(Some(1_500_000_001), Some("+00:00".into()));
        let b = bounds(vec![col(TIMESTAMP_COLUMN).gt_eq(Expr::Literal(t, None))]).unwrap();
        assert_eq!(b.min_timestamp_ms, Some(1_500));
        let b = bounds(vec![col("url").eq(lit("/x"))]).unwrap();
        assert_eq!(b, ScanBounds::all(), "other columns do not bound the scan");
    }
}
