//! Batch frames: the unit of the log on disk.
//!
//! A frame holds one Arrow record batch behind a fixed header. Each column is its own Arrow
//! IPC record-batch message (flatbuffer metadata followed by the body buffers, each buffer
//! optionally lz4- or zstd-compressed by Arrow IPC itself), in a *section* with its own
//! checksum, so a scan that needs two columns of ten reads and verifies those two sections
//! and nothing else:
//!
//! ```text
//! offset size field
//!      0    4 magic            b"RNLF"
//!      4    4 length           whole frame in bytes, header and padding included (multiple of 8)
//!      8    4 crc32            IEEE CRC32 (crc32fast) of bytes [12, 56 + 16 × columns):
//!                              the rest of the header and the column directory
//!     12    1 format version   FRAME_VERSION
//!     13    3 reserved         zero
//!     16    8 base offset      offset of the first record
//!     24    4 record count     > 0
//!     28    4 schema version   which of the topic's schemas decodes the columns
//!     32    8 min timestamp    ms since the epoch, over the frame's records
//!     40    8 max timestamp    ms since the epoch
//!     48    4 column count     > 0
//!     52    4 reserved         zero
//!     56    … column directory, 16 bytes per column, in schema order:
//!                0 4 position of the column's section in the frame
//!                4 4 section length (multiple of 8)
//!                8 4 metadata length (IPC flatbuffer, padded to 8)
//!               12 4 crc32 of the section
//!      …    the sections, in column order, back to back to the end of the frame
//! ```
//! All integers are little-endian. Sections start 8-byte aligned so bodies decode in place.
//!
//! A frame of a compacted segment keeps the offsets of its records, since compaction removed
//! some of the records between them: its format version is [`FRAME_VERSION_SPARSE`], bytes
//! 52..56 hold its *span* (how many offsets it covers from its base offset, more than its
//! record count), and after the column sections comes one more, listed last in the
//! directory: the records' offsets as `UInt32` deltas from the base offset, ascending. Every
//! other field means what it does in a frame of the current format.
//!
//! Frames of format version 1, written before columns had sections, are still read: there
//! one IPC message holds every column, the crc32 covers bytes [12, length), and bytes 48..52
//! hold the message's metadata length, the message following the header. Such a frame can
//! only be verified, and so read, whole.
//!
//! This module is pure: bytes in, bytes out. It never touches files. Every malformed input is
//! an error, never a panic: the recovery code relies on that to tell a torn tail from data.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, RecordBatch, RecordBatchOptions, TimestampMillisecondArray, UInt32Array,
};
use arrow::buffer::Buffer;
use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use arrow::ipc::reader::read_record_batch;
use arrow::ipc::writer::{
    DictionaryTracker, EncodedData, IpcDataGenerator, IpcWriteContext, IpcWriteOptions,
};
use arrow::ipc::{CompressionType, root_as_message};

use super::types::{Compression, Offset};

pub const FRAME_MAGIC: [u8; 4] = *b"RNLF";
/// The format version frames are written in.
pub const FRAME_VERSION: u8 = 2;
/// The format version of frames written before columns had sections: read, not written.
pub const FRAME_VERSION_WHOLE: u8 = 1;
/// The format version of a compacted frame, whose records do not fill its span of offsets.
pub const FRAME_VERSION_SPARSE: u8 = 3;
pub const FRAME_HEADER_LEN: usize = 56;
/// Bytes of one column's entry in the directory.
pub const SECTION_ENTRY_LEN: usize = 16;
/// No frame is ever larger than this; a header claiming more is corrupt, not a frame.
pub const FRAME_LEN_MAX: u32 = 512 * 1024 * 1024;

/// What follows a frame's fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The current format: a column directory, then a section per column (and in a sparse
    /// frame, one of the records' offsets after them).
    Sections { columns: u32 },
    /// Format version 1: one IPC message of every column, its flatbuffer metadata
    /// (`metadata_len` bytes, padded to 8) first.
    Whole { metadata_len: u32 },
}

/// The decoded fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub length: u32,
    pub crc32: u32,
    pub base_offset: Offset,
    /// Records the frame holds.
    pub record_count: u32,
    /// Offsets the frame covers from its base offset: its record count, or more in a frame
    /// of a compacted segment, whose records keep their offsets.
    pub span: u32,
    pub schema_version: u32,
    pub min_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub layout: Layout,
}

impl FrameHeader {
    /// The offset after this frame's last record.
    pub fn end_offset(&self) -> Offset {
        self.base_offset.plus(self.span as u64)
    }

