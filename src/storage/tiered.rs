//! Tiered storage (`--object-store`): sealed segments copied to an object store, local
//! copies beyond `--local-retention-bytes` removed, reads served from the store when the
//! local copy is gone.
//!
//! ```text
//!  writer rolls a segment ─► sealed, local ─► uploader: .log, .index, .timeindex put
//!                                             under <prefix>/topics/<topic>-<id>/<p>/
//!                                          ─► remote.json of the partition rewritten
//!                                             (fsynced, renamed): now it is remote too
//!                         ─► past the local retention: the local .log removed (its
//!                            indexes stay); readers read ranges from the store
//! ```
//!
//! Nothing is removed locally before the partition's `remote.json` durably names the copy,
//! so a failed upload (retried with backoff) never costs data. Objects of segments that
//! retention or compaction removed, and of dropped topics, are deleted afterwards. The
//! store's `runnel.identity` object names the data directory that writes there: a second
//! server pointed at the same prefix is refused.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::buffer::MutableBuffer;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};

use super::StorageError;
use super::disk::Disk;
use super::segment::SegmentFile;
use super::types::Offset;

/// The partition file that lists its segments in the store.
pub const MANIFEST_FILE: &str = "remote.json";
/// The object naming the data directory that writes under a prefix.
const IDENTITY_OBJECT: &str = "runnel.identity";
/// The object naming the server process that writes under a prefix now.
const LEASE_OBJECT: &str = "runnel.lease";
/// Files up to this size are put whole; larger ones in parts of this size.
const PART_BYTES: usize = 8 * 1024 * 1024;
/// What one remote read fetches at least: the frame a reader asks for and those after it,
/// as readers go on to the next frame.
const READ_AHEAD_BYTES: u64 = 4 * 1024 * 1024;
/// Objects fetched side by side by [`Tier::get_all`].
const FETCH_CONCURRENCY: usize = 16;
/// Segment indexes a restore fetches in one [`Tier::get_all`].
const RESTORE_INDEX_BATCH: usize = 256;

/// Where and how segments are tiered.
#[derive(Debug, Clone)]
pub struct TierConfig {
    /// `file:///dir` or `s3://bucket/prefix` (credentials, region and endpoint from the
    /// usual `AWS_…` environment variables).
    pub url: String,
    /// Per partition, the bytes of sealed segments kept on local disk once they are in the
    /// store (the active segment is always local).
    pub local_retention_bytes: u64,
    /// How often the uploader looks for sealed segments to copy.
    pub upload_interval: Duration,
    /// How long the copy of a segment the partition no longer has (retention, compaction)
    /// is kept for readers that may still be on it.
    pub retired_grace: Duration,
    /// How often the committed state is checkpointed to the store (and at shutdown).
    pub checkpoint_interval: Duration,
}

/// [`TierConfig::retired_grace`] unless configured.
pub const RETIRED_GRACE: Duration = Duration::from_secs(600);

/// An object store under a prefix, with the runtime its client runs on. Its calls block:
/// they are made from the log's threads and readers' blocking threads, never from a task.
pub struct Tier {
    store: Arc<dyn ObjectStore>,
    prefix: Key,
    /// `None` only while dropped.
    runtime: Option<tokio::runtime::Runtime>,
    pub config: TierConfig,
}

impl Drop for Tier {
    fn drop(&mut self) {
        // Dropped from wherever the log was, perhaps a task: without waiting.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier")
            .field("url", &self.config.url)
            .finish_non_exhaustive()
    }
}

fn store_error(what: &str, e: object_store::Error) -> StorageError {
    StorageError::Failed(format!("object store: {what}: {e}"))
}

