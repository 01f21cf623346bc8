//! What an epoch's scan learns about event time.
//!
//! A continuous query over a stream with `WATERMARK FOR ts AS <expression>` reads its
//! epochs through a scan that, batch by batch, takes the greatest value of the expression
//! over each partition's rows (the partition's contribution to the watermark). In a query
//! with event-time state it also drops the rows that are late, those whose `ts` is below the
//! watermark the epoch was planned with, or NULL (such a row has no window to go to), before
//! any operator sees them, and notes where each was. Times are microseconds since the epoch.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType};
use datafusion::common::DFSchema;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};

use crate::error::{Error, Result};
use crate::storage::{Offset, PartitionId};

/// The event time of a stream's epochs, as its scan sees it.
#[derive(Debug)]
pub struct EventTimeScan {
    /// The stored column `WATERMARK FOR` names.
    pub column: usize,
    /// The watermark expression, over a batch holding only that column.
    expression: Arc<dyn PhysicalExpr>,
    /// Whether the expression never decreases as the column grows (`ts`, `ts - INTERVAL …`):
    /// then its greatest value over a batch is its value at the batch's greatest time, one
    /// evaluation instead of one per row.
    monotone: bool,
    schema: SchemaRef,
    epoch: Mutex<EpochTime>,
}

/// What one epoch's scan saw.
#[derive(Debug, Default, Clone)]
pub struct EpochTime {
    /// Rows below it are late.
    pub watermark: Option<i64>,
    /// Whether late rows are dropped (the query has event-time state).
    pub drop_late: bool,
    /// Per partition read, the greatest value of the watermark expression.
    pub maxima: BTreeMap<PartitionId, i64>,
    /// Where the rows dropped as late were.
    pub late: Vec<(PartitionId, Offset)>,
}

impl EventTimeScan {
    /// Plans `expression` (the text of `WATERMARK FOR column AS expression`) over `column`,
    /// a timestamp field stored at position `stored`.
    pub fn new(
        state: &SessionState,
        field: &Field,
        stored: usize,
        expression: &str,
    ) -> Result<EventTimeScan> {
        let field = field.clone().with_nullable(true);
        let schema = Arc::new(Schema::new(vec![field.clone()]));
        let expression = watermark_expression(state, &schema, expression)?;
        let monotone = shifted_column(&expression);
        Ok(EventTimeScan {
            column: stored,
            expression,
            monotone,
            schema,
            epoch: Mutex::new(EpochTime::default()),
        })
    }

    /// Starts an epoch whose rows below `watermark` are late (dropped if `drop_late`).
    pub fn begin(&self, watermark: Option<i64>, drop_late: bool) {
        *self.epoch.lock().expect("event time lock") = EpochTime {
            watermark,
            drop_late,
            ..EpochTime::default()
        };
    }

    /// What the epoch's scan saw.
    pub fn take(&self) -> EpochTime {
        std::mem::take(&mut *self.epoch.lock().expect("event time lock"))
    }

    /// Notes the event times of `batch` (rows of `partition`, row `i` at `offset(i)`, whose
    /// event time column is `times`) and returns it without its late rows.
    pub fn apply(
        &self,
        partition: PartitionId,
        offset: &dyn Fn(usize) -> Offset,
        times: &ArrayRef,
        batch: RecordBatch,
    ) -> Result<RecordBatch> {
        let at = micros(times)?;
        let evaluated = match self.monotone {
            true => match arrow::compute::kernels::aggregate::max(&at) {
                None => None,
                Some(greatest) => {
                    // A NULL's slot holds some value too: only valid rows count.
                    let row = at.iter().position(|t| t == Some(greatest));
                    let row = row.expect("the greatest valid value is in the array");
                    Some(times.slice(row, 1))
                }
            },
            false => Some(times.clone()),
        };
        let max = match evaluated {
            None => None,
            Some(times) => {
                let one = RecordBatch::try_new(self.schema.clone(), vec![times])
                    .map_err(|e| Error::Internal(format!("event time: {e}")))?;
                let marks = self
                    .expression
                    .evaluate(&one)
                    .and_then(|v| v.into_array(one.num_rows()))
                    .map_err(Error::from_datafusion)?;
                micros(&marks)?.iter().flatten().max()
            }
        };
        let (below, drop_late) = {
            let mut epoch = self.epoch.lock().expect("event time lock");
            if let Some(max) = max {
                let at = epoch.maxima.entry(partition).or_insert(max);
                *at = (*at).max(max);
            }
            (epoch.watermark.unwrap_or(i64::MIN), epoch.drop_late)
        };
        if !drop_late {
            return Ok(batch);
        }
        let none_late = at.null_count() == 0
            && arrow::compute::kernels::aggregate::min(&at).is_none_or(|t| t >= below);
        if none_late {
            return Ok(batch);
        }
        let keep: BooleanArray = at
            .iter()
            .map(|t| Some(t.is_some_and(|t| t >= below)))
            .collect();
        let late = keep
            .iter()
            .enumerate()
            .filter(|(_, kept)| *kept != Some(true))
            .map(|(i, _)| (partition, offset(i)));
        self.epoch
            .lock()
            .expect("event time lock")
            .late
            .extend(late);
        filter_record_batch(&batch, &keep).map_err(|e| Error::Internal(format!("event time: {e}")))
    }
}

