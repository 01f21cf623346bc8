//! The partitioned log: topics, partitions, segments, durability, recovery, retention.
//!
//! ```text
//!  append(batches) ──► writer thread (group commit)
//!                        1. frames appended to each touched partition's active segment
//!                        2. each touched partition fsynced
//!                        3. one commit record (new end offsets) appended to commit.log, fsynced
//!                        4. new snapshot of committed end offsets published, writers acked
//!  snapshot() / reader(…) ◄── readers: only offsets below the snapshot's ends are read
//! ```
//!
//! Invariants:
//! - A record is visible to readers only once it is durable (steps 1–3 done) — under the
//!   `interval` [`FlushPolicy`], once written, with steps 2 and 3's fsyncs left to the next
//!   flush, which fsyncs the partitions before the commit log.
//! - A commit record is the unit of atomicity: an append touching several partitions is
//!   visible whole or not at all, also across a crash (recovery cuts every partition back to
//!   its last committed end).
//! - Only the writer thread writes files; readers use positioned reads on their own handles.
//!
//! With an object store ([`tiered`]), sealed segments are also copied there (and read from
//! there once their local copy is gone), and checkpoints of the committed state let an
//! empty data directory be restored.
//!
//! The storage layer knows Arrow (it is a columnar log) but nothing of SQL: a topic is a name,
//! an id, a partition count, a storage schema (value columns plus [`TIMESTAMP_COLUMN`] and
//! [`KEY_COLUMN`]) and options.

mod commit_log;
pub mod compaction;
pub mod disk;
pub mod frame;
pub mod index;
pub mod lock;
pub mod partition;
pub mod segment;
pub mod tiered;
pub mod types;
mod upload;
mod writer;

#[cfg(test)]
mod compaction_tests;
#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tiered_tests;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch, new_null_array};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::{mpsc, oneshot, watch};

pub use commit_log::{COMMIT_LOG_FILE, Identity, MetaUpdate, RECORD_LEN_MAX, VALUE_LEN_MAX};
use commit_log::{CommitLog, CommittedEnds, CommittedMeta, OnDisk};
pub use compaction::{Compacted, Compaction, Tombstone};
pub use disk::{Disk, Faults};
pub use partition::{Partition, PartitionReader, PartitionStats, ReadBatch, ReadOptions};
pub use types::{Compression, Offset, PartitionId, TopicId, now_ms};
use writer::Writer;

/// The record timestamp column every topic stores (ms since the epoch).
pub const TIMESTAMP_COLUMN: &str = "_timestamp";
/// The record key column every topic stores (nullable bytes).
pub const KEY_COLUMN: &str = "_key";
/// The record headers column every topic stores (nullable [`headers_type`]).
pub const HEADERS_COLUMN: &str = "_headers";

/// The storage schema's layout frames are written in: version 1 ends with
/// [`HEADERS_COLUMN`]; version 0 frames, written before it existed, end with [`KEY_COLUMN`]
/// and read with no headers.
pub const SCHEMA_VERSION: u32 = 1;

/// The schema the log stores for a topic whose records have `value_fields`: the values,
/// then [`TIMESTAMP_COLUMN`], [`KEY_COLUMN`] and [`HEADERS_COLUMN`].
pub fn storage_schema(value_fields: &Fields) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = value_fields.iter().cloned().collect();
    fields.push(Arc::new(Field::new(
        TIMESTAMP_COLUMN,
        DataType::Timestamp(TimeUnit::Millisecond, None),
        false,
    )));
    fields.push(Arc::new(Field::new(KEY_COLUMN, DataType::Binary, true)));
    fields.push(Arc::new(Field::new(HEADERS_COLUMN, headers_type(), true)));
    Arc::new(Schema::new(fields))
}

/// The Arrow type of a record's headers, as Kafka has them: a list of (key, value), keys
/// UTF-8, values bytes or null.
pub fn headers_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(header_fields()),
        false,
    )))
}

/// The fields of one header.
pub fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Binary, true),
    ])
}

/// The system columns of `n` records that have timestamps and keys but no headers.
pub fn system_columns(timestamps: ArrayRef, keys: ArrayRef) -> [ArrayRef; 3] {
    let n = timestamps.len();
    [timestamps, keys, new_null_array(&headers_type(), n)]
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt log data in {path} at byte {position}: {reason}")]
    Corruption {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("topic {0} does not exist")]
    UnknownTopic(TopicId),
    #[error("partition {partition} does not exist in topic {topic} (it has {partitions})")]
    UnknownPartition {
        topic: String,
        partition: PartitionId,
        partitions: u32,
    },
    #[error("invalid records: {0}")]
    InvalidBatch(String),
    #[error(
        "the log stopped accepting writes after an I/O failure ({0}); restart the server to recover"
    )]
    Failed(String),
    #[error("the log is shut down")]
    ShutDown,
    #[error("{}", lock::describe_holder(dir, *holder))]
    Locked { dir: PathBuf, holder: Option<u32> },
    /// The data directory cannot be started from as it is; the message says what to do.
    #[error("{0}")]
    Refused(String),
    /// A write over a size limit of the log.
    #[error("{0}")]
    TooLarge(String),
    /// A reader asked for records that retention has deleted: it would skip them.
    #[error(
        "offsets {from}..{to} of partition {partition} were deleted by retention before they were read (the partition now starts at {to}); nothing after them is read, so as not to skip them silently"
    )]
    Removed {
        partition: PartitionId,
        from: Offset,
        to: Offset,
    },
}

