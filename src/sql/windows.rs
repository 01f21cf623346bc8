//! Window table functions: `TUMBLE(stream, col, size [, offset])`,
//! `HOP(stream, col, slide, size [, offset])` and `SESSION(stream, col, gap)` in `FROM`, as
//! RisingWave and Flink write them.
//!
//! DataFusion would take the stream argument for a column, so each call is rewritten, before
//! planning, into a derived table: the relation's rows with `window_start` and `window_end`
//! added, of the time column's type, windows half-open (`[start, end)`). A tumbling window is
//! `date_bin(size, col)`; a hopping one gives each row one window per slide that covers it
//! (size / slide of them, through `unnest`; a row without a time is in none, where a tumble
//! gives it a NULL window). Sizes are interval literals of days and less
//! (a month has no fixed length), positive; a hop's size is a whole number of slides.
//!
//! ```text
//! FROM TUMBLE(clicks, ts, INTERVAL '1 minute') AS t
//!   ⇒ FROM (SELECT *, date_bin(INTERVAL '1 minute', ts) AS window_start,
//!                     date_bin(INTERVAL '1 minute', ts)
//!                       + arrow_cast(60000000, 'Duration(Microsecond)') AS window_end
//!           FROM clicks) AS t
//! ```
//!
//! Lengths added to times are durations, not intervals: arrow adds a duration to a
//! timestamp as one integer, an interval through the calendar row by row.
//!
//! A session is a run of rows of one key (the `GROUP BY` of the `SELECT` that reads the
//! call, less the window's own columns) each less than `gap` after the one before:
//! `window_start` is its first row's time, `window_end` its last row's plus `gap` (Flink's
//! bounds). It is found with window functions over the rows in time order; a continuous
//! query finds each epoch's sessions so, and `engine::sessions` merges them with the open
//! ones.

use std::ops::ControlFlow;

use arrow::compute::kernels::cast_utils::parse_interval_month_day_nano;
use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, GroupByExpr, Ident, Query, SetExpr, Statement, TableAlias,
    TableFactor, Value, VisitMut, VisitorMut,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use crate::catalog::types::SqlType;
use crate::catalog::{CatalogData, Relation};
use crate::error::{Error, Result};
use crate::storage::TIMESTAMP_COLUMN;

/// The most windows a hop gives each row (size / slide).
const MAX_HOPS: i64 = 1024;

/// A window table function as the query calls it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The relation it reads and its time column, as DataFusion names them.
    pub relation: String,
    pub column: String,
    /// How long each window is, in microseconds (`window_end - window_start`); a
    /// session's gap.
    pub size_micros: i64,
    /// A `SESSION` window: its bounds move as rows arrive, and sessions merge.
    pub session: bool,
}

/// Rewrites every window table function in `statement` into a derived table, checking its
/// arguments against the streams `catalog` has; the windows it found.
pub fn rewrite(statement: &mut Statement, catalog: &CatalogData) -> Result<Vec<Window>> {
    let mut windows = Windows {
        catalog,
        found: vec![],
    };
    match statement.visit(&mut windows) {
        ControlFlow::Break(error) => Err(error),
        ControlFlow::Continue(()) => Ok(windows.found),
    }
}

struct Windows<'a> {
    catalog: &'a CatalogData,
    found: Vec<Window>,
}

impl Windows<'_> {
    /// Rewrites the `SESSION` calls in the `FROM` of the `SELECT`s of `body` (each branch of
    /// a set operation is one).
    fn sessions(&mut self, body: &mut SetExpr) -> Result<()> {
        let select = match body {
            SetExpr::Select(select) => select,
            SetExpr::SetOperation { left, right, .. } => {
                self.sessions(left)?;
                return self.sessions(right);
            }
            _ => return Ok(()),
        };
        let keys: Vec<Expr> = match &select.group_by {
            GroupByExpr::Expressions(exprs, _) => exprs
                .iter()
                .filter(|e| !is_window_column(e))
                .cloned()
                .collect(),
            GroupByExpr::All(_) => vec![],
        };
        for table in select.from.iter_mut() {
            let factors = std::iter::once(&mut table.relation)
                .chain(table.joins.iter_mut().map(|j| &mut j.relation));
            for factor in factors {
                let Some(("session", args, alias)) = call(factor) else {
                    continue;
                };
                let (table, window) = session(self.catalog, args, alias.take(), &keys)?;
                *factor = table;
                self.found.push(window);
            }
        }
        Ok(())
    }
}

