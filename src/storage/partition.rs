//! A partition: an ordered list of segments, the last of which is active.
//!
//! Readers take a snapshot of the segment list and read frames by offset range (optionally
//! skipping frames by timestamp). The log's writer thread is the only writer: it appends
//! frames to the active segment, rolls to a new segment by size, deletes old segments for
//! retention, and after a failed group commit puts the partition back to its last committed
//! state with the same code that recovers it at start-up.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arrow::array::{ArrayRef, RecordBatch, new_null_array};
use arrow::datatypes::{Schema, SchemaRef};

use super::StorageError;
use super::disk::Disk;
use super::frame::{self, FrameHeader};
use super::segment::{self, Segment, SegmentFile, SegmentWriter};
use super::tiered::{Manifest, RemoteSegment, Tiered};
use super::types::{Offset, PartitionId};

#[derive(Debug)]
pub struct Partition {
    pub id: PartitionId,
    pub dir: PathBuf,
    disk: Disk,
    segments: RwLock<Vec<Arc<Segment>>>,
    /// The append side; locked only by the writer thread (and by recovery).
    writer: Mutex<PartitionWriter>,
    /// Records and bytes written and read since the server started, for `/metrics`.
    pub traffic: Arc<Traffic>,
    /// The object store its sealed segments are copied to, if tiered.
    tiered: Option<Tiered>,
}