impl Tier {
    /// Connects to the store `config.url` names (no request is made yet).
    pub fn connect(config: TierConfig) -> Result<Arc<Tier>, StorageError> {
        let invalid =
            |why: String| StorageError::Failed(format!("--object-store {}: {why}", config.url));
        let url = url::Url::parse(&config.url).map_err(|e| invalid(e.to_string()))?;
        let (store, prefix): (Arc<dyn ObjectStore>, Key) = match url.scheme() {
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|()| invalid("not a local path".into()))?;
                std::fs::create_dir_all(&dir).map_err(|e| invalid(e.to_string()))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| invalid(e.to_string()))?;
                (Arc::new(store), Key::default())
            }
            "s3" | "s3a" => {
                // A request gives up after half a minute of retries (the default is three
                // minutes, which a start-up or a shutdown would wait out).
                let retry = object_store::RetryConfig {
                    max_retries: 5,
                    retry_timeout: Duration::from_secs(30),
                    ..Default::default()
                };
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(config.url.as_str())
                    .with_retry(retry);
                // An endpoint on plain HTTP (a local S3-compatible server) is meant.
                let plain = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
                    .iter()
                    .filter_map(|v| std::env::var(v).ok())
                    .any(|e| e.starts_with("http://"));
                if plain {
                    builder = builder.with_allow_http(true);
                }
                let store = builder.build().map_err(|e| invalid(e.to_string()))?;
                let prefix =
                    Key::parse(url.path().trim_matches('/')).map_err(|e| invalid(e.to_string()))?;
                (Arc::new(store), prefix)
            }
            other => {
                return Err(invalid(format!(
                    "the scheme {other}:// is not supported (file:// or s3://)"
                )));
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("runnel-object-store")
            .enable_all()
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Arc::new(Tier {
            store,
            prefix,
            runtime: Some(runtime),
            config,
        }))
    }

    /// The key of `relative`, a path under the data directory.
    pub fn key(&self, relative: &Path) -> Key {
        let mut key = self.prefix.clone();
        for part in relative.iter() {
            key = key.join(part.to_string_lossy().as_ref());
        }
        key
    }

    /// Runs `future` on the store's runtime, waiting for it. A thread of another runtime
    /// (a reader's blocking thread, or, for the rare read of an evicted segment from a
    /// task, a worker) must not enter this one: it waits on a thread of its own.
    fn block_on<F>(&self, future: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        let runtime = self
            .runtime
            .as_ref()
            .expect("the runtime lives as long as the tier");
        if tokio::runtime::Handle::try_current().is_err() {
            return runtime.block_on(future);
        }
        std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(future))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Claims the prefix for the data directory `identity`, or refuses it when another one
    /// claimed it.
    pub fn claim(&self, identity: &str) -> Result<(), StorageError> {
        let key = self.prefix.clone().join(IDENTITY_OBJECT);
        let claimed = self.block_on(async {
            let put = self
                .store
                .put_opts(
                    &key,
                    PutPayload::from(identity.to_string()),
                    PutOptions {
                        mode: PutMode::Create,
                        ..Default::default()
                    },
                )
                .await;
            match put {
                Ok(_) => Ok(None),
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let bytes = self.store.get(&key).await?.bytes().await?;
                    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
                }
                Err(e) => Err(e),
            }
        });
        match claimed.map_err(|e| store_error(&format!("claiming {key}"), e))? {
            Some(other) if other.trim() != identity => Err(StorageError::Failed(format!(
                "the object store at {} belongs to another data directory ({}); this one is {identity}: \
                 point each server at its own prefix",
                self.config.url,
                other.trim()
            ))),
            _ => Ok(()),
        }
    }

    /// Takes the prefix for this process: whoever held it stops writing at its next look
    /// ([`Tier::holds_lease`]). Returns the lease.
    pub fn take_lease(&self, identity: &str) -> Result<String, StorageError> {
        let lease = format!(
            "{identity} pid {} on {} at {}",
            std::process::id(),
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim(),
            super::now_ms()
        );
        self.put(
            &self.prefix.clone().join(LEASE_OBJECT),
            lease.clone().into_bytes(),
            false,
        )?;
        Ok(lease)
    }

    /// Whether `lease` is still the prefix's (no other server took it over since); the
    /// holder's if not.
    pub fn holds_lease(&self, lease: &str) -> Result<Result<(), String>, StorageError> {
        let current = self.get(&self.prefix.clone().join(LEASE_OBJECT))?;
        let current = current
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Ok(match current == lease {
            true => Ok(()),
            false => Err(current),
        })
    }

    /// Copies the local file `path` to `key`.
    pub fn upload(&self, path: &Path, key: &Key) -> Result<(), StorageError> {
        let io = |e: io::Error| StorageError::io(path, e);
        let len = std::fs::metadata(path).map_err(io)?.len();
        self.block_on(async {
            if len as usize <= PART_BYTES {
                let bytes = tokio::fs::read(path).await.map_err(io)?;
                self.store
                    .put(key, PutPayload::from(bytes))
                    .await
                    .map_err(|e| store_error(&format!("writing {key}"), e))?;
                return Ok(());
            }
            let upload = self
                .store
                .put_multipart(key)
                .await
                .map_err(|e| store_error(&format!("writing {key}"), e))?;
            let mut parts = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            let mut file = tokio::fs::File::open(path).await.map_err(io)?;
            let mut buf = vec![0u8; PART_BYTES];
            loop {
                let n = tokio::io::AsyncReadExt::read(&mut file, &mut buf)
                    .await
                    .map_err(io)?;
                if n == 0 {
                    break;
                }
                parts
                    .wait_for_capacity(4)
                    .await
                    .map_err(|e| store_error(&format!("writing {key}"), e))?;
                parts.write(&buf[..n]);
            }
            parts
                .finish()
                .await
                .map_err(|e| store_error(&format!("writing {key}"), e))?;
            Ok(())
        })
    }

    /// The bytes of `key` in `range`.
    pub fn read(&self, key: &Key, range: Range<u64>) -> io::Result<Bytes> {
        self.block_on(self.store.get_range(key, range))
            .map_err(|e| io::Error::other(format!("object store: reading {key}: {e}")))
    }

    /// The whole object `key`, or `None` if there is none.
    pub fn get(&self, key: &Key) -> Result<Option<Bytes>, StorageError> {
        self.block_on(self.get_object(key))
    }

    /// The objects `keys`, in order, fetched up to [`FETCH_CONCURRENCY`] at a time (a
    /// store serves many requests side by side, each at its own latency).
    pub fn get_all(&self, keys: &[Key]) -> Result<Vec<Option<Bytes>>, StorageError> {
        self.block_on(
            futures::stream::iter(keys)
                .map(|key| self.get_object(key))
                .buffered(FETCH_CONCURRENCY)
                .try_collect(),
        )
    }

    async fn get_object(&self, key: &Key) -> Result<Option<Bytes>, StorageError> {
        let got = match self.store.get(key).await {
            Ok(found) => found.bytes().await.map(Some),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        };
        got.map_err(|e| store_error(&format!("reading {key}"), e))
    }

    /// Deletes `key`; one that is not there is fine.
    pub fn delete(&self, key: &Key) -> Result<(), StorageError> {
        match self.block_on(self.store.delete(key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error(&format!("deleting {key}"), e)),
        }
    }

    /// The keys under `relative` (a directory under the data directory).
    pub fn list(&self, relative: &Path) -> Result<Vec<Key>, StorageError> {
        let prefix = self.key(relative);
        self.block_on(async {
            self.store
                .list(Some(&prefix))
                .map_ok(|meta| meta.location)
                .try_collect::<Vec<_>>()
                .await
        })
        .map_err(|e| store_error(&format!("listing {prefix}"), e))
    }

    /// The directories right under `relative`, by name.
    pub fn list_dirs(&self, relative: &Path) -> Result<Vec<String>, StorageError> {
        let prefix = self.key(relative);
        let listed = self
            .block_on(self.store.list_with_delimiter(Some(&prefix)))
            .map_err(|e| store_error(&format!("listing {prefix}"), e))?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }
}

