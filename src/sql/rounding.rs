//! Casts of fractional values to integers round as PostgreSQL's do.
//!
//! Arrow's cast truncates (`2.7::int` is 2). PostgreSQL rounds: a `numeric` half away from
//! zero (`2.5::int` is 3, `-2.5::int` is -3), a `double precision` or `real` to the nearest
//! even integer on a tie (`2.5::float8::int` is 2), as C's `rint`. [`RoundingCasts`] puts the rounding before each such cast.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, Decimal128Builder, Float64Builder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Float64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::expr::{Cast, ScalarFunction, TryCast};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// Runs after type coercion, whose casts it rounds too.
#[derive(Debug, Default)]
pub struct RoundingCasts;

impl AnalyzerRule for RoundingCasts {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        crate::sql::rewrite_expressions(plan, round_first)
    }

    fn name(&self) -> &str {
        "rounding_casts"
    }
}

fn round_first(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let (inner, to) = match &expr {
        Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) => {
            (expr.as_ref(), field.data_type())
        }
        _ => return Ok(Transformed::no(expr)),
    };
    if !to.is_integer() {
        return Ok(Transformed::no(expr));
    }
    let ties = match inner.get_type(schema) {
        Ok(DataType::Decimal128(..) | DataType::Decimal256(..)) => Ties::AwayFromZero,
        Ok(DataType::Float16 | DataType::Float32 | DataType::Float64) => Ties::ToEven,
        _ => return Ok(Transformed::no(expr)),
    };
    let rounded = |inner: Box<Expr>| {
        Box::new(Expr::ScalarFunction(ScalarFunction::new_udf(
            Arc::new(ScalarUDF::from(RoundForCast::new(ties))),
            vec![*inner],
        )))
    };
    Ok(Transformed::yes(match expr {
        Expr::Cast(Cast { expr, field }) => Expr::Cast(Cast {
            expr: rounded(expr),
            field,
        }),
        Expr::TryCast(TryCast { expr, field }) => Expr::TryCast(TryCast {
            expr: rounded(expr),
            field,
        }),
        other => other,
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Ties {
    AwayFromZero,
    ToEven,
}

/// The value rounded to an integer of its own type (a decimal keeps its type's scale).
#[derive(Debug, PartialEq, Eq, Hash)]
struct RoundForCast {
    ties: Ties,
    signature: Signature,
}

impl RoundForCast {
    fn new(ties: Ties) -> RoundForCast {
        RoundForCast {
            ties,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for RoundForCast {
    fn name(&self) -> &str {
        match self.ties {
            Ties::AwayFromZero => "round",
            Ties::ToEven => "rint",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(match &args[0] {
            DataType::Decimal128(p, s) => DataType::Decimal128(*p, *s),
            _ => DataType::Float64,
        })
    }

    fn return_field_from_args(
        &self,
        args: ReturnFieldArgs,
    ) -> Result<datafusion::arrow::datatypes::FieldRef> {
        let t = self.return_type(&[args.arg_fields[0].data_type().clone()])?;
        Ok(Arc::new(datafusion::arrow::datatypes::Field::new(
            self.name(),
            t,
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let values = args.args[0].to_array(args.number_rows)?;
        Ok(ColumnarValue::Array(match values.data_type() {
            DataType::Decimal128(p, s) => {
                let (p, s) = (*p, *s);
                let unit = 10i128.checked_pow(s.max(0) as u32).unwrap_or(i128::MAX);
                let mut out = Decimal128Builder::with_capacity(values.len());
                for v in values.as_primitive::<Decimal128Type>() {
                    out.append_option(v.map(|v| {
                        if s <= 0 {
                            return v;
                        }
                        let whole = v / unit;
                        let rest = v % unit;
                        let up = rest.abs() * 2 >= unit;
                        (whole + if up { v.signum() } else { 0 }) * unit
                    }));
                }
                Arc::new(out.finish().with_precision_and_scale(p, s)?)
            }
            _ => {
                let floats = cast(&values, &DataType::Float64)?;
                let mut out = Float64Builder::with_capacity(values.len());
                for v in floats.as_primitive::<Float64Type>() {
                    out.append_option(v.map(|v| match self.ties {
                        Ties::AwayFromZero => v.round(),
                        Ties::ToEven => v.round_ties_even(),
                    }));
                }
                Arc::new(out.finish())
            }
        }))
    }
}