impl StorageError {
    pub fn io(path: &Path, source: std::io::Error) -> StorageError {
        StorageError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn corruption(path: &Path, position: u64, reason: impl ToString) -> StorageError {
        StorageError::Corruption {
            path: path.to_path_buf(),
            position,
            reason: reason.to_string(),
        }
    }
}

/// Settings of one topic.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub id: TopicId,
    pub name: String,
    pub partitions: u32,
    /// What frames hold: value columns, then [`TIMESTAMP_COLUMN`], [`KEY_COLUMN`] and
    /// [`HEADERS_COLUMN`] ([`storage_schema`]).
    pub schema: SchemaRef,
    pub compression: Compression,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub segment_bytes_max: u64,
    /// Set for a compacted topic (which has no retention limits).
    pub compaction: Option<Compaction>,
}

#[derive(Debug)]
pub struct Topic {
    pub spec: TopicSpec,
    pub dir: PathBuf,
    pub partitions: Vec<Arc<Partition>>,
    timestamp_column: usize,
    /// Held while compaction moves files into the topic's directory, and by its drop.
    files: Mutex<TopicFiles>,
}

#[derive(Debug, Default)]
struct TopicFiles {
    /// The topic's directory is gone, or going.
    dropped: bool,
}

impl Topic {
    pub fn partition(&self, id: PartitionId) -> Result<&Arc<Partition>, StorageError> {
        self.partitions
            .get(id.0 as usize)
            .ok_or_else(|| StorageError::UnknownPartition {
                topic: self.spec.name.clone(),
                partition: id,
                partitions: self.spec.partitions,
            })
    }
}

/// Settings of the log as a whole.
/// [`LogConfig::max_hold_bytes`] unless configured: 1 GiB per partition.
pub const DEFAULT_MAX_HOLD_BYTES: u64 = 1024 * 1024 * 1024;

/// A reader's claim on a partition: it has not yet read from `offset` on, so retention keeps
/// those records (up to [`LogConfig::max_hold_bytes`]), as a replication slot holds WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub topic: TopicId,
    pub partition: PartitionId,
    pub offset: Offset,
    /// Who holds it, for logs and `sys.partitions` (`query clicks_per_user`).
    pub holder: String,
    /// Whether the reader needs every record from `offset` on as written, so compaction
    /// waits for it (a continuous query's unread input, the input rows a join keeps); a
    /// reader that needs only each key's latest record does not hold compaction back.
    pub waits: bool,
}

/// Where the log learns the readers' holds: the layers above know their readers.
pub type HoldSource = Arc<dyn Fn() -> Vec<Hold> + Send + Sync>;

/// The readers' holds, by partition (looked up once per partition by retention and
/// `sys.partitions`, with perhaps a hold per group per partition).
#[derive(Debug, Default)]
pub struct Holds(HashMap<(TopicId, PartitionId), Vec<Hold>>);

impl FromIterator<Hold> for Holds {
    fn from_iter<I: IntoIterator<Item = Hold>>(holds: I) -> Holds {
        let mut by_partition: HashMap<(TopicId, PartitionId), Vec<Hold>> = HashMap::new();
        for hold in holds {
            by_partition
                .entry((hold.topic, hold.partition))
                .or_default()
                .push(hold);
        }
        Holds(by_partition)
    }
}

impl Holds {
    /// The holds on one partition.
    pub fn of(&self, topic: TopicId, partition: PartitionId) -> &[Hold] {
        self.0
            .get(&(topic, partition))
            .map_or(&[][..], Vec::as_slice)
    }

