//! One segment of a partition: `<base>.log` with its `<base>.index` and `<base>.timeindex`.
//!
//! A segment is appended only by the partition's writer (the log's writer thread) and read by
//! any number of readers through positioned reads. Readers never look past the committed high
//! watermark, so bytes they read are complete, checksummed and fsynced; they verify every
//! frame's checksum anyway, because a sealed segment can still rot on disk.
//!
//! Recovery of the active (last) segment is here too: it walks frames from the last trusted
//! index entry up to the committed end offset and cuts the file there. A bad frame *before*
//! the committed end is corruption and is reported with its file and position, never skipped.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use arrow::array::RecordBatch;
use arrow::buffer::{Buffer, MutableBuffer};
use arrow::datatypes::SchemaRef;

use super::StorageError;
use super::disk::Disk;
use super::frame::{self, EncodedFrame, FRAME_HEADER_LEN, FrameError, FrameHeader, Layout};
use super::index::{self, OffsetEntry, SegmentIndex, TimeEntry};
use super::tiered::RemoteLog;
use super::types::Offset;

/// Unwanted bytes between two wanted sections of a frame that are read rather than skipped
/// with a read of its own: copying 16 KiB costs about what another read does.
const READ_GAP_MAX: usize = 16 * 1024;

/// Which files a segment is: the base offset they are named after and, for a segment
/// compaction wrote, its generation (one more than that of the segments it replaced). A
/// segment of generation 0 is `<base>.log` with `<base>.index` and `<base>.timeindex`; of
/// generation `g`, `<base>.<g>.log` and so on. Compaction writes a new generation beside the
/// files it replaces, so no file a reader may still read ever changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentFile {
    pub base: Offset,
    pub generation: u32,
}

impl SegmentFile {
    /// The files of an appended segment (never compacted).
    pub fn appended(base: Offset) -> SegmentFile {
        SegmentFile {
            base,
            generation: 0,
        }
    }

    fn path(&self, dir: &Path, extension: &str) -> PathBuf {
        match self.generation {
            0 => dir.join(format!("{:020}.{extension}", self.base.0)),
            g => dir.join(format!("{:020}.{g}.{extension}", self.base.0)),
        }
    }

    pub fn log(&self, dir: &Path) -> PathBuf {
        self.path(dir, "log")
    }

    pub fn offset_index(&self, dir: &Path) -> PathBuf {
        self.path(dir, "index")
    }

    pub fn time_index(&self, dir: &Path) -> PathBuf {
        self.path(dir, "timeindex")
    }

    /// Removes the segment's files. Missing files are fine: deletion may be resumed after a
    /// crash.
    pub fn delete(&self, disk: &Disk, dir: &Path) -> Result<(), StorageError> {
        for path in [self.log(dir), self.offset_index(dir), self.time_index(dir)] {
            disk.remove(&path)?;
        }
        Ok(())
    }
}

/// The segment files in a partition directory, ascending by base offset and generation
/// (a compaction that did not finish deleting what it replaced may leave several of one
/// base).
pub fn list_segments(dir: &Path) -> Result<Vec<SegmentFile>, StorageError> {
    let mut files = vec![];
    for entry in fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(stem) = name.strip_suffix(".log") else {
            continue;
        };
        let (base, generation) = match stem.split_once('.') {
            Some((base, generation)) => (base, generation.parse::<u32>().ok()),
            None => (stem, Some(0)),
        };
        if let (Ok(base), Some(generation)) = (base.parse::<u64>(), generation) {
            files.push(SegmentFile {
                base: Offset(base),
                generation,
            });
        }
    }
    files.sort();
    Ok(files)
}

/// What readers and the retention policy know of a segment.
#[derive(Debug)]
pub struct SegmentState {
    pub index: SegmentIndex,
    /// Bytes of frames written (committed or not; readers are bounded by offsets instead).
    pub size_bytes: u64,
}

