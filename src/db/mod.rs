//! The one door in: a [`Database`] opened on a data directory, and [`Session`]s that run SQL.
//!
//! Front ends (pgwire today) hand SQL text and `COPY` data to a session and get back
//! [`Output`]s; nothing below this module knows which protocol a request came from.
//! DDL is coordinated here: the log creates or deletes a topic's files and the catalog
//! commit makes the change real, in an order that leaves nothing half-made after a crash
//! (files first on create, catalog first on drop; leftovers are removed at start-up).

mod continuous;
mod copy;
mod cursor;
mod ddl;
mod files;
mod grants;
pub mod kafka;
mod session;
mod subscriptions;
mod table_writes;
mod transaction;
mod users;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::SessionState;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::prelude::SessionConfig;

use crate::catalog::{self, CATALOG_NAME, Catalog, CatalogData, PUBLIC_SCHEMA};
use crate::engine::{Engine, EngineConfig};
use crate::error::{Error, Result};
use crate::groups::Groups;
use crate::ingest::copy::CopyFormat;
use crate::ingest::writer::RowWriter;
use crate::sql::{self, Statement};
use crate::storage::{FlushPolicy, Hold, Log, LogConfig, TopicId};
use crate::tables::pg::PgTypes;
use crate::tables::provider::RunnelCatalog;
use crate::tables::text_table::TextTableFactory;
use crate::tables::{Continuous, Tables};
pub use continuous::PushRows;
use files::{FileUse, ServerFiles};
pub use session::{Described, Session};
use transaction::{Block, Transaction};

/// Settings of a database, from the server's configuration.
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub data_dir: PathBuf,
    /// `COPY` and `INSERT … SELECT` commit atomically up to about this many bytes of input,
    /// and in chunks of that size beyond it.
    pub copy_chunk_bytes: u64,
    /// Threads a query may use.
    pub target_partitions: usize,
    pub retention_check_interval: std::time::Duration,
    /// Per partition, bytes beyond the retention limits kept for readers that lag.
    pub max_retention_hold_bytes: u64,
    /// When appended records are fsynced.
    pub flush: FlushPolicy,
    pub engine: EngineConfig,
    /// Clients log in with passwords (otherwise any name may log in, and a name the catalog
    /// does not have is a superuser, as with PostgreSQL's `trust`).
    pub password_auth: bool,
    /// Server files that SQL may read or write must be under this directory.
    pub file_root: Option<PathBuf>,
    /// Bytes queries may hold at once ([`crate::memory`]).
    pub memory_limit: u64,
    /// Tiered storage (`--object-store`), if on.
    pub tier: Option<crate::storage::tiered::TierConfig>,
}

impl DbConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> DbConfig {
        DbConfig {
            data_dir: data_dir.into(),
            copy_chunk_bytes: 256 * 1024 * 1024,
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            retention_check_interval: std::time::Duration::from_secs(30),
            max_retention_hold_bytes: crate::storage::DEFAULT_MAX_HOLD_BYTES,
            flush: FlushPolicy::Always,
            engine: EngineConfig::default(),
            password_auth: false,
            file_root: None,
            memory_limit: crate::memory::default_memory_limit(),
            tier: None,
        }
    }
}

pub const DEFAULT_PARTITIONS: u32 = 1;
/// File formats of `CREATE EXTERNAL TABLE … STORED AS`.
pub const EXTERNAL_FORMATS: [&str; 5] = ["CSV", "JSON", "PARQUET", "ARROW", "TEXT"];
pub const MAX_PARTITIONS: u32 = 10_000;
pub const DEFAULT_SEGMENT_BYTES: u64 = 1024 * 1024 * 1024;
/// A table's segment size unless configured: smaller than a stream's, so that compaction,
/// which rewrites only sealed segments, keeps a table near the size of its rows.
pub const TABLE_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

pub struct Database {
    tables: Arc<Tables>,
    /// Idempotent Kafka producers' ids and sequences.
    producers: crate::producers::Producers,
    /// Which server files SQL may touch.
    files: ServerFiles,
    state: SessionState,
    config: DbConfig,
    engine: Arc<Engine>,
    /// Sessions started so far (each is numbered, as a backend's pid).
    sessions: std::sync::atomic::AtomicU32,
    /// Clients connected now, per front end.
    connections: crate::metrics::Connections,
}