    /// The first offset a reader of the partition still needs, and who needs it (every
    /// reader that far behind, sorted).
    pub fn furthest_behind(
        &self,
        topic: TopicId,
        partition: PartitionId,
    ) -> Option<(Offset, Vec<&str>)> {
        let holds = self.of(topic, partition);
        let start = holds.iter().map(|h| h.offset).min()?;
        let mut holders: Vec<&str> = holds
            .iter()
            .filter(|h| h.offset == start)
            .map(|h| h.holder.as_str())
            .collect();
        holders.sort_unstable();
        holders.dedup();
        Some((start, holders))
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub dir: PathBuf,
    /// Approximate size of one frame's uncompressed Arrow data.
    pub frame_bytes_target: u64,
    /// The commit log is rewritten as a snapshot of the live state once it is past this
    /// size and twice its size after the last rewrite.
    pub commit_log_bytes_max: u64,
    /// How often retention limits are checked.
    pub retention_check_interval: Duration,
    /// Appends waiting for the writer before further appenders wait for room.
    pub queue_depth: usize,
    /// Per partition, how many bytes beyond its retention limits retention keeps for
    /// readers that have not read them ([`Hold`]s).
    pub max_hold_bytes: u64,
    /// The files, through a bounded set of open handles (and, in tests, faults).
    pub disk: Disk,
    /// How many keys one compaction pass over a partition maps (16 bytes of hash and an
    /// offset each, about 40 bytes with the map's own).
    pub compaction_map_keys: usize,
    /// When appended records reach stable storage.
    pub flush: FlushPolicy,
    /// The object store sealed segments are copied to (`--object-store`), if any.
    pub tier: Option<Arc<tiered::Tier>>,
}

impl LogConfig {
    /// Where the data directory's files go in the object store, if tiered.
    pub fn tiered(&self) -> Option<tiered::Tiered> {
        self.tier.as_ref().map(|tier| tiered::Tiered {
            tier: tier.clone(),
            root: self.dir.clone(),
        })
    }
}

/// When appended records are fsynced (`--flush-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Before an append is acknowledged (group commit shares one fsync among all waiting
    /// appends). Nothing acknowledged is lost, even when the machine loses power.
    Always,
    /// Every so often: an append is acknowledged once it is written to the operating system,
    /// as Kafka does by default. A crash of the process (`kill -9`) loses nothing; a crash of
    /// the machine (power, kernel) may lose what was acknowledged in the last interval, and
    /// recovery keeps a prefix of the commits (appends stay whole, and a query's output
    /// stays with its checkpoint). Metadata commits (DDL, consumer group offsets) are still
    /// fsynced at once, with every record before them.
    Interval(Duration),
}

impl LogConfig {
    pub fn new(dir: impl Into<PathBuf>) -> LogConfig {
        LogConfig {
            dir: dir.into(),
            frame_bytes_target: 1024 * 1024,
            commit_log_bytes_max: 16 * 1024 * 1024,
            retention_check_interval: Duration::from_secs(30),
            queue_depth: 1024,
            max_hold_bytes: DEFAULT_MAX_HOLD_BYTES,
            disk: Disk::default(),
            compaction_map_keys: 2 << 20,
            flush: FlushPolicy::Always,
            tier: None,
        }
    }
}

/// Committed end offsets (high watermarks) of every topic, as of one commit. Readers take
/// one snapshot per query, so a query sees each multi-partition write whole or not at all.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    ends: imbl::HashMap<TopicId, Arc<Vec<Offset>>>,
    /// The latest committed value of every metadata key (continuous queries' checkpoints).
    meta: CommittedMeta,
}

impl Snapshot {
    /// The committed value of a metadata key.
    pub fn meta(&self, key: u64) -> Option<&Arc<Vec<u8>>> {
        self.meta.get(&key)
    }

    /// Every committed metadata key and value.
    pub fn metas(&self) -> impl Iterator<Item = (u64, &Arc<Vec<u8>>)> {
        self.meta.iter().map(|(k, v)| (*k, v))
    }

    pub fn high_watermark(&self, topic: TopicId, partition: PartitionId) -> Offset {
        self.ends
            .get(&topic)
            .and_then(|e| e.get(partition.0 as usize).copied())
            .unwrap_or_default()
    }

    pub fn high_watermarks(&self, topic: TopicId) -> Vec<Offset> {
        self.ends
            .get(&topic)
            .map(|e| e.to_vec())
            .unwrap_or_default()
    }
}

/// Records to append to one partition, in the topic's storage schema.
#[derive(Debug, Clone)]
pub struct PartitionBatch {
    pub topic: TopicId,
    pub partition: PartitionId,
    pub records: RecordBatch,
}

/// Where an append put the records of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendedRange {
    pub topic: TopicId,
    pub partition: PartitionId,
    pub base_offset: Offset,
    pub record_count: u64,
}

type Reply<T> = oneshot::Sender<Result<T, StorageError>>;

/// Metadata changes made from where an append's records went.
pub type MetaAfter = Box<dyn FnOnce(&[AppendedRange]) -> Vec<MetaUpdate> + Send>;

enum Command {
    Append {
        batches: Vec<PartitionBatch>,
        meta: Vec<MetaUpdate>,
        meta_after: Option<MetaAfter>,
        reply: Reply<Vec<AppendedRange>>,
    },
    TruncateBefore {
        topic: TopicId,
        partition: PartitionId,
        offset: Offset,
        reply: Reply<usize>,
    },
    CreateTopic {
        spec: TopicSpec,
        reply: Reply<()>,
    },
    DropTopic {
        id: TopicId,
        reply: Reply<()>,
    },
    Retention {
        reply: Option<Reply<usize>>,
    },
    /// Fsyncs what the `interval` flush policy left unsynced.
    Flush {
        reply: Option<Reply<()>>,
    },
    /// Seals every partition's active segment that holds records and answers with the
    /// committed state and the sealed segments holding it (a checkpoint for the object
    /// store).
    Checkpoint {
        reply: Reply<tiered::Checkpoint>,
    },
}