/// A sealed segment as the store holds it: its files' base offset and generation, the
/// offset after its last record and its log's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSegment {
    pub base: u64,
    pub generation: u32,
    pub end: u64,
    pub size: u64,
}

impl RemoteSegment {
    pub fn file(&self) -> SegmentFile {
        SegmentFile {
            base: Offset(self.base),
            generation: self.generation,
        }
    }
}

/// A segment's copy in the store that the partition no longer lists, since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    pub segment: RemoteSegment,
    pub since_ms: i64,
}

/// A partition's `remote.json`: the segments the store holds for it, ascending, and the
/// copies waiting to be deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub segments: Vec<RemoteSegment>,
    #[serde(default)]
    pub retired: Vec<Retired>,
}

impl Manifest {
    /// The manifest in partition directory `dir` (empty if there is none).
    pub fn read(dir: &Path) -> Result<Manifest, StorageError> {
        let path = dir.join(MANIFEST_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                StorageError::corruption(&path, 0, format!("not a segment manifest: {e}"))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => Err(StorageError::io(&path, e)),
        }
    }

    /// Replaces the manifest in `dir` durably: written beside it, fsynced, renamed over it.
    pub fn write(&self, disk: &Disk, dir: &Path) -> Result<(), StorageError> {
        let path = dir.join(MANIFEST_FILE);
        let scratch = dir.join(format!("{MANIFEST_FILE}.new"));
        let bytes = serde_json::to_vec(self)
            .map_err(|e| StorageError::Failed(format!("encoding a segment manifest: {e}")))?;
        disk.write_file(&scratch, &[&bytes])?;
        disk.rename(&scratch, &path)?;
        disk.sync_dir(dir)
    }

