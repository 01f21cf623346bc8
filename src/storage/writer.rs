//! The log's writer thread: group commit.
//!
//! Every append, topic creation and deletion, and retention goes through one thread, in
//! arrival order. The thread takes everything queued at once: consecutive appends form one
//! group, whose frames are written (appends to the same partition coalesced into shared
//! frames), each touched partition fsynced once, and one commit record written and fsynced
//! for the whole group. While that runs, new appends queue up and form the next group, so
//! the cost of an fsync is shared by every writer waiting on it: durability costs latency,
//! not throughput.
//!
//! Under the `interval` flush policy a group's frames and commit record are written but not
//! fsynced; the writers are acknowledged at once, and the partitions written since are
//! fsynced every interval, then the commit log. Whatever fsyncs the commit log (a commit of
//! metadata alone, a rewrite, a flush) first fsyncs every partition written before it, so a
//! commit the commit log holds durably never names records that are not durable.
//!
//! Failures, by what they leave behind:
//! - A write that fails (a full disk, say) undoes the group: every touched partition is put
//!   back to its committed end, exactly as recovery would, and all its appends fail. Nothing
//!   of it becomes visible, and later groups are tried as usual.
//! - An fsync that fails leaves unknown what is on disk, and the kernel may already have
//!   dropped the pages it could not write: retrying would report success for data that is
//!   gone (PostgreSQL's fsync lesson). The log stops acknowledging writes until a restart
//!   recovers it from what really is on disk.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use tokio::sync::mpsc;

use super::MetaAfter;
use super::commit_log::{Commit, CommitError, CommitLog, CommittedEnds};
use super::partition::{AppendOptions, Partition};
use super::types::{Offset, PartitionId, now_ms};
use super::{
    AppendedRange, Command, FlushPolicy, Holds, MetaUpdate, PartitionBatch, RECORD_LEN_MAX, Reply,
    Shared, Snapshot, StorageError, Topic, TopicId, TopicSpec, VALUE_LEN_MAX, partition_dir,
    timestamp_column, topic_dir,
};

/// Bound on the records one group commit takes, so one group's memory stays bounded and
/// early appenders are not held back by a flood behind them.
const GROUP_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Bound on the metadata one group's commit record carries; the rest of
/// [`RECORD_LEN_MAX`] is left for end offsets.
const GROUP_META_BYTES_MAX: usize = RECORD_LEN_MAX / 2;

/// Records to append, metadata to change, and where to send the outcome.
struct AppendRequest {
    batches: Vec<PartitionBatch>,
    meta: Vec<MetaUpdate>,
    /// More metadata, from where the records went (written in the same commit record).
    meta_after: Option<MetaAfter>,
    reply: Reply<Vec<AppendedRange>>,
}

impl AppendRequest {
    /// Metadata with no records (DDL, a consumer group's offsets): fsynced at once under
    /// every flush policy.
    fn is_metadata_alone(&self) -> bool {
        self.batches.iter().all(|b| b.records.num_rows() == 0)
            && (!self.meta.is_empty() || self.meta_after.is_some())
    }

    fn meta_bytes(&self) -> usize {
        self.meta
            .iter()
            .map(|(_, v)| 12 + v.as_ref().map_or(0, Vec::len))
            .sum()
    }
}

/// A metadata key and its committed value.
type LiveMeta = (u64, Arc<Vec<u8>>);

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) commit_log: CommitLog,
    /// Log start offsets committed so far (partitions not named start at 0).
    pub(super) starts: CommittedEnds,
    /// Partitions written since their last fsync (`interval` flush policy).
    pub(super) unflushed: HashMap<(TopicId, PartitionId), (Arc<Topic>, Arc<Partition>)>,
    /// Whether the commit log holds records written since its last fsync.
    pub(super) commit_log_unflushed: bool,
}

