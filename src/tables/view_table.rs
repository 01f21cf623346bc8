//! Materialized views as DataFusion tables: a `SELECT` reads the view's contents as of its
//! last committed epoch, which the engine keeps.

use std::sync::{Arc, Weak};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;

use super::Continuous;
use super::stream_table::StatementSnapshot;
use crate::error::Error;
use crate::storage::Log;

pub struct ViewTable {
    name: String,
    schema: SchemaRef,
    log: Arc<Log>,
    continuous: Weak<dyn Continuous>,
}

impl std::fmt::Debug for ViewTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ViewTable({})", self.name)
    }
}

impl ViewTable {
    pub fn new(
        name: String,
        schema: SchemaRef,
        log: Arc<Log>,
        continuous: Weak<dyn Continuous>,
    ) -> ViewTable {
        ViewTable {
            name,
            schema,
            log,
            continuous,
        }
    }
}

#[async_trait]
impl TableProvider for ViewTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Equalities on group columns turn a scan into key lookups; every filter is still
        // applied to the rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let snapshot = StatementSnapshot::of(state, &self.log);
        let engine = self.continuous.upgrade().ok_or_else(|| {
            Error::plan(
                "55000",
                format!("materialized view \"{}\" is starting", self.name),
            )
        })?;
        let plan = engine.view_plan(&self.name, &snapshot, filters)?;
        let Some(projection) = projection else {
            return Ok(plan);
        };
        let exprs: Vec<(Arc<dyn datafusion::physical_expr::PhysicalExpr>, String)> = projection
            .iter()
            .map(|i| {
                let name = self.schema.field(*i).name().clone();
                (Arc::new(Column::new(&name, *i)) as _, name)
            })
            .collect();
        Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
    }
}
