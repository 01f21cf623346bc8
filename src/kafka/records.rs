//! Kafka's record batch (magic 2) ⇄ Arrow columns, without I/O.
//!
//! A batch is a 61-byte header and its records, compressed as a whole (gzip, snappy, lz4 or
//! zstd) or not. The header's CRC-32C covers everything after the CRC field; the base offset
//! and leader epoch before it are the broker's to set. A record is varints (zigzag-encoded):
//! length, attributes, timestamp and offset deltas, key, value, and headers. Records decode
//! straight into Arrow builders — no allocation per record — and encode from Arrow arrays.
//!
//! Every length and count read from a batch is checked against the bytes that are left
//! before it sizes anything, and decompression stops at a given size, so a hostile batch
//! is an error, not an allocation.

use std::io::Read;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BinaryBuilder, ListBuilder, StringBuilder, StructBuilder};
use arrow::datatypes::{DataType, Field};
use bytes::{BufMut, BytesMut};

/// Bytes of a batch's header, up to its first record.
pub const HEADER_BYTES: usize = 61;
/// Where the CRC-32C's coverage starts (the attributes).
const CRC_FROM: usize = 21;
/// The smallest record: length, attributes, two deltas, null key, null value, no headers.
const MIN_RECORD_BYTES: usize = 7;

/// How a batch's records are compressed (bits 0–2 of its attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    fn of(attributes: i16) -> Result<Codec, BatchError> {
        match attributes & 0x7 {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Gzip),
            2 => Ok(Codec::Snappy),
            3 => Ok(Codec::Lz4),
            4 => Ok(Codec::Zstd),
            other => Err(BatchError::UnsupportedCodec(other)),
        }
    }

    fn bits(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }
}

/// Why a batch is refused, as Kafka's error codes say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// The CRC does not match: damaged on the way, worth a retry (CORRUPT_MESSAGE, 2).
    Corrupt(String),
    /// Not a batch a client may send (INVALID_RECORD, 87).
    Invalid(String),
    /// A compression codec that does not exist (UNSUPPORTED_COMPRESSION_TYPE, 76).
    UnsupportedCodec(i16),
    /// More than the allowed size once decompressed (MESSAGE_TOO_LARGE, 10).
    TooLarge(usize),
}

impl BatchError {
    pub fn code(&self) -> i16 {
        match self {
            BatchError::Corrupt(_) => 2,
            BatchError::Invalid(_) => 87,
            BatchError::UnsupportedCodec(_) => 76,
            BatchError::TooLarge(_) => 10,
        }
    }
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Corrupt(why) | BatchError::Invalid(why) => f.write_str(why),
            BatchError::UnsupportedCodec(codec) => write!(f, "compression codec {codec}"),
            BatchError::TooLarge(max) => {
                write!(f, "the batch decompresses to more than {max} bytes")
            }
        }
    }
}

fn invalid(why: impl Into<String>) -> BatchError {
    BatchError::Invalid(why.into())
}

/// What a batch's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub leader_epoch: i32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    pub fn codec(&self) -> Result<Codec, BatchError> {
        Codec::of(self.attributes)
    }

    /// Timestamps are the broker's append time, not the producer's (bit 3).
    pub fn log_append_time(&self) -> bool {
        self.attributes & 0x8 != 0
    }

    pub fn transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    /// A transaction marker, not data (bit 5).
    pub fn control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
}

/// Builds a column of [`headers_type`].
pub(crate) fn headers_builder() -> ListBuilder<StructBuilder> {
    ListBuilder::new(StructBuilder::from_fields(header_fields(), 0)).with_field(Arc::new(
        Field::new("item", DataType::Struct(header_fields()), false),
    ))
}

pub use crate::storage::{header_fields, headers_type};

pub use crate::db::kafka::Records;

