//! The physical planner of Runnel's sessions: DataFusion's, after one more rewrite of the
//! optimized logical plan — one DataFusion's own optimizer would undo if it ran among its
//! rules (filter pushdown moves a filter back below the projection this adds).
//!
//! **A filter's calls, computed once.** DataFusion shares a common expression within one
//! node, not between a filter and the projections above it: in
//!
//! ```sql
//! SELECT CASE … ELSE (regexp_match(url, 'channel_id=([^&]*)'))[1] END
//! FROM bid WHERE (regexp_match(url, 'channel_id=([^&]*)'))[1] IS NOT NULL OR …
//! ```
//!
//! (Nexmark q21) the filter matches every row's URL, then the projection matches the rows it
//! kept again. A call the filter evaluates for every row anyway (not under the right side of
//! an `AND`/`OR`, a later `CASE` branch or a `coalesce` argument, which DataFusion evaluates
//! only for some rows) and that a projection above uses too is computed once, in a
//! projection below the filter, and both read its column.
//!
//! **A `CASE` of equalities, as a lookup.** A searched `CASE WHEN e = 'apple' THEN '0'
//! WHEN e = 'google' THEN '1' … ELSE x END` makes DataFusion compare the rows not yet
//! matched once per `WHEN`. When every `WHEN` compares the same expression with a literal
//! and every `THEN` is a literal other than NULL, the same `CASE e WHEN 'apple' THEN '0' …`
//! is a hash lookup per row in DataFusion; an `ELSE` that is a column (the shared call
//! above: q21's channel id) becomes `coalesce(lookup, x)` (`sql::functions::Coalesced`:
//! each row's lookup, or the column's value where the lookup found nothing). Any other `ELSE` (evaluated only for the rows no `WHEN`
//! matched, and maybe failing on others) leaves the `CASE` as it is.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, Result};
use datafusion::execution::SessionState;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    BinaryExpr, Expr, Filter, LogicalPlan, Operator, Projection, ScalarUDF,
};
use datafusion::optimizer::optimize_projections::OptimizeProjections;
use datafusion::optimizer::{OptimizerContext, OptimizerRule};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};

use crate::sql::functions::Coalesced;

/// DataFusion's physical planner, over the plan with its filters' calls shared.
#[derive(Debug, Default)]
pub struct RunnelPlanner;

#[async_trait]
impl QueryPlanner for RunnelPlanner {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = rewrite(plan.clone())?;
        let state = session
            .as_any()
            .downcast_ref::<SessionState>()
            .expect("Runnel plans in DataFusion sessions");
        DefaultPhysicalPlanner::default()
            .create_physical_plan(&plan, state)
            .await
    }
}

/// `plan` as Runnel's planner rewrites it: filters' calls shared, `CASE`s of equalities as
/// lookups.
pub fn rewrite(plan: LogicalPlan) -> Result<LogicalPlan> {
    case_lookups(share_filter_calls(plan)?)
}

/// `plan` with each searched `CASE` of equalities of one expression with literals, in a
/// projection or a filter, as a lookup (see the module's documentation).
pub fn case_lookups(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up(|node| match &node {
        LogicalPlan::Projection(_) | LogicalPlan::Filter(_) => {
            let names = NamePreserver::new(&node);
            let node = node.map_expressions(|expr| {
                let name = names.save(&expr);
                let rewritten = expr.transform_up(lookup)?;
                Ok(match rewritten.transformed {
                    true => Transformed::yes(name.restore(rewritten.data)),
                    false => rewritten,
                })
            })?;
            match node.transformed {
                true => Ok(Transformed::yes(node.data.recompute_schema()?)),
                false => Ok(node),
            }
        }
        _ => Ok(Transformed::no(node)),
    })
    .map(|t| t.data)
}