struct Shared {
    config: LogConfig,
    identity: Identity,
    topics: RwLock<HashMap<TopicId, Arc<Topic>>>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Bumped after every commit; readers waiting for new records watch it.
    commits: watch::Sender<u64>,
    failed: Mutex<Option<String>>,
    holds: RwLock<Option<HoldSource>>,
    group_commits: GroupCommits,
}

/// The sizes of the log's group commits, for `/metrics`: how many appends and records each
/// shared one commit (and, under the `always` policy, one fsync per partition).
#[derive(Debug)]
pub struct GroupCommits {
    pub appends: Histogram,
    pub records: Histogram,
}

impl Default for GroupCommits {
    fn default() -> GroupCommits {
        GroupCommits {
            appends: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            records: Histogram::new(exponential_buckets(1.0, 4.0, 12)),
        }
    }
}

impl Shared {
    /// The topics the log has now.
    fn live_topics(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .expect("topics lock")
            .values()
            .cloned()
            .collect()
    }

    /// The readers' holds now (none until a source is set).
    fn holds(&self) -> Holds {
        let source = self.holds.read().expect("holds lock").clone();
        source
            .map(|source| source().into_iter().collect())
            .unwrap_or_default()
    }
}

/// The log of a data directory. Cheap to share behind an `Arc`.
pub struct Log {
    shared: Arc<Shared>,
    /// Held for as long as the log is open: one server per data directory.
    _lock: lock::DataDirLock,
    /// `None` once shut down.
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Stops the threads that send periodic commands (retention, flushes).
    tickers: Mutex<Vec<std::sync::mpsc::Sender<()>>>,
    /// Stops tiered storage's uploader, and says when its last checkpoint is done.
    uploader: Mutex<Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>>,
}

/// How long a shutdown waits for the last checkpoint to the object store.
const LAST_CHECKPOINT_WAIT: Duration = Duration::from_secs(120);

fn topic_dir(root: &Path, spec: &TopicSpec) -> PathBuf {
    root.join("topics")
        .join(format!("{}-{}", spec.name, spec.id.0))
}

fn partition_dir(topic_dir: &Path, partition: u32) -> PathBuf {
    topic_dir.join(partition.to_string())
}

fn timestamp_column(schema: &Schema) -> Result<usize, StorageError> {
    let index = schema.index_of(TIMESTAMP_COLUMN).map_err(|_| {
        StorageError::InvalidBatch(format!("topic schema lacks {TIMESTAMP_COLUMN}"))
    })?;
    let expected = DataType::Timestamp(TimeUnit::Millisecond, None);
    if schema.field(index).data_type() != &expected {
        return Err(StorageError::InvalidBatch(format!(
            "{TIMESTAMP_COLUMN} must be {expected}"
        )));
    }
    Ok(index)
}

/// The directory, under the data directory, that start-up moves files it cannot account
/// for into (never deleting them).
pub const QUARANTINE_DIR: &str = "quarantine";

/// A data directory being opened: locked, its commit log read, nothing changed yet. The
/// caller reads the catalog from it ([`Opening::meta`]) and then opens the log with the
/// topics the catalog names.
pub struct Opening {
    config: LogConfig,
    lock: lock::DataDirLock,
    found: OnDisk,
    /// The partitions named by commits kept from those written ahead of their records'
    /// fsync, if any were kept.
    unflushed: Option<HashSet<(TopicId, PartitionId)>>,
}

impl Opening {
    /// The committed value of a metadata key.
    pub fn meta(&self, key: u64) -> Option<&Arc<Vec<u8>>> {
        self.replayed().and_then(|r| r.meta.get(&key))
    }

    /// Whether the directory has no commit log yet (a new data directory).
    pub fn is_new(&self) -> bool {
        matches!(self.found, OnDisk::Missing | OnDisk::Empty)
    }

    /// Commit records replayed: zero for a log that has never committed anything.
    pub fn commits(&self) -> u64 {
        self.replayed().map_or(0, |r| r.commits)
    }

    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    fn replayed(&self) -> Option<&commit_log::Replayed> {
        match &self.found {
            OnDisk::Current { replayed, .. } | OnDisk::Legacy { replayed } => Some(replayed),
            OnDisk::Missing | OnDisk::Empty => None,
        }
    }