/// What a partition has written and served since the server started: records and frame
/// bytes appended (acknowledged or not: a failed group commit's too), and read by the
/// readers that serve clients and queries (not by compaction).
#[derive(Debug, Default)]
pub struct Traffic {
    pub records_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub records_out: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl Traffic {
    fn count(records: &AtomicU64, bytes: &AtomicU64, n: u64, size: u64) {
        records.fetch_add(n, Ordering::Relaxed);
        bytes.fetch_add(size, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct PartitionWriter {
    active: SegmentWriter,
    /// Offset the next appended record gets.
    next_offset: Offset,
}

/// Size and positions of a partition, as `sys.partitions` shows them.
#[derive(Debug, Clone, Copy)]
pub struct PartitionStats {
    pub log_start_offset: Offset,
    pub size_bytes: u64,
    pub segments: usize,
    /// Bytes of segments whose log is on local disk, and of those copied to the object
    /// store (a segment may be both), and how many are in the store.
    pub local_bytes: u64,
    pub remote_bytes: u64,
    pub remote_segments: usize,
}

impl Partition {
    /// Creates a new, empty partition directory with its first segment.
    pub fn create(
        disk: &Disk,
        dir: &Path,
        id: PartitionId,
        tiered: Option<Tiered>,
    ) -> Result<Partition, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let (segment, active) = SegmentWriter::create(disk, dir, Offset(0))?;
        Ok(Partition {
            id,
            dir: dir.to_path_buf(),
            disk: disk.clone(),
            segments: RwLock::new(vec![Arc::new(segment)]),
            writer: Mutex::new(PartitionWriter {
                active,
                next_offset: Offset(0),
            }),
            traffic: Arc::default(),
            tiered,
        })
    }

    /// Opens a partition and recovers it to `committed_end`: segments that start after it
    /// are deleted, the active segment is cut back to it, and it must be reachable through
    /// intact frames (otherwise the error names the corrupt file and position). Every
    /// record from `log_start` (where retention last committed the partition starts) to
    /// the committed end must be in a segment: a missing or short segment is an error.
    /// Segments the partition's `remote.json` names are read from the object store when
    /// their local log is gone.
    pub fn open(
        disk: &Disk,
        dir: &Path,
        id: PartitionId,
        log_start: Offset,
        committed_end: Offset,
        tiered: Option<Tiered>,
    ) -> Result<Partition, StorageError> {
        let (segments, writer) = recover(disk, dir, log_start, committed_end, tiered.as_ref())?;
        Ok(Partition {
            id,
            dir: dir.to_path_buf(),
            disk: disk.clone(),
            segments: RwLock::new(segments),
            writer: Mutex::new(writer),
            traffic: Arc::default(),
            tiered,
        })
    }

    /// The object store its sealed segments go to, if tiered.
    pub fn tiered(&self) -> Option<&Tiered> {
        self.tiered.as_ref()
    }

    /// Puts the partition back to `committed_end` after a failed group commit.
    pub fn roll_back(&self, committed_end: Offset) -> Result<(), StorageError> {
        let mut writer = self.writer.lock().expect("partition writer lock");
        let mut segments = self.segments.write().expect("segments lock");
        let log_start = segments[0].base_offset;
        let (recovered, recovered_writer) = recover(
            &self.disk,
            &self.dir,
            log_start,
            committed_end,
            self.tiered.as_ref(),
        )?;
        *segments = recovered;
        *writer = recovered_writer;
        Ok(())
    }

    pub fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments.read().expect("segments lock").clone()
    }

    pub fn log_start_offset(&self) -> Offset {
        self.segments.read().expect("segments lock")[0].base_offset
    }

    pub fn stats(&self) -> PartitionStats {
        let segments = self.segments.read().expect("segments lock");
        let remote = || segments.iter().filter(|s| s.remote().is_some());
        PartitionStats {
            log_start_offset: segments[0].base_offset,
            size_bytes: segments.iter().map(|s| s.size_bytes()).sum(),
            segments: segments.len(),
            local_bytes: segments
                .iter()
                .filter(|s| s.is_local())
                .map(|s| s.size_bytes())
                .sum(),
            remote_bytes: remote().map(|s| s.size_bytes()).sum(),
            remote_segments: remote().count(),
        }
    }

    /// Appends `batches` (in the topic's storage schema) as frames of about
    /// `frame_bytes_target` each: small batches are coalesced into one frame, large ones
    /// split. Rolls to a new segment when the active one would pass `segment_bytes_max`.
    /// Returns the offset of the first record. Not durable until [`Partition::sync`].
    pub fn append(
        &self,
        batches: &[&RecordBatch],
        options: &AppendOptions,
    ) -> Result<Offset, StorageError> {
        let mut writer = self.writer.lock().expect("partition writer lock");
        let first = writer.next_offset;
        let target = options.frame_bytes_target as usize;
        let mut small: Vec<&RecordBatch> = vec![];
        let mut small_bytes = 0;
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            let bytes = batch.get_array_memory_size();
            if bytes >= target {
                self.append_coalesced(&mut writer, &std::mem::take(&mut small), options)?;
                small_bytes = 0;
                self.append_split(&mut writer, batch, options)?;
                continue;
            }
            small.push(batch);
            small_bytes += bytes;
            if small_bytes >= target {
                self.append_coalesced(&mut writer, &std::mem::take(&mut small), options)?;
                small_bytes = 0;
            }
        }
        self.append_coalesced(&mut writer, &small, options)?;
        Ok(first)
    }

    /// Small batches (together under the frame target) as one frame.
    fn append_coalesced(
        &self,
        writer: &mut PartitionWriter,
        batches: &[&RecordBatch],
        options: &AppendOptions,
    ) -> Result<(), StorageError> {
        match batches {
            [] => Ok(()),
            [one] => self.append_frame(writer, one, options),
            many => {
                let merged =
                    arrow::compute::concat_batches(&many[0].schema(), many.iter().copied())
                        .map_err(|e| StorageError::InvalidBatch(e.to_string()))?;
                self.append_frame(writer, &merged, options)
            }
        }
    }

    /// A large batch as frames of about the frame target each.
    fn append_split(
        &self,
        writer: &mut PartitionWriter,
        batch: &RecordBatch,
        options: &AppendOptions,
    ) -> Result<(), StorageError> {
        let rows = batch.num_rows();
        let bytes = batch.get_array_memory_size().max(1);
        let rows_per_frame = ((options.frame_bytes_target as u128 * rows as u128 / bytes as u128)
            as usize)
            .clamp(1, rows);
        let mut start = 0;
        while start < rows {
            let len = rows_per_frame.min(rows - start);
            self.append_frame(writer, &batch.slice(start, len), options)?;
            start += len;
        }
        Ok(())
    }

    fn append_frame(
        &self,
        writer: &mut PartitionWriter,
        batch: &RecordBatch,
        options: &AppendOptions,
    ) -> Result<(), StorageError> {
        let timestamps = batch
            .column(options.timestamp_column)
            .as_any()
            .downcast_ref::<arrow::array::TimestampMillisecondArray>()
            .ok_or_else(|| {
                StorageError::InvalidBatch("record timestamp column is not Timestamp(ms)".into())
            })?;
        let frame = frame::encode_frame(
            batch,
            timestamps,
            writer.next_offset,
            options.schema_version,
            options.compression,
        )
        .map_err(|e| StorageError::InvalidBatch(e.to_string()))?;
        let position = writer.active.position;
        if position > 0 && position + frame.len() as u64 > options.segment_bytes_max {
            self.roll(writer)?;
        }
        let segment = self.active_segment();
        writer.active.append(&segment, &frame)?;
        writer.next_offset = frame.header.end_offset();
        Traffic::count(
            &self.traffic.records_in,
            &self.traffic.bytes_in,
            batch.num_rows() as u64,
            frame.len() as u64,
        );
        Ok(())
    }

    /// Seals the active segment if it holds records (a new, empty one follows it).
    pub fn seal_active(&self) -> Result<(), StorageError> {
        let mut writer = self.writer.lock().expect("partition writer lock");
        if writer.next_offset > self.active_segment().base_offset {
            self.roll(&mut writer)?;
        }
        Ok(())
    }

    fn active_segment(&self) -> Arc<Segment> {
        self.segments
            .read()
            .expect("segments lock")
            .last()
            .expect("a partition always has a segment")
            .clone()
    }

    /// Seals the active segment and starts a new one at the next offset.
    fn roll(&self, writer: &mut PartitionWriter) -> Result<(), StorageError> {
        let sealed = self.active_segment();
        let (segment, active) = SegmentWriter::create(&self.disk, &self.dir, writer.next_offset)?;
        let old = std::mem::replace(&mut writer.active, active);
        old.seal(&sealed)?;
        self.segments
            .write()
            .expect("segments lock")
            .push(Arc::new(segment));
        tracing::debug!(partition = %self.dir.display(), base = %writer.next_offset, "rolled segment");
        Ok(())
    }

    /// Makes everything appended so far durable (the active segment; rolled segments were
    /// synced when sealed).
    pub fn sync(&self) -> Result<(), StorageError> {
        let writer = self.writer.lock().expect("partition writer lock");
        writer.active.sync()
    }

    pub fn next_offset(&self) -> Offset {
        self.writer
            .lock()
            .expect("partition writer lock")
            .next_offset
    }

    /// Where the partition would start if the sealed segments outside the retention limits
    /// were deleted: the oldest ones while the partition would still hold at least
    /// `retention_bytes` without them, and those whose newest record is older than
    /// `min_timestamp_ms`; but not those holding records at or after `hold` (the first
    /// offset a reader still needs), unless keeping them would keep more than
    /// `max_hold_bytes` beyond the limits. The active segment is never deleted. `None` if
    /// none would be.
    pub fn retention_start(
        &self,
        retention_bytes: Option<u64>,
        min_timestamp_ms: Option<i64>,
        hold: Option<Offset>,
        max_hold_bytes: u64,
    ) -> Result<Option<Offset>, StorageError> {
        let segments = self.segments();
        let mut total: u64 = segments.iter().map(|s| s.size_bytes()).sum();
        let mut doomed = 0;
        for segment in &segments[..segments.len() - 1] {
            let size = segment.size_bytes();
            let over_size = retention_bytes.is_some_and(|limit| total - size >= limit);
            let too_old = match min_timestamp_ms {
                Some(min) => segment.max_timestamp_exact()? < min,
                None => false,
            };
            if !(over_size || too_old) {
                break;
            }
            total -= size;
            doomed += 1;
        }
        if let Some(hold) = hold {
            // A sealed segment ends where the next one starts: those wholly before the hold
            // may go; the rest are kept while they fit in `max_hold_bytes`.
            let free = segments[..doomed]
                .iter()
                .zip(&segments[1..])
                .take_while(|(_, next)| next.base_offset <= hold)
                .count();
            let mut held: u64 = segments[free..doomed].iter().map(|s| s.size_bytes()).sum();
            let mut allowed = free;
            while held > max_hold_bytes && allowed < doomed {
                held -= segments[allowed].size_bytes();
                allowed += 1;
            }
            doomed = allowed;
        }
        Ok((doomed > 0).then(|| segments[doomed].base_offset))
    }

    /// Where the partition would start if the sealed segments holding only records before
    /// `offset` were deleted; `None` if there are none.
    pub fn start_after_deleting_before(&self, offset: Offset) -> Option<Offset> {
        let segments = self.segments();
        // A sealed segment ends where the next one starts.
        let doomed = segments
            .windows(2)
            .take_while(|w| w[1].base_offset <= offset)
            .count();
        (doomed > 0).then(|| segments[doomed].base_offset)
    }

    /// Deletes the segments before the one starting at `start` (a start committed by
    /// [`Partition::retention_start`] or [`Partition::start_after_deleting_before`]): their
    /// files go once no reader that started before holds them. Returns the number deleted.
    pub fn delete_segments_before(&self, start: Offset) -> Result<usize, StorageError> {
        let removed: Vec<Arc<Segment>> = {
            let mut segments = self.segments.write().expect("segments lock");
            let doomed = segments
                .iter()
                .take_while(|s| s.base_offset < start)
                .count()
                .min(segments.len() - 1);
            segments.drain(..doomed).collect()
        };
        for segment in &removed {
            tracing::info!(segment = %segment.path.display(), "deleting segment before the log start");
            segment.retire();
        }
        Ok(removed.len())
    }

    /// Puts `compacted` in the place of the run of sealed segments `replaced` (which it was
    /// compacted from, and whose offsets it covers): readers that start from now on read
    /// it, and the replaced segments' files go once no reader holds them. False, changing
    /// nothing, if the partition no longer lists exactly that run.
    pub fn replace_segments(&self, replaced: &[Arc<Segment>], compacted: Segment) -> bool {
        let mut segments = self.segments.write().expect("segments lock");
        let Some(first) = segments
            .iter()
            .position(|s| replaced.first().is_some_and(|r| Arc::ptr_eq(s, r)))
        else {
            return false;
        };
        let run = first..first + replaced.len();
        let same = run.end < segments.len()
            && segments[run.clone()]
                .iter()
                .zip(replaced)
                .all(|(s, r)| Arc::ptr_eq(s, r));
        if !same {
            return false;
        }
        for segment in segments.splice(run, [Arc::new(compacted)]) {
            segment.retire();
        }
        true
    }

    /// Reads committed records in exactly `range`: if retention has deleted its start, the
    /// reader's first item is [`StorageError::Removed`] (a reader that may start later,
    /// such as a bounded scan, asks from the log start). Blocking: run it on a blocking
    /// thread.
    pub fn reader(self: &Arc<Self>, range: Range<Offset>, options: ReadOptions) -> PartitionReader {
        PartitionReader {
            traffic: Some(self.traffic.clone()),
            ..self.reader_over(self.segments(), range, options)
        }
    }

    /// [`Partition::reader`] over `segments`, a list the partition had; what it reads is
    /// not counted as served.
    pub fn reader_over(
        &self,
        segments: Vec<Arc<Segment>>,
        range: Range<Offset>,
        options: ReadOptions,
    ) -> PartitionReader {
        let first = segments[0].base_offset;
        let removed =
            (range.start < range.end && range.start < first).then_some(StorageError::Removed {
                partition: self.id,
                from: range.start,
                to: first,
            });
        PartitionReader {
            segments,
            segment_index: None,
            position: 0,
            next: range.start.max(first),
            end: range.end,
            options,
            removed,
            traffic: None,
        }
    }
}

/// Where a partition's intact records end on disk, changing nothing, given that those before
/// `durable_end` are intact: frames are walked from there, across segment boundaries while
/// each segment ends where the next one starts, up to the first that is torn or missing.
/// What a crash of the machine left of records written under the `interval` flush policy.
pub fn intact_end(disk: &Disk, dir: &Path, durable_end: Offset) -> Result<Offset, StorageError> {
    if !dir.is_dir() {
        return Ok(durable_end);
    }
    let mut files = segment::list_segments(dir)?;
    // Of a base's generations, the newest is the segment.
    files.dedup_by(|later, earlier| {
        let same = later.base == earlier.base;
        if same {
            *earlier = *later;
        }
        same
    });
    let Some(first) = files.iter().rposition(|f| f.base <= durable_end) else {
        return Ok(durable_end);
    };
    let mut end = durable_end;
    for (i, &file) in files[first..].iter().enumerate() {
        if i > 0 && file.base != end {
            break;
        }
        end = Segment::intact_end(disk, dir, file, end)?;
    }
    Ok(end)
}

fn recover(
    disk: &Disk,
    dir: &Path,
    log_start: Offset,
    committed_end: Offset,
    tiered: Option<&Tiered>,
) -> Result<(Vec<Arc<Segment>>, PartitionWriter), StorageError> {
    let mut found = segment::list_segments(dir)?;
    // Segments whose copies are in the object store, perhaps only there.
    let manifest = Manifest::read(dir)?;
    let remote = |file: SegmentFile| manifest.find(file).copied();
    if let (None, Some(first)) = (tiered, manifest.segments.first()) {
        return Err(StorageError::Failed(format!(
            "{} names segments in an object store (from offset {}): start with the --object-store they were copied to",
            dir.join(super::tiered::MANIFEST_FILE).display(),
            first.base
        )));
    }
    found.extend(manifest.segments.iter().map(RemoteSegment::file));
    found.sort();
    found.dedup();
    // Of the generations of one base, the newest is the segment: a compaction wrote it and
    // stopped before deleting the one it replaced.
    let mut files: Vec<SegmentFile> = Vec::with_capacity(found.len());
    for file in found {
        if let Some(older) = files.last_mut().filter(|f| f.base == file.base) {
            tracing::info!(segment = %older.log(dir).display(), "finishing the deletion of a segment compaction replaced");
            older.delete(disk, dir)?;
            *older = file;
        } else {
            files.push(file);
        }
    }
    if files.is_empty() {
        // Restored from the store with no sealed segment: a partition empty from its start.
        let restored = dir.join(super::tiered::MANIFEST_FILE).exists() && tiered.is_some();
        if restored && log_start == committed_end {
            let (segment, active) = SegmentWriter::create(disk, dir, committed_end)?;
            return Ok((
                vec![Arc::new(segment)],
                PartitionWriter {
                    active,
                    next_offset: committed_end,
                },
            ));
        }
        if committed_end != Offset(0) || log_start != Offset(0) {
            return Err(StorageError::corruption(
                dir,
                0,
                format!(
                    "partition has no segments but offsets {log_start}..{committed_end} were committed"
                ),
            ));
        }
        let (segment, active) = SegmentWriter::create(disk, dir, Offset(0))?;
        return Ok((
            vec![Arc::new(segment)],
            PartitionWriter {
                active,
                next_offset: Offset(0),
            },
        ));
    }
    // Segments rolled for appends that never committed.
    while files.len() > 1 && files.last().expect("non-empty").base > committed_end {
        let file = files.pop().expect("non-empty");
        tracing::info!(segment = %file.log(dir).display(), "deleting uncommitted segment");
        file.delete(disk, dir)?;
    }
    // Segments retention committed the deletion of, when the files outlived the commit.
    while files.len() > 1 && files[1].base <= log_start {
        let file = files.remove(0);
        tracing::info!(segment = %file.log(dir).display(), "finishing the deletion of a segment past retention");
        file.delete(disk, dir)?;
    }
    if files[0].base > log_start {
        return Err(StorageError::corruption(
            &files[0].log(dir),
            0,
            format!(
                "the partition starts at offset {log_start}, but its first segment starts at {}: the segments holding offsets {log_start}..{} are missing",
                files[0].base, files[0].base
            ),
        ));
    }
    // The last segment is the active one, unless it is only in the store (a data directory
    // restored from it): then a new one starts after it.
    let last = *files.last().expect("non-empty");
    let active = match remote(last).filter(|_| !last.log(dir).exists()) {
        Some(_) => None,
        None => files.pop(),
    };
    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(files.len() + 1);
    // The offset after the last sealed segment kept.
    let mut end: Option<Offset> = None;
    for file in files {
        let covering = segments
            .last()
            .filter(|_| end.is_some_and(|e| file.base < e));
        if let Some(covering) = covering {
            // A compaction merged this segment into the one before, of a newer generation,
            // and stopped before deleting it. Anything else overlapping is damage.
            if covering.file.generation <= file.generation {
                return Err(StorageError::corruption(
                    &file.log(dir),
                    0,
                    format!(
                        "the segment starts at offset {}, inside the segment before it ({}, which ends at {})",
                        file.base,
                        covering.path.display(),
                        end.expect("checked"),
                    ),
                ));
            }
            tracing::info!(segment = %file.log(dir).display(), "finishing the deletion of a segment compaction replaced");
            file.delete(disk, dir)?;
            continue;
        }
        check_contiguous(segments.last(), end, file.base)?;
        let copy = remote(file).zip(tiered);
        let segment = match copy {
            Some((copy, tiered)) if !file.log(dir).exists() => {
                let log = tiered.log(&file.log(dir), copy.size);
                Segment::open_remote(disk, dir, file, log, |path| tiered.fetch(path))?
            }
            _ => {
                let segment = Segment::open_sealed(disk, dir, file)?;
                if let Some((copy, tiered)) = copy {
                    segment.set_remote(tiered.log(&file.log(dir), copy.size));
                }
                segment
            }
        };
        end = Some(match copy {
            Some((copy, _)) => Offset(copy.end),
            None => segment.end_offset()?,
        });
        segments.push(Arc::new(segment));
    }
    let active_base = match active {
        Some(active) => active.base,
        None => end.expect("a sealed segment"),
    };
    check_contiguous(segments.last(), end, active_base)?;
    let (segment, writer) = match active {
        Some(_) => SegmentWriter::recover(disk, dir, active_base, committed_end)?,
        None if active_base == committed_end => SegmentWriter::create(disk, dir, active_base)?,
        None => {
            return Err(StorageError::corruption(
                dir,
                0,
                format!(
                    "offsets {active_base}..{committed_end} were committed, but the object store's segments end at {active_base}"
                ),
            ));
        }
    };
    segments.push(Arc::new(segment));
    Ok((
        segments,
        PartitionWriter {
            active: writer,
            next_offset: committed_end,
        },
    ))
}

/// Checks that the segment starting at `next` starts where the sealed one before it (if
/// any, ending at `end`) ends.
fn check_contiguous(
    before: Option<&Arc<Segment>>,
    end: Option<Offset>,
    next: Offset,
) -> Result<(), StorageError> {
    match (before, end) {
        (Some(before), Some(end)) if end != next => Err(StorageError::corruption(
            &before.path,
            before.size_bytes(),
            format!(
                "the segment ends at offset {end} but the next one starts at {next}: offsets {}..{} are missing",
                end.min(next),
                end.max(next)
            ),
        )),
        _ => Ok(()),
    }
}

#[derive(Debug, Clone)]
pub struct AppendOptions {
    /// Index of the record timestamp column in the storage schema.
    pub timestamp_column: usize,
    pub schema_version: u32,
    pub compression: super::types::Compression,
    pub frame_bytes_target: u64,
    pub segment_bytes_max: u64,
}

/// What a read decodes and which frames it may skip.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    pub schema: SchemaRef,
    /// Columns of `schema` to decode (all when `None`).
    pub projection: Option<Vec<usize>>,
    /// Frames whose records are all older than this (ms) are skipped.
    pub min_timestamp_ms: Option<i64>,
    /// Frames whose records are all newer than this (ms) are skipped.
    pub max_timestamp_ms: Option<i64>,
}

