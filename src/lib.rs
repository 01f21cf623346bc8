//! Runnel: a SQL-first streaming database.
//!
//! Modules follow the life of a statement, front ends on top, the log at the bottom; each
//! uses only those below it:
//!
//! ```text
//!  pgwire/  kafka/    Postgres wire protocol ⇄ sessions; Kafka protocol ⇄ topics (sans-IO
//!     │    http       codec, record batches, handlers, the group coordinator); HTTP:
//!     │    console/   health, readiness, Prometheus metrics read from db (metrics), the
//!     │               web console (read-only SQL through db sessions, sampled history)
//!     │               (server: wiring, admission, auth, tls, panics; progress: COPYs
//!     │               running, start-up work's log lines)
//!  db/                the one door in: sessions, DDL, statement dispatch, cursors, COPY,
//!     │               tables' UPDATE, DELETE and ON CONFLICT;
//!     │               every query runs in one runtime (memory: the limit's pool, spilling)
//!  engine/            continuous queries: epochs, incremental aggregation, lookup joins and
//!     │               joins of streams, tables' changes and changing groups as signed
//!     │               rows, checkpoints, push queries; implements tables::Continuous
//!  tables/            DataFusion bindings: streams, tables, views, files and sys tables as
//!     │               table providers, scans, sinks, pg_catalog; reads the engine through a
//!     │               trait
//!  sql/               parse (Runnel statements + DataFusion's), rewrite, plan; never executes
//!     │               but the few scalar functions put in place of DataFusion's
//!     │               (functions); planner: a filter's calls shared with projections;
//!     │               decorrelate: an optimizer rule for correlated scalar aggregates;
//!     │               text_type, json: json/jsonb/uuid as marked text; analyzer rules
//!     │               for their casts, interval comparisons, rounding casts, numeric
//!     │               literals and division; declared parameter types
//!  ingest/            rows → records: keys, partitions, timestamps; COPY and VALUES decoding;
//!     │               value formats (JSON, CSV, raw) at the edges; tables' primary keys
//!     │               checked under their write locks
//!  groups, producers, consumer groups' offsets; idempotent producers' sequences; streams,
//!  catalog/           topics, views, queries, users: durable metadata only
//!  storage/           the partitioned log: frames, segments, commit log, recovery,
//!                     retention, compaction; tiering to an object store (tiered, upload)
//! ```
pub mod admission;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod console;
pub mod db;
pub mod engine;
pub mod error;
pub mod groups;
pub mod http;
pub mod ingest;
pub mod kafka;
pub mod memory;
pub mod metrics;
pub mod panics;
pub mod pgwire;
pub mod producers;
pub mod progress;
pub mod server;
pub mod sql;
pub mod storage;
pub mod tables;
pub mod tls;

/// The PostgreSQL version Runnel reports to clients (they adapt their SQL to it).
pub const SERVER_VERSION: &str = "16.0";
/// [`SERVER_VERSION`] as a number (`SHOW server_version_num`).
pub const SERVER_VERSION_NUM: &str = "160000";
