//! Intervals compared as PostgreSQL compares them.
//!
//! Arrow compares an interval field by field (months, then days, then nanoseconds), so
//! `INTERVAL '48 hours' < INTERVAL '1 day'`. PostgreSQL compares spans: a month counts 30
//! days and a day 24 hours, so `'1 day' = '24 hours'` and `'48 hours' > '1 day'`.
//! [`IntervalComparisons`] rewrites each comparison with an interval (or a duration, the
//! difference of two timestamps) on either side into a comparison of both sides' spans.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Decimal128Builder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, DurationNanosecondType, IntervalMonthDayNanoType, IntervalUnit, TimeUnit,
};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// Nanoseconds in PostgreSQL's day and month, as its interval comparison counts them.
const DAY_NANOS: i128 = 86_400_000_000_000;
const MONTH_NANOS: i128 = 30 * DAY_NANOS;

/// Runs after type coercion, which has given both sides of a comparison one type.
#[derive(Debug, Default)]
pub struct IntervalComparisons;

impl AnalyzerRule for IntervalComparisons {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        crate::sql::rewrite_expressions(plan, compare_spans)
    }

    fn name(&self) -> &str {
        "interval_comparisons"
    }
}

fn is_interval(expr: &Expr, schema: &DFSchema) -> bool {
    matches!(
        expr.get_type(schema),
        Ok(DataType::Interval(_) | DataType::Duration(_))
    )
}

fn compare_spans(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = expr else {
        return Ok(Transformed::no(expr));
    };
    let comparison = matches!(
        op,
        Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
            | Operator::IsDistinctFrom
            | Operator::IsNotDistinctFrom
    );
    if !comparison || !(is_interval(&left, schema) || is_interval(&right, schema)) {
        return Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr {
            left,
            op,
            right,
        })));
    }
    let span = |e: Box<Expr>| {
        Box::new(Expr::ScalarFunction(ScalarFunction::new_udf(
            Arc::new(ScalarUDF::from(IntervalSpan::default())),
            vec![*e],
        )))
    };
    Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr {
        left: span(left),
        op,
        right: span(right),
    })))
}

/// `interval_span(interval)`: the interval's length in nanoseconds, months as 30 days and
/// days as 24 hours.
#[derive(Debug, PartialEq, Eq, Hash)]
struct IntervalSpan {
    signature: Signature,
}

impl Default for IntervalSpan {
    fn default() -> Self {
        IntervalSpan {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for IntervalSpan {
    fn name(&self) -> &str {
        "interval_span"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Decimal128(38, 0))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let values = args.args[0].to_array(args.number_rows)?;
        let mut out = Decimal128Builder::with_capacity(values.len());
        match values.data_type() {
            DataType::Duration(_) => {
                let nanos = cast(&values, &DataType::Duration(TimeUnit::Nanosecond))?;
                for v in nanos.as_primitive::<DurationNanosecondType>() {
                    out.append_option(v.map(i128::from));
                }
            }
            _ => {
                let intervals = cast(&values, &DataType::Interval(IntervalUnit::MonthDayNano))?;
                for v in intervals.as_primitive::<IntervalMonthDayNanoType>() {
                    out.append_option(v.map(|v| {
                        i128::from(v.months) * MONTH_NANOS
                            + i128::from(v.days) * DAY_NANOS
                            + i128::from(v.nanoseconds)
                    }));
                }
            }
        }
        Ok(ColumnarValue::Array(Arc::new(
            out.finish().with_precision_and_scale(38, 0)?,
        )))
    }
}