    pub fn find(&self, file: SegmentFile) -> Option<&RemoteSegment> {
        self.segments.iter().find(|s| s.file() == file)
    }
}

/// A sealed segment's log in the store, read by ranges. The last range fetched is kept, so
/// a reader going from a frame's header to the frame and on to the next frames makes one
/// request per [`READ_AHEAD_BYTES`].
#[derive(Debug)]
pub struct RemoteLog {
    tier: Arc<Tier>,
    pub key: Key,
    pub size: u64,
    last: Mutex<Option<(u64, Bytes)>>,
}

impl RemoteLog {
    pub fn new(tier: Arc<Tier>, key: Key, size: u64) -> RemoteLog {
        RemoteLog {
            tier,
            key,
            size,
            last: Mutex::new(None),
        }
    }

    /// Up to `len` bytes at `position` (fewer only at the end of the log), in a buffer
    /// aligned as Arrow wants.
    pub fn read(&self, position: u64, len: usize) -> io::Result<MutableBuffer> {
        let end = (position + len as u64).min(self.size);
        if position >= end {
            return Ok(MutableBuffer::new(0));
        }
        let cached = {
            let last = self.last.lock().expect("remote read lock");
            last.as_ref()
                .filter(|(at, bytes)| *at <= position && end <= at + bytes.len() as u64)
                .map(|(at, bytes)| bytes.slice((position - at) as usize..(end - at) as usize))
        };
        let bytes = match cached {
            Some(bytes) => bytes,
            None => {
                let fetch_end = end.max(position + READ_AHEAD_BYTES).min(self.size);
                let fetched = self.tier.read(&self.key, position..fetch_end)?;
                let wanted = fetched.slice(..(end - position) as usize);
                *self.last.lock().expect("remote read lock") = Some((position, fetched));
                wanted
            }
        };
        let mut buf = MutableBuffer::with_capacity(bytes.len());
        buf.extend_from_slice(&bytes);
        Ok(buf)
    }
}

/// The committed state of a data directory at a moment, with the sealed segments holding
/// every record of it: what a new machine restores from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The data directory's identity.
    pub identity: String,
    pub taken_at_ms: i64,
    /// A commit log holding the state (its own object beside the checkpoint's).
    #[serde(skip)]
    pub commit_log: Vec<u8>,
    pub partitions: Vec<PartitionCheckpoint>,
}

/// A partition's directory (relative to the data directory) and its sealed segments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionCheckpoint {
    pub dir: String,
    pub segments: Vec<RemoteSegment>,
}

/// Where checkpoints go: `checkpoints/<sequence>/{commit.log, checkpoint.json}`, the JSON
/// written last (once every object it names is there).
const CHECKPOINTS: &str = "checkpoints";
const CHECKPOINT_OBJECT: &str = "checkpoint.json";
/// Where a restore stages the data directory's files before moving them in place.
pub const RESTORE_DIR: &str = ".restore";

impl Tier {
    /// Writes `bytes` to `key`; with `create`, only if there is no such object yet.
    fn put(&self, key: &Key, bytes: Vec<u8>, create: bool) -> Result<(), StorageError> {
        let mode = match create {
            true => PutMode::Create,
            false => PutMode::Overwrite,
        };
        self.block_on(self.store.put_opts(
            key,
            PutPayload::from(bytes),
            PutOptions {
                mode,
                ..Default::default()
            },
        ))
        .map(|_| ())
        .map_err(|e| store_error(&format!("writing {key}"), e))
    }

    /// The sequence numbers of the checkpoints in the store, ascending (complete or not).
    fn checkpoint_sequences(&self) -> Result<Vec<u64>, StorageError> {
        let mut sequences: Vec<u64> = self
            .list_dirs(Path::new(CHECKPOINTS))?
            .iter()
            .filter_map(|name| name.parse().ok())
            .collect();
        sequences.sort_unstable();
        Ok(sequences)
    }

    fn checkpoint_dir(sequence: u64) -> PathBuf {
        Path::new(CHECKPOINTS).join(format!("{sequence:020}"))
    }