impl Writer {
    pub(super) fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut group: Vec<AppendRequest> = vec![];
        let mut group_bytes = 0usize;
        let mut group_meta_bytes = 0usize;
        while let Some(command) = commands.blocking_recv() {
            let mut next = Some(command);
            while let Some(command) = next.take() {
                match command {
                    Command::Append {
                        batches,
                        meta,
                        meta_after,
                        reply,
                    } => {
                        let request = AppendRequest {
                            batches,
                            meta,
                            meta_after,
                            reply,
                        };
                        if let Err(e) = check_meta(&request) {
                            let _ = request.reply.send(Err(e));
                        } else {
                            if group_meta_bytes + request.meta_bytes() > GROUP_META_BYTES_MAX {
                                self.commit_group(std::mem::take(&mut group));
                                group_bytes = 0;
                                group_meta_bytes = 0;
                            }
                            group_bytes += request
                                .batches
                                .iter()
                                .map(|b| b.records.get_array_memory_size())
                                .sum::<usize>();
                            group_meta_bytes += request.meta_bytes();
                            group.push(request);
                        }
                    }
                    other => {
                        self.commit_group(std::mem::take(&mut group));
                        group_bytes = 0;
                        group_meta_bytes = 0;
                        self.execute(other);
                    }
                }
                if group_bytes < GROUP_BYTES_MAX {
                    next = commands.try_recv().ok();
                }
            }
            self.commit_group(std::mem::take(&mut group));
            group_bytes = 0;
            group_meta_bytes = 0;
        }
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "flushing at shutdown failed");
        }
        tracing::debug!("log writer stopped");
    }

    fn execute(&mut self, command: Command) {
        // Topic files change below: what was written before goes to disk first, and nothing
        // changes if it cannot.
        let flushed = self.flush();
        match command {
            Command::Append { .. } => unreachable!("appends are grouped"),
            Command::Flush { reply } => {
                if let Some(reply) = reply {
                    let _ = reply.send(flushed);
                }
            }
            Command::CreateTopic { spec, reply } => {
                let _ = reply.send(flushed.and_then(|()| self.create_topic(spec)));
            }
            Command::DropTopic { id, reply } => {
                let _ = reply.send(flushed.and_then(|()| self.drop_topic(id)));
            }
            Command::TruncateBefore {
                topic,
                partition,
                offset,
                reply,
            } => {
                let result = flushed
                    .and_then(|()| self.partition(topic, partition))
                    .and_then(|p| match p.start_after_deleting_before(offset) {
                        Some(start) => self.move_starts(vec![(topic, p, start)]),
                        None => Ok(0),
                    });
                let _ = reply.send(result);
            }
            Command::Checkpoint { reply } => {
                let _ = reply.send(flushed.and_then(|()| self.checkpoint()));
            }
            Command::Retention { reply } => {
                let result = flushed.and_then(|()| self.enforce_retention());
                if let Err(e) = &result {
                    tracing::error!(error = %e, "retention failed");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
        }
    }

    fn partition(
        &self,
        topic: TopicId,
        partition: PartitionId,
    ) -> Result<Arc<Partition>, StorageError> {
        self.shared
            .topics
            .read()
            .expect("topics lock")
            .get(&topic)
            .cloned()
            .ok_or(StorageError::UnknownTopic(topic))
            .and_then(|t| t.partition(partition).cloned())
    }

    fn failed(&self) -> Option<String> {
        self.shared.failed.lock().expect("failed lock").clone()
    }

    fn fail(&self, reason: String) {
        tracing::error!(%reason, "the log stops accepting writes until a restart");
        *self.shared.failed.lock().expect("failed lock") = Some(reason);
    }

    /// Fsyncs the partitions written since their last fsync, then the commit log (the
    /// `interval` flush policy's periodic work; under `always` there is nothing to do). A
    /// failure fails the log: what is on disk is unknown.
    fn flush(&mut self) -> Result<(), StorageError> {
        if let Some(reason) = self.failed() {
            return Err(StorageError::Failed(reason));
        }
        if self.unflushed.is_empty() && !self.commit_log_unflushed {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let partitions: Vec<_> = self.unflushed.drain().map(|(_, p)| p).collect();
        if let Err(error) = sync_all(&partitions) {
            self.fail(format!("flushing written records: {error}"));
            return Err(error);
        }
        // An empty commit, fsynced: it marks every commit before it durable with its
        // records, so recovery after a crash of the machine checks one interval at most.
        let marked = match self.commit_log.commit(&Commit::default()) {
            // A full disk: the commits are as durable without the mark.
            Err(CommitError::NotWritten(_)) => self.commit_log.sync(),
            Err(CommitError::Unknown(error)) => Err(error),
            Ok(()) => Ok(()),
        };
        if let Err(error) = marked {
            self.fail(format!("flushing the commit log: {error}"));
            return Err(error);
        }
        self.commit_log_unflushed = false;
        tracing::trace!(
            partitions = partitions.len(),
            us = started.elapsed().as_micros() as u64,
            "flushed"
        );
        Ok(())
    }

    /// Commits a record with no records: new log start offsets or metadata alone. A failure
    /// to write it fails the operation; a failed fsync fails the log.
    fn commit_alone(&mut self, commit: Commit) -> Result<(), StorageError> {
        self.flush()?;
        match self.commit_log.commit(&commit) {
            Ok(()) => Ok(()),
            Err(CommitError::NotWritten(e)) => Err(e),
            Err(CommitError::Unknown(e)) => {
                let message = e.to_string();
                self.fail(format!("syncing the commit log: {message}"));
                Err(StorageError::Failed(message))
            }
        }
    }

    fn commit_group(&mut self, requests: Vec<AppendRequest>) {
        if requests.is_empty() {
            return;
        }
        if let Some(reason) = self.failed() {
            for request in requests {
                let _ = request
                    .reply
                    .send(Err(StorageError::Failed(reason.clone())));
            }
            return;
        }
        let topics = self.shared.topics.read().expect("topics lock").clone();

        // Requests that name an unknown topic or partition, or carry records of the wrong
        // shape, fail alone; the rest form the group.
        let mut accepted: Vec<AppendRequest> = Vec::with_capacity(requests.len());
        for request in requests {
            match validate(&topics, &request.batches) {
                Ok(()) => accepted.push(request),
                Err(e) => {
                    let _ = request.reply.send(Err(e));
                }
            }
        }

        // Per partition, the batches in arrival order.
        let mut order: Vec<(TopicId, PartitionId)> = vec![];
        let mut by_partition: HashMap<(TopicId, PartitionId), Vec<(usize, &RecordBatch)>> =
            HashMap::new();
        for (i, request) in accepted.iter().enumerate() {
            for b in request.batches.iter().filter(|b| b.records.num_rows() > 0) {
                let key = (b.topic, b.partition);
                by_partition
                    .entry(key)
                    .or_insert_with(|| {
                        order.push(key);
                        vec![]
                    })
                    .push((i, &b.records));
            }
        }

        let mut ranges: Vec<Vec<AppendedRange>> = vec![vec![]; accepted.len()];
        let mut touched: Vec<(Arc<Topic>, Arc<Partition>)> = vec![];
        let mut ends = vec![];
        let started = std::time::Instant::now();
        let mut written_at = started;
        let written = (|| -> Result<(), StorageError> {
            for key in &order {
                let topic = topics[&key.0].clone();
                let partition = topic.partitions[key.1.0 as usize].clone();
                touched.push((topic.clone(), partition.clone()));
                let parts = &by_partition[key];
                let batches: Vec<&RecordBatch> = parts.iter().map(|(_, b)| *b).collect();
                let options = AppendOptions {
                    timestamp_column: topic.timestamp_column,
                    schema_version: super::SCHEMA_VERSION,
                    compression: topic.spec.compression,
                    frame_bytes_target: self.shared.config.frame_bytes_target,
                    segment_bytes_max: topic.spec.segment_bytes_max,
                };
                let mut offset = partition.append(&batches, &options)?;
                for (i, records) in parts {
                    let n = records.num_rows() as u64;
                    ranges[*i].push(AppendedRange {
                        topic: key.0,
                        partition: key.1,
                        base_offset: offset,
                        record_count: n,
                    });
                    offset = offset.plus(n);
                }
                ends.push((key.0, key.1, offset));
            }
            written_at = std::time::Instant::now();
            Ok(())
        })();

        if let Err(error) = written {
            // No commit record was written: put the partitions back and fail the group.
            tracing::error!(%error, "writing a group failed; undoing it");
            self.undo(&touched);
            for request in accepted {
                let _ = request.reply.send(Err(copy_error(&error)));
            }
            return;
        }
        // Under the interval policy, records wait for the next flush, unless a request in
        // the group commits metadata alone: then everything unflushed is fsynced with it.
        let later = matches!(self.shared.config.flush, FlushPolicy::Interval(_))
            && !accepted.iter().any(AppendRequest::is_metadata_alone);
        if later {
            for (topic, partition) in &touched {
                self.unflushed
                    .entry((topic.spec.id, partition.id))
                    .or_insert_with(|| (topic.clone(), partition.clone()));
            }
        } else {
            for (key, (topic, partition)) in self.unflushed.drain() {
                if !by_partition.contains_key(&key) {
                    touched.push((topic, partition));
                }
            }
        }
        let synced = if later { Ok(()) } else { sync_all(&touched) };
        if let Err(error) = synced {
            self.fail(format!("syncing written records: {error}"));
            let message = error.to_string();
            for request in accepted {
                let _ = request
                    .reply
                    .send(Err(StorageError::Failed(message.clone())));
            }
            return;
        }
        let synced_at = std::time::Instant::now();
        tracing::trace!(
            requests = accepted.len(),
            partitions = touched.len(),
            write_us = (written_at - started).as_micros() as u64,
            sync_us = (synced_at - written_at).as_micros() as u64,
            "group written"
        );

        let mut meta: Vec<MetaUpdate> = vec![];
        for (request, ranges) in accepted.iter_mut().zip(&ranges) {
            meta.append(&mut request.meta);
            if let Some(after) = request.meta_after.take() {
                meta.extend(after(ranges));
            }
        }
        let commit = Commit {
            ends,
            starts: vec![],
            meta,
        };
        let committed = if later {
            self.commit_log.commit_unflushed(&commit)
        } else {
            self.commit_log.commit(&commit)
        };
        match committed {
            Ok(()) => self.commit_log_unflushed = later,
            Err(CommitError::NotWritten(error)) => {
                tracing::error!(%error, "writing a commit record failed; undoing the group");
                self.undo(&touched);
                for request in accepted {
                    let _ = request.reply.send(Err(copy_error(&error)));
                }
                return;
            }
            Err(CommitError::Unknown(error)) => {
                // Whether the record reached the disk is unknown: only recovery at the next
                // start can tell what committed.
                self.fail(format!("writing the commit log: {error}"));
                for request in accepted {
                    let _ = request
                        .reply
                        .send(Err(StorageError::Failed(error.to_string())));
                }
                return;
            }
        }

        tracing::trace!(
            commit_us = synced_at.elapsed().as_micros() as u64,
            "group committed"
        );
        let group_commits = &self.shared.group_commits;
        group_commits.appends.observe(accepted.len() as f64);
        group_commits
            .records
            .observe(ranges.iter().flatten().map(|r| r.record_count).sum::<u64>() as f64);
        self.publish(&commit.ends, commit.meta);
        for (request, ranges) in accepted.into_iter().zip(ranges) {
            let _ = request.reply.send(Ok(ranges));
        }
        if self
            .commit_log
            .rewrite_due(self.shared.config.commit_log_bytes_max)
            && let Err(e) = self.rewrite_commit_log()
        {
            self.fail(format!("rewriting the commit log: {e}"));
        }
    }

    /// Puts the touched partitions back to their committed ends after a failed write.
    fn undo(&self, touched: &[(Arc<Topic>, Arc<Partition>)]) {
        let snapshot = self.shared.snapshot.read().expect("snapshot lock").clone();
        for (topic, partition) in touched {
            let end = snapshot.high_watermark(topic.spec.id, partition.id);
            if let Err(e) = partition.roll_back(end) {
                self.fail(format!(
                    "undoing a failed append in {}: {e}",
                    partition.dir.display()
                ));
            }
        }
    }

    /// Makes newly committed offsets and metadata visible: one new snapshot for the group.
    fn publish(&self, ends: &[(TopicId, PartitionId, Offset)], meta: Vec<MetaUpdate>) {
        let mut snapshot_lock = self.shared.snapshot.write().expect("snapshot lock");
        let mut snapshot: Snapshot = (**snapshot_lock).clone();
        for (topic, partition, end) in ends {
            if let Some(topic_ends) = snapshot.ends.get_mut(topic) {
                Arc::make_mut(topic_ends)[partition.0 as usize] = *end;
            }
        }
        for (key, value) in meta {
            match value {
                Some(v) => snapshot.meta.insert(key, Arc::new(v)),
                None => snapshot.meta.remove(&key),
            };
        }
        *snapshot_lock = Arc::new(snapshot);
        drop(snapshot_lock);
        self.shared.commits.send_modify(|n| *n += 1);
    }

    /// The committed end offsets and metadata, as a rewrite or a checkpoint writes them.
    fn live_state(&self) -> (CommittedEnds, Vec<LiveMeta>) {
        let snapshot = self.shared.snapshot.read().expect("snapshot lock").clone();
        let mut ends = CommittedEnds::new();
        for (topic, topic_ends) in &snapshot.ends {
            for (p, end) in topic_ends.iter().enumerate() {
                ends.insert((*topic, PartitionId(p as u32)), *end);
            }
        }
        let meta = snapshot.meta.iter().map(|(k, v)| (*k, v.clone())).collect();
        (ends, meta)
    }

    fn rewrite_commit_log(&mut self) -> Result<(), StorageError> {
        // The rewrite is fsynced: the records it names must be durable first.
        self.flush()?;
        let (ends, meta) = self.live_state();
        let started = std::time::Instant::now();
        self.commit_log.rewrite(&ends, &self.starts, &meta)?;
        tracing::debug!(
            bytes = self.commit_log.size_bytes(),
            ms = started.elapsed().as_millis() as u64,
            "rewrote the commit log"
        );
        Ok(())
    }

    /// Seals the active segments holding records, so that every committed record is in a
    /// sealed segment, and takes the committed state as a commit log of its own.
    fn checkpoint(&mut self) -> Result<super::tiered::Checkpoint, StorageError> {
        let topics = self.shared.topics.read().expect("topics lock").clone();
        let root = &self.shared.config.dir;
        let mut partitions = vec![];
        for topic in topics.values() {
            for partition in &topic.partitions {
                partition.seal_active()?;
                let segments = partition.segments();
                let sealed = segments
                    .windows(2)
                    .map(|pair| super::tiered::RemoteSegment {
                        base: pair[0].base_offset.0,
                        generation: pair[0].file.generation,
                        end: pair[1].base_offset.0,
                        size: pair[0].size_bytes(),
                    })
                    .collect();
                partitions.push(super::tiered::PartitionCheckpoint {
                    dir: partition
                        .dir
                        .strip_prefix(root)
                        .unwrap_or(&partition.dir)
                        .to_string_lossy()
                        .into_owned(),
                    segments: sealed,
                });
            }
        }
        let (ends, meta) = self.live_state();
        Ok(super::tiered::Checkpoint {
            identity: self.shared.identity.hex(),
            taken_at_ms: now_ms(),
            commit_log: super::commit_log::snapshot_file(
                &self.shared.identity,
                &ends,
                &self.starts,
                &meta,
            ),
            partitions,
        })
    }

    fn create_topic(&mut self, spec: TopicSpec) -> Result<(), StorageError> {
        let root = self.shared.config.dir.clone();
        let disk = &self.shared.config.disk;
        let dir = topic_dir(&root, &spec);
        if dir.exists() {
            // Topic ids are never reused, so this is not a topic of the catalog's.
            super::quarantine(disk, &root, &dir)?;
        }
        let timestamp_column = timestamp_column(&spec.schema)?;
        let created = (|| {
            std::fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
            let mut partitions = vec![];
            for p in 0..spec.partitions {
                partitions.push(Arc::new(Partition::create(
                    disk,
                    &partition_dir(&dir, p),
                    PartitionId(p),
                    self.shared.config.tiered(),
                )?));
            }
            disk.sync_dir(&dir)?;
            disk.sync_dir(&root.join("topics"))?;
            Ok(partitions)
        })();
        let partitions = match created {
            Ok(p) => p,
            Err(e) => {
                let _ = disk.remove_dir_all(&dir);
                return Err(e);
            }
        };
        let id = spec.id;
        let count = spec.partitions as usize;
        let topic = Arc::new(Topic {
            spec,
            dir,
            partitions,
            timestamp_column,
            files: Default::default(),
        });
        self.shared
            .topics
            .write()
            .expect("topics lock")
            .insert(id, topic);
        let mut snapshot_lock = self.shared.snapshot.write().expect("snapshot lock");
        let mut snapshot = (**snapshot_lock).clone();
        snapshot.ends.insert(id, Arc::new(vec![Offset(0); count]));
        *snapshot_lock = Arc::new(snapshot);
        Ok(())
    }

    fn drop_topic(&mut self, id: TopicId) -> Result<(), StorageError> {
        let topic = self.shared.topics.write().expect("topics lock").remove(&id);
        let Some(topic) = topic else {
            return Err(StorageError::UnknownTopic(id));
        };
        {
            let mut snapshot_lock = self.shared.snapshot.write().expect("snapshot lock");
            let mut snapshot = (**snapshot_lock).clone();
            snapshot.ends.remove(&id);
            *snapshot_lock = Arc::new(snapshot);
        }
        self.starts.retain(|(topic, _), _| *topic != id);
        // Compaction moves no file in from now on.
        topic.files.lock().expect("topic files lock").dropped = true;
        let disk = &self.shared.config.disk;
        disk.remove_dir_all(&topic.dir)?;
        disk.sync_dir(&self.shared.config.dir.join("topics"))
    }

    /// Moves the log start of partitions forward: commits the new starts, then deletes the
    /// segments before them. Returns the segments deleted.
    fn move_starts(
        &mut self,
        moves: Vec<(TopicId, Arc<Partition>, Offset)>,
    ) -> Result<usize, StorageError> {
        if moves.is_empty() {
            return Ok(0);
        }
        let starts = moves
            .iter()
            .map(|(topic, partition, start)| (*topic, partition.id, *start))
            .collect();
        self.commit_alone(Commit {
            starts,
            ..Commit::default()
        })?;
        let mut deleted = 0;
        for (topic, partition, start) in moves {
            self.starts.insert((topic, partition.id), start);
            deleted += partition.delete_segments_before(start)?;
        }
        Ok(deleted)
    }

    fn enforce_retention(&mut self) -> Result<usize, StorageError> {
        let now_ms = now_ms();
        let topics = self.shared.live_topics();
        let limited =
            |t: &Arc<Topic>| t.spec.retention_bytes.is_some() || t.spec.retention_ms.is_some();
        // Asked only when retention could delete something: reading every reader's
        // position is not free, and this runs on the writer's thread.
        let holds = if topics.iter().any(limited) {
            self.shared.holds()
        } else {
            Holds::default()
        };
        let max_hold_bytes = self.shared.config.max_hold_bytes;
        let mut moves = vec![];
        for topic in topics {
            let spec = &topic.spec;
            if spec.retention_bytes.is_none() && spec.retention_ms.is_none() {
                continue;
            }
            let min_timestamp_ms = spec.retention_ms.map(|ms| now_ms.saturating_sub(ms as i64));
            for partition in &topic.partitions {
                let holders = holds.of(spec.id, partition.id);
                let hold = holders.iter().map(|h| h.offset).min();
                let Some(start) = partition.retention_start(
                    spec.retention_bytes,
                    min_timestamp_ms,
                    hold,
                    max_hold_bytes,
                )?
                else {
                    continue;
                };
                for lost in holders.iter().filter(|h| h.offset < start) {
                    tracing::warn!(
                        topic = %spec.name,
                        partition = partition.id.0,
                        holder = %lost.holder,
                        from = lost.offset.0,
                        to = start.0,
                        max_hold_bytes,
                        "retention deletes records a reader has not read: it held more than the maximum; the reader fails when it reaches them"
                    );
                }
                moves.push((spec.id, partition.clone(), start));
            }
        }
        self.move_starts(moves)
    }
}

/// Refuses a request whose metadata could never fit a commit record.
fn check_meta(request: &AppendRequest) -> Result<(), StorageError> {
    if let Some((key, Some(value))) = request
        .meta
        .iter()
        .find(|(_, v)| v.as_ref().is_some_and(|v| v.len() > VALUE_LEN_MAX))
    {
        return Err(StorageError::TooLarge(format!(
            "a metadata value of {} bytes (key {key}) is over the limit of {VALUE_LEN_MAX}",
            value.len()
        )));
    }
    if request.meta_bytes() > GROUP_META_BYTES_MAX {
        return Err(StorageError::TooLarge(format!(
            "{} bytes of metadata in one commit are over the limit of {GROUP_META_BYTES_MAX}",
            request.meta_bytes()
        )));
    }
    Ok(())
}

/// A copy of `error` for each request of a failed group.
fn copy_error(error: &StorageError) -> StorageError {
    match error {
        StorageError::Io { path, source } => StorageError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        StorageError::InvalidBatch(m) => StorageError::InvalidBatch(m.clone()),
        other => StorageError::Failed(other.to_string()),
    }
}

/// Threads that fsync the partitions of one group side by side.
const SYNC_THREADS: usize = 8;

/// fsyncs the touched partitions, concurrently when there are several: each is a separate
/// file, and the device serves the flushes side by side. At most [`SYNC_THREADS`] at once,
/// however many partitions a group touched.
fn sync_all(touched: &[(Arc<Topic>, Arc<Partition>)]) -> Result<(), StorageError> {
    let sync_each = |chunk: &[(Arc<Topic>, Arc<Partition>)]| {
        chunk.iter().try_for_each(|(_, partition)| partition.sync())
    };
    if touched.len() < 2 {
        return sync_each(touched);
    }
    let per_thread = touched.len().div_ceil(SYNC_THREADS);
    std::thread::scope(|scope| {
        let mut chunks = touched.chunks(per_thread);
        let first = chunks.next().expect("two or more partitions");
        let others: Vec<_> = chunks.map(|c| scope.spawn(move || sync_each(c))).collect();
        let mut result = sync_each(first);
        for other in others {
            let synced = other.join().expect("an fsync thread does not panic");
            if result.is_ok() {
                result = synced;
            }
        }
        result
    })
}

fn validate(
    topics: &HashMap<TopicId, Arc<Topic>>,
    batches: &[PartitionBatch],
) -> Result<(), StorageError> {
    for b in batches {
        let topic = topics
            .get(&b.topic)
            .ok_or(StorageError::UnknownTopic(b.topic))?;
        topic.partition(b.partition)?;
        if b.records.schema().fields() != topic.spec.schema.fields() {
            return Err(StorageError::InvalidBatch(format!(
                "records for topic {} do not have its schema",
                topic.spec.name
            )));
        }
    }
    Ok(())
}
