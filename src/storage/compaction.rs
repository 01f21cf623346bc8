//! Log compaction: a compacted topic keeps the latest record of every key, as Kafka's
//! `cleanup.policy=compact` does.
//!
//! ```text
//!  segments:  [clean: compacted before][dirty: sealed since][active]
//!                                             │
//!  1. map     key hash → latest offset, over the dirty segments up to the horizon
//!  2. rewrite every segment before the horizon, in groups of about a segment's size,
//!             keeping a record unless the map holds a later one of its key (or it is a
//!             tombstone past its delay); the records keep their offsets (sparse frames)
//!  3. install each group's segment (a new generation, written aside, renamed into
//!             place) in the partition's list; the replaced files go when no reader holds them
//! ```
//!
//! The horizon is the end of the last sealed segment that is committed, durable and not
//! wanted whole by a reader: compaction never rewrites records a continuous query has yet
//! to read, nor the rows a query keeps and rebuilds from its input ([`super::Hold`]s with
//! `waits` set), so a query's results do not depend on when compaction ran. Consumer
//! groups do not hold it back, as in Kafka: they read the latest record of each key.
//!
//! A pass starts when the dirty segments are at least half of the bytes it would rewrite
//! (Kafka's `min.cleanable.dirty.ratio`). The map keeps 16 bytes of each key's SHA-256, so
//! no producer can make two keys collide; it holds at most [`super::LogConfig`]'s
//! `compaction_map_keys`, and a pass with more keys than that cleans the dirty segments
//! that fit, the rest in the next pass. A tombstone (a record deleting its key) is removed
//! once it is in a segment compacted before and that segment's newest record is older than
//! the topic's `delete_retention_ms` (Kafka's rule before KIP-534), so a reader that keeps
//! up within that delay sees every deletion. The last record before the horizon is always
//! kept: whatever offset below the high watermark a reader asks for, a record at or after
//! it is there, so every reader progresses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use tokio::sync::{mpsc, oneshot};

use super::frame;
use super::partition::{Partition, ReadOptions};
use super::segment::{CompactedWriter, Segment, SegmentFile};
use super::types::{Offset, now_ms};
use super::{Command, KEY_COLUMN, SCHEMA_VERSION, Shared, StorageError, Topic};

/// How a compacted topic's records are compacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Which records delete their key, if any do.
    pub tombstone: Option<Tombstone>,
    /// How long a tombstone stays after its segment was compacted (Kafka's
    /// `delete.retention.ms`), measured by its segment's newest record.
    pub delete_retention_ms: u64,
}

/// What marks a record that deletes its key: a column of the storage schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tombstone {
    /// A Boolean column that is true (a table's `_deleted`).
    Flag(usize),
    /// A column that is null (a schemaless topic's value, as in Kafka).
    Null(usize),
}

/// The directory, under the data directory, where compaction writes segments until they are
/// complete; emptied at start-up (what is there is unfinished output, never data).
pub const SCRATCH_DIR: &str = "compacting";

/// The bytes of dirty segments, as a share of those a pass rewrites, at which it starts.
const DIRTY_RATIO_MIN: f64 = 0.5;

/// What one pass over a partition did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub segments_before: usize,
    pub segments_after: usize,
    pub records_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// The first 16 bytes of a key's SHA-256.
type KeyHash = [u8; 16];

fn key_hash(key: &[u8]) -> KeyHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, key);
    digest.as_ref()[..16].try_into().expect("16 of 32 bytes")
}