impl VisitorMut for Windows<'_> {
    type Break = Error;

    /// Sessions are per key, and the key is the `GROUP BY` of the `SELECT` whose `FROM`
    /// calls `SESSION`: those calls are rewritten here, before their table factors are
    /// visited.
    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<Error> {
        match self.sessions(query.body.as_mut()) {
            Ok(()) => ControlFlow::Continue(()),
            Err(error) => ControlFlow::Break(error),
        }
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<Error> {
        let Some((function, args, alias)) = call(factor) else {
            return ControlFlow::Continue(());
        };
        if function == "session" {
            // Not in a SELECT's FROM: no key to go by.
            return ControlFlow::Break(Error::plan(
                "0A000",
                "SESSION must be in the FROM of a SELECT, whose GROUP BY gives the sessions' key",
            ));
        }
        match derived(self.catalog, function, args, alias.take()) {
            Ok((table, window)) => {
                *factor = table;
                self.found.push(window);
            }
            Err(error) => return ControlFlow::Break(error),
        }
        ControlFlow::Continue(())
    }
}

/// The window table function `factor` calls (`tumble`, `hop` or `session`), its arguments
/// and its alias.
fn call(
    factor: &mut TableFactor,
) -> Option<(&'static str, &[FunctionArg], &mut Option<TableAlias>)> {
    let TableFactor::Table {
        name,
        args: Some(args),
        alias,
        ..
    } = factor
    else {
        return None;
    };
    let function = ["tumble", "hop", "session"]
        .into_iter()
        .find(|f| name.to_string().eq_ignore_ascii_case(f))?;
    Some((function, &args.args, alias))
}

/// A call's arguments, which go by position.
fn positional<'a>(function: &str, args: &'a [FunctionArg]) -> Result<Vec<&'a Expr>> {
    args.iter()
        .map(|arg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
            _ => Err(Error::plan(
                "22023",
                format!("{function} takes its arguments by position"),
            )),
        })
        .collect()
}

/// `window_start` or `window_end`, maybe qualified.
fn is_window_column(expr: &Expr) -> bool {
    let last = match expr {
        Expr::Identifier(ident) => ident,
        Expr::CompoundIdentifier(parts) => match parts.last() {
            Some(last) => last,
            None => return false,
        },
        _ => return false,
    };
    matches!(folded(last).as_str(), "window_start" | "window_end")
}

/// The derived table a `SESSION(stream, col, gap)` call stands for, sessions per `keys`.
/// Three levels, each under the call's alias so that qualified keys resolve: a row starts
/// a session when it is not less than `gap` after the key's row before it; a running sum
/// of starts numbers the sessions; a session's bounds are its first time and its last plus
/// `gap`.
fn session(
    catalog: &CatalogData,
    args: &[FunctionArg],
    alias: Option<TableAlias>,
    keys: &[Expr],
) -> Result<(TableFactor, Window)> {
    let usage = "SESSION(stream, time_column, gap)";
    let args = positional("SESSION", args)?;
    if args.len() != 3 {
        return Err(Error::plan(
            "22023",
            format!("{usage} takes 3 arguments, not {}", args.len()),
        ));
    }
    let relation = named(args[0], usage, "the first argument names a stream")?;
    let column = named(args[1], usage, "the second argument names a time column")?;
    check_columns(catalog, usage, &relation.last, &column.last)?;
    let gap = positive(args[2], usage, "gap")?;
    let window = Window {
        relation: folded(&relation.last),
        column: folded(&column.last),
        size_micros: gap.nanos / 1_000,
        session: true,
    };
    let alias = alias.unwrap_or_else(|| TableAlias {
        explicit: true,
        name: relation.last.clone(),
        columns: vec![],
        at: None,
    });
    let name = alias.name.to_string();
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let by = |extra: &str| {
        let all: Vec<&str> = keys
            .iter()
            .map(String::as_str)
            .chain((!extra.is_empty()).then_some(extra))
            .collect();
        match all.is_empty() {
            true => String::new(),
            false => format!("PARTITION BY {} ", all.join(", ")),
        }
    };
    let (relation, column, gap) = (relation.sql, column.sql, shift(gap.nanos));
    let ordered = format!("{}ORDER BY __session_time", by(""));
    let sql = format!(
        "SELECT * EXCLUDE (__session_time, __session_starts, __session),          min(__session_time) OVER ({in_session}) AS window_start,          max(__session_time) OVER ({in_session}) + {gap} AS window_end FROM          (SELECT *, sum(__session_starts) OVER ({ordered} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS __session FROM          (SELECT *, CASE WHEN __session_time < lag(__session_time) OVER ({ordered}) + {gap} THEN 0 ELSE 1 END AS __session_starts FROM          (SELECT *, {column} AS __session_time FROM {relation} AS {name} WHERE {column} IS NOT NULL) AS {name}) AS {name}) AS {name}",
        in_session = by("__session").trim_end(),
    );
    Ok((parsed(&sql, usage, alias)?, window))
}

