//! `information_schema` with PostgreSQL's type names.
//!
//! DataFusion's `information_schema` names a column's type by its Arrow type (`Int64`,
//! `Utf8`); tools that read `information_schema.columns` (dbt, Grafana's query builder)
//! expect PostgreSQL's (`bigint`, `text`). Runnel serves the schema itself: DataFusion's
//! tables, except `columns`, which it builds with PostgreSQL's `data_type` and `udt_name`
//! and the precision PostgreSQL reports.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, StringBuilder, UInt64Builder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
pub use datafusion::catalog::information_schema::INFORMATION_SCHEMA;
use datafusion::catalog::information_schema::{
    INFORMATION_SCHEMA_TABLES, InformationSchemaProvider,
};
use datafusion::catalog::{CatalogProviderList, SchemaProvider, Session};
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use super::Tables;
use crate::catalog::PUBLIC_SCHEMA;
use crate::catalog::types::SqlType;
use crate::sql::rewrite::HiddenColumns;

/// The schema `information_schema` of catalog `runnel`.
#[derive(Debug)]
pub struct InformationSchema {
    /// Weak: the catalog list holds this schema.
    catalogs: Weak<dyn CatalogProviderList>,
    tables: Arc<Tables>,
}

impl InformationSchema {
    pub fn new(catalogs: &Arc<dyn CatalogProviderList>, tables: Arc<Tables>) -> InformationSchema {
        InformationSchema {
            catalogs: Arc::downgrade(catalogs),
            tables,
        }
    }

    fn catalogs(&self) -> DfResult<Arc<dyn CatalogProviderList>> {
        self.catalogs
            .upgrade()
            .ok_or_else(|| DataFusionError::Internal("the session's catalogs are gone".into()))
    }
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        INFORMATION_SCHEMA_TABLES
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let catalogs = self.catalogs()?;
        if name.eq_ignore_ascii_case("columns") {
            return Ok(Some(Arc::new(Columns {
                catalogs,
                tables: self.tables.clone(),
            })));
        }
        InformationSchemaProvider::new(catalogs).table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        INFORMATION_SCHEMA_TABLES.contains(&name.to_ascii_lowercase().as_str())
    }
}

/// `information_schema.columns`: DataFusion's columns, with PostgreSQL's `data_type` and
/// precision, and `udt_name` added; a stream's system columns left out, as PostgreSQL's
/// are.
#[derive(Debug)]
struct Columns {
    catalogs: Arc<dyn CatalogProviderList>,
    tables: Arc<Tables>,
}

fn columns_schema() -> SchemaRef {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let number = |name: &str, nullable| Field::new(name, DataType::UInt64, nullable);
    Arc::new(Schema::new(vec![
        text("table_catalog", false),
        text("table_schema", false),
        text("table_name", false),
        text("column_name", false),
        number("ordinal_position", false),
        text("column_default", true),
        text("is_nullable", false),
        text("data_type", false),
        number("character_maximum_length", true),
        number("character_octet_length", true),
        number("numeric_precision", true),
        number("numeric_precision_radix", true),
        number("numeric_scale", true),
        number("datetime_precision", true),
        text("interval_type", true),
        text("udt_catalog", false),
        text("udt_schema", false),
        text("udt_name", false),
    ]))
}

