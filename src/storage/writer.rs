//! The log's writer thread: group commit.
//!
//! Every append, topic creation and deletion goes through one thread, in arrival order. The
//! thread takes everything queued at once: consecutive appends form one group, whose frames
//! are written (appends to the same partition coalesced into shared frames), each touched
//! partition fsynced once, and one commit record written and fsynced for the whole group.
//! While that runs, new appends queue up and form the next group, so the cost of an fsync is
//! shared by every writer waiting on it: durability costs latency, not throughput.
//!
//! A failure while writing a group undoes the group (every touched partition is put back to
//! its committed end, exactly as recovery would) and fails all its appends; nothing of it
//! becomes visible. A failure that cannot be undone stops the log from taking writes until
//! a restart recovers it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::RecordBatch;
use tokio::sync::mpsc;

use super::commit_log::{CommitLog, CommittedEnds};
use super::partition::{AppendOptions, Partition};
use super::segment::sync_dir;
use super::types::{Offset, PartitionId};
use super::{
    AppendedRange, Command, MetaUpdate, PartitionBatch, Reply, Shared, Snapshot, StorageError,
    Topic, TopicId, TopicSpec, partition_dir, timestamp_column, topic_dir,
};

/// Bound on the records one group commit takes, so one group's memory stays bounded and
/// early appenders are not held back by a flood behind them.
const GROUP_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Records to append, metadata to change, and where to send the outcome.
struct AppendRequest {
    batches: Vec<PartitionBatch>,
    meta: Vec<MetaUpdate>,
    reply: Reply<Vec<AppendedRange>>,
}

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) commit_log: CommitLog,
}

