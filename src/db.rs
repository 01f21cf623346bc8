//! The one door in: a [`Database`] opened on a data directory, and [`Session`]s that run SQL.
//!
//! Front ends (pgwire today) hand SQL text and `COPY` data to a session and get back
//! [`Output`]s; nothing below this module knows which protocol a request came from.
//! DDL is coordinated here: the log creates or deletes a topic's files and the catalog
//! commit makes the change real, in an order that leaves nothing half-made after a crash
//! (files first on create, catalog first on drop; leftovers are removed at start-up).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::common::ParamValues;
use datafusion::dataframe::DataFrame;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, WriteOp};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::Statement as DfStatement;
use futures::StreamExt;

use crate::catalog::provider::{CATALOG_NAME, PUBLIC_SCHEMA, RunnelCatalog, Tables, WRITE_SCHEMA};
use crate::catalog::stream_table::{HIDDEN_COLUMNS, StatementSnapshot};
use crate::catalog::text_table::TextTableFactory;
use crate::catalog::{
    Catalog, CatalogData, ColumnDef, ExternalTableDef, Relation, SqlType, StreamDef, TopicDef,
    VALUE_COLUMN, ValueFormat, WatermarkDef, validate_name,
};
use crate::error::{Error, Result};
use crate::ingest::WriteTarget;
use crate::ingest::copy::{CopyColumn, CopyDecoder, CopyFormat, RawRows};
use crate::ingest::writer::{PendingWrite, RowWriter, now_ms};
use crate::sql::parser::{CopyFrom, CreateStream, CreateTopic, Drop, ObjectKind, OptionValue};
use crate::sql::{self, Statement};
use crate::storage::{Compression, KEY_COLUMN, Log, LogConfig, TopicId};

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
}

impl DbConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> DbConfig {
        DbConfig {
            data_dir: data_dir.into(),
            copy_chunk_bytes: 256 * 1024 * 1024,
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            retention_check_interval: std::time::Duration::from_secs(30),
        }
    }
}

pub const DEFAULT_PARTITIONS: u32 = 1;
pub const MAX_PARTITIONS: u32 = 10_000;
pub const DEFAULT_SEGMENT_BYTES: u64 = 1024 * 1024 * 1024;