#[async_trait]
impl TableProvider for Columns {
    fn schema(&self) -> SchemaRef {
        columns_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let relations = self.tables.catalog.snapshot();
        let mut rows = ColumnRows::default();
        for catalog_name in self.catalogs.catalog_names() {
            let Some(catalog) = self.catalogs.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                if schema_name == INFORMATION_SCHEMA {
                    continue;
                }
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                for table_name in schema.table_names() {
                    let Some(table) = schema.table(&table_name).await? else {
                        continue;
                    };
                    let hidden = match schema_name.as_str() {
                        PUBLIC_SCHEMA => relations.hidden_columns(&table_name).unwrap_or(&[]),
                        _ => &[],
                    };
                    let declared = table.schema();
                    let declared = declared
                        .fields()
                        .iter()
                        .filter(|f| !hidden.contains(&f.name().as_str()));
                    for (position, field) in declared.enumerate() {
                        let place = [&catalog_name, &schema_name, &table_name];
                        rows.add(place, position + 1, field);
                    }
                }
            }
        }
        let batch = rows.finish()?;
        MemTable::try_new(batch.schema(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

#[derive(Default)]
struct ColumnRows {
    catalogs: StringBuilder,
    schemas: StringBuilder,
    tables: StringBuilder,
    names: StringBuilder,
    positions: UInt64Builder,
    defaults: StringBuilder,
    nullable: StringBuilder,
    data_types: StringBuilder,
    max_lengths: UInt64Builder,
    octet_lengths: UInt64Builder,
    precisions: UInt64Builder,
    radixes: UInt64Builder,
    scales: UInt64Builder,
    datetime_precisions: UInt64Builder,
    interval_types: StringBuilder,
    udt_catalogs: StringBuilder,
    udt_schemas: StringBuilder,
    udt_names: StringBuilder,
}

impl ColumnRows {
    fn add(&mut self, [catalog, schema, table]: [&String; 3], position: usize, field: &Field) {
        self.catalogs.append_value(catalog);
        self.schemas.append_value(schema);
        self.tables.append_value(table);
        self.names.append_value(field.name());
        self.positions.append_value(position as u64);
        self.defaults.append_null();
        self.nullable
            .append_value(if field.is_nullable() { "YES" } else { "NO" });
        let (data_type, udt_name) = pg_type(field);
        self.data_types.append_value(data_type);
        self.udt_catalogs.append_value(catalog);
        self.udt_schemas.append_value("pg_catalog");
        self.udt_names.append_value(udt_name);
        self.max_lengths.append_null();
        let sql_type = SqlType::from_field(field);
        // PostgreSQL's octet length of `text` (1 GB), as it reports it.
        self.octet_lengths
            .append_option((sql_type == Some(SqlType::Text)).then_some(1_073_741_824));
        let (precision, radix, scale) = match sql_type {
            Some(SqlType::SmallInt) => (Some(16), Some(2), Some(0)),
            Some(SqlType::Integer) => (Some(32), Some(2), Some(0)),
            Some(SqlType::BigInt) => (Some(64), Some(2), Some(0)),
            Some(SqlType::Real) => (Some(24), Some(2), None),
            Some(SqlType::Double) => (Some(53), Some(2), None),
            Some(SqlType::Numeric { precision, scale }) => (
                Some(precision.into()),
                Some(10),
                Some(scale.unsigned_abs().into()),
            ),
            _ => (None, None, None),
        };
        self.precisions.append_option(precision);
        self.radixes.append_option(radix);
        self.scales.append_option(scale);
        // Times, timestamps and intervals hold microseconds.
        self.datetime_precisions.append_option(match sql_type {
            Some(SqlType::Date) => Some(0),
            Some(t) if t.is_temporal() => Some(6),
            _ => None,
        });
        self.interval_types.append_null();
    }

    fn finish(mut self) -> DfResult<RecordBatch> {
        Ok(RecordBatch::try_new(
            columns_schema(),
            vec![
                Arc::new(self.catalogs.finish()),
                Arc::new(self.schemas.finish()),
                Arc::new(self.tables.finish()),
                Arc::new(self.names.finish()),
                Arc::new(self.positions.finish()),
                Arc::new(self.defaults.finish()),
                Arc::new(self.nullable.finish()),
                Arc::new(self.data_types.finish()),
                Arc::new(self.max_lengths.finish()),
                Arc::new(self.octet_lengths.finish()),
                Arc::new(self.precisions.finish()),
                Arc::new(self.radixes.finish()),
                Arc::new(self.scales.finish()),
                Arc::new(self.datetime_precisions.finish()),
                Arc::new(self.interval_types.finish()),
                Arc::new(self.udt_catalogs.finish()),
                Arc::new(self.udt_schemas.finish()),
                Arc::new(self.udt_names.finish()),
            ],
        )?)
    }
}

/// PostgreSQL's `data_type` and `udt_name` of a column: `ARRAY` and `_int4` for an array,
/// Arrow's name for a type PostgreSQL has no name for.
fn pg_type(field: &Field) -> (String, String) {
    if let DataType::List(element) | DataType::LargeList(element) = field.data_type() {
        let (_, element) = pg_type(element);
        return ("ARRAY".into(), format!("_{element}"));
    }
    match SqlType::from_field(field) {
        Some(t) => (t.regtype_name().into(), t.udt_name().into()),
        None => {
            let arrow = field.data_type().to_string();
            (arrow.clone(), arrow)
        }
    }
}
