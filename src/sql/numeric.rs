//! Numeric literals, casts and division as PostgreSQL's.
//!
//! A `numeric` without precision holds any value at its own scale in PostgreSQL
//! (`1.5::numeric` is `1.5`); DataFusion's `NUMERIC` is `numeric(38,10)` (`1.5000000000`).
//! A cast to it is marked ([`unconstrained_field`]) and [`UnconstrainedNumeric`] makes it
//! keep a decimal's type, give an integer the digits it needs and a literal its own
//! scale; other values (`double precision`, text columns) get DataFusion's 10 digits.
//!
//! An integer literal is `integer` in PostgreSQL when it fits, `bigint` beyond; DataFusion
//! makes every one a `bigint`, so `2147483647::int + 1` would be `2147483648` rather than
//! an overflow and `SELECT 1` a `bigint` column. [`IntegerLiterals`] gives the literals
//! that fit their `integer` type where the type shows: as operands of arithmetic and as
//! a select list's columns. Function arguments keep `bigint`, which functions written for
//! DataFusion expect (`json_get`'s index, `LIMIT`), as do `VALUES` rows.
//!
//! A literal with a fraction or an exponent is `numeric` in PostgreSQL, exact to its last
//! digit; Runnel plans it as a decimal (DataFusion's `parse_float_as_decimal`), so
//! `0.1 + 0.2` is `0.3` and `12345678901234.123456` keeps its digits. Two things need help:
//!
//! - An exponent (`1e3`, `2.5E-4`) gives DataFusion's decimal a negative or oversized scale,
//!   which Arrow's casts and the wire do not handle; [`without_exponent`] writes the number
//!   out (`1000.`, `0.00025`) before DataFusion reads it, with the scale PostgreSQL gives it.
//! - Arrow divides decimals with a scale four more than the dividend's, truncated (`1.0 / 3`
//!   is `0.33333`), where PostgreSQL keeps at least 16 significant digits and rounds the
//!   last. [`DivisionScale`] widens the dividend so that a quotient has at least 16 digits
//!   after the point, or the operands' own scale if that is more, rounded: PostgreSQL's
//!   scale for operands of like magnitude (`10.0 / 4` is `2.5000000000000000` in both).
//!   PostgreSQL's scale also grows as the quotient gets smaller than the dividend (`1.0 / 3`
//!   has 20 digits there), which a column's fixed type cannot follow; `docs/sql.md` says so.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::{BinaryExpr, Cast};
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, Operator, Projection};
use datafusion::optimizer::AnalyzerRule;

/// The least scale of a quotient of decimals, as PostgreSQL's `NUMERIC_MIN_SIG_DIGITS`.
const MIN_QUOTIENT_SCALE: i8 = 16;

/// The scale Arrow adds to the dividend's for a quotient.
const ARROW_DIVISION_INCREMENT: i8 = 4;

/// The largest precision of a `Decimal128`.
const MAX_PRECISION: u8 = 38;

