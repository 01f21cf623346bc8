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
use std::sync::RwLock;

use arrow::array::RecordBatch;
use arrow::buffer::{Buffer, MutableBuffer};
use arrow::datatypes::SchemaRef;

use super::StorageError;
use super::disk::Disk;
use super::frame::{self, EncodedFrame, FRAME_HEADER_LEN, FrameError, FrameHeader, Layout};
use super::index::{self, OffsetEntry, SegmentIndex, TimeEntry};
use super::types::Offset;

/// Unwanted bytes between two wanted sections of a frame that are read rather than skipped
/// with a read of its own: copying 16 KiB costs about what another read does.
const READ_GAP_MAX: usize = 16 * 1024;

pub fn log_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.log", base.0))
}

fn offset_index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.index", base.0))
}

fn time_index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.timeindex", base.0))
}

/// Base offsets of the segments in a partition directory, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<Offset>, StorageError> {
    let mut bases = vec![];
    for entry in fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log")
            && let Ok(base) = stem.parse::<u64>()
        {
            bases.push(Offset(base));
        }
    }
    bases.sort();
    Ok(bases)
}

/// Removes a segment's files. Missing files are fine: deletion may be resumed after a crash.
pub fn delete_segment_files(disk: &Disk, dir: &Path, base: Offset) -> Result<(), StorageError> {
    for path in [
        log_path(dir, base),
        offset_index_path(dir, base),
        time_index_path(dir, base),
    ] {
        disk.remove(&path)?;
    }
    Ok(())
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
    pub path: PathBuf,
    disk: Disk,
    pub state: RwLock<SegmentState>,
}

impl Segment {
    /// A segment of `size_bytes` with an empty index (to be loaded or rebuilt).
    fn unindexed(disk: &Disk, path: PathBuf, base: Offset, size_bytes: u64) -> Segment {
        Segment {
            base_offset: base,
            path,
            disk: disk.clone(),
            state: RwLock::new(SegmentState {
                index: SegmentIndex::new(),
                size_bytes,
            }),
        }
    }

    pub fn size_bytes(&self) -> u64 {
        self.state.read().expect("segment lock").size_bytes
    }

    /// Reads the frame header at `position`. `Ok(None)` at the end of the file.
    pub fn header_at(&self, position: u64) -> Result<Option<FrameHeader>, StorageError> {
        let buf = self
            .disk
            .read_buffer(&self.path, FRAME_HEADER_LEN, position)
            .map_err(|e| StorageError::io(&self.path, e))?;
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
        let buf = self
            .disk
            .read_buffer(&self.path, len, position)
            .map_err(|e| StorageError::io(&self.path, e))?;
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
    /// selects (all without one). Of a frame of the current format only the header, the
    /// column directory and the selected columns' sections are read and verified; neighbouring
    /// sections are read together.
    pub fn batch_at(
        &self,
        position: u64,
        header: &FrameHeader,
        schema: &SchemaRef,
        projection: Option<&[usize]>,
    ) -> Result<RecordBatch, StorageError> {
        let corrupt = |e: FrameError| StorageError::corruption(&self.path, position, e);
        let partial = match (header.layout, projection) {
            (Layout::Sections { columns }, Some(projection)) => {
                (projection.len() < columns as usize).then_some(projection)
            }
            _ => None,
        };
        let Some(projection) = partial else {
            let bytes = self.frame_at(position, header)?;
            return frame::decode_batch(&bytes, header, schema, projection).map_err(corrupt);
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
        if wanted.last().is_some_and(|&c| c >= sections.len()) {
            return Err(StorageError::InvalidBatch(format!(
                "columns {projection:?} asked of a frame of {}",
                sections.len()
            )));
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
        frame::decode_columns(header, &sections, schema, Some(projection), |c, _| {
            read[c].clone().expect("every projected section is read")
        })
        .map_err(corrupt)
    }

    /// `len` bytes at `position`; fewer (the file ends early) is a damaged frame.
    fn read_exact(&self, position: u64, len: usize) -> Result<MutableBuffer, StorageError> {
        let buf = self
            .disk
            .read_buffer(&self.path, len, position)
            .map_err(|e| StorageError::io(&self.path, e))?;
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
    pub fn open_sealed(disk: &Disk, dir: &Path, base: Offset) -> Result<Segment, StorageError> {
        let path = log_path(dir, base);
        let size_bytes = disk.len(&path)?;
        let offsets = fs::read(offset_index_path(dir, base))
            .ok()
            .and_then(|b| index::decode_offset_index(&b));
        let times = fs::read(time_index_path(dir, base))
            .ok()
            .and_then(|b| index::decode_time_index(&b));
        let plausible = |o: &Vec<OffsetEntry>, t: &Vec<TimeEntry>| {
            !o.is_empty()
                && o[0].position == 0
                && o.last().is_some_and(|e| (e.position as u64) < size_bytes)
                && t.last().is_none_or(|e| (e.position as u64) < size_bytes)
        };
        let segment = Segment::unindexed(disk, path, base, size_bytes);
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
                disk.write_file(&offset_index_path(dir, base), &[&index.encode_offsets()])?;
                disk.write_file(&time_index_path(dir, base), &[&index.encode_times()])?;
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
        let offsets = fs::read(offset_index_path(dir, self.base_offset))
            .ok()
            .and_then(|b| index::decode_offset_index(&b))
            .unwrap_or_default();
        let times = fs::read(time_index_path(dir, self.base_offset))
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

    /// Where the intact frames of the segment at `base` end (the offset after the last
    /// one), changing nothing, scanning from the frame at or before `from` (records known
    /// intact up to there): what a crash of the machine left of unflushed frames.
    pub fn intact_end(
        disk: &Disk,
        dir: &Path,
        base: Offset,
        from: Offset,
    ) -> Result<Offset, StorageError> {
        let path = log_path(dir, base);
        let segment = Segment::unindexed(disk, path.clone(), base, disk.len(&path)?);
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
        let path = log_path(dir, base);
        // Leftovers of an uncommitted roll are emptied: the segment starts empty.
        let offset_index = offset_index_path(dir, base);
        let time_index = time_index_path(dir, base);
        for p in [&path, &offset_index, &time_index] {
            disk.create(p)?;
        }
        disk.sync_dir(dir)?;
        let segment = Segment::unindexed(disk, path.clone(), base, 0);
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
        let path = log_path(dir, base);
        let size = disk.len(&path)?;
        let segment = Segment::unindexed(disk, path.clone(), base, size);
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
            path: offset_index_path(dir, base),
            len: offsets.len() as u64,
        };
        let time_index = IndexFile {
            path: time_index_path(dir, base),
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
