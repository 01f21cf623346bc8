//! The life of a statement up to its plan: [`parser`] splits and parses it, [`rewrite`]
//! adapts the syntax tree to streams, and [`plan`] has DataFusion turn it into a logical
//! plan. Nothing here executes anything, except [`functions`]: the scalar functions Runnel
//! puts in place of DataFusion's.

pub mod array_literal;
pub mod assignment;
pub mod column_names;
pub mod declared;
pub mod decorrelate;
pub mod depth;
pub mod duration;
pub mod functions;
pub mod intervals;
pub mod json;
pub mod literal_insert;
pub mod numeric;
pub mod overflow;
pub mod parser;
pub mod planner;
pub mod rewrite;
pub mod rounding;
pub mod standard;
pub mod text_type;
pub mod top_n;
pub mod windows;

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result as DfResult, ScalarValue};
use datafusion::execution::SessionState;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::type_coercion::binary::type_union_resolution;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    DmlStatement, Expr, ExprSchemable, LogicalPlan, Projection, Values, WriteOp,
};
use datafusion::sql::parser::{CopyToSource, Statement as DfStatement};

use crate::catalog::{CatalogData, Relation};
use crate::catalog::{HIDDEN_COLUMNS, OFFSET_COLUMN, PARTITION_COLUMN};
use crate::error::{Error, Result};
use crate::storage::{HEADERS_COLUMN, TIMESTAMP_COLUMN};
pub use parser::{Statement, parse};
use rewrite::HiddenColumns;
pub use windows::Window;

/// Rewrites every expression of `plan` and of its subqueries, bottom up, with `rewrite`,
/// which is given the schema the expression is evaluated against (its node's inputs, and a
/// scan's own columns), keeping the plan's column names: the body of Runnel's analyzer rules
/// that put PostgreSQL's semantics in DataFusion's plans. `VALUES` columns take the types of
/// their rewritten values (its node holds its types, fixed when it was planned).
pub fn rewrite_expressions(
    plan: LogicalPlan,
    rewrite: impl Fn(Expr, &DFSchema) -> DfResult<Transformed<Expr>>,
) -> DfResult<LogicalPlan> {
    plan.transform_up_with_subqueries(|plan| {
        let plan = match plan {
            LogicalPlan::Values(values) => return rewrite_values(values, &rewrite),
            LogicalPlan::Dml(dml) => return typed_insert(dml),
            plan => plan,
        };
        let mut schema = merge_schema(&plan.inputs());
        if let LogicalPlan::TableScan(scan) = &plan
            && let Ok(source) =
                DFSchema::try_from_qualified_schema(scan.table_name.clone(), &scan.source.schema())
        {
            schema.merge(&source);
        }
        let names = NamePreserver::new(&plan);
        plan.map_expressions(|expr| {
            let name = names.save(&expr);
            let rewritten = expr.transform_up(|e| rewrite(e, &schema))?;
            Ok(rewritten.update_data(|e| name.restore(e)))
        })
    })
    .map(|t| t.data)
}

/// An `INSERT` whose rows' types a rewrite below it changed (DataFusion adds its casts to
/// the table's types when it plans the statement) with those casts again.
fn typed_insert(mut dml: DmlStatement) -> DfResult<Transformed<LogicalPlan>> {
    let target = dml.target.schema();
    let input = dml.input.schema().clone();
    let retyped = input.fields().len() == target.fields().len()
        && input
            .fields()
            .iter()
            .zip(target.fields())
            .any(|(have, want)| have.data_type() != want.data_type());
    if !matches!(dml.op, WriteOp::Insert(_)) || !retyped {
        return Ok(Transformed::no(LogicalPlan::Dml(dml)));
    }
    let columns = input
        .columns()
        .into_iter()
        .zip(target.fields())
        .map(|(column, want)| {
            let name = column.name.clone();
            Ok(Expr::Column(column)
                .cast_to(want.data_type(), &input)?
                .alias(name))
        })
        .collect::<DfResult<Vec<_>>>()?;
    dml.input = Arc::new(LogicalPlan::Projection(Projection::try_new(
        columns, dml.input,
    )?));
    Ok(Transformed::yes(LogicalPlan::Dml(dml)))
}

