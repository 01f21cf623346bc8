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
use super::{Command, Shared, StorageError, Topic};
use tokio::sync::{mpsc, oneshot};

/// How often the store is listed for topics that were dropped.
const DROPPED_TOPICS_EVERY: Duration = Duration::from_secs(60);
/// The longest wait between attempts after failures.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

pub(super) struct Uploader {
    shared: Arc<Shared>,
    tiered: Tiered,
    /// To the writer, for checkpoints (dropped when the uploader stops).
    commands: mpsc::Sender<Command>,
    /// Each partition's manifest as last written, by directory.
    manifests: HashMap<PathBuf, Manifest>,
    last_dropped_check: Option<Instant>,
    /// The last checkpoint stored: when it was taken, and the topic directories it names.
    last_checkpoint: Option<(Instant, i64, HashSet<String>)>,
    lease: Lease,
}

/// This server's hold on the store's prefix ([`Tier::take_lease`](super::tiered::Tier)).
enum Lease {
    /// Not taken yet: taken before the first write (when the store could not be reached as
    /// the uploader started).
    None,
    /// Taken; whether it was found still ours since the current pass began.
    Held { lease: String, checked: bool },
    /// Another server took it: this one writes nothing more there.
    Lost,
}

impl Uploader {
    pub(super) fn new(
        shared: Arc<Shared>,
        tiered: Tiered,
        commands: mpsc::Sender<Command>,
    ) -> Uploader {
        Uploader {
            shared,
            tiered,
            commands,
            manifests: HashMap::new(),
            last_dropped_check: None,
            last_checkpoint: None,
            lease: Lease::None,
        }
    }

    /// Before a write to the store (a copy, a deletion, a checkpoint) or the removal of a
    /// local copy: the lease is taken, or found still ours once per pass (a store that sees
    /// no writes is not asked). An error once another server took it over.
    fn guard(&mut self) -> Result<(), StorageError> {
        let tier = &self.tiered.tier;
        match &mut self.lease {
            Lease::Lost => {}
            Lease::None => {
                let lease = tier.take_lease(&self.shared.identity.hex())?;
                self.lease = Lease::Held {
                    lease,
                    checked: true,
                };
                return Ok(());
            }
            Lease::Held { checked: true, .. } => return Ok(()),
            Lease::Held { lease, checked } => match tier.holds_lease(lease)? {
                Ok(()) => {
                    *checked = true;
                    return Ok(());
                }
                Err(holder) => {
                    tracing::error!(holder = %holder, "another server took over this data directory's object store; this one no longer writes there (its local data stays)");
                    self.lease = Lease::Lost;
                }
            },
        }
        Err(StorageError::Refused(
            "another server took over this data directory's object store".into(),
        ))
    }

    /// Runs passes, and checkpoints when they are due, until `stop` says so; then takes a
    /// last checkpoint (a server stopped cleanly can be restored whole) and says `done`.
    pub(super) fn run(mut self, stop: Receiver<()>, done: std::sync::mpsc::Sender<()>) {
        let config = self.tiered.tier.config.clone();
        // Taken at the start, not at the first write: the server started last holds it.
        match self.tiered.tier.take_lease(&self.shared.identity.hex()) {
            Ok(lease) => {
                self.lease = Lease::Held {
                    lease,
                    checked: true,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "tiered storage: could not take the object store's lease; will retry")
            }
        }
        let started = Instant::now();
        let mut failures: u32 = 0;
        let mut wait = config.upload_interval;
        while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(wait) {
            let since = self
                .last_checkpoint
                .as_ref()
                .map_or(started, |(at, ..)| *at);
            let outcome = match since.elapsed() >= config.checkpoint_interval {
                true => self.checkpoint(),
                false => self.pass(),
            };
            if matches!(self.lease, Lease::Lost) {
                let _ = done.send(());
                return;
            }
            wait = match outcome {
                Ok(()) => {
                    failures = 0;
                    config.upload_interval
                }
                Err(e) => {
                    failures += 1;
                    let wait = (config.upload_interval * 2u32.saturating_pow(failures.min(16)))
                        .min(BACKOFF_MAX);
                    tracing::warn!(error = %e, failures, retry_in_s = wait.as_secs_f64(), "tiered storage: a pass failed; local data stays");
                    wait
                }
            };
        }
        match self.checkpoint() {
            Ok(()) => tracing::info!("checkpointed to the object store at shutdown"),
            Err(e) => {
                tracing::error!(error = %e, "could not checkpoint to the object store at shutdown; the last checkpoint stands")
            }
        }
        let _ = done.send(());
    }

