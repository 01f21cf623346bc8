//! The life of a statement up to its plan: [`parser`] splits and parses it, [`rewrite`]
//! adapts the syntax tree to streams, and [`plan`] has DataFusion turn it into a logical
//! plan. Nothing here executes anything.

pub mod literal_insert;
pub mod parser;
pub mod rewrite;

use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::{CopyToSource, Statement as DfStatement};

use crate::catalog::{CatalogData, Relation};
use crate::catalog::{HIDDEN_COLUMNS, OFFSET_COLUMN, PARTITION_COLUMN};
use crate::error::{Error, Result};
use crate::storage::TIMESTAMP_COLUMN;
pub use parser::{Statement, parse};
use rewrite::HiddenColumns;

/// A schemaless topic shows `_key`; its other system columns are hidden.
const TOPIC_HIDDEN_COLUMNS: [&str; 3] = [PARTITION_COLUMN, OFFSET_COLUMN, TIMESTAMP_COLUMN];

impl HiddenColumns for CatalogData {
    fn hidden_columns(&self, relation: &str) -> Option<&'static [&'static str]> {
        match self.relation(relation)? {
            Relation::Stream(..) => Some(&HIDDEN_COLUMNS),
            Relation::Topic(_) => Some(&TOPIC_HIDDEN_COLUMNS),
            Relation::External(_) | Relation::View(_) => None,
        }
    }
}

/// Applies Runnel's rewrites to a statement DataFusion will plan.
pub fn rewrite(statement: &mut DfStatement, catalog: &CatalogData) {
    match statement {
        DfStatement::Statement(s) => rewrite::rewrite(s, catalog),
        DfStatement::Explain(explain) => rewrite(&mut explain.statement, catalog),
        DfStatement::CopyTo(copy) => {
            if let CopyToSource::Query(query) = &mut copy.source {
                let mut s = sqlparser::ast::Statement::Query(query.clone());
                rewrite::rewrite(&mut s, catalog);
                if let sqlparser::ast::Statement::Query(q) = s {
                    *query = q;
                }
            }
        }
        DfStatement::CreateExternalTable(_) | DfStatement::Reset(_) => {}
    }
}

/// Plans a (rewritten) statement with DataFusion.
pub async fn plan(
    state: &SessionState,
    mut statement: DfStatement,
    catalog: &CatalogData,
) -> Result<LogicalPlan> {
    rewrite(&mut statement, catalog);
    state
        .statement_to_plan(statement)
        .await
        .map_err(Error::from_datafusion)
}