/// Reads a batch's fields in order, never past its end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BatchError> {
        if n > self.bytes.len() {
            return Err(invalid(format!(
                "a record needs {n} bytes where {} are left",
                self.bytes.len()
            )));
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    fn i8(&mut self) -> Result<i8, BatchError> {
        Ok(self.take(1)?[0] as i8)
    }

    /// A zigzag varint of at most `max_bytes` bytes.
    fn varlong(&mut self, max_bytes: usize) -> Result<i64, BatchError> {
        let mut raw: u64 = 0;
        for i in 0..max_bytes {
            let byte = self.take(1)?[0];
            raw |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err(invalid("a varint longer than it may be"))
    }

    fn varint(&mut self) -> Result<i32, BatchError> {
        let value = self.varlong(5)?;
        i32::try_from(value).map_err(|_| invalid("a varint out of range"))
    }

    /// A length-prefixed byte string (`None` for length -1).
    fn bytes(&mut self) -> Result<Option<&'a [u8]>, BatchError> {
        match self.varint()? {
            -1 => Ok(None),
            n if n >= 0 => self.take(n as usize).map(Some),
            n => Err(invalid(format!("a negative length {n}"))),
        }
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The header of the batch at the start of `bytes`, and the batch's whole length.
pub fn read_header(bytes: &[u8]) -> Result<(BatchHeader, usize), BatchError> {
    if bytes.len() < HEADER_BYTES {
        return Err(invalid(format!(
            "a record batch of {} bytes is shorter than its header",
            bytes.len()
        )));
    }
    let magic = bytes[16] as i8;
    if magic != 2 {
        return Err(invalid(format!(
            "record batch magic {magic}: only format 2 (Kafka 0.11 and later) is accepted"
        )));
    }
    let length = be_i32(bytes, 8);
    let total = usize::try_from(length)
        .ok()
        .and_then(|l| l.checked_add(12))
        .filter(|t| *t >= HEADER_BYTES)
        .ok_or_else(|| invalid(format!("a record batch length of {length}")))?;
    if total > bytes.len() {
        return Err(invalid(format!(
            "a record batch of {total} bytes in {} bytes",
            bytes.len()
        )));
    }
    let header = BatchHeader {
        base_offset: be_i64(bytes, 0),
        leader_epoch: be_i32(bytes, 12),
        attributes: be_i16(bytes, 21),
        last_offset_delta: be_i32(bytes, 23),
        base_timestamp: be_i64(bytes, 27),
        max_timestamp: be_i64(bytes, 35),
        producer_id: be_i64(bytes, 43),
        producer_epoch: be_i16(bytes, 51),
        base_sequence: be_i32(bytes, 53),
        record_count: be_i32(bytes, 57),
    };
    Ok((header, total))
}

/// Decodes the one batch that `bytes` holds (as a Produce request carries it), its records
/// decompressed to at most `max_bytes`.
pub fn decode_batch(bytes: &[u8], max_bytes: usize) -> Result<(BatchHeader, Records), BatchError> {
    let (header, total) = read_header(bytes)?;
    if total != bytes.len() {
        return Err(invalid(format!(
            "{} bytes after the record batch: one batch per partition is accepted",
            bytes.len() - total
        )));
    }
    let crc = be_i32(bytes, 17) as u32;
    let computed = crc32c::crc32c(&bytes[CRC_FROM..total]);
    if crc != computed {
        return Err(BatchError::Corrupt(format!(
            "record batch CRC {crc:#010x}, computed {computed:#010x}"
        )));
    }
    let payload = &bytes[HEADER_BYTES..total];
    let decompressed;
    let records = match header.codec()? {
        Codec::None => payload,
        codec => {
            decompressed = decompress(codec, payload, max_bytes)?;
            &decompressed[..]
        }
    };
    let records = decode_records(&header, records)?;
    Ok((header, records))
}

fn decode_records(header: &BatchHeader, bytes: &[u8]) -> Result<Records, BatchError> {
    let count = usize::try_from(header.record_count)
        .map_err(|_| invalid(format!("a record count of {}", header.record_count)))?;
    if count > bytes.len() / MIN_RECORD_BYTES {
        return Err(invalid(format!(
            "{count} records cannot fit in {} bytes",
            bytes.len()
        )));
    }
    if count == 0 || header.last_offset_delta != count as i32 - 1 {
        return Err(invalid(format!(
            "a batch of {count} records whose last offset delta is {}",
            header.last_offset_delta
        )));
    }
    let mut timestamps = Vec::with_capacity(count);
    let mut keys = BinaryBuilder::with_capacity(count, 0);
    let mut values = BinaryBuilder::with_capacity(count, bytes.len());
    let mut headers = headers_builder();
    let mut reader = Reader { bytes };
    for expected in 0..count as i32 {
        let length = reader.varint()?;
        let length =
            usize::try_from(length).map_err(|_| invalid(format!("a record length of {length}")))?;
        let mut record = Reader {
            bytes: reader.take(length)?,
        };
        let _attributes = record.i8()?;
        let timestamp_delta = record.varlong(10)?;
        let offset_delta = record.varint()?;
        if offset_delta != expected {
            return Err(invalid(format!(
                "record {expected} has offset delta {offset_delta}"
            )));
        }
        timestamps.push(header.base_timestamp.wrapping_add(timestamp_delta));
        keys.append_option(record.bytes()?);
        values.append_option(record.bytes()?);
        let count = record.varint()?;
        let count = usize::try_from(count)
            .ok()
            .filter(|c| *c <= record.bytes.len())
            .ok_or_else(|| invalid(format!("a header count of {count}")))?;
        let entries = headers.values();
        for _ in 0..count {
            let key = record
                .bytes()?
                .ok_or_else(|| invalid("a header without a key"))?;
            let key =
                std::str::from_utf8(key).map_err(|_| invalid("a header key that is not UTF-8"))?;
            let value = record.bytes()?;
            entries
                .field_builder::<StringBuilder>(0)
                .expect("a key field")
                .append_value(key);
            entries
                .field_builder::<BinaryBuilder>(1)
                .expect("a value field")
                .append_option(value);
            entries.append(true);
        }
        headers.append(true);
        if !record.bytes.is_empty() {
            return Err(invalid(format!(
                "record {expected} has {} bytes past its end",
                record.bytes.len()
            )));
        }
    }
    if !reader.bytes.is_empty() {
        return Err(invalid(format!(
            "{} bytes after the batch's {count} records",
            reader.bytes.len()
        )));
    }
    Ok(Records {
        timestamps,
        keys: keys.finish(),
        values: values.finish(),
        headers: headers.finish(),
    })
}

/// Java's snappy framing (xerial): a magic, two versions, then length-prefixed blocks.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

fn decompress(codec: Codec, payload: &[u8], max_bytes: usize) -> Result<Vec<u8>, BatchError> {
    let garbled =
        |e: std::io::Error| invalid(format!("{codec:?} data that does not decompress: {e}"));
    let mut out = vec![];
    let limit = max_bytes as u64 + 1;
    match codec {
        Codec::None => out.extend_from_slice(payload),
        Codec::Gzip => {
            flate2::read::GzDecoder::new(payload)
                .take(limit)
                .read_to_end(&mut out)
                .map_err(garbled)?;
        }
        Codec::Lz4 => {
            lz4_flex::frame::FrameDecoder::new(payload)
                .take(limit)
                .read_to_end(&mut out)
                .map_err(garbled)?;
        }
        Codec::Zstd => {
            zstd::stream::read::Decoder::new(payload)
                .map_err(garbled)?
                .take(limit)
                .read_to_end(&mut out)
                .map_err(garbled)?;
        }
        Codec::Snappy if payload.starts_with(XERIAL_MAGIC) => {
            let mut blocks = Reader {
                bytes: payload
                    .get(16..)
                    .ok_or_else(|| invalid("a snappy header cut short"))?,
            };
            while !blocks.bytes.is_empty() {
                let length = be_i32(blocks.take(4)?, 0);
                let length = usize::try_from(length)
                    .map_err(|_| invalid(format!("a snappy block of {length} bytes")))?;
                snappy_block(blocks.take(length)?, &mut out, max_bytes)?;
            }
        }
        Codec::Snappy => snappy_block(payload, &mut out, max_bytes)?,
    }
    if out.len() > max_bytes {
        return Err(BatchError::TooLarge(max_bytes));
    }
    Ok(out)
}

fn snappy_block(block: &[u8], out: &mut Vec<u8>, max_bytes: usize) -> Result<(), BatchError> {
    let garbled = |e: snap::Error| invalid(format!("snappy data that does not decompress: {e}"));
    let length = snap::raw::decompress_len(block).map_err(garbled)?;
    if out.len() + length > max_bytes {
        return Err(BatchError::TooLarge(max_bytes));
    }
    let start = out.len();
    out.resize(start + length, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(garbled)?;
    Ok(())
}

fn compress(codec: Codec, records: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match codec {
        Codec::None => records.to_vec(), // not called for it: encode_batch writes in place
        Codec::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(vec![], flate2::Compression::default());
            encoder.write_all(records).expect("writing to memory");
            encoder.finish().expect("writing to memory")
        }
        Codec::Snappy => snap::raw::Encoder::new()
            .compress_vec(records)
            .expect("snappy takes any input"),
        Codec::Lz4 => {
            let mut encoder = lz4_flex::frame::FrameEncoder::new(vec![]);
            encoder.write_all(records).expect("writing to memory");
            encoder.finish().expect("writing to memory")
        }
        Codec::Zstd => zstd::stream::encode_all(records, 3).expect("writing to memory"),
    }
}

/// Appends `records` to `out` as one batch whose first offset is `base_offset`, compressed
/// with `codec`, with no producer (id -1) and create-time timestamps.
pub fn encode_batch(out: &mut BytesMut, base_offset: i64, records: &Records, codec: Codec) {
    encode_batch_at(out, base_offset, None, records, codec)
}

/// [`encode_batch`] for records whose offsets are not consecutive (a compacted topic's):
/// record `i` is at `base_offset + deltas[i]`, as Kafka's record deltas allow.
pub fn encode_batch_at(
    out: &mut BytesMut,
    base_offset: i64,
    deltas: Option<&[u32]>,
    records: &Records,
    codec: Codec,
) {
    let n = records.len();
    assert!(n > 0, "a batch has records");
    assert!(deltas.is_none_or(|d| d.len() == n), "a delta per record");
    let delta = |i: usize| deltas.map_or(i as i64, |d| d[i] as i64);
    let base_timestamp = records.timestamps.iter().copied().min().expect("records");
    let max_timestamp = records.timestamps.iter().copied().max().expect("records");
    let start = out.len();
    out.put_i64(base_offset);
    out.put_i32(0); // batch length, below
    out.put_i32(0); // leader epoch
    out.put_i8(2); // magic
    out.put_u32(0); // CRC, below
    out.put_i16(codec.bits());
    out.put_i32(delta(n - 1) as i32); // last offset delta
    out.put_i64(base_timestamp);
    out.put_i64(max_timestamp);
    out.put_i64(-1); // producer id
    out.put_i16(-1); // producer epoch
    out.put_i32(-1); // base sequence
    out.put_i32(n as i32);
    if codec == Codec::None {
        // Uncompressed (every fetch): the records go straight into `out`.
        put_records(out, records, base_timestamp, &delta);
    } else {
        let mut body = BytesMut::new();
        put_records(&mut body, records, base_timestamp, &delta);
        out.put_slice(&compress(codec, &body));
    }
    let batch_length = (out.len() - start - 12) as i32;
    out[start + 8..start + 12].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&out[start + CRC_FROM..]);
    out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
}

/// The records of a batch, each with its length in front. Sized first, so `out` grows once
/// and each record is written with plain copies; the headers' list offsets and columns are
/// read once, not sliced per record.
fn put_records(
    out: &mut BytesMut,
    records: &Records,
    base_timestamp: i64,
    delta: &dyn Fn(usize) -> i64,
) {
    let header_offsets = records.headers.value_offsets();
    let entries = records.headers.values().as_struct();
    let (header_keys, header_values) = (
        entries.column(0).as_string::<i32>(),
        entries.column(1).as_binary::<i32>(),
    );
    let headers = |i: usize| header_offsets[i] as usize..header_offsets[i + 1] as usize;
    let header = |h: usize| {
        (
            Some(header_keys.value(h).as_bytes()),
            value_at(header_values, h),
        )
    };
    // What follows a record's length: attributes, deltas, key, value, headers.
    let body_len = |i: usize| {
        1 + varlong_len(records.timestamps[i] - base_timestamp)
            + varlong_len(delta(i))
            + bytes_len(value_at(&records.keys, i))
            + bytes_len(value_at(&records.values, i))
            + varlong_len(headers(i).len() as i64)
            + headers(i)
                .map(|h| {
                    let (key, value) = header(h);
                    bytes_len(key) + bytes_len(value)
                })
                .sum::<usize>()
    };
    let total: usize = (0..records.len())
        .map(|i| {
            let body = body_len(i);
            varlong_len(body as i64) + body
        })
        .sum();
    let start = out.len();
    out.resize(start + total, 0);
    let mut to = Cursor {
        buf: &mut out[start..],
        at: 0,
    };
    for i in 0..records.len() {
        to.varlong(body_len(i) as i64);
        to.byte(0); // attributes
        to.varlong(records.timestamps[i] - base_timestamp);
        to.varlong(delta(i));
        to.bytes(value_at(&records.keys, i));
        to.bytes(value_at(&records.values, i));
        to.varlong(headers(i).len() as i64);
        for h in headers(i) {
            let (key, value) = header(h);
            to.bytes(key);
            to.bytes(value);
        }
    }
    debug_assert_eq!(to.at, total, "records are as long as sized");
}

/// Writes into a buffer sized beforehand.
struct Cursor<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Cursor<'_> {
    fn byte(&mut self, byte: u8) {
        self.buf[self.at] = byte;
        self.at += 1;
    }

    /// A zigzag varint, as Kafka's records write lengths and deltas.
    fn varlong(&mut self, value: i64) {
        let mut raw = ((value << 1) ^ (value >> 63)) as u64;
        while raw >= 0x80 {
            self.byte((raw as u8) | 0x80);
            raw >>= 7;
        }
        self.byte(raw as u8);
    }

    /// Length-prefixed bytes; length -1 for null.
    fn bytes(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            None => self.varlong(-1),
            Some(bytes) => {
                self.varlong(bytes.len() as i64);
                self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
                self.at += bytes.len();
            }
        }
    }
}

