//! Aggregates over a table's changes, each a sum of signed values.
//!
//! A continuous query over a table reads signed rows ([`super::table_changes`]): a row a
//! change adds has weight +1, a row it takes away −1. An aggregate that can give a row
//! back is a sum of what each row brings, so the query's plan is rewritten to aggregate
//! sums of weighted values, which merge into its state epoch after epoch as any sum does,
//! and to compute each aggregate's value from them (`w` is the weight):
//!
//! | aggregate  | sums kept                                                      | value |
//! |------------|----------------------------------------------------------------|-------|
//! | `count(*)` | `sum(w)`                                                       | the sum |
//! | `count(x)` | `n = sum(CASE WHEN x IS NULL THEN 0 ELSE w END)`               | `n` |
//! | `sum(x)`   | `s = sum(CASE WHEN w > 0 THEN x ELSE -x END)`, `n`             | `s`, NULL when `n = 0` |
//! | `avg(x)`   | `s`, `n`                                                       | `s / n` as `avg` divides, NULL when `n = 0` |
//!
//! Each group also counts its rows (`__rows`): a group whose rows are all gone is not
//! shown (a `HAVING` of its own) and leaves the state. A query without aggregates (the
//! table's rows, filtered and projected) becomes one group per key of the table, which
//! has one row at a time: a row leaves the result as it leaves the table.
//!
//! `SELECT DISTINCT` is one group per distinct row, shown while it has rows.
//!
//! Other aggregates (`min`, `max`, `DISTINCT` ones, …) would need every row of a group to
//! give one back, and joins, window functions, `ORDER BY` and `LIMIT` over a table's
//! changes are not maintained yet: the query is refused, naming them.
//!
//! An aggregate over another whose groups are not windowed reads rows that change too: an
//! inner group's row changes as its input comes in (an auction's highest bid rises). Such
//! a query is rewritten the same way ([`rewrite_over_groups`]), each inner row weighing 1;
//! each epoch, the outer aggregate takes in the changed inner groups' new rows and takes
//! back their old ones, by negating the sums those bring.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema};
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{
    Aggregate, Distinct, Expr, ExprSchemable, Filter, LogicalPlan, Projection, ScalarUDF, cast,
    lit, when,
};

use super::table_changes::WEIGHT_COLUMN;
use crate::error::{Error, Result};
use crate::sql::functions::avg;
use crate::storage::KEY_COLUMN;

/// The count of a group's rows, kept beside its aggregates' sums.
pub const ROWS_COLUMN: &str = "__rows";

/// What the rows an aggregate is rewritten over are, for what it says when it refuses.
#[derive(Debug, Clone, Copy)]
enum Over<'a> {
    /// A table's changes.
    Table(&'a str),
    /// The groups of an aggregate below, as they change.
    Groups,
}

impl Over<'_> {
    /// What the rows are, and why they change.
    fn rows(self) -> String {
        match self {
            Over::Table(table) => {
                format!("the rows of table \"{table}\", which change as it is updated and deleted,")
            }
            Over::Groups => "the groups of an inner aggregate, which change as its input \
                             comes in,"
                .into(),
        }
    }

    /// What the rows come from.
    fn source(self) -> String {
        match self {
            Over::Table(table) => format!("table \"{table}\""),
            Over::Groups => "an inner aggregate's groups".into(),
        }
    }

    /// When rows go back.
    fn changing(self) -> &'static str {
        match self {
            Over::Table(_) => "as its rows are updated and deleted",
            Over::Groups => "as the inner groups change",
        }
    }
}

/// Rewrites `plan` (planned over a table's changes, named `table`) so that its aggregates
/// keep sums of weighted values, or its rows are counted per key; refuses what cannot be
/// maintained as rows change.
pub fn rewrite(plan: LogicalPlan, table: &str) -> Result<LogicalPlan> {
    let df = Error::from_datafusion;
    let aggregates = aggregates(&plan);
    if aggregates > 1 {
        // The outer one would read the inner one's groups as they change.
        return Err(Error::Unsupported(format!(
            "this query cannot run continuously: an aggregate (or DISTINCT) over an \
             aggregate of table \"{table}\" is not supported yet; the inner groups change \
             as the table's rows are updated and deleted"
        )));
    }
    // Without an aggregate, each row goes with its key.
    let carried: &[&str] = match aggregates {
        0 => &[WEIGHT_COLUMN, KEY_COLUMN],
        _ => &[WEIGHT_COLUMN],
    };
    let width = plan.schema().fields().len();
    let rewritten = plan
        .transform_up(|node| rewrite_node(node, Over::Table(table), carried).map_err(Into::into))
        .map_err(df)?
        .data;
    if weight_of(rewritten.schema()).is_none() {
        return Ok(rewritten);
    }
    keyed_rows(rewritten, width)
}