/// Records read from the log, in offset order: `base_offset` is the first one's offset,
/// and those after it follow one by one, unless compaction removed some between them.
#[derive(Debug)]
pub struct ReadBatch {
    pub base_offset: Offset,
    pub batch: RecordBatch,
    /// Each record's offset, when they are not consecutive (read from a compacted segment).
    pub offsets: Option<Vec<u64>>,
}

impl ReadBatch {
    /// The offset of record `i`.
    pub fn offset(&self, i: usize) -> Offset {
        match &self.offsets {
            Some(offsets) => Offset(offsets[i]),
            None => self.base_offset.plus(i as u64),
        }
    }

    /// Which record is at `offset`, if one is.
    pub fn position_of(&self, offset: Offset) -> Option<usize> {
        match &self.offsets {
            Some(offsets) => offsets.binary_search(&offset.0).ok(),
            None => (offset >= self.base_offset
                && offset.0 - self.base_offset.0 < self.batch.num_rows() as u64)
                .then(|| (offset.0 - self.base_offset.0) as usize),
        }
    }

    /// The offset after the last record.
    pub fn end_offset(&self) -> Offset {
        match self.batch.num_rows() {
            0 => self.base_offset,
            n => self.offset(n - 1).plus(1),
        }
    }
}

/// A blocking iterator over the record batches of a range of one partition.
pub struct PartitionReader {
    segments: Vec<Arc<Segment>>,
    segment_index: Option<usize>,
    position: u64,
    next: Offset,
    end: Offset,
    options: ReadOptions,
    /// What retention deleted of the range asked for: the first thing read.
    removed: Option<StorageError>,
    /// Where what is read is counted.
    traffic: Option<Arc<Traffic>>,
}