/// Compacts every compacted topic's partitions that are due. Runs on its own thread.
pub(super) fn compact_all(shared: &Shared, flush: &dyn Fn() -> Result<(), StorageError>) {
    let topics: Vec<Arc<Topic>> = shared
        .topics
        .read()
        .expect("topics lock")
        .values()
        .filter(|t| t.spec.compaction.is_some())
        .cloned()
        .collect();
    // Only partitions dirty enough even without a horizon may be due: without one, the
    // log is neither flushed nor asked for its readers' holds.
    let due: Vec<(&Arc<Topic>, &Arc<Partition>)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
        .filter(|(_, p)| dirty_enough(&p.segments(), Offset(u64::MAX)).is_some())
        .collect();
    if due.is_empty() {
        return;
    }
    // What is committed now, made durable: compaction rewrites nothing a crash could undo.
    let snapshot = shared.snapshot.read().expect("snapshot lock").clone();
    if let Err(e) = flush() {
        tracing::warn!(error = %e, "compaction waits: the log could not be flushed");
        return;
    }
    let holds = shared.holds();
    for (topic, partition) in due {
        let waiting = holds
            .of(topic.spec.id, partition.id)
            .iter()
            .filter(|h| h.waits)
            .map(|h| h.offset)
            .min();
        let committed = snapshot.high_watermark(topic.spec.id, partition.id);
        let horizon = waiting.map_or(committed, |w| w.min(committed));
        match compact_partition(shared, topic, partition, horizon, now_ms()) {
            Ok(Some(done)) => tracing::info!(
                topic = %topic.spec.name,
                partition = partition.id.0,
                records_removed = done.records_removed,
                bytes_before = done.bytes_before,
                bytes_after = done.bytes_after,
                segments_before = done.segments_before,
                segments_after = done.segments_after,
                "compacted"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                topic = %topic.spec.name,
                partition = partition.id.0,
                error = %e,
                "compaction failed; the partition is as it was, and compaction tries again later"
            ),
        }
    }
}

