//! The catalog: streams, topics, views, queries, subscriptions and users, durable across
//! crashes.
//!
//! The whole catalog is one JSON document (versioned by `format_version`), committed through
//! the commit log as a metadata value under [`CATALOG_KEY`]: a DDL statement is one commit
//! record, holding the new catalog together with whatever else the statement changes (a
//! query's first checkpoint, a subscription's offsets), checksummed like every record. So
//! the catalog, the log and the offsets can never disagree, and there is no second file that
//! could go missing on its own. DDL statements are serialised by [`Catalog::ddl_lock`];
//! readers take an immutable snapshot.
//!
//! Relation names (streams, schemaless topics, external tables) share one namespace, as
//! tables do in a PostgreSQL schema. Topic names have their own namespace, as in Kafka: a
//! stream `clicks` is backed by a topic, by default also named `clicks`.
//!
//! This module is metadata only. How these objects look to SQL — table providers, scans,
//! sinks, system tables — is [`crate::tables`], a layer above it.

pub mod access;
pub mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use arrow::datatypes::{DataType, Field, Fields, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::{
    self, Compression, Log, MetaUpdate, Opening, StorageError, TopicId, TopicSpec,
};
pub use access::{Access, ObjectClass, Principal, Privilege};
pub use types::SqlType;

const FORMAT_VERSION: u32 = 1;

/// The commit-log metadata key of the catalog (query checkpoints use their ids, from 1;
/// consumer groups keys with the top bit set).
pub const CATALOG_KEY: u64 = 0;

/// Where the catalog of the first storage format lived; imported into the commit log once.
const LEGACY_CATALOG_FILE: &str = "catalog.json";

/// The column a schemaless topic stores its record values in.
pub const VALUE_COLUMN: &str = "_value";

/// The catalog's name in SQL (`runnel.public.clicks`).
pub const CATALOG_NAME: &str = "runnel";
/// The schema holding streams, topics, views and external tables.
pub const PUBLIC_SCHEMA: &str = "public";
/// The schema of the system tables (`sys.queries`, …).
pub const SYS_SCHEMA: &str = "sys";
/// The unlisted schema of write targets: the planner points `INSERT INTO x` at `__write.x`.
pub const WRITE_SCHEMA: &str = "__write";

/// A record's partition, a hidden column of every stream.
pub const PARTITION_COLUMN: &str = "_partition";
/// A record's offset in its partition, a hidden column of every stream.
pub const OFFSET_COLUMN: &str = "_offset";
/// A table's records carry this trailing value column: true in a tombstone (a deleted
/// key), null in a row. Tables do not show it; Kafka clients see a tombstone's value as
/// null.
pub const TOMBSTONE_COLUMN: &str = "_deleted";
/// Hidden columns of every stream, in the order they follow the declared columns.
pub const HIDDEN_COLUMNS: [&str; 5] = [
    PARTITION_COLUMN,
    OFFSET_COLUMN,
    storage::TIMESTAMP_COLUMN,
    storage::KEY_COLUMN,
    storage::HEADERS_COLUMN,
];

/// An identifier as PostgreSQL reads it: folded to lower case unless quoted.
pub fn normalize(ident: &sqlparser::ast::Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    pub sql_type: SqlType,
    pub nullable: bool,
}

/// How a stream's records are encoded at the edges (COPY … FORMAT default, Kafka produce and
/// fetch). The log itself always stores Arrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueFormat {
    Json,
    Csv,
    Raw,
}

impl ValueFormat {
    pub fn parse(s: &str) -> Option<ValueFormat> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Some(ValueFormat::Json),
            "csv" | "delimited" => Some(ValueFormat::Csv),
            "raw" => Some(ValueFormat::Raw),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ValueFormat::Json => "json",
            ValueFormat::Csv => "csv",
            ValueFormat::Raw => "raw",
        }
    }
}

/// `WATERMARK FOR column AS expression`, kept as written for the continuous query engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkDef {
    pub column: String,
    pub expression: String,
    /// `watermark_idle_timeout`: how long a partition read to its end may stay quiet
    /// before it stops holding the watermark back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// For a derived stream that emits on window close: the watermark is its query's, not
    /// one read from the rows (see [`Inherited`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherited: Option<Inherited>,
}

/// The watermark of a stream written by a query that emits windows on close. Every row
/// that query appends later belongs to a window it has not closed yet, so its watermark
/// bounds them: a query reading the stream takes the writer's watermark, as committed with
/// the rows it has read, plus `shift_micros` (the column is `window_end`: +1 µs, as later
/// windows end after it; `window_start`: 1 µs less the window's size), rather than the rows'
/// greatest times, which partitions and quiet keys would hold back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inherited {
    pub query: QueryId,
    pub shift_micros: i64,
}