/// How many aggregates (and `DISTINCT`s) `plan` has.
pub fn aggregates(plan: &LogicalPlan) -> usize {
    let mut aggregates = 0;
    let _ = plan.apply(|node| {
        if matches!(node, LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_)) {
            aggregates += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    aggregates
}

/// Rewrites `plan`, an aggregate over an aggregate whose groups change as its input comes
/// in, so that the outer aggregate keeps sums it can take an inner row back from: the
/// inner rows weigh 1 each, and the outer aggregates are rewritten as over a table's
/// changes. Refuses what cannot be maintained that way, naming it.
pub fn rewrite_over_groups(plan: LogicalPlan) -> Result<LogicalPlan> {
    let df = Error::from_datafusion;
    if aggregates(&plan) != 2 {
        return Err(Error::Unsupported(
            "this query cannot run continuously: an aggregate over an aggregate over another \
             is supported only when the inner ones group by event-time windows"
                .into(),
        ));
    }
    // The inner aggregate's rows, each with its weight.
    let mut outer = false;
    let weighted = plan
        .transform_down(|node| match node {
            LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_) if !outer => {
                outer = true;
                Ok(Transformed::no(node))
            }
            LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_) => {
                let mut exprs: Vec<Expr> = node
                    .schema()
                    .columns()
                    .into_iter()
                    .map(Expr::Column)
                    .collect();
                exprs.push(lit(1i64).alias(WEIGHT_COLUMN));
                let weighted = Projection::try_new(exprs, Arc::new(node))?;
                Ok(Transformed::new(
                    LogicalPlan::Projection(weighted),
                    true,
                    TreeNodeRecursion::Jump,
                ))
            }
            _ => Ok(Transformed::no(node)),
        })
        .map_err(df)?
        .data;
    Ok(weighted
        .transform_up(|node| rewrite_node(node, Over::Groups, &[WEIGHT_COLUMN]).map_err(Into::into))
        .map_err(df)?
        .data)
}

/// `plan`'s rows (its first `width` columns, then the weight and `_key` it carries) as a
/// query of groups: one per key, each with its count of rows (1, or 0 once the key's row
/// has gone), so that a row leaves the result as it leaves the table.
fn keyed_rows(plan: LogicalPlan, width: usize) -> Result<LogicalPlan> {
    let schema = plan.schema().clone();
    let weight = Expr::Column(weight_of(&schema).expect("a weighted plan"));
    let key = column_of(&schema, KEY_COLUMN).ok_or_else(|| {
        Error::Internal("the rows of a query over a table without their key".into())
    })?;
    let mut groups: Vec<Expr> = (0..width)
        .map(|i| Expr::Column(Column::from(schema.qualified_field(i))))
        .collect();
    if !groups.contains(&Expr::Column(key.clone())) {
        groups.push(Expr::Column(key));
    }
    present_groups(Arc::new(plan), groups, width, weight)
}

/// `SELECT DISTINCT` of `input`'s rows: a group per distinct row, with its count of rows,
/// shown while it has some.
fn distinct_rows(input: Arc<LogicalPlan>) -> Result<LogicalPlan> {
    let schema = input.schema().clone();
    let weight = Expr::Column(weight_of(&schema).expect("a weighted input"));
    let groups: Vec<Expr> = schema
        .iter()
        .filter(|(_, field)| field.name() != WEIGHT_COLUMN)
        .map(|(qualifier, field)| Expr::Column(Column::new(qualifier.cloned(), field.name())))
        .collect();
    let width = groups.len();
    present_groups(input, groups, width, weight)
}

/// `input` grouped by `groups`, each group with its count of rows (the sum of `weight`),
/// those that have rows, as their first `width` group columns.
fn present_groups(
    input: Arc<LogicalPlan>,
    groups: Vec<Expr>,
    width: usize,
    weight: Expr,
) -> Result<LogicalPlan> {
    let df = Error::from_datafusion;
    let counted = Aggregate::try_new(input, groups, vec![sum_of(weight, None).alias(ROWS_COLUMN)])
        .map_err(df)?;
    let columns: Vec<Expr> = (0..width)
        .map(|i| Expr::Column(Column::from(counted.schema.qualified_field(i))))
        .collect();
    let rows = Expr::Column(Column::new_unqualified(ROWS_COLUMN));
    let present = Filter::try_new(
        rows.not_eq(lit(0i64)),
        Arc::new(LogicalPlan::Aggregate(counted)),
    )
    .map_err(df)?;
    Ok(LogicalPlan::Projection(
        Projection::try_new(columns, Arc::new(LogicalPlan::Filter(present))).map_err(df)?,
    ))
}