/// The derived table of `sql`, under `alias`. (The generic dialect has `* EXCLUDE`.)
fn parsed(sql: &str, usage: &str, alias: TableAlias) -> Result<TableFactor> {
    let subquery = Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .and_then(|mut parser| {
            let query = parser.parse_query()?;
            parser.expect_token(&Token::EOF)?;
            Ok(query)
        })
        .map_err(|e| Error::plan("42601", format!("{usage}: {e}")))?;
    Ok(TableFactor::Derived {
        lateral: false,
        subquery,
        alias: Some(alias),
        sample: None,
    })
}

/// The derived table a `TUMBLE` or `HOP` call stands for.
fn derived(
    catalog: &CatalogData,
    function: &str,
    args: &[FunctionArg],
    alias: Option<TableAlias>,
) -> Result<(TableFactor, Window)> {
    let args = positional(&function.to_uppercase(), args)?;
    let usage = match function {
        "tumble" => "TUMBLE(stream, time_column, size [, offset])",
        _ => "HOP(stream, time_column, slide, size [, offset])",
    };
    let wanted = if function == "tumble" { 3..=4 } else { 4..=5 };
    if !wanted.contains(&args.len()) {
        return Err(Error::plan(
            "22023",
            format!(
                "{usage} takes {} or {} arguments, not {}",
                wanted.start(),
                wanted.end(),
                args.len()
            ),
        ));
    }
    let relation = named(args[0], usage, "the first argument names a stream")?;
    let column = named(args[1], usage, "the second argument names a time column")?;
    let window_of = |size: &Length| Window {
        relation: folded(&relation.last),
        column: folded(&column.last),
        size_micros: size.nanos / 1_000,
        session: false,
    };
    check_columns(catalog, usage, &relation.last, &column.last)?;
    let alias = alias.unwrap_or_else(|| TableAlias {
        explicit: true,
        name: relation.last.clone(),
        columns: vec![],
        at: None,
    });
    let (relation, column) = (relation.sql, column.sql);
    let window;
    let sql = if function == "tumble" {
        let size = positive(args[2], usage, "size")?;
        window = window_of(&size);
        let start = floored(&column, &size.sql, args.get(3).copied(), usage)?;
        format!(
            "SELECT *, {start} AS window_start, {start} + {size} AS window_end FROM {relation}",
            size = shift(size.nanos)
        )
    } else {
        let slide = positive(args[2], usage, "slide")?;
        let size = positive(args[3], usage, "size")?;
        if size.nanos % slide.nanos != 0 {
            return Err(Error::plan(
                "22023",
                format!(
                    "HOP: the size {} is not a whole number of slides {}",
                    size.sql, slide.sql
                ),
            ));
        }
        window = window_of(&size);
        let hops = size.nanos / slide.nanos;
        if hops > MAX_HOPS {
            return Err(Error::plan(
                "22023",
                format!(
                    "HOP: a size of {hops} slides gives each row {hops} windows; at most {MAX_HOPS}"
                ),
            ));
        }
        let last = floored(&column, &slide.sql, args.get(4).copied(), usage)?;
        let starts: Vec<String> = (0..hops)
            .map(|i| match i {
                0 => last.clone(),
                i => format!("{last} - {}", shift(i * slide.nanos)),
            })
            .collect();
        format!(
            "SELECT *, window_start + {size} AS window_end FROM \
             (SELECT *, unnest(make_array({starts})) AS window_start FROM {relation} \
             WHERE {column} IS NOT NULL)",
            size = shift(size.nanos),
            starts = starts.join(", ")
        )
    };
    Ok((parsed(&sql, usage, alias)?, window))
}