impl Writer {
    pub(super) fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut group: Vec<AppendRequest> = vec![];
        let mut group_bytes = 0usize;
        while let Some(command) = commands.blocking_recv() {
            let mut next = Some(command);
            while let Some(command) = next.take() {
                match command {
                    Command::Append {
                        batches,
                        meta,
                        reply,
                    } => {
                        group_bytes += batches
                            .iter()
                            .map(|b| b.records.get_array_memory_size())
                            .sum::<usize>();
                        group.push(AppendRequest {
                            batches,
                            meta,
                            reply,
                        });
                    }
                    other => {
                        self.commit_group(std::mem::take(&mut group));
                        group_bytes = 0;
                        self.execute(other);
                    }
                }
                if group_bytes < GROUP_BYTES_MAX {
                    next = commands.try_recv().ok();
                }
            }
            self.commit_group(std::mem::take(&mut group));
            group_bytes = 0;
        }
        tracing::debug!("log writer stopped");
    }

    fn execute(&mut self, command: Command) {
        match command {
            Command::Append { .. } => unreachable!("appends are grouped"),
            Command::CreateTopic { spec, reply } => {
                let _ = reply.send(self.create_topic(spec));
            }
            Command::DropTopic { id, reply } => {
                let _ = reply.send(self.drop_topic(id));
            }
            Command::TruncateBefore {
                topic,
                partition,
                offset,
                reply,
            } => {
                let result = self
                    .shared
                    .topics
                    .read()
                    .expect("topics lock")
                    .get(&topic)
                    .cloned()
                    .ok_or(StorageError::UnknownTopic(topic))
                    .and_then(|t| t.partition(partition).cloned())
                    .and_then(|p| p.delete_segments_before(offset));
                let _ = reply.send(result);
            }
            Command::Retention { reply } => {
                let result = self.enforce_retention();
                if let Err(e) = &result {
                    tracing::error!(error = %e, "retention failed");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
        }
    }

    fn failed(&self) -> Option<String> {
        self.shared.failed.lock().expect("failed lock").clone()
    }

    fn fail(&self, reason: String) {
        tracing::error!(%reason, "the log stops accepting writes");
        *self.shared.failed.lock().expect("failed lock") = Some(reason);
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
        let mut synced_at = started;
        let written = (|| -> Result<(), StorageError> {
            for key in &order {
                let topic = topics[&key.0].clone();
                let partition = topic.partitions[key.1.0 as usize].clone();
                touched.push((topic.clone(), partition.clone()));
                let parts = &by_partition[key];
                let batches: Vec<&RecordBatch> = parts.iter().map(|(_, b)| *b).collect();
                let options = AppendOptions {
                    timestamp_column: topic.timestamp_column,
                    schema_version: 0,
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
            let written_at = std::time::Instant::now();
            sync_all(&touched)?;
            synced_at = std::time::Instant::now();
            tracing::trace!(
                requests = accepted.len(),
                partitions = touched.len(),
                write_us = (written_at - started).as_micros() as u64,
                sync_us = (synced_at - written_at).as_micros() as u64,
                "group written"
            );
            Ok(())
        })();

        if let Err(error) = written {
            // No commit record was written: put the partitions back and fail the group.
            tracing::error!(%error, "writing a group failed; undoing it");
            let snapshot = self.shared.snapshot.read().expect("snapshot lock").clone();
            for (topic, partition) in &touched {
                let end = snapshot.high_watermark(topic.spec.id, partition.id);
                if let Err(e) = partition.roll_back(end) {
                    self.fail(format!(
                        "undoing a failed append in {}: {e}",
                        partition.dir.display()
                    ));
                }
            }
            let message = error.to_string();
            for request in accepted {
                let _ = request.reply.send(Err(match &error {
                    StorageError::InvalidBatch(m) => StorageError::InvalidBatch(m.clone()),
                    _ => StorageError::Failed(message.clone()),
                }));
            }
            return;
        }

        let meta: Vec<MetaUpdate> = accepted
            .iter()
            .flat_map(|r| r.meta.iter().cloned())
            .collect();
        if let Err(error) = self.commit_log.commit(&ends, &meta) {
            // Whether the record reached the disk is unknown, and the commit log may now end
            // in a partial record: only recovery at the next start can tell what committed.
            self.fail(format!("writing the commit log: {error}"));
            for request in accepted {
                let _ = request
                    .reply
                    .send(Err(StorageError::Failed(error.to_string())));
            }
            return;
        }

        tracing::trace!(
            commit_us = synced_at.elapsed().as_micros() as u64,
            "group committed"
        );
        self.publish(&ends, meta);
        for (request, ranges) in accepted.into_iter().zip(ranges) {
            let _ = request.reply.send(Ok(ranges));
        }
        if self.commit_log.size_bytes() > self.shared.config.commit_log_bytes_max
            && let Err(e) = self.compact_commit_log()
        {
            self.fail(format!("compacting the commit log: {e}"));
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

    fn compact_commit_log(&mut self) -> Result<(), StorageError> {
        let snapshot = self.shared.snapshot.read().expect("snapshot lock").clone();
        let mut ends = CommittedEnds::new();
        for (topic, topic_ends) in &snapshot.ends {
            for (p, end) in topic_ends.iter().enumerate() {
                ends.insert((*topic, PartitionId(p as u32)), *end);
            }
        }
        self.commit_log.rewrite(&ends, &snapshot.meta)
    }

    fn create_topic(&mut self, spec: TopicSpec) -> Result<(), StorageError> {
        let root = self.shared.config.dir.clone();
        let dir = topic_dir(&root, &spec);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
        }
        let timestamp_column = timestamp_column(&spec.schema)?;
        let created = (|| {
            std::fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
            let mut partitions = vec![];
            for p in 0..spec.partitions {
                partitions.push(Arc::new(Partition::create(
                    &partition_dir(&dir, p),
                    PartitionId(p),
                )?));
            }
            sync_dir(&dir)?;
            sync_dir(&root.join("topics"))?;
            Ok(partitions)
        })();
        let partitions = match created {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
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
        std::fs::remove_dir_all(&topic.dir).map_err(|e| StorageError::io(&topic.dir, e))?;
        sync_dir(&self.shared.config.dir.join("topics"))
    }

    fn enforce_retention(&mut self) -> Result<usize, StorageError> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis() as i64;
        let topics: Vec<Arc<Topic>> = self
            .shared
            .topics
            .read()
            .expect("topics lock")
            .values()
            .cloned()
            .collect();
        let mut deleted = 0;
        for topic in topics {
            let spec = &topic.spec;
            if spec.retention_bytes.is_none() && spec.retention_ms.is_none() {
                continue;
            }
            let min_timestamp_ms = spec.retention_ms.map(|ms| now_ms.saturating_sub(ms as i64));
            for partition in &topic.partitions {
                deleted += partition.enforce_retention(spec.retention_bytes, min_timestamp_ms)?;
            }
        }
        Ok(deleted)
    }
}

/// fsyncs the touched partitions, concurrently when there are several: each is a separate
/// file, and the device serves the flushes side by side.
fn sync_all(touched: &[(Arc<Topic>, Arc<Partition>)]) -> Result<(), StorageError> {
    match touched {
        [] => Ok(()),
        [(_, only)] => only.sync(),
        [(_, first), rest @ ..] => std::thread::scope(|scope| {
            let others: Vec<_> = rest.iter().map(|(_, p)| scope.spawn(|| p.sync())).collect();
            let mut result = first.sync();
            for other in others {
                let synced = other.join().expect("an fsync thread does not panic");
                if result.is_ok() {
                    result = synced;
                }
            }
            result
        }),
    }
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
