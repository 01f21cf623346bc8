//! The catalog as DataFusion sees it: catalog `runnel` with schemas `public` (streams,
//! topics, external tables), `sys` (system tables) and the unlisted `__write` (streams as
//! `INSERT` targets; the planner points `INSERT INTO x` at `__write.x`).
//!
//! Providers are built on lookup from the current catalog snapshot, so DDL is visible to the
//! next statement of every session without registering anything.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock, Weak};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::datasource::TableProvider;
use datafusion::error::{DataFusionError, Result as DfResult};

use super::stream_table::{StreamSinkTable, StreamTable};
use super::view_table::ViewTable;
use super::{Catalog, Relation, system};
use crate::engine::Engine;
use crate::groups::Groups;
use crate::ingest::WriteTarget;
use crate::ingest::writer::RowWriter;
use crate::storage::Log;

pub const CATALOG_NAME: &str = "runnel";
pub const PUBLIC_SCHEMA: &str = "public";
pub const SYS_SCHEMA: &str = "sys";
pub const WRITE_SCHEMA: &str = "__write";

/// Everything the SQL side of the catalog reads.
pub struct Tables {
    pub catalog: Arc<Catalog>,
    pub log: Arc<Log>,
    pub writer: Arc<RowWriter>,
    /// Consumer groups' committed offsets.
    pub groups: Groups,
    /// Providers of external tables, by name (rebuilt from their SQL at start-up).
    pub external: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
    /// `INSERT … SELECT` commits in atomic chunks of about this many bytes.
    pub insert_chunk_bytes: usize,
    /// The continuous query engine, once started: materialized views and `sys.queries`
    /// read it.
    pub engine: OnceLock<Weak<Engine>>,
}

impl Tables {
    pub fn engine(&self) -> Option<Arc<Engine>> {
        self.engine.get().and_then(Weak::upgrade)
    }
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tables").finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct RunnelCatalog {
    public: Arc<PublicSchema>,
    sys: Arc<SysSchema>,
    write: Arc<WriteSchema>,
    /// Schemas registered at start-up: `pg_catalog`, for PostgreSQL clients.
    registered: RwLock<HashMap<String, Arc<dyn SchemaProvider>>>,
}

impl RunnelCatalog {
    pub fn new(tables: Arc<Tables>) -> RunnelCatalog {
        RunnelCatalog {
            public: Arc::new(PublicSchema(tables.clone())),
            sys: Arc::new(SysSchema(tables.clone())),
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

#[derive(Debug)]
struct PublicSchema(Arc<Tables>);

#[async_trait]
impl SchemaProvider for PublicSchema {
    fn table_names(&self) -> Vec<String> {
        self.0.catalog.snapshot().relation_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let data = self.0.catalog.snapshot();
        let Some(relation) = data.relation(name) else {
            return Ok(None);
        };
        if let Relation::View(view) = relation {
            let schema = Arc::new(arrow::datatypes::Schema::new(view.columns.clone()));
            return Ok(Some(Arc::new(ViewTable::new(
                view.name.clone(),
                schema,
                self.0.clone(),
            ))));
        }
        if let Relation::External(_) = relation {
            return Ok(self
                .0
                .external
                .read()
                .expect("external tables lock")
                .get(name)
                .cloned());
        }
        let table = StreamTable::of(&data, &relation, self.0.log.clone())
            .expect("streams and topics are tables");
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.0.catalog.snapshot().relation(name).is_some()
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

#[derive(Debug)]
struct SysSchema(Arc<Tables>);

#[async_trait]
impl SchemaProvider for SysSchema {
    fn table_names(&self) -> Vec<String> {
        system::TABLES.iter().map(|s| s.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        system::table(name, &self.0)
    }

    fn table_exist(&self, name: &str) -> bool {
        system::TABLES.contains(&name)
    }
}