    /// Seals the active segments holding records, copies every sealed segment, and stores
    /// the committed state as the newest checkpoint.
    pub(super) fn checkpoint(&mut self) -> Result<(), StorageError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .blocking_send(Command::Checkpoint { reply })
            .map_err(|_| StorageError::ShutDown)?;
        let checkpoint = answer
            .blocking_recv()
            .map_err(|_| StorageError::ShutDown)??;
        self.pass()?;
        let root = self.shared.config.dir.clone();
        for partition in &checkpoint.partitions {
            let manifest = self.manifest(&root.join(&partition.dir))?;
            if let Some(missing) = partition
                .segments
                .iter()
                .find(|s| manifest.find(s.file()).is_none())
            {
                return Err(StorageError::Failed(format!(
                    "checkpoint: the segment of {} at offset {} is not in the object store yet",
                    partition.dir, missing.base
                )));
            }
        }
        self.guard()?;
        let sequence = self.tiered.tier.put_checkpoint(&checkpoint)?;
        let topics = checkpoint
            .partitions
            .iter()
            .filter_map(|p| p.dir.split('/').nth(1).map(str::to_string))
            .collect();
        self.last_checkpoint = Some((Instant::now(), checkpoint.taken_at_ms, topics));
        tracing::debug!(
            sequence,
            partitions = checkpoint.partitions.len(),
            "checkpointed to the object store"
        );
        Ok(())
    }

    /// One pass over every partition, then (now and then) over the store's topics.
    pub(super) fn pass(&mut self) -> Result<(), StorageError> {
        if let Lease::Held { checked, .. } = &mut self.lease {
            *checked = false;
        }
        let topics = self.shared.live_topics();
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
            self.guard()?;
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
            self.record(&dir, &manifest)?;
            segment.set_remote(tiered.log(&segment.path, copy.size));
            tracing::debug!(segment = %segment.path.display(), "copied to the object store");
        }

        // Copies of segments the partition no longer has (retention, compaction): retired,
        // then deleted once no reader can still be on them.
        let listed: HashSet<_> = segments.iter().map(|s| s.file).collect();
        let now = now_ms();
        let grace_ms = tiered.tier.config.retired_grace.as_millis() as i64;
        // The last checkpoint may name what was retired after it was taken.
        let checkpointed_ms = self.last_checkpoint.as_ref().map_or(i64::MIN, |c| c.1);
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
            .partition(|r| now - r.since_ms >= grace_ms && r.since_ms < checkpointed_ms);
        if !due.is_empty() {
            self.guard()?;
        }
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
            self.record(&dir, &manifest)?;
        }

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
            // Not once another server may delete the copy this one would read.
            self.guard()?;
            segment.evict_local()?;
            local -= segment.size_bytes();
            tracing::debug!(segment = %segment.path.display(), "local copy removed; read from the object store");
        }
        Ok(())
    }

    /// Writes a partition's manifest durably, and keeps it as the one last written.
    fn record(&mut self, dir: &std::path::Path, manifest: &Manifest) -> Result<(), StorageError> {
        manifest.write(&self.shared.config.disk, dir)?;
        self.manifests.insert(dir.to_path_buf(), manifest.clone());
        Ok(())
    }

    /// Deletes the objects of topics the log no longer has.
    fn delete_dropped_topics(&mut self, topics: &[Arc<Topic>]) -> Result<(), StorageError> {
        // Not before a checkpoint, and not what the last one names.
        let Some((_, _, checkpointed)) = self.last_checkpoint.clone() else {
            return Ok(());
        };
        let root = self.shared.config.dir.clone();
        let live: HashSet<String> = topics
            .iter()
            .filter_map(|t| t.dir.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        for name in self.tiered.tier.list_dirs(&PathBuf::from("topics"))? {
            if live.contains(&name) || checkpointed.contains(&name) {
                continue;
            }
            let relative = PathBuf::from("topics").join(&name);
            // A topic created after the list was taken is live now.
            if root.join(&relative).exists() {
                continue;
            }
            self.guard()?;
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