/// Whether `expression` is the column, or the column plus or minus a constant interval:
/// such an expression never decreases as the column grows. (DataFusion's own ordering
/// analysis leaves time arithmetic out, as it could wrap at the ends of the range.)
fn shifted_column(expression: &Arc<dyn PhysicalExpr>) -> bool {
    if expression.downcast_ref::<Column>().is_some() {
        return true;
    }
    let Some(binary) = expression.downcast_ref::<BinaryExpr>() else {
        return false;
    };
    let constant = binary.right().downcast_ref::<Literal>().is_some_and(|l| {
        matches!(
            l.value().data_type(),
            DataType::Interval(_) | DataType::Duration(_)
        )
    });
    matches!(binary.op(), Operator::Plus | Operator::Minus)
        && binary.left().downcast_ref::<Column>().is_some()
        && constant
}

/// Plans a watermark expression over `schema` (one timestamp column); it must give a
/// timestamp.
pub fn watermark_expression(
    state: &SessionState,
    schema: &SchemaRef,
    expression: &str,
) -> Result<Arc<dyn PhysicalExpr>> {
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(Error::from_datafusion)?;
    let logical = state
        .create_logical_expr(expression, &df_schema)
        .map_err(|e| {
            Error::plan(
                "42P17",
                format!("watermark expression \"{expression}\": {e}"),
            )
        })?;
    let physical = state
        .create_physical_expr(logical, &df_schema)
        .map_err(|e| {
            Error::plan(
                "42P17",
                format!("watermark expression \"{expression}\": {e}"),
            )
        })?;
    match physical.data_type(schema).map_err(Error::from_datafusion)? {
        DataType::Timestamp(..) => Ok(physical),
        other => Err(Error::plan(
            "42804",
            format!("watermark expression \"{expression}\" gives {other}, not a timestamp"),
        )),
    }
}

/// A timestamp column as microseconds since the epoch.
pub fn micros(times: &ArrayRef) -> Result<arrow::array::PrimitiveArray<TimestampMicrosecondType>> {
    let cast = cast(times, &DataType::Timestamp(TimeUnit::Microsecond, None))
        .map_err(|e| Error::Internal(format!("event time: {e}")))?;
    Ok(cast.as_primitive::<TimestampMicrosecondType>().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::TimestampMicrosecondArray;
    use datafusion::prelude::SessionContext;

    /// The greatest watermark value `expression` gives over `times`.
    fn greatest(expression: &str, times: Vec<Option<i64>>) -> (bool, Option<i64>) {
        let state = SessionContext::new().state();
        let field = Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true);
        let scan = EventTimeScan::new(&state, &field, 0, expression).unwrap();
        let times: ArrayRef = Arc::new(TimestampMicrosecondArray::from(times));
        let batch = RecordBatch::try_new(scan.schema.clone(), vec![times.clone()]).unwrap();
        scan.begin(None, false);
        scan.apply(PartitionId(0), &|i| Offset(i as u64), &times, batch)
            .unwrap();
        let seen = scan.take();
        (scan.monotone, seen.maxima.get(&PartitionId(0)).copied())
    }

    #[test]
    fn a_monotone_watermark_is_evaluated_once_per_batch_and_gives_the_same_maximum() {
        let times = vec![Some(7_000_000), None, Some(9_000_000), Some(8_000_000)];
        assert_eq!(
            greatest("ts - INTERVAL '5 seconds'", times.clone()),
            (true, Some(4_000_000))
        );
        assert_eq!(greatest("ts", times.clone()), (true, Some(9_000_000)));
        // Not monotone: later times may give smaller values, so every row is evaluated.
        assert_eq!(
            greatest(
                "CASE WHEN ts > TIMESTAMP '1970-01-01 00:00:08' THEN ts - INTERVAL '1 day' ELSE ts END",
                times
            ),
            (false, Some(8_000_000))
        );
        assert_eq!(greatest("ts", vec![None, None]), (true, None));
        // A NULL ahead of the greatest time, which is the epoch itself (a NULL's slot is 0).
        assert_eq!(
            greatest("ts - INTERVAL '1 second'", vec![None, Some(0), Some(-5)]),
            (true, Some(-1_000_000))
        );
    }
}