/// What a stream's records mean.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    /// An append-only log of events.
    #[default]
    Stream,
    /// The latest row per primary key (its KEY columns): a changelog of upserts and
    /// tombstones (see [`TOMBSTONE_COLUMN`]).
    Table,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "StreamKind::is_stream")]
    pub kind: StreamKind,
    /// Name of the topic holding the records.
    pub topic: String,
    pub columns: Vec<ColumnDef>,
    /// Names of the KEY columns, in declaration order.
    pub key_columns: Vec<String>,
    pub value_format: ValueFormat,
    /// Column whose value is the record timestamp; append time when `None`.
    pub timestamp_column: Option<String>,
    pub watermark: Option<WatermarkDef>,
    /// `late_data_topic`: the stream that rows continuous queries drop as late go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_data_topic: Option<String>,
    /// Its owner, and what others were granted on it.
    #[serde(default)]
    pub access: Access,
}

impl StreamDef {
    pub fn column(&self, name: &str) -> Option<(usize, &ColumnDef)> {
        self.columns
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == name)
    }

    /// The stream's declared columns as Arrow fields (what `INSERT` and `COPY` produce).
    pub fn value_fields(&self) -> Fields {
        self.columns
            .iter()
            .map(|c| c.sql_type.field(&c.name, c.nullable))
            .collect()
    }

    /// The value columns its records store: the declared ones, and a table's
    /// [`TOMBSTONE_COLUMN`]. A table's are all nullable, as its tombstones have no values
    /// (the write path checks NOT NULL on its rows).
    pub fn stored_fields(&self) -> Fields {
        if !self.is_table() {
            return self.value_fields();
        }
        let mut fields: Vec<Field> = self
            .value_fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        fields.push(Field::new(TOMBSTONE_COLUMN, DataType::Boolean, true));
        fields.into()
    }

    pub fn is_table(&self) -> bool {
        self.kind == StreamKind::Table
    }

    /// The name of a table's primary key constraint, as PostgreSQL names it.
    pub fn key_constraint(&self) -> String {
        format!("{}_pkey", self.name)
    }
}

