//! `INSERT … VALUES` of plain literals, turned into rows without a query plan.
//!
//! Planning a multi-row `VALUES` with DataFusion costs far more than writing it (type
//! coercion and constant folding walk every literal several times), and multi-row inserts of
//! literals are how most clients load data. When every value is a literal the column's type
//! reads the same way Arrow's cast reads it — which is what DataFusion's plan would do — the
//! rows are built here directly. Anything else (expressions, function calls, numbers with a
//! fraction for integer columns, decimals) returns `None` and takes the planned path, so both
//! paths give the same rows.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::TimestampMicrosecondArray;
use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, StringBuilder, new_null_array};
use arrow::buffer::ScalarBuffer;
use arrow::datatypes::{DataType, TimeUnit};
use sqlparser::ast::{Expr, Insert, SetExpr, UnaryOperator, Value};

use super::WriteTarget;
use crate::catalog::SqlType;
use crate::error::{Error, Result};

/// A literal as text (what Arrow's cast from `Utf8` reads), or NULL.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal<'a> {
    Null,
    Number(Cow<'a, str>),
    Text(Cow<'a, str>),
    Bool(bool),
}

/// The rows of an `INSERT … VALUES` whose values are all literals, however it was parsed.
#[derive(Debug, Clone)]
pub struct LiteralInsert<'a> {
    /// The column list, normalized; empty for all columns in order.
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Literal<'a>>>,
}