impl PartitionReader {
    /// Positions the reader in segment `i` at the frame at or before `self.next`, or at the
    /// first frame that may hold a timestamp at or after the lower bound.
    fn enter_segment(&mut self, i: usize) {
        let segment = &self.segments[i];
        let state = segment.state.read().expect("segment lock");
        let mut position = state
            .index
            .position_for_offset(segment.base_offset, self.next);
        if let Some(min_ts) = self.options.min_timestamp_ms {
            let (ts_position, ts_offset) =
                state.index.start_for_timestamp(segment.base_offset, min_ts);
            // Every record before `ts_offset` is older than the bound: skip them.
            if ts_offset > self.next {
                position = ts_position;
                self.next = ts_offset;
            }
        }
        self.segment_index = Some(i);
        self.position = position;
    }

    fn next_batch(&mut self) -> Result<Option<ReadBatch>, StorageError> {
        if let Some(removed) = self.removed.take() {
            self.next = self.end;
            return Err(removed);
        }
        loop {
            if self.next >= self.end {
                return Ok(None);
            }
            let i = match self.segment_index {
                Some(i) => i,
                None => {
                    // The last segment starting at or before `next`.
                    let i = self
                        .segments
                        .partition_point(|s| s.base_offset <= self.next)
                        .saturating_sub(1);
                    self.enter_segment(i);
                    i
                }
            };
            let segment = self.segments[i].clone();
            let Some(header) = segment.header_at(self.position)? else {
                let Some(following) = self.segments.get(i + 1) else {
                    return Err(StorageError::corruption(
                        &segment.path,
                        self.position,
                        format!("log ends before committed offset {}", self.end),
                    ));
                };
                // A sealed segment ends where the next starts; ending early means records
                // are missing, which is an error, never a gap to step over.
                if self.next < following.base_offset {
                    return Err(StorageError::corruption(
                        &segment.path,
                        self.position,
                        format!(
                            "the segment ends at offset {} but the next one starts at {}: offsets {}..{} are missing",
                            self.next, following.base_offset, self.next, following.base_offset
                        ),
                    ));
                }
                self.enter_segment(i + 1);
                continue;
            };
            let frame_end = header.end_offset();
            let position = self.position;
            self.position += header.length as u64;
            if header.base_offset >= self.end {
                return Ok(None);
            }
            if frame_end <= self.next {
                continue;
            }
            let skip = self
                .options
                .min_timestamp_ms
                .is_some_and(|t| header.max_timestamp_ms < t)
                || self
                    .options
                    .max_timestamp_ms
                    .is_some_and(|t| header.min_timestamp_ms > t);
            if skip {
                self.next = frame_end;
                continue;
            }
            let (batch, deltas) = decode_frame(&header, &self.options, |schema, projection| {
                segment.batch_at(position, &header, schema, projection)
            })
            .map_err(|e| match e {
                // Records that do not fit the schema they claim: damage at this frame.
                StorageError::InvalidBatch(reason) => {
                    StorageError::corruption(&segment.path, position, reason)
                }
                e => e,
            })?;
            let base = header.base_offset;
            let from = self.next.max(base);
            let to = self.end.min(frame_end);
            self.next = to;
            let (start, offsets) = match deltas {
                None => ((from.0 - base.0) as usize, None),
                Some(deltas) => {
                    // The records of a compacted frame within [from, to).
                    let first = deltas.partition_point(|&d| base.plus(d as u64) < from);
                    let last = deltas.partition_point(|&d| base.plus(d as u64) < to);
                    let offsets: Vec<u64> = deltas[first..last]
                        .iter()
                        .map(|&d| base.0 + d as u64)
                        .collect();
                    (first, Some(offsets))
                }
            };
            let len = offsets.as_ref().map_or((to.0 - from.0) as usize, Vec::len);
            if len == 0 {
                continue;
            }
            if let Some(traffic) = &self.traffic {
                Traffic::count(
                    &traffic.records_out,
                    &traffic.bytes_out,
                    len as u64,
                    header.length as u64,
                );
            }
            return Ok(Some(ReadBatch {
                base_offset: offsets.as_ref().map_or(from, |o| Offset(o[0])),
                batch: batch.slice(start, len),
                offsets,
            }));
        }
    }
}

