//! Top-N and deduplication in continuous queries: the first rows of each partition by an
//! order, as SQL writes them with `ROW_NUMBER()`, rewritten into an aggregate, which a
//! continuous query keeps incrementally.
//!
//! ```text
//! SELECT auction, bidder, price, rn FROM (
//!     SELECT *, row_number() OVER (PARTITION BY auction ORDER BY price DESC) AS rn
//!     FROM bid) t
//! WHERE rn <= 10
//!   ⇒ SELECT auction, get_field(__top, 'c1') AS bidder, get_field(__top, 'c2') AS price,
//!            get_field(__top, 'rank') AS rn
//!     FROM (SELECT auction, unnest(top_rows(10, 'dfalal',
//!                      named_struct('o0', price, 'o1', _partition, 'o2', _offset),
//!                      named_struct('c0', auction, 'c1', bidder, 'c2', price))) AS __top
//!           FROM bid GROUP BY auction) __ranked
//! ```
//!
//! (A top-1 takes the list's only row, `top_rows(1, …)[1]`, rather than unnesting it: one
//! row per group, as any aggregate's, which a derived stream can upsert by its key.)
//! `top_rows` ([`crate::sql::functions::top_rows`]) keeps each partition's first rows, its
//! order made total by the record's place in the log (`_partition`, `_offset`), so that a
//! rank always names one row, as `ROW_NUMBER()` would. Its state is those rows, at most N
//! per partition; a row replaces the last one when it comes earlier in the order. The
//! partition's columns pass through as the group's own, an upsert key. `= 1`, `<= N` and
//! `< N + 1` are rewritten; other conditions on the row number are refused as window
//! functions are.

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, Ident, OrderByExpr, Query, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, Statement, TableFactor, TableWithJoins, Value,
    VisitMut, VisitorMut, WindowType,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::catalog::{CatalogData, OFFSET_COLUMN, PARTITION_COLUMN, Relation};
use crate::error::{Error, Result};
use crate::sql::functions::top_rows::RANK_FIELD;

/// Rewrites every Top-N of `statement` (see the module's documentation).
pub fn rewrite(statement: &mut Statement, catalog: &CatalogData) -> Result<()> {
    let mut top_n = TopN { catalog };
    match statement.visit(&mut top_n) {
        ControlFlow::Break(error) => Err(error),
        ControlFlow::Continue(()) => Ok(()),
    }
}

struct TopN<'a> {
    catalog: &'a CatalogData,
}

impl VisitorMut for TopN<'_> {
    type Break = Error;

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<Error> {
        match self.query(query) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    }
}

/// The row number's name and the limit a conjunct of the outer `WHERE` puts on it
/// (`rn = 1`, `rn <= 1`, `rn < 2`, either way round).
fn limit_on(expr: &Expr) -> Option<(String, i64)> {
    let Expr::BinaryOp { left, op, right } = expr else {
        return None;
    };
    let number = |e: &Expr| match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse::<i64>().ok(),
            _ => None,
        },
        _ => None,
    };
    let name = |e: &Expr| match e {
        Expr::Identifier(i) => Some(i.value.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
        _ => None,
    };
    let (column, n, op) = match (name(left), number(right)) {
        (Some(c), Some(n)) => (c, n, op.clone()),
        _ => {
            let flipped = match op {
                BinaryOperator::Lt => BinaryOperator::Gt,
                BinaryOperator::LtEq => BinaryOperator::GtEq,
                BinaryOperator::Gt => BinaryOperator::Lt,
                BinaryOperator::GtEq => BinaryOperator::LtEq,
                other => other.clone(),
            };
            (name(right)?, number(left)?, flipped)
        }
    };
    let rows = match op {
        BinaryOperator::Eq if n == 1 => 1,
        BinaryOperator::LtEq => n,
        BinaryOperator::Lt => n - 1,
        _ => return None,
    };
    Some((column, rows))
}

/// The conjuncts of `expr`.
fn conjuncts(expr: Expr, out: &mut Vec<Expr>) {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(*left, out);
            conjuncts(*right, out);
        }
        Expr::Nested(inner)
            if matches!(
                *inner,
                Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            conjuncts(*inner, out)
        }
        other => out.push(other),
    }
}