#[derive(Debug)]
pub struct Segment {
    pub base_offset: Offset,
    pub file: SegmentFile,
    /// Its log file.
    pub path: PathBuf,
    dir: PathBuf,
    disk: Disk,
    pub state: RwLock<SegmentState>,
    /// Set once the partition no longer lists it (retention or compaction replaced it): its
    /// files are deleted when the last reader holding it is done.
    retired: AtomicBool,
    /// Its copy in the object store, once uploaded ([`super::tiered`]).
    remote: OnceLock<Arc<RemoteLog>>,
    /// Whether its log file is on local disk (cleared once the store's copy serves it).
    local: AtomicBool,
}

impl Segment {
    /// A segment of `size_bytes` with an empty index (to be loaded or rebuilt).
    fn unindexed(disk: &Disk, dir: &Path, file: SegmentFile, size_bytes: u64) -> Segment {
        Segment {
            base_offset: file.base,
            file,
            path: file.log(dir),
            dir: dir.to_path_buf(),
            disk: disk.clone(),
            state: RwLock::new(SegmentState {
                index: SegmentIndex::new(),
                size_bytes,
            }),
            retired: AtomicBool::new(false),
            remote: OnceLock::new(),
            local: AtomicBool::new(true),
        }
    }

    /// Its copy in the object store, if it has one.
    pub fn remote(&self) -> Option<&Arc<RemoteLog>> {
        self.remote.get()
    }

    /// Records that the store holds a copy of the sealed segment.
    pub fn set_remote(&self, remote: Arc<RemoteLog>) {
        let _ = self.remote.set(remote);
    }

    pub fn is_local(&self) -> bool {
        self.local.load(Ordering::Acquire)
    }

    /// Removes the local log file of a segment the store holds a copy of (its indexes stay):
    /// from now on it is read from the store. Readers reading the local file meanwhile go
    /// to the store when they find it gone.
    pub fn evict_local(&self) -> Result<(), StorageError> {
        if self.remote.get().is_none() {
            return Err(StorageError::Failed(format!(
                "{} has no copy in the object store",
                self.path.display()
            )));
        }
        self.local.store(false, Ordering::Release);
        self.disk.remove(&self.path)
    }

    /// `len` bytes at `position` (fewer at the end), from the local file or the store.
    fn read(&self, len: usize, position: u64) -> Result<MutableBuffer, StorageError> {
        if self.is_local() {
            match self.disk.read_buffer(&self.path, len, position) {
                Ok(buf) => return Ok(buf),
                // Evicted after the check: the store has it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.is_local() => {}
                Err(e) => return Err(StorageError::io(&self.path, e)),
            }
        }
        let remote = self.remote.get().ok_or_else(|| {
            StorageError::Failed(format!(
                "{} is neither on disk nor in an object store",
                self.path.display()
            ))
        })?;
        remote
            .read(position, len)
            .map_err(|e| StorageError::io(&self.path, e))
    }

    /// Marks the segment as no longer the partition's: its files go when the last reader
    /// holding it lets go of it (at once if none does).
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    pub fn size_bytes(&self) -> u64 {
        self.state.read().expect("segment lock").size_bytes
    }

    /// Reads the frame header at `position`. `Ok(None)` at the end of the file.
    pub fn header_at(&self, position: u64) -> Result<Option<FrameHeader>, StorageError> {
        let buf = self.read(FRAME_HEADER_LEN, position)?;
        if buf.is_empty() {
            return Ok(None);
        }
        frame::decode_header(buf.as_slice())
            .map(Some)
            .map_err(|e| StorageError::corruption(&self.path, position, e))
    }

    /// Reads the whole frame at `position` and verifies its checksum.
    pub fn frame_at(&self, position: u64, header: &FrameHeader) -> Result<Buffer, StorageError> {
        let len = header.length as usize;
        let buf = self.read(len, position)?;
        let verified = frame::decode_frame(buf.as_slice())
            .map_err(|e| StorageError::corruption(&self.path, position, e))?;
        if verified != *header {
            return Err(StorageError::corruption(
                &self.path,
                position,
                "frame changed between reads",
            ));
        }
        Ok(buf.into())
    }