/// `VALUES` rows rewritten, each column retyped to the type its rewritten values share
/// (DataFusion's union of their types, or the column's own type if they have none).
fn rewrite_values(
    mut values: Values,
    rewrite: &impl Fn(Expr, &DFSchema) -> DfResult<Transformed<Expr>>,
) -> DfResult<Transformed<LogicalPlan>> {
    let empty = DFSchema::empty();
    let mut transformed = false;
    for row in &mut values.values {
        for value in row.iter_mut() {
            let rewritten = std::mem::replace(value, Expr::Literal(ScalarValue::Null, None))
                .transform_up(|e| rewrite(e, &empty))?;
            transformed |= rewritten.transformed;
            *value = rewritten.data;
        }
    }
    if !transformed {
        return Ok(Transformed::no(LogicalPlan::Values(values)));
    }
    let mut fields = Vec::with_capacity(values.schema.fields().len());
    for (column, (qualifier, field)) in values.schema.iter().enumerate() {
        let types = values
            .values
            .iter()
            .map(|row| row[column].get_type(&empty))
            .collect::<DfResult<Vec<_>>>()?;
        let to = type_union_resolution(&types).unwrap_or_else(|| field.data_type().clone());
        for (row, from) in values.values.iter_mut().zip(&types) {
            if *from != to {
                row[column] = row[column].clone().cast_to(&to, &empty)?;
            }
        }
        fields.push((
            qualifier.cloned(),
            Arc::new(field.as_ref().clone().with_data_type(to)),
        ));
    }
    let schema = DFSchema::new_with_metadata(fields, values.schema.metadata().clone())?;
    values.schema = Arc::new(schema);
    Ok(Transformed::yes(LogicalPlan::Values(values)))
}

/// Runs `work` — parsing and planning a statement, which is CPU work DataFusion does
/// without yielding — telling the runtime that this thread may be busy for a while, so
/// that other connections, cancel requests and the log's replies are not held up behind
/// a long plan. Inside such work already, or on a runtime that cannot hand its work over
/// (a single-threaded one, in tests), it simply runs.
pub async fn cpu_bound<F: std::future::Future>(work: F) -> F::Output {
    use tokio::runtime::{Handle, RuntimeFlavor};
    thread_local! {
        static INSIDE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    let handle = Handle::current();
    if INSIDE.get() || handle.runtime_flavor() != RuntimeFlavor::MultiThread {
        return work.await;
    }
    tokio::task::block_in_place(move || {
        INSIDE.set(true);
        let out = handle.block_on(work);
        INSIDE.set(false);
        out
    })
}

/// A schemaless topic shows `_key`; its other system columns are hidden.
const TOPIC_HIDDEN_COLUMNS: [&str; 4] = [
    PARTITION_COLUMN,
    OFFSET_COLUMN,
    TIMESTAMP_COLUMN,
    HEADERS_COLUMN,
];

impl HiddenColumns for CatalogData {
    fn hidden_columns(&self, relation: &str) -> Option<&'static [&'static str]> {
        let Some(relation) = self.relation(relation) else {
            // `pg_class`, bare, is pg_catalog's when there is no relation of that name.
            return crate::tables::pg::catalog_hidden_columns(&sqlparser::ast::ObjectName::from(
                vec![sqlparser::ast::Ident::new(relation)],
            ));
        };
        match relation {
            Relation::Stream(..) => Some(&HIDDEN_COLUMNS),
            Relation::Topic(_) => Some(&TOPIC_HIDDEN_COLUMNS),
            Relation::External(_) | Relation::View(_) => None,
        }
    }
}

/// Applies Runnel's rewrites to a statement DataFusion will plan: window table functions
/// first (they name the relations the others look at), then the rest. Returns the windows
/// the statement calls.
pub fn rewrite(statement: &mut DfStatement, catalog: &CatalogData) -> Result<Vec<Window>> {
    let mut windows = vec![];
    match statement {
        DfStatement::Statement(s) => {
            windows = windows::rewrite(s, catalog)?;
            rewrite::rewrite(s, catalog)?;
        }
        DfStatement::Explain(explain) => windows = rewrite(&mut explain.statement, catalog)?,
        DfStatement::CopyTo(copy) => {
            if let CopyToSource::Query(query) = &mut copy.source {
                let mut s = sqlparser::ast::Statement::Query(query.clone());
                windows = windows::rewrite(&mut s, catalog)?;
                rewrite::rewrite(&mut s, catalog)?;
                if let sqlparser::ast::Statement::Query(q) = s {
                    *query = q;
                }
            }
        }
        DfStatement::CreateExternalTable(_) | DfStatement::Reset(_) => {}
    }
    Ok(windows)
}

/// Rewrites a statement and plans it with DataFusion.
pub async fn plan(
    state: &SessionState,
    mut statement: DfStatement,
    catalog: &CatalogData,
) -> Result<LogicalPlan> {
    rewrite(&mut statement, catalog)?;
    plan_rewritten(state, statement).await
}

/// Plans a statement [`rewrite`] has been applied to.
pub async fn plan_rewritten(state: &SessionState, statement: DfStatement) -> Result<LogicalPlan> {
    state
        .statement_to_plan(statement)
        .await
        .map_err(Error::from_datafusion)
}