impl<'a> LiteralInsert<'a> {
    /// From the general parser's syntax tree; `None` if any value is not a plain literal or
    /// the statement has more than `INSERT INTO … [(…)] VALUES …`.
    pub fn from_ast(insert: &'a Insert) -> Option<LiteralInsert<'a>> {
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
        let columns = insert
            .columns
            .iter()
            .map(|c| {
                c.0.last()
                    .and_then(|p| p.as_ident())
                    .map(crate::catalog::normalize)
            })
            .collect::<Option<Vec<_>>>()?;
        let rows = values
            .rows
            .iter()
            .map(|row| row.content.iter().map(literal).collect::<Option<Vec<_>>>())
            .collect::<Option<Vec<_>>>()?;
        Some(LiteralInsert { columns, rows })
    }
}

fn literal(expr: &Expr) -> Option<Literal<'_>> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::Null => Some(Literal::Null),
            Value::Number(n, _) => Some(Literal::Number(Cow::Borrowed(n))),
            Value::SingleQuotedString(s) => Some(Literal::Text(Cow::Borrowed(s))),
            Value::Boolean(b) => Some(Literal::Bool(*b)),
            _ => None,
        },
        Expr::UnaryOp { op, expr } => match (op, expr.as_ref()) {
            (UnaryOperator::Minus, Expr::Value(v)) => match &v.value {
                Value::Number(n, _) => Some(Literal::Number(Cow::Owned(format!("-{n}")))),
                _ => None,
            },
            (UnaryOperator::Plus, Expr::Value(v)) => match &v.value {
                Value::Number(n, _) => Some(Literal::Number(Cow::Borrowed(n))),
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

/// The rows of a literal `INSERT` into `target`, if every value fits its column; `None` to
/// plan the statement instead. `types` are the declared types of the target's row columns.
pub fn literal_rows(
    insert: &LiteralInsert<'_>,
    target: &WriteTarget,
    types: &[SqlType],
) -> Option<Result<RecordBatch>> {
    let fields = target.row_schema.fields();
    let columns: Vec<usize> = if insert.columns.is_empty() {
        (0..fields.len()).collect()
    } else {
        let mut out = vec![];
        for name in &insert.columns {
            let Some(i) = fields.iter().position(|f| f.name() == name) else {
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
    let rows = insert.rows.len();
    let mut texts: Vec<StringBuilder> = columns
        .iter()
        .map(|_| StringBuilder::with_capacity(rows, rows * 16))
        .collect();
    for row in &insert.rows {
        if row.len() != columns.len() {
            let message = if row.len() > columns.len() {
                "INSERT has more expressions than target columns"
            } else {
                "INSERT has more target columns than expressions"
            };
            return Some(Err(Error::plan("42601", message)));
        }
        for ((value, &column), text) in row.iter().zip(&columns).zip(texts.iter_mut()) {
            if !fits(value, types[column]) {
                return None;
            }
            match value {
                Literal::Null => text.append_null(),
                Literal::Number(n) => text.append_value(n),
                Literal::Text(s) => text.append_value(s),
                Literal::Bool(b) => text.append_value(if *b { "true" } else { "false" }),
            }
        }
    }
    let mut arrays: Vec<ArrayRef> = fields
        .iter()
        .map(|f| new_null_array(f.data_type(), rows))
        .collect();
    for (column, mut text) in columns.into_iter().zip(texts) {
        let text = text.finish();
        match typed_column(&text, fields[column].data_type()) {
            Ok(typed) => arrays[column] = typed,
            Err(row) => return Some(Err(invalid_value(types[column], text.value(row), ""))),
        }
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
    if let DataType::Timestamp(TimeUnit::Microsecond, tz) = target
        && let Some(micros) = timestamps_micros(text)
    {
        return Ok(Arc::new(
            TimestampMicrosecondArray::new(micros, text.nulls().cloned())
                .with_timezone_opt(tz.clone()),
        ));
    }
    // Arrow's parser wants seconds; PostgreSQL reads times to the minute too.
    let minutes: Option<StringArray> = matches!(target, DataType::Timestamp(..))
        .then(|| {
            text.iter()
                .any(|v| v.is_some_and(|v| with_seconds(v).is_some()))
                .then(|| {
                    text.iter()
                        .map(|v| v.map(|v| with_seconds(v).unwrap_or_else(|| v.to_string())))
                        .collect()
                })
        })
        .flatten();
    let text = minutes.as_ref().unwrap_or(text);
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

/// A timestamp written to the minute (`2024-01-01 10:00`, `… 10:00+02`), which PostgreSQL
/// reads and Arrow's parser does not, with its seconds (`10:00:00`).
pub fn with_seconds(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let date = b.len() >= 10
        && b[..10].iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    if !date || !matches!(b.get(10), Some(b' ' | b'T')) {
        return None;
    }
    let time = &text[11..];
    let hour_digits = time.bytes().take_while(u8::is_ascii_digit).count();
    let rest = &time[hour_digits..];
    let minutes = rest.strip_prefix(':')?;
    if !(1..=2).contains(&hour_digits)
        || minutes.len() < 2
        || !minutes.as_bytes()[..2].iter().all(u8::is_ascii_digit)
        || minutes
            .as_bytes()
            .get(2)
            .is_some_and(|c| *c == b':' || c.is_ascii_digit())
    {
        return None;
    }
    let end = 11 + hour_digits + 3;
    Some(format!("{}:00{}", &text[..end], &text[end..]))
}

/// Every value of `text` in the form `YYYY-MM-DD[ T]HH:MM[:SS[.fraction]]` (or a bare date), as
/// microseconds since the epoch; `None` if any value has another form (Arrow's general parser
/// takes those). The common form read directly is several times faster than the general
/// parser, and gives the same value: the time as written, without a zone, fraction truncated
/// to microseconds.
fn timestamps_micros(text: &StringArray) -> Option<ScalarBuffer<i64>> {
    let mut out = Vec::with_capacity(text.len());
    for i in 0..text.len() {
        if text.is_null(i) {
            out.push(0);
        } else {
            out.push(timestamp_micros(text.value(i).as_bytes())?);
        }
    }
    Some(out.into())
}

fn timestamp_micros(s: &[u8]) -> Option<i64> {
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(range)?;
        part.iter().try_fold(0i64, |n, b| {
            b.is_ascii_digit().then(|| n * 10 + (b - b'0') as i64)
        })
    };
    if s.len() < 10 || s[4] != b'-' || s[7] != b'-' {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut seconds = days_from_civil(year, month, day) * 86_400;
    let mut micros = 0;
    if s.len() > 10 {
        // To the minute (`10:00`), as PostgreSQL reads it too, or to the second.
        let to_the_minute = s.len() == 16;
        if !(s[10] == b' ' || s[10] == b'T')
            || s.len() < 16
            || s[13] != b':'
            || !(to_the_minute || (s.len() >= 19 && s[16] == b':'))
        {
            return None;
        }
        let sec = if to_the_minute { 0 } else { digits(17..19)? };
        let (h, m) = (digits(11..13)?, digits(14..16)?);
        if h > 23 || m > 59 || sec > 59 {
            return None;
        }
        seconds += h * 3600 + m * 60 + sec;
        if s.len() > 19 {
            let fraction = s.get(20..)?;
            if s[19] != b'.' || fraction.is_empty() || fraction.len() > 9 {
                return None;
            }
            let value = digits(20..s.len())?;
            let nanos = value * 10i64.pow(9 - fraction.len() as u32);
            micros = nanos / 1000;
        }
    }
    Some(seconds * 1_000_000 + micros)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
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
                kind: crate::catalog::StreamKind::Stream,
                topic: "s".into(),
                columns,
                key_columns: vec![],
                value_format: ValueFormat::Json,
                timestamp_column: None,
                watermark: None,
                late_data_topic: None,
                access: Default::default(),
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
                cleanup_policy: Default::default(),
                delete_retention_ms: None,
                stream: Some("s".into()),
                created_at_ms: 0,
                internal: None,
                access: Default::default(),
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
        literal_rows(&LiteralInsert::from_ast(&insert)?, &target, &types)
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
    fn the_timestamp_fast_path_agrees_with_arrow() {
        let samples = [
            "2026-01-01 10:00:00",
            "2026-01-01T10:00:00.123",
            "1969-12-31 23:59:59.999999",
            "1900-02-28 00:00:00.5",
            "2000-02-29 12:34:56.123456789",
            "2024-12-31",
            "0001-01-01 00:00:00",
            "9999-12-31 23:59:59.9",
        ];
        let text = StringArray::from(samples.to_vec());
        let fast = timestamps_micros(&text).expect("all in the common form");
        let target = DataType::Timestamp(TimeUnit::Microsecond, None);
        let arrow = arrow::compute::cast(&text, &target).unwrap();
        let arrow = arrow.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(fast.as_ref(), arrow.values().as_ref());
        // To the minute, as Arrow reads it with seconds added.
        let minute = timestamps_micros(&StringArray::from(vec!["2026-01-01 10:00"])).unwrap();
        assert_eq!(minute[0], fast[0]);
        for other in [
            "2026-02-30 00:00:00",
            "2026-01-01 24:00:00",
            "2026-01-01 10:00:00+02",
            "26-01-01",
        ] {
            assert!(
                timestamps_micros(&StringArray::from(vec![other])).is_none(),
                "{other}"
            );
        }
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

    #[test]
    fn timestamps_to_the_minute_gain_seconds() {
        assert_eq!(
            with_seconds("2024-01-01 10:00").as_deref(),
            Some("2024-01-01 10:00:00")
        );
        assert_eq!(
            with_seconds("2024-01-01T9:05+02").as_deref(),
            Some("2024-01-01T9:05:00+02")
        );
        assert_eq!(with_seconds("2024-01-01 10:00:00"), None);
        assert_eq!(with_seconds("2024-01-01"), None);
        assert_eq!(with_seconds("2024-01-01 10"), None);
        assert_eq!(with_seconds("2024-01-01 10:000"), None);
    }
}