/// Records and their offsets as a sparse frame has them (deltas from its base offset).
type FrameRecords = (RecordBatch, Option<Vec<u32>>);

/// The records of a frame in the schema and projection `options` ask for, whatever the
/// layout ([`super::SCHEMA_VERSION`]) it was written in: `read` reads the frame's records
/// in the schema it was written with, in the projection it is given.
fn decode_frame(
    header: &FrameHeader,
    options: &ReadOptions,
    read: impl FnOnce(&SchemaRef, Option<&[usize]>) -> Result<FrameRecords, StorageError>,
) -> Result<FrameRecords, StorageError> {
    let projection = options.projection.as_deref();
    match header.schema_version {
        super::SCHEMA_VERSION => read(&options.schema, projection),
        0 => {
            // Written before records had headers: the schema without its last column.
            let schema = &options.schema;
            let headers = schema.fields().len() - 1;
            let before = Arc::new(Schema::new(schema.fields()[..headers].to_vec()));
            let wanted: Vec<usize> = match projection {
                Some(p) => p.to_vec(),
                None => (0..=headers).collect(),
            };
            let stored: Vec<usize> = wanted.iter().copied().filter(|c| *c < headers).collect();
            let (batch, offsets) = read(&before, Some(&stored))?;
            let rows = batch.num_rows();
            let mut decoded = batch.columns().iter();
            let columns: Vec<ArrayRef> = wanted
                .iter()
                .map(|c| match c {
                    c if *c < headers => decoded.next().expect("one per stored column").clone(),
                    _ => new_null_array(schema.field(headers).data_type(), rows),
                })
                .collect();
            let projected =
                Arc::new(schema.project(&wanted).map_err(|e| {
                    StorageError::InvalidBatch(format!("projecting {wanted:?}: {e}"))
                })?);
            RecordBatch::try_new_with_options(
                projected,
                columns,
                &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
            )
            .map(|batch| (batch, offsets))
            .map_err(|e| StorageError::InvalidBatch(e.to_string()))
        }
        version => Err(StorageError::InvalidBatch(format!(
            "frame of schema version {version}, which this build does not read"
        ))),
    }
}