pub struct Database {
    tables: Arc<Tables>,
    state: SessionState,
    config: DbConfig,
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
    Begin,
    Commit,
    Rollback,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Rows(s) => write!(f, "Rows({:?})", s.schema()),
            Output::Command { tag, rows } => write!(f, "Command({tag}, {rows:?})"),
            Output::CopyIn { columns, format } => write!(f, "CopyIn({columns}, {format:?})"),
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
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| crate::storage::StorageError::io(dir, e))?;
        let catalog = Arc::new(Catalog::open(dir)?);
        let data = catalog.snapshot();
        let specs = data.topics.values().map(|t| data.topic_spec(t)).collect();
        let mut log_config = LogConfig::new(dir);
        log_config.retention_check_interval = config.retention_check_interval;
        let log = Arc::new(Log::open(log_config, specs)?);
        let tables = Arc::new(Tables {
            catalog,
            writer: Arc::new(RowWriter::new(log.clone())),
            log,
            external: Default::default(),
            insert_chunk_bytes: config.copy_chunk_bytes as usize,
        });
        let session_config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG_NAME, PUBLIC_SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_target_partitions(config.target_partitions);
        let state = SessionStateBuilder::new()
            .with_config(session_config)
            .with_default_features()
            .with_table_factory("TEXT".into(), Arc::new(TextTableFactory))
            .build();
        state.catalog_list().register_catalog(
            CATALOG_NAME.into(),
            Arc::new(RunnelCatalog::new(tables.clone())),
        );
        let db = Arc::new(Database {
            tables,
            state,
            config,
        });
        db.restore_external_tables().await;
        Ok(db)
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.tables.log
    }

    pub fn catalog(&self) -> CatalogSnapshot {
        CatalogSnapshot(self.tables.catalog.snapshot())
    }

    pub fn session(self: &Arc<Self>) -> Session {
        Session {
            db: self.clone(),
            state: self.state.clone(),
            vars: BTreeMap::new(),
            copy: None,
            notices: vec![],
        }
    }

    /// Finishes every write already queued and stops the log.
    pub fn shutdown(&self) {
        self.tables.log.shutdown();
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
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "STORED AS {file_type} is not supported (CSV, PARQUET, JSON, TEXT, ARROW, AVRO)"
                ))
            })?;
        Ok(factory.create(state, cmd).await?)
    }

    async fn create_stream(&self, c: CreateStream, notices: &mut Vec<String>) -> Result<Output> {
        if c.query.is_some() {
            return Err(Error::Unsupported(
                "CREATE STREAM … AS SELECT (a continuous query) is not supported yet".into(),
            ));
        }
        validate_name("stream", &c.name)?;
        if c.columns.is_empty() {
            return Err(Error::plan(
                "42601",
                format!("stream \"{}\" needs at least one column", c.name),
            ));
        }
        let mut columns: Vec<ColumnDef> = vec![];
        for spec in &c.columns {
            if HIDDEN_COLUMNS.contains(&spec.name.as_str()) {
                return Err(Error::plan(
                    "42701",
                    format!(
                        "column name \"{}\" conflicts with a system column name",
                        spec.name
                    ),
                ));
            }
            if columns.iter().any(|c| c.name == spec.name) {
                return Err(Error::plan(
                    "42701",
                    format!("column \"{}\" specified more than once", spec.name),
                ));
            }
            columns.push(ColumnDef {
                name: spec.name.clone(),
                sql_type: spec.sql_type,
                nullable: spec.nullable,
            });
        }
        let key_columns: Vec<String> = c
            .columns
            .iter()
            .filter(|c| c.key)
            .map(|c| c.name.clone())
            .collect();
        let mut options = TopicOptions::parse(&c.options, &["value_format", "timestamp", "topic"])?;
        let value_format = match options.take("value_format") {
            None => ValueFormat::Json,
            Some(v) => ValueFormat::parse(v.as_text()).ok_or_else(|| {
                Error::data(
                    "22023",
                    format!("invalid value_format \"{}\" (json, csv, raw)", v.as_text()),
                )
            })?,
        };
        let column_type = |name: &str, what: &str| -> Result<SqlType> {
            columns
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.sql_type)
                .ok_or_else(|| {
                    Error::plan(
                        "42703",
                        format!(
                            "{what} column \"{name}\" does not exist in stream \"{}\"",
                            c.name
                        ),
                    )
                })
        };
        let timestamp_column = match options.take("timestamp") {
            None => None,
            Some(v) => {
                let name = v.as_text().to_string();
                let t = column_type(&name, "timestamp")?;
                if !matches!(
                    t,
                    SqlType::Timestamp | SqlType::TimestampTz | SqlType::Date | SqlType::BigInt
                ) {
                    return Err(Error::plan(
                        "42804",
                        format!(
                            "timestamp column \"{name}\" is {t}; it must be a timestamp, date or bigint (ms since the epoch)"
                        ),
                    ));
                }
                Some(name)
            }
        };
        let watermark = match &c.watermark {
            None => None,
            Some((column, expression)) => {
                let t = column_type(column, "watermark")?;
                if !matches!(t, SqlType::Timestamp | SqlType::TimestampTz) {
                    return Err(Error::plan(
                        "42804",
                        format!("watermark column \"{column}\" is {t}; it must be a timestamp"),
                    ));
                }
                Some(WatermarkDef {
                    column: column.clone(),
                    expression: expression.clone(),
                })
            }
        };
        if value_format == ValueFormat::Raw {
            let values: Vec<&ColumnDef> = columns
                .iter()
                .filter(|c| !key_columns.contains(&c.name))
                .collect();
            if values.len() != 1 || !matches!(values[0].sql_type, SqlType::Text | SqlType::Bytea) {
                return Err(Error::data(
                    "22023",
                    "value_format 'raw' needs exactly one non-KEY column, of type text or bytea",
                ));
            }
        }
        let topic_name = match options.take("topic") {
            Some(v) => v.as_text().to_string(),
            None => c.name.clone(),
        };
        validate_name("topic", &topic_name)?;

        let _ddl = self.tables.catalog.ddl_lock().await;
        let data = self.tables.catalog.snapshot();
        if let Some(existing) = data.relation(&c.name) {
            if c.if_not_exists {
                notices.push(format!(
                    "{} \"{}\" already exists, skipping",
                    kind_name(&existing),
                    c.name
                ));
                return Ok(command("CREATE STREAM"));
            }
            return Err(Error::AlreadyExists(format!(
                "{} \"{}\" already exists",
                kind_name(&existing),
                c.name
            )));
        }
        if data.topics.contains_key(&topic_name) {
            return Err(Error::AlreadyExists(format!(
                "topic \"{topic_name}\" already exists"
            )));
        }
        let mut new = (*data).clone();
        let topic = options.topic_def(
            TopicId(new.next_topic_id),
            &topic_name,
            Some(c.name.clone()),
        );
        new.next_topic_id += 1;
        new.streams.insert(
            c.name.clone(),
            StreamDef {
                name: c.name.clone(),
                topic: topic_name.clone(),
                columns,
                key_columns,
                value_format,
                timestamp_column,
                watermark,
            },
        );
        new.topics.insert(topic_name, topic.clone());
        self.create_topic_files(&new, &topic).await?;
        self.commit_or_undo(new, topic.id).await?;
        Ok(command("CREATE STREAM"))
    }

    async fn create_topic(&self, c: CreateTopic, notices: &mut Vec<String>) -> Result<Output> {
        validate_name("topic", &c.name)?;
        let options = TopicOptions::parse(&c.options, &[])?;
        let _ddl = self.tables.catalog.ddl_lock().await;
        let data = self.tables.catalog.snapshot();
        let taken = data
            .relation(&c.name)
            .map(|r| kind_name(&r))
            .or(data.topics.contains_key(&c.name).then_some("topic"));
        if let Some(kind) = taken {
            if c.if_not_exists {
                notices.push(format!("{kind} \"{}\" already exists, skipping", c.name));
                return Ok(command("CREATE TOPIC"));
            }
            return Err(Error::AlreadyExists(format!(
                "{kind} \"{}\" already exists",
                c.name
            )));
        }
        let mut new = (*data).clone();
        let topic = options.topic_def(TopicId(new.next_topic_id), &c.name, None);
        new.next_topic_id += 1;
        new.topics.insert(c.name.clone(), topic.clone());
        self.create_topic_files(&new, &topic).await?;
        self.commit_or_undo(new, topic.id).await?;
        Ok(command("CREATE TOPIC"))
    }

    async fn create_topic_files(&self, data: &CatalogData, topic: &TopicDef) -> Result<()> {
        self.tables.log.create_topic(data.topic_spec(topic)).await?;
        Ok(())
    }

    /// Commits a catalog with a new topic; if that fails, removes the topic's files.
    async fn commit_or_undo(&self, data: CatalogData, topic: TopicId) -> Result<()> {
        if let Err(e) = self.tables.catalog.commit(data) {
            if let Err(undo) = self.tables.log.drop_topic(topic).await {
                tracing::error!(error = %undo, "removing the files of a topic whose creation failed");
            }
            return Err(e);
        }
        Ok(())
    }

    async fn create_external_table(
        &self,
        state: &SessionState,
        cmd: &datafusion::logical_expr::CreateExternalTable,
        sql: String,
        notices: &mut Vec<String>,
    ) -> Result<Output> {
        let name = cmd.name.table().to_string();
        if let Some(schema) = cmd.name.schema()
            && schema != PUBLIC_SCHEMA
        {
            return Err(Error::plan(
                "3F000",
                format!("schema \"{schema}\" does not exist"),
            ));
        }
        let provider = self.external_provider(state, cmd).await?;
        let _ddl = self.tables.catalog.ddl_lock().await;
        let data = self.tables.catalog.snapshot();
        if let Some(existing) = data.relation(&name) {
            if cmd.if_not_exists {
                notices.push(format!(
                    "{} \"{name}\" already exists, skipping",
                    kind_name(&existing)
                ));
                return Ok(command("CREATE EXTERNAL TABLE"));
            }
            return Err(Error::AlreadyExists(format!(
                "{} \"{name}\" already exists",
                kind_name(&existing)
            )));
        }
        let mut new = (*data).clone();
        new.external_tables.insert(
            name.clone(),
            ExternalTableDef {
                name: name.clone(),
                sql,
            },
        );
        self.tables.catalog.commit(new)?;
        self.tables
            .external
            .write()
            .expect("lock")
            .insert(name, provider);
        Ok(command("CREATE EXTERNAL TABLE"))
    }

    async fn drop_objects(&self, d: Drop, notices: &mut Vec<String>) -> Result<Output> {
        let tag = match d.kind {
            ObjectKind::Stream => "DROP STREAM",
            ObjectKind::Topic => "DROP TOPIC",
            ObjectKind::Table => "DROP TABLE",
        };
        let _ddl = self.tables.catalog.ddl_lock().await;
        let data = self.tables.catalog.snapshot();
        let mut new = (*data).clone();
        let mut doomed_topics = vec![];
        let mut doomed_tables = vec![];
        for name in &d.names {
            let wrong = |kind: &str, verb: &str| {
                Error::plan(
                    "42809",
                    format!(
                        "\"{name}\" is a {kind}, not a {}; use {verb}",
                        d.kind.name().to_lowercase()
                    ),
                )
            };
            match d.kind {
                ObjectKind::Stream => match data.relation(name) {
                    Some(Relation::Stream(stream, topic)) => {
                        new.streams.remove(&stream.name);
                        new.topics.remove(&topic.name);
                        doomed_topics.push(topic.id);
                    }
                    Some(Relation::Topic(_)) => return Err(wrong("topic", "DROP TOPIC")),
                    Some(Relation::External(_)) => return Err(wrong("table", "DROP TABLE")),
                    None if d.if_exists => {
                        notices.push(format!("stream \"{name}\" does not exist, skipping"))
                    }
                    None => {
                        return Err(Error::UnknownRelation(format!(
                            "stream \"{name}\" does not exist"
                        )));
                    }
                },
                ObjectKind::Topic => match data.topics.get(name) {
                    Some(topic) => {
                        if let Some(stream) = &topic.stream {
                            return Err(Error::Dependent(format!(
                                "topic \"{name}\" holds the records of stream \"{stream}\"; use DROP STREAM {stream}"
                            )));
                        }
                        new.topics.remove(name);
                        doomed_topics.push(topic.id);
                    }
                    None if d.if_exists => {
                        notices.push(format!("topic \"{name}\" does not exist, skipping"))
                    }
                    None => {
                        return Err(Error::UnknownRelation(format!(
                            "topic \"{name}\" does not exist"
                        )));
                    }
                },
                ObjectKind::Table => match data.relation(name) {
                    Some(Relation::External(table)) => {
                        new.external_tables.remove(&table.name);
                        doomed_tables.push(table.name.clone());
                    }
                    Some(Relation::Stream(..)) => return Err(wrong("stream", "DROP STREAM")),
                    Some(Relation::Topic(_)) => return Err(wrong("topic", "DROP TOPIC")),
                    None if d.if_exists => {
                        notices.push(format!("table \"{name}\" does not exist, skipping"))
                    }
                    None => {
                        return Err(Error::UnknownRelation(format!(
                            "table \"{name}\" does not exist"
                        )));
                    }
                },
            }
        }
        self.tables.catalog.commit(new)?;
        for name in doomed_tables {
            self.tables.external.write().expect("lock").remove(&name);
        }
        for id in doomed_topics {
            // The catalog no longer has the topic; if deleting its files fails now, start-up
            // removes them.
            if let Err(e) = self.tables.log.drop_topic(id).await {
                tracing::warn!(topic = %id, error = %e, "deleting a dropped topic's files");
            }
        }
        Ok(command(tag))
    }

    fn show_streams(&self) -> Result<Output> {
        let data = self.tables.catalog.snapshot();
        let streams: Vec<&StreamDef> = data.streams.values().collect();
        let topic = |s: &StreamDef| &data.topics[&s.topic];
        rows(vec![
            (
                "name",
                strings(streams.iter().map(|s| Some(s.name.clone()))),
            ),
            (
                "topic",
                strings(streams.iter().map(|s| Some(s.topic.clone()))),
            ),
            (
                "partitions",
                strings(
                    streams
                        .iter()
                        .map(|s| Some(topic(s).partitions.to_string())),
                ),
            ),
            (
                "key",
                strings(
                    streams
                        .iter()
                        .map(|s| (!s.key_columns.is_empty()).then(|| s.key_columns.join(", "))),
                ),
            ),
            (
                "value_format",
                strings(
                    streams
                        .iter()
                        .map(|s| Some(s.value_format.name().to_string())),
                ),
            ),
            (
                "timestamp",
                strings(streams.iter().map(|s| s.timestamp_column.clone())),
            ),
        ])
    }

    fn show_topics(&self) -> Result<Output> {
        let data = self.tables.catalog.snapshot();
        let topics: Vec<&TopicDef> = data.topics.values().collect();
        rows(vec![
            ("name", strings(topics.iter().map(|t| Some(t.name.clone())))),
            ("stream", strings(topics.iter().map(|t| t.stream.clone()))),
            (
                "partitions",
                strings(topics.iter().map(|t| Some(t.partitions.to_string()))),
            ),
            (
                "compression",
                strings(
                    topics
                        .iter()
                        .map(|t| Some(t.compression.name().to_string())),
                ),
            ),
            (
                "retention",
                strings(topics.iter().map(|t| t.retention_ms.map(format_ms))),
            ),
            (
                "retention_bytes",
                strings(
                    topics
                        .iter()
                        .map(|t| t.retention_bytes.map(|b| b.to_string())),
                ),
            ),
        ])
    }

    async fn describe(&self, name: &str) -> Result<Output> {
        let data = self.tables.catalog.snapshot();
        let relation = data
            .relation(name)
            .ok_or_else(|| Error::UnknownRelation(format!("relation \"{name}\" does not exist")))?;
        let mut lines: Vec<(String, String, String)> = vec![];
        let topic = match &relation {
            Relation::Stream(stream, topic) => {
                for c in &stream.columns {
                    let mut extra = vec![];
                    if stream.key_columns.contains(&c.name) {
                        extra.push("key".to_string());
                    }
                    if !c.nullable {
                        extra.push("not null".to_string());
                    }
                    if stream.timestamp_column.as_ref() == Some(&c.name) {
                        extra.push("record timestamp".to_string());
                    }
                    if let Some(w) = stream.watermark.as_ref().filter(|w| w.column == c.name) {
                        extra.push(format!("watermark {}", w.expression));
                    }
                    lines.push((c.name.clone(), c.sql_type.to_string(), extra.join(", ")));
                }
                for (column, t) in [
                    ("_partition", "integer"),
                    ("_offset", "bigint"),
                    ("_timestamp", "timestamp"),
                    ("_key", "bytea"),
                ] {
                    lines.push((column.into(), t.into(), "hidden".into()));
                }
                Some(*topic)
            }
            Relation::Topic(topic) => {
                lines.push((KEY_COLUMN.into(), "bytea".into(), "key".into()));
                lines.push((VALUE_COLUMN.into(), "bytea".into(), String::new()));
                for (column, t) in [
                    ("_partition", "integer"),
                    ("_offset", "bigint"),
                    ("_timestamp", "timestamp"),
                ] {
                    lines.push((column.into(), t.into(), "hidden".into()));
                }
                Some(*topic)
            }
            Relation::External(table) => {
                let provider = self
                    .tables
                    .external
                    .read()
                    .expect("lock")
                    .get(&table.name)
                    .cloned();
                if let Some(provider) = provider {
                    for f in provider.schema().fields() {
                        lines.push((f.name().clone(), f.data_type().to_string(), String::new()));
                    }
                }
                lines.push((
                    "(definition)".into(),
                    table.sql.clone(),
                    "external table".into(),
                ));
                None
            }
        };
        if let Some(topic) = topic {
            let stream = data.stream_of_topic(topic);
            let mut options = vec![
                ("topic", topic.name.clone()),
                ("partitions", topic.partitions.to_string()),
            ];
            if let Some(stream) = stream {
                options.push(("value_format", stream.value_format.name().to_string()));
                if let Some(ts) = &stream.timestamp_column {
                    options.push(("timestamp", ts.clone()));
                }
            }
            options.push(("compression", topic.compression.name().to_string()));
            options.push((
                "retention",
                topic.retention_ms.map_or("forever".to_string(), format_ms),
            ));
            if let Some(b) = topic.retention_bytes {
                options.push(("retention_bytes", b.to_string()));
            }
            options.push(("segment_bytes", topic.segment_bytes.to_string()));
            for (k, v) in options {
                lines.push((k.to_string(), v, "option".to_string()));
            }
        }
        rows(vec![
            ("name", strings(lines.iter().map(|l| Some(l.0.clone())))),
            ("type", strings(lines.iter().map(|l| Some(l.1.clone())))),
            ("extra", strings(lines.iter().map(|l| Some(l.2.clone())))),
        ])
    }
}