    /// The records of the frame at `position` in the columns of `schema` that `projection`
    /// selects (all without one), and, of a sparse frame, their offsets (as deltas from its
    /// base offset). Of a frame of the current format only the header, the column directory
    /// and the sections needed are read and verified; neighbouring sections are read
    /// together.
    pub fn batch_at(
        &self,
        position: u64,
        header: &FrameHeader,
        schema: &SchemaRef,
        projection: Option<&[usize]>,
    ) -> Result<(RecordBatch, Option<Vec<u32>>), StorageError> {
        let corrupt = |e: FrameError| StorageError::corruption(&self.path, position, e);
        let partial = match (header.layout, projection) {
            (Layout::Sections { columns }, Some(projection)) => {
                (projection.len() < columns as usize).then_some((projection, columns as usize))
            }
            _ => None,
        };
        let Some((projection, columns)) = partial else {
            let bytes = self.frame_at(position, header)?;
            let batch = frame::decode_batch(&bytes, header, schema, projection).map_err(corrupt)?;
            let offsets = frame::decode_frame_offsets(&bytes, header).map_err(corrupt)?;
            return Ok((batch, offsets));
        };
        let head = self.read_exact(position, header.head_len())?;
        if frame::decode_header(head.as_slice()).map_err(corrupt)? != *header {
            return Err(corrupt(FrameError::BadHeader(
                "frame changed between reads",
            )));
        }
        let sections = frame::decode_directory(head.as_slice(), header).map_err(corrupt)?;
        let mut wanted = projection.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.last().is_some_and(|&c| c >= columns) {
            return Err(StorageError::InvalidBatch(format!(
                "columns {projection:?} asked of a frame of {columns}"
            )));
        }
        if header.is_sparse() {
            // The records' offsets, in the section after the columns'.
            wanted.push(columns);
        }
        let mut read: Vec<Option<Buffer>> = vec![None; sections.len()];
        let mut i = 0;
        while i < wanted.len() {
            // A run of sections close enough to read in one go.
            let mut j = i + 1;
            while j < wanted.len()
                && sections[wanted[j]].position as usize - sections[wanted[j - 1]].range().end
                    <= READ_GAP_MAX
            {
                j += 1;
            }
            let start = sections[wanted[i]].position as usize;
            let end = sections[wanted[j - 1]].range().end;
            let bytes: Buffer = self
                .read_exact(position + start as u64, end - start)?
                .into();
            for &c in &wanted[i..j] {
                let section = &sections[c];
                let own = bytes
                    .slice_with_length(section.position as usize - start, section.length as usize);
                frame::verify_section(own.as_slice(), section).map_err(corrupt)?;
                read[c] = Some(own);
            }
            i = j;
        }
        let offsets = match header.is_sparse() {
            true => {
                let bytes = read[columns]
                    .as_ref()
                    .expect("the offsets' section is read");
                Some(frame::decode_offsets(bytes, &sections[columns], header).map_err(corrupt)?)
            }
            false => None,
        };
        let batch = frame::decode_columns(
            header,
            &sections[..columns],
            schema,
            Some(projection),
            |c, _| read[c].clone().expect("every projected section is read"),
        )
        .map_err(corrupt)?;
        Ok((batch, offsets))
    }

    /// `len` bytes at `position`; fewer (the file ends early) is a damaged frame.
    fn read_exact(&self, position: u64, len: usize) -> Result<MutableBuffer, StorageError> {
        let buf = self.read(len, position)?;
        if buf.len() < len {
            return Err(StorageError::corruption(
                &self.path,
                position,
                FrameError::Truncated {
                    needed: len,
                    available: buf.len(),
                },
            ));
        }
        Ok(buf)
    }

