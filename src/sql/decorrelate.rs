//! Correlated scalar aggregate subqueries that DataFusion's own rule leaves in place.
//!
//! DataFusion turns `(SELECT count(*) FROM t AS x WHERE x.k = o.k)` into a join with `t`
//! grouped by `k`, which needs the correlation to be equalities. A subquery correlated any
//! other way — `(SELECT count(*) FROM t AS x WHERE x.c > o.c AND x.d < o.d)` — reached the
//! physical planner as it was and failed. [`DecorrelateScalarAggregates`] runs right after
//! DataFusion's rule and rewrites what it left, as "magic set" decorrelation does:
//!
//! ```text
//! SELECT …, (SELECT agg(x.v) FROM t AS x WHERE p(x, o.c)) FROM o
//! ⇒
//! SELECT …, s.value
//! FROM o LEFT JOIN (
//!     SELECT d.c, agg(x.v) FILTER (WHERE x.matched) AS value
//!     FROM (SELECT DISTINCT c FROM o) AS d
//!     LEFT JOIN (SELECT *, true AS matched FROM t AS x) AS x ON p(x, d.c)
//!     GROUP BY d.c
//! ) AS s ON o.c IS NOT DISTINCT FROM s.c
//! ```
//!
//! Each distinct set of the outer values the subquery reads (`d`) is joined with the rows
//! its `WHERE` picks for them, and the aggregate is computed per set. The left join keeps
//! a set that picks no rows, with one row of NULLs; every aggregate skips that row through
//! its `FILTER` — so `count(*)` is 0 there and `sum` NULL, as the subquery would give.
//!
//! The subquery must be an aggregate without `GROUP BY` (one row per outer row), with
//! projections and filters (`HAVING`) above it and, below it, projections over one filter
//! over a part that refers to nothing outside. Anything else stays as it is and is refused
//! at planning with 0A000, as before.

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, NullEquality, Result};
use datafusion::logical_expr::expr::{AggregateFunction, Alias};
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan, LogicalPlanBuilder, Subquery, lit};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// See the module's documentation.
#[derive(Debug, Default)]
pub struct DecorrelateScalarAggregates;

/// The name DataFusion's rule has: this one runs right after it.
pub const AFTER: &str = "scalar_subquery_to_join";

impl OptimizerRule for DecorrelateScalarAggregates {
    fn name(&self) -> &str {
        "decorrelate_scalar_aggregates"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        match &plan {
            LogicalPlan::Projection(projection)
                if projection.expr.iter().any(has_correlated_scalar) =>
            {
                let mut input = projection.input.as_ref().clone();
                let mut exprs = Vec::with_capacity(projection.expr.len());
                for expr in &projection.expr {
                    let Some(new) = unnest(expr, &mut input, config)? else {
                        return Ok(Transformed::no(plan));
                    };
                    exprs.push(keep_name(expr, new));
                }
                let plan = LogicalPlanBuilder::from(input).project(exprs)?.build()?;
                Ok(Transformed::yes(plan))
            }
            LogicalPlan::Filter(filter) if has_correlated_scalar(&filter.predicate) => {
                let mut input = filter.input.as_ref().clone();
                let Some(predicate) = unnest(&filter.predicate, &mut input, config)? else {
                    return Ok(Transformed::no(plan));
                };
                let columns = filter.input.schema().columns().into_iter().map(Expr::from);
                let plan = LogicalPlanBuilder::from(input)
                    .filter(predicate)?
                    .project(columns)?
                    .build()?;
                Ok(Transformed::yes(plan))
            }
            _ => Ok(Transformed::no(plan)),
        }
    }
}

fn has_correlated_scalar(expr: &Expr) -> bool {
    expr.exists(|e| Ok(matches!(e, Expr::ScalarSubquery(s) if !s.outer_ref_columns.is_empty())))
        .unwrap_or(false)
}

/// `new` under the name `old` has in its plan's schema.
fn keep_name(old: &Expr, new: Expr) -> Expr {
    let name = old.schema_name().to_string();
    if new.schema_name().to_string() == name {
        new
    } else {
        new.alias(name)
    }
}