/// The column of `schema` named `name`, if it has one.
fn column_of(schema: &DFSchema, name: &str) -> Option<Column> {
    schema
        .iter()
        .find(|(_, field)| field.name() == name)
        .map(|(qualifier, field)| Column::new(qualifier.cloned(), field.name()))
}

/// The weight column of `schema`, if it has one.
fn weight_of(schema: &DFSchema) -> Option<Column> {
    column_of(schema, WEIGHT_COLUMN)
}

fn rewrite_node(
    node: LogicalPlan,
    over: Over,
    carried: &[&str],
) -> Result<Transformed<LogicalPlan>> {
    if !node
        .inputs()
        .iter()
        .any(|i| weight_of(i.schema()).is_some())
    {
        return Ok(Transformed::no(node));
    }
    let refused = |what: &str| {
        Err(Error::Unsupported(format!(
            "this query cannot run continuously: {what} over {} is not supported yet; \
             filters, projections and the aggregates count, sum and avg are maintained",
            over.rows()
        )))
    };
    let df = Error::from_datafusion;
    match node {
        LogicalPlan::Projection(p) => {
            // What the rows carry goes on through every projection (once).
            let missing: Vec<Column> = carried
                .iter()
                .filter(|name| column_of(&p.schema, name).is_none())
                .filter_map(|name| column_of(p.input.schema(), name))
                .collect();
            if missing.is_empty() {
                return Ok(Transformed::no(LogicalPlan::Projection(p)));
            }
            let mut exprs = p.expr;
            exprs.extend(missing.into_iter().map(Expr::Column));
            let projection = Projection::try_new(exprs, p.input).map_err(df)?;
            Ok(Transformed::yes(LogicalPlan::Projection(projection)))
        }
        LogicalPlan::Aggregate(aggregate) => {
            Ok(Transformed::yes(rewrite_aggregate(aggregate, over)?))
        }
        node @ (LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_)) => {
            Ok(Transformed::yes(node.recompute_schema().map_err(df)?))
        }
        LogicalPlan::Sort(_) => refused("ORDER BY"),
        LogicalPlan::Limit(_) => refused("LIMIT"),
        LogicalPlan::Join(_) => refused("a join"),
        LogicalPlan::Window(_) => refused("a window function"),
        LogicalPlan::Distinct(Distinct::All(input)) => Ok(Transformed::yes(distinct_rows(input)?)),
        LogicalPlan::Distinct(Distinct::On(_)) => refused("DISTINCT ON"),
        LogicalPlan::Union(_) => refused("UNION"),
        LogicalPlan::Unnest(_) => refused("unnest"),
        other => refused(&format!("the plan step {}", other.display())),
    }
}