    /// Stores `checkpoint` as the newest one and deletes those before it; its sequence.
    pub fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<u64, StorageError> {
        let earlier = self.checkpoint_sequences()?;
        let sequence = earlier.last().map_or(1, |last| last + 1);
        let dir = Tier::checkpoint_dir(sequence);
        self.put(
            &self.key(&dir.join(super::COMMIT_LOG_FILE)),
            checkpoint.commit_log.clone(),
            false,
        )?;
        let json = serde_json::to_vec(checkpoint)
            .map_err(|e| StorageError::Failed(format!("encoding a checkpoint: {e}")))?;
        self.put(&self.key(&dir.join(CHECKPOINT_OBJECT)), json, true)?;
        for old in earlier {
            for key in self.list(&Tier::checkpoint_dir(old))? {
                self.delete(&key)?;
            }
        }
        Ok(sequence)
    }

    /// The newest complete checkpoint, with its sequence, if there is one.
    pub fn latest_checkpoint(&self) -> Result<Option<(u64, Checkpoint)>, StorageError> {
        for sequence in self.checkpoint_sequences()?.into_iter().rev() {
            let dir = Tier::checkpoint_dir(sequence);
            let Some(json) = self.get(&self.key(&dir.join(CHECKPOINT_OBJECT)))? else {
                continue; // cut short while it was written
            };
            let mut checkpoint: Checkpoint = serde_json::from_slice(&json).map_err(|e| {
                StorageError::Failed(format!("checkpoint {sequence} in the object store: {e}"))
            })?;
            checkpoint.commit_log = self
                .get(&self.key(&dir.join(super::COMMIT_LOG_FILE)))?
                .ok_or_else(|| {
                    StorageError::Failed(format!(
                        "checkpoint {sequence} in the object store has no commit log"
                    ))
                })?
                .to_vec();
            return Ok(Some((sequence, checkpoint)));
        }
        Ok(None)
    }
}

/// Makes the empty data directory `root` the one the store's newest checkpoint describes:
/// its commit log, and per partition a `remote.json` naming its segments (read from the
/// store from then on) and their indexes. Staged in [`RESTORE_DIR`] and moved in place, the
/// commit log last; a restore cut short is finished by the next start. False if the store
/// has no checkpoint.
pub fn restore(tier: &Tier, root: &Path, disk: &Disk) -> Result<bool, StorageError> {
    let staging = root.join(RESTORE_DIR);
    if !staging.join(super::COMMIT_LOG_FILE).exists() {
        let Some((sequence, checkpoint)) = tier.latest_checkpoint()? else {
            return Ok(false);
        };
        if staging.exists() {
            disk.remove_dir_all(&staging)?;
        }
        let topics = staging.join("topics");
        let mut segments = 0;
        for partition in &checkpoint.partitions {
            let dir = staging.join(&partition.dir);
            if !dir.starts_with(&topics) || partition.dir.contains("..") {
                return Err(StorageError::Failed(format!(
                    "checkpoint {sequence} names a partition outside the topics: {}",
                    partition.dir
                )));
            }
            std::fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
            Manifest {
                segments: partition.segments.clone(),
                retired: vec![],
            }
            .write(disk, &dir)?;
            segments += partition.segments.len();
        }
        // Each segment's indexes, fetched side by side now rather than one after another
        // as the log opens (which rebuilds any the store lacks from the frames).
        let indexes: Vec<PathBuf> = checkpoint
            .partitions
            .iter()
            .flat_map(|partition| {
                let dir = Path::new(&partition.dir);
                partition.segments.iter().flat_map(move |segment| {
                    [
                        segment.file().offset_index(dir),
                        segment.file().time_index(dir),
                    ]
                })
            })
            .collect();
        for batch in indexes.chunks(RESTORE_INDEX_BATCH) {
            let keys: Vec<Key> = batch.iter().map(|relative| tier.key(relative)).collect();
            for (relative, bytes) in batch.iter().zip(tier.get_all(&keys)?) {
                if let Some(bytes) = bytes {
                    disk.write_file(&staging.join(relative), &[&bytes])?;
                }
            }
        }
        std::fs::create_dir_all(&topics).map_err(|e| StorageError::io(&topics, e))?;
        for topic in std::fs::read_dir(&topics).map_err(|e| StorageError::io(&topics, e))? {
            let topic = topic.map_err(|e| StorageError::io(&topics, e))?.path();
            disk.sync_dir(&topic)?;
        }
        disk.sync_dir(&topics)?;
        disk.write_file(
            &staging.join(super::COMMIT_LOG_FILE),
            &[&checkpoint.commit_log],
        )?;
        disk.sync_dir(&staging)?;
        tracing::info!(
            checkpoint = sequence,
            taken_at_ms = checkpoint.taken_at_ms,
            partitions = checkpoint.partitions.len(),
            segments,
            "restoring the data directory from the object store"
        );
    }
    // Moved in place: the topics, then the commit log that names them.
    let topics = staging.join("topics");
    if topics.exists() {
        disk.rename(&topics, &root.join("topics"))?;
    }
    disk.rename(
        &staging.join(super::COMMIT_LOG_FILE),
        &root.join(super::COMMIT_LOG_FILE),
    )?;
    disk.sync_dir(root)?;
    disk.remove_dir_all(&staging)?;
    Ok(true)
}