/// A read-only view of the catalog, for front ends and tests.
pub struct CatalogSnapshot(pub Arc<CatalogData>);

fn kind_name(relation: &Relation<'_>) -> &'static str {
    match relation {
        Relation::Stream(..) => "stream",
        Relation::Topic(_) => "topic",
        Relation::External(_) => "table",
    }
}

fn format_ms(ms: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (604_800_000, "week"),
        (86_400_000, "day"),
        (3_600_000, "hour"),
        (60_000, "minute"),
        (1000, "second"),
    ];
    for (size, unit) in UNITS {
        if ms >= size && ms.is_multiple_of(size) {
            let n = ms / size;
            return format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
        }
    }
    format!("{ms} ms")
}

/// Parses a duration such as `'7 days'`, `'1 hour 30 minutes'`, `'500ms'`, or a number of ms.
/// `None` for `-1` / `'forever'` (no limit).
fn parse_duration_ms(text: &str) -> Result<Option<u64>> {
    let bad = || {
        Error::data(
            "22007",
            format!("invalid duration \"{text}\" (for example '7 days', '12 hours', '30 s')"),
        )
    };
    let t = text.trim().to_ascii_lowercase();
    if t == "-1" || t == "forever" || t == "infinite" || t == "none" {
        return Ok(None);
    }
    if let Ok(ms) = t.parse::<u64>() {
        return Ok(Some(ms));
    }
    let mut total: u64 = 0;
    let mut rest = t.as_str();
    let mut any = false;
    while !rest.trim().is_empty() {
        rest = rest.trim_start();
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let ms = match unit {
            "ms" | "millisecond" | "milliseconds" => 1,
            "s" | "sec" | "secs" | "second" | "seconds" => 1000,
            "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
            "h" | "hour" | "hours" => 3_600_000,
            "d" | "day" | "days" => 86_400_000,
            "w" | "week" | "weeks" => 604_800_000,
            _ => return Err(bad()),
        };
        total = total
            .checked_add(n.checked_mul(ms).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        any = true;
    }
    if any { Ok(Some(total)) } else { Err(bad()) }
}

/// `WITH (…)` options that configure a topic, plus the stream-only ones the caller takes.
struct TopicOptions {
    partitions: u32,
    compression: Compression,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    segment_bytes: u64,
    rest: BTreeMap<String, OptionValue>,
}

impl TopicOptions {
    fn parse(options: &[(String, OptionValue)], extra: &[&str]) -> Result<TopicOptions> {
        let mut out = TopicOptions {
            partitions: DEFAULT_PARTITIONS,
            compression: Compression::None,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            rest: BTreeMap::new(),
        };
        let number = |key: &str, v: &OptionValue| -> Result<i64> {
            v.as_text().parse::<i64>().map_err(|_| {
                Error::data(
                    "22023",
                    format!(
                        "option {key} must be a whole number, not \"{}\"",
                        v.as_text()
                    ),
                )
            })
        };
        let mut seen = std::collections::HashSet::new();
        for (key, value) in options {
            if !seen.insert(key.clone()) {
                return Err(Error::plan(
                    "42601",
                    format!("option {key} given more than once"),
                ));
            }
            match key.as_str() {
                "partitions" => {
                    let n = number(key, value)?;
                    if n < 1 || n > MAX_PARTITIONS as i64 {
                        return Err(Error::data(
                            "22023",
                            format!("partitions must be between 1 and {MAX_PARTITIONS}, not {n}"),
                        ));
                    }
                    out.partitions = n as u32;
                }
                "compression" => {
                    out.compression = Compression::parse(value.as_text()).ok_or_else(|| {
                        Error::data(
                            "22023",
                            format!(
                                "invalid compression \"{}\" (none, lz4, zstd)",
                                value.as_text()
                            ),
                        )
                    })?;
                }
                "retention" | "retention_ms" => {
                    out.retention_ms = match value {
                        OptionValue::Number(n) if key == "retention_ms" || n.starts_with('-') => {
                            parse_duration_ms(n)?
                        }
                        other => parse_duration_ms(other.as_text())?,
                    };
                }
                "retention_bytes" => {
                    let n = number(key, value)?;
                    out.retention_bytes = if n < 0 { None } else { Some(n as u64) };
                }
                "segment_bytes" => {
                    let n = number(key, value)?;
                    if n < 4096 {
                        return Err(Error::data(
                            "22023",
                            format!("segment_bytes must be at least 4096, not {n}"),
                        ));
                    }
                    out.segment_bytes = n as u64;
                }
                k if extra.contains(&k) => {
                    out.rest.insert(key.clone(), value.clone());
                }
                _ => {
                    let mut known = vec![
                        "partitions",
                        "compression",
                        "retention",
                        "retention_bytes",
                        "segment_bytes",
                    ];
                    known.extend_from_slice(extra);
                    return Err(Error::data(
                        "22023",
                        format!("unknown option \"{key}\" (known: {})", known.join(", ")),
                    ));
                }
            }
        }
        Ok(out)
    }

    fn take(&mut self, key: &str) -> Option<OptionValue> {
        self.rest.remove(key)
    }

    fn topic_def(&self, id: TopicId, name: &str, stream: Option<String>) -> TopicDef {
        TopicDef {
            id,
            name: name.to_string(),
            partitions: self.partitions,
            compression: self.compression,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            segment_bytes: self.segment_bytes,
            stream,
            created_at_ms: now_ms(),
        }
    }
}

fn strings(values: impl Iterator<Item = Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(values))
}

