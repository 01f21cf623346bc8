//! Batch frames: the unit of the log on disk.
//!
//! A frame holds one Arrow record batch, encoded as an Arrow IPC record-batch message
//! (flatbuffer metadata followed by the body buffers, each buffer optionally lz4- or
//! zstd-compressed by Arrow IPC itself), behind a fixed header:
//!
//! ```text
//! offset size field
//!      0    4 magic            b"RNLF"
//!      4    4 length           whole frame in bytes, header and padding included (multiple of 8)
//!      8    4 crc32            IEEE CRC32 (crc32fast) of bytes [12, length)
//!     12    1 format version   FRAME_VERSION
//!     13    3 reserved         zero
//!     16    8 base offset      offset of the first record
//!     24    4 record count     > 0
//!     28    4 schema version   which of the topic's schemas decodes the body
//!     32    8 min timestamp    ms since the epoch, over the frame's records
//!     40    8 max timestamp    ms since the epoch
//!     48    4 metadata length  bytes of IPC flatbuffer metadata, padded to 8
//!     52    4 reserved         zero
//!     56    … metadata, then body
//! ```
//! All integers are little-endian. The payload starts 8-byte aligned so the body can be
//! decoded in place.
//!
//! This module is pure: bytes in, bytes out. It never touches files. Every malformed input is
//! an error, never a panic: the recovery code relies on that to tell a torn tail from data.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, TimestampMillisecondArray};
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::read_record_batch;
use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use arrow::ipc::{CompressionType, root_as_message};

use super::types::{Compression, Offset};

pub const FRAME_MAGIC: [u8; 4] = *b"RNLF";
pub const FRAME_VERSION: u8 = 1;
pub const FRAME_HEADER_LEN: usize = 56;
/// No frame is ever larger than this; a header claiming more is corrupt, not a frame.
pub const FRAME_LEN_MAX: u32 = 512 * 1024 * 1024;

/// The decoded fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub length: u32,
    pub crc32: u32,
    pub base_offset: Offset,
    pub record_count: u32,
    pub schema_version: u32,
    pub min_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub metadata_len: u32,
}

impl FrameHeader {
    /// The offset after this frame's last record.
    pub fn end_offset(&self) -> Offset {
        self.base_offset.plus(self.record_count as u64)
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

/// Parses and sanity-checks the fixed header, without the checksum (which needs the whole
/// frame). Used to walk a segment reading only headers.
pub fn decode_header(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(FrameError::Truncated {
            needed: FRAME_HEADER_LEN,
            available: bytes.len(),
        });
    }
    let magic: [u8; 4] = bytes[0..4].try_into().expect("4 bytes");
    if magic != FRAME_MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let length = u32_at(bytes, 4);
    if (length as usize) < FRAME_HEADER_LEN || length > FRAME_LEN_MAX || !length.is_multiple_of(8) {
        return Err(FrameError::BadLength(length));
    }
    if bytes[12] != FRAME_VERSION {
        return Err(FrameError::BadVersion(bytes[12]));
    }
    let header = FrameHeader {
        length,
        crc32: u32_at(bytes, 8),
        base_offset: Offset(u64_at(bytes, 16)),
        record_count: u32_at(bytes, 24),
        schema_version: u32_at(bytes, 28),
        min_timestamp_ms: i64_at(bytes, 32),
        max_timestamp_ms: i64_at(bytes, 40),
        metadata_len: u32_at(bytes, 48),
    };
    if header.record_count == 0 {
        return Err(FrameError::BadHeader("record count is zero"));
    }
    if header.metadata_len as usize > length as usize - FRAME_HEADER_LEN
        || !header.metadata_len.is_multiple_of(8)
    {
        return Err(FrameError::BadHeader("metadata length out of range"));
    }
    if header.min_timestamp_ms > header.max_timestamp_ms {
        return Err(FrameError::BadHeader("min timestamp after max timestamp"));
    }
    Ok(header)
}

/// Parses a whole frame and verifies its checksum.
pub fn decode_frame(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
    let header = decode_header(bytes)?;
    let length = header.length as usize;
    if bytes.len() < length {
        return Err(FrameError::Truncated {
            needed: length,
            available: bytes.len(),
        });
    }
    let computed = crc32fast::hash(&bytes[12..length]);
    if computed != header.crc32 {
        return Err(FrameError::BadChecksum {
            stored: header.crc32,
            computed,
        });
    }
    Ok(header)
}

/// A frame ready to write, in pieces: the fixed header with the IPC metadata, then the
/// body exactly as the IPC encoder produced it (so it is not copied once more), then zero
/// padding.
pub struct EncodedFrame {
    pub header: FrameHeader,
    head: Vec<u8>,
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