/// A data directory's tier: files under `root` are objects under the tier's prefix at the
/// same relative path.
#[derive(Debug, Clone)]
pub struct Tiered {
    pub tier: Arc<Tier>,
    pub root: PathBuf,
}

impl Tiered {
    /// The key of the local file `path`.
    pub fn key(&self, path: &Path) -> Key {
        self.tier.key(path.strip_prefix(&self.root).unwrap_or(path))
    }

    /// The store's copy of the log file `path`, of `size` bytes.
    pub fn log(&self, path: &Path, size: u64) -> Arc<RemoteLog> {
        Arc::new(RemoteLog::new(self.tier.clone(), self.key(path), size))
    }

    /// The store's copy of the local file `path`, if it has one.
    pub fn fetch(&self, path: &Path) -> Result<Option<Bytes>, StorageError> {
        self.tier.get(&self.key(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(dir: &Path) -> Arc<Tier> {
        Tier::connect(TierConfig {
            url: format!("file://{}", dir.display()),
            local_retention_bytes: 0,
            upload_interval: Duration::from_millis(10),
            retired_grace: RETIRED_GRACE,
            checkpoint_interval: Duration::from_secs(3600),
        })
        .unwrap()
    }

    #[test]
    fn files_go_up_and_come_back_by_range() {
        let local = tempfile::tempdir().unwrap();
        let remote = tempfile::tempdir().unwrap();
        let tier = tier(remote.path());
        // Larger than a part: a multipart upload.
        let content: Vec<u8> = (0..PART_BYTES * 2 + 12345)
            .map(|i| (i % 251) as u8)
            .collect();
        let path = local.path().join("00000000000000000000.log");
        std::fs::write(&path, &content).unwrap();
        let key = tier.key(Path::new("topics/t-1/0/00000000000000000000.log"));
        tier.upload(&path, &key).unwrap();
        let log = RemoteLog::new(tier.clone(), key.clone(), content.len() as u64);
        for (at, len) in [
            (0, 10),
            (5, 100),
            (PART_BYTES as u64 - 3, 10),
            (content.len() as u64 - 5, 100),
        ] {
            let read = log.read(at, len).unwrap();
            let end = (at as usize + len).min(content.len());
            assert_eq!(read.as_slice(), &content[at as usize..end], "at {at}");
        }
        assert_eq!(
            tier.list(Path::new("topics/t-1")).unwrap(),
            vec![key.clone()]
        );
        assert_eq!(tier.list_dirs(Path::new("topics")).unwrap(), vec!["t-1"]);
        tier.delete(&key).unwrap();
        tier.delete(&key).unwrap();
        assert!(tier.get(&key).unwrap().is_none());
    }

    #[test]
    fn a_prefix_serves_one_data_directory() {
        let remote = tempfile::tempdir().unwrap();
        tier(remote.path()).claim("aaaa").unwrap();
        tier(remote.path()).claim("aaaa").unwrap();
        let refused = tier(remote.path()).claim("bbbb").unwrap_err();
        assert!(
            refused.to_string().contains("another data directory"),
            "{refused}"
        );
    }

    #[test]
    fn manifests_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::default();
        assert_eq!(Manifest::read(dir.path()).unwrap(), Manifest::default());
        let manifest = Manifest {
            segments: vec![RemoteSegment {
                base: 0,
                generation: 0,
                end: 10,
                size: 1000,
            }],
            retired: vec![],
        };
        manifest.write(&disk, dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), manifest);
        std::fs::write(dir.path().join(MANIFEST_FILE), b"{not json").unwrap();
        assert!(Manifest::read(dir.path()).is_err());
    }
}