/// A small result set of text columns.
fn rows(columns: Vec<(&str, ArrayRef)>) -> Result<Output> {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Output::Rows(Box::pin(
        MemoryStream::try_new(vec![batch], schema, None).map_err(Error::from_datafusion)?,
    )))
}

/// An in-progress `COPY … FROM STDIN`.
///
/// The connection's task splits input into rows; typing and partitioning them runs on
/// blocking threads, at most [`COPY_TYPING_AHEAD`] batches ahead, so a large `COPY` uses a
/// second core. Results are merged in input order.
struct CopyIn {
    started: std::time::Instant,
    target: WriteTarget,
    decoder: CopyDecoder,
    typing: std::collections::VecDeque<tokio::task::JoinHandle<Result<PendingWrite>>>,
    pending: PendingWrite,
    input_since_commit: u64,
    committed_rows: u64,
}

const COPY_TYPING_AHEAD: usize = 2;

impl CopyIn {
    async fn type_rows(&mut self, rows: RawRows, writer: &Arc<RowWriter>) -> Result<()> {
        while self.typing.len() >= COPY_TYPING_AHEAD {
            self.merge_oldest().await?;
        }
        let target = self.target.clone();
        let writer = writer.clone();
        self.typing.push_back(tokio::task::spawn_blocking(move || {
            let mut pending = PendingWrite::default();
            writer.stage(&target, &rows.typed()?, &mut pending)?;
            Ok(pending)
        }));
        Ok(())
    }

