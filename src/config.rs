//! Settings: defaults < environment (`RUNNEL_…`) < command-line flags, validated once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::db::DbConfig;
use crate::storage::FlushPolicy;

#[derive(Debug, Parser)]
#[command(name = "runnel", version, about = "A SQL-first streaming database", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub server: ServerConfig,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Server,
    /// Ask a running server's HTTP endpoint (`--http-addr`) whether it serves: exits with 0
    /// if `/health` answers, 1 otherwise (a container's health check).
    Health,
}

/// Everything `runnel server` takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerConfig {
    /// Directory holding the log, the catalog and everything else Runnel stores.
    #[arg(
        long,
        env = "RUNNEL_DATA_DIR",
        default_value = "./runnel-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Address the Postgres wire protocol listens on (port 0 picks a free port).
    #[arg(
        long,
        env = "RUNNEL_PG_ADDR",
        default_value = "127.0.0.1:5433",
        global = true
    )]
    pub pg_addr: SocketAddr,
    /// Address Kafka clients connect to (`host:port`; every address the host resolves to
    /// is listened on, port 0 picks a free port); `off` serves no Kafka clients.
    #[arg(
        long,
        env = "RUNNEL_KAFKA_ADDR",
        default_value = "localhost:9092",
        global = true
    )]
    pub kafka_addr: String,
    /// Address of the HTTP endpoint (`/health`, `/ready`, `/metrics`; `host:port`, port 0
    /// picks a free port); `off` serves none.
    #[arg(
        long,
        env = "RUNNEL_HTTP_ADDR",
        default_value = "localhost:8080",
        global = true
    )]
    pub http_addr: String,
    /// Where Kafka clients are told to connect (`host:port`), if not --kafka-addr's host and
    /// the port it listens on: the name clients outside this machine reach it by.
    #[arg(long, env = "RUNNEL_KAFKA_ADVERTISED", global = true)]
    pub kafka_advertised: Option<String>,
    /// A Kafka client asking for a topic that does not exist creates it (schemaless, with
    /// `--kafka-num-partitions` partitions), as Kafka's `auto.create.topics.enable` does.
    #[arg(
        long,
        env = "RUNNEL_KAFKA_AUTO_CREATE_TOPICS",
        default_value_t = true,
        action = clap::ArgAction::Set,
        global = true
    )]
    pub kafka_auto_create_topics: bool,
    /// The partitions of a topic a Kafka client creates without saying how many: by
    /// auto-creation, or CreateTopics with -1 (Kafka's `num.partitions`).
    #[arg(
        long,
        env = "RUNNEL_KAFKA_NUM_PARTITIONS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=crate::db::MAX_PARTITIONS as i64),
        global = true
    )]
    pub kafka_num_partitions: u32,
    /// COPY and INSERT … SELECT are atomic up to this many bytes of input; larger inputs
    /// commit in chunks of this size.
    #[arg(long, env = "RUNNEL_COPY_CHUNK_BYTES", default_value_t = 256 * 1024 * 1024, global = true)]
    pub copy_chunk_bytes: u64,
    /// Sessions served at once; a client beyond them is refused with SQLSTATE 53300.
    #[arg(
        long,
        env = "RUNNEL_MAX_CONNECTIONS",
        default_value_t = 256,
        global = true
    )]
    pub max_connections: usize,
    /// Of --max-connections, how many only superusers may take (at most all but one).
    #[arg(
        long,
        env = "RUNNEL_SUPERUSER_RESERVED_CONNECTIONS",
        default_value_t = 3,
        global = true
    )]
    pub superuser_reserved_connections: usize,
    /// A client must finish start-up (TLS, password) within this many milliseconds, or its
    /// socket is closed.
    #[arg(
        long,
        env = "RUNNEL_STARTUP_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub startup_timeout_ms: u64,
    /// How often time and size retention are applied, and compacted topics looked at for
    /// partitions to compact, in milliseconds.
    #[arg(
        long,
        env = "RUNNEL_RETENTION_CHECK_INTERVAL_MS",
        default_value_t = 30_000,
        global = true
    )]
    pub retention_check_interval_ms: u64,
    /// Per partition, how many bytes beyond a stream's retention limits are kept for
    /// continuous queries and subscriptions that have not read them yet; past it, retention
    /// deletes them and those readers fail, naming the offsets lost.
    #[arg(
        long,
        env = "RUNNEL_MAX_RETENTION_HOLD_BYTES",
        default_value_t = crate::storage::DEFAULT_MAX_HOLD_BYTES,
        global = true
    )]
    pub max_retention_hold_bytes: u64,
    /// When appended records are fsynced: `always` before an append is acknowledged (nothing
    /// acknowledged is ever lost); `interval` every `--flush-interval-ms`, acknowledging once
    /// written to the operating system, as Kafka does: a crash of the machine may lose the
    /// appends of the last interval (a `kill -9` loses nothing).
    #[arg(
        long,
        env = "RUNNEL_FLUSH_POLICY",
        value_enum,
        default_value = "always",
        global = true
    )]
    pub flush_policy: FlushPolicyArg,
    /// Under `--flush-policy interval`, how often appended records are fsynced, in
    /// milliseconds.
    #[arg(
        long,
        env = "RUNNEL_FLUSH_INTERVAL_MS",
        default_value_t = 1000,
        global = true
    )]
    pub flush_interval_ms: u64,
    /// Epochs of one continuous query start at most this often, in milliseconds: new data
    /// within the interval waits for the next epoch.
    #[arg(
        long,
        env = "RUNNEL_EPOCH_INTERVAL_MS",
        default_value_t = 10,
        global = true
    )]
    pub epoch_interval_ms: u64,
    /// Input records one epoch of a continuous query reads at most (bounds its memory).
    #[arg(
        long,
        env = "RUNNEL_EPOCH_MAX_RECORDS",
        default_value_t = 1_000_000,
        global = true
    )]
    pub epoch_max_records: u64,
    /// Epochs a subscriber to a view (`SUBSCRIBE view`) may fall behind the view before it
    /// is ended with an error (SQLSTATE 53400); a subscriber to a stream reads the log at
    /// its own pace and is never ended.
    #[arg(
        long,
        env = "RUNNEL_SUBSCRIBER_MAX_LAG_EPOCHS",
        default_value_t = 1024,
        global = true
    )]
    pub subscriber_max_lag_epochs: usize,
    /// How clients prove who they are: `trust` accepts every user name; `password` checks
    /// passwords with SCRAM-SHA-256 (the superuser `runnel` gets its password from
    /// `RUNNEL_PASSWORD` the first time).
    #[arg(
        long,
        env = "RUNNEL_AUTH",
        value_enum,
        default_value = "trust",
        global = true
    )]
    pub auth: crate::auth::AuthMode,
    /// TLS certificate chain (PEM) for Postgres clients; with `--tls-key`, clients may use
    /// TLS (`sslmode=require`).
    #[arg(long, env = "RUNNEL_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "RUNNEL_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
    /// Refuse clients that do not use TLS.
    #[arg(long, env = "RUNNEL_TLS_REQUIRED", global = true)]
    pub tls_required: bool,
    /// Confine the server files SQL may read and write (`CREATE EXTERNAL TABLE`, `COPY …
    /// TO 'file'`) to this directory. Files inside the data directory are refused always.
    #[arg(long, env = "RUNNEL_FILE_ROOT", global = true)]
    pub file_root: Option<PathBuf>,
    /// Memory the server's queries may hold at once (e.g. `4GiB`): sorts, aggregations and
    /// joins spill to disk beyond it or fail with SQLSTATE 53200. Default: half the
    /// machine's (or the container's) memory.
    #[arg(long, env = "RUNNEL_MEMORY_LIMIT", value_parser = crate::memory::parse_size, global = true)]
    pub memory_limit: Option<u64>,
    /// Tiered storage: an object store sealed segments are copied to, `file:///dir` or
    /// `s3://bucket/prefix` (credentials, region and endpoint from `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`, …).
    #[arg(long, env = "RUNNEL_OBJECT_STORE", global = true)]
    pub object_store: Option<String>,
    /// With `--object-store`: per partition, the bytes of sealed segments kept on local disk
    /// once they are in the store (older ones are read from the store).
    #[arg(
        long,
        env = "RUNNEL_LOCAL_RETENTION_BYTES",
        value_parser = crate::memory::parse_size,
        default_value = "1GiB",
        global = true
    )]
    pub local_retention_bytes: u64,
    /// With `--object-store`: how often sealed segments are looked for to copy.
    #[arg(
        long,
        env = "RUNNEL_UPLOAD_INTERVAL_MS",
        default_value_t = 1000,
        global = true
    )]
    pub upload_interval_ms: u64,
    /// With `--object-store`: how often the catalog, the committed offsets and the segments
    /// holding every committed record are checkpointed there (also at shutdown); a new
    /// machine with an empty disk starts from the last checkpoint.
    #[arg(
        long,
        env = "RUNNEL_CHECKPOINT_INTERVAL_MS",
        default_value_t = 300_000,
        global = true
    )]
    pub checkpoint_interval_ms: u64,
    /// Log filter, as `RUST_LOG` (e.g. `info`, `runnel=debug`).
    #[arg(long, env = "RUNNEL_LOG", default_value = "info", global = true)]
    pub log: String,
}