/// What a statement produced.
pub enum Output {
    Rows(SendableRecordBatchStream),
    /// A command and, for those that report one, its row count (`INSERT 0 n`, `COPY n`).
    Command {
        tag: &'static str,
        rows: Option<u64>,
    },
    /// The client should now send `COPY` data with this many columns.
    CopyIn {
        columns: usize,
        format: CopyFormat,
    },
    /// A push query's rows, epoch by epoch, until its `LIMIT` or a cancel.
    Push(Box<PushRows>),
    /// `COPY … TO STDOUT`: the rows, sent as COPY data.
    CopyOut {
        rows: SendableRecordBatchStream,
        options: crate::ingest::copy::CopyOptions,
    },
    /// The rows of a `FETCH`.
    Fetched {
        schema: SchemaRef,
        rows: Vec<RecordBatch>,
    },
    /// A cursor was declared; the session is in a transaction block now.
    Declared,
    Begin,
    Commit,
    Rollback,
    /// A query of no statement (only comments), which PostgreSQL answers with
    /// EmptyQueryResponse (pg_restore sends its dump's leading comments as one).
    Empty,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Rows(s) => write!(f, "Rows({:?})", s.schema()),
            Output::Command { tag, rows } => write!(f, "Command({tag}, {rows:?})"),
            Output::CopyIn { columns, format } => write!(f, "CopyIn({columns}, {format:?})"),
            Output::Push(p) => write!(f, "Push({:?})", p.schema()),
            Output::CopyOut { rows, .. } => write!(f, "CopyOut({:?})", rows.schema()),
            Output::Fetched { rows, .. } => write!(f, "Fetched({} batches)", rows.len()),
            Output::Declared => write!(f, "Declared"),
            Output::Empty => write!(f, "Empty"),
            Output::Begin => write!(f, "Begin"),
            Output::Commit => write!(f, "Commit"),
            Output::Rollback => write!(f, "Rollback"),
        }
    }
}

fn command(tag: &'static str) -> Output {
    Output::Command { tag, rows: None }
}

impl Database {
    /// Opens (creating if needed) the data directory, recovering the log to its last commit.
    pub async fn open(config: DbConfig) -> Result<Arc<Database>> {
        Database::open_then(config, || Ok(())).await
    }

    /// Opens the database, calling `locked` once its directory is locked (this server's
    /// own), before recovery: what listens while it recovers starts there.
    pub async fn open_then(
        config: DbConfig,
        locked: impl FnOnce() -> Result<()>,
    ) -> Result<Arc<Database>> {
        let mut log_config = LogConfig::new(&config.data_dir);
        log_config.retention_check_interval = config.retention_check_interval;
        log_config.max_hold_bytes = config.max_retention_hold_bytes;
        log_config.flush = config.flush;
        log_config.tier = match &config.tier {
            Some(tier) => Some(crate::storage::tiered::Tier::connect(tier.clone())?),
            None => None,
        };
        // Locked and read, nothing changed yet: the catalog says which topics to recover.
        let opening = Log::begin_open(log_config)?;
        locked()?;
        let loaded = catalog::Loaded::read(&opening)?;
        let specs = loaded
            .data
            .topics
            .values()
            .map(|t| loaded.data.topic_spec(t))
            .collect();
        let issued = TopicId(loaded.data.next_topic_id);
        let log = Arc::new(opening.open(specs, issued)?);
        let catalog = Arc::new(Catalog::open(loaded, log.clone()).await?);
        let tables = Arc::new(Tables {
            catalog,
            writer: Arc::new(RowWriter::new(log.clone())),
            groups: Groups::new(log.clone()),
            log,
            external: Default::default(),
            insert_chunk_bytes: config.copy_chunk_bytes as usize,
            copies: Default::default(),
        });
        let pg_types = PgTypes::load().await?;
        let runtime = crate::memory::runtime(&config.data_dir, config.memory_limit)?;
        // The engine plans its queries with the session state, whose catalog reads views
        // and query statuses from the engine: the catalog holds it weakly.
        let engine = Arc::new_cyclic(|engine: &Weak<Engine>| {
            let continuous: Weak<dyn Continuous> = engine.clone();
            let state = session_state(
                &tables,
                continuous,
                &pg_types,
                runtime,
                config.target_partitions,
            );
            let engine_config = EngineConfig {
                trusted_logins: !config.password_auth,
                ..config.engine.clone()
            };
            Engine::new(tables.clone(), state, engine_config)
        });
        let files = ServerFiles::new(&config.data_dir, config.file_root.as_deref())?;
        let db = Arc::new(Database {
            producers: crate::producers::Producers::new(tables.log.clone()),
            files,
            state: engine.base().clone(),
            tables,
            config,
            engine,
            sessions: Default::default(),
            connections: Default::default(),
        });
        let weak = Arc::downgrade(&db);
        db.tables.log.set_hold_source(Arc::new(move || {
            weak.upgrade().map(|db| db.holds()).unwrap_or_default()
        }));
        db.restore_external_tables().await;
        db.engine.start_all().await?;
        Ok(db)
    }