    /// The last frame that ends at or before `end_position`, found by walking headers from
    /// the last offset index entry before it.
    pub fn last_frame_before(
        &self,
        end_position: u64,
    ) -> Result<Option<OffsetEntry>, StorageError> {
        let start = {
            let state = self.state.read().expect("segment lock");
            state
                .index
                .offsets
                .iter()
                .rev()
                .find(|e| (e.position as u64) < end_position)
                .copied()
        };
        let Some(mut entry) = start else {
            return Ok(None);
        };
        let mut position = entry.position as u64;
        while position < end_position {
            let Some(header) = self.header_at(position)? else {
                break;
            };
            entry = OffsetEntry {
                relative_offset: (header.base_offset.0 - self.base_offset.0) as u32,
                position: position as u32,
            };
            position += header.length as u64;
        }
        Ok(Some(entry))
    }

    /// The largest record timestamp in the segment, exactly: the time index bounds every
    /// frame up to its last entry, and the headers of the frames after it are read.
    pub fn max_timestamp_exact(&self) -> Result<i64, StorageError> {
        let (mut max, mut position, size) = {
            let state = self.state.read().expect("segment lock");
            let last = state.index.times.last();
            (
                last.map_or(i64::MIN, |t| t.max_timestamp_ms),
                last.map_or(0, |t| t.position as u64),
                state.size_bytes,
            )
        };
        while position < size {
            let Some(header) = self.header_at(position)? else {
                break;
            };
            max = max.max(header.max_timestamp_ms);
            position += header.length as u64;
        }
        Ok(max)
    }

    /// The offset after the segment's last record, found by walking frame headers from the
    /// last index entry. The frames must end exactly at the end of the file: a sealed
    /// segment cut short (or grown) is corruption.
    pub fn end_offset(&self) -> Result<Offset, StorageError> {
        let (mut position, size) = {
            let state = self.state.read().expect("segment lock");
            let last = state.index.offsets.last().copied();
            (last.map_or(0, |e| e.position as u64), state.size_bytes)
        };
        let mut end = self.base_offset;
        if let Some(entry) = self
            .state
            .read()
            .expect("segment lock")
            .index
            .offsets
            .last()
        {
            end = self.base_offset.plus(entry.relative_offset as u64);
        }
        while position < size {
            let Some(header) = self.header_at(position)? else {
                break;
            };
            if header.base_offset != end {
                return Err(StorageError::corruption(
                    &self.path,
                    position,
                    format!(
                        "frame starts at offset {}, expected {end}",
                        header.base_offset
                    ),
                ));
            }
            position += header.length as u64;
            end = header.end_offset();
        }
        if position != size {
            return Err(StorageError::corruption(
                &self.path,
                position.min(size),
                format!(
                    "sealed segment is {size} bytes but its frames end at byte {position}: the file was cut short or changed"
                ),
            ));
        }
        Ok(end)
    }

    /// Opens a sealed segment: loads its indexes, rebuilding them from the frames if they are
    /// missing or malformed (they are hints; the frames are the truth).
    pub fn open_sealed(
        disk: &Disk,
        dir: &Path,
        file: SegmentFile,
    ) -> Result<Segment, StorageError> {
        let size_bytes = disk.len(&file.log(dir))?;
        Segment::open_indexed(Segment::unindexed(disk, dir, file, size_bytes))
    }

    /// Opens a sealed segment whose log is only in the object store, as `remote`: its
    /// indexes are loaded from local files, fetched from the store when there are none (a
    /// data directory restored from the store), or rebuilt from the frames.
    pub fn open_remote(
        disk: &Disk,
        dir: &Path,
        file: SegmentFile,
        remote: Arc<RemoteLog>,
        fetch: impl Fn(&Path) -> Result<Option<bytes::Bytes>, StorageError>,
    ) -> Result<Segment, StorageError> {
        for index in [file.offset_index(dir), file.time_index(dir)] {
            if !index.exists()
                && let Some(bytes) = fetch(&index)?
            {
                disk.write_file(&index, &[&bytes])?;
            }
        }
        let segment = Segment::unindexed(disk, dir, file, remote.size);
        segment.local.store(false, Ordering::Release);
        let _ = segment.remote.set(remote);
        Segment::open_indexed(segment)
    }