impl StreamKind {
    fn is_stream(&self) -> bool {
        *self == StreamKind::Stream
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDef {
    pub id: TopicId,
    pub name: String,
    pub partitions: u32,
    pub compression: Compression,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub segment_bytes: u64,
    /// `compact` keeps the latest record of every key (a table's topic, unless made before
    /// tables were compacted); `delete` applies the retention limits.
    #[serde(default)]
    pub cleanup_policy: CleanupPolicy,
    /// How long a compacted topic keeps a tombstone (Kafka's `delete.retention.ms`);
    /// `None`: [`DEFAULT_DELETE_RETENTION_MS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_retention_ms: Option<u64>,
    /// The stream whose records this topic holds; `None` for a schemaless topic.
    pub stream: Option<String>,
    pub created_at_ms: i64,
    /// For a topic a continuous query keeps for itself (a materialized view's state
    /// changelog): the query, and the columns of its records. Such a topic is not a relation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal: Option<InternalTopic>,
    /// Its owner, and what others were granted on it.
    #[serde(default)]
    pub access: Access,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InternalTopic {
    pub query: QueryId,
    pub columns: arrow_schema::Fields,
}

/// What the log does with a topic's old records, by Kafka's `cleanup.policy` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CleanupPolicy {
    /// Deletes whole segments past the retention limits, if there are any.
    #[default]
    Delete,
    /// Keeps the latest record of every key; tombstones go after `delete_retention_ms`.
    Compact,
}

impl CleanupPolicy {
    pub fn parse(s: &str) -> Option<CleanupPolicy> {
        match s.to_ascii_lowercase().as_str() {
            "delete" => Some(CleanupPolicy::Delete),
            "compact" => Some(CleanupPolicy::Compact),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
        }
    }
}

/// How long a compacted topic keeps a tombstone unless configured: a day, as Kafka.
pub const DEFAULT_DELETE_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;

/// A duration in milliseconds as the options of `CREATE STREAM` take it (`7 days`).
pub fn format_ms(ms: u64) -> String {
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

impl CatalogData {
    /// What a stream, table or topic is made with beyond its columns, as `CREATE TABLE …
    /// WITH (…)` takes it (`pg_class.reloptions`, which pg_dump writes back): `stream=true`
    /// and its `key` and `watermark` for a stream, a table's `primary_key`, `topic=true` for
    /// a schemaless topic, then the options of its topic; a derived stream's as `CREATE
    /// STREAM … AS` takes them. Empty for other relations.
    pub fn storage_parameters(&self, name: &str) -> Vec<(&'static str, String)> {
        let (stream, topic) = match self.relation(name) {
            // A derived stream: `CREATE MATERIALIZED VIEW … WITH (stream = true, …) AS`
            // makes it again, with what `CREATE STREAM … AS` takes (its key and format
            // come from its query).
            Some(Relation::Stream(stream, topic)) if self.defining_query(name).is_some() => {
                let mut out = vec![("stream", "true".to_string())];
                out.extend(topic_options(topic, None));
                if let Some(ts) = &stream.timestamp_column {
                    out.push(("timestamp", ts.clone()));
                }
                return out;
            }
            Some(Relation::Stream(stream, topic)) => (stream, topic),
            Some(Relation::Topic(topic)) => {
                let mut out = vec![
                    ("topic", "true".to_string()),
                    ("partitions", topic.partitions.to_string()),
                ];
                topic_parameters(topic, &mut out);
                return out;
            }
            _ => return vec![],
        };
        let mut out = vec![];
        let keys = stream.key_columns.join(",");
        if stream.is_table() {
            if !keys.is_empty() {
                out.push(("primary_key", keys));
            }
        } else {
            out.push(("stream", "true".to_string()));
            if !keys.is_empty() {
                out.push(("key", keys));
            }
            if let Some(w) = stream.watermark.as_ref().filter(|w| w.inherited.is_none()) {
                out.push(("watermark", format!("{} AS {}", w.column, w.expression)));
                if let Some(ms) = w.idle_timeout_ms {
                    out.push(("watermark_idle_timeout", format_ms(ms)));
                }
            }
        }
        out.extend(topic_options(topic, Some(stream)));
        out
    }
}

/// The options of a stream's (or a view's) topic as `CREATE STREAM … WITH (…)` takes them,
/// from `topic` on: its name and partitions, the stream's record format, timestamp and
/// late-data stream, then the topic's own ([`topic_parameters`]).
pub fn topic_options(topic: &TopicDef, stream: Option<&StreamDef>) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("topic", topic.name.clone()),
        ("partitions", topic.partitions.to_string()),
    ];
    if let Some(stream) = stream {
        out.push(("value_format", stream.value_format.name().to_string()));
        if let Some(ts) = &stream.timestamp_column {
            out.push(("timestamp", ts.clone()));
        }
        if let Some(late) = &stream.late_data_topic {
            out.push(("late_data_topic", late.clone()));
        }
    }
    topic_parameters(topic, &mut out);
    out
}

/// A topic's options after `partitions`, as `CREATE TOPIC … WITH (…)` and a stream's take
/// them: `retention` only if it has one.
fn topic_parameters(topic: &TopicDef, out: &mut Vec<(&'static str, String)>) {
    out.push(("compression", topic.compression.name().to_string()));
    if let Some(ms) = topic.retention_ms {
        out.push(("retention", format_ms(ms)));
    }
    if let Some(b) = topic.retention_bytes {
        out.push(("retention_bytes", b.to_string()));
    }
    out.push(("segment_bytes", topic.segment_bytes.to_string()));
    out.push(("cleanup_policy", topic.cleanup_policy.name().to_string()));
    if topic.cleanup_policy == CleanupPolicy::Compact {
        let ms = topic
            .delete_retention_ms
            .unwrap_or(DEFAULT_DELETE_RETENTION_MS);
        out.push(("delete_retention", format_ms(ms)));
    }
}

/// A continuous query's identity; also the key of its checkpoint in the commit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QueryId(pub u64);

impl std::fmt::Display for QueryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a continuous query starts reading its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartPosition {
    #[default]
    Earliest,
    Latest,
}

/// What a continuous query maintains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum QueryTarget {
    /// `CREATE STREAM name AS SELECT`: a stream it creates and fills.
    Stream { stream: String },
    /// `CREATE MATERIALIZED VIEW name AS SELECT`: a view it keeps up to date.
    View { view: String },
    /// `INSERT INTO stream [(columns)] SELECT … EMIT CHANGES`: an existing stream it
    /// appends to; `columns` empty means all of them, in order.
    Insert {
        stream: String,
        columns: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryDef {
    pub id: QueryId,
    /// How `SHOW QUERIES` names it: the stream or view it maintains, or `insert_into_<stream>_<id>`.
    pub name: String,
    pub target: QueryTarget,
    /// The `SELECT`, as written.
    pub sql: String,
    /// The streams and topics it reads.
    pub inputs: Vec<String>,
    pub start: StartPosition,
    /// The internal topic it keeps its state in: the changelog of an aggregation's groups,
    /// or the rows of a view without one. `None` for a stateless query writing a stream.
    pub state_topic: Option<String>,
    /// A view of event-time windows: the internal topic its closed windows' rows are
    /// appended to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_topic: Option<String>,
    /// A chain of aggregates: the changelogs of its inner stages' groups, innermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inner_state_topics: Vec<String>,
    pub created_at_ms: i64,
    /// Whose rights it runs with: its creator's.
    #[serde(default = "superuser")]
    pub owner: String,
    /// When it emits its rows.
    #[serde(default)]
    pub emit: Emit,
    /// How its SQL is planned: as when it was made, which its output's columns follow.
    #[serde(flatten)]
    pub dialect: Dialect,
}

/// What an earlier version of Runnel planned otherwise: a continuous query keeps planning
/// its SQL as when it was made, so that its output keeps its columns' names and types
/// (and its state its layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dialect {
    /// Its columns are named as PostgreSQL names them (`count`, not `count(*)`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub postgres_names: bool,
    /// `avg` of integers is a `numeric`, as in PostgreSQL, not a `double precision`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub numeric_avg: bool,
}

impl Dialect {
    /// How this version plans a new query.
    pub const CURRENT: Dialect = Dialect {
        postgres_names: true,
        numeric_avg: true,
    };
}

/// When a continuous query emits rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Emit {
    /// Every epoch, the rows that changed (`EMIT CHANGES`, the default).
    #[default]
    Changes,
    /// Once per event-time window, its final rows, when the watermark passes its end
    /// (`EMIT ON WINDOW CLOSE`).
    OnWindowClose,
}

impl QueryDef {
    /// The stream or topic its output records go to (none for a view).
    pub fn output_stream(&self) -> Option<&str> {
        match &self.target {
            QueryTarget::Stream { stream } | QueryTarget::Insert { stream, .. } => Some(stream),
            QueryTarget::View { .. } => None,
        }
    }
}

/// A materialized view: the columns it shows, kept by a continuous query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewDef {
    pub name: String,
    pub query: QueryId,
    pub columns: arrow_schema::Fields,
    /// Its owner, and what others were granted on it.
    #[serde(default)]
    pub access: Access,
}

