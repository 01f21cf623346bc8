//! The uploader of tiered storage ([`super::tiered`]): a thread that, every
//! [`TierConfig::upload_interval`](super::tiered::TierConfig), copies each partition's
//! committed sealed segments to the object store, records them in the partition's
//! `remote.json`, removes the local logs beyond the local retention, and deletes the objects
//! of segments the partition no longer has (after a grace period, for readers still on
//! them) and of dropped topics. A failed pass is retried with backoff; nothing local is
//! removed before its copy is recorded.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::partition::Partition;
use super::segment::Segment;
use super::tiered::{Manifest, RemoteSegment, Retired, Tiered};
use super::types::now_ms;
use super::{Shared, StorageError, Topic};

/// How often the store is listed for topics that were dropped.
const DROPPED_TOPICS_EVERY: Duration = Duration::from_secs(60);
/// The longest wait between attempts after failures.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

pub(super) struct Uploader {
    shared: Arc<Shared>,
    tiered: Tiered,
    /// Each partition's manifest as last written, by directory.
    manifests: HashMap<PathBuf, Manifest>,
    last_dropped_check: Option<Instant>,
}

impl Uploader {
    pub(super) fn new(shared: Arc<Shared>, tiered: Tiered) -> Uploader {
        Uploader {
            shared,
            tiered,
            manifests: HashMap::new(),
            last_dropped_check: None,
        }
    }

    /// Runs passes until `stop` says so (or its sender is gone).
    pub(super) fn run(mut self, stop: Receiver<()>) {
        let interval = self.tiered.tier.config.upload_interval;
        let mut failures: u32 = 0;
        loop {
            let wait = match self.pass() {
                Ok(()) => {
                    failures = 0;
                    interval
                }
                Err(e) => {
                    failures += 1;
                    let wait = (interval * 2u32.saturating_pow(failures.min(16))).min(BACKOFF_MAX);
                    tracing::warn!(error = %e, failures, retry_in_s = wait.as_secs_f64(), "tiered storage: a pass failed; local data stays");
                    wait
                }
            };
            match stop.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        }
    }