/// The bytes of row `i`, `None` if it is null.
fn value_at(array: &arrow::array::BinaryArray, i: usize) -> Option<&[u8]> {
    array.is_valid(i).then(|| array.value(i))
}

/// The bytes [`Cursor::varlong`] writes for `value`.
fn varlong_len(value: i64) -> usize {
    let raw = ((value << 1) ^ (value >> 63)) as u64;
    (64 - raw.max(1).leading_zeros() as usize).div_ceil(7)
}

/// The bytes [`Cursor::bytes`] writes for `bytes`.
fn bytes_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => 1,
        Some(bytes) => varlong_len(bytes.len() as i64) + bytes.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::BinaryArray;

    fn sample(n: usize) -> Records {
        let mut headers = headers_builder();
        for i in 0..n {
            let entries = headers.values();
            for h in 0..i % 3 {
                entries
                    .field_builder::<StringBuilder>(0)
                    .unwrap()
                    .append_value(format!("h{h}"));
                let value = (h != 1).then(|| vec![h as u8, 0xff]);
                entries
                    .field_builder::<BinaryBuilder>(1)
                    .unwrap()
                    .append_option(value);
                entries.append(true);
            }
            headers.append(true);
        }
        Records {
            timestamps: (0..n as i64)
                .map(|i| 1_700_000_000_000 + (i * 7) % 50)
                .collect(),
            keys: BinaryArray::from_iter(
                (0..n).map(|i| (i % 4 != 0).then(|| format!("k{i}").into_bytes())),
            ),
            values: BinaryArray::from_iter(
                (0..n).map(|i| (i % 5 != 0).then(|| vec![(i % 251) as u8; i % 300])),
            ),
            headers: headers.finish(),
        }
    }

    #[test]
    fn batches_round_trip_in_every_codec() {
        let records = sample(500);
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let mut out = BytesMut::new();
            encode_batch(&mut out, 1234, &records, codec);
            let (header, back) = decode_batch(&out, 1 << 20).unwrap();
            assert_eq!(header.base_offset, 1234);
            assert_eq!(header.codec().unwrap(), codec);
            assert_eq!(header.record_count, 500);
            assert_eq!(back, records, "{codec:?}");
        }
    }

    #[test]
    fn damage_is_corrupt_and_nonsense_is_invalid() {
        let mut out = BytesMut::new();
        encode_batch(&mut out, 0, &sample(20), Codec::None);
        // A flipped byte anywhere the CRC covers: CORRUPT_MESSAGE, retriable.
        let mut flipped = out.to_vec();
        flipped[100] ^= 1;
        assert_eq!(decode_batch(&flipped, 1 << 20).unwrap_err().code(), 2);
        // The base offset is outside the CRC: the broker may set it.
        let mut moved = out.to_vec();
        moved[7] = 9;
        assert!(decode_batch(&moved, 1 << 20).is_ok());
        // An old message format, two batches, a batch cut short.
        let mut old = out.to_vec();
        old[16] = 1;
        assert_eq!(decode_batch(&old, 1 << 20).unwrap_err().code(), 87);
        let twice = [&out[..], &out[..]].concat();
        assert_eq!(decode_batch(&twice, 1 << 20).unwrap_err().code(), 87);
        assert_eq!(
            decode_batch(&out[..out.len() - 1], 1 << 20)
                .unwrap_err()
                .code(),
            87
        );
        // An unknown codec.
        let mut codec = out.to_vec();
        codec[22] |= 0x7;
        let crc = crc32c::crc32c(&codec[CRC_FROM..]);
        codec[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(decode_batch(&codec, 1 << 20).unwrap_err().code(), 76);
    }

    /// `bytes` with its CRC made right again, so that the decoder gets past it.
    fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
        let crc = crc32c::crc32c(&bytes[CRC_FROM..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn counts_and_lengths_that_cannot_be_true_are_refused() {
        let mut out = BytesMut::new();
        encode_batch(&mut out, 0, &sample(3), Codec::None);
        // A record count of 2^31 - 1 in a few bytes.
        let mut count = out.to_vec();
        count[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        count[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        let error = decode_batch(&resealed(count), 1 << 20).unwrap_err();
        assert_eq!(error.code(), 87, "{error}");
        // Every byte of the records set to extremes, one at a time: an error or a batch,
        // never a panic or a huge allocation.
        for at in HEADER_BYTES..out.len() {
            for value in [0x00, 0x7f, 0x80, 0xff] {
                let mut bytes = out.to_vec();
                bytes[at] = value;
                let _ = decode_batch(&resealed(bytes), 1 << 20);
            }
        }
    }

    #[test]
    fn decompression_stops_at_the_limit() {
        let big = Records {
            timestamps: vec![0],
            keys: BinaryArray::from_iter([None::<Vec<u8>>]),
            values: BinaryArray::from_iter([Some(vec![0u8; 4 << 20])]),
            headers: sample(1).headers,
        };
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let mut out = BytesMut::new();
            encode_batch(&mut out, 0, &big, codec);
            assert!(out.len() < 1 << 20, "{codec:?} compresses zeros");
            let error = decode_batch(&out, 1 << 20).unwrap_err();
            assert_eq!(error, BatchError::TooLarge(1 << 20), "{codec:?}");
        }
    }

    #[test]
    fn java_framed_snappy_is_read() {
        let records = sample(50);
        let mut raw = BytesMut::new();
        encode_batch(&mut raw, 0, &records, Codec::None);
        let plain = &raw[HEADER_BYTES..];
        // Two xerial blocks.
        let (a, b) = plain.split_at(plain.len() / 2);
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&1i32.to_be_bytes());
        framed.extend_from_slice(&1i32.to_be_bytes());
        for block in [a, b] {
            let compressed = snap::raw::Encoder::new().compress_vec(block).unwrap();
            framed.extend_from_slice(&(compressed.len() as i32).to_be_bytes());
            framed.extend_from_slice(&compressed);
        }
        let mut batch = raw[..HEADER_BYTES].to_vec();
        batch[21..23].copy_from_slice(&Codec::Snappy.bits().to_be_bytes());
        batch.extend_from_slice(&framed);
        let length = (batch.len() - 12) as i32;
        batch[8..12].copy_from_slice(&length.to_be_bytes());
        let (_, back) = decode_batch(&resealed(batch), 1 << 20).unwrap();
        assert_eq!(back, records);
    }

    /// kafka-protocol's own record codec (an independent implementation of the format)
    /// reads what this one writes, and this one reads what it writes.
    #[test]
    fn batches_agree_with_an_independent_codec() {
        use kafka_protocol::records::{
            Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
            TimestampType,
        };
        let records = sample(50);
        let theirs: Vec<Record> = (0..records.len())
            .map(|i| {
                let headers = records.headers.value(i);
                let headers = headers
                    .as_any()
                    .downcast_ref::<arrow::array::StructArray>()
                    .unwrap();
                let keys = headers
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .unwrap();
                let values = headers
                    .column(1)
                    .as_any()
                    .downcast_ref::<BinaryArray>()
                    .unwrap();
                Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: 0,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: 77 + i as i64,
                    // (Its encoder starts a new batch where offset - sequence changes.)
                    sequence: i as i32,
                    timestamp: records.timestamps[i],
                    key: records
                        .keys
                        .is_valid(i)
                        .then(|| bytes::Bytes::copy_from_slice(records.keys.value(i))),
                    value: records
                        .values
                        .is_valid(i)
                        .then(|| bytes::Bytes::copy_from_slice(records.values.value(i))),
                    headers: (0..headers.len())
                        .map(|h| {
                            (
                                kafka_protocol::protocol::StrBytes::from_string(
                                    keys.value(h).to_string(),
                                ),
                                values
                                    .is_valid(h)
                                    .then(|| bytes::Bytes::copy_from_slice(values.value(h))),
                            )
                        })
                        .collect(),
                }
            })
            .collect();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        let mut encoded = BytesMut::new();
        RecordBatchEncoder::encode(&mut encoded, &theirs, &options).unwrap();
        let (header, back) = decode_batch(&encoded, 1 << 20).unwrap();
        assert_eq!(header.base_offset, 77);
        assert_eq!(back, records);

        let mut ours = BytesMut::new();
        encode_batch(&mut ours, 77, &records, Codec::None);
        let mut ours = ours.freeze();
        let decoded = RecordBatchDecoder::decode(&mut ours).unwrap();
        let fields = |r: &Record| {
            (
                r.offset,
                r.timestamp,
                r.key.clone(),
                r.value.clone(),
                r.headers.clone(),
            )
        };
        assert_eq!(
            decoded.records.iter().map(fields).collect::<Vec<_>>(),
            theirs.iter().map(fields).collect::<Vec<_>>()
        );
    }
}