/// `CREATE EXTERNAL TABLE`, kept as its SQL and replayed at start-up.
/// `CREATE SUBSCRIPTION name FROM stream`: a consumer group reading one stream (or
/// schemaless topic). Its committed offsets are in the log, not here (see [`crate::groups`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionDef {
    pub name: String,
    /// The stream or topic it reads.
    pub relation: String,
    /// Where it started (`earliest`, `latest` or a timestamp), as given.
    pub start: String,
    pub created_at_ms: i64,
    /// Its owner, and what others were granted on it.
    #[serde(default)]
    pub access: Access,
}

/// A user and their SCRAM-SHA-256 verifier, as PostgreSQL stores it: the salt, the
/// iteration count, `StoredKey` and `ServerKey` (base64). From these a server can check a
/// password proof and prove itself, but nobody can log in or recover the password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDef {
    pub name: String,
    pub salt: String,
    pub iterations: u32,
    pub stored_key: String,
    pub server_key: String,
    pub created_at_ms: i64,
    /// May do anything, as PostgreSQL's superusers.
    #[serde(default)]
    pub superuser: bool,
    /// Predefined roles granted to them (`pg_read_server_files`, …).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub roles: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalTableDef {
    pub name: String,
    pub sql: String,
    /// Its owner, and what others were granted on it.
    #[serde(default)]
    pub access: Access,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogData {
    pub format_version: u32,
    pub next_topic_id: u64,
    pub topics: BTreeMap<String, TopicDef>,
    pub streams: BTreeMap<String, StreamDef>,
    pub external_tables: BTreeMap<String, ExternalTableDef>,
    #[serde(default = "first_query_id")]
    pub next_query_id: u64,
    #[serde(default)]
    pub queries: BTreeMap<QueryId, QueryDef>,
    #[serde(default)]
    pub views: BTreeMap<String, ViewDef>,
    /// Subscriptions (consumer groups), by name; their own namespace, as Kafka's group ids.
    #[serde(default)]
    pub subscriptions: BTreeMap<String, SubscriptionDef>,
    /// Users who may log in with a password (`--auth password`).
    #[serde(default)]
    pub users: BTreeMap<String, UserDef>,
    /// Who owns the schema `public`, and who may create objects in it.
    #[serde(default)]
    pub schema: Access,
}