/// `expr` with each correlated scalar subquery replaced by a column that `input`, joined
/// with the subquery's values, now has; `None` if one of them has a shape this rule does
/// not rewrite.
fn unnest(
    expr: &Expr,
    input: &mut LogicalPlan,
    config: &dyn OptimizerConfig,
) -> Result<Option<Expr>> {
    let mut supported = true;
    let expr = expr
        .clone()
        .transform_down(|e| match e {
            Expr::ScalarSubquery(ref subquery) if !subquery.outer_ref_columns.is_empty() => {
                let alias = config.alias_generator().next("__runnel_sq");
                match join_values(subquery, input, &alias)? {
                    Some((joined, value)) => {
                        *input = joined;
                        Ok(Transformed::new(value, true, TreeNodeRecursion::Jump))
                    }
                    None => {
                        supported = false;
                        Ok(Transformed::new(e, false, TreeNodeRecursion::Stop))
                    }
                }
            }
            e => Ok(Transformed::no(e)),
        })?
        .data;
    Ok(supported.then_some(expr))
}

/// The outer values a subquery reads, under the names they have inside the rewrite.
struct Domain {
    /// The outer columns, in the order of `names`.
    outer: Vec<Column>,
    /// `{alias}_d{i}`.
    names: Vec<String>,
    /// `{alias}_matched`: true on a row the subquery's filter picked.
    matched: String,
}

impl Domain {
    /// `expr` with the outer references replaced by the domain's columns.
    fn bind(&self, expr: Expr) -> Result<Expr> {
        Ok(expr
            .transform(|e| match e {
                Expr::OuterReferenceColumn(_, ref column) => {
                    match self.outer.iter().position(|c| c == column) {
                        Some(i) => Ok(Transformed::yes(Expr::Column(Column::from_name(
                            &self.names[i],
                        )))),
                        None => Ok(Transformed::no(e)),
                    }
                }
                e => Ok(Transformed::no(e)),
            })?
            .data)
    }

    fn columns(&self) -> impl Iterator<Item = Expr> + '_ {
        self.names
            .iter()
            .map(|n| Expr::Column(Column::from_name(n)))
    }
}

/// `outer` left-joined with the values of `subquery` per outer row, and the column holding
/// them; `None` if the subquery's shape is not one this rule rewrites.
fn join_values(
    subquery: &Subquery,
    outer: &LogicalPlan,
    alias: &str,
) -> Result<Option<(LogicalPlan, Expr)>> {
    let mut outer_columns = vec![];
    for expr in &subquery.outer_ref_columns {
        let Expr::OuterReferenceColumn(_, column) = expr else {
            return Ok(None);
        };
        // A reference to a query further out is not this join's to resolve.
        if !outer.schema().has_column(column) {
            return Ok(None);
        }
        if !outer_columns.contains(column) {
            outer_columns.push(column.clone());
        }
    }
    let domain = Domain {
        names: (0..outer_columns.len())
            .map(|i| format!("{alias}_d{i}"))
            .collect(),
        outer: outer_columns,
        matched: format!("{alias}_matched"),
    };

    // Above the aggregate: projections and filters.
    let mut above = vec![];
    let mut node = subquery.subquery.as_ref();
    while let LogicalPlan::Projection(_) | LogicalPlan::Filter(_) = node {
        above.push(node);
        let Some(input) = node.inputs().first().copied() else {
            return Ok(None);
        };
        node = input;
    }
    let LogicalPlan::Aggregate(aggregate) = node else {
        return Ok(None);
    };
    if !aggregate.group_expr.is_empty() {
        return Ok(None);
    }
    let Some(rows) = per_domain(&aggregate.input, outer, &domain)? else {
        return Ok(None);
    };

    // The aggregate per domain row, each function skipping the unmatched row.
    let matched = Expr::Column(Column::from_name(&domain.matched));
    let mut aggregates = vec![];
    for expr in &aggregate.aggr_expr {
        let name = expr.schema_name().to_string();
        let filtered = domain.bind(expr.clone())?.transform(|e| match e {
            Expr::AggregateFunction(AggregateFunction { func, mut params }) => {
                params.filter = Some(Box::new(match params.filter.take() {
                    Some(filter) => filter.and(matched.clone()),
                    None => matched.clone(),
                }));
                Ok(Transformed::yes(Expr::AggregateFunction(
                    AggregateFunction { func, params },
                )))
            }
            e => Ok(Transformed::no(e)),
        })?;
        aggregates.push(match filtered.data {
            Expr::Alias(Alias { expr, .. }) => expr.alias(name),
            e => e.alias(name),
        });
    }
    let mut values = LogicalPlanBuilder::from(rows).aggregate(domain.columns(), aggregates)?;
    for node in above.iter().rev() {
        values = match node {
            LogicalPlan::Filter(filter) => values.filter(domain.bind(filter.predicate.clone())?)?,
            LogicalPlan::Projection(projection) => {
                let mut exprs: Vec<Expr> = domain.columns().collect();
                for expr in &projection.expr {
                    exprs.push(keep_name(expr, domain.bind(expr.clone())?));
                }
                values.project(exprs)?
            }
            _ => return Ok(None),
        };
    }
    let values = values.build()?;
    let Some(field) = values.schema().fields().get(domain.names.len()) else {
        return Ok(None);
    };
    let value_name = format!("{alias}_value");
    let mut last: Vec<Expr> = domain.columns().collect();
    last.push(Expr::Column(Column::from_name(field.name())).alias(&value_name));
    let values = LogicalPlanBuilder::from(values).project(last)?.build()?;

    let joined = LogicalPlanBuilder::from(outer.clone())
        .join_detailed(
            values,
            JoinType::Left,
            (
                domain.outer.clone(),
                domain
                    .names
                    .iter()
                    .map(Column::from_name)
                    .collect::<Vec<_>>(),
            ),
            None,
            NullEquality::NullEqualsNull,
        )?
        .build()?;
    Ok(Some((joined, Expr::Column(Column::from_name(value_name)))))
}

