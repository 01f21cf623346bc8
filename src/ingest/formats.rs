//! A stream's records as bytes at the edges: its `value_format` (JSON, CSV or raw) for the
//! value columns, and the key encoding of [`super::key`] for the KEY columns. Kafka clients
//! produce and fetch records this way; the log stores them as Arrow.
//!
//! A record's value holds the stream's non-KEY columns (JSON: an object by column name, extra
//! fields ignored, missing ones NULL; CSV: one line of fields in declaration order; raw: the
//! one non-KEY column's bytes); its key holds the KEY columns, encoded as SQL's writes encode
//! them, so a key decodes only if it encodes back to the same bytes.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, RecordBatch, StringArray};
use arrow::compute::kernels::cast::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::key;
use crate::catalog::{StreamDef, ValueFormat};

/// Why one record does not fit a stream: its index in the batch and the reason.
pub type RecordError = (usize, String);

/// The rows (in the stream's declared columns) of records with `keys` and `values`, or
/// why some records do not fit — every record that does not, so a producer learns them all.
pub fn decode(
    stream: &StreamDef,
    keys: &BinaryArray,
    values: &BinaryArray,
) -> Result<RecordBatch, Vec<RecordError>> {
    let n = values.len();
    let fields = stream.value_fields();
    let is_key = |name: &str| stream.key_columns.iter().any(|k| k == name);
    let value_fields: Vec<Field> = fields
        .iter()
        .filter(|f| !is_key(f.name()))
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let value_schema = Arc::new(Schema::new(value_fields));
    let (decoded_values, key_columns) = match (
        decode_values(stream.value_format, &value_schema, values),
        decode_keys(stream, keys),
    ) {
        (Ok(values), Ok(keys)) => (values, keys),
        (values, keys) => {
            let mut errors: Vec<RecordError> = values.err().into_iter().flatten().collect();
            errors.extend(keys.err().into_iter().flatten());
            errors.sort();
            return Err(errors);
        }
    };

    let mut errors = vec![];
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(fields.len());
    let mut from_values = decoded_values.columns().iter();
    let mut from_keys = key_columns.iter();
    for (field, column) in fields.iter().zip(&stream.columns) {
        let array = if is_key(field.name()) {
            from_keys.next().expect("one per KEY column").clone()
        } else {
            from_values.next().expect("one per value column").clone()
        };
        if !column.nullable && array.null_count() > 0 {
            for i in (0..n).filter(|i| array.is_null(*i)) {
                errors.push((
                    i,
                    format!("column \"{}\" is NOT NULL but has no value", field.name()),
                ));
            }
        }
        columns.push(array);
    }
    if !errors.is_empty() {
        errors.sort();
        return Err(errors);
    }
    let schema = Arc::new(Schema::new(
        fields
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    RecordBatch::try_new(schema, columns).map_err(|e| vec![(0, e.to_string())])
}

/// The values of the non-KEY columns of `rows` (a stream's declared columns, in order), as
/// the stream's `value_format` writes them.
pub fn encode_values(stream: &StreamDef, rows: &RecordBatch) -> Result<BinaryArray, String> {
    let keep: Vec<usize> = stream
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| !stream.key_columns.contains(&c.name))
        .map(|(i, _)| i)
        .collect();
    let values = rows.project(&keep).map_err(|e| e.to_string())?;
    let n = values.num_rows();
    match stream.value_format {
        ValueFormat::Raw => {
            let column = values.column(0);
            match column.data_type() {
                DataType::Binary => Ok(column.as_binary::<i32>().clone()),
                _ => {
                    let text = cast(column, &DataType::Utf8).map_err(|e| e.to_string())?;
                    let text = text.as_string::<i32>();
                    Ok(text.iter().map(|v| v.map(str::as_bytes)).collect())
                }
            }
        }
        ValueFormat::Json => {
            let mut out = Vec::with_capacity(n * 64);
            {
                let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
                writer
                    .write(&values)
                    .and_then(|()| writer.finish())
                    .map_err(|e| e.to_string())?;
            }
            lines(&out, n)
        }
        ValueFormat::Csv => {
            let mut out = Vec::with_capacity(n * 64);
            {
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(false)
                    .build(&mut out);
                writer.write(&values).map_err(|e| e.to_string())?;
            }
            csv_lines(&out, n)
        }
    }
}

/// One value per line of `out` (JSON escapes newlines inside strings).
fn lines(out: &[u8], n: usize) -> Result<BinaryArray, String> {
    let array: BinaryArray = out.split(|b| *b == b'\n').take(n).map(Some).collect();
    if array.len() != n {
        return Err(format!("{} lines for {n} rows", array.len()));
    }
    Ok(array)
}

/// One value per CSV record of `out`: a newline inside quotes is part of a field.
fn csv_lines(out: &[u8], n: usize) -> Result<BinaryArray, String> {
    let mut values = Vec::with_capacity(n);
    let (mut start, mut quoted) = (0, false);
    for (i, b) in out.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => {
                values.push(&out[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if values.len() != n {
        return Err(format!("{} CSV records for {n} rows", values.len()));
    }
    Ok(values.into_iter().map(Some).collect())
}

fn decode_values(
    format: ValueFormat,
    schema: &SchemaRef,
    values: &BinaryArray,
) -> Result<RecordBatch, Vec<RecordError>> {
    let n = values.len();
    match format {
        ValueFormat::Raw => {
            let field = schema.field(0);
            let column: ArrayRef = match field.data_type() {
                DataType::Binary => Arc::new(values.clone()),
                _ => {
                    let mut errors = vec![];
                    let text: StringArray = (0..n)
                        .map(|i| {
                            if values.is_null(i) {
                                return None;
                            }
                            match std::str::from_utf8(values.value(i)) {
                                Ok(text) => Some(text),
                                Err(e) => {
                                    errors.push((i, format!("the value is not UTF-8: {e}")));
                                    None
                                }
                            }
                        })
                        .collect();
                    if !errors.is_empty() {
                        return Err(errors);
                    }
                    Arc::new(text)
                }
            };
            RecordBatch::try_new(schema.clone(), vec![column]).map_err(|e| vec![(0, e.to_string())])
        }
        ValueFormat::Json | ValueFormat::Csv => {
            // Fast path: every value at once; on failure, one at a time to name the records.
            if let Ok(batch) = decode_text(format, schema, values, 0..n) {
                return Ok(batch);
            }
            let mut errors = vec![];
            for i in 0..n {
                if let Err(why) = decode_text(format, schema, values, i..i + 1) {
                    errors.push((i, why));
                }
            }
            if errors.is_empty() {
                errors.push((0, "the values do not decode together".into()));
            }
            Err(errors)
        }
    }
}

/// Feeds all of `text` to an Arrow JSON or CSV decoder and flushes it.
macro_rules! decode_all {
    ($decoder:ident, $text:expr) => {{
        let mut text: &[u8] = $text;
        while !text.is_empty() {
            let used = $decoder.decode(text).map_err(|e| e.to_string())?;
            if used == 0 {
                return Err("the decoder stopped before the end of the values".into());
            }
            text = &text[used..];
        }
        $decoder.flush().map_err(|e| e.to_string())?
    }};
}

/// Decodes `values[range]`, one row each (a NULL value is a row of NULLs).
fn decode_text(
    format: ValueFormat,
    schema: &SchemaRef,
    values: &BinaryArray,
    range: std::ops::Range<usize>,
) -> Result<RecordBatch, String> {
    let n = range.len();
    let mut text = Vec::with_capacity(values.value_data().len() + n * 4);
    for i in range {
        if values.is_null(i) {
            match format {
                ValueFormat::Json => text.extend_from_slice(b"{}"),
                _ => text.extend(std::iter::repeat_n(b',', schema.fields().len() - 1)),
            }
        } else {
            let value = values.value(i);
            let value = value.strip_suffix(b"\n").unwrap_or(value);
            if format == ValueFormat::Csv && value.is_empty() && schema.fields().len() == 1 {
                text.extend_from_slice(b"\"\"");
            } else {
                text.extend_from_slice(value);
            }
        }
        text.push(b'\n');
    }
    let batch = match format {
        ValueFormat::Json => {
            let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
                .with_batch_size(n.max(1))
                .build_decoder()
                .map_err(|e| e.to_string())?;
            decode_all!(decoder, &text)
        }
        _ => {
            let mut decoder = arrow::csv::ReaderBuilder::new(schema.clone())
                .with_header(false)
                .with_batch_size(n.max(1))
                .build_decoder();
            decode_all!(decoder, &text)
        }
    };
    match batch {
        Some(batch) if batch.num_rows() == n => Ok(batch),
        Some(batch) => Err(format!(
            "{} values decode to {} rows: a value must be one {}",
            n,
            batch.num_rows(),
            if format == ValueFormat::Json {
                "JSON object"
            } else {
                "CSV record"
            }
        )),
        None => Err("no value decodes".into()),
    }
}

/// The KEY columns of records with `keys`, in declaration order; a key that does not encode
/// back to its own bytes does not belong to this stream.
fn decode_keys(stream: &StreamDef, keys: &BinaryArray) -> Result<Vec<ArrayRef>, Vec<RecordError>> {
    let n = keys.len();
    let fields: Vec<Field> = stream
        .key_columns
        .iter()
        .map(|k| {
            let (_, column) = stream.column(k).expect("KEY columns are columns");
            Field::new(k, column.sql_type.arrow(), true)
        })
        .collect();
    let columns: Vec<ArrayRef> = match fields.as_slice() {
        [] => return Ok(vec![]),
        [field] => vec![decode_single_key(field.data_type(), keys)?],
        _ => {
            let schema = Arc::new(Schema::new(fields.clone()));
            let mut errors = vec![];
            let mut text = Vec::with_capacity(keys.value_data().len() + n);
            for i in 0..n {
                if keys.is_null(i) {
                    text.extend_from_slice(b"{}");
                } else if std::str::from_utf8(keys.value(i)).is_err()
                    || keys.value(i).contains(&b'\n')
                {
                    errors.push((i, "a key that is not one line of JSON".to_string()));
                    text.extend_from_slice(b"{}");
                } else {
                    text.extend_from_slice(keys.value(i));
                }
                text.push(b'\n');
            }
            if !errors.is_empty() {
                return Err(errors);
            }
            let batch = decode_text(
                ValueFormat::Json,
                &schema,
                &BinaryArray::from_iter_values(text.split(|b| *b == b'\n').take(n)),
                0..n,
            )
            .map_err(|why| vec![(0, format!("the keys do not decode: {why}"))])?;
            batch.columns().to_vec()
        }
    };
    // A key must be what SQL would write for these columns, or SQL and Kafka disagree.
    let schema = Arc::new(Schema::new(fields));
    let rows =
        RecordBatch::try_new(schema, columns.clone()).map_err(|e| vec![(0, e.to_string())])?;
    let indices: Vec<usize> = (0..rows.num_columns()).collect();
    let again = key::encode_keys(&rows, &indices).map_err(|e| vec![(0, e.to_string())])?;
    let errors: Vec<RecordError> = (0..n)
        .filter(|i| keys.is_valid(*i) && (again.is_null(*i) || again.value(*i) != keys.value(*i)))
        .map(|i| {
            (
                i,
                format!(
                    "the key does not encode KEY column(s) {}",
                    stream.key_columns.join(", ")
                ),
            )
        })
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(columns)
}

fn decode_single_key(
    data_type: &DataType,
    keys: &BinaryArray,
) -> Result<ArrayRef, Vec<RecordError>> {
    let n = keys.len();
    macro_rules! fixed {
        ($array:ty, $native:ty) => {{
            const WIDTH: usize = std::mem::size_of::<$native>();
            let mut errors = vec![];
            let array: $array = (0..n)
                .map(|i| {
                    if keys.is_null(i) {
                        return None;
                    }
                    match <[u8; WIDTH]>::try_from(keys.value(i)) {
                        Ok(bytes) => Some(<$native>::from_be_bytes(bytes)),
                        Err(_) => {
                            errors.push((
                                i,
                                format!(
                                    "a key of {} bytes for a {}-byte number",
                                    keys.value(i).len(),
                                    WIDTH
                                ),
                            ));
                            None
                        }
                    }
                })
                .collect();
            if !errors.is_empty() {
                return Err(errors);
            }
            Arc::new(array) as ArrayRef
        }};
    }
    Ok(match data_type {
        DataType::Int16 => fixed!(arrow::array::Int16Array, i16),
        DataType::Int32 => fixed!(arrow::array::Int32Array, i32),
        DataType::Int64 => fixed!(arrow::array::Int64Array, i64),
        DataType::Float32 => fixed!(arrow::array::Float32Array, f32),
        DataType::Float64 => fixed!(arrow::array::Float64Array, f64),
        DataType::Binary => Arc::new(keys.clone()),
        DataType::Boolean => {
            let array: arrow::array::BooleanArray = (0..n)
                .map(|i| keys.is_valid(i).then(|| keys.value(i) == [1]))
                .collect();
            Arc::new(array)
        }
        other => {
            // UTF-8 text, or a type keyed by its text form.
            let mut errors = vec![];
            let text: StringArray = (0..n)
                .map(|i| {
                    if keys.is_null(i) {
                        return None;
                    }
                    std::str::from_utf8(keys.value(i)).map_or_else(
                        |_| {
                            errors.push((i, "a key that is not UTF-8".to_string()));
                            None
                        },
                        Some,
                    )
                })
                .collect();
            if !errors.is_empty() {
                return Err(errors);
            }
            if *other == DataType::Utf8 {
                Arc::new(text)
            } else {
                let options = arrow::compute::CastOptions {
                    safe: true,
                    ..Default::default()
                };
                arrow::compute::cast_with_options(&text, other, &options)
                    .map_err(|e| vec![(0, format!("the keys do not decode: {e}"))])?
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ColumnDef, SqlType};

    fn clicks(format: ValueFormat) -> StreamDef {
        StreamDef {
            name: "clicks".into(),
            kind: crate::catalog::StreamKind::Stream,
            topic: "clicks".into(),
            columns: vec![
                ColumnDef {
                    name: "user_id".into(),
                    sql_type: SqlType::BigInt,
                    nullable: true,
                },
                ColumnDef {
                    name: "url".into(),
                    sql_type: SqlType::Text,
                    nullable: false,
                },
            ],
            key_columns: vec!["user_id".into()],
            value_format: format,
            timestamp_column: None,
            watermark: None,
            late_data_topic: None,
            access: Default::default(),
        }
    }

    fn key(id: i64) -> Vec<u8> {
        id.to_be_bytes().to_vec()
    }

    #[test]
    fn json_records_decode_and_encode_back() {
        let stream = clicks(ValueFormat::Json);
        let keys = BinaryArray::from_iter([Some(key(7)), None]);
        let values = BinaryArray::from_iter_values([
            &br#"{"url":"/a","extra":1}"#[..],
            br#"{"url":"/b\nc"}"#,
        ]);
        let rows = decode(&stream, &keys, &values).unwrap();
        assert_eq!(rows.num_rows(), 2);
        assert_eq!(
            rows.column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            7
        );
        assert!(rows.column(0).is_null(1));
        assert_eq!(rows.column(1).as_string::<i32>().value(1), "/b\nc");
        let encoded = encode_values(&stream, &rows).unwrap();
        assert_eq!(encoded.value(0), br#"{"url":"/a"}"#);
        assert_eq!(encoded.value(1), br#"{"url":"/b\nc"}"#);
    }

    #[test]
    fn every_record_that_does_not_fit_is_named() {
        let stream = clicks(ValueFormat::Json);
        let keys = BinaryArray::from_iter([
            Some(key(1)),
            Some(b"abc".to_vec()),
            Some(key(3)),
            Some(key(4)),
        ]);
        let values = BinaryArray::from_iter_values([
            &br#"{"url":"/a"}"#[..],
            br#"{"url":"/b"}"#,
            br#"not json"#,
            br#"{"url":null}"#,
        ]);
        let errors = decode(&stream, &keys, &values).unwrap_err();
        assert_eq!(
            errors.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![1, 2],
            "{errors:?}"
        );
        let values = BinaryArray::from_iter_values([
            &br#"{"url":"/a"}"#[..],
            br#"{"url":"/b"}"#,
            br#"{"url":"/c"}"#,
            br#"{"url":null}"#,
        ]);
        let errors = decode(&stream, &keys, &values).unwrap_err();
        assert_eq!(
            errors.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![1],
            "{errors:?}"
        );
        let keys = BinaryArray::from_iter([Some(key(1)), Some(key(2)), Some(key(3)), Some(key(4))]);
        let errors = decode(&stream, &keys, &values).unwrap_err();
        assert_eq!(
            errors,
            vec![(3, "column \"url\" is NOT NULL but has no value".into())]
        );
    }

    #[test]
    fn csv_and_raw_values() {
        let stream = clicks(ValueFormat::Csv);
        let keys = BinaryArray::from_iter([Some(key(1)), Some(key(2))]);
        let values = BinaryArray::from_iter_values([&b"/a"[..], b"\"/b,\nc\""]);
        let rows = decode(&stream, &keys, &values).unwrap();
        assert_eq!(rows.column(1).as_string::<i32>().value(1), "/b,\nc");
        let encoded = encode_values(&stream, &rows).unwrap();
        assert_eq!(encoded.value(0), b"/a");
        assert_eq!(encoded.value(1), b"\"/b,\nc\"");

        let stream = clicks(ValueFormat::Raw);
        let values = BinaryArray::from_iter_values([&b"/a"[..], b"{not parsed}"]);
        let rows = decode(&stream, &keys, &values).unwrap();
        assert_eq!(rows.column(1).as_string::<i32>().value(1), "{not parsed}");
        let bad = BinaryArray::from_iter_values([&b"/a"[..], b"\xff"]);
        assert_eq!(decode(&stream, &keys, &bad).unwrap_err()[0].0, 1);
    }
}
