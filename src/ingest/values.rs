//! `INSERT … VALUES` of plain literals, turned into rows without a query plan.
//!
//! Planning a multi-row `VALUES` with DataFusion costs far more than writing it (type
//! coercion and constant folding walk every literal several times), and multi-row inserts of
//! literals are how most clients load data. When every value is a literal the column's type
//! reads the same way Arrow's cast reads it — which is what DataFusion's plan would do — the
//! rows are built here directly. Anything else (expressions, function calls, numbers with a
//! fraction for integer columns, decimals) returns `None` and takes the planned path, so both
//! paths give the same rows.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, StringBuilder, new_null_array};
use arrow::datatypes::DataType;
use sqlparser::ast::{Expr, Insert, SetExpr, UnaryOperator, Value};

use super::WriteTarget;
use crate::catalog::SqlType;
use crate::error::{Error, Result};

/// A literal as text (what Arrow's cast from `Utf8` reads), or NULL.
enum Literal<'a> {
    Null,
    Number(String),
    Text(&'a str),
    Bool(bool),
}

fn literal(expr: &Expr) -> Option<Literal<'_>> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::Null => Some(Literal::Null),
            Value::Number(n, _) => Some(Literal::Number(n.clone())),
            Value::SingleQuotedString(s) => Some(Literal::Text(s)),
            Value::Boolean(b) => Some(Literal::Bool(*b)),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match expr.as_ref() {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => Some(Literal::Number(format!("-{n}"))),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// Whether `literal` means the same here as in DataFusion's plan for a column of `sql_type`.
fn fits(literal: &Literal<'_>, sql_type: SqlType) -> bool {
    use SqlType::*;
    match literal {
        Literal::Null => true,
        Literal::Number(n) => match sql_type {
            SmallInt | Integer | BigInt => !n.contains(['.', 'e', 'E']),
            Real | Double => true,
            _ => false,
        },
        Literal::Text(_) => !matches!(sql_type, Numeric { .. } | Interval),
        Literal::Bool(_) => sql_type == Boolean,
    }
}

/// The rows of `INSERT INTO target [(columns)] VALUES …`, if every value is a plain literal
/// that fits its column; `None` to plan the statement instead. `types` are the declared types
/// of the target's row columns.
pub fn literal_rows(
    insert: &Insert,
    target: &WriteTarget,
    types: &[SqlType],
) -> Option<Result<RecordBatch>> {
    if insert.on.is_some()
        || insert.returning.is_some()
        || !insert.assignments.is_empty()
        || insert.overwrite
    {
        return None;
    }
    let query = insert.source.as_ref()?;
    if query.with.is_some()
        || query.order_by.is_some()
        || query.limit_clause.is_some()
        || query.fetch.is_some()
    {
        return None;
    }
    let SetExpr::Values(values) = query.body.as_ref() else {
        return None;
    };
    let fields = target.row_schema.fields();
    let columns: Vec<usize> = if insert.columns.is_empty() {
        (0..fields.len()).collect()
    } else {
        let mut out = vec![];
        for name in &insert.columns {
            let name = name
                .0
                .last()?
                .as_ident()
                .map(crate::sql::parser::normalize)?;
            let Some(i) = fields.iter().position(|f| *f.name() == name) else {
                return Some(Err(Error::plan(
                    "42703",
                    format!(
                        "column \"{name}\" of relation \"{}\" does not exist",
                        target.relation
                    ),
                )));
            };
            if out.contains(&i) {
                return Some(Err(Error::plan(
                    "42701",
                    format!("column \"{name}\" specified more than once"),
                )));
            }
            out.push(i);
        }
        out
    };
    let rows = values.rows.len();
    let mut texts: Vec<StringBuilder> = columns
        .iter()
        .map(|_| StringBuilder::with_capacity(rows, rows * 16))
        .collect();
    for row in &values.rows {
        let row = &row.content;
        if row.len() != columns.len() {
            let message = if row.len() > columns.len() {
                "INSERT has more expressions than target columns"
            } else {
                "INSERT has more target columns than expressions"
            };
            return Some(Err(Error::plan("42601", message)));
        }
        for ((expr, &column), text) in row.iter().zip(&columns).zip(texts.iter_mut()) {
            let value = literal(expr)?;
            if !fits(&value, types[column]) {
                return None;
            }
            match value {
                Literal::Null => text.append_null(),
                Literal::Number(n) => text.append_value(n),
                Literal::Text(s) => text.append_value(s),
                Literal::Bool(b) => text.append_value(if b { "true" } else { "false" }),
            }
        }
    }
    let mut arrays: Vec<ArrayRef> = fields
        .iter()
        .map(|f| new_null_array(f.data_type(), rows))
        .collect();
    for (column, mut text) in columns.into_iter().zip(texts) {
        let text = text.finish();
        let field = &fields[column];
        let typed = match typed_column(&text, field.data_type()) {
            Ok(a) => a,
            Err(row) => return Some(Err(invalid_value(types[column], text.value(row), ""))),
        };
        arrays[column] = typed;
    }
    Some(
        RecordBatch::try_new(target.row_schema.clone(), arrays)
            .map_err(|e| Error::Internal(format!("building inserted rows: {e}"))),
    )
}

/// The error for a value that does not read as `sql_type`, as PostgreSQL words it;
/// `context` (e.g. `COPY clicks, line 3, column id: `) goes before the message.
pub fn invalid_value(sql_type: SqlType, value: &str, context: &str) -> Error {
    let integral = matches!(
        sql_type,
        SqlType::SmallInt | SqlType::Integer | SqlType::BigInt
    );
    if integral && value.trim().parse::<i128>().is_ok() {
        return Error::data(
            "22003",
            format!("{context}value \"{value}\" is out of range for type {sql_type}"),
        );
    }
    let code = if sql_type.is_temporal() {
        "22007"
    } else {
        "22P02"
    };
    Error::data(
        code,
        format!("{context}invalid input syntax for type {sql_type}: \"{value}\""),
    )
}

/// Text values as a column of `target` type, with Arrow's cast (as DataFusion's plan would
/// cast them). On a value that does not parse, its row.
pub fn typed_column(text: &StringArray, target: &DataType) -> std::result::Result<ArrayRef, usize> {
    if *target == DataType::Utf8 {
        return Ok(Arc::new(text.clone()));
    }
    let typed = arrow::compute::kernels::cast::cast_with_options(
        text,
        target,
        &arrow::compute::CastOptions {
            safe: true,
            format_options: Default::default(),
        },
    )
    .map_err(|_| 0usize)?;
    if typed.null_count() != text.null_count() {
        let row = (0..text.len())
            .find(|&i| text.is_valid(i) && typed.is_null(i))
            .unwrap_or(0);
        return Err(row);
    }
    Ok(typed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{CatalogData, ColumnDef, StreamDef, TopicDef, ValueFormat};
    use crate::storage::{Compression, TopicId};
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn target() -> (WriteTarget, Vec<SqlType>) {
        let mut data = CatalogData::default();
        let columns = vec![
            ColumnDef {
                name: "id".into(),
                sql_type: SqlType::BigInt,
                nullable: true,
            },
            ColumnDef {
                name: "url".into(),
                sql_type: SqlType::Text,
                nullable: true,
            },
            ColumnDef {
                name: "ts".into(),
                sql_type: SqlType::Timestamp,
                nullable: true,
            },
        ];
        let types = columns.iter().map(|c| c.sql_type).collect();
        data.streams.insert(
            "s".into(),
            StreamDef {
                name: "s".into(),
                topic: "s".into(),
                columns,
                key_columns: vec![],
                value_format: ValueFormat::Json,
                timestamp_column: None,
                watermark: None,
            },
        );
        data.topics.insert(
            "s".into(),
            TopicDef {
                id: TopicId(1),
                name: "s".into(),
                partitions: 1,
                compression: Compression::None,
                retention_ms: None,
                retention_bytes: None,
                segment_bytes: 1 << 30,
                stream: Some("s".into()),
                created_at_ms: 0,
            },
        );
        (
            WriteTarget::of(&data, &data.relation("s").unwrap()).unwrap(),
            types,
        )
    }

    fn rows(sql: &str) -> Option<Result<RecordBatch>> {
        let statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        let sqlparser::ast::Statement::Insert(insert) = statement else {
            panic!()
        };
        let (target, types) = target();
        literal_rows(&insert, &target, &types)
    }

    #[test]
    fn literals_become_typed_rows() {
        let batch = rows("INSERT INTO s VALUES (1, '/a', '2026-01-01 10:00:00'), (-2, NULL, NULL)")
            .unwrap()
            .unwrap();
        assert_eq!(
            batch.column(0).as_primitive::<Int64Type>().values(),
            &[1, -2]
        );
        assert!(batch.column(1).is_null(1));
        let batch = rows("INSERT INTO s (url) VALUES ('/x')").unwrap().unwrap();
        assert!(batch.column(0).is_null(0));
        assert_eq!(batch.column(1).as_string::<i32>().value(0), "/x");
    }

    #[test]
    fn anything_but_plain_literals_is_planned() {
        assert!(rows("INSERT INTO s VALUES (1, '/a', now())").is_none());
        assert!(rows("INSERT INTO s VALUES (1.5, '/a', NULL)").is_none());
        assert!(rows("INSERT INTO s VALUES (1, 2, NULL)").is_none());
        assert!(rows("INSERT INTO s SELECT 1, 'a', NULL").is_none());
    }

    #[test]
    fn bad_rows_are_errors() {
        let e = rows("INSERT INTO s VALUES ('x1', '/a', NULL)")
            .unwrap()
            .unwrap_err();
        assert_eq!(
            (e.sqlstate(), e.to_string().as_str()),
            ("22P02", "invalid input syntax for type bigint: \"x1\"")
        );
        assert_eq!(
            rows("INSERT INTO s VALUES (1, '/a', 'soon')")
                .unwrap()
                .unwrap_err()
                .sqlstate(),
            "22007"
        );
        assert_eq!(
            rows("INSERT INTO s VALUES (1)")
                .unwrap()
                .unwrap_err()
                .sqlstate(),
            "42601"
        );
        assert_eq!(
            rows("INSERT INTO s (nope) VALUES (1)")
                .unwrap()
                .unwrap_err()
                .sqlstate(),
            "42703"
        );
    }
}