    /// One pass over every partition, then (now and then) over the store's topics.
    pub(super) fn pass(&mut self) -> Result<(), StorageError> {
        let topics: Vec<Arc<Topic>> = self
            .shared
            .topics
            .read()
            .expect("topics lock")
            .values()
            .cloned()
            .collect();
        let snapshot = self.shared.snapshot.read().expect("snapshot lock").clone();
        let mut first_error = None;
        for topic in &topics {
            for partition in &topic.partitions {
                let committed = snapshot.high_watermark(topic.spec.id, partition.id);
                if let Err(e) = self.partition(partition, committed) {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if self
            .last_dropped_check
            .is_none_or(|at| at.elapsed() >= DROPPED_TOPICS_EVERY)
        {
            self.delete_dropped_topics(&topics)?;
            self.last_dropped_check = Some(Instant::now());
        }
        Ok(())
    }

    fn manifest(&mut self, dir: &std::path::Path) -> Result<&mut Manifest, StorageError> {
        if !self.manifests.contains_key(dir) {
            let manifest = Manifest::read(dir)?;
            self.manifests.insert(dir.to_path_buf(), manifest);
        }
        Ok(self.manifests.get_mut(dir).expect("inserted"))
    }

    fn partition(
        &mut self,
        partition: &Partition,
        committed: super::Offset,
    ) -> Result<(), StorageError> {
        let segments = partition.segments();
        let disk = self.shared.config.disk.clone();
        let dir = partition.dir.clone();
        let tiered = self.tiered.clone();
        let mut manifest = self.manifest(&dir)?.clone();
        let mut changed = false;

        // Sealed segments whose records all committed, not yet in the store.
        for pair in segments.windows(2) {
            let (segment, next) = (&pair[0], &pair[1]);
            if segment.remote().is_some() || next.base_offset > committed {
                continue;
            }
            upload(&tiered, &dir, segment)?;
            let copy = RemoteSegment {
                base: segment.base_offset.0,
                generation: segment.file.generation,
                end: next.base_offset.0,
                size: segment.size_bytes(),
            };
            manifest.segments.retain(|s| s.file() != copy.file());
            manifest.segments.push(copy);
            manifest.segments.sort_by_key(|s| (s.base, s.generation));
            // Recorded durably before anything may rely on it.
            manifest.write(&disk, &dir)?;
            segment.set_remote(tiered.log(&segment.path, copy.size));
            tracing::debug!(segment = %segment.path.display(), "copied to the object store");
        }

        // Copies of segments the partition no longer has (retention, compaction): retired,
        // then deleted once no reader can still be on them.
        let listed: HashSet<_> = segments.iter().map(|s| s.file).collect();
        let now = now_ms();
        let grace_ms = tiered.tier.config.retired_grace.as_millis() as i64;
        let (kept, gone): (Vec<RemoteSegment>, Vec<RemoteSegment>) = manifest
            .segments
            .iter()
            .partition(|s| listed.contains(&s.file()));
        if !gone.is_empty() {
            manifest.segments = kept;
            manifest
                .retired
                .extend(gone.into_iter().map(|segment| Retired {
                    segment,
                    since_ms: now,
                }));
            changed = true;
        }
        let (due, waiting): (Vec<Retired>, Vec<Retired>) = manifest
            .retired
            .iter()
            .partition(|r| now - r.since_ms >= grace_ms);
        for retired in &due {
            let file = retired.segment.file();
            for path in [
                file.log(&dir),
                file.offset_index(&dir),
                file.time_index(&dir),
            ] {
                tiered.tier.delete(&tiered.key(&path))?;
            }
        }
        if !due.is_empty() {
            manifest.retired = waiting;
            changed = true;
        }
        if changed {
            manifest.write(&disk, &dir)?;
        }
        *self.manifest(&dir)? = manifest;

        // Local logs beyond the local retention, oldest first, of segments in the store.
        let limit = tiered.tier.config.local_retention_bytes;
        let sealed = &segments[..segments.len() - 1];
        let mut local: u64 = sealed
            .iter()
            .filter(|s| s.is_local())
            .map(|s| s.size_bytes())
            .sum();
        for segment in sealed.iter().filter(|s| s.is_local()) {
            if local <= limit || segment.remote().is_none() {
                break;
            }
            segment.evict_local()?;
            local -= segment.size_bytes();
            tracing::debug!(segment = %segment.path.display(), "local copy removed; read from the object store");
        }
        Ok(())
    }

    /// Deletes the objects of topics the log no longer has.
    fn delete_dropped_topics(&self, topics: &[Arc<Topic>]) -> Result<(), StorageError> {
        let root = &self.shared.config.dir;
        let live: HashSet<String> = topics
            .iter()
            .filter_map(|t| t.dir.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        for name in self.tiered.tier.list_dirs(&PathBuf::from("topics"))? {
            if live.contains(&name) {
                continue;
            }
            let relative = PathBuf::from("topics").join(&name);
            // A topic created after the list was taken is live now.
            if root.join(&relative).exists() {
                continue;
            }
            for key in self.tiered.tier.list(&relative)? {
                self.tiered.tier.delete(&key)?;
            }
            tracing::info!(topic = %name, "deleted a dropped topic's objects");
        }
        Ok(())
    }
}

/// Copies a sealed segment's files: its indexes, then its log.
fn upload(tiered: &Tiered, dir: &std::path::Path, segment: &Segment) -> Result<(), StorageError> {
    let file = segment.file;
    for path in [file.offset_index(dir), file.time_index(dir), file.log(dir)] {
        tiered.tier.upload(&path, &tiered.key(&path))?;
    }
    Ok(())
}