/// `number` without its exponent, written out with the scale PostgreSQL gives it (the
/// fraction's digits less the exponent, at least 0): `1e3` is `1000.` (a `numeric`, as in
/// PostgreSQL, not an integer), `1.50e1` is `15.0`, `2E-3` is `0.002`. `None` for a number without an exponent, or one too long to write
/// out (DataFusion refuses it as it is).
pub fn without_exponent(number: &str) -> Option<String> {
    let (mantissa, exponent) = number.split_once(['e', 'E'])?;
    let exponent: i64 = exponent.parse().ok()?;
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if !(whole.bytes().chain(fraction.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    // Where the point falls in `digits`.
    let point = i64::try_from(whole.len()).ok()?.checked_add(exponent)?;
    let length = i64::try_from(digits.len()).ok()?;
    if !(-100..=100 + length).contains(&point) {
        return None;
    }
    let written = if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point >= length {
        format!("{digits}{}", "0".repeat((point - length) as usize))
    } else {
        let (whole, fraction) = digits.split_at(point as usize);
        format!("{whole}.{fraction}")
    };
    let significant = written.trim_start_matches('0');
    let mut written = if significant.is_empty() || significant.starts_with('.') {
        format!("0{significant}")
    } else {
        significant.to_string()
    };
    if !written.contains('.') {
        // A trailing point keeps a whole number `numeric`, not an integer.
        written.push('.');
    }
    Some(written)
}

/// The field metadata that marks a cast to `numeric` without precision.
const UNCONSTRAINED: &str = "runnel.numeric";

/// DataFusion's type for `numeric` without precision, marked for [`UnconstrainedNumeric`].
pub fn unconstrained_field() -> FieldRef {
    Arc::new(
        Field::new("", DataType::Decimal128(38, 10), true).with_metadata(
            [(UNCONSTRAINED.to_string(), "unconstrained".to_string())]
                .into_iter()
                .collect(),
        ),
    )
}

/// Runs before type coercion.
#[derive(Debug, Default)]
pub struct UnconstrainedNumeric;

impl AnalyzerRule for UnconstrainedNumeric {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        crate::sql::rewrite_expressions(plan, |expr, schema| {
            let Expr::Cast(Cast { expr: from, field }) = expr else {
                return Ok(Transformed::no(expr));
            };
            if !field.metadata().contains_key(UNCONSTRAINED) {
                return Ok(Transformed::no(Expr::Cast(Cast { expr: from, field })));
            }
            let to = match (from.as_ref(), from.get_type(schema)?) {
                (_, DataType::Decimal128(..)) => return Ok(Transformed::yes(*from)),
                (_, integer) if integer.is_integer() => as_decimal(&integer),
                (Expr::Literal(ScalarValue::Utf8(Some(text)), _), _) => literal_type(text),
                _ => None,
            };
            let (precision, scale) = to.unwrap_or((38, 10));
            Ok(Transformed::yes(Expr::Cast(Cast::new(
                from,
                DataType::Decimal128(precision, scale),
            ))))
        })
    }

    fn name(&self) -> &str {
        "unconstrained_numeric"
    }
}

/// The decimal type of a number written as text (`' 2.50'` is `numeric(3,2)`), if it is
/// one that fits 38 digits.
fn literal_type(text: &str) -> Option<(u8, i8)> {
    let text = text.trim();
    let text = text.strip_prefix(['-', '+']).unwrap_or(text);
    let written = without_exponent(text).unwrap_or_else(|| text.to_string());
    let (whole, fraction) = written.split_once('.').unwrap_or((&written, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole = whole.trim_start_matches('0');
    let precision = u8::try_from(whole.len() + fraction.len()).ok()?.max(1);
    let scale = i8::try_from(fraction.len()).ok()?;
    (precision <= MAX_PRECISION).then_some((precision, scale))
}

/// Runs before type coercion, so that an `integer` literal meets other types as PostgreSQL's
/// does.
#[derive(Debug, Default)]
pub struct IntegerLiterals;

impl AnalyzerRule for IntegerLiterals {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        if recursive(&plan)? {
            // A recursive query's working table has the types its first term had when
            // planned; a narrowed literal there would no longer meet them.
            return Ok(plan);
        }
        let plan = crate::sql::rewrite_expressions(plan, |expr, _| {
            Ok(match expr {
                Expr::BinaryExpr(BinaryExpr { left, op, right }) if op.is_numerical_operators() => {
                    let (left, narrowed_left) = narrowed(*left);
                    let (right, narrowed_right) = narrowed(*right);
                    let expr =
                        Expr::BinaryExpr(BinaryExpr::new(Box::new(left), op, Box::new(right)));
                    if narrowed_left || narrowed_right {
                        Transformed::yes(expr)
                    } else {
                        Transformed::no(expr)
                    }
                }
                other => Transformed::no(other),
            })
        })?;
        plan.transform_up_with_subqueries(|node| {
            let LogicalPlan::Projection(projection) = node else {
                return Ok(Transformed::no(node));
            };
            let literal = |column: &Expr| match column {
                Expr::Alias(alias) => fits_integer(&alias.expr),
                column => fits_integer(column),
            };
            if !projection.expr.iter().any(literal) {
                return Ok(Transformed::no(LogicalPlan::Projection(projection)));
            }
            let columns = projection
                .expr
                .into_iter()
                .map(|column| match column {
                    Expr::Alias(mut alias) => {
                        alias.expr = Box::new(narrowed(*alias.expr).0);
                        Expr::Alias(alias)
                    }
                    column if fits_integer(&column) => {
                        let name = column.schema_name().to_string();
                        narrowed(column).0.alias(name)
                    }
                    column => column,
                })
                .collect();
            let projection = Projection::try_new(columns, projection.input)?;
            Ok(Transformed::yes(LogicalPlan::Projection(projection)))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "integer_literals"
    }
}

/// Whether `plan` or a subquery of it is a recursive query.
fn recursive(plan: &LogicalPlan) -> Result<bool> {
    let mut found = false;
    plan.apply_with_subqueries(|node| {
        found |= matches!(node, LogicalPlan::RecursiveQuery(_));
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    Ok(found)
}

/// Whether `expr` is a `bigint` literal that fits an `integer`.
fn fits_integer(expr: &Expr) -> bool {
    matches!(expr, Expr::Literal(ScalarValue::Int64(Some(v)), _) if i32::try_from(*v).is_ok())
}

/// `expr` as an `integer` literal if it is a `bigint` literal that fits, and whether it was.
fn narrowed(expr: Expr) -> (Expr, bool) {
    match expr {
        Expr::Literal(ScalarValue::Int64(Some(v)), metadata) => match i32::try_from(v) {
            Ok(v) => (Expr::Literal(ScalarValue::Int32(Some(v)), metadata), true),
            Err(_) => (Expr::Literal(ScalarValue::Int64(Some(v)), metadata), false),
        },
        other => (other, false),
    }
}

/// Runs before type coercion, so that a `double precision` and a `numeric` that must share
/// a type share PostgreSQL's: in `CASE`, `coalesce`, `nullif`, `greatest`, `least` and
/// `ARRAY[…]`, the `numeric`s become `double precision` (`coalesce(x, 0.0)` of a float
/// `x` is a float), where DataFusion would make every value a decimal.
#[derive(Debug, Default)]
pub struct FloatsOverNumeric;

impl AnalyzerRule for FloatsOverNumeric {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        crate::sql::rewrite_expressions(plan, floats_over_numeric)
    }

    fn name(&self) -> &str {
        "floats_over_numeric"
    }
}

/// The functions whose arguments PostgreSQL resolves to one type.
const UNIFYING_FUNCTIONS: [&str; 5] = ["coalesce", "nullif", "greatest", "least", "make_array"];

fn floats_over_numeric(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    match expr {
        Expr::Case(mut case) => {
            let mut values: Vec<&mut Expr> = case
                .when_then_expr
                .iter_mut()
                .map(|(_, then)| then.as_mut())
                .collect();
            values.extend(case.else_expr.as_deref_mut());
            let changed = as_floats(values, schema)?;
            Ok(Transformed::new_transformed(Expr::Case(case), changed))
        }
        Expr::ScalarFunction(mut f) if UNIFYING_FUNCTIONS.contains(&f.name()) => {
            let changed = as_floats(f.args.iter_mut(), schema)?;
            Ok(Transformed::new_transformed(
                Expr::ScalarFunction(f),
                changed,
            ))
        }
        other => Ok(Transformed::no(other)),
    }
}

/// Casts the decimals among `values` to `double precision` if there is a float among them;
/// whether it did.
fn as_floats<'a>(
    values: impl IntoIterator<Item = &'a mut Expr>,
    schema: &DFSchema,
) -> Result<bool> {
    let mut typed = vec![];
    for value in values {
        let data_type = value.get_type(schema)?;
        typed.push((value, data_type));
    }
    if !typed.iter().any(|(_, t)| t.is_floating()) {
        return Ok(false);
    }
    let mut changed = false;
    for (value, data_type) in typed {
        if matches!(
            data_type,
            DataType::Decimal128(..) | DataType::Decimal256(..)
        ) {
            let decimal = std::mem::replace(value, Expr::Literal(ScalarValue::Null, None));
            *value = Expr::Cast(Cast::new(Box::new(decimal), DataType::Float64));
            changed = true;
        }
    }
    Ok(changed)
}

/// Runs before type coercion, which then casts the divisor to the widened dividend's type.
#[derive(Debug, Default)]
pub struct DivisionScale;

impl AnalyzerRule for DivisionScale {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        crate::sql::rewrite_expressions(plan, widen_dividend)
    }

    fn name(&self) -> &str {
        "division_scale"
    }
}

/// `a / b` of decimals (or a decimal and an integer) as `CAST(CAST(a AS wider) / b AS
/// quotient)`: the dividend widened so that Arrow's quotient has one digit more than the
/// scale wanted, and that digit rounded off (Arrow's division truncates; PostgreSQL's
/// rounds its last digit).
fn widen_dividend(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::BinaryExpr(BinaryExpr {
        left,
        op: Operator::Divide,
        right,
    }) = expr
    else {
        return Ok(Transformed::no(expr));
    };
    let types = (left.get_type(schema)?, right.get_type(schema)?);
    let quotient = |left| {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Divide,
            right,
        })
    };
    let (Some((p1, s1)), Some((_, s2))) = (as_decimal(&types.0), as_decimal(&types.1)) else {
        return Ok(Transformed::no(quotient(left)));
    };
    if !matches!(
        types,
        (DataType::Decimal128(..), _) | (_, DataType::Decimal128(..))
    ) {
        return Ok(Transformed::no(quotient(left)));
    }
    let wanted = MIN_QUOTIENT_SCALE.max(s1).max(s2);
    let widen = i16::from(wanted) + 1 - i16::from(s1) - i16::from(ARROW_DIVISION_INCREMENT);
    // Arrow scales the dividend up by `4 + s2` digits before it divides, in 38 digits: a
    // wider dividend must leave room for that, or a large value would overflow where the
    // division itself fits.
    let room = i16::from(MAX_PRECISION)
        - i16::from(p1)
        - i16::from(ARROW_DIVISION_INCREMENT)
        - i16::from(s2);
    let widen = widen.min(room);
    if widen <= 0 {
        return Ok(Transformed::no(quotient(left)));
    }
    // Both fit: `p1 + widen` is at most 38, and `s1 + widen` at most `wanted + 1`.
    let widened =
        DataType::Decimal128((i16::from(p1) + widen) as u8, (i16::from(s1) + widen) as i8);
    let divided = quotient(Box::new(Expr::Cast(Cast::new(left, widened))));
    let DataType::Decimal128(p, s) = divided.get_type(schema)? else {
        return Ok(Transformed::yes(divided));
    };
    if s <= wanted {
        return Ok(Transformed::yes(divided));
    }
    let rounded = DataType::Decimal128(p - (s - wanted) as u8, wanted);
    Ok(Transformed::yes(Expr::Cast(Cast::new(
        Box::new(divided),
        rounded,
    ))))
}

/// The decimal type of a decimal, or the one DataFusion's coercion gives an integer.
fn as_decimal(data_type: &DataType) -> Option<(u8, i8)> {
    match data_type {
        DataType::Decimal128(p, s) => Some((*p, *s)),
        DataType::Int8 | DataType::UInt8 => Some((3, 0)),
        DataType::Int16 | DataType::UInt16 => Some((5, 0)),
        DataType::Int32 | DataType::UInt32 => Some((10, 0)),
        DataType::Int64 | DataType::UInt64 => Some((20, 0)),
        _ => None,
    }
}

/// Puts [`without_exponent`] into a parsed statement's number literal; refuses one whose
/// exponent takes it beyond what a decimal holds.
pub fn write_out_exponent(expr: &mut sqlparser::ast::Expr) -> crate::error::Result<()> {
    if let sqlparser::ast::Expr::Value(value) = expr
        && let sqlparser::ast::Value::Number(number, long) = &value.value
        && number.contains(['e', 'E'])
    {
        let Some(written) = without_exponent(number) else {
            return Err(crate::error::Error::Unsupported(format!(
                "the numeric literal {number} has more digits than Runnel's numeric holds \
                 (76); for a double precision value write '{number}'::float8"
            )));
        };
        value.value = sqlparser::ast::Value::Number(written, *long);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::without_exponent;

    #[test]
    fn text_literals_keep_their_scale() {
        for (text, typed) in [
            ("2.25", Some((3, 2))),
            (" -0.5 ", Some((1, 1))),
            ("007", Some((1, 0))),
            ("1e3", Some((4, 0))),
            ("1.50e1", Some((3, 1))),
            ("0", Some((1, 0))),
            ("abc", None),
            ("", None),
            ("1.", Some((1, 0))),
        ] {
            assert_eq!(super::literal_type(text), typed, "{text}");
        }
    }

    #[test]
    fn exponents_are_written_out_with_postgresql_scale() {
        for (number, written) in [
            ("1e3", "1000."),
            ("1E+3", "1000."),
            ("1.50e1", "15.0"),
            ("1.5e1", "15."),
            ("2E-3", "0.002"),
            ("12e-1", "1.2"),
            (".5e1", "5."),
            ("0.5e1", "5."),
            ("0e0", "0."),
            ("1e15", "1000000000000000."),
            ("123.456e-5", "0.00123456"),
        ] {
            assert_eq!(
                without_exponent(number).as_deref(),
                Some(written),
                "{number}"
            );
        }
        assert_eq!(without_exponent("1.5"), None);
        assert_eq!(without_exponent("1e400"), None);
        assert_eq!(without_exponent("1e-400"), None);
    }
}