/// Compacts the sealed segments of `partition` that end at or before `horizon`, if enough
/// of them are dirty. `None` if nothing was due.
pub(super) fn compact_partition(
    shared: &Shared,
    topic: &Topic,
    partition: &Arc<Partition>,
    horizon: Offset,
    now_ms: i64,
) -> Result<Option<Compacted>, StorageError> {
    let Some(rule) = topic.spec.compaction else {
        return Ok(None);
    };
    let segments = partition.segments();
    let Some((clean, cleanable)) = dirty_enough(&segments, horizon) else {
        return Ok(None);
    };
    let schema = topic.spec.schema.clone();
    let key_column = schema
        .index_of(KEY_COLUMN)
        .expect("every topic stores keys");
    let timestamp_column = topic.timestamp_column;
    // 1. The latest offset of each key in the dirty segments, as many as the map holds.
    let mut latest: HashMap<KeyHash, Offset> = HashMap::new();
    let mut mapped = clean;
    let mut last_offset = None;
    for (i, segment) in segments[clean..cleanable].iter().enumerate() {
        let range = segment.base_offset..segments[clean + i + 1].base_offset;
        let options = ReadOptions {
            schema: schema.clone(),
            projection: Some(vec![key_column]),
            min_timestamp_ms: None,
            max_timestamp_ms: None,
        };
        for read in partition.reader_over(segments[..cleanable].to_vec(), range, options) {
            let read = read?;
            let keys = read.batch.column(0).as_binary::<i32>();
            for (i, key) in keys.iter().enumerate() {
                if let Some(key) = key {
                    latest.insert(key_hash(key), read.offset(i));
                }
            }
            last_offset = Some(read.end_offset());
        }
        mapped += 1;
        if latest.len() >= shared.config.compaction_map_keys {
            if mapped < cleanable {
                tracing::info!(
                    topic = %topic.spec.name,
                    partition = partition.id.0,
                    keys = latest.len(),
                    "compacting part of the dirty segments: the rest have more keys than a pass maps"
                );
            }
            break;
        }
    }
    // The last record before the horizon stays, whatever it is.
    let last_kept = last_offset.map(|o: Offset| Offset(o.0 - 1));
    // Tombstones go from segments compacted before whose newest record is old enough.
    let tombstone_deadline = now_ms.saturating_sub(rule.delete_retention_ms as i64);
    let mut expired_until = segments[0].base_offset;
    for (i, segment) in segments[..clean].iter().enumerate() {
        if segment.max_timestamp_exact()? >= tombstone_deadline {
            break;
        }
        expired_until = segments[i + 1].base_offset;
    }

    // 2. and 3. Rewrite, in groups of about a segment's size, each installed when written.
    let spec = &topic.spec;
    let mut done = Compacted {
        segments_before: mapped,
        bytes_before: bytes(&segments[..mapped]),
        ..Compacted::default()
    };
    let generation = segments[..mapped]
        .iter()
        .map(|s| s.file.generation)
        .max()
        .unwrap_or(0)
        + 1;
    let scratch_dir = shared.config.dir.join(SCRATCH_DIR);
    let mut start = 0;
    // Where the next segment written starts: a group compaction emptied joins the next one.
    let mut group_start = 0;
    while start < mapped {
        let mut end = start + 1;
        let mut group_bytes = segments[start].size_bytes();
        while end < mapped && group_bytes + segments[end].size_bytes() <= spec.segment_bytes_max {
            group_bytes += segments[end].size_bytes();
            end += 1;
        }
        let range = segments[start].base_offset..segments[end].base_offset;
        let file = SegmentFile {
            base: segments[group_start].base_offset,
            generation,
        };
        let scratch = scratch_dir.join(format!(
            "{}-{}-{:020}-{generation}",
            spec.id.0, partition.id.0, file.base.0
        ));
        let mut out = Output::new(
            CompactedWriter::create(&shared.config.disk, &partition.dir, scratch, file)?,
            shared.config.frame_bytes_target as usize,
        );
        let options = ReadOptions {
            schema: schema.clone(),
            projection: None,
            min_timestamp_ms: None,
            max_timestamp_ms: None,
        };
        let rewritten = (|| {
            for read in
                partition.reader_over(segments[..cleanable].to_vec(), range.clone(), options)
            {
                let read = read?;
                let keys = read.batch.column(key_column).as_binary::<i32>();
                let keep: BooleanArray = (0..read.batch.num_rows())
                    .map(|i| {
                        let offset = read.offset(i);
                        let Some(key) = keys.is_valid(i).then(|| keys.value(i)) else {
                            return Some(true);
                        };
                        if latest.get(&key_hash(key)).is_some_and(|l| *l > offset) {
                            return Some(false);
                        }
                        let expired = offset < expired_until
                            && Some(offset) != last_kept
                            && is_tombstone(rule.tombstone, &read.batch, i);
                        Some(!expired)
                    })
                    .collect();
                let kept = filter_record_batch(&read.batch, &keep)
                    .map_err(|e| StorageError::InvalidBatch(e.to_string()))?;
                let offsets: Vec<u64> = (0..read.batch.num_rows())
                    .filter(|i| keep.value(*i))
                    .map(|i| read.offset(i).0)
                    .collect();
                done.records_removed += (read.batch.num_rows() - kept.num_rows()) as u64;
                out.push(kept, offsets, spec, timestamp_column)?;
            }
            out.close(range.end, spec, timestamp_column)
        })();
        let written = match rewritten {
            Ok(written) => written,
            Err(e) => {
                out.writer.abandon();
                return Err(e);
            }
        };
        if !written {
            // Nothing of the group is left: its offsets go to the next group's segment.
            out.writer.abandon();
            start = end;
            continue;
        }
        let replaced = &segments[group_start..end];
        let segment = {
            let files = topic.files.lock().expect("topic files lock");
            if files.dropped {
                out.writer.abandon();
                return Ok(None);
            }
            let segment = out.writer.finish()?;
            let size = segment.size_bytes();
            if !partition.replace_segments(replaced, segment) {
                return Err(StorageError::Refused(
                    "the partition's segments changed during compaction".into(),
                ));
            }
            size
        };
        done.segments_after += 1;
        done.bytes_after += segment;
        start = end;
        group_start = end;
    }
    Ok(Some(done))
}

/// The sealed segments of `segments` that end at or before `horizon` (`cleanable` of
/// them, a sealed segment ending where the next starts) and how many of those lead compacted
/// (`clean`), if the dirty rest is at least [`DIRTY_RATIO_MIN`] of their bytes.
fn dirty_enough(segments: &[Arc<Segment>], horizon: Offset) -> Option<(usize, usize)> {
    let cleanable = segments
        .windows(2)
        .take_while(|w| w[1].base_offset <= horizon)
        .count();
    let clean = segments[..cleanable]
        .iter()
        .take_while(|s| s.file.generation > 0)
        .count();
    let dirty_bytes = bytes(&segments[clean..cleanable]);
    let total_bytes = bytes(&segments[..cleanable]);
    let due = clean < cleanable && dirty_bytes as f64 >= DIRTY_RATIO_MIN * total_bytes as f64;
    due.then_some((clean, cleanable))
}

fn bytes(segments: &[Arc<Segment>]) -> u64 {
    segments.iter().map(|s| s.size_bytes()).sum()
}