impl TopN<'_> {
    fn query(&self, query: &mut Query) -> Result<()> {
        let SetExpr::Select(outer) = query.body.as_mut() else {
            return Ok(());
        };
        let [from] = outer.from.as_mut_slice() else {
            return Ok(());
        };
        if !from.joins.is_empty() {
            return Ok(());
        }
        let TableFactor::Derived { subquery, .. } = &mut from.relation else {
            return Ok(());
        };
        let Some(ranked) = RowNumber::of(subquery) else {
            return Ok(());
        };
        let Some(selection) = outer.selection.take() else {
            return Ok(());
        };
        let mut parts = vec![];
        conjuncts(selection, &mut parts);
        let limit = parts.iter().position(|p| {
            limit_on(p).is_some_and(|(column, _)| column.eq_ignore_ascii_case(&ranked.alias))
        });
        let Some(limit) = limit else {
            outer.selection = rejoin(parts);
            return Ok(());
        };
        let (_, rows) = limit_on(&parts[limit]).expect("found above");
        if rows < 1 {
            outer.selection = rejoin(parts);
            return Err(Error::Unsupported(format!(
                "this query cannot run continuously: ROW_NUMBER() … <= {rows} keeps no rows"
            )));
        }
        parts.remove(limit);
        outer.selection = rejoin(parts);
        **subquery = ranked.aggregate(self.catalog, rows)?;
        Ok(())
    }
}

fn rejoin(parts: Vec<Expr>) -> Option<Expr> {
    parts.into_iter().reduce(|a, b| Expr::BinaryOp {
        left: Box::new(a),
        op: BinaryOperator::And,
        right: Box::new(b),
    })
}

/// A `SELECT …, ROW_NUMBER() OVER (PARTITION BY … ORDER BY …) AS rn FROM streams [WHERE …]`:
/// one stream, or a join of streams.
struct RowNumber {
    /// The other items of its `SELECT`.
    items: Vec<SelectItem>,
    alias: String,
    partition: Vec<Expr>,
    order: Vec<OrderByExpr>,
    /// The streams it reads, each with how the query names it (its alias, or its name).
    streams: Vec<(String, String)>,
    /// Its `FROM`, as written.
    from: String,
    selection: Option<Expr>,
}

/// The streams `factor` and its joins name, with their qualifiers; `None` if one of them
/// is anything else than a relation named as it is (a function, a derived table).
fn relations(from: &TableWithJoins, out: &mut Vec<(String, String)>) -> Option<()> {
    for factor in std::iter::once(&from.relation).chain(from.joins.iter().map(|j| &j.relation)) {
        let TableFactor::Table {
            name, alias, args, ..
        } = factor
        else {
            return None;
        };
        if args.is_some() {
            return None;
        }
        let stream = name.0.last()?.as_ident()?.value.clone();
        let qualifier = alias
            .as_ref()
            .map_or(stream.clone(), |a| a.name.value.clone());
        out.push((stream, qualifier));
    }
    Some(())
}