    /// Loads an unindexed sealed segment's indexes, rebuilding them if need be.
    fn open_indexed(segment: Segment) -> Result<Segment, StorageError> {
        let (disk, dir, file) = (&segment.disk, &segment.dir, segment.file);
        let base = file.base;
        let size_bytes = segment.size_bytes();
        let offsets = fs::read(file.offset_index(dir))
            .ok()
            .and_then(|b| index::decode_offset_index(&b));
        let times = fs::read(file.time_index(dir))
            .ok()
            .and_then(|b| index::decode_time_index(&b));
        let plausible = |o: &Vec<OffsetEntry>, t: &Vec<TimeEntry>| {
            !o.is_empty()
                && o[0].position == 0
                && o.last().is_some_and(|e| (e.position as u64) < size_bytes)
                && t.last().is_none_or(|e| (e.position as u64) < size_bytes)
        };
        match (offsets, times) {
            (Some(o), Some(t)) if plausible(&o, &t) => {
                segment.state.write().expect("segment lock").index =
                    SegmentIndex::from_entries(o, t);
            }
            _ => {
                tracing::warn!(segment = %segment.path.display(), "rebuilding segment index");
                let (index, end, _) = segment.scan(0, base, None, u64::MAX)?;
                if end != size_bytes {
                    return Err(StorageError::corruption(
                        &segment.path,
                        end,
                        "sealed segment has trailing bytes that are not a frame",
                    ));
                }
                disk.write_file(&file.offset_index(dir), &[&index.encode_offsets()])?;
                disk.write_file(&file.time_index(dir), &[&index.encode_times()])?;
                segment.state.write().expect("segment lock").index = index;
            }
        }
        Ok(segment)
    }

    /// Where a scan of the frames up to `until` can start: the last index entry that points
    /// at a real frame at or before it (the index files are not fsynced with the frames, so
    /// each candidate is checked), with the index before it; else the segment's start.
    fn resume_point(&self, dir: &Path, until: Offset) -> (u64, Offset, SegmentIndex) {
        let size = self.size_bytes();
        let offsets = fs::read(self.file.offset_index(dir))
            .ok()
            .and_then(|b| index::decode_offset_index(&b))
            .unwrap_or_default();
        let times = fs::read(self.file.time_index(dir))
            .ok()
            .and_then(|b| index::decode_time_index(&b))
            .unwrap_or_default();
        for (i, entry) in offsets.iter().enumerate().rev() {
            let offset = self.base_offset.plus(entry.relative_offset as u64);
            if offset > until || (entry.position as u64) >= size {
                continue;
            }
            let ok = matches!(self.header_at(entry.position as u64), Ok(Some(h)) if h.base_offset == offset);
            if ok {
                let mut index = SegmentIndex::from_entries(
                    offsets[..i].to_vec(),
                    times
                        .iter()
                        .copied()
                        .filter(|t| t.position < entry.position)
                        .collect(),
                );
                index.truncate_to(entry.position as u64);
                return (entry.position as u64, offset, index);
            }
        }
        (0, self.base_offset, SegmentIndex::new())
    }

    /// Where the intact frames of the segment `file` end (the offset after the last
    /// one), changing nothing, scanning from the frame at or before `from` (records known
    /// intact up to there): what a crash of the machine left of unflushed frames.
    pub fn intact_end(
        disk: &Disk,
        dir: &Path,
        file: SegmentFile,
        from: Offset,
    ) -> Result<Offset, StorageError> {
        let segment = Segment::unindexed(disk, dir, file, disk.len(&file.log(dir))?);
        let (mut position, mut offset, _) = segment.resume_point(dir, from);
        while let Ok(Some(header)) = segment.header_at(position) {
            if header.base_offset != offset || segment.frame_at(position, &header).is_err() {
                break;
            }
            position += header.length as u64;
            offset = header.end_offset();
        }
        Ok(offset)
    }