fn first_query_id() -> u64 {
    1
}

fn superuser() -> String {
    access::SUPERUSER.to_string()
}

impl Default for CatalogData {
    fn default() -> CatalogData {
        CatalogData {
            format_version: FORMAT_VERSION,
            next_topic_id: 1,
            topics: BTreeMap::new(),
            streams: BTreeMap::new(),
            external_tables: BTreeMap::new(),
            next_query_id: first_query_id(),
            queries: BTreeMap::new(),
            views: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
            users: BTreeMap::new(),
            schema: Access::default(),
        }
    }
}

/// What a relation name refers to.
#[derive(Debug, Clone)]
pub enum Relation<'a> {
    Stream(&'a StreamDef, &'a TopicDef),
    /// A schemaless topic: columns `_key` and `_value`.
    Topic(&'a TopicDef),
    External(&'a ExternalTableDef),
    View(&'a ViewDef),
}

impl Relation<'_> {
    /// Its owner and grants.
    pub fn access(&self) -> &Access {
        match self {
            Relation::Stream(stream, _) => &stream.access,
            Relation::Topic(topic) => &topic.access,
            Relation::External(table) => &table.access,
            Relation::View(view) => &view.access,
        }
    }

    /// What PostgreSQL clients call it (`permission denied for stream clicks`).
    pub fn kind(&self) -> &'static str {
        match self {
            Relation::Stream(stream, _) if stream.is_table() => "table",
            Relation::Stream(..) => "stream",
            Relation::Topic(_) => "topic",
            Relation::External(_) => "external table",
            Relation::View(_) => "materialized view",
        }
    }
}

impl CatalogData {
    /// Who `user` is, and what they may do beyond grants. A name the catalog does not
    /// have is a superuser when logins are trusted (anyone may log in as anyone, as with
    /// PostgreSQL's `trust`), and has no rights at all otherwise.
    pub fn principal(&self, user: &str, trusted: bool) -> Principal {
        match self.users.get(user) {
            Some(u) => Principal {
                name: u.name.clone(),
                superuser: u.superuser || u.name == access::SUPERUSER,
                roles: u.roles.clone(),
            },
            None => Principal {
                name: user.to_string(),
                superuser: trusted,
                roles: BTreeSet::new(),
            },
        }
    }

    /// Every object with an owner and grants, named as messages name it (`stream clicks`):
    /// streams, schemaless topics, materialized views, external tables, subscriptions, and
    /// the schema `public`. (A stream's topic and a query's state topic are not objects of
    /// their own.)
    pub fn accesses(&self) -> Vec<(String, &Access)> {
        let mut out: Vec<(String, &Access)> = vec![];
        out.extend(
            self.streams
                .values()
                .map(|s| (format!("stream {}", s.name), &s.access)),
        );
        out.extend(
            self.topics
                .values()
                .filter(|t| t.stream.is_none() && t.internal.is_none())
                .map(|t| (format!("topic {}", t.name), &t.access)),
        );
        out.extend(
            self.views
                .values()
                .map(|v| (format!("materialized view {}", v.name), &v.access)),
        );
        out.extend(
            self.external_tables
                .values()
                .map(|t| (format!("external table {}", t.name), &t.access)),
        );
        out.extend(
            self.subscriptions
                .values()
                .map(|s| (format!("subscription {}", s.name), &s.access)),
        );
        out.push((format!("schema {PUBLIC_SCHEMA}"), &self.schema));
        out
    }

    /// [`CatalogData::accesses`], to change.
    pub fn accesses_mut(&mut self) -> Vec<(String, &mut Access)> {
        let CatalogData {
            streams,
            topics,
            views,
            external_tables,
            subscriptions,
            schema,
            ..
        } = self;
        let mut out: Vec<(String, &mut Access)> = vec![];
        out.extend(
            streams
                .values_mut()
                .map(|s| (format!("stream {}", s.name), &mut s.access)),
        );
        out.extend(
            topics
                .values_mut()
                .filter(|t| t.stream.is_none() && t.internal.is_none())
                .map(|t| (format!("topic {}", t.name), &mut t.access)),
        );
        out.extend(
            views
                .values_mut()
                .map(|v| (format!("materialized view {}", v.name), &mut v.access)),
        );
        out.extend(
            external_tables
                .values_mut()
                .map(|t| (format!("external table {}", t.name), &mut t.access)),
        );
        out.extend(
            subscriptions
                .values_mut()
                .map(|s| (format!("subscription {}", s.name), &mut s.access)),
        );
        out.push((format!("schema {PUBLIC_SCHEMA}"), schema));
        out
    }

