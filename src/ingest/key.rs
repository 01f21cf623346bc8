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

/// Several KEY columns as one JSON object per row, exactly as arrow's JSON writer writes it
/// (members in order, NULL members left out). Keys of integers, text, booleans and
/// timestamps — what keys usually hold — are written here directly, each timestamp formatted
/// once per distinct value rather than once per row; other types go through arrow's writer.
fn encode_json(batch: &RecordBatch, columns: &[usize]) -> Result<BinaryArray> {
    let keys = batch
        .project(columns)
        .map_err(|e| Error::Internal(format!("projecting key columns: {e}")))?;
    let members = keys
        .schema()
        .fields()
        .iter()
        .zip(keys.columns())
        .map(|(field, array)| Member::new(field.name(), array))
        .collect::<Option<Result<Vec<_>>>>();
    let Some(members) = members else {
        return encode_json_with_arrow(&keys);
    };
    let mut members = members?;
    let rows = keys.num_rows();
    let mut out = BinaryBuilder::with_capacity(rows, rows * 16 * members.len());
    let mut row = Vec::with_capacity(64);
    for i in 0..rows {
        row.clear();
        row.push(b'{');
        for member in &mut members {
            if member.array.is_null(i) {
                continue;
            }
            if row.len() > 1 {
                row.push(b',');
            }
            row.extend_from_slice(&member.name);
            member.write(i, &mut row);
        }
        row.push(b'}');
        out.append_value(&row);
    }
    Ok(out.finish())
}

/// One member of a JSON key: its quoted name and colon, and how its values are written.
struct Member<'a> {
    name: Vec<u8>,
    array: &'a ArrayRef,
    values: MemberValues<'a>,
}

enum MemberValues<'a> {
    Integer,
    Text,
    Boolean,
    /// Raw timestamps, their formatter, and each distinct value's text once formatted.
    Timestamp {
        raw: Vec<i64>,
        formatter: ArrayFormatter<'a>,
        formatted: std::collections::HashMap<i64, Vec<u8>>,
    },
}