/// `aggregate` over weighted rows: its aggregates as sums, a filter leaving out groups
/// without rows, and a projection giving back what it returned.
fn rewrite_aggregate(aggregate: Aggregate, over: Over) -> Result<LogicalPlan> {
    let df = Error::from_datafusion;
    let weight = Expr::Column(weight_of(aggregate.input.schema()).expect("weighted input"));
    if aggregate
        .group_expr
        .iter()
        .any(|e| matches!(e, Expr::GroupingSet(_)))
    {
        return Err(Error::Unsupported(format!(
            "this query cannot run continuously: GROUPING SETS, CUBE and ROLLUP over {} \
             are not supported yet",
            over.source()
        )));
    }
    let groups = aggregate.group_expr.len();
    // The sums kept, each once (the optimizer would merge equal ones, renaming them), the
    // group's count of rows first.
    let mut sums: Vec<(Expr, String)> = vec![(sum_of(weight.clone(), None), ROWS_COLUMN.into())];
    // The column of the sum of `value` over the rows `filter` keeps.
    let mut keep = |value: Expr, filter: &Option<Box<Expr>>| {
        let sum = sum_of(value, filter.clone());
        let name = match sums.iter().find(|(kept, _)| *kept == sum) {
            Some((_, name)) => name.clone(),
            None => {
                let name = format!("__sum{}", sums.len());
                sums.push((sum, name.clone()));
                name
            }
        };
        Expr::Column(Column::new_unqualified(name))
    };
    let mut values: Vec<Expr> = vec![];
    for (k, expr) in aggregate.aggr_expr.iter().enumerate() {
        let (qualifier, field) = aggregate.schema.qualified_field(groups + k);
        let inner = match expr {
            Expr::Alias(alias) => alias.expr.as_ref(),
            e => e,
        };
        let Expr::AggregateFunction(f) = inner else {
            return Err(Error::Internal(format!(
                "an aggregate that is not one: {expr}"
            )));
        };
        let name = f.func.name();
        let refuse = |why: &str| {
            Err(Error::Unsupported(format!(
                "this query cannot run continuously: {name}(…) over {} {why}; count, sum \
                 and avg are maintained {}",
                over.source(),
                over.changing()
            )))
        };
        if f.params.distinct {
            return refuse("with DISTINCT cannot take back a row that goes");
        }
        let filter = &f.params.filter;
        let present = |x: &Expr| {
            when(x.clone().is_null(), lit(0i64))
                .otherwise(weight.clone())
                .map_err(df)
        };
        let value = match (name, f.params.args.as_slice()) {
            ("count", args) if args.len() < 2 => {
                let counted = match args {
                    [Expr::Literal(v, _)] if !v.is_null() => weight.clone(),
                    [x] => present(x)?,
                    _ => weight.clone(),
                };
                // No rows (an empty table, or none its FILTER keeps) count 0.
                let n = keep(counted, filter);
                when(n.clone().is_null(), lit(0i64))
                    .otherwise(n)
                    .map_err(df)?
            }
            ("sum" | "avg", [x]) => {
                let signed = when(weight.clone().gt(lit(0i64)), x.clone())
                    .otherwise(Expr::Negative(Box::new(x.clone())))
                    .map_err(df)?;
                let s = keep(signed, filter);
                let n = keep(present(x)?, filter);
                let integers = avg::is_integer(&x.get_type(aggregate.input.schema()).map_err(df)?);
                let value = match name {
                    "sum" => cast(s, field.data_type().clone()),
                    // As `avg` divides its integers' sum, so that the two agree.
                    _ if integers => average_of().call(vec![s, n.clone()]),
                    _ => cast(
                        cast(s, field.data_type().clone())
                            / cast(n.clone(), field.data_type().clone()),
                        field.data_type().clone(),
                    ),
                };
                when(
                    n.clone().is_null().or(n.eq(lit(0i64))),
                    lit_null(field.data_type()),
                )
                .otherwise(value)
                .map_err(df)?
            }
            ("count", _) => return refuse("of several arguments is not supported"),
            _ => {
                return refuse(
                    "cannot be maintained: taking back a row that goes would need every row \
                     of its group",
                );
            }
        };
        values.push(
            cast(value, field.data_type().clone())
                .alias_qualified(qualifier.cloned(), field.name()),
        );
    }
    let sums = sums
        .into_iter()
        .map(|(sum, name)| sum.alias(name))
        .collect();
    let rows = Expr::Column(Column::new_unqualified(ROWS_COLUMN));
    let summed = Aggregate::try_new(aggregate.input, aggregate.group_expr, sums).map_err(df)?;
    let group_columns: Vec<Expr> = (0..groups)
        .map(|i| Expr::Column(Column::from(summed.schema.qualified_field(i))))
        .collect();
    let mut plan = LogicalPlan::Aggregate(summed);
    if groups > 0 {
        // A group whose rows have all gone is no longer one (a global aggregate's one
        // group stays, as over an empty table).
        plan = LogicalPlan::Filter(
            Filter::try_new(rows.not_eq(lit(0i64)), Arc::new(plan)).map_err(df)?,
        );
    }
    let exprs = group_columns.into_iter().chain(values).collect();
    Ok(LogicalPlan::Projection(
        Projection::try_new(exprs, Arc::new(plan)).map_err(df)?,
    ))
}

/// `sum(value) FILTER (WHERE filter)`.
fn sum_of(value: Expr, filter: Option<Box<Expr>>) -> Expr {
    Expr::AggregateFunction(AggregateFunction::new_udf(
        sum_udaf(),
        vec![value],
        false,
        filter,
        vec![],
        None,
    ))
}

/// The division of an integer `avg`, of a sum and a count.
fn average_of() -> ScalarUDF {
    ScalarUDF::from(avg::AverageOf::default())
}

/// A NULL of `data_type`.
fn lit_null(data_type: &DataType) -> Expr {
    cast(
        lit(datafusion::common::ScalarValue::Null),
        data_type.clone(),
    )
}