/// A name as DataFusion folds it: unquoted names in lower case.
fn folded(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// An argument that names something (`stream`, `s.ts`): as written, and its last part.
struct Named {
    sql: String,
    last: Ident,
}

fn named(arg: &Expr, usage: &str, what: &str) -> Result<Named> {
    let last = match arg {
        Expr::Identifier(ident) => Some(ident),
        Expr::CompoundIdentifier(parts) => parts.last(),
        _ => None,
    };
    match last {
        Some(last) => Ok(Named {
            sql: arg.to_string(),
            last: last.clone(),
        }),
        None => Err(Error::plan("22023", format!("{usage}: {what}, not {arg}"))),
    }
}

/// The time column must be a timestamp of the stream, which must not have columns named as
/// the window's. Other relations (views, files) are left to DataFusion.
fn check_columns(
    catalog: &CatalogData,
    usage: &str,
    relation: &Ident,
    column: &Ident,
) -> Result<()> {
    let (relation, column) = (folded(relation), folded(column));
    let columns: Vec<(&str, SqlType)> = match catalog.relation(&relation) {
        Some(Relation::Stream(stream, _)) => stream
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.sql_type))
            .collect(),
        Some(Relation::Topic(_)) => vec![],
        _ => return Ok(()),
    };
    if let Some((taken, _)) = columns
        .iter()
        .find(|(c, _)| *c == "window_start" || *c == "window_end")
    {
        return Err(Error::plan(
            "42701",
            format!(
                "{usage}: \"{relation}\" has a column named {taken} already, which the window would add"
            ),
        ));
    }
    if column == TIMESTAMP_COLUMN {
        return Ok(());
    }
    match columns.iter().find(|(c, _)| *c == column) {
        None => Err(Error::plan(
            "42703",
            format!("{usage}: column \"{column}\" of \"{relation}\" does not exist"),
        )),
        Some((_, SqlType::Timestamp | SqlType::TimestampTz)) => Ok(()),
        Some((_, ty)) => Err(Error::plan(
            "42804",
            format!("{usage}: the time column \"{column}\" is {ty}, not a timestamp"),
        )),
    }
}

/// An interval argument, as written and in nanoseconds.
struct Length {
    sql: String,
    nanos: i64,
}

/// `nanos` as an operand added to or taken from a time: a duration, which arrow adds to a
/// timestamp as one integer (an interval goes through the calendar, row by row, several
/// times slower), unless it has a part smaller than a microsecond.
fn shift(nanos: i64) -> String {
    match nanos % 1_000 {
        0 => format!("arrow_cast({}, 'Duration(Microsecond)')", nanos / 1_000),
        _ => format!("INTERVAL '{nanos} nanoseconds'"),
    }
}

/// A positive interval literal of days and less.
fn positive(arg: &Expr, usage: &str, what: &str) -> Result<Length> {
    let length = interval(arg, usage, what)?;
    if length.nanos <= 0 {
        return Err(Error::plan(
            "22023",
            format!("{usage}: the {what} must be positive, not {}", length.sql),
        ));
    }
    Ok(length)
}

fn interval(arg: &Expr, usage: &str, what: &str) -> Result<Length> {
    let not_literal = || {
        Error::plan(
            "22023",
            format!("{usage}: the {what} is an interval literal (INTERVAL '1 minute'), not {arg}"),
        )
    };
    let Expr::Interval(interval) = arg else {
        return Err(not_literal());
    };
    let Expr::Value(value) = interval.value.as_ref() else {
        return Err(not_literal());
    };
    let Value::SingleQuotedString(text) = &value.value else {
        return Err(not_literal());
    };
    if interval.last_field.is_some() || interval.fractional_seconds_precision.is_some() {
        return Err(not_literal());
    }
    let text = match &interval.leading_field {
        Some(unit) => format!("{text} {unit}"),
        None => text.clone(),
    };
    let parsed = parse_interval_month_day_nano(&text)
        .map_err(|e| Error::plan("22023", format!("{usage}: the {what} {arg}: {e}")))?;
    if parsed.months != 0 {
        return Err(Error::plan(
            "0A000",
            format!(
                "{usage}: the {what} {arg} counts months, whose length varies; windows are days long at most"
            ),
        ));
    }
    let nanos = (parsed.days as i64)
        .checked_mul(86_400_000_000_000)
        .and_then(|days| days.checked_add(parsed.nanoseconds))
        .ok_or_else(|| Error::plan("22023", format!("{usage}: the {what} {arg} is too long")))?;
    Ok(Length {
        sql: arg.to_string(),
        nanos,
    })
}