    async fn merge_oldest(&mut self) -> Result<()> {
        let handle = self.typing.pop_front().expect("something is being typed");
        let typed = handle
            .await
            .map_err(|e| Error::Internal(format!("typing COPY rows: {e}")))??;
        self.pending.extend(typed);
        Ok(())
    }

    /// Waits for every batch being typed; afterwards `pending` holds all input so far.
    async fn settle(&mut self) -> Result<()> {
        while !self.typing.is_empty() {
            self.merge_oldest().await?;
        }
        Ok(())
    }
}

/// What a prepared statement takes and returns, for the extended protocol's Describe.
#[derive(Debug, Clone)]
pub struct Described {
    /// Types of `$1`, `$2`, … (`None` where the query does not determine one).
    pub parameters: Vec<Option<DataType>>,
    /// Columns of the rows it returns; `None` if it returns none.
    pub schema: Option<SchemaRef>,
}

/// One client's session: its settings and any `COPY` in progress.
pub struct Session {
    db: Arc<Database>,
    state: SessionState,
    vars: BTreeMap<String, String>,
    copy: Option<CopyIn>,
    notices: Vec<String>,
}

/// PostgreSQL settings clients ask for, with the values Runnel behaves by.
const DEFAULT_VARS: [(&str, &str); 14] = [
    ("application_name", ""),
    ("client_encoding", "UTF8"),
    ("datestyle", "ISO, MDY"),
    ("default_transaction_isolation", "read committed"),
    ("extra_float_digits", "1"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("search_path", "public"),
    ("server_encoding", "UTF8"),
    ("server_version", crate::SERVER_VERSION),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("timezone", "UTC"),
    ("transaction_isolation", "read committed"),
];

impl Session {
    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }

    /// Notices raised by the statements run since the last call (e.g. `IF EXISTS` skips).
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// Runs every statement of `sql` in order, stopping at the first error (which is the
    /// last element).
    pub async fn execute(&mut self, sql: &str) -> Vec<Result<Output>> {
        if self.copy.is_none()
            && let Some((name, literals)) = sql::literal_insert::scan(sql)
            && let Ok(name) = sql::parser::relation_name_parts(&name)
            && let Some(output) = self.insert_literals(&name, &literals).await
        {
            return vec![output];
        }
        let statements = match sql::parse(sql) {
            Ok(s) => s,
            Err(e) => return vec![Err(e)],
        };
        let mut out = vec![];
        for statement in statements {
            let result = self.run(statement, None).await;
            let failed = result.is_err();
            out.push(result);
            if failed {
                break;
            }
        }
        out
    }

    /// Runs one statement with parameter values (the extended protocol's Execute).
    pub async fn execute_one(&mut self, sql: &str, params: ParamValues) -> Result<Output> {
        let mut statements = sql::parse(sql)?;
        if statements.len() != 1 {
            return Err(Error::Syntax(
                "cannot insert multiple commands into a prepared statement".into(),
            ));
        }
        self.run(statements.pop().expect("one"), Some(params)).await
    }

    /// What a statement takes and returns, without running it (the extended protocol's
    /// Parse and Describe).
    pub async fn describe(&mut self, sql: &str) -> Result<Described> {
        let mut statements = sql::parse(sql)?;
        if statements.len() != 1 {
            return Err(Error::Syntax(
                "cannot insert multiple commands into a prepared statement".into(),
            ));
        }
        let text = |names: &[&str]| {
            Some(Arc::new(Schema::new(
                names
                    .iter()
                    .map(|n| Field::new(*n, DataType::Utf8, true))
                    .collect::<Vec<_>>(),
            )))
        };
        let schema = match statements.pop().expect("one") {
            Statement::ShowStreams => text(&[
                "name",
                "topic",
                "partitions",
                "key",
                "value_format",
                "timestamp",
            ]),
            Statement::ShowTopics => text(&[
                "name",
                "stream",
                "partitions",
                "compression",
                "retention",
                "retention_bytes",
            ]),
            Statement::Describe(_) => text(&["name", "type", "extra"]),
            Statement::ShowVariable(name) => {
                if name == "all" {
                    text(&["name", "setting"])
                } else {
                    text(&[name.as_str()])
                }
            }
            Statement::DataFusion(statement) => {
                let catalog = self.db.tables.catalog.snapshot();
                let plan = sql::plan(&self.state, *statement, &catalog).await?;
                let parameters = parameter_types(&plan)?;
                let schema = match &plan {
                    LogicalPlan::Ddl(_)
                    | LogicalPlan::Dml(_)
                    | LogicalPlan::Copy(_)
                    | LogicalPlan::Statement(_) => None,
                    _ => Some(Arc::new(plan.schema().as_arrow().clone())),
                };
                return Ok(Described { parameters, schema });
            }
            _ => None,
        };
        Ok(Described {
            parameters: vec![],
            schema,
        })
    }

    async fn run(&mut self, statement: Statement, params: Option<ParamValues>) -> Result<Output> {
        if self.copy.is_some() {
            return Err(Error::Protocol("a COPY is in progress".into()));
        }
        let db = self.db.clone();
        match statement {
            Statement::CreateStream(c) => db.create_stream(c, &mut self.notices).await,
            Statement::CreateTopic(c) => db.create_topic(c, &mut self.notices).await,
            Statement::Drop(d) => db.drop_objects(d, &mut self.notices).await,
            Statement::ShowStreams => db.show_streams(),
            Statement::ShowTopics => db.show_topics(),
            Statement::Describe(name) => db.describe(&name).await,
            Statement::CopyFrom(c) => self.start_copy(c),
            Statement::Set { name, value } => self.set(name, value),
            Statement::ShowVariable(name) => self.show(&name),
            Statement::Begin => Ok(Output::Begin),
            Statement::Commit => Ok(Output::Commit),
            Statement::Rollback => Ok(Output::Rollback),
            Statement::DataFusion(statement) => self.run_datafusion(*statement, params).await,
        }
    }

    async fn run_datafusion(
        &mut self,
        statement: DfStatement,
        params: Option<ParamValues>,
    ) -> Result<Output> {
        if params.is_none()
            && let DfStatement::Statement(s) = &statement
            && let sqlparser::ast::Statement::Insert(insert) = s.as_ref()
            && let sqlparser::ast::TableObject::TableName(name) = &insert.table
            && let Ok(name) = sql::parser::relation_name(name)
            && let Some(literals) = crate::ingest::values::LiteralInsert::from_ast(insert)
            && let Some(output) = self.insert_literals(&name, &literals).await
        {
            return output;
        }
        let definition =
            matches!(statement, DfStatement::CreateExternalTable(_)).then(|| statement.to_string());
        let mut state = self.state.clone();
        state.mark_start_execution(); // now() and friends: one instant per statement
        state
            .config_mut()
            .set_extension(Arc::new(StatementSnapshot(self.db.tables.log.snapshot())));
        let catalog = self.db.tables.catalog.snapshot();
        let mut plan = sql::plan(&state, statement, &catalog).await?;
        if let Some(params) = params {
            plan = plan.with_param_values(params)?;
        }
        match &plan {
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)) => {
                let sql = definition.expect("a CREATE EXTERNAL TABLE statement");
                return self
                    .db
                    .create_external_table(&state, cmd, sql, &mut self.notices)
                    .await;
            }
            LogicalPlan::Ddl(ddl) => {
                return Err(Error::Unsupported(format!(
                    "{} is not supported: Runnel stores streams (CREATE STREAM) and reads files (CREATE EXTERNAL TABLE)",
                    ddl.name()
                )));
            }
            LogicalPlan::Dml(dml) => {
                if !matches!(dml.op, WriteOp::Insert(_)) {
                    return Err(Error::Unsupported(format!(
                        "{} is not supported: streams are append-only",
                        dml.op.name()
                    )));
                }
                // The rewrite points inserts into streams and topics at the write schema;
                // anything else is a file (external table), which SQL never writes.
                if dml.table_name.schema() != Some(WRITE_SCHEMA) {
                    return Err(Error::Unsupported(format!(
                        "cannot insert into \"{}\": external tables are read-only; write files with COPY (query) TO 'file'",
                        dml.table_name.table()
                    )));
                }
                let rows = count(DataFrame::new(state, plan)).await?;
                return Ok(Output::Command {
                    tag: "INSERT",
                    rows: Some(rows),
                });
            }
            LogicalPlan::Copy(_) => {
                let rows = count(DataFrame::new(state, plan)).await?;
                return Ok(Output::Command {
                    tag: "COPY",
                    rows: Some(rows),
                });
            }
            LogicalPlan::Statement(s) => {
                return Err(Error::Unsupported(format!("{} is not supported", s.name())));
            }
            _ => {}
        }
        let stream = DataFrame::new(state, plan).execute_stream().await?;
        Ok(Output::Rows(stream))
    }

    /// `INSERT INTO stream VALUES` of plain literals, written without a query plan; `None`
    /// when the statement needs planning.
    async fn insert_literals(
        &self,
        name: &str,
        insert: &crate::ingest::values::LiteralInsert<'_>,
    ) -> Option<Result<Output>> {
        let data = self.db.tables.catalog.snapshot();
        let relation = data.relation(name)?;
        let target = WriteTarget::of(&data, &relation)?;
        let types: Vec<SqlType> = match &relation {
            Relation::Stream(stream, _) => stream.columns.iter().map(|c| c.sql_type).collect(),
            _ => vec![SqlType::Bytea, SqlType::Bytea],
        };
        let rows = match crate::ingest::values::literal_rows(insert, &target, &types)? {
            Ok(rows) => rows,
            Err(e) => return Some(Err(e)),
        };
        let writer = &self.db.tables.writer;
        let mut pending = PendingWrite::default();
        let result = async {
            writer.stage(&target, &rows, &mut pending)?;
            let rows = writer.commit(pending).await?;
            Ok(Output::Command {
                tag: "INSERT",
                rows: Some(rows),
            })
        };
        Some(result.await)
    }

    fn set(&mut self, name: String, value: Option<String>) -> Result<Output> {
        if name.starts_with("datafusion.") {
            let value = value.ok_or_else(|| {
                Error::Unsupported("RESET of datafusion settings is not supported".into())
            })?;
            self.state
                .config_mut()
                .options_mut()
                .set(&name, &value)
                .map_err(Error::from_datafusion)?;
            return Ok(command("SET"));
        }
        if name == "all" && value.is_none() {
            self.vars.clear();
            return Ok(command("RESET"));
        }
        match value {
            Some(v) => {
                self.vars.insert(name, v);
                Ok(command("SET"))
            }
            None => {
                self.vars.remove(&name);
                Ok(command("RESET"))
            }
        }
    }

    fn variable(&self, name: &str) -> Option<String> {
        let name = match name {
            "transaction isolation level" => "transaction_isolation",
            other => other,
        };
        if let Some(v) = self.vars.get(name) {
            return Some(v.clone());
        }
        if name.starts_with("datafusion.") {
            return self
                .state
                .config_options()
                .entries()
                .into_iter()
                .find(|e| e.key == name)
                .map(|e| e.value.unwrap_or_default());
        }
        DEFAULT_VARS
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    fn show(&self, name: &str) -> Result<Output> {
        if name == "all" {
            let mut all: BTreeMap<String, String> = DEFAULT_VARS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            all.extend(self.vars.clone());
            return rows(vec![
                ("name", strings(all.keys().map(|k| Some(k.clone())))),
                ("setting", strings(all.values().map(|v| Some(v.clone())))),
            ]);
        }
        let value = self.variable(name).ok_or_else(|| {
            Error::plan(
                "42704",
                format!("unrecognized configuration parameter \"{name}\""),
            )
        })?;
        rows(vec![(name, strings(std::iter::once(Some(value))))])
    }

    fn start_copy(&mut self, c: CopyFrom) -> Result<Output> {
        let data = self.db.tables.catalog.snapshot();
        let relation = data.relation(&c.target).ok_or_else(|| {
            Error::UnknownRelation(format!("relation \"{}\" does not exist", c.target))
        })?;
        let target = WriteTarget::of(&data, &relation).ok_or_else(|| {
            Error::plan(
                "42809",
                format!(
                    "cannot COPY into external table \"{}\"; it is read-only",
                    c.target
                ),
            )
        })?;
        let types: Vec<SqlType> = match &relation {
            Relation::Stream(stream, _) => stream.columns.iter().map(|c| c.sql_type).collect(),
            _ => vec![SqlType::Bytea, SqlType::Bytea],
        };
        let names: Vec<String> = target
            .row_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let mut columns = vec![];
        if c.columns.is_empty() {
            for (index, name) in names.iter().enumerate() {
                columns.push(CopyColumn {
                    name: name.clone(),
                    sql_type: types[index],
                    index,
                });
            }
        } else {
            for name in &c.columns {
                let index = names.iter().position(|n| n == name).ok_or_else(|| {
                    Error::plan(
                        "42703",
                        format!(
                            "column \"{name}\" of relation \"{}\" does not exist",
                            c.target
                        ),
                    )
                })?;
                if columns.iter().any(|c: &CopyColumn| c.index == index) {
                    return Err(Error::plan(
                        "42701",
                        format!("column \"{name}\" specified more than once"),
                    ));
                }
                columns.push(CopyColumn {
                    name: name.clone(),
                    sql_type: types[index],
                    index,
                });
            }
        }
        let format = c.options.format;
        let count = columns.len();
        let decoder = CopyDecoder::new(&c.target, c.options, columns, target.row_schema.clone());
        self.copy = Some(CopyIn {
            started: std::time::Instant::now(),
            target,
            decoder,
            typing: Default::default(),
            pending: PendingWrite::default(),
            input_since_commit: 0,
            committed_rows: 0,
        });
        Ok(Output::CopyIn {
            columns: count,
            format,
        })
    }

    /// Takes a chunk of `COPY` data. On error the `COPY` is over and nothing of it that
    /// was not already committed in an earlier chunk is written.
    pub async fn copy_data(&mut self, data: &[u8]) -> Result<()> {
        let result = self.copy_data_inner(data).await;
        if result.is_err() {
            self.copy = None;
        }
        result
    }

    async fn copy_data_inner(&mut self, data: &[u8]) -> Result<()> {
        let chunk = self.db.config.copy_chunk_bytes;
        let writer = self.db.tables.writer.clone();
        let copy = self
            .copy
            .as_mut()
            .ok_or_else(|| Error::Protocol("COPY data without a COPY".into()))?;
        for rows in copy.decoder.push(data)? {
            copy.type_rows(rows, &writer).await?;
        }
        copy.input_since_commit += copy.decoder.take_input_bytes();
        if copy.input_since_commit > chunk {
            if let Some(rows) = copy.decoder.take_rows() {
                copy.type_rows(rows, &writer).await?;
            }
            copy.settle().await?;
            copy.committed_rows += writer.commit(std::mem::take(&mut copy.pending)).await?;
            copy.input_since_commit = 0;
        }
        Ok(())
    }

    /// Ends `COPY` input: commits what is left and returns the row count.
    pub async fn copy_done(&mut self) -> Result<Output> {
        let mut copy = self
            .copy
            .take()
            .ok_or_else(|| Error::Protocol("COPY done without a COPY".into()))?;
        let writer = self.db.tables.writer.clone();
        for rows in copy.decoder.finish()? {
            copy.type_rows(rows, &writer).await?;
        }
        copy.settle().await?;
        let typed = copy.started.elapsed();
        let rows = copy.committed_rows + writer.commit(copy.pending).await?;
        tracing::debug!(
            stream = %copy.target.relation,
            rows,
            read_ms = typed.as_millis() as u64,
            total_ms = copy.started.elapsed().as_millis() as u64,
            "COPY committed"
        );
        Ok(Output::Command {
            tag: "COPY",
            rows: Some(rows),
        })
    }

    /// The client abandoned the `COPY`: nothing not already committed is written.
    pub fn copy_fail(&mut self) {
        self.copy = None;
    }
}

