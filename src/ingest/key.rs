//! Record keys and partition choice, compatible with Kafka's default partitioner.
//!
//! A stream's KEY columns form the record key. One KEY column is encoded as Kafka's standard
//! serializers would encode it (big-endian integers and floats, UTF-8 text, raw bytes), so a
//! Kafka producer keyed by the same value picks the same partition; other types use their
//! ISO text form. Several KEY columns form a JSON object, as ksqlDB's JSON key format.
//! The partition of a keyed record is `murmur2(key) & 0x7fffffff % partitions`, Kafka's
//! `DefaultPartitioner`; records without a key are spread round-robin.

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::{Error, Result};

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h: u32 = SEED ^ (length as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for `key`.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    ((murmur2(key) & 0x7fff_ffff) as u32) % partitions
}

/// The record keys of `batch` built from the columns at `key_columns`; null where the key is
/// null (one NULL key column) or there are no key columns.
pub fn encode_keys(batch: &RecordBatch, key_columns: &[usize]) -> Result<BinaryArray> {
    let rows = batch.num_rows();
    match key_columns {
        [] => Ok(BinaryArray::new_null(rows)),
        [column] => encode_single(batch.column(*column)),
        columns => encode_json(batch, columns),
    }
}

fn encode_single(array: &ArrayRef) -> Result<BinaryArray> {
    let rows = array.len();
    let mut out = BinaryBuilder::with_capacity(rows, rows * 8);
    macro_rules! fixed {
        ($t:ty) => {{
            let values = array.as_primitive::<$t>();
            for i in 0..rows {
                if values.is_null(i) {
                    out.append_null();
                } else {
                    out.append_value(values.value(i).to_be_bytes());
                }
            }
        }};
    }
    match array.data_type() {
        DataType::Int16 => fixed!(Int16Type),
        DataType::Int32 => fixed!(Int32Type),
        DataType::Int64 => fixed!(Int64Type),
        DataType::Float32 => fixed!(Float32Type),
        DataType::Float64 => fixed!(Float64Type),
        DataType::Utf8 => {
            let values = array.as_string::<i32>();
            for i in 0..rows {
                if values.is_null(i) {
                    out.append_null();
                } else {
                    out.append_value(values.value(i).as_bytes());
                }
            }
        }
        DataType::Binary => return Ok(array.as_binary::<i32>().clone()),
        DataType::Boolean => {
            let values = array.as_boolean();
            for i in 0..rows {
                if values.is_null(i) {
                    out.append_null();
                } else {
                    out.append_value([values.value(i) as u8]);
                }
            }
        }
        _ => {
            let options = FormatOptions::default();
            let formatter = ArrayFormatter::try_new(array.as_ref(), &options)
                .map_err(|e| Error::Internal(format!("formatting a key: {e}")))?;
            for i in 0..rows {
                if array.is_null(i) {
                    out.append_null();
                } else {
                    out.append_value(formatter.value(i).to_string().as_bytes());
                }
            }
        }
    }
    Ok(out.finish())
}

fn encode_json(batch: &RecordBatch, columns: &[usize]) -> Result<BinaryArray> {
    let keys = batch
        .project(columns)
        .map_err(|e| Error::Internal(format!("projecting key columns: {e}")))?;
    let mut buf = Vec::with_capacity(keys.num_rows() * 32);
    {
        let mut writer = arrow::json::LineDelimitedWriter::new(&mut buf);
        writer
            .write(&keys)
            .and_then(|()| writer.finish())
            .map_err(|e| Error::Internal(format!("encoding a JSON key: {e}")))?;
    }
    let lines = buf.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let array = BinaryArray::from_iter_values(lines);
    if array.len() != keys.num_rows() {
        return Err(Error::Internal("JSON key encoder lost rows".into()));
    }
    Ok(array)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn murmur2_matches_kafka() {
        // Kafka's UtilsTest.testMurmur2 vectors.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn single_key_columns_use_kafka_serializer_bytes() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None])),
                Arc::new(StringArray::from(vec![Some("ab"), Some("c")])),
            ],
        )
        .unwrap();
        let ids = encode_keys(&batch, &[0]).unwrap();
        assert_eq!(ids.value(0), &[0, 0, 0, 0, 0, 0, 0, 1]);
        assert!(ids.is_null(1));
        let names = encode_keys(&batch, &[1]).unwrap();
        assert_eq!(names.value(0), b"ab");
        let both = encode_keys(&batch, &[0, 1]).unwrap();
        assert_eq!(both.value(0), br#"{"id":1,"name":"ab"}"#);
        assert_eq!(both.value(1), br#"{"name":"c"}"#);
        assert_eq!(encode_keys(&batch, &[]).unwrap().null_count(), 2);
    }

    #[test]
    fn partitions_spread_and_stay_in_range() {
        let mut counts = [0u32; 4];
        for i in 0..10_000u64 {
            let p = partition_for_key(&i.to_be_bytes(), 4);
            counts[p as usize] += 1;
        }
        assert!(counts.iter().all(|c| *c > 2_000), "{counts:?}");
    }
}