    /// The frame's bytes, in order.
    pub fn parts(&self) -> [&[u8]; 3] {
        [&self.head, &self.body, &ZEROS[..self.padding]]
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.parts().concat()
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
    assert!(batch.num_rows() > 0, "a frame holds at least one record");
    assert_eq!(timestamps.len(), batch.num_rows());
    let options = ipc_write_options(compression)?;
    let (dictionaries, encoded) = IpcDataGenerator::default()
        .encode(
            batch,
            &mut DictionaryTracker::new(false),
            &options,
            &mut IpcWriteContext::default(),
        )
        .map_err(|e| FrameError::BadPayload(e.to_string()))?;
    if !dictionaries.is_empty() {
        return Err(FrameError::BadPayload(
            "dictionary-encoded columns are not stored in the log".into(),
        ));
    }
    let metadata_len = encoded.ipc_message.len().next_multiple_of(8);
    let unpadded = FRAME_HEADER_LEN + metadata_len + encoded.arrow_data.len();
    let length = unpadded.next_multiple_of(8);
    if length > FRAME_LEN_MAX as usize {
        return Err(FrameError::BadLength(length as u32));
    }
    let header = FrameHeader {
        length: length as u32,
        crc32: 0,
        base_offset,
        record_count: batch.num_rows() as u32,
        schema_version,
        min_timestamp_ms: arrow::compute::min(timestamps).unwrap_or(0),
        max_timestamp_ms: arrow::compute::max(timestamps).unwrap_or(0),
        metadata_len: metadata_len as u32,
    };
    let mut head = Vec::with_capacity(FRAME_HEADER_LEN + metadata_len);
    head.extend_from_slice(&FRAME_MAGIC);
    head.extend_from_slice(&header.length.to_le_bytes());
    head.extend_from_slice(&[0; 4]); // crc32, filled in below
    head.push(FRAME_VERSION);
    head.extend_from_slice(&[0; 3]);
    head.extend_from_slice(&base_offset.0.to_le_bytes());
    head.extend_from_slice(&header.record_count.to_le_bytes());
    head.extend_from_slice(&schema_version.to_le_bytes());
    head.extend_from_slice(&header.min_timestamp_ms.to_le_bytes());
    head.extend_from_slice(&header.max_timestamp_ms.to_le_bytes());
    head.extend_from_slice(&header.metadata_len.to_le_bytes());
    head.extend_from_slice(&[0; 4]);
    debug_assert_eq!(head.len(), FRAME_HEADER_LEN);
    head.extend_from_slice(&encoded.ipc_message);
    head.resize(FRAME_HEADER_LEN + metadata_len, 0);
    let mut frame = EncodedFrame {
        header,
        head,
        body: encoded.arrow_data,
        padding: length - unpadded,
    };
    let mut crc = crc32fast::Hasher::new();
    crc.update(&frame.head[12..]);
    crc.update(&frame.body);
    crc.update(&ZEROS[..frame.padding]);
    let crc = crc.finalize();
    frame.head[8..12].copy_from_slice(&crc.to_le_bytes());
    frame.header.crc32 = crc;
    Ok(frame)
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

/// Decodes the record batch of a verified frame held in `frame` (the whole frame, starting
/// at its header). `projection` selects columns of `schema` by index; unselected columns are
/// neither decompressed nor copied.
pub fn decode_batch(
    frame: &Buffer,
    header: &FrameHeader,
    schema: &SchemaRef,
    projection: Option<&[usize]>,
) -> Result<RecordBatch, FrameError> {
    let metadata_end = FRAME_HEADER_LEN + header.metadata_len as usize;
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
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

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

    fn encode(batch: &RecordBatch, compression: Compression) -> Vec<u8> {
        let ts = batch
            .column(2)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        encode_frame(batch, ts, Offset(42), 3, compression)
            .unwrap()
            .to_bytes()
    }

    #[test]
    fn frame_round_trips_with_every_compression() {
        let (schema, batch) = sample(1000);
        for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let bytes = encode(&batch, compression);
            assert_eq!(bytes.len() % 8, 0);
            let header = decode_frame(&bytes).unwrap();
            assert_eq!(header.base_offset, Offset(42));
            assert_eq!(header.record_count, 1000);
            assert_eq!(header.schema_version, 3);
            assert_eq!(header.min_timestamp_ms, 1_000);
            assert_eq!(header.max_timestamp_ms, 1_999);
            assert_eq!(header.end_offset(), Offset(1042));
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
        let decoded = decode_batch(&Buffer::from(bytes), &header, &schema, Some(&[1])).unwrap();
        assert_eq!(decoded.num_columns(), 1);
        assert_eq!(decoded.column(0), batch.column(1));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let (_, batch) = sample(3);
        let bytes = encode(&batch, Compression::None);
        for i in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[i] ^= 0x20;
            assert!(
                decode_frame(&corrupt).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn truncated_frames_are_errors() {
        let (_, batch) = sample(3);
        let bytes = encode(&batch, Compression::None);
        for len in 0..bytes.len() {
            assert!(
                decode_frame(&bytes[..len]).is_err(),
                "prefix of {len} accepted"
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        // A deterministic pseudo-random sweep of headers: every input is an Ok or an Err.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..10_000 {
            let mut bytes = vec![0u8; 128];
            for b in bytes.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            bytes[0..4].copy_from_slice(&FRAME_MAGIC);
            bytes[12] = FRAME_VERSION;
            let _ = decode_frame(&bytes);
        }
    }
}
