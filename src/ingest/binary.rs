//! PostgreSQL's binary `COPY` format: the stream's framing (a signature, then tuples of
//! length-prefixed fields, then a trailer) and each type's binary value as an Arrow column.
//!
//! A field holds the column type's binary representation, as the client's driver writes it
//! (asyncpg's `copy_records_to_table`, psycopg's `FORMAT BINARY` with `set_types`); a value
//! of another size or form is `22P03`, as PostgreSQL reports it.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanBuilder, PrimitiveBuilder, StringArray, StringBuilder,
};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, IntervalMonthDayNano, IntervalMonthDayNanoType, Time64MicrosecondType,
    TimestampMicrosecondType,
};

use crate::catalog::SqlType;

/// The signature the binary format starts with.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const EPOCH_DAYS: i32 = 10_957;
const EPOCH_MICROS: i64 = EPOCH_DAYS as i64 * 86_400_000_000;

/// What the framing found at the start of the unread input.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Not all of it has arrived yet.
    Incomplete,
    /// The header, `len` bytes long.
    Header { len: usize },
    /// A tuple: its fields (`None` for NULL), `len` bytes long in all.
    Tuple {
        fields: Vec<Option<&'a [u8]>>,
        len: usize,
    },
    /// The trailer: the data ends.
    Trailer,
}

/// The header at the start of `input`, or why it is not one.
pub fn header(input: &[u8]) -> Result<Frame<'_>, String> {
    let fixed = SIGNATURE.len() + 8;
    let compared = input.len().min(SIGNATURE.len());
    if input[..compared] != SIGNATURE[..compared] {
        return Err("COPY file signature not recognized".into());
    }
    if input.len() < fixed {
        return Ok(Frame::Incomplete);
    }
    let flags = be_i32(&input[SIGNATURE.len()..]);
    if flags & (1 << 16) != 0 {
        return Err("COPY data with OIDs is not supported".into());
    }
    if flags & !0xffff & !(1 << 16) != 0 {
        return Err("unrecognized critical flags in COPY file header".into());
    }
    let extension = be_i32(&input[SIGNATURE.len() + 4..]);
    let extension = usize::try_from(extension)
        .map_err(|_| "invalid COPY file header (wrong length)".to_string())?;
    if input.len() < fixed + extension {
        return Ok(Frame::Incomplete);
    }
    Ok(Frame::Header {
        len: fixed + extension,
    })
}