impl RowNumber {
    fn of(query: &Query) -> Option<RowNumber> {
        let SetExpr::Select(select) = query.body.as_ref() else {
            return None;
        };
        if query.order_by.is_some()
            || query.limit_clause.is_some()
            || select.having.is_some()
            || !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty())
            || select.distinct.is_some()
        {
            return None;
        }
        let mut streams = vec![];
        for from in &select.from {
            relations(from, &mut streams)?;
        }
        if streams.is_empty() {
            return None;
        }
        let from = select
            .from
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let mut items = vec![];
        let mut ranked = None;
        for item in &select.projection {
            let numbered = match item {
                SelectItem::ExprWithAlias {
                    expr: Expr::Function(f),
                    alias,
                } if f.name.to_string().eq_ignore_ascii_case("row_number") => match &f.over {
                    Some(WindowType::WindowSpec(spec)) if !spec.order_by.is_empty() => {
                        Some((alias.value.clone(), spec.clone()))
                    }
                    _ => return None,
                },
                _ => None,
            };
            match numbered {
                Some(found) if ranked.is_none() => ranked = Some(found),
                Some(_) => return None,
                None => items.push(item.clone()),
            }
        }
        let (alias, spec) = ranked?;
        if spec.window_frame.is_some() || spec.window_name.is_some() {
            return None;
        }
        Some(RowNumber {
            items,
            alias,
            partition: spec.partition_by.clone(),
            order: spec.order_by.clone(),
            streams,
            from,
            selection: select.selection.clone(),
        })
    }

    /// The aggregate that keeps the first `rows` rows of each partition.
    fn aggregate(&self, catalog: &CatalogData, rows: i64) -> Result<Query> {
        // Each stream's qualifier and columns.
        let mut read: Vec<(&str, Vec<String>)> = vec![];
        for (stream, qualifier) in &self.streams {
            match catalog.relation(stream) {
                Some(Relation::Stream(s, _)) if !s.is_table() => read.push((
                    qualifier,
                    s.columns.iter().map(|c| c.name.clone()).collect(),
                )),
                _ => {
                    return Err(Error::Unsupported(format!(
                        "this query cannot run continuously: ROW_NUMBER() … <= N reads \
                         streams' rows in a continuous query; \"{stream}\" is not a stream"
                    )));
                }
            }
        }
        let one = read.len() == 1;
        let column = |qualifier: &str, c: &str| {
            if one {
                quoted(c)
            } else {
                format!("{}.{}", quoted(qualifier), quoted(c))
            }
        };
        // The output columns: expression and name.
        let mut outputs: Vec<(String, String)> = vec![];
        for item in &self.items {
            match item {
                SelectItem::Wildcard(_) => {
                    for (qualifier, columns) in &read {
                        outputs.extend(columns.iter().map(|c| (column(qualifier, c), c.clone())))
                    }
                }
                SelectItem::QualifiedWildcard(kind, _) => {
                    let named = match kind {
                        SelectItemQualifiedWildcardKind::ObjectName(name) => name
                            .0
                            .last()
                            .and_then(|p| p.as_ident())
                            .map(|i| i.value.clone()),
                        SelectItemQualifiedWildcardKind::Expr(_) => None,
                    };
                    let found = named
                        .as_ref()
                        .and_then(|n| read.iter().find(|(q, _)| *q == n.as_str()));
                    let Some((qualifier, columns)) = found else {
                        return Err(Error::Unsupported(format!(
                            "this query cannot run continuously: {kind}.* beside ROW_NUMBER() \
                             names no stream of its FROM"
                        )));
                    };
                    outputs.extend(
                        columns
                            .iter()
                            .map(|c| (format!("{}.{}", quoted(qualifier), quoted(c)), c.clone())),
                    )
                }
                SelectItem::UnnamedExpr(expr) => {
                    let name = match expr {
                        Expr::Identifier(i) => i.value.clone(),
                        Expr::CompoundIdentifier(parts) => {
                            parts.last().map(|i| i.value.clone()).unwrap_or_default()
                        }
                        _ => {
                            return Err(Error::Unsupported(format!(
                                "this query cannot run continuously: name the expression \
                                 {expr} beside ROW_NUMBER() (… AS name)"
                            )));
                        }
                    };
                    outputs.push((expr.to_string(), name));
                }
                SelectItem::ExprWithAlias { expr, alias } => {
                    outputs.push((expr.to_string(), alias.value.clone()))
                }
                other => {
                    return Err(Error::Unsupported(format!(
                        "this query cannot run continuously: {other} beside ROW_NUMBER()"
                    )));
                }
            }
        }
        let partition: Vec<String> = self.partition.iter().map(|e| e.to_string()).collect();
        let same_column = |a: &str, b: &str| {
            a.eq_ignore_ascii_case(b)
                || a.rsplit('.')
                    .next()
                    .is_some_and(|a| a.eq_ignore_ascii_case(b))
                || b.rsplit('.')
                    .next()
                    .is_some_and(|b| b.eq_ignore_ascii_case(a))
        };
        // The order made total by the rows' places in the log: (value, direction) pairs,
        // each direction two letters (see `top_rows`). NULLS FIRST by default when
        // descending, as in PostgreSQL and DataFusion.
        let mut order: Vec<(String, String)> = self
            .order
            .iter()
            .map(|o| {
                let descending = o.options.asc == Some(false);
                let nulls_first = o.options.nulls_first.unwrap_or(descending);
                let direction = format!(
                    "{}{}",
                    if descending { 'd' } else { 'a' },
                    if nulls_first { 'f' } else { 'l' }
                );
                (o.expr.to_string(), direction)
            })
            .collect();
        for (qualifier, _) in &read {
            for position in [PARTITION_COLUMN, OFFSET_COLUMN] {
                let column = format!("{}.{}", quoted(qualifier), quoted(position));
                order.push((column, "al".into()));
            }
        }
        let directions: String = order.iter().map(|(_, d)| d.as_str()).collect();
        let order = order
            .iter()
            .enumerate()
            .map(|(i, (expr, _))| format!("'o{i}', {expr}"))
            .collect::<Vec<_>>()
            .join(", ");
        let is_partition = |expr: &str| partition.iter().any(|p| same_column(p, expr));
        let kept = outputs
            .iter()
            .enumerate()
            .filter(|(_, (expr, _))| !is_partition(expr))
            .map(|(i, (expr, _))| format!("'c{i}', {expr}"))
            .collect::<Vec<_>>()
            .join(", ");
        // A partition column in the output is the group's own: as it is, for an upsert key.
        let mut passed = vec![];
        let items: Vec<String> = outputs
            .iter()
            .enumerate()
            .map(|(i, (expr, name))| {
                if is_partition(expr) {
                    passed.push(format!("{expr} AS {}", quoted(name)));
                    quoted(name)
                } else {
                    format!("get_field({TOP}, 'c{i}') AS {}", quoted(name))
                }
            })
            .chain([format!(
                "get_field({TOP}, '{RANK_FIELD}') AS {}",
                quoted(&self.alias)
            )])
            .collect();
        let group_by = if partition.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {}", partition.join(", "))
        };
        let from = &self.from;
        let selection = self
            .selection
            .as_ref()
            .map_or(String::new(), |s| format!(" WHERE {s}"));
        let kept = format!(
            "top_rows({rows}, '{directions}', named_struct({order}), named_struct({kept}))"
        );
        // The first row is the list's one (a group's row, as an aggregate's); more rows
        // are a group's several rows.
        let top = match rows {
            1 => format!("({kept})[1] AS {TOP}"),
            _ => format!("unnest({kept}) AS {TOP}"),
        };
        let sql = format!(
            "SELECT {} FROM (SELECT {} FROM {from}{selection}{group_by}) AS __ranked",
            items.join(", "),
            passed
                .into_iter()
                .chain([top])
                .collect::<Vec<_>>()
                .join(", "),
        );
        let mut parser = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&sql)
            .map_err(|e| Error::Internal(format!("Top-N rewrite of \"{sql}\": {e}")))?;
        parser
            .parse_query()
            .map(|q| *q)
            .map_err(|e| Error::Internal(format!("Top-N rewrite of \"{sql}\": {e}")))
    }
}