impl<'a> Member<'a> {
    /// `None` for a type this encoder leaves to arrow's writer.
    fn new(name: &str, array: &'a ArrayRef) -> Option<Result<Member<'a>>> {
        let values = match array.data_type() {
            t if t.is_integer() => MemberValues::Integer,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => MemberValues::Text,
            DataType::Boolean => MemberValues::Boolean,
            DataType::Timestamp(_, _) => {
                let raw = match arrow::compute::cast(array, &DataType::Int64) {
                    Ok(raw) => raw.as_primitive::<Int64Type>().values().to_vec(),
                    Err(e) => return Some(Err(Error::Internal(format!("a key timestamp: {e}")))),
                };
                // The options arrow's JSON writer formats temporal values with.
                let options = FormatOptions::new().with_display_error(true);
                match ArrayFormatter::try_new(array.as_ref(), &options) {
                    Ok(formatter) => MemberValues::Timestamp {
                        raw,
                        formatter,
                        formatted: Default::default(),
                    },
                    Err(e) => return Some(Err(Error::Internal(format!("a key timestamp: {e}")))),
                }
            }
            _ => return None,
        };
        Some(Ok(Member {
            name: format!("{}:", serde_json::Value::from(name)).into_bytes(),
            array,
            values,
        }))
    }

    /// Appends the JSON of row `i`'s (non-null) value.
    fn write(&mut self, i: usize, out: &mut Vec<u8>) {
        use std::io::Write;
        let array = self.array;
        match &mut self.values {
            MemberValues::Integer => {
                macro_rules! integer {
                    ($($dt:ident => $t:ty),*) => {
                        match array.data_type() {
                            $(DataType::$dt => {
                                let _ = write!(out, "{}", array.as_primitive::<$t>().value(i));
                            })*
                            _ => unreachable!("an integer member"),
                        }
                    };
                }
                use arrow::datatypes::{Int8Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type};
                integer!(Int8 => Int8Type, Int16 => Int16Type, Int32 => Int32Type,
                    Int64 => Int64Type, UInt8 => UInt8Type, UInt16 => UInt16Type,
                    UInt32 => UInt32Type, UInt64 => UInt64Type);
            }
            MemberValues::Text => {
                let text = match array.data_type() {
                    DataType::Utf8 => array.as_string::<i32>().value(i),
                    DataType::LargeUtf8 => array.as_string::<i64>().value(i),
                    _ => array.as_string_view().value(i),
                };
                // serde_json's string escaping, as arrow's writer uses.
                let _ = serde_json::to_writer(&mut *out, text);
            }
            MemberValues::Boolean => {
                out.extend_from_slice(match array.as_boolean().value(i) {
                    true => b"true",
                    false => b"false",
                });
            }
            MemberValues::Timestamp {
                raw,
                formatter,
                formatted,
            } => {
                let text = formatted.entry(raw[i]).or_insert_with(|| {
                    let mut text = Vec::with_capacity(32);
                    let _ = write!(text, "\"{}\"", formatter.value(i));
                    text
                });
                out.extend_from_slice(text);
            }
        }
    }
}

/// [`encode_json`] by arrow's JSON writer.
fn encode_json_with_arrow(keys: &RecordBatch) -> Result<BinaryArray> {
    let mut buf = Vec::with_capacity(keys.num_rows() * 32);
    {
        let mut writer = arrow::json::LineDelimitedWriter::new(&mut buf);
        writer
            .write(keys)
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
    fn json_keys_are_the_bytes_arrows_writer_makes() {
        use arrow::array::{
            BooleanArray, Float64Array, Int8Array, StringViewArray, TimestampMicrosecondArray,
            TimestampMillisecondArray, TimestampNanosecondArray, TimestampSecondArray, UInt64Array,
        };
        let n = 400;
        let null = |i: usize, every: usize| i % every == every - 1;
        let texts = [
            "plain",
            "quote \" and \\",
            "tab\tnew\nline",
            "ünï €",
            "\u{1}\u{1f}",
            "",
        ];
        let stamps = |i: usize| (i as i64 % 7 - 3) * 86_400_123_457 + (i as i64 % 3) * 1_000;
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "a",
                Arc::new(Int8Array::from_iter(
                    (0..n).map(|i| (!null(i, 5)).then_some((i as i8).wrapping_mul(37))),
                )),
            ),
            (
                "b",
                Arc::new(UInt64Array::from_iter(
                    (0..n).map(|i| (!null(i, 6)).then_some(u64::MAX - i as u64)),
                )),
            ),
            (
                "c \"q\"",
                Arc::new(StringArray::from_iter(
                    (0..n).map(|i| (!null(i, 4)).then_some(texts[i % texts.len()])),
                )),
            ),
            (
                "d",
                Arc::new(StringViewArray::from_iter(
                    (0..n).map(|i| (!null(i, 9)).then_some(texts[i % 5])),
                )),
            ),
            (
                "e",
                Arc::new(BooleanArray::from_iter(
                    (0..n).map(|i| (!null(i, 3)).then_some(i % 2 == 0)),
                )),
            ),
            (
                "s",
                Arc::new(TimestampSecondArray::from_iter(
                    (0..n).map(|i| (!null(i, 7)).then_some(stamps(i) / 1_000_000)),
                )),
            ),
            (
                "ms",
                Arc::new(
                    TimestampMillisecondArray::from_iter(
                        (0..n).map(|i| (!null(i, 8)).then_some(stamps(i) / 1_000)),
                    )
                    .with_timezone("+02:00"),
                ),
            ),
            (
                "us",
                Arc::new(TimestampMicrosecondArray::from_iter(
                    (0..n).map(|i| Some(stamps(i))),
                )),
            ),
            (
                "ns",
                Arc::new(
                    TimestampNanosecondArray::from_iter(
                        (0..n).map(|i| (!null(i, 2)).then_some(stamps(i) * 1_000 + 1)),
                    )
                    .with_timezone("UTC"),
                ),
            ),
            (
                "f",
                Arc::new(Float64Array::from_iter(
                    (0..n).map(|i| Some(i as f64 / 3.0)),
                )),
            ),
        ];
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        let batch =
            RecordBatch::try_new(schema, columns.into_iter().map(|(_, a)| a).collect()).unwrap();
        // Every pair and the whole set but the float; with the float, arrow's writer itself.
        let mut sets: Vec<Vec<usize>> = vec![(0..9).collect(), (0..10).collect()];
        for x in 0..10 {
            for y in 0..10 {
                if x != y {
                    sets.push(vec![x, y]);
                }
            }
        }
        for columns in sets {
            let ours = encode_keys(&batch, &columns).unwrap();
            let theirs = encode_json_with_arrow(&batch.project(&columns).unwrap()).unwrap();
            assert_eq!(ours.len(), n);
            for i in 0..n {
                assert_eq!(
                    String::from_utf8_lossy(ours.value(i)),
                    String::from_utf8_lossy(theirs.value(i)),
                    "columns {columns:?}, row {i}"
                );
            }
        }
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