    /// What readers still need, for retention to keep: every continuous query's input from
    /// its checkpoint on, and every consumer group's (SQL subscription or Kafka group) topics
    /// from its committed offsets on. (Beyond the limits, a hold keeps at most
    /// `--max-retention-hold-bytes` per partition.)
    fn holds(&self) -> Vec<Hold> {
        let data = self.tables.catalog.snapshot();
        let mut holds = self.engine.holds(&data);
        for committed in self.tables.groups.all() {
            let holder = if data.subscriptions.contains_key(&committed.group) {
                format!("subscription {}", committed.group)
            } else {
                format!("consumer group {}", committed.group)
            };
            holds.extend(
                committed
                    .offsets
                    .iter()
                    .map(|(&(topic, partition), &offset)| Hold {
                        topic,
                        partition,
                        offset,
                        holder: holder.clone(),
                        // Consumers of a compacted topic read each key's latest record, as
                        // in Kafka.
                        waits: false,
                    }),
            );
        }
        holds
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.tables.catalog
    }

    /// The catalog, the log and what SQL reads of them.
    pub fn tables(&self) -> &Arc<Tables> {
        &self.tables
    }

    /// Every continuous query, as `sys.queries` shows it.
    pub fn query_statuses(&self) -> Vec<crate::tables::QueryStatus> {
        crate::tables::Continuous::statuses(self.engine.as_ref())
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.tables.log
    }

    /// Clients connected now, per front end.
    pub fn connections(&self) -> &crate::metrics::Connections {
        &self.connections
    }

    /// The bytes queries hold now in the memory pool, and its limit.
    pub fn memory_pool_use(&self) -> (usize, u64) {
        let reserved = self.state.runtime_env().memory_pool.reserved();
        (reserved, self.config.memory_limit)
    }

    pub fn session(self: &Arc<Self>) -> Session {
        let number = 1 + self
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut session = Session {
            number,
            db: self.clone(),
            state: self.state.clone(),
            vars: BTreeMap::new(),
            copy: None,
            notices: vec![],
            cursors: BTreeMap::new(),
            transaction: Transaction::Idle,
            block: Block::default(),
            user: None,
            deallocated: vec![],
            prepared: BTreeMap::new(),
        };
        session.publish_settings();
        session
    }

    /// Stops the continuous queries (each after its current epoch), finishes every write
    /// already queued and stops the log.
    pub async fn shutdown(&self) {
        self.engine.shutdown().await;
        let log = self.tables.log.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || log.shutdown()).await {
            tracing::error!(error = %e, "stopping the log");
        }
    }

    /// Recreates the providers of external tables from their SQL.
    async fn restore_external_tables(&self) {
        let data = self.tables.catalog.snapshot();
        for table in data.external_tables.values() {
            let result = async {
                let statement = sql::parse(&table.sql)?
                    .pop()
                    .ok_or_else(|| Error::Internal("empty".into()))?;
                let Statement::DataFusion(statement) = statement else {
                    return Err(Error::Internal("not a CREATE EXTERNAL TABLE".into()));
                };
                let plan = sql::plan(&self.state, *statement, &CatalogData::default()).await?;
                let LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)) = plan else {
                    return Err(Error::Internal("not a CREATE EXTERNAL TABLE".into()));
                };
                self.external_provider(&self.state, &cmd).await
            }
            .await;
            match result {
                Ok(provider) => {
                    self.tables
                        .external
                        .write()
                        .expect("lock")
                        .insert(table.name.clone(), provider);
                }
                Err(e) => {
                    tracing::error!(table = %table.name, error = %e, "external table unavailable")
                }
            }
        }
    }

    async fn external_provider(
        &self,
        state: &SessionState,
        cmd: &datafusion::logical_expr::CreateExternalTable,
    ) -> Result<Arc<dyn datafusion::datasource::TableProvider>> {
        let file_type = cmd.file_type.to_uppercase();
        let factory = state
            .table_factories()
            .get(file_type.as_str())
            .filter(|_| EXTERNAL_FORMATS.contains(&file_type.as_str()))
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "STORED AS {file_type} is not supported ({})",
                    EXTERNAL_FORMATS.join(", ")
                ))
            })?;
        Ok(factory.create(state, cmd).await?)
    }
}