    /// Opens the log, recovering each topic of `topics` (the catalog's) to its last commit.
    /// Topic directories the catalog does not name are dealt with by their id: one below
    /// `issued` was dropped (its deletion is finished); anything else is moved to
    /// [`QUARANTINE_DIR`].
    pub fn open(self, topics: Vec<TopicSpec>, issued: TopicId) -> Result<Log, StorageError> {
        let Opening {
            config,
            lock,
            found,
            unflushed,
        } = self;
        let root = config.dir.clone();
        let disk = &config.disk;
        let topics_root = root.join("topics");
        let (commit_log, replayed) = match found {
            OnDisk::Missing | OnDisk::Empty => (
                CommitLog::create(disk, &root)?,
                commit_log::Replayed::default(),
            ),
            OnDisk::Current {
                identity,
                replayed,
                valid_len,
                sequence,
                unflushed,
            } => {
                debug_assert!(unflushed.is_empty(), "settled by begin_open");
                (
                    CommitLog::resume(disk, &root, identity, valid_len, sequence)?,
                    replayed,
                )
            }
            OnDisk::Legacy { replayed } => (CommitLog::migrate(disk, &root, &replayed)?, replayed),
        };
        std::fs::create_dir_all(&topics_root).map_err(|e| StorageError::io(&topics_root, e))?;

        let mut live = HashMap::new();
        let mut snapshot = Snapshot {
            ends: imbl::HashMap::new(),
            meta: replayed.meta.clone(),
        };
        let mut report = crate::progress::Reporter::new(
            "opening the log",
            topics.iter().map(|t| t.partitions as u64).sum(),
            "partitions",
        );
        for spec in topics {
            let dir = topic_dir(&root, &spec);
            if !dir.is_dir() {
                return Err(StorageError::corruption(
                    &dir,
                    0,
                    format!(
                        "the directory of topic \"{}\" is missing (restore the data directory from a backup)",
                        spec.name
                    ),
                ));
            }
            let mut partitions = Vec::with_capacity(spec.partitions as usize);
            let mut topic_ends = Vec::with_capacity(spec.partitions as usize);
            for p in 0..spec.partitions {
                let key = (spec.id, PartitionId(p));
                let end = replayed.ends.get(&key).copied().unwrap_or_default();
                let start = replayed.starts.get(&key).copied().unwrap_or_default();
                partitions.push(Arc::new(Partition::open(
                    disk,
                    &partition_dir(&dir, p),
                    PartitionId(p),
                    start,
                    end,
                    config.tiered(),
                )?));
                topic_ends.push(end);
                report.advance(1);
            }
            snapshot.ends.insert(spec.id, Arc::new(topic_ends));
            let timestamp_column = timestamp_column(&spec.schema)?;
            live.insert(
                spec.id,
                Arc::new(Topic {
                    spec,
                    dir,
                    partitions,
                    timestamp_column,
                    files: Mutex::default(),
                }),
            );
        }
        settle_unknown_topics(disk, &root, &live, issued)?;
        compaction::clear_scratch(&root)?;
        if let Some(partitions) = unflushed {
            // Records a crash of the process left unflushed may be only in the page cache:
            // make them and the commit log durable before anything is written after them, so
            // that every commit up to the last one fsynced names durable records.
            for (topic, partition) in partitions {
                if let Some(partition) = live.get(&topic).and_then(|t| t.partition(partition).ok())
                {
                    partition.sync()?;
                }
            }
            commit_log.sync()?;
        }
        let starts: CommittedEnds = replayed
            .starts
            .into_iter()
            .filter(|((topic, _), _)| live.contains_key(topic))
            .collect();

        let (commands_tx, commands_rx) = mpsc::channel(config.queue_depth);
        let shared = Arc::new(Shared {
            config: config.clone(),
            identity: commit_log.identity(),
            topics: RwLock::new(live),
            snapshot: RwLock::new(Arc::new(snapshot)),
            commits: watch::channel(0).0,
            failed: Mutex::new(None),
            holds: RwLock::new(None),
            group_commits: GroupCommits::default(),
        });
        let writer = Writer {
            shared: shared.clone(),
            commit_log,
            starts,
            unflushed: HashMap::new(),
            commit_log_unflushed: false,
        };
        let handle = std::thread::Builder::new()
            .name("runnel-log-writer".into())
            .spawn(move || writer.run(commands_rx))
            .map_err(|e| StorageError::io(&root, e))?;

        let mut stops = vec![tick(
            "runnel-retention",
            config.retention_check_interval,
            &commands_tx,
            || Command::Retention { reply: None },
        )?];
        stops.push(compaction::spawn(
            shared.clone(),
            commands_tx.clone(),
            config.retention_check_interval,
        )?);
        if let FlushPolicy::Interval(every) = config.flush {
            stops.push(tick("runnel-flush", every, &commands_tx, || {
                Command::Flush { reply: None }
            })?);
        }
        let mut uploader = None;
        if let Some(tiered) = config.tiered() {
            tiered.tier.claim(&shared.identity.hex())?;
            let (stop, stopped) = std::sync::mpsc::channel();
            let (done, finished) = std::sync::mpsc::channel();
            let task = upload::Uploader::new(shared.clone(), tiered, commands_tx.clone());
            std::thread::Builder::new()
                .name("runnel-uploader".into())
                .spawn(move || task.run(stopped, done))
                .map_err(|e| StorageError::io(&root, e))?;
            uploader = Some((stop, finished));
        }

        Ok(Log {
            shared,
            _lock: lock,
            commands: Mutex::new(Some(commands_tx)),
            writer: Mutex::new(Some(handle)),
            tickers: Mutex::new(stops),
            uploader: Mutex::new(uploader),
        })
    }
}