/// `--flush-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlushPolicyArg {
    Always,
    Interval,
}

impl ServerConfig {
    pub fn db_config(&self) -> DbConfig {
        let mut config = DbConfig::new(&self.data_dir);
        config.copy_chunk_bytes = self.copy_chunk_bytes;
        config.retention_check_interval =
            Duration::from_millis(self.retention_check_interval_ms.max(1));
        config.max_retention_hold_bytes = self.max_retention_hold_bytes;
        config.flush = match self.flush_policy {
            FlushPolicyArg::Always => FlushPolicy::Always,
            FlushPolicyArg::Interval => {
                FlushPolicy::Interval(Duration::from_millis(self.flush_interval_ms))
            }
        };
        config.engine.min_interval = Duration::from_millis(self.epoch_interval_ms);
        config.engine.max_epoch_rows = self.epoch_max_records;
        config.engine.subscriber_max_lag_epochs = self.subscriber_max_lag_epochs;
        config.password_auth = self.auth == crate::auth::AuthMode::Password;
        config.file_root = self.file_root.clone();
        config.memory_limit = self
            .memory_limit
            .unwrap_or_else(crate::memory::default_memory_limit);
        config.tier = self
            .object_store
            .clone()
            .map(|url| crate::storage::tiered::TierConfig {
                url,
                local_retention_bytes: self.local_retention_bytes,
                upload_interval: Duration::from_millis(self.upload_interval_ms.max(1)),
                retired_grace: crate::storage::tiered::RETIRED_GRACE,
                checkpoint_interval: Duration::from_millis(self.checkpoint_interval_ms.max(1)),
            });
        config
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.copy_chunk_bytes < 1024 * 1024 {
            return Err(format!(
                "--copy-chunk-bytes must be at least 1 MiB, not {}",
                self.copy_chunk_bytes
            ));
        }
        if self.flush_interval_ms == 0 {
            return Err("--flush-interval-ms must be at least 1".into());
        }
        if self.epoch_max_records == 0 {
            return Err("--epoch-max-records must be at least 1".into());
        }
        if self.subscriber_max_lag_epochs == 0 {
            return Err("--subscriber-max-lag-epochs must be at least 1".into());
        }
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if self.startup_timeout_ms == 0 {
            return Err("--startup-timeout-ms must be at least 1".into());
        }
        if let Some(limit) = self.memory_limit
            && limit < crate::memory::MIN_MEMORY_LIMIT
        {
            return Err(format!(
                "--memory-limit must be at least {} MiB, not {limit} bytes",
                crate::memory::MIN_MEMORY_LIMIT >> 20
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("--tls-cert and --tls-key go together".into());
        }
        if self.tls_required && self.tls_cert.is_none() {
            return Err("--tls-required needs --tls-cert and --tls-key".into());
        }
        Ok(())
    }
}