/// The session state every session starts from: DataFusion's defaults, the catalog `runnel`
/// and `pg_catalog`.
fn session_state(
    tables: &Arc<Tables>,
    continuous: Weak<dyn Continuous>,
    pg_types: &PgTypes,
    runtime: Arc<RuntimeEnv>,
    target_partitions: usize,
) -> SessionState {
    let mut session_config = SessionConfig::new()
        // Runnel serves `information_schema` itself (`tables::information_schema`).
        .with_information_schema(false)
        .with_default_catalog_and_schema(CATALOG_NAME, PUBLIC_SCHEMA)
        .with_create_default_catalog_and_schema(false)
        .with_target_partitions(target_partitions);
    // A session's `TimeZone` (UTC until it sets one): `now()` and `timestamptz` values are
    // in it, as in PostgreSQL.
    session_config.options_mut().execution.time_zone = Some("UTC".into());
    // Numeric literals are `numeric`, exact, as in PostgreSQL (`sql::numeric`).
    session_config
        .options_mut()
        .sql_parser
        .parse_float_as_decimal = true;
    let state = SessionStateBuilder::new()
        .with_config(session_config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_optimizer_rules(optimizer_rules())
        .with_table_factory("TEXT".into(), Arc::new(TextTableFactory))
        .with_analyzer_rules(analyzer_rules())
        .with_physical_optimizer_rule(Arc::new(sql::overflow::CheckedArithmetic))
        .with_query_planner(Arc::new(sql::planner::RunnelPlanner))
        .build();
    let mut state = state;
    for udf in sql::functions::udfs() {
        datafusion::execution::FunctionRegistry::register_udf(&mut state, Arc::new(udf))
            .expect("registering a scalar function cannot fail");
    }
    for udaf in sql::functions::udafs() {
        datafusion::execution::FunctionRegistry::register_udaf(&mut state, Arc::new(udaf))
            .expect("registering an aggregate function cannot fail");
    }
    for rewrite in sql::functions::rewrites() {
        datafusion::execution::FunctionRegistry::register_function_rewrite(&mut state, rewrite)
            .expect("registering a rewrite cannot fail");
    }
    datafusion::execution::FunctionRegistry::register_expr_planner(
        &mut state,
        Arc::new(sql::functions::json::JsonOperators),
    )
    .expect("registering an expression planner cannot fail");
    state.register_udtf("nexmark", Arc::new(crate::tables::nexmark::NexmarkFunction));
    state.catalog_list().register_catalog(
        CATALOG_NAME.into(),
        Arc::new(RunnelCatalog::new(tables.clone(), continuous)),
    );
    let state = crate::tables::pg::install(state, tables.clone(), pg_types)
        .expect("pg_catalog installs into a new catalog");
    // pg_catalog's planner of `regclass` & co. sets itself as the type planner; Runnel's
    // `json`, `jsonb` and `uuid` go first.
    let state = SessionStateBuilder::new_from_existing(state)
        .with_type_planner(Arc::new(TypePlanners(vec![
            Arc::new(sql::functions::typed_text::TextTypes),
            Arc::new(datafusion_pg_catalog::pg_catalog::oid_type_planner::PgOidTypePlanner),
        ])))
        .build();
    let catalogs = state.catalog_list();
    if let Some(catalog) = catalogs.catalog(CATALOG_NAME) {
        catalog
            .register_schema(
                crate::tables::information_schema::INFORMATION_SCHEMA,
                Arc::new(crate::tables::information_schema::InformationSchema::new(
                    catalogs,
                    tables.clone(),
                )),
            )
            .expect("information_schema registers into a new catalog");
    }
    state
}

/// Type planners tried in turn.
#[derive(Debug)]
struct TypePlanners(Vec<Arc<dyn datafusion::logical_expr::planner::TypePlanner>>);

impl datafusion::logical_expr::planner::TypePlanner for TypePlanners {
    fn plan_type_field(
        &self,
        sql_type: &datafusion::sql::sqlparser::ast::DataType,
    ) -> datafusion::common::Result<Option<arrow::datatypes::FieldRef>> {
        for planner in &self.0 {
            if let Some(field) = planner.plan_type_field(sql_type)? {
                return Ok(Some(field));
            }
        }
        Ok(None)
    }
}

/// DataFusion's analyzer rules, after Runnel's casts to `json`, `jsonb` and `uuid` (which type coercion
/// then fits), then its comparison of intervals as spans, its rounding casts to integers and
/// its check of constant integer arithmetic (which need the types coercion settles).
fn analyzer_rules() -> Vec<Arc<dyn datafusion::optimizer::AnalyzerRule + Send + Sync>> {
    let mut rules = datafusion::optimizer::Analyzer::new().rules;
    rules.insert(0, Arc::new(sql::functions::typed_text::TextCasts));
    let coercion = rules
        .iter()
        .position(|r| r.name() == "type_coercion")
        .unwrap_or(rules.len());
    // PostgreSQL's numeric types, in the order each needs the one before.
    let numeric: [Arc<dyn datafusion::optimizer::AnalyzerRule + Send + Sync>; 4] = [
        Arc::new(sql::numeric::UnconstrainedNumeric),
        Arc::new(sql::numeric::IntegerLiterals),
        Arc::new(sql::numeric::FloatsOverNumeric),
        Arc::new(sql::numeric::DivisionScale),
    ];
    rules.splice(coercion..coercion, numeric);
    rules.push(Arc::new(sql::intervals::IntervalComparisons));
    rules.push(Arc::new(sql::rounding::RoundingCasts));
    rules.push(Arc::new(sql::overflow::CheckedConstants));
    rules
}

/// DataFusion's logical optimizer rules, with Runnel's decorrelation of the scalar
/// subqueries DataFusion's own rule leaves.
fn optimizer_rules() -> Vec<Arc<dyn datafusion::optimizer::OptimizerRule + Send + Sync>> {
    let mut rules = datafusion::optimizer::Optimizer::new().rules;
    let after = rules
        .iter()
        .position(|r| r.name() == sql::decorrelate::AFTER)
        .map_or(rules.len(), |i| i + 1);
    rules.insert(
        after,
        Arc::new(sql::decorrelate::DecorrelateScalarAggregates),
    );
    rules
}

/// Columns of `SHOW STREAMS`, `SHOW TOPICS` and `DESCRIBE`; the extended protocol describes
/// them before they run.
pub const SHOW_STREAMS_COLUMNS: [&str; 6] = [
    "name",
    "topic",
    "partitions",
    "key",
    "value_format",
    "timestamp",
];
pub const SHOW_TOPICS_COLUMNS: [&str; 6] = [
    "name",
    "stream",
    "partitions",
    "compression",
    "retention",
    "retention_bytes",
];
pub const DESCRIBE_COLUMNS: [&str; 3] = ["name", "type", "extra"];

/// The schema of a result of text columns.
fn text_schema(names: &[&str]) -> SchemaRef {
    Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ))
}

/// A small result of text columns, given row by row.
fn text_rows(names: &[&str], rows: Vec<Vec<Option<String>>>) -> Result<Output> {
    let schema = text_schema(names);
    let columns: Vec<ArrayRef> = (0..names.len())
        .map(|c| Arc::new(StringArray::from_iter(rows.iter().map(|r| r[c].as_deref()))) as ArrayRef)
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Output::Rows(Box::pin(
        MemoryStream::try_new(vec![batch], schema, None).map_err(Error::from_datafusion)?,
    )))
}