    /// Whether some offsets of its span have no record (it holds the records' offsets).
    pub fn is_sparse(&self) -> bool {
        self.span != self.record_count
    }

    /// Sections in the column directory: one per column, and the offsets' in a sparse frame.
    fn sections(&self) -> usize {
        match self.layout {
            Layout::Sections { columns } => columns as usize + self.is_sparse() as usize,
            Layout::Whole { .. } => 0,
        }
    }

    /// The bytes at the frame's start a reader verifies before reading any column: the header
    /// and the column directory; a frame of format version 1, all of it.
    pub fn head_len(&self) -> usize {
        match self.layout {
            Layout::Sections { .. } => FRAME_HEADER_LEN + SECTION_ENTRY_LEN * self.sections(),
            Layout::Whole { .. } => self.length as usize,
        }
    }
}

/// One column's section of a frame, as the directory describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    /// Where it starts, from the start of the frame.
    pub position: u32,
    pub length: u32,
    /// Bytes of IPC flatbuffer metadata at its start; the body follows.
    pub metadata_len: u32,
    pub crc32: u32,
}

impl Section {
    /// Its bytes within the frame.
    pub fn range(&self) -> Range<usize> {
        self.position as usize..(self.position + self.length) as usize
    }
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 4]),
    #[error("bad length {0}")]
    BadLength(u32),
    #[error("unsupported frame format version {0}")]
    BadVersion(u8),
    #[error("checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    BadChecksum { stored: u32, computed: u32 },
    #[error("bad header: {0}")]
    BadHeader(&'static str),
    #[error("undecodable Arrow IPC payload: {0}")]
    BadPayload(String),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn truncated(needed: usize, bytes: &[u8]) -> Result<(), FrameError> {
    if bytes.len() < needed {
        return Err(FrameError::Truncated {
            needed,
            available: bytes.len(),
        });
    }
    Ok(())
}

fn checksum(stored: u32, bytes: &[u8]) -> Result<(), FrameError> {
    let computed = crc32fast::hash(bytes);
    if computed != stored {
        return Err(FrameError::BadChecksum { stored, computed });
    }
    Ok(())
}

/// Parses and sanity-checks the fixed header, without the checksum (which needs the
/// directory). Used to walk a segment reading only headers.
pub fn decode_header(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
    truncated(FRAME_HEADER_LEN, bytes)?;
    let magic: [u8; 4] = bytes[0..4].try_into().expect("4 bytes");
    if magic != FRAME_MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let length = u32_at(bytes, 4);
    if (length as usize) < FRAME_HEADER_LEN || length > FRAME_LEN_MAX || !length.is_multiple_of(8) {
        return Err(FrameError::BadLength(length));
    }
    let after_header = length as usize - FRAME_HEADER_LEN;
    let record_count = u32_at(bytes, 24);
    let mut span = record_count;
    let layout = match bytes[12] {
        version @ (FRAME_VERSION | FRAME_VERSION_SPARSE) => {
            let columns = u32_at(bytes, 48);
            let sparse = version == FRAME_VERSION_SPARSE;
            if sparse {
                span = u32_at(bytes, 52);
                if span <= record_count {
                    return Err(FrameError::BadHeader(
                        "a sparse frame's span is not past its records",
                    ));
                }
            }
            let sections = columns as usize + sparse as usize;
            if columns == 0 || SECTION_ENTRY_LEN * sections > after_header {
                return Err(FrameError::BadHeader("column count out of range"));
            }
            Layout::Sections { columns }
        }
        FRAME_VERSION_WHOLE => {
            let metadata_len = u32_at(bytes, 48);
            if metadata_len as usize > after_header || !metadata_len.is_multiple_of(8) {
                return Err(FrameError::BadHeader("metadata length out of range"));
            }
            Layout::Whole { metadata_len }
        }
        version => return Err(FrameError::BadVersion(version)),
    };
    let header = FrameHeader {
        length,
        crc32: u32_at(bytes, 8),
        base_offset: Offset(u64_at(bytes, 16)),
        record_count,
        span,
        schema_version: u32_at(bytes, 28),
        min_timestamp_ms: i64_at(bytes, 32),
        max_timestamp_ms: i64_at(bytes, 40),
        layout,
    };
    if header.record_count == 0 {
        return Err(FrameError::BadHeader("record count is zero"));
    }
    if header.min_timestamp_ms > header.max_timestamp_ms {
        return Err(FrameError::BadHeader("min timestamp after max timestamp"));
    }
    Ok(header)
}

/// Verifies the head of a frame of the current format (`head`: at least
/// [`FrameHeader::head_len`] bytes from its start) and returns its column directory.
/// In a sparse frame the offsets' section comes last, after the columns'.
pub fn decode_directory(head: &[u8], header: &FrameHeader) -> Result<Vec<Section>, FrameError> {
    let Layout::Sections { .. } = header.layout else {
        return Err(FrameError::BadHeader(
            "a frame of format version 1 has no column directory",
        ));
    };
    let head_len = header.head_len();
    truncated(head_len, head)?;
    checksum(header.crc32, &head[12..head_len])?;
    let mut end = head_len;
    (0..header.sections())
        .map(|c| {
            let at = FRAME_HEADER_LEN + c * SECTION_ENTRY_LEN;
            let section = Section {
                position: u32_at(head, at),
                length: u32_at(head, at + 4),
                metadata_len: u32_at(head, at + 8),
                crc32: u32_at(head, at + 12),
            };
            let fits = section.position as usize == end
                && section.length.is_multiple_of(8)
                && section.metadata_len.is_multiple_of(8)
                && section.metadata_len <= section.length
                && end + section.length as usize <= header.length as usize;
            if !fits {
                return Err(FrameError::BadHeader("column directory out of range"));
            }
            end += section.length as usize;
            Ok(section)
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|sections| match end == header.length as usize {
            true => Ok(sections),
            false => Err(FrameError::BadHeader(
                "the column sections do not end where the frame does",
            )),
        })
}

/// Verifies one section's bytes (`bytes`: exactly its bytes) against its checksum.
pub fn verify_section(bytes: &[u8], section: &Section) -> Result<(), FrameError> {
    truncated(section.length as usize, bytes)?;
    checksum(section.crc32, &bytes[..section.length as usize])
}

/// Parses a whole frame and verifies every checksum in it.
pub fn decode_frame(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
    let header = decode_header(bytes)?;
    let length = header.length as usize;
    truncated(length, bytes)?;
    match header.layout {
        Layout::Whole { .. } => checksum(header.crc32, &bytes[12..length])?,
        Layout::Sections { .. } => {
            for section in decode_directory(bytes, &header)? {
                verify_section(&bytes[section.range()], &section)?;
            }
        }
    }
    Ok(header)
}

/// A frame ready to write, in pieces: the header with the column directory, then per
/// column its IPC metadata, its body exactly as the IPC encoder produced it (so it is not
/// copied once more) and zero padding.
pub struct EncodedFrame {
    pub header: FrameHeader,
    head: Vec<u8>,
    sections: Vec<EncodedSection>,
}

struct EncodedSection {
    metadata: Vec<u8>,
    body: Vec<u8>,
    padding: usize,
}

const ZEROS: [u8; 8] = [0; 8];

impl EncodedFrame {
    pub fn len(&self) -> usize {
        self.header.length as usize
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The frame's bytes, in order, in pieces none of which is empty.
    pub fn parts(&self) -> impl Iterator<Item = &[u8]> {
        let sections = self.sections.iter().flat_map(|s| {
            [
                s.metadata.as_slice(),
                s.body.as_slice(),
                &ZEROS[..s.padding],
            ]
        });
        std::iter::once(self.head.as_slice())
            .chain(sections)
            .filter(|part| !part.is_empty())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.parts().collect::<Vec<_>>().concat()
    }
}

/// Encodes one record batch as a frame. `timestamps` is the batch's record timestamp
/// column, used for the header's min/max.
pub fn encode_frame(
    batch: &RecordBatch,
    timestamps: &TimestampMillisecondArray,
    base_offset: Offset,
    schema_version: u32,
    compression: Compression,
) -> Result<EncodedFrame, FrameError> {
    encode(
        batch,
        timestamps,
        base_offset,
        None,
        schema_version,
        compression,
    )
}

/// Encodes the records a compaction kept of `span` offsets from `base_offset` as a frame:
/// record `i` is at `base_offset + deltas[i]` (ascending, below `span`). Records that still
/// fill the span make an ordinary frame.
pub fn encode_sparse_frame(
    batch: &RecordBatch,
    timestamps: &TimestampMillisecondArray,
    base_offset: Offset,
    deltas: &[u32],
    span: u32,
    schema_version: u32,
    compression: Compression,
) -> Result<EncodedFrame, FrameError> {
    check_offsets(deltas, span)?;
    if deltas.len() != batch.num_rows() {
        return Err(FrameError::BadPayload(format!(
            "{} offsets for {} records",
            deltas.len(),
            batch.num_rows()
        )));
    }
    let offsets = (deltas.len() < span as usize).then_some((deltas, span));
    encode(
        batch,
        timestamps,
        base_offset,
        offsets,
        schema_version,
        compression,
    )
}

/// Checks a sparse frame's record offsets: ascending, within its span.
fn check_offsets(deltas: &[u32], span: u32) -> Result<(), FrameError> {
    let ascending = deltas.windows(2).all(|w| w[0] < w[1]);
    if !ascending || deltas.last().is_some_and(|&d| d >= span) {
        return Err(FrameError::BadPayload(
            "record offsets are not ascending within the frame's span".into(),
        ));
    }
    Ok(())
}

/// The field of a sparse frame's offsets section.
fn offsets_field() -> FieldRef {
    Arc::new(arrow::datatypes::Field::new(
        "offset_delta",
        arrow::datatypes::DataType::UInt32,
        false,
    ))
}

fn encode(
    batch: &RecordBatch,
    timestamps: &TimestampMillisecondArray,
    base_offset: Offset,
    offsets: Option<(&[u32], u32)>,
    schema_version: u32,
    compression: Compression,
) -> Result<EncodedFrame, FrameError> {
    assert!(batch.num_rows() > 0, "a frame holds at least one record");
    assert_eq!(timestamps.len(), batch.num_rows());
    if batch.num_columns() == 0 {
        return Err(FrameError::BadPayload(
            "a frame holds at least one column".into(),
        ));
    }
    let options = ipc_write_options(compression)?;
    let deltas: Option<ArrayRef> =
        offsets.map(|(deltas, _)| Arc::new(UInt32Array::from(deltas.to_vec())) as ArrayRef);
    let offsets_field = offsets_field();
    let mut columns: Vec<(&FieldRef, &ArrayRef)> = batch
        .schema_ref()
        .fields()
        .iter()
        .zip(batch.columns())
        .collect();
    columns.extend(deltas.as_ref().map(|d| (&offsets_field, d)));
    let head_len = FRAME_HEADER_LEN + SECTION_ENTRY_LEN * columns.len();
    let mut head = Vec::with_capacity(head_len);
    head.resize(FRAME_HEADER_LEN, 0);
    let mut sections = Vec::with_capacity(columns.len());
    let mut position = head_len;
    for (field, column) in columns {
        let encoded = encode_column(field, column, &options)?;
        let metadata_len = encoded.ipc_message.len().next_multiple_of(8);
        let mut metadata = encoded.ipc_message;
        metadata.resize(metadata_len, 0);
        let unpadded = metadata_len + encoded.arrow_data.len();
        let section = EncodedSection {
            metadata,
            body: encoded.arrow_data,
            padding: unpadded.next_multiple_of(8) - unpadded,
        };
        let length = unpadded + section.padding;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&section.metadata);
        crc.update(&section.body);
        crc.update(&ZEROS[..section.padding]);
        if position + length > FRAME_LEN_MAX as usize {
            return Err(FrameError::BadLength((position + length) as u32));
        }
        for field in [position, length, metadata_len] {
            head.extend_from_slice(&(field as u32).to_le_bytes());
        }
        head.extend_from_slice(&crc.finalize().to_le_bytes());
        sections.push(section);
        position += length;
    }
    let record_count = batch.num_rows() as u32;
    let span = offsets.map_or(record_count, |(_, span)| span);
    let mut header = FrameHeader {
        length: position as u32,
        crc32: 0,
        base_offset,
        record_count,
        span,
        schema_version,
        min_timestamp_ms: arrow::compute::min(timestamps).unwrap_or(0),
        max_timestamp_ms: arrow::compute::max(timestamps).unwrap_or(0),
        layout: Layout::Sections {
            columns: batch.num_columns() as u32,
        },
    };
    let mut fixed = Vec::with_capacity(FRAME_HEADER_LEN);
    fixed.extend_from_slice(&FRAME_MAGIC);
    fixed.extend_from_slice(&header.length.to_le_bytes());
    fixed.extend_from_slice(&[0; 4]); // crc32, filled in below
    fixed.push(match offsets {
        Some(_) => FRAME_VERSION_SPARSE,
        None => FRAME_VERSION,
    });
    fixed.extend_from_slice(&[0; 3]);
    fixed.extend_from_slice(&base_offset.0.to_le_bytes());
    fixed.extend_from_slice(&header.record_count.to_le_bytes());
    fixed.extend_from_slice(&schema_version.to_le_bytes());
    fixed.extend_from_slice(&header.min_timestamp_ms.to_le_bytes());
    fixed.extend_from_slice(&header.max_timestamp_ms.to_le_bytes());
    fixed.extend_from_slice(&(batch.num_columns() as u32).to_le_bytes());
    // The span of a sparse frame; zero in others.
    fixed.extend_from_slice(&(if offsets.is_some() { span } else { 0 }).to_le_bytes());
    debug_assert_eq!(fixed.len(), FRAME_HEADER_LEN);
    head[..FRAME_HEADER_LEN].copy_from_slice(&fixed);
    header.crc32 = crc32fast::hash(&head[12..]);
    head[8..12].copy_from_slice(&header.crc32.to_le_bytes());
    Ok(EncodedFrame {
        header,
        head,
        sections,
    })
}

/// One column as an IPC record-batch message of its own.
fn encode_column(
    field: &FieldRef,
    column: &ArrayRef,
    options: &IpcWriteOptions,
) -> Result<EncodedData, FrameError> {
    let bad = |e: arrow::error::ArrowError| FrameError::BadPayload(e.to_string());
    let one = RecordBatch::try_new_with_options(
        Arc::new(Schema::new(vec![field.clone()])),
        vec![column.clone()],
        &RecordBatchOptions::new().with_row_count(Some(column.len())),
    )
    .map_err(bad)?;
    let (dictionaries, encoded) = IpcDataGenerator::default()
        .encode(
            &one,
            &mut DictionaryTracker::new(false),
            options,
            &mut IpcWriteContext::default(),
        )
        .map_err(bad)?;
    if !dictionaries.is_empty() {
        return Err(FrameError::BadPayload(
            "dictionary-encoded columns are not stored in the log".into(),
        ));
    }
    Ok(encoded)
}

fn ipc_write_options(compression: Compression) -> Result<IpcWriteOptions, FrameError> {
    let codec = match compression {
        Compression::None => None,
        Compression::Lz4 => Some(CompressionType::LZ4_FRAME),
        Compression::Zstd => Some(CompressionType::ZSTD),
    };
    IpcWriteOptions::default()
        .try_with_compression(codec)
        .map_err(|e| FrameError::BadPayload(e.to_string()))
}

/// Decodes the record batch of a verified frame held whole in `frame` (starting at its
/// header). `projection` selects columns of `schema` by index; unselected columns are
/// neither decompressed nor copied.
pub fn decode_batch(
    frame: &Buffer,
    header: &FrameHeader,
    schema: &SchemaRef,
    projection: Option<&[usize]>,
) -> Result<RecordBatch, FrameError> {
    match header.layout {
        Layout::Sections { columns } => {
            let sections = decode_directory(frame.as_slice(), header)?;
            let sections = &sections[..columns as usize];
            decode_columns(header, sections, schema, projection, |_, section| {
                frame.slice_with_length(section.position as usize, section.length as usize)
            })
        }
        Layout::Whole { metadata_len } => {
            decode_whole(frame, header, metadata_len, schema, projection)
        }
    }
}

/// The offsets of a verified sparse frame's records held whole in `frame`, as deltas from
/// its base offset; `None` for a frame whose records fill its span.
pub fn decode_frame_offsets(
    frame: &Buffer,
    header: &FrameHeader,
) -> Result<Option<Vec<u32>>, FrameError> {
    if !header.is_sparse() {
        return Ok(None);
    }
    let sections = decode_directory(frame.as_slice(), header)?;
    let section = sections
        .last()
        .expect("a sparse frame has its offsets' section");
    let bytes = frame.slice_with_length(section.position as usize, section.length as usize);
    decode_offsets(&bytes, section, header).map(Some)
}

/// A sparse frame's record offsets, as deltas from its base offset, from the bytes of its
/// verified offsets section.
pub fn decode_offsets(
    bytes: &Buffer,
    section: &Section,
    header: &FrameHeader,
) -> Result<Vec<u32>, FrameError> {
    let column = decode_column(bytes, section, &offsets_field(), header.record_count)?;
    let deltas = column
        .as_any()
        .downcast_ref::<UInt32Array>()
        .ok_or_else(|| FrameError::BadPayload("the offsets are not UInt32".into()))?;
    if deltas.null_count() > 0 {
        return Err(FrameError::BadPayload("a record offset is null".into()));
    }
    let deltas = deltas.values().to_vec();
    check_offsets(&deltas, header.span)?;
    Ok(deltas)
}

/// The batch of the columns `projection` selects (every column without one) of a frame of
/// the current format, each decoded from its verified section as `section` hands it out.
pub fn decode_columns(
    header: &FrameHeader,
    sections: &[Section],
    schema: &SchemaRef,
    projection: Option<&[usize]>,
    mut section: impl FnMut(usize, &Section) -> Buffer,
) -> Result<RecordBatch, FrameError> {
    if sections.len() != schema.fields().len() {
        return Err(FrameError::BadPayload(format!(
            "the frame has {} columns, its schema {}",
            sections.len(),
            schema.fields().len()
        )));
    }
    let all: Vec<usize>;
    let (projection, schema) = match projection {
        Some(projection) => (
            projection,
            Arc::new(
                schema
                    .project(projection)
                    .map_err(|e| FrameError::BadPayload(e.to_string()))?,
            ),
        ),
        None => {
            all = (0..sections.len()).collect();
            (all.as_slice(), schema.clone())
        }
    };
    let columns = projection
        .iter()
        .zip(schema.fields())
        .map(|(&c, field)| {
            decode_column(
                &section(c, &sections[c]),
                &sections[c],
                field,
                header.record_count,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new_with_options(
        schema,
        columns,
        &RecordBatchOptions::new().with_row_count(Some(header.record_count as usize)),
    )
    .map_err(|e| FrameError::BadPayload(e.to_string()))
}

/// One column from its section's bytes.
fn decode_column(
    bytes: &Buffer,
    section: &Section,
    field: &FieldRef,
    rows: u32,
) -> Result<ArrayRef, FrameError> {
    let metadata_len = section.metadata_len as usize;
    let message = root_as_message(&bytes.as_slice()[..metadata_len])
        .map_err(|e| FrameError::BadPayload(e.to_string()))?;
    let ipc_batch = message
        .header_as_record_batch()
        .ok_or_else(|| FrameError::BadPayload("message is not a record batch".into()))?;
    if ipc_batch.length() != rows as i64 {
        return Err(FrameError::BadPayload(format!(
            "column {} has {} rows, the header says {rows}",
            field.name(),
            ipc_batch.length(),
        )));
    }
    let body = bytes.slice_with_length(metadata_len, section.length as usize - metadata_len);
    let batch = read_record_batch(
        &body,
        ipc_batch,
        Arc::new(Schema::new(vec![field.clone()])),
        &HashMap::new(),
        None,
        &message.version(),
    )
    .map_err(|e| FrameError::BadPayload(e.to_string()))?;
    Ok(batch.column(0).clone())
}

/// The batch of a frame of format version 1.
fn decode_whole(
    frame: &Buffer,
    header: &FrameHeader,
    metadata_len: u32,
    schema: &SchemaRef,
    projection: Option<&[usize]>,
) -> Result<RecordBatch, FrameError> {
    let metadata_end = FRAME_HEADER_LEN + metadata_len as usize;
    let message = root_as_message(&frame.as_slice()[FRAME_HEADER_LEN..metadata_end])
        .map_err(|e| FrameError::BadPayload(e.to_string()))?;
    let ipc_batch = message
        .header_as_record_batch()
        .ok_or_else(|| FrameError::BadPayload("message is not a record batch".into()))?;
    if ipc_batch.length() != header.record_count as i64 {
        return Err(FrameError::BadPayload(format!(
            "record batch has {} rows, header says {}",
            ipc_batch.length(),
            header.record_count
        )));
    }
    let body = frame.slice_with_length(metadata_end, header.length as usize - metadata_end);
    let dictionaries: HashMap<i64, Arc<dyn Array>> = HashMap::new();
    read_record_batch(
        &body,
        ipc_batch,
        schema.clone(),
        &dictionaries,
        projection,
        &message.version(),
    )
    .map_err(|e| FrameError::BadPayload(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, TimeUnit};

    fn sample(rows: usize) -> (SchemaRef, RecordBatch) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("url", DataType::Utf8, true),
            Field::new(
                "_timestamp",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
        ]));
        let ids = Int64Array::from_iter_values(0..rows as i64);
        let urls = StringArray::from_iter((0..rows).map(|i| {
            if i % 7 == 0 {
                None
            } else {
                Some(format!("/page/{}", i % 13))
            }
        }));
        let ts = TimestampMillisecondArray::from_iter_values((0..rows as i64).map(|i| 1_000 + i));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(ids), Arc::new(urls), Arc::new(ts)],
        )
        .unwrap();
        (schema, batch)
    }

    fn timestamps(batch: &RecordBatch) -> &TimestampMillisecondArray {
        batch
            .column(2)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap()
    }

    fn encode(batch: &RecordBatch, compression: Compression) -> Vec<u8> {
        encode_frame(batch, timestamps(batch), Offset(42), 3, compression)
            .unwrap()
            .to_bytes()
    }

    /// A frame as format version 1 wrote it: one IPC message of every column.
    fn encode_whole(batch: &RecordBatch) -> Vec<u8> {
        let options = ipc_write_options(Compression::Lz4).unwrap();
        let (_, encoded) = IpcDataGenerator::default()
            .encode(
                batch,
                &mut DictionaryTracker::new(false),
                &options,
                &mut IpcWriteContext::default(),
            )
            .unwrap();
        let metadata_len = encoded.ipc_message.len().next_multiple_of(8);
        let length =
            (FRAME_HEADER_LEN + metadata_len + encoded.arrow_data.len()).next_multiple_of(8);
        let ts = timestamps(batch);
        let mut bytes = Vec::with_capacity(length);
        bytes.extend_from_slice(&FRAME_MAGIC);
        bytes.extend_from_slice(&(length as u32).to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&[FRAME_VERSION_WHOLE, 0, 0, 0]);
        bytes.extend_from_slice(&7u64.to_le_bytes());
        bytes.extend_from_slice(&(batch.num_rows() as u32).to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&arrow::compute::min(ts).unwrap().to_le_bytes());
        bytes.extend_from_slice(&arrow::compute::max(ts).unwrap().to_le_bytes());
        bytes.extend_from_slice(&(metadata_len as u32).to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&encoded.ipc_message);
        bytes.resize(FRAME_HEADER_LEN + metadata_len, 0);
        bytes.extend_from_slice(&encoded.arrow_data);
        bytes.resize(length, 0);
        let crc = crc32fast::hash(&bytes[12..]);
        bytes[8..12].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    #[test]
    fn frame_round_trips_with_every_compression() {
        let (schema, batch) = sample(1000);
        for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let bytes = encode(&batch, compression);
            assert_eq!(bytes.len() % 8, 0);
            let header = decode_frame(&bytes).unwrap();
            assert_eq!(header.length as usize, bytes.len());
            assert_eq!(header.base_offset, Offset(42));
            assert_eq!(header.record_count, 1000);
            assert_eq!(header.schema_version, 3);
            assert_eq!(header.min_timestamp_ms, 1_000);
            assert_eq!(header.max_timestamp_ms, 1_999);
            assert_eq!(header.end_offset(), Offset(1042));
            assert_eq!(header.layout, Layout::Sections { columns: 3 });
            let decoded = decode_batch(&Buffer::from(bytes), &header, &schema, None).unwrap();
            assert_eq!(decoded, batch, "{compression:?}");
        }
    }

    #[test]
    fn compression_shrinks_repetitive_data() {
        let (_, batch) = sample(10_000);
        let plain = encode(&batch, Compression::None).len();
        let lz4 = encode(&batch, Compression::Lz4).len();
        let zstd = encode(&batch, Compression::Zstd).len();
        assert!(lz4 < plain, "lz4 {lz4} vs none {plain}");
        assert!(zstd < lz4, "zstd {zstd} vs lz4 {lz4}");
    }

    #[test]
    fn projection_decodes_only_selected_columns() {
        let (schema, batch) = sample(10);
        let bytes = encode(&batch, Compression::Zstd);
        let header = decode_frame(&bytes).unwrap();
        let frame = Buffer::from(bytes);
        let decoded = decode_batch(&frame, &header, &schema, Some(&[2, 1])).unwrap();
        assert_eq!(decoded.num_columns(), 2);
        assert_eq!(decoded.column(0), batch.column(2));
        assert_eq!(decoded.column(1), batch.column(1));
        let none = decode_batch(&frame, &header, &schema, Some(&[])).unwrap();
        assert_eq!((none.num_columns(), none.num_rows()), (0, 10));
    }

    #[test]
    fn a_column_is_read_and_verified_from_its_section_alone() {
        let (schema, batch) = sample(100);
        let mut bytes = encode(&batch, Compression::Lz4);
        let header = decode_header(&bytes).unwrap();
        let sections = decode_directory(&bytes[..header.head_len()], &header).unwrap();
        assert_eq!(sections.len(), 3);
        assert_eq!(sections[0].position as usize, header.head_len());
        // Damage to the url column spoils it and nothing else.
        let url = sections[1].range();
        bytes[url.end - 9] ^= 1;
        assert!(decode_frame(&bytes).is_err());
        assert!(verify_section(&bytes[url], &sections[1]).is_err());
        let id = sections[0].range();
        verify_section(&bytes[id.clone()], &sections[0]).unwrap();
        let only = Buffer::from(bytes[id].to_vec());
        let decoded = decode_columns(&header, &sections, &schema, Some(&[0]), |c, s| {
            assert_eq!(
                (c, *s),
                (0, sections[0]),
                "only the projected section is asked for"
            );
            only.clone()
        })
        .unwrap();
        assert_eq!(decoded.column(0), batch.column(0));
    }

    #[test]
    fn frames_of_format_version_1_still_read() {
        let (schema, batch) = sample(50);
        let bytes = encode_whole(&batch);
        let header = decode_frame(&bytes).unwrap();
        assert_eq!(header.head_len(), bytes.len());
        assert!(matches!(header.layout, Layout::Whole { .. }));
        assert_eq!((header.base_offset, header.record_count), (Offset(7), 50));
        let frame = Buffer::from(bytes.clone());
        assert_eq!(decode_batch(&frame, &header, &schema, None).unwrap(), batch);
        let url = decode_batch(&frame, &header, &schema, Some(&[1])).unwrap();
        assert_eq!(url.column(0), batch.column(1));
        assert!(decode_directory(&bytes, &header).is_err());
        let mut flipped = bytes;
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(decode_frame(&flipped).is_err());
    }

    #[test]
    fn a_compacted_frame_keeps_its_records_offsets() {
        let (schema, batch) = sample(5);
        let deltas = [0, 2, 3, 7, 9];
        for compression in [Compression::None, Compression::Zstd] {
            let frame = encode_sparse_frame(
                &batch,
                timestamps(&batch),
                Offset(100),
                &deltas,
                12,
                3,
                compression,
            )
            .unwrap();
            assert!(frame.header.is_sparse());
            assert_eq!(frame.header.end_offset(), Offset(112));
            let bytes = Buffer::from(frame.to_bytes());
            assert_eq!(bytes.as_slice()[12], FRAME_VERSION_SPARSE);
            let header = decode_frame(bytes.as_slice()).unwrap();
            assert_eq!(header, frame.header);
            assert_eq!(decode_batch(&bytes, &header, &schema, None).unwrap(), batch);
            let offsets = decode_frame_offsets(&bytes, &header).unwrap();
            assert_eq!(offsets.as_deref(), Some(&deltas[..]));
        }
        // Records that fill their span make an ordinary frame.
        let dense = encode_sparse_frame(
            &batch,
            timestamps(&batch),
            Offset(100),
            &[0, 1, 2, 3, 4],
            5,
            3,
            Compression::None,
        )
        .unwrap();
        assert!(!dense.header.is_sparse());
        assert_eq!(dense.to_bytes()[12], FRAME_VERSION);
        // Offsets out of order, or past the span, are not a frame.
        for (deltas, span) in [([0, 2, 2, 3, 4], 12), ([0, 1, 2, 3, 12], 12)] {
            let refused = encode_sparse_frame(
                &batch,
                timestamps(&batch),
                Offset(100),
                &deltas,
                span,
                3,
                Compression::None,
            );
            assert!(refused.is_err(), "{deltas:?} within {span}");
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let (_, batch) = sample(3);
        let sparse = encode_sparse_frame(
            &batch,
            timestamps(&batch),
            Offset(7),
            &[1, 4, 5],
            9,
            3,
            Compression::None,
        )
        .unwrap()
        .to_bytes();
        for bytes in [
            encode(&batch, Compression::None),
            encode_whole(&batch),
            sparse,
        ] {
            for i in 0..bytes.len() {
                let mut corrupt = bytes.clone();
                corrupt[i] ^= 0x20;
                assert!(
                    decode_frame(&corrupt).is_err(),
                    "flip at byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn truncated_frames_are_errors() {
        let (_, batch) = sample(3);
        for bytes in [encode(&batch, Compression::None), encode_whole(&batch)] {
            for len in 0..bytes.len() {
                assert!(
                    decode_frame(&bytes[..len]).is_err(),
                    "prefix of {len} accepted"
                );
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        // A deterministic pseudo-random sweep of headers and directories: every input is an
        // Ok or an Err.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for round in 0..20_000 {
            let mut bytes = vec![0u8; 256];
            for b in bytes.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            bytes[0..4].copy_from_slice(&FRAME_MAGIC);
            bytes[12] = [FRAME_VERSION, FRAME_VERSION_WHOLE][round % 2];
            if round % 4 < 2 {
                // Plausible sizes, so the checks behind them run too.
                bytes[4..8].copy_from_slice(&256u32.to_le_bytes());
                bytes[48..52].copy_from_slice(&(1 + round as u32 % 12).to_le_bytes());
            }
            let _ = decode_frame(&bytes);
            if let Ok(header) = decode_header(&bytes) {
                let _ = decode_directory(&bytes, &header);
            }
        }
    }
}