/// `expr` as a lookup, if it is a searched `CASE` of equalities that can be one.
fn lookup(expr: Expr) -> Result<Transformed<Expr>> {
    let Expr::Case(case) = &expr else {
        return Ok(Transformed::no(expr));
    };
    if case.expr.is_some() || case.when_then_expr.len() < 2 {
        return Ok(Transformed::no(expr));
    }
    let literal = |e: &Expr| matches!(e, Expr::Literal(v, _) if !v.is_null());
    let mut base: Option<&Expr> = None;
    let mut pairs = vec![];
    for (when, then) in &case.when_then_expr {
        let Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) = when.as_ref()
        else {
            return Ok(Transformed::no(expr));
        };
        let (compared, value) = match (literal(left), literal(right)) {
            (false, true) => (left.as_ref(), right),
            (true, false) => (right.as_ref(), left),
            _ => return Ok(Transformed::no(expr)),
        };
        // Evaluated once instead of once per `WHEN`: the same only if it is not volatile.
        if compared.is_volatile() || base.is_some_and(|b| b != compared) || !literal(then) {
            return Ok(Transformed::no(expr));
        }
        base = Some(compared);
        pairs.push((value.clone(), then.clone()));
    }
    let Some(base) = base else {
        return Ok(Transformed::no(expr));
    };
    let mut lookup = datafusion::logical_expr::Case {
        expr: Some(Box::new(base.clone())),
        when_then_expr: pairs,
        else_expr: None,
    };
    Ok(match case.else_expr.as_deref() {
        None => Transformed::yes(Expr::Case(lookup)),
        Some(other @ Expr::Literal(..)) => {
            lookup.else_expr = Some(Box::new(other.clone()));
            Transformed::yes(Expr::Case(lookup))
        }
        Some(column @ Expr::Column(_)) => {
            Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
                Arc::new(ScalarUDF::from(Coalesced::default())),
                vec![Expr::Case(lookup), column.clone()],
            )))
        }
        Some(_) => Transformed::no(expr),
    })
}

/// `plan` with the calls each filter evaluates for every row, and a projection above it uses
/// again, computed once below the filter.
pub fn share_filter_calls(plan: LogicalPlan) -> Result<LogicalPlan> {
    let shared = plan.transform_down(|node| match &node {
        LogicalPlan::Projection(top) => Ok(match share_below(top)? {
            Some(shared) => Transformed::yes(shared),
            None => Transformed::no(node),
        }),
        _ => Ok(Transformed::no(node)),
    })?;
    if !shared.transformed {
        return Ok(shared.data);
    }
    // A column only the shared calls read (q21's URL) is no longer needed above them: pruned,
    // the filter does not copy it.
    OptimizeProjections::new()
        .rewrite(shared.data, &OptimizerContext::new())
        .map(|t| t.data)
}

/// The prefix of the columns computed below a filter.
const SHARED_PREFIX: &str = "__runnel_shared_";

/// `top`, a projection over projections over a filter, rewritten to share the filter's calls
/// with the projections; `None` when nothing is shared.
fn share_below(top: &Projection) -> Result<Option<LogicalPlan>> {
    // The projections from the filter up.
    let mut chain = vec![top];
    let mut below = top.input.as_ref();
    let filter = loop {
        match below {
            LogicalPlan::Projection(p) => {
                chain.push(p);
                below = p.input.as_ref();
            }
            LogicalPlan::Filter(f) => break f,
            _ => return Ok(None),
        }
    };
    chain.reverse();

    let mut calls = vec![];
    always_evaluated_calls(&filter.predicate, &mut calls);
    // Each shared call and the highest projection that uses it.
    let mut shared: Vec<(Expr, usize)> = vec![];
    for call in calls {
        if shared.iter().any(|(s, _)| contains(s, call)) {
            continue;
        }
        let columns = call.column_refs();
        let mut user = None;
        for (at, projection) in chain.iter().enumerate() {
            if projection.expr.iter().any(|e| contains(e, call)) {
                user = Some(at);
            }
            let passes_columns = columns.iter().all(|c| {
                projection
                    .expr
                    .iter()
                    .any(|e| matches!(e, Expr::Column(p) if p == *c))
            });
            if !passes_columns {
                break;
            }
        }
        if let Some(user) = user {
            shared.push((call.clone(), user));
        }
    }
    if shared.is_empty() {
        return Ok(None);
    }

    let taken: Vec<String> = filter
        .input
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let names: Vec<String> = (0..)
        .map(|n| format!("{SHARED_PREFIX}{n}"))
        .filter(|name| !taken.contains(name))
        .take(shared.len())
        .collect();

    let mut computed: Vec<Expr> = filter
        .input
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    computed.extend(
        shared
            .iter()
            .zip(&names)
            .map(|((call, _), name)| call.clone().alias(name)),
    );
    let computed = Projection::try_new(computed, filter.input.clone())?;
    let every: Vec<(&Expr, &str)> = shared
        .iter()
        .zip(&names)
        .map(|((call, _), name)| (call, name.as_str()))
        .collect();
    let predicate = replace(filter.predicate.clone(), &every)?;
    let mut plan = LogicalPlan::Filter(Filter::try_new(
        predicate,
        Arc::new(LogicalPlan::Projection(computed)),
    )?);

    for (at, projection) in chain.iter().enumerate() {
        // The calls whose column reaches this projection, and those it passes on.
        let reaching: Vec<(&Expr, &str)> = shared
            .iter()
            .zip(&names)
            .filter(|((_, user), _)| *user >= at)
            .map(|((call, _), name)| (call, name.as_str()))
            .collect();
        let mut exprs = vec![];
        for expr in &projection.expr {
            let name = NamePreserver::new_for_projection().save(expr);
            exprs.push(name.restore(replace(expr.clone(), &reaching)?));
        }
        exprs.extend(
            shared
                .iter()
                .zip(&names)
                .filter(|((_, user), _)| *user > at)
                .map(|(_, name)| Expr::Column(Column::new_unqualified(name))),
        );
        plan = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(plan))?);
    }
    Ok(Some(plan))
}