    /// 42501 unless `who` may use `privilege` on relation `name` (which must exist).
    pub fn check(&self, who: &Principal, privilege: Privilege, name: &str) -> Result<()> {
        let relation = self
            .relation(name)
            .ok_or_else(|| Error::UnknownRelation(format!("relation \"{name}\" does not exist")))?;
        if relation.access().allows(who, privilege) {
            Ok(())
        } else {
            Err(access::denied(privilege, relation.kind(), name))
        }
    }

    /// 42501 unless `who` may create objects in the schema `public`.
    pub fn check_create(&self, who: &Principal) -> Result<()> {
        if self.schema.allows(who, Privilege::Create) {
            Ok(())
        } else {
            Err(access::denied(Privilege::Create, "schema", "public"))
        }
    }

    pub fn relation(&self, name: &str) -> Option<Relation<'_>> {
        if let Some(stream) = self.streams.get(name) {
            let topic = self
                .topics
                .get(&stream.topic)
                .expect("a stream's topic exists");
            return Some(Relation::Stream(stream, topic));
        }
        if let Some(topic) = self.topics.get(name)
            && topic.stream.is_none()
            && topic.internal.is_none()
        {
            return Some(Relation::Topic(topic));
        }
        if let Some(view) = self.views.get(name) {
            return Some(Relation::View(view));
        }
        self.external_tables.get(name).map(Relation::External)
    }

    /// The subscriptions reading `relation`.
    pub fn subscriptions_of(&self, relation: &str) -> Vec<&SubscriptionDef> {
        self.subscriptions
            .values()
            .filter(|s| s.relation == relation)
            .collect()
    }

    /// The continuous queries reading `relation`.
    pub fn readers_of(&self, relation: &str) -> Vec<&QueryDef> {
        self.queries
            .values()
            .filter(|q| q.inputs.iter().any(|i| i == relation))
            .collect()
    }

    /// The continuous query maintaining `relation` (a derived stream or a view), if any.
    pub fn query_maintaining(&self, relation: &str) -> Option<&QueryDef> {
        self.queries.values().find(|q| match &q.target {
            QueryTarget::Stream { stream } => stream == relation,
            QueryTarget::View { view, .. } => view == relation,
            QueryTarget::Insert { .. } => false,
        })
    }

    /// The query a relation is defined by: a materialized view's, or a derived stream's
    /// (`CREATE STREAM … AS`). `pg_class` shows both as materialized views, their queries
    /// as their definitions, which is how pg_dump writes them back.
    pub fn defining_query(&self, relation: &str) -> Option<&QueryDef> {
        match self.relation(relation)? {
            Relation::View(view) => self.queries.get(&view.query),
            Relation::Stream(..) => self
                .query_maintaining(relation)
                .filter(|q| matches!(q.target, QueryTarget::Stream { .. })),
            _ => None,
        }
    }

    /// Names of every relation, sorted.
    pub fn relation_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .streams
            .keys()
            .chain(
                self.topics
                    .values()
                    .filter(|t| t.stream.is_none() && t.internal.is_none())
                    .map(|t| &t.name),
            )
            .chain(self.views.keys())
            .chain(self.external_tables.keys())
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
    }

    pub fn stream_of_topic(&self, topic: &TopicDef) -> Option<&StreamDef> {
        topic.stream.as_ref().and_then(|s| self.streams.get(s))
    }

    /// The value columns the log stores for `topic`.
    pub fn value_fields(&self, topic: &TopicDef) -> Fields {
        if let Some(internal) = &topic.internal {
            return internal.columns.clone();
        }
        match self.stream_of_topic(topic) {
            Some(stream) => stream.stored_fields(),
            None => Fields::from(vec![Field::new(VALUE_COLUMN, DataType::Binary, true)]),
        }
    }

    pub fn storage_schema(&self, topic: &TopicDef) -> SchemaRef {
        storage::storage_schema(&self.value_fields(topic))
    }

    pub fn topic_spec(&self, topic: &TopicDef) -> TopicSpec {
        let schema = self.storage_schema(topic);
        let compaction = (topic.cleanup_policy == CleanupPolicy::Compact).then(|| {
            // A table's record deletes its key by its flag; a schemaless topic's by a null
            // value, as in Kafka; a stream's records never do.
            let tombstone = match self.stream_of_topic(topic) {
                _ if topic.internal.is_some() => None,
                Some(stream) if stream.is_table() => schema
                    .index_of(TOMBSTONE_COLUMN)
                    .ok()
                    .map(storage::Tombstone::Flag),
                Some(_) => None,
                None => schema
                    .index_of(VALUE_COLUMN)
                    .ok()
                    .map(storage::Tombstone::Null),
            };
            storage::Compaction {
                tombstone,
                delete_retention_ms: topic
                    .delete_retention_ms
                    .unwrap_or(DEFAULT_DELETE_RETENTION_MS),
            }
        });
        TopicSpec {
            compaction,
            id: topic.id,
            name: topic.name.clone(),
            partitions: topic.partitions,
            schema,
            compression: topic.compression,
            retention_ms: topic.retention_ms,
            retention_bytes: topic.retention_bytes,
            segment_bytes_max: topic.segment_bytes,
        }
    }
}

