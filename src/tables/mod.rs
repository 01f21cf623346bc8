//! The catalog as DataFusion sees it: streams, tables (the latest row per key), topics,
//! views, external tables and system tables as table providers, their scans and sinks, and
//! `pg_catalog` for PostgreSQL clients.
//!
//! This layer sits above the durable catalog ([`crate::catalog`], metadata only) and the log,
//! and below the engine: materialized views and `sys.queries` read the continuous query
//! engine through the [`Continuous`] trait, which the engine implements, so nothing here
//! imports it.

pub mod blocking_scan;
pub mod event_time;
pub mod information_schema;
pub mod keyed;
pub mod nexmark;
pub mod pg;
pub mod provider;
pub mod scan;
pub mod stream_table;
pub mod system;
pub mod text_table;
pub mod view_table;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datafusion::datasource::TableProvider;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::catalog::{Catalog, QueryId};
use crate::error::Result;
use crate::groups::Groups;
use crate::ingest::writer::RowWriter;
use crate::storage::{Log, Snapshot};

/// What every table provider of a database shares: the catalog, the log and its writer.
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
    /// The `COPY`s running now.
    pub copies: crate::progress::Copies,
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tables").finish_non_exhaustive()
    }
}

/// What SQL reads of the continuous query engine.
pub trait Continuous: Send + Sync {
    /// The plan that reads a materialized view's current contents; `filters` (applied
    /// again above it) may narrow what is read.
    fn view_plan(
        &self,
        view: &str,
        snapshot: &Snapshot,
        filters: &[Expr],
    ) -> Result<Arc<dyn ExecutionPlan>>;

    /// Every continuous query, as `sys.queries` shows it.
    fn statuses(&self) -> Vec<QueryStatus>;
}

/// A continuous query as `sys.queries` shows it.
#[derive(Debug, Clone)]
pub struct QueryStatus {
    pub id: QueryId,
    pub name: String,
    /// `stream`, `view` or `insert`.
    pub kind: &'static str,
    /// The stream or view it maintains or writes.
    pub target: String,
    pub input: String,
    pub state: &'static str,
    pub epoch: u64,
    /// Input records not processed yet.
    pub lag: u64,
    pub rows_in: u64,
    pub rows_out: u64,
    pub rows_per_sec: f64,
    /// How far the output is behind the input (0 when it has read everything committed).
    pub lag_secs: f64,
    /// An estimate of the time to read the lag, while it shrinks.
    pub catch_up_secs: Option<f64>,
    /// How long its epochs have taken.
    pub epoch_seconds: Arc<crate::metrics::Durations>,
    /// Failures since the server started.
    pub failures: u64,
    pub last_checkpoint_ms: Option<i64>,
    /// An aggregation's live groups.
    pub groups: Option<u64>,
    /// Memory its state holds (reserved against `--memory-limit`).
    pub state_bytes: u64,
    /// Over a stream with a watermark: the watermark (µs since the epoch), rows dropped as
    /// late, and per input partition the greatest watermark-expression value read and
    /// whether the partition is idle.
    pub watermark: Option<i64>,
    pub late_rows: u64,
    pub event_times: Vec<(u32, i64, bool)>,
    pub error: Option<String>,
    pub sql: String,
}