    /// Walks frames from `position` (the frame there starts at `offset`), verifying each one,
    /// until `stop_at` (an offset) or the end of the file. Returns the index rebuilt from
    /// `start_index` plus the frames walked, the position after the last good frame, and the
    /// offset there. Frames are verified whole, so this reads every byte it walks.
    fn scan(
        &self,
        mut position: u64,
        mut offset: Offset,
        start_index: Option<SegmentIndex>,
        stop_at: u64,
    ) -> Result<(SegmentIndex, u64, Offset), StorageError> {
        let mut index = start_index.unwrap_or_default();
        while offset.0 < stop_at {
            let Some(header) = self.header_at(position)? else {
                break;
            };
            if header.base_offset != offset {
                return Err(StorageError::corruption(
                    &self.path,
                    position,
                    format!(
                        "frame starts at offset {}, expected {offset}",
                        header.base_offset
                    ),
                ));
            }
            self.frame_at(position, &header)?;
            index.on_frame(
                (offset.0 - self.base_offset.0) as u32,
                position as u32,
                header.length,
                header.max_timestamp_ms,
                INDEX_INTERVAL_BYTES,
            );
            position += header.length as u64;
            offset = header.end_offset();
        }
        Ok((index, position, offset))
    }
}

/// Makes `path` hold the index `bytes`, durably. Recovery mostly cuts an index back to a
/// prefix of itself: then the file is only cut, which needs no space (a full disk must not
/// stop an uncommitted append from being undone).
fn write_index(disk: &Disk, path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    match fs::read(path) {
        Ok(old) if old.starts_with(bytes) => {
            if old.len() > bytes.len() {
                disk.set_len(path, bytes.len() as u64)?;
                disk.sync(path)?;
            }
            Ok(())
        }
        _ => disk.write_file(path, &[bytes]),
    }
}

/// Bytes of log between sparse index entries.
pub const INDEX_INTERVAL_BYTES: u64 = 64 * 1024;

/// The append side of the active segment. Owned by the partition's writer.
#[derive(Debug)]
pub struct SegmentWriter {
    pub base_offset: Offset,
    disk: Disk,
    log: PathBuf,
    offset_index: IndexFile,
    time_index: IndexFile,
    /// Where the next frame goes.
    pub position: u64,
    /// Position of the last frame written, for the seal's final time entry.
    last_frame: Option<OffsetEntry>,
}

/// An index file being appended to.
#[derive(Debug)]
struct IndexFile {
    path: PathBuf,
    len: u64,
}

impl IndexFile {
    fn append(&mut self, disk: &Disk, bytes: &[u8]) -> Result<(), StorageError> {
        disk.write_at(&self.path, bytes, self.len)?;
        self.len += bytes.len() as u64;
        Ok(())
    }
}

impl SegmentWriter {
    /// Creates a new, empty segment starting at `base`.
    pub fn create(
        disk: &Disk,
        dir: &Path,
        base: Offset,
    ) -> Result<(Segment, SegmentWriter), StorageError> {
        let file = SegmentFile::appended(base);
        let path = file.log(dir);
        // Leftovers of an uncommitted roll are emptied: the segment starts empty.
        let offset_index = file.offset_index(dir);
        let time_index = file.time_index(dir);
        for p in [&path, &offset_index, &time_index] {
            disk.create(p)?;
        }
        disk.sync_dir(dir)?;
        let segment = Segment::unindexed(disk, dir, file, 0);
        let writer = SegmentWriter {
            base_offset: base,
            disk: disk.clone(),
            log: path,
            offset_index: IndexFile {
                path: offset_index,
                len: 0,
            },
            time_index: IndexFile {
                path: time_index,
                len: 0,
            },
            position: 0,
            last_frame: None,
        };
        Ok((segment, writer))
    }