/// Checks a name that becomes a topic name (and a directory name): Kafka's rule, which
/// also keeps path characters out of the data directory.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let legal = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if !legal {
        return Err(Error::InvalidName(format!(
            "invalid {kind} name \"{name}\": names may contain only ASCII letters, digits, '_', '-' and '.' (at most 249), as Kafka topic names"
        )));
    }
    if is_reserved(name) {
        return Err(Error::plan(
            "42939",
            format!(
                "{kind} name \"{name}\" is reserved: names beginning with \"__\" are the server's own (query state, Kafka's internal topics), and \"{SYS_SCHEMA}\", \"pg_catalog\" and \"information_schema\" name its schemas"
            ),
        ));
    }
    Ok(())
}

/// Names users cannot give: the server's internal topics (`__state_…`, Kafka's
/// `__consumer_offsets`) and its schemas (alone or as a dotted prefix).
fn is_reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("__")
        || [SYS_SCHEMA, "pg_catalog", "information_schema"]
            .iter()
            .any(|schema| {
                lower == *schema
                    || lower
                        .strip_prefix(schema)
                        .is_some_and(|rest| rest.starts_with('.'))
            })
}

/// The durable catalog of a data directory.
pub struct Catalog {
    log: Arc<Log>,
    data: RwLock<Arc<CatalogData>>,
    ddl: tokio::sync::Mutex<()>,
}

/// The catalog a data directory's commit log holds, read before the log is opened (it names
/// the topics to recover).
pub struct Loaded {
    pub data: CatalogData,
    /// A first-format `catalog.json` this catalog came from, to commit and set aside.
    imported_from: Option<PathBuf>,
}

