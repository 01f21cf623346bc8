//! What an `INSERT` may store in a column. DataFusion casts whatever it is given to the
//! column's type (`true` into a `bigint` becomes 1, a timestamp its nanoseconds); PostgreSQL
//! stores a value only through an assignment cast and refuses the rest with 42804. The cast
//! DataFusion put in front of each column is checked against PostgreSQL's rule.

use arrow::datatypes::DataType;
use datafusion::logical_expr::{Cast, DmlStatement, Expr, ExprSchemable, LogicalPlan, TryCast};

use crate::catalog::SqlType;
use crate::error::{Error, Result};

/// Refuses an insert that stores a value of a type PostgreSQL would not assign to its column.
pub fn check_insert(dml: &DmlStatement) -> Result<()> {
    let LogicalPlan::Projection(projection) = dml.input.as_ref() else {
        return Ok(());
    };
    let input = projection.input.schema();
    for (expr, field) in projection.expr.iter().zip(projection.schema.fields()) {
        let expr = unaliased(expr);
        if let Some(from) = cast_from(expr, input) {
            check(&from, field.data_type(), field.name())?;
        }
        // `VALUES` rows are cast to the columns' types where they are written.
        if let (Expr::Column(column), LogicalPlan::Values(values)) =
            (expr, projection.input.as_ref())
            && let Ok(i) = values.schema.index_of_column(column)
        {
            for row in &values.values {
                if let Some(from) = row.get(i).and_then(|e| cast_from(unaliased(e), input)) {
                    check(&from, field.data_type(), field.name())?;
                }
            }
        }
    }
    Ok(())
}

fn unaliased(expr: &Expr) -> &Expr {
    match expr {
        Expr::Alias(alias) => unaliased(&alias.expr),
        other => other,
    }
}

/// The type a cast converts from, if `expr` is one.
fn cast_from(expr: &Expr, schema: &datafusion::common::DFSchema) -> Option<DataType> {
    let (Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. })) = expr else {
        return None;
    };
    expr.get_type(schema).ok()
}

fn check(from: &DataType, to: &DataType, column: &str) -> Result<()> {
    if assignable(from, to) {
        return Ok(());
    }
    Err(Error::plan(
        "42804",
        format!(
            "column \"{column}\" is of type {} but expression is of type {}",
            type_name(to),
            type_name(from)
        ),
    ))
}

/// Whether PostgreSQL assigns a value of type `from` to a column of type `to`: numbers to
/// numbers, anything to text, dates and times among themselves, bytes to bytes. Text is
/// assigned to anything, as PostgreSQL does with a quoted literal (which is what text
/// before an insert's cast almost always is), the value's own syntax then decides.
fn assignable(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    let text = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    let binary = |t: &DataType| matches!(t, Binary | LargeBinary | BinaryView | FixedSizeBinary(_));
    let datetime = |t: &DataType| matches!(t, Date32 | Date64 | Timestamp(..));
    let time = |t: &DataType| matches!(t, Time32(_) | Time64(_));
    let interval = |t: &DataType| matches!(t, Interval(_) | Duration(_));
    match (from, to) {
        (from, to) if from == to => true,
        (Null, _) => true,
        (Dictionary(_, from), to) => assignable(from, to),
        (from, to) if from.is_numeric() && to.is_numeric() => true,
        (from, to) if text(from) || text(to) => true,
        (from, to) if datetime(from) && datetime(to) => true,
        (from, to) if time(from) && time(to) => true,
        (from, to) if interval(from) && (interval(to) || time(to)) => true,
        (from, to) if binary(from) && binary(to) => true,
        (
            List(from) | LargeList(from) | FixedSizeList(from, _),
            List(to) | LargeList(to) | FixedSizeList(to, _),
        ) => assignable(from.data_type(), to.data_type()),
        (Struct(_), Struct(_)) => true,
        _ => false,
    }
}

fn type_name(t: &DataType) -> String {
    match SqlType::from_arrow(t) {
        Some(SqlType::Numeric { .. }) => "numeric".into(),
        Some(sql) => sql.to_string(),
        None => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::TimeUnit;

    #[test]
    fn assignment_casts_are_postgresqls() {
        use DataType::*;
        let timestamp = Timestamp(TimeUnit::Microsecond, None);
        for (from, to) in [
            (Int32, Int64),
            (Float64, Int16),
            (Int64, Utf8),
            (Boolean, Utf8),
            (Utf8, timestamp.clone()),
            (Utf8, Boolean),
            (Date32, timestamp.clone()),
            (Null, Boolean),
        ] {
            assert!(assignable(&from, &to), "{from} to {to}");
        }
        for (from, to) in [
            (Boolean, Int64),
            (Int64, Boolean),
            (timestamp.clone(), Int64),
            (Int64, timestamp.clone()),
            (Int64, Binary),
            (Date32, Int32),
        ] {
            assert!(!assignable(&from, &to), "{from} to {to}");
        }
    }
}