/// The calls over columns in `expr` that DataFusion evaluates for every row, outermost
/// first.
fn always_evaluated_calls<'a>(expr: &'a Expr, calls: &mut Vec<&'a Expr>) {
    if matches!(expr, Expr::ScalarFunction(_))
        && !expr.is_volatile()
        && !expr.column_refs().is_empty()
    {
        calls.push(expr);
    }
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And | Operator::Or,
            ..
        }) => always_evaluated_calls(left, calls),
        Expr::Case(case) => {
            if let Some(base) = &case.expr {
                always_evaluated_calls(base, calls);
            } else if let Some((first, _)) = case.when_then_expr.first() {
                always_evaluated_calls(first, calls);
            }
        }
        Expr::ScalarFunction(f) if f.func.short_circuits() => {
            if let Some(first) = f.args.first() {
                always_evaluated_calls(first, calls);
            }
        }
        Expr::ScalarSubquery(_)
        | Expr::Exists(_)
        | Expr::InSubquery(_)
        | Expr::SetComparison(_)
        | Expr::AggregateFunction(_)
        | Expr::WindowFunction(_) => {}
        _ => {
            let _ = expr.apply_children(|child| {
                always_evaluated_calls(child, calls);
                Ok(TreeNodeRecursion::Continue)
            });
        }
    }
}

fn contains(haystack: &Expr, needle: &Expr) -> bool {
    haystack.exists(|e| Ok(e == needle)).unwrap_or(false)
}