/// The rows `plan` (the aggregate's input) gives for each domain row, with the domain's
/// columns and `matched`; a domain row for which it gives none appears once, with NULLs
/// and `matched` NULL. `None` if the outer references are not where this can place them:
/// in one filter over a part that refers to nothing outside, or in projections above it.
fn per_domain(
    plan: &LogicalPlan,
    outer: &LogicalPlan,
    domain: &Domain,
) -> Result<Option<LogicalPlan>> {
    if is_closed(plan) {
        return left_join(plan, None, outer, domain);
    }
    match plan {
        LogicalPlan::Filter(filter) if is_closed(&filter.input) => left_join(
            &filter.input,
            Some(domain.bind(filter.predicate.clone())?),
            outer,
            domain,
        ),
        LogicalPlan::Projection(projection) => {
            let Some(rows) = per_domain(&projection.input, outer, domain)? else {
                return Ok(None);
            };
            let mut exprs: Vec<Expr> = domain.columns().collect();
            exprs.push(Expr::Column(Column::from_name(&domain.matched)));
            for expr in &projection.expr {
                exprs.push(keep_name(expr, domain.bind(expr.clone())?));
            }
            Ok(Some(
                LogicalPlanBuilder::from(rows).project(exprs)?.build()?,
            ))
        }
        _ => Ok(None),
    }
}

/// The distinct domain rows of `outer`, left-joined with `rows` on `on`.
fn left_join(
    rows: &LogicalPlan,
    on: Option<Expr>,
    outer: &LogicalPlan,
    domain: &Domain,
) -> Result<Option<LogicalPlan>> {
    let distinct = LogicalPlanBuilder::from(outer.clone())
        .project(
            domain
                .outer
                .iter()
                .zip(&domain.names)
                .map(|(column, name)| Expr::Column(column.clone()).alias(name)),
        )?
        .distinct()?
        .build()?;
    let mut marked: Vec<Expr> = rows
        .schema()
        .columns()
        .into_iter()
        .map(Expr::from)
        .collect();
    marked.push(lit(true).alias(&domain.matched));
    let marked = LogicalPlanBuilder::from(rows.clone())
        .project(marked)?
        .build()?;
    let joined = LogicalPlanBuilder::from(distinct)
        .join_on(marked, JoinType::Left, [on.unwrap_or(lit(true))])?
        .build()?;
    Ok(Some(joined))
}

/// Whether `plan` refers to nothing outside itself and holds no subqueries.
fn is_closed(plan: &LogicalPlan) -> bool {
    !plan
        .exists(|node| {
            let mut subqueries = false;
            node.apply_subqueries(|_| {
                subqueries = true;
                Ok(TreeNodeRecursion::Stop)
            })?;
            Ok(subqueries || node.contains_outer_reference())
        })
        .unwrap_or(true)
}