/// The start of the `size`-long window of `column`, shifted by `offset` if there is one.
fn floored(column: &str, size: &str, offset: Option<&Expr>, usage: &str) -> Result<String> {
    Ok(match offset {
        None => format!("date_bin({size}, {column})"),
        Some(offset) => {
            let offset = shift(interval(offset, usage, "offset")?.nanos);
            format!("(date_bin({size}, {column} - {offset}) + {offset})")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;

    fn rewritten(sql: &str) -> Result<String> {
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        rewrite(&mut statement, &CatalogData::default())?;
        Ok(statement.to_string())
    }

    #[test]
    fn tumble_and_hop_become_derived_tables() {
        let sql = rewritten(
            "SELECT window_start, count(*) FROM TUMBLE(clicks, ts, INTERVAL '1 minute') GROUP BY 1",
        )
        .unwrap();
        assert!(
            sql.contains("FROM (SELECT *, date_bin(INTERVAL '1 minute', ts) AS window_start, date_bin(INTERVAL '1 minute', ts) + arrow_cast(60000000, 'Duration(Microsecond)') AS window_end FROM clicks) AS clicks"),
            "{sql}"
        );
        let sql = rewritten(
            "SELECT * FROM HOP(clicks, ts, INTERVAL '10 seconds', INTERVAL '30 seconds') AS h",
        )
        .unwrap();
        assert!(
            sql.contains("unnest(make_array(date_bin(INTERVAL '10 seconds', ts), date_bin(INTERVAL '10 seconds', ts) - arrow_cast(10000000, 'Duration(Microsecond)'), date_bin(INTERVAL '10 seconds', ts) - arrow_cast(20000000, 'Duration(Microsecond)')))"),
            "{sql}"
        );
        assert!(sql.ends_with("AS h"), "{sql}");
    }

    #[test]
    fn sessions_are_per_key_of_the_group_by() {
        let sql = rewritten(
            "SELECT s.user_id, window_start, count(*) FROM SESSION(clicks, ts, INTERVAL '30 seconds') AS s GROUP BY s.user_id, window_start, window_end",
        )
        .unwrap();
        assert!(
            sql.contains(
                "lag(__session_time) OVER (PARTITION BY s.user_id ORDER BY __session_time)"
            ),
            "{sql}"
        );
        assert!(
            sql.contains("min(__session_time) OVER (PARTITION BY s.user_id, __session)"),
            "{sql}"
        );
        let sql = rewritten("SELECT * FROM SESSION(clicks, ts, INTERVAL '30 seconds')").unwrap();
        assert!(
            sql.contains("lag(__session_time) OVER (ORDER BY __session_time)"),
            "{sql}"
        );
        let error = rewritten(
            "SELECT 1 FROM clicks UNION ALL SELECT 1 FROM (SELECT * FROM t) AS x, LATERAL (SELECT * FROM SESSION(c, ts, INTERVAL '1 second')) AS y",
        );
        assert!(error.is_ok(), "a SESSION under its own SELECT: {error:?}");
        // Each branch of a set operation is a SELECT with its own key.
        let sql = rewritten(
            "SELECT s.user_id, count(*) FROM SESSION(clicks, ts, INTERVAL '30 seconds') AS s GROUP BY s.user_id, window_start \
             EXCEPT ALL SELECT s.url, count(*) FROM SESSION(clicks, ts, INTERVAL '30 seconds') AS s GROUP BY s.url, window_start",
        )
        .unwrap();
        assert!(
            sql.contains("PARTITION BY s.user_id ORDER BY")
                && sql.contains("PARTITION BY s.url ORDER BY"),
            "{sql}"
        );
    }

    #[test]
    fn bad_window_arguments_are_refused() {
        let refused = |sql: &str, code: &str, says: &str| {
            let error = rewritten(sql).unwrap_err();
            assert_eq!(error.sqlstate(), code, "{sql}: {error}");
            assert!(error.to_string().contains(says), "{sql}: {error}");
        };
        refused(
            "SELECT * FROM TUMBLE(clicks, ts)",
            "22023",
            "takes 3 or 4 arguments, not 2",
        );
        refused(
            "SELECT * FROM TUMBLE(clicks, ts, INTERVAL '0 seconds')",
            "22023",
            "the size must be positive",
        );
        refused(
            "SELECT * FROM TUMBLE(clicks, ts, 60)",
            "22023",
            "an interval literal",
        );
        refused(
            "SELECT * FROM TUMBLE(clicks, ts, INTERVAL '1 month')",
            "0A000",
            "counts months",
        );
        refused(
            "SELECT * FROM HOP(clicks, ts, INTERVAL '10 seconds', INTERVAL '25 seconds')",
            "22023",
            "not a whole number of slides",
        );
        refused(
            "SELECT * FROM HOP(clicks, ts, INTERVAL '1 second', INTERVAL '1 day')",
            "22023",
            "86400 windows",
        );
        refused(
            "SELECT * FROM TUMBLE(1, ts, INTERVAL '1 minute')",
            "22023",
            "names a stream",
        );
    }
}