impl Log {
    /// Starts opening the data directory `config.dir` (created if missing): takes its lock
    /// and reads its commit log, changing nothing. A directory that holds data but no
    /// commit log is refused: without it nothing there can be trusted or recovered.
    pub fn begin_open(config: LogConfig) -> Result<Opening, StorageError> {
        let root = config.dir.clone();
        std::fs::create_dir_all(&root).map_err(|e| StorageError::io(&root, e))?;
        let lock = lock::DataDirLock::acquire(&root)?;
        // A data directory without a commit log, tiered: the store may have its checkpoint
        // (a new machine taking over), or a restore was cut short.
        if let Some(tier) = &config.tier
            && matches!(commit_log::read(&root)?, OnDisk::Missing)
            && (root.join(tiered::RESTORE_DIR).exists()
                || data_without_commit_log(&root)?.is_none())
        {
            tiered::restore(tier, &root, &config.disk)?;
        }
        let mut found = commit_log::read(&root)?;
        let unflushed = settle_unflushed(&config.disk, &root, &mut found)?;
        if matches!(found, OnDisk::Missing | OnDisk::Empty)
            && let Some(data) = data_without_commit_log(&root)?
        {
            let path = root.join(commit_log::COMMIT_LOG_FILE);
            let what = if matches!(found, OnDisk::Missing) {
                "is missing"
            } else {
                "is empty"
            };
            return Err(StorageError::Refused(format!(
                "{} {what}, but the data directory holds data ({}): without the commit log \
                 Runnel cannot tell what was committed, so it will not start. Restore the \
                 data directory (commit.log with it) from a backup, or move {} aside to start \
                 with an empty one",
                path.display(),
                data,
                root.display()
            )));
        }
        Ok(Opening {
            config,
            lock,
            found,
            unflushed,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.shared.config.dir
    }

    /// Which data directory this is.
    pub fn identity(&self) -> Identity {
        self.shared.identity
    }

    /// The sizes of the group commits so far.
    pub fn group_commits(&self) -> &GroupCommits {
        &self.shared.group_commits
    }

    /// The log's files, and how long their fsyncs take.
    pub fn disk(&self) -> &Disk {
        &self.shared.config.disk
    }

    async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, StorageError> {
        let outcome = self.send(make).await?;
        outcome.await.map_err(|_| StorageError::ShutDown)?
    }

    /// Queues a command for the writer thread, which takes commands in the order they were
    /// queued; its outcome comes on the receiver returned.
    async fn send<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<oneshot::Receiver<Result<T, StorageError>>, StorageError> {
        let commands = self.commands.lock().expect("commands lock").clone();
        let commands = commands.ok_or(StorageError::ShutDown)?;
        let (tx, rx) = oneshot::channel();
        commands
            .send(make(tx))
            .await
            .map_err(|_| StorageError::ShutDown)?;
        Ok(rx)
    }

    /// Creates a topic's directories and first segments, durably.
    pub async fn create_topic(&self, spec: TopicSpec) -> Result<(), StorageError> {
        self.request(|reply| Command::CreateTopic { spec, reply })
            .await
    }

    /// Removes a topic and its files.
    pub async fn drop_topic(&self, id: TopicId) -> Result<(), StorageError> {
        self.request(|reply| Command::DropTopic { id, reply }).await
    }

    /// Appends records, atomically across all the partitions named, and returns once they are
    /// durable and visible.
    pub async fn append(
        &self,
        batches: Vec<PartitionBatch>,
    ) -> Result<Vec<AppendedRange>, StorageError> {
        self.queue_append(batches).await.await
    }

    /// Queues an append behind every append queued before it, and returns what resolves to
    /// its outcome, as [`Log::append`]'s. A caller that queues appends one after another and
    /// awaits them later gets them in that order, and their fsyncs shared (one Kafka
    /// connection's pipelined Produce requests).
    pub async fn queue_append(
        &self,
        batches: Vec<PartitionBatch>,
    ) -> impl Future<Output = Result<Vec<AppendedRange>, StorageError>> + use<> {
        let queued = if batches.iter().all(|b| b.records.num_rows() == 0) {
            Ok(None)
        } else {
            self.send(|reply| Command::Append {
                batches,
                meta: vec![],
                meta_after: None,
                reply,
            })
            .await
            .map(Some)
        };
        async move {
            match queued? {
                None => Ok(vec![]),
                Some(outcome) => outcome.await.map_err(|_| StorageError::ShutDown)?,
            }
        }
    }

    /// Appends records and changes metadata keys in one commit: all of it becomes durable and
    /// visible together, or none of it. A commit of metadata alone is fine (no records).
    pub async fn commit(
        &self,
        batches: Vec<PartitionBatch>,
        meta: Vec<MetaUpdate>,
    ) -> Result<Vec<AppendedRange>, StorageError> {
        self.request(|reply| Command::Append {
            batches,
            meta,
            meta_after: None,
            reply,
        })
        .await
    }

    /// Appends records and commits the metadata `meta` derives from where they went (their
    /// offsets), all in one commit record: state that must name the offsets of the records
    /// it describes, such as an idempotent producer's, is durable exactly when they are.
    /// `meta` runs on the log's writer thread; keep it small.
    pub async fn commit_after(
        &self,
        batches: Vec<PartitionBatch>,
        meta: MetaAfter,
    ) -> Result<Vec<AppendedRange>, StorageError> {
        self.request(|reply| Command::Append {
            batches,
            meta: vec![],
            meta_after: Some(meta),
            reply,
        })
        .await
    }

    /// Deletes the sealed segments of a partition that hold only records before `offset`
    /// (for logs whose older records a newer snapshot has made redundant). Returns the
    /// segments deleted; the log start offset becomes at most `offset`.
    pub async fn truncate_before(
        &self,
        topic: TopicId,
        partition: PartitionId,
        offset: Offset,
    ) -> Result<usize, StorageError> {
        self.request(|reply| Command::TruncateBefore {
            topic,
            partition,
            offset,
            reply,
        })
        .await
    }

    /// Makes every acknowledged append durable now (under the `interval` flush policy; under
    /// `always` they already are).
    pub async fn flush(&self) -> Result<(), StorageError> {
        self.request(|reply| Command::Flush { reply: Some(reply) })
            .await
    }

    /// Compacts the compacted topics' partitions that are due now (it also runs
    /// periodically).
    pub async fn compact(&self) -> Result<(), StorageError> {
        let commands = self.commands.lock().expect("commands lock").clone();
        let commands = commands.ok_or(StorageError::ShutDown)?;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            compaction::compact_all(&shared, &|| compaction::flush(&commands))
        })
        .await
        .map_err(|_| StorageError::ShutDown)
    }