impl Iterator for PartitionReader {
    type Item = Result<ReadBatch, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_batch() {
            Ok(Some(batch)) => Some(Ok(batch)),
            Ok(None) => None,
            Err(e) => {
                self.next = self.end; // an error ends the read
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray, BinaryArray, Int64Array, TimestampMillisecondArray};
    use arrow::buffer::Buffer;
    use arrow::datatypes::{DataType, Field, Fields};

    use super::*;
    use crate::storage::types::Compression;

    #[test]
    fn frames_written_before_headers_read_with_null_headers() {
        let schema = crate::storage::storage_schema(&Fields::from(vec![Field::new(
            "id",
            DataType::Int64,
            false,
        )]));
        let before = Arc::new(Schema::new(schema.fields()[..3].to_vec()));
        let timestamps = TimestampMillisecondArray::from(vec![10, 11]);
        let old = RecordBatch::try_new(
            before,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(timestamps.clone()),
                Arc::new(BinaryArray::from(vec![Some(&b"k"[..]), None])),
            ],
        )
        .unwrap();
        let frame =
            frame::encode_frame(&old, &timestamps, Offset(0), 0, Compression::None).unwrap();
        let bytes = Buffer::from(frame.to_bytes());
        let read = |projection: Option<Vec<usize>>| {
            let options = ReadOptions {
                schema: schema.clone(),
                projection,
                min_timestamp_ms: None,
                max_timestamp_ms: None,
            };
            decode_frame(&frame.header, &options, |schema, projection| {
                frame::decode_batch(&bytes, &frame.header, schema, projection)
                    .map(|batch| (batch, None))
                    .map_err(|e| StorageError::InvalidBatch(e.to_string()))
            })
            .unwrap()
            .0
        };
        let all = read(None);
        assert_eq!(all.schema(), schema);
        assert_eq!(all.column(3).null_count(), 2);
        assert_eq!(all.column(2).as_binary::<i32>().value(0), b"k");
        let some = read(Some(vec![3, 0]));
        assert_eq!(some.num_columns(), 2);
        assert_eq!(some.column(0).null_count(), 2);
        assert_eq!(
            some.column(1)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(1),
            2
        );
        assert_eq!(read(Some(vec![])).num_rows(), 2);
    }
}
