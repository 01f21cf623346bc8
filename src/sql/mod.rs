//! The life of a statement up to its plan: [`parser`] splits and parses it, [`rewrite`]
//! adapts the syntax tree to streams, and [`plan`] has DataFusion turn it into a logical
//! plan. Nothing here executes anything, except [`functions`]: the scalar functions Runnel
//! puts in place of DataFusion's.

pub mod array_literal;
pub mod assignment;
pub mod column_names;
pub mod decorrelate;
pub mod depth;
pub mod functions;
pub mod intervals;
pub mod json;
pub mod literal_insert;
pub mod overflow;
pub mod parser;
pub mod planner;
pub mod rewrite;
pub mod rounding;
pub mod text_type;
pub mod top_n;
pub mod windows;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::execution::SessionState;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{Expr, LogicalPlan};
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
/// that put PostgreSQL's semantics in DataFusion's plans.
pub fn rewrite_expressions(
    plan: LogicalPlan,
    rewrite: impl Fn(Expr, &DFSchema) -> DfResult<Transformed<Expr>>,
) -> DfResult<LogicalPlan> {
    plan.transform_up_with_subqueries(|plan| {
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
        match self.relation(relation)? {
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