    /// Applies retention now (it also runs periodically); returns the segments deleted.
    pub async fn enforce_retention(&self) -> Result<usize, StorageError> {
        self.request(|reply| Command::Retention { reply: Some(reply) })
            .await
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.read().expect("snapshot lock").clone()
    }

    pub fn topic(&self, id: TopicId) -> Option<Arc<Topic>> {
        self.shared
            .topics
            .read()
            .expect("topics lock")
            .get(&id)
            .cloned()
    }

    /// Sets where retention learns which records readers still need.
    pub fn set_hold_source(&self, source: HoldSource) {
        *self.shared.holds.write().expect("holds lock") = Some(source);
    }

    /// The readers' holds now, for `sys.partitions`.
    pub fn holds(&self) -> Holds {
        self.shared.holds()
    }

    /// The first offset a partition still holds (0 for one the log does not have).
    pub fn log_start(&self, topic: TopicId, partition: PartitionId) -> Offset {
        self.topic(topic)
            .and_then(|t| t.partition(partition).ok().map(|p| p.log_start_offset()))
            .unwrap_or(Offset(0))
    }

    /// A receiver that changes after every commit, for readers that wait for new records.
    pub fn subscribe_commits(&self) -> watch::Receiver<u64> {
        self.shared.commits.subscribe()
    }