impl Loaded {
    /// Reads the catalog from `opening`. A commit log that has committed records but holds
    /// no catalog, or a catalog this build cannot read, refuses the start, naming the file:
    /// opening the log without its catalog would treat every topic as unknown.
    pub fn read(opening: &Opening) -> Result<Loaded> {
        let commit_log = opening.dir().join(storage::COMMIT_LOG_FILE);
        if let Some(bytes) = opening.meta(CATALOG_KEY) {
            let data = decode(bytes).map_err(|why| {
                StorageError::Refused(format!(
                    "the catalog in {} is unreadable: {why}; restore the data directory from a backup",
                    commit_log.display()
                ))
            })?;
            return Ok(Loaded {
                data,
                imported_from: None,
            });
        }
        let legacy = opening.dir().join(LEGACY_CATALOG_FILE);
        match std::fs::read(&legacy) {
            Ok(bytes) => {
                let data = decode(&bytes).map_err(|why| {
                    StorageError::Refused(format!(
                        "{} is unreadable: {why}; restore it from a backup",
                        legacy.display()
                    ))
                })?;
                return Ok(Loaded {
                    data,
                    imported_from: Some(legacy),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io(&legacy, e).into()),
        }
        if opening.commits() > 0 {
            return Err(StorageError::Refused(format!(
                "{} has committed records but no catalog: the streams and topics they belong to are unknown, so Runnel will not start; restore the data directory from a backup",
                commit_log.display()
            ))
            .into());
        }
        Ok(Loaded {
            data: CatalogData::default(),
            imported_from: None,
        })
    }
}

fn decode(bytes: &[u8]) -> std::result::Result<CatalogData, String> {
    let data: CatalogData = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if data.format_version != FORMAT_VERSION {
        return Err(format!(
            "it has format version {}, this build reads {FORMAT_VERSION}",
            data.format_version
        ));
    }
    Ok(data)
}

impl Catalog {
    /// The catalog `loaded` from the commit log of `log`. A catalog imported from a
    /// first-format `catalog.json` is committed to the log now, and the file renamed to
    /// `catalog.json.imported` (kept, not deleted).
    pub async fn open(loaded: Loaded, log: Arc<Log>) -> Result<Catalog> {
        let catalog = Catalog {
            log,
            data: RwLock::new(Arc::new(loaded.data.clone())),
            ddl: tokio::sync::Mutex::new(()),
        };
        if let Some(path) = loaded.imported_from {
            catalog.commit(loaded.data, vec![]).await?;
            let kept = path.with_extension("json.imported");
            std::fs::rename(&path, &kept).map_err(|e| StorageError::io(&path, e))?;
            // The temporary file of an interrupted first-format catalog write.
            let _ = std::fs::remove_file(path.with_extension("json.new"));
            tracing::info!(from = %path.display(), kept = %kept.display(), "imported the catalog into the commit log");
        }
        Ok(catalog)
    }

    pub fn snapshot(&self) -> Arc<CatalogData> {
        self.data.read().expect("catalog lock").clone()
    }

    /// Serialises DDL: hold the guard from validation to [`Catalog::commit`].
    pub async fn ddl_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.ddl.lock().await
    }

    /// Makes `data` the catalog, durably, in one commit record with `meta` (the checkpoints
    /// and offsets the statement creates or deletes). Call with the DDL lock held.
    pub async fn commit(&self, data: CatalogData, mut meta: Vec<MetaUpdate>) -> Result<()> {
        let bytes = serde_json::to_vec(&data).map_err(|e| Error::Internal(e.to_string()))?;
        meta.push((CATALOG_KEY, Some(bytes)));
        self.log.commit(vec![], meta).await?;
        *self.data.write().expect("catalog lock") = Arc::new(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_made_before_postgresql_names_keep_their_own() {
        let query = QueryDef {
            id: QueryId(1),
            name: "per_url".into(),
            target: QueryTarget::View {
                view: "per_url".into(),
            },
            sql: "SELECT url, count(*) FROM clicks GROUP BY url".into(),
            inputs: vec!["clicks".into()],
            start: StartPosition::Earliest,
            state_topic: None,
            closed_topic: None,
            inner_state_topics: vec![],
            created_at_ms: 0,
            owner: "runnel".into(),
            emit: Emit::Changes,
            dialect: Dialect::CURRENT,
        };
        let mut json = serde_json::to_value(&query).unwrap();
        assert_eq!(json["postgres_names"], serde_json::Value::Bool(true));
        assert_eq!(json["numeric_avg"], serde_json::Value::Bool(true));
        assert_eq!(
            serde_json::from_value::<QueryDef>(json.clone())
                .unwrap()
                .dialect,
            Dialect::CURRENT
        );
        // A catalog written before `avg` was PostgreSQL's has no such key; one written
        // before columns were named as PostgreSQL names them, neither.
        json.as_object_mut().unwrap().remove("numeric_avg");
        let old: QueryDef = serde_json::from_value(json.clone()).unwrap();
        assert!(old.dialect.postgres_names && !old.dialect.numeric_avg);
        json.as_object_mut().unwrap().remove("postgres_names");
        let older: QueryDef = serde_json::from_value(json).unwrap();
        assert_eq!(older.dialect, Dialect::default());
    }

    #[test]
    fn names_with_path_characters_are_refused() {
        for bad in ["../x", "a/b", "..", ".", "", "x y", "é"] {
            let e = validate_name("stream", bad).unwrap_err();
            assert_eq!(e.sqlstate(), "42602", "{bad}");
        }
        for good in ["clicks", "Clicks_2", "a.b-c", "_x", "system", "sys_log"] {
            validate_name("stream", good).unwrap();
        }
        for reserved in [
            "__state_v_1",
            "__consumer_offsets",
            "sys",
            "SYS.queries",
            "pg_catalog",
        ] {
            let e = validate_name("stream", reserved).unwrap_err();
            assert_eq!(e.sqlstate(), "42939", "{reserved}");
        }
    }

    #[test]
    fn the_catalog_round_trips_through_its_encoding() {
        let mut data = CatalogData {
            next_topic_id: 7,
            ..CatalogData::default()
        };
        data.external_tables.insert(
            "lines".into(),
            ExternalTableDef {
                name: "lines".into(),
                sql: "CREATE EXTERNAL TABLE lines STORED AS TEXT LOCATION 'x'".into(),
                access: Access::default(),
            },
        );
        let bytes = serde_json::to_vec(&data).unwrap();
        assert_eq!(decode(&bytes).unwrap(), data);
        let mut other = data.clone();
        other.format_version = 99;
        let err = decode(&serde_json::to_vec(&other).unwrap()).unwrap_err();
        assert!(err.contains("format version 99"), "{err}");
        assert!(decode(b"{not json").is_err());
    }
}