/// Runs a plan that returns one row with a `count` column (INSERT, COPY … TO).
async fn count(frame: DataFrame) -> Result<u64> {
    let mut stream = frame.execute_stream().await?;
    let mut total = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if batch.num_columns() > 0 && batch.num_rows() > 0 {
            total += batch
                .column(0)
                .as_primitive::<UInt64Type>()
                .values()
                .iter()
                .sum::<u64>();
        }
    }
    Ok(total)
}

fn parameter_types(plan: &LogicalPlan) -> Result<Vec<Option<DataType>>> {
    let types = plan.get_parameter_types().map_err(Error::from_datafusion)?;
    let mut out = vec![None; types.len()];
    for (name, t) in types {
        let index: usize = name
            .trim_start_matches('$')
            .parse()
            .map_err(|_| Error::Unsupported(format!("named parameter {name}; use $1, $2, …")))?;
        if index == 0 || index > out.len() {
            return Err(Error::Syntax(format!(
                "parameters must be numbered $1 to ${}",
                out.len()
            )));
        }
        out[index - 1] = t;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_kafka_and_spark_users_write_them() {
        assert_eq!(parse_duration_ms("7 days").unwrap(), Some(7 * 86_400_000));
        assert_eq!(
            parse_duration_ms("1 hour 30 minutes").unwrap(),
            Some(5_400_000)
        );
        assert_eq!(parse_duration_ms("500ms").unwrap(), Some(500));
        assert_eq!(parse_duration_ms("60000").unwrap(), Some(60_000));
        assert_eq!(parse_duration_ms("forever").unwrap(), None);
        assert_eq!(
            parse_duration_ms("7 fortnights").unwrap_err().sqlstate(),
            "22007"
        );
        assert_eq!(format_ms(7 * 86_400_000), "1 week");
        assert_eq!(format_ms(2 * 86_400_000), "2 days");
    }
}