/// The name of the ranked rows of a partition, one at a time.
const TOP: &str = "__top";

fn quoted(name: &str) -> String {
    Ident::with_quote('"', name).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0)
    }

    fn condition(sql: &str) -> Expr {
        Parser::new(&PostgreSqlDialect {})
            .try_with_sql(sql)
            .unwrap()
            .parse_expr()
            .unwrap()
    }

    #[test]
    fn limits_on_the_row_number_read_either_way_round() {
        for (sql, rows) in [
            ("rn = 1", 1),
            ("rn <= 1", 1),
            ("rn < 2", 1),
            ("1 >= rn", 1),
            ("2 > t.rn", 1),
            ("rn <= 10", 10),
        ] {
            assert_eq!(
                limit_on(&condition(sql)),
                Some(("rn".into(), rows)),
                "{sql}"
            );
        }
        for sql in ["rn = 2", "rn >= 1", "rn = x", "x + 1 = 1"] {
            assert_eq!(limit_on(&condition(sql)), None, "{sql}");
        }
    }

    #[test]
    fn only_a_limited_row_number_over_relations_is_rewritten() {
        let catalog = CatalogData::default();
        let top1 = "SELECT a FROM (SELECT a, ROW_NUMBER() OVER (PARTITION BY k ORDER BY t) AS rn FROM s) WHERE rn = 1";
        let e = rewrite(&mut parsed(top1), &catalog).unwrap_err();
        assert!(e.to_string().contains("\"s\" is not a stream"), "{e}");
        let joined = top1.replace("FROM s)", "FROM s JOIN u ON s.a = u.a)");
        let e = rewrite(&mut parsed(&joined), &catalog).unwrap_err();
        assert!(e.to_string().contains("\"s\" is not a stream"), "{e}");
        let top3 = top1.replace("rn = 1", "rn <= 3");
        let e = rewrite(&mut parsed(&top3), &catalog).unwrap_err();
        assert!(e.to_string().contains("\"s\" is not a stream"), "{e}");
        let none = top1.replace("rn = 1", "rn < 1");
        let e = rewrite(&mut parsed(&none), &catalog).unwrap_err();
        assert!(e.to_string().contains("keeps no rows"), "{e}");
        // No limit on the row number, or other shapes: left alone.
        for sql in [
            "SELECT a FROM (SELECT a, ROW_NUMBER() OVER (PARTITION BY k ORDER BY t) AS rn FROM s) WHERE a = 1",
            "SELECT a FROM (SELECT a, rank() OVER (PARTITION BY k ORDER BY t) AS rn FROM s) WHERE rn = 1",
            "SELECT a FROM (SELECT a, ROW_NUMBER() OVER (PARTITION BY k ORDER BY t) AS rn FROM (SELECT * FROM s) x) WHERE rn = 1",
        ] {
            let mut statement = parsed(sql);
            rewrite(&mut statement, &catalog).unwrap();
            assert_eq!(statement.to_string(), parsed(sql).to_string());
        }
    }
}