/// The tuple (or trailer) at the start of `input`, which must have `columns` fields.
pub fn tuple(input: &[u8], columns: usize) -> Result<Frame<'_>, String> {
    if input.len() < 2 {
        return Ok(Frame::Incomplete);
    }
    let count = i16::from_be_bytes([input[0], input[1]]);
    if count == -1 {
        return Ok(Frame::Trailer);
    }
    if usize::try_from(count).ok() != Some(columns) {
        return Err(format!("row field count is {count}, expected {columns}"));
    }
    let mut at = 2;
    let mut fields = Vec::with_capacity(columns);
    for _ in 0..columns {
        if input.len() < at + 4 {
            return Ok(Frame::Incomplete);
        }
        let len = be_i32(&input[at..]);
        at += 4;
        if len == -1 {
            fields.push(None);
            continue;
        }
        let len = usize::try_from(len).map_err(|_| format!("invalid field size {len}"))?;
        if input.len() < at + len {
            return Ok(Frame::Incomplete);
        }
        fields.push(Some(&input[at..at + len]));
        at += len;
    }
    Ok(Frame::Tuple { fields, len: at })
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Binary values of a column of `sql_type` as an Arrow column of `target`; on a value that
/// is not that type's binary form, its row. A `numeric` comes back as its text, for the
/// text path to type (`typed` is then false).
pub fn typed_column(
    raw: &BinaryArray,
    sql_type: SqlType,
    target: &DataType,
) -> Result<(ArrayRef, bool), usize> {
    // The first row whose value is not `valid`, as the error.
    let all = |valid: &dyn Fn(&[u8]) -> bool| -> Result<(), usize> {
        match (0..raw.len()).find(|&i| raw.is_valid(i) && !valid(raw.value(i))) {
            Some(row) => Err(row),
            None => Ok(()),
        }
    };
    let fixed = |size: usize| all(&|v| v.len() == size);
    let column: ArrayRef = match (sql_type, target) {
        (SqlType::Boolean, DataType::Boolean) => {
            fixed(1)?;
            let mut out = BooleanBuilder::with_capacity(raw.len());
            for v in raw {
                out.append_option(v.map(|v| v[0] != 0));
            }
            Arc::new(out.finish())
        }
        (SqlType::SmallInt, DataType::Int16) => {
            fixed(2)?;
            primitive::<Int16Type>(raw, |v| i16::from_be_bytes([v[0], v[1]]))
        }
        (SqlType::Integer, DataType::Int32) => {
            fixed(4)?;
            primitive::<Int32Type>(raw, be_i32)
        }
        (SqlType::BigInt, DataType::Int64) => {
            fixed(8)?;
            primitive::<Int64Type>(raw, be_i64)
        }
        (SqlType::Real, DataType::Float32) => {
            fixed(4)?;
            primitive::<Float32Type>(raw, |v| f32::from_bits(be_i32(v) as u32))
        }
        (SqlType::Double, DataType::Float64) => {
            fixed(8)?;
            primitive::<Float64Type>(raw, |v| f64::from_bits(be_i64(v) as u64))
        }
        (SqlType::Date, DataType::Date32) => {
            fixed(4)?;
            let days = |v: &[u8]| be_i32(v).checked_add(EPOCH_DAYS);
            all(&|v| days(v).is_some())?;
            primitive::<Date32Type>(raw, |v| days(v).unwrap_or_default())
        }
        (SqlType::Time, DataType::Time64(_)) => {
            fixed(8)?;
            all(&|v| (0..=86_400_000_000).contains(&be_i64(v)))?;
            primitive::<Time64MicrosecondType>(raw, be_i64)
        }
        (SqlType::Timestamp | SqlType::TimestampTz, DataType::Timestamp(_, zone)) => {
            fixed(8)?;
            let micros = |v: &[u8]| be_i64(v).checked_add(EPOCH_MICROS);
            all(&|v| micros(v).is_some())?;
            let column =
                primitive_array::<TimestampMicrosecondType>(raw, |v| micros(v).unwrap_or_default());
            Arc::new(column.with_timezone_opt(zone.clone()))
        }
        (SqlType::Interval, DataType::Interval(_)) => {
            fixed(16)?;
            // Arrow keeps nanoseconds: a time part beyond ±292 years of them does not fit.
            let nanos = |v: &[u8]| be_i64(v).checked_mul(1000);
            all(&|v| nanos(v).is_some())?;
            primitive::<IntervalMonthDayNanoType>(raw, |v| {
                IntervalMonthDayNano::new(
                    be_i32(&v[12..]),
                    be_i32(&v[8..]),
                    nanos(v).unwrap_or_default(),
                )
            })
        }
        (SqlType::Bytea, DataType::Binary) => Arc::new(raw.clone()),
        (SqlType::Numeric { .. }, _) => {
            let texts = strings(raw, numeric_text)?;
            return Ok((Arc::new(texts), false));
        }
        (SqlType::Jsonb, DataType::Utf8) => Arc::new(strings(raw, |v| match v.split_first() {
            Some((1, text)) => std::str::from_utf8(text).ok().map(str::to_string),
            _ => None,
        })?),
        (SqlType::Uuid, DataType::Utf8) => {
            Arc::new(strings(raw, crate::sql::text_type::uuid_text)?)
        }
        (SqlType::Text | SqlType::Json, DataType::Utf8) => Arc::new(strings(raw, |v| {
            std::str::from_utf8(v).ok().map(str::to_string)
        })?),
        _ => return Err(0),
    };
    Ok((column, true))
}

fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

fn primitive<T: ArrowPrimitiveType>(
    raw: &BinaryArray,
    value: impl Fn(&[u8]) -> T::Native,
) -> ArrayRef {
    Arc::new(primitive_array::<T>(raw, value))
}

fn primitive_array<T: ArrowPrimitiveType>(
    raw: &BinaryArray,
    value: impl Fn(&[u8]) -> T::Native,
) -> arrow::array::PrimitiveArray<T> {
    let mut out = PrimitiveBuilder::<T>::with_capacity(raw.len());
    for v in raw {
        out.append_option(v.map(&value));
    }
    out.finish()
}

fn strings(
    raw: &BinaryArray,
    text: impl Fn(&[u8]) -> Option<String>,
) -> Result<StringArray, usize> {
    let mut out = StringBuilder::with_capacity(raw.len(), raw.values().len());
    for (row, v) in raw.iter().enumerate() {
        match v {
            None => out.append_null(),
            Some(v) => out.append_value(text(v).ok_or(row)?),
        }
    }
    Ok(out.finish())
}