/// `expr` with each of `calls` replaced by its column.
fn replace(expr: Expr, calls: &[(&Expr, &str)]) -> Result<Expr> {
    expr.transform_down(|e| {
        Ok(match calls.iter().find(|(call, _)| **call == e) {
            Some((_, name)) => Transformed::new(
                Expr::Column(Column::new_unqualified(*name)),
                true,
                TreeNodeRecursion::Jump,
            ),
            None => Transformed::no(e),
        })
    })
    .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    /// `sql`'s optimized plan with its filters' calls shared, shown; the rewritten plan must
    /// return the same schema and rows as the plan DataFusion made.
    async fn shared(sql: &str) -> String {
        let ctx = SessionContext::new();
        ctx.sql(
            "CREATE TABLE bid (url TEXT, channel TEXT, price BIGINT) AS VALUES \
             ('a&channel_id=1', 'x', 1), ('channel_id=22&b', 'Apple', 2), ('none', 'apple', 3), \
             ('none', 'y', 4), (NULL, NULL, NULL), ('q&channel_id=', 'z', 5)",
        )
        .await
        .unwrap();
        let plan = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap();
        let after = rewrite(plan.clone()).unwrap();
        assert_eq!(after.schema(), plan.schema(), "the output is unchanged");
        let state = ctx.state();
        let mut answers = vec![];
        for plan in [&plan, &after] {
            let physical = DefaultPhysicalPlanner::default()
                .create_physical_plan(plan, &state)
                .await
                .unwrap();
            let batches = datafusion::physical_plan::collect(physical, ctx.task_ctx())
                .await
                .unwrap();
            let shown = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string();
            let mut lines: Vec<String> = shown.lines().map(str::to_string).collect();
            lines.sort();
            answers.push(lines);
        }
        assert_eq!(answers[0], answers[1], "the same rows");
        assert!(answers[0].len() > 5, "rows to compare: {:?}", answers[0]);
        after.display_indent().to_string()
    }

    #[tokio::test]
    async fn a_call_the_filter_makes_for_every_row_is_computed_once() {
        let plan = shared(
            "SELECT channel, CASE WHEN lower(channel) = 'apple' THEN '0' \
             WHEN lower(channel) = 'google' THEN '1' \
             ELSE (regexp_match(url, 'channel_id=([^&]*)'))[1] END AS id \
             FROM bid WHERE (regexp_match(url, 'channel_id=([^&]*)'))[1] IS NOT NULL \
             OR lower(channel) = 'apple'",
        )
        .await;
        assert_eq!(plan.matches("regexp_match").count(), 1, "{plan}");
        assert!(plan.contains("AS __runnel_shared_0"), "{plan}");
        // Only the shared call reads the URL: no projection or filter passes it on.
        assert_eq!(plan.matches("bid.url").count(), 1, "{plan}");
        assert!(plan.contains("AS __common_expr_1"), "{plan}");
        // The CASE is a lookup, its ELSE the shared call's column where it finds nothing.
        assert!(
            plan.contains("coalesce(CASE __common_expr_1 WHEN Utf8View(\"apple\") THEN"),
            "{plan}"
        );
    }

    #[tokio::test]
    async fn a_case_of_equalities_is_a_lookup_only_where_it_means_the_same() {
        // Literal ELSE, no ELSE, literals on either side, NULL compared.
        let plan = shared(
            "SELECT CASE WHEN channel = 'x' THEN 'X' WHEN 'apple' = channel THEN 'A' \
             ELSE 'other' END AS a, \
             CASE WHEN price = 1 THEN 10 WHEN price = 4 THEN 40 END AS b FROM bid",
        )
        .await;
        assert!(plan.contains("CASE bid.channel WHEN"), "{plan}");
        assert!(plan.contains("CASE bid.price WHEN"), "{plan}");
        // Left alone: an ELSE that is not a column or literal (evaluated only for the rows
        // no WHEN matched), two compared expressions, a NULL result; the last, with an ELSE
        // that is a column, is a lookup. Then a volatile compared expression.
        for sql in [
            "SELECT CASE WHEN channel = 'x' THEN 'X' WHEN channel = 'y' THEN 'Y'              ELSE upper(url) END FROM bid",
            "SELECT CASE WHEN channel = 'x' THEN 'X' WHEN url = 'none' THEN 'Y' END FROM bid",
            "SELECT CASE WHEN channel = 'x' THEN NULL WHEN channel = 'y' THEN 'Y'              ELSE url END FROM bid",
            "SELECT CASE WHEN channel = 'x' THEN 'X' WHEN channel = 'y' THEN 'Y' ELSE url END              AS c, price FROM bid WHERE price > 2 OR price IS NULL",
        ] {
            let plan = shared(sql).await;
            let lookups = plan.matches("CASE bid.channel WHEN").count();
            let expected = usize::from(sql.contains("price > 2"));
            assert_eq!(lookups, expected, "{sql}: {plan}");
        }
        let plan = shared(
            "SELECT CASE WHEN random() = 0.5 THEN 'X' WHEN random() = 0.25 THEN 'Y' END AS r,              url FROM bid",
        )
        .await;
        assert!(!plan.contains("CASE random()"), "{plan}");
    }

    #[tokio::test]
    async fn calls_only_some_rows_reach_are_left_alone() {
        // `upper(url)` is evaluated only for rows with price > 1: computing it for all rows
        // could be more work, not less.
        let plan = shared("SELECT upper(url) FROM bid WHERE price > 1 AND upper(url) <> 'X'").await;
        assert!(!plan.contains("__runnel_shared"), "{plan}");
        assert_eq!(plan.matches("upper").count(), 2, "{plan}");
    }
}