    /// Recovers the active segment of a partition whose committed end offset is
    /// `committed_end`: frames up to it must all be present and valid; everything after it
    /// (an unacknowledged or torn write) is cut off.
    pub fn recover(
        disk: &Disk,
        dir: &Path,
        base: Offset,
        committed_end: Offset,
    ) -> Result<(Segment, SegmentWriter), StorageError> {
        let file = SegmentFile::appended(base);
        let path = file.log(dir);
        let size = disk.len(&path)?;
        let segment = Segment::unindexed(disk, dir, file, size);
        let (position, offset, index) = segment.resume_point(dir, committed_end);
        let (index, end_position, end_offset) =
            match segment.scan(position, offset, Some(index), committed_end.0) {
                Ok(done) => done,
                Err(StorageError::Corruption {
                    position, reason, ..
                }) => {
                    return Err(StorageError::corruption(
                        &path,
                        position,
                        format!("{reason} (before the committed end offset {committed_end})"),
                    ));
                }
                Err(e) => return Err(e),
            };
        if end_offset != committed_end {
            return Err(StorageError::corruption(
                &path,
                end_position,
                format!(
                    "log ends at offset {end_offset} but offsets up to {committed_end} were committed"
                ),
            ));
        }
        if end_position < size {
            tracing::info!(
                segment = %path.display(),
                cut_bytes = size - end_position,
                "truncating uncommitted tail"
            );
            disk.set_len(&path, end_position)?;
            disk.sync(&path)?;
        }
        let offsets = index.encode_offsets();
        let times = index.encode_times();
        let offset_index = IndexFile {
            path: file.offset_index(dir),
            len: offsets.len() as u64,
        };
        let time_index = IndexFile {
            path: file.time_index(dir),
            len: times.len() as u64,
        };
        write_index(disk, &offset_index.path, &offsets)?;
        write_index(disk, &time_index.path, &times)?;
        {
            let mut state = segment.state.write().expect("segment lock");
            state.index = index;
            state.size_bytes = end_position;
        }
        let last_frame = segment.last_frame_before(end_position)?;
        let writer = SegmentWriter {
            base_offset: base,
            disk: disk.clone(),
            log: path,
            offset_index,
            time_index,
            position: end_position,
            last_frame,
        };
        Ok((segment, writer))
    }

    /// Appends one encoded frame and updates the segment's index. Not durable until
    /// [`SegmentWriter::sync`].
    pub fn append(&mut self, segment: &Segment, frame: &EncodedFrame) -> Result<(), StorageError> {
        let mut at = self.position;
        for part in frame.parts() {
            self.disk.write_at(&self.log, part, at)?;
            at += part.len() as u64;
        }
        let header = &frame.header;
        let relative = (header.base_offset.0 - self.base_offset.0) as u32;
        let (offset_entry, time_entry) = {
            let mut state = segment.state.write().expect("segment lock");
            let entries = state.index.on_frame(
                relative,
                self.position as u32,
                header.length,
                header.max_timestamp_ms,
                INDEX_INTERVAL_BYTES,
            );
            state.size_bytes = at;
            entries
        };
        self.last_frame = Some(OffsetEntry {
            relative_offset: relative,
            position: self.position as u32,
        });
        self.position = at;
        if let Some(entry) = offset_entry {
            let mut bytes = Vec::with_capacity(index::OFFSET_ENTRY_LEN);
            entry.encode(&mut bytes);
            self.offset_index.append(&self.disk, &bytes)?;
        }
        if let Some(entry) = time_entry {
            let mut bytes = Vec::with_capacity(index::TIME_ENTRY_LEN);
            entry.encode(&mut bytes);
            self.time_index.append(&self.disk, &bytes)?;
        }
        Ok(())
    }

    /// Makes the appended frames durable.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.disk.sync(&self.log)
    }

    /// Seals the segment: final time entry, and the frames and both indexes made durable.
    pub fn seal(mut self, segment: &Segment) -> Result<(), StorageError> {
        if let Some(last) = self.last_frame {
            let entry = segment
                .state
                .write()
                .expect("segment lock")
                .index
                .seal_entry(last);
            if let Some(entry) = entry {
                let mut bytes = vec![];
                entry.encode(&mut bytes);
                self.time_index.append(&self.disk, &bytes)?;
            }
        }
        for path in [&self.log, &self.offset_index.path, &self.time_index.path] {
            self.disk.sync(path)?;
        }
        Ok(())
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.retired.load(Ordering::Acquire)
            && let Err(e) = self.file.delete(&self.disk, &self.dir)
        {
            // Start-up finishes the deletion: the partition no longer lists the segment.
            tracing::warn!(segment = %self.path.display(), error = %e, "could not delete a retired segment");
        }
    }
}

