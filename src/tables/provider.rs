//! The catalog as DataFusion sees it: catalog `runnel` with schemas `public` (streams,
//! topics, external tables), `sys` (system tables) and the unlisted `__write` (streams as
//! `INSERT` targets; the planner points `INSERT INTO x` at `__write.x`).
//!
//! Providers are built on lookup from the current catalog snapshot, so DDL is visible to the
//! next statement of every session without registering anything.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::datasource::TableProvider;
use datafusion::error::{DataFusionError, Result as DfResult};

use super::keyed::KeyedTable;
use super::stream_table::{StreamSinkTable, StreamTable};
use super::view_table::ViewTable;
use super::{Continuous, Tables, system};
use crate::catalog::{PUBLIC_SCHEMA, Relation, SYS_SCHEMA, WRITE_SCHEMA};
use crate::ingest::WriteTarget;

#[derive(Debug)]
pub struct RunnelCatalog {
    public: Arc<PublicSchema>,
    sys: Arc<SysSchema>,
    write: Arc<WriteSchema>,
    /// Schemas registered at start-up: `pg_catalog`, for PostgreSQL clients.
    registered: RwLock<HashMap<String, Arc<dyn SchemaProvider>>>,
}

impl RunnelCatalog {
    /// `continuous` is the engine that keeps materialized views and reports on queries
    /// (weak: the engine plans with this catalog).
    pub fn new(tables: Arc<Tables>, continuous: Weak<dyn Continuous>) -> RunnelCatalog {
        RunnelCatalog {
            public: Arc::new(PublicSchema {
                tables: tables.clone(),
                continuous: continuous.clone(),
            }),
            sys: Arc::new(SysSchema {
                tables: tables.clone(),
                continuous,
            }),
            write: Arc::new(WriteSchema(tables)),
            registered: RwLock::default(),
        }
    }
}

impl CatalogProvider for RunnelCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names = vec![PUBLIC_SCHEMA.to_string(), SYS_SCHEMA.to_string()];
        names.extend(self.registered.read().expect("lock").keys().cloned());
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        match name {
            PUBLIC_SCHEMA => Some(self.public.clone()),
            SYS_SCHEMA => Some(self.sys.clone()),
            WRITE_SCHEMA => Some(self.write.clone()),
            _ => self.registered.read().expect("lock").get(name).cloned(),
        }
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> DfResult<Option<Arc<dyn SchemaProvider>>> {
        if [PUBLIC_SCHEMA, SYS_SCHEMA, WRITE_SCHEMA].contains(&name) {
            return Err(DataFusionError::Plan(format!(
                "schema \"{name}\" already exists"
            )));
        }
        Ok(self
            .registered
            .write()
            .expect("lock")
            .insert(name.to_string(), schema))
    }
}

struct PublicSchema {
    tables: Arc<Tables>,
    continuous: Weak<dyn Continuous>,
}

impl std::fmt::Debug for PublicSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PublicSchema")
    }
}

#[async_trait]
impl SchemaProvider for PublicSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.catalog.snapshot().relation_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let data = self.tables.catalog.snapshot();
        let Some(relation) = data.relation(name) else {
            return Ok(None);
        };
        if let Relation::View(view) = relation {
            let schema = Arc::new(arrow::datatypes::Schema::new(view.columns.clone()));
            return Ok(Some(Arc::new(ViewTable::new(
                view.name.clone(),
                schema,
                self.tables.log.clone(),
                self.continuous.clone(),
            ))));
        }
        if let Relation::External(_) = relation {
            return Ok(self
                .tables
                .external
                .read()
                .expect("external tables lock")
                .get(name)
                .cloned());
        }
        if let Relation::Stream(stream, topic) = relation
            && stream.is_table()
        {
            let table = KeyedTable::new(
                stream,
                topic,
                self.tables.log.clone(),
                self.tables.writer.clone(),
            );
            return Ok(Some(Arc::new(table)));
        }
        let table = StreamTable::of(&data, &relation, self.tables.log.clone())
            .expect("streams and topics are tables");
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.catalog.snapshot().relation(name).is_some()
    }

    fn register_table(
        &self,
        name: String,
        _table: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Err(DataFusionError::NotImplemented(format!(
            "cannot register \"{name}\": create streams and tables with CREATE STREAM or CREATE EXTERNAL TABLE"
        )))
    }
}

#[derive(Debug)]
struct WriteSchema(Arc<Tables>);

#[async_trait]
impl SchemaProvider for WriteSchema {
    fn table_names(&self) -> Vec<String> {
        vec![]
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let data = self.0.catalog.snapshot();
        let Some(relation) = data.relation(name) else {
            return Ok(None);
        };
        match relation {
            Relation::External(_) => {
                return Err(DataFusionError::NotImplemented(format!(
                    "external table \"{name}\" is read-only; write files with COPY (query) TO 'file'"
                )));
            }
            Relation::View(_) => {
                return Err(DataFusionError::NotImplemented(format!(
                    "materialized view \"{name}\" is read-only: its query maintains it; insert into the stream it reads"
                )));
            }
            Relation::Stream(..) | Relation::Topic(_) => {}
        }
        let target = WriteTarget::of(&data, &relation).expect("streams and topics are writable");
        Ok(Some(Arc::new(StreamSinkTable::new(
            target,
            self.0.writer.clone(),
            self.0.insert_chunk_bytes,
        ))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.0.catalog.snapshot().relation(name).is_some()
    }
}

struct SysSchema {
    tables: Arc<Tables>,
    continuous: Weak<dyn Continuous>,
}

impl std::fmt::Debug for SysSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SysSchema")
    }
}

#[async_trait]
impl SchemaProvider for SysSchema {
    fn table_names(&self) -> Vec<String> {
        system::TABLES.iter().map(|s| s.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        system::table(name, &self.tables, &self.continuous)
    }

    fn table_exist(&self, name: &str) -> bool {
        system::TABLES.contains(&name)
    }
}