fn is_tombstone(rule: Option<Tombstone>, batch: &RecordBatch, i: usize) -> bool {
    match rule {
        None => false,
        Some(Tombstone::Flag(c)) => {
            let flags = batch.column(c).as_boolean();
            flags.is_valid(i) && flags.value(i)
        }
        Some(Tombstone::Null(c)) => batch.column(c).is_null(i),
    }
}

/// The frames of a segment being written: records gathered until a frame's worth, each
/// frame covering the offsets from where the one before ended to its next record.
struct Output {
    writer: CompactedWriter,
    frame_bytes: usize,
    batches: Vec<RecordBatch>,
    offsets: Vec<u64>,
    bytes: usize,
}

impl Output {
    fn new(writer: CompactedWriter, frame_bytes: usize) -> Output {
        Output {
            writer,
            frame_bytes,
            batches: vec![],
            offsets: vec![],
            bytes: 0,
        }
    }

    fn push(
        &mut self,
        kept: RecordBatch,
        offsets: Vec<u64>,
        spec: &super::TopicSpec,
        timestamp_column: usize,
    ) -> Result<(), StorageError> {
        if offsets.is_empty() {
            return Ok(());
        }
        if self.bytes >= self.frame_bytes {
            // The frame gathered so far ends where these records start.
            self.write_frame(Offset(offsets[0]), spec, timestamp_column)?;
        }
        self.bytes += kept.get_array_memory_size();
        self.batches.push(kept);
        self.offsets.extend(offsets);
        Ok(())
    }

    /// Writes what is gathered as the segment's last frame, ending at `end`. False if the
    /// segment has no records at all.
    fn close(
        &mut self,
        end: Offset,
        spec: &super::TopicSpec,
        timestamp_column: usize,
    ) -> Result<bool, StorageError> {
        if self.offsets.is_empty() {
            return Ok(false);
        }
        self.write_frame(end, spec, timestamp_column)?;
        Ok(true)
    }

    fn write_frame(
        &mut self,
        end: Offset,
        spec: &super::TopicSpec,
        timestamp_column: usize,
    ) -> Result<(), StorageError> {
        let base = self.writer.end();
        let records = arrow::compute::concat_batches(&spec.schema, &self.batches)
            .map_err(|e| StorageError::InvalidBatch(e.to_string()))?;
        let span = u32::try_from(end.0 - base.0).map_err(|_| {
            StorageError::Refused(format!(
                "compaction would write a frame spanning offsets {base}..{end}, more than a frame can"
            ))
        })?;
        let deltas: Vec<u32> = self.offsets.iter().map(|o| (o - base.0) as u32).collect();
        let timestamps = records
            .column(timestamp_column)
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        let frame = frame::encode_sparse_frame(
            &records,
            timestamps,
            base,
            &deltas,
            span,
            SCHEMA_VERSION,
            spec.compression,
        )
        .map_err(|e| StorageError::InvalidBatch(e.to_string()))?;
        self.writer.append(&frame)?;
        self.batches.clear();
        self.offsets.clear();
        self.bytes = 0;
        Ok(())
    }
}

/// Starts the thread that compacts every `period` until the returned sender is used or
/// dropped. It flushes the log through `commands` before each pass.
pub(super) fn spawn(
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    period: Duration,
) -> Result<std::sync::mpsc::Sender<()>, StorageError> {
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("runnel-compactor".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(period)
            {
                compact_all(&shared, &|| flush(&commands));
            }
        })
        .map_err(|e| StorageError::io(Path::new("runnel-compactor"), e))?;
    Ok(stop_tx)
}

/// Makes every commit so far durable, from a thread outside the runtime.
pub(super) fn flush(commands: &mpsc::Sender<Command>) -> Result<(), StorageError> {
    let (reply, done) = oneshot::channel();
    commands
        .blocking_send(Command::Flush { reply: Some(reply) })
        .map_err(|_| StorageError::ShutDown)?;
    done.blocking_recv().map_err(|_| StorageError::ShutDown)?
}

/// Empties the scratch directory at start-up (creating it if need be): what is there is
/// the output of compactions that did not finish.
pub(super) fn clear_scratch(root: &Path) -> Result<PathBuf, StorageError> {
    let dir = root.join(SCRATCH_DIR);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StorageError::io(&dir, e)),
    }
    std::fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
    Ok(dir)
}