/// A segment compaction writes: frames appended to files in a scratch directory, moved into
/// the partition's directory, durably, by [`CompactedWriter::finish`]. Until then nothing a
/// reader or start-up looks at has changed.
#[derive(Debug)]
pub struct CompactedWriter {
    file: SegmentFile,
    dir: PathBuf,
    /// Where its files are written, without their extension.
    scratch: PathBuf,
    disk: Disk,
    index: SegmentIndex,
    position: u64,
    /// The offset after the last frame written: where the next one starts.
    end: Offset,
    last_frame: Option<OffsetEntry>,
}

impl CompactedWriter {
    /// Starts the segment `file` of the partition directory `dir` (a generation past every
    /// segment it replaces), written at `scratch` (a path without extension, in a directory
    /// of the same file system) until it is finished.
    pub fn create(
        disk: &Disk,
        dir: &Path,
        scratch: PathBuf,
        file: SegmentFile,
    ) -> Result<CompactedWriter, StorageError> {
        let writer = CompactedWriter {
            file,
            dir: dir.to_path_buf(),
            scratch,
            disk: disk.clone(),
            index: SegmentIndex::new(),
            position: 0,
            end: file.base,
            last_frame: None,
        };
        disk.create(&writer.scratch("log"))?;
        Ok(writer)
    }

    fn scratch(&self, extension: &str) -> PathBuf {
        self.scratch.with_extension(extension)
    }

    /// The offset the next frame must start at.
    pub fn end(&self) -> Offset {
        self.end
    }

    pub fn append(&mut self, frame: &EncodedFrame) -> Result<(), StorageError> {
        let header = &frame.header;
        assert_eq!(
            header.base_offset, self.end,
            "frames of a segment are contiguous"
        );
        let path = self.scratch("log");
        let mut at = self.position;
        for part in frame.parts() {
            self.disk.write_at(&path, part, at)?;
            at += part.len() as u64;
        }
        let relative = (header.base_offset.0 - self.file.base.0) as u32;
        self.index.on_frame(
            relative,
            self.position as u32,
            header.length,
            header.max_timestamp_ms,
            INDEX_INTERVAL_BYTES,
        );
        self.last_frame = Some(OffsetEntry {
            relative_offset: relative,
            position: self.position as u32,
        });
        self.position = at;
        self.end = header.end_offset();
        Ok(())
    }

    /// Makes the segment durable and moves it into the partition's directory: start-up takes
    /// it for the segments it replaces once its log is there (its indexes follow it; without
    /// them they are rebuilt). Returns it, sealed.
    pub fn finish(mut self) -> Result<Segment, StorageError> {
        if let Some(last) = self.last_frame {
            self.index.seal_entry(last);
        }
        self.disk.sync(&self.scratch("log"))?;
        let indexes = [
            (
                "index",
                self.file.offset_index(&self.dir),
                self.index.encode_offsets(),
            ),
            (
                "timeindex",
                self.file.time_index(&self.dir),
                self.index.encode_times(),
            ),
        ];
        for (extension, _, bytes) in &indexes {
            self.disk.write_file(&self.scratch(extension), &[bytes])?;
        }
        self.disk
            .rename(&self.scratch("log"), &self.file.log(&self.dir))?;
        self.disk.sync_dir(&self.dir)?;
        for (extension, path, _) in &indexes {
            self.disk.rename(&self.scratch(extension), path)?;
        }
        self.disk.sync_dir(&self.dir)?;
        let segment = Segment::unindexed(&self.disk, &self.dir, self.file, self.position);
        segment.state.write().expect("segment lock").index = std::mem::take(&mut self.index);
        Ok(segment)
    }

    /// Deletes what was written (a compaction that failed or was overtaken).
    pub fn abandon(self) {
        for extension in ["log", "index", "timeindex"] {
            let path = self.scratch(extension);
            if let Err(e) = self.disk.remove(&path) {
                tracing::warn!(file = %path.display(), error = %e, "could not delete an unfinished compacted segment");
            }
        }
    }
}