    /// Stops the writer after it has finished every append already queued.
    pub fn shutdown(&self) {
        // The uploader checkpoints once more (through the writer, still running).
        if let Some((stop, finished)) = self.uploader.lock().expect("lock").take() {
            let _ = stop.send(());
            if finished.recv_timeout(LAST_CHECKPOINT_WAIT).is_err() {
                tracing::error!("the last checkpoint to the object store did not finish in time");
            }
        }
        for stop in self.tickers.lock().expect("lock").drain(..) {
            let _ = stop.send(());
        }
        // Dropping the last sender lets the writer drain the queue, flush and exit (the
        // tickers drop their clones when they see the stop signal).
        self.commands.lock().expect("commands lock").take();
        let handle = self.writer.lock().expect("writer handle lock").take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.shared.config.dir)
            .finish_non_exhaustive()
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Sends the writer `command()` every `period` until the returned sender is used or dropped.
fn tick(
    name: &str,
    period: Duration,
    commands: &mpsc::Sender<Command>,
    command: fn() -> Command,
) -> Result<std::sync::mpsc::Sender<()>, StorageError> {
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let commands = commands.clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(period)
            {
                if commands.blocking_send(command()).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| StorageError::io(Path::new(name), e))?;
    Ok(stop_tx)
}

/// Keeps the commit records written ahead of their records' fsync (the `interval` flush
/// policy) whose records all reached the disk, in order, up to the first that names records
/// a crash of the machine lost; that one and every one after it are cut off. Appends stay
/// whole and a prefix of the commits survives, so a query's output stays with its
/// checkpoint. Returns the partitions the kept records name (`None` if none were kept):
/// their records may be only in the page cache, to be fsynced before anything follows them.
fn settle_unflushed(
    disk: &Disk,
    root: &Path,
    found: &mut OnDisk,
) -> Result<Option<HashSet<(TopicId, PartitionId)>>, StorageError> {
    let OnDisk::Current {
        replayed,
        valid_len,
        sequence,
        unflushed,
        ..
    } = found
    else {
        return Ok(None);
    };
    if unflushed.is_empty() {
        return Ok(None);
    }
    let topic_dirs: HashMap<TopicId, PathBuf> = topic_dirs(root)?
        .into_iter()
        .filter_map(|dir| Some((topic_id_of(&dir)?, dir)))
        .collect();
    // The commits replayed so far are durable with their records: scans start there.
    let durable = replayed.ends.clone();
    let mut intact: HashMap<(TopicId, PartitionId), Offset> = HashMap::new();
    let records = std::mem::take(unflushed);
    let total = records.len();
    for (kept, record) in records.into_iter().enumerate() {
        let mut whole = true;
        for &(topic, partition, end) in &record.commit.ends {
            let key = (topic, partition);
            let on_disk = match intact.get(&key) {
                Some(offset) => *offset,
                None => {
                    let from = durable.get(&key).copied().unwrap_or_default();
                    let offset = match topic_dirs.get(&topic) {
                        Some(dir) => {
                            partition::intact_end(disk, &partition_dir(dir, partition.0), from)?
                        }
                        None => from,
                    };
                    intact.insert(key, offset);
                    offset
                }
            };
            whole &= end <= on_disk;
        }
        if !whole {
            tracing::warn!(
                commit_log = %root.join(COMMIT_LOG_FILE).display(),
                lost_commits = total - kept,
                "the machine stopped before records written under the interval flush policy reached \
                 the disk: the commits naming them are cut off"
            );
            *valid_len = record.position;
            return Ok((kept > 0).then(|| intact.into_keys().collect()));
        }
        *sequence = record.sequence;
        replayed.apply(record.commit);
    }
    Ok(Some(intact.into_keys().collect()))
}

/// The directories under `topics/` (none if it does not exist yet).
fn topic_dirs(root: &Path) -> Result<Vec<PathBuf>, StorageError> {
    let topics_root = root.join("topics");
    let entries = match std::fs::read_dir(&topics_root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(StorageError::io(&topics_root, e)),
    };
    entries
        .map(|entry| {
            entry
                .map(|e| e.path())
                .map_err(|e| StorageError::io(&topics_root, e))
        })
        .collect()
}

/// The topic id a topic directory's name (`<name>-<id>`) carries.
fn topic_id_of(dir: &Path) -> Option<TopicId> {
    let name = dir.file_name()?.to_string_lossy();
    let (_, id) = name.rsplit_once('-')?;
    id.parse().ok().map(TopicId)
}

/// What a data directory without a commit log holds that only a commit log could account
/// for, if anything.
fn data_without_commit_log(root: &Path) -> Result<Option<String>, StorageError> {
    let mut found = vec![];
    let topics = root.join("topics");
    if topics.is_dir() {
        let entries = std::fs::read_dir(&topics).map_err(|e| StorageError::io(&topics, e))?;
        if entries.count() > 0 {
            found.push("topics/");
        }
    }
    if root.join("catalog.json").exists() {
        found.push("catalog.json");
    }
    Ok((!found.is_empty()).then(|| found.join(", ")))
}

/// Deals with topic directories the catalog does not name: a topic with an id below
/// `issued` was dropped (a crash came between the catalog commit and the deletion of its
/// files), so its deletion is finished; anything else is moved to the quarantine directory.
fn settle_unknown_topics(
    disk: &Disk,
    root: &Path,
    live: &HashMap<TopicId, Arc<Topic>>,
    issued: TopicId,
) -> Result<(), StorageError> {
    for dir in topic_dirs(root)? {
        match topic_id_of(&dir) {
            Some(id) if live.contains_key(&id) => {}
            Some(id) if id < issued && dir.is_dir() => {
                tracing::info!(dir = %dir.display(), "finishing the deletion of a dropped topic");
                disk.remove_dir_all(&dir)?;
            }
            _ => {
                quarantine(disk, root, &dir)?;
            }
        }
    }
    disk.sync_dir(&root.join("topics"))
}

/// Moves `path` (inside the data directory) to `quarantine/<time>/<same relative path>`.
pub fn quarantine(disk: &Disk, root: &Path, path: &Path) -> Result<PathBuf, StorageError> {
    let relative = path.strip_prefix(root).unwrap_or(path);
    let target = root
        .join(QUARANTINE_DIR)
        .join(now_ms().to_string())
        .join(relative);
    let parent = target.parent().expect("a path inside the quarantine");
    std::fs::create_dir_all(parent).map_err(|e| StorageError::io(parent, e))?;
    disk.forget_under(path);
    std::fs::rename(path, &target).map_err(|e| StorageError::io(path, e))?;
    disk.sync_dir(parent)?;
    if let Some(from) = path.parent() {
        disk.sync_dir(from)?;
    }
    tracing::warn!(
        from = %path.display(),
        to = %target.display(),
        "moved what the catalog does not account for into the quarantine; nothing was deleted"
    );
    Ok(target)
}