/// A `numeric`'s binary form (digit count, weight, sign, display scale, then base-10000
/// digits) as its text, `NaN` included.
fn numeric_text(v: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<i16> { Some(i16::from_be_bytes([*v.get(i)?, *v.get(i + 1)?])) };
    let ndigits = usize::try_from(word(0)?).ok()?;
    let weight = i32::from(word(2)?);
    let sign = word(4)? as u16;
    let dscale = usize::try_from(word(6)?).ok()?;
    if v.len() != 8 + 2 * ndigits {
        return None;
    }
    let digits: Vec<i16> = (0..ndigits)
        .map(|i| word(8 + 2 * i))
        .collect::<Option<_>>()?;
    if digits.iter().any(|d| !(0..10_000).contains(d)) {
        return None;
    }
    let mut out = String::new();
    match sign {
        0x0000 => {}
        0x4000 => out.push('-'),
        0xC000 => return Some("NaN".into()),
        _ => return None,
    }
    let digit = |i: i32| -> i16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    if weight < 0 {
        out.push('0');
    } else {
        out.push_str(&digit(0).to_string());
        for i in 1..=weight {
            out.push_str(&format!("{:04}", digit(i)));
        }
    }
    if dscale > 0 {
        let mut fraction = String::with_capacity(dscale + 4);
        let mut i = weight + 1;
        while fraction.len() < dscale {
            fraction.push_str(&format!("{:04}", digit(i)));
            i += 1;
        }
        out.push('.');
        out.push_str(&fraction[..dscale]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: i16, weight: i16, sign: u16, dscale: i16, digits: &[i16]) -> Vec<u8> {
        let mut v = vec![];
        for w in [ndigits, weight, sign as i16, dscale] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_read_as_their_text() {
        // As PostgreSQL's numeric_send writes them.
        assert_eq!(
            numeric_text(&numeric(2, 0, 0, 2, &[12, 3400])).unwrap(),
            "12.34"
        );
        assert_eq!(
            numeric_text(&numeric(1, 1, 0x4000, 0, &[1])).unwrap(),
            "-10000"
        );
        assert_eq!(numeric_text(&numeric(1, -1, 0, 4, &[5])).unwrap(), "0.0005");
        assert_eq!(
            numeric_text(&numeric(1, -2, 0, 8, &[7])).unwrap(),
            "0.00000007"
        );
        assert_eq!(numeric_text(&numeric(0, 0, 0, 1, &[])).unwrap(), "0.0");
        assert_eq!(numeric_text(&numeric(0, 0, 0xC000, 0, &[])).unwrap(), "NaN");
        assert!(numeric_text(&numeric(1, 0, 0, 0, &[10_000])).is_none());
        assert!(numeric_text(&[0, 1]).is_none());
    }

    #[test]
    fn values_out_of_range_are_refused_not_clamped() {
        let one = |bytes: Vec<u8>| BinaryArray::from_vec(vec![bytes.as_slice()]);
        let mut interval = i64::MAX.to_be_bytes().to_vec();
        interval.extend_from_slice(&[0; 8]);
        let target = SqlType::Interval.arrow();
        assert_eq!(
            typed_column(&one(interval), SqlType::Interval, &target).err(),
            Some(0)
        );
        let late = (86_400_000_001_i64).to_be_bytes().to_vec();
        let target = SqlType::Time.arrow();
        assert_eq!(
            typed_column(&one(late), SqlType::Time, &target).err(),
            Some(0)
        );
        let noon = (43_200_000_000_i64).to_be_bytes().to_vec();
        assert!(typed_column(&one(noon), SqlType::Time, &target).is_ok());
    }

    #[test]
    fn framing_waits_for_whole_tuples() {
        let mut header = SIGNATURE.to_vec();
        header.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(header_frame(&header[..5]), Frame::Incomplete);
        assert_eq!(header_frame(&header), Frame::Header { len: 19 });
        assert!(super::header(b"PGCOPX\n\xff\r\n\0\0\0\0\0\0\0\0\0").is_err());
        let tuple_bytes = [0, 2, 0, 0, 0, 1, 7, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            super::tuple(&tuple_bytes[..6], 2).unwrap(),
            Frame::Incomplete
        );
        assert_eq!(
            super::tuple(&tuple_bytes, 2).unwrap(),
            Frame::Tuple {
                fields: vec![Some(&[7u8][..]), None],
                len: 11
            }
        );
        assert!(super::tuple(&tuple_bytes, 3).is_err());
        assert_eq!(super::tuple(&[0xff, 0xff], 2).unwrap(), Frame::Trailer);
    }

    fn header_frame(b: &[u8]) -> Frame<'_> {
        super::header(b).unwrap()
    }
}
