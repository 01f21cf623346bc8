//! Values as PostgreSQL writes them. arrow-pg encodes most types well; floats, times and
//! intervals it writes differently from PostgreSQL (`10.0`, `10:00:00.000000`, a NULL
//! interval as `00:00:00`). Those columns are turned into PostgreSQL's text here before they
//! are encoded (or, for intervals in binary, into PostgreSQL's binary form), so every client
//! reads what it would read from PostgreSQL.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, RecordBatch, StringBuilder, TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Field, Float32Type, Float64Type, IntervalDayTimeType, IntervalMonthDayNanoType,
    IntervalUnit, IntervalYearMonthType, Schema, Time64MicrosecondType, TimeUnit,
};
use chrono::{DateTime, Datelike, NaiveDateTime, Offset, TimeZone, Timelike};
use pgwire::api::Type;
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};

use crate::sql::text_type::TextType;

/// How the session wants values written (its `extra_float_digits` and `TimeZone`).
#[derive(Debug, Clone)]
pub struct TextOptions {
    pub extra_float_digits: i8,
    pub time_zone: Option<arrow::array::timezone::Tz>,
}

impl Default for TextOptions {
    fn default() -> Self {
        TextOptions {
            extra_float_digits: 1,
            time_zone: None,
        }
    }
}

/// `batch` with the columns PostgreSQL writes differently from arrow-pg replaced by their
/// PostgreSQL form, for the formats `fields` ask for, and the fields to encode it with. The
/// column types the client was told of (`fields`) stay as they are, but an array written
/// here as PostgreSQL's text is encoded as text, which pgwire would quote as one element.
pub fn for_wire(
    batch: RecordBatch,
    fields: &Arc<Vec<FieldInfo>>,
    options: &TextOptions,
) -> PgWireResult<(RecordBatch, Arc<Vec<FieldInfo>>)> {
    let schema = batch.schema();
    let mut columns: Option<Vec<ArrayRef>> = None;
    let mut new_fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    let mut encoding: Option<Vec<FieldInfo>> = None;
    for (i, field) in schema.fields().iter().enumerate() {
        let binary = fields.get(i).map(FieldInfo::format) == Some(FieldFormat::Binary);
        let column = batch.column(i);
        let replaced = if binary {
            match TextType::of(field) {
                Some(TextType::Jsonb) => Some(jsonb_binary(column)?),
                Some(TextType::Uuid) => Some(uuid_binary(column)?),
                _ if is_decimal(field.data_type()) => Some(numeric_binary(column)?),
                _ => interval_binary(column)?,
            }
        } else {
            text(column, options)?
        };
        if let Some(replaced) = replaced {
            if let (DataType::List(_), Some(info)) = (field.data_type(), fields.get(i)) {
                encoding.get_or_insert_with(|| fields.to_vec())[i] = FieldInfo::new(
                    info.name().to_string(),
                    info.table_id(),
                    info.column_id(),
                    Type::TEXT,
                    info.format(),
                )
                .with_format_options(info.format_options().clone());
            }
            new_fields[i] = Arc::new(Field::new(field.name(), replaced.data_type().clone(), true));
            columns.get_or_insert_with(|| batch.columns().to_vec())[i] = replaced;
        }
    }
    let encoding = encoding.map_or_else(|| fields.clone(), Arc::new);
    match columns {
        None => Ok((batch, encoding)),
        Some(columns) => RecordBatch::try_new(Arc::new(Schema::new(new_fields)), columns)
            .map(|batch| (batch, encoding))
            .map_err(|e| PgWireError::ApiError(Box::new(e))),
    }
}

/// A list column as PostgreSQL's text of its arrays (`{1,2}`, `{"a b",NULL}`, `{t,f}`):
/// what a cast of an array to `text` gives.
pub fn array_text(column: &ArrayRef) -> PgWireResult<ArrayRef> {
    let lists = column
        .as_list_opt::<i32>()
        .ok_or_else(|| api_error(format!("{} is not an array", column.data_type())))?;
    let values = lists.values();
    let elements = match text(values, &TextOptions::default())? {
        Some(elements) => elements,
        None => match values.data_type() {
            DataType::Boolean => {
                let booleans = values.as_boolean();
                Arc::new(map_strings(values, |i| {
                    if booleans.value(i) { "t" } else { "f" }.to_string()
                }))
            }
            DataType::List(_) => array_text(values)?,
            _ => cast(values, &DataType::Utf8).map_err(api_error)?,
        },
    };
    let elements = elements.as_string::<i32>();
    let offsets = lists.value_offsets();
    let nested = matches!(values.data_type(), DataType::List(_));
    Ok(Arc::new(map_strings(column, |i| {
        let range = offsets[i] as usize..offsets[i + 1] as usize;
        let elements = range.map(|j| elements.is_valid(j).then(|| elements.value(j)));
        match nested {
            // An array of arrays is one of more dimensions: `{{1,2},{3,4}}`.
            true => {
                let inner: Vec<&str> = elements.map(|e| e.unwrap_or("NULL")).collect();
                format!("{{{}}}", inner.join(","))
            }
            false => array_literal(elements),
        }
    })))
}

/// The column as PostgreSQL's text, if arrow-pg would write it differently.
fn text(column: &ArrayRef, options: &TextOptions) -> PgWireResult<Option<ArrayRef>> {
    let strings = match column.data_type() {
        DataType::Float64 => {
            let values = column.as_primitive::<Float64Type>();
            map_strings(column, |i| {
                float8(values.value(i), options.extra_float_digits)
            })
        }
        DataType::Float32 => {
            let values = column.as_primitive::<Float32Type>();
            map_strings(column, |i| {
                float4(values.value(i), options.extra_float_digits)
            })
        }
        DataType::Timestamp(_, zone) => {
            let micros = cast(
                column,
                &DataType::Timestamp(TimeUnit::Microsecond, zone.clone()),
            )
            .map_err(api_error)?;
            let micros = micros
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .ok_or_else(|| api_error("timestamp cast"))?;
            match zone {
                None => map_strings(column, |i| timestamp::<chrono::Utc>(micros.value(i), None)),
                Some(zone) => {
                    let zone = match &options.time_zone {
                        Some(session) => *session,
                        None => zone.parse().map_err(api_error)?,
                    };
                    map_strings(column, |i| timestamp(micros.value(i), Some(&zone)))
                }
            }
        }
        DataType::Time32(_) | DataType::Time64(_) => {
            let micros =
                cast(column, &DataType::Time64(TimeUnit::Microsecond)).map_err(api_error)?;
            let micros = micros.as_primitive::<Time64MicrosecondType>();
            map_strings(column, |i| {
                let mut out = String::new();
                clock(&mut out, micros.value(i), false);
                out
            })
        }
        DataType::Interval(_) | DataType::Duration(_) => match intervals(column)? {
            Some(parts) => map_strings(column, |i| interval(parts[i])),
            None => return Ok(None),
        },
        // Decimals of any precision (arrow-pg's go through a 28-digit decimal).
        data_type if is_decimal(data_type) => {
            return Ok(Some(cast(column, &DataType::Utf8).map_err(api_error)?));
        }
        DataType::List(_) => {
            let lists = column.as_list::<i32>();
            let Some(elements) = text(lists.values(), options)? else {
                return Ok(None);
            };
            let elements = elements.as_string::<i32>();
            let offsets = lists.value_offsets();
            map_strings(column, |i| {
                let range = offsets[i] as usize..offsets[i + 1] as usize;
                array_literal(range.map(|j| elements.is_valid(j).then(|| elements.value(j))))
            })
        }
        _ => return Ok(None),
    };
    Ok(Some(Arc::new(strings)))
}

fn is_decimal(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Decimal128(..) | DataType::Decimal256(..)
    )
}

/// A decimal column in PostgreSQL's binary `numeric` form: the digits in base 10,000 with
/// the weight of the first, the sign and the scale (arrow-pg's goes through a 28-digit
/// decimal, which larger values overflow).
fn numeric_binary(column: &ArrayRef) -> PgWireResult<ArrayRef> {
    binary_of_text(column, |text| Ok(numeric_bytes(text)))
}

/// PostgreSQL's binary `numeric` of a decimal's text (`-12.50`).
fn numeric_bytes(text: &str) -> Vec<u8> {
    const NEGATIVE: u16 = 0x4000;
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => (NEGATIVE, rest),
        None => (0, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let scale = fraction.len() as u16;
    // Base-10,000 groups: the whole part's from the point leftwards, the fraction's
    // rightwards, each padded with zeros to four digits.
    let group = |four: &[u8]| four.iter().fold(0i16, |n, d| n * 10 + i16::from(d - b'0'));
    let pad = (4 - whole.len() % 4) % 4;
    let whole: Vec<u8> = std::iter::repeat_n(b'0', pad)
        .chain(whole.bytes())
        .collect();
    let mut fraction: Vec<u8> = fraction.bytes().collect();
    fraction.resize(fraction.len().div_ceil(4) * 4, b'0');
    let mut groups: Vec<i16> = whole
        .chunks(4)
        .chain(fraction.chunks(4))
        .map(group)
        .collect();
    let mut weight = (whole.len() / 4) as i16 - 1;
    let leading = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..leading);
    weight -= leading as i16;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    let (weight, sign) = if groups.is_empty() {
        (0, 0)
    } else {
        (weight, sign)
    };
    let mut bytes = Vec::with_capacity(8 + 2 * groups.len());
    bytes.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    bytes.extend_from_slice(&weight.to_be_bytes());
    bytes.extend_from_slice(&sign.to_be_bytes());
    bytes.extend_from_slice(&scale.to_be_bytes());
    for g in groups {
        bytes.extend_from_slice(&g.to_be_bytes());
    }
    bytes
}

/// An interval column in PostgreSQL's binary form (microseconds, days, months), which
/// arrow-pg writes for NULLs too.
fn interval_binary(column: &ArrayRef) -> PgWireResult<Option<ArrayRef>> {
    let Some(parts) = intervals(column)? else {
        return Ok(None);
    };
    let mut out = BinaryBuilder::new();
    for (i, (months, days, micros)) in parts.into_iter().enumerate() {
        if column.is_null(i) {
            out.append_null();
        } else {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&micros.to_be_bytes());
            bytes[8..12].copy_from_slice(&days.to_be_bytes());
            bytes[12..].copy_from_slice(&months.to_be_bytes());
            out.append_value(bytes);
        }
    }
    Ok(Some(Arc::new(out.finish())))
}

/// A `jsonb` column in PostgreSQL's binary form: a version byte (1), then the text.
fn jsonb_binary(column: &ArrayRef) -> PgWireResult<ArrayRef> {
    binary_of_text(column, |text| {
        let mut bytes = Vec::with_capacity(text.len() + 1);
        bytes.push(1);
        bytes.extend_from_slice(text.as_bytes());
        Ok(bytes)
    })
}

/// A `uuid` column in PostgreSQL's binary form, 16 bytes.
fn uuid_binary(column: &ArrayRef) -> PgWireResult<ArrayRef> {
    binary_of_text(column, |text| {
        crate::sql::text_type::uuid_bytes(text)
            .map(Vec::from)
            .ok_or_else(|| api_error(format!("not a uuid: {text}")))
    })
}

/// A column's binary form made from each value's text, NULLs kept.
fn binary_of_text(
    column: &ArrayRef,
    encode: impl Fn(&str) -> PgWireResult<Vec<u8>>,
) -> PgWireResult<ArrayRef> {
    let texts = cast(column, &DataType::Utf8).map_err(api_error)?;
    let mut out = BinaryBuilder::new();
    for text in texts.as_string::<i32>() {
        match text {
            None => out.append_null(),
            Some(text) => out.append_value(encode(text)?),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// Each row of an interval or duration column as PostgreSQL's (months, days, microseconds).
fn intervals(column: &ArrayRef) -> PgWireResult<Option<Vec<(i32, i32, i64)>>> {
    let rows = 0..column.len();
    Ok(Some(match column.data_type() {
        DataType::Interval(IntervalUnit::YearMonth) => {
            let values = column.as_primitive::<IntervalYearMonthType>();
            rows.map(|i| (values.value(i), 0, 0)).collect()
        }
        DataType::Interval(IntervalUnit::DayTime) => {
            let values = column.as_primitive::<IntervalDayTimeType>();
            rows.map(|i| {
                let v = values.value(i);
                (0, v.days, i64::from(v.milliseconds) * 1000)
            })
            .collect()
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let values = column.as_primitive::<IntervalMonthDayNanoType>();
            rows.map(|i| {
                let v = values.value(i);
                (v.months, v.days, v.nanoseconds / 1000)
            })
            .collect()
        }
        DataType::Duration(_) => {
            let micros =
                cast(column, &DataType::Duration(TimeUnit::Microsecond)).map_err(api_error)?;
            let micros = micros.as_primitive::<arrow::datatypes::DurationMicrosecondType>();
            // As PostgreSQL's difference of timestamps: whole days, then the time.
            const DAY: i64 = 86_400_000_000;
            rows.map(|i| {
                let m = micros.value(i);
                (0, (m / DAY) as i32, m % DAY)
            })
            .collect()
        }
        _ => return Ok(None),
    }))
}

fn map_strings(column: &ArrayRef, value: impl Fn(usize) -> String) -> arrow::array::StringArray {
    let mut out = StringBuilder::with_capacity(column.len(), column.len() * 8);
    for i in 0..column.len() {
        if column.is_null(i) {
            out.append_null();
        } else {
            out.append_value(value(i));
        }
    }
    out.finish()
}

/// PostgreSQL's text of a one-dimensional array: `{1.5,NULL,"a b"}`, an element quoted when
/// it is empty, is `NULL` or holds a space, a brace, a comma, a quote or a backslash.
fn array_literal<'a>(elements: impl Iterator<Item = Option<&'a str>>) -> String {
    let mut out = String::from("{");
    for (n, element) in elements.enumerate() {
        if n > 0 {
            out.push(',');
        }
        match element {
            None => out.push_str("NULL"),
            Some(e)
                if e.is_empty()
                    || e.eq_ignore_ascii_case("null")
                    || e.chars()
                        .any(|c| c.is_ascii_whitespace() || "{},\"\\".contains(c)) =>
            {
                out.push('"');
                for c in e.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
            Some(e) => out.push_str(e),
        }
    }
    out.push('}');
    out
}

fn api_error(e: impl std::fmt::Display) -> PgWireError {
    PgWireError::ApiError(e.to_string().into())
}

/// A `double precision` as PostgreSQL writes it: the shortest text that reads back as the
/// same value, in positional notation for decimal exponents -4 to 14 and as `1e+15`
/// otherwise; with `extra_float_digits` of 0 or less, rounded to 15 plus that many digits.
pub fn float8(v: f64, extra_float_digits: i8) -> String {
    float(
        v,
        v.is_nan(),
        v.is_infinite(),
        extra_float_digits,
        15,
        |p| match p {
            None => format!("{v:e}"),
            Some(p) => format!("{v:.p$e}"),
        },
    )
}

/// A `real`, as [`float8`] with 6 digits and exponents -4 to 5 positional.
pub fn float4(v: f32, extra_float_digits: i8) -> String {
    float(
        v.into(),
        v.is_nan(),
        v.is_infinite(),
        extra_float_digits,
        6,
        |p| match p {
            None => format!("{v:e}"),
            Some(p) => format!("{v:.p$e}"),
        },
    )
}

fn float(
    v: f64,
    nan: bool,
    infinite: bool,
    extra_float_digits: i8,
    digits: i32,
    scientific: impl Fn(Option<usize>) -> String,
) -> String {
    if nan {
        return "NaN".into();
    }
    if infinite {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let (text, positional_below) = if extra_float_digits > 0 {
        (scientific(None), digits)
    } else {
        let precision = (digits + i32::from(extra_float_digits)).max(1);
        (scientific(Some(precision as usize - 1)), precision)
    };
    // `text` is `[-]d[.ddd]e<exp>`.
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let mut digits_of: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    while digits_of.len() > 1 && digits_of.ends_with('0') {
        digits_of.pop();
    }
    if exponent < -4 || exponent >= positional_below {
        let (first, rest) = digits_of.split_at(1);
        let point = if rest.is_empty() { "" } else { "." };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{first}{point}{rest}e{exp_sign}{:02}", exponent.abs());
    }
    let mut out = String::from(sign);
    if exponent < 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exponent - 1) as usize));
        out.push_str(&digits_of);
    } else {
        let whole = exponent as usize + 1;
        if digits_of.len() <= whole {
            out.push_str(&digits_of);
            out.extend(std::iter::repeat_n('0', whole - digits_of.len()));
        } else {
            out.push_str(&digits_of[..whole]);
            out.push('.');
            out.push_str(&digits_of[whole..]);
        }
    }
    out
}

/// A `timestamp` (microseconds since the epoch) as PostgreSQL's ISO style writes it; with a
/// zone, a `timestamptz` in that zone with its offset (`+00`, `+05:30`).
pub fn timestamp<Z: TimeZone>(micros: i64, zone: Option<&Z>) -> String {
    let Some(utc) = DateTime::from_timestamp_micros(micros) else {
        return micros.to_string();
    };
    let utc = utc.naive_utc();
    let (local, offset) = match zone {
        None => (utc, None),
        Some(zone) => {
            let offset = zone.offset_from_utc_datetime(&utc).fix().local_minus_utc();
            (utc + chrono::Duration::seconds(offset.into()), Some(offset))
        }
    };
    let mut out = String::with_capacity(32);
    date_and_time(&mut out, &local);
    if let Some(offset) = offset {
        let sign = if offset < 0 { '-' } else { '+' };
        let offset = offset.abs();
        out.push_str(&format!("{sign}{:02}", offset / 3600));
        if offset % 3600 != 0 {
            out.push_str(&format!(":{:02}", offset % 3600 / 60));
            if offset % 60 != 0 {
                out.push_str(&format!(":{:02}", offset % 60));
            }
        }
    }
    if local.year() <= 0 {
        out.push_str(" BC");
    }
    out
}

fn date_and_time(out: &mut String, t: &NaiveDateTime) {
    let year = if t.year() <= 0 {
        1 - t.year()
    } else {
        t.year()
    };
    out.push_str(&format!("{year:04}-{:02}-{:02} ", t.month(), t.day()));
    let micros = i64::from(t.num_seconds_from_midnight()) * 1_000_000
        + i64::from(t.nanosecond() % 1_000_000_000 / 1000);
    clock(out, micros, false);
}

/// `HH:MM:SS` and the fraction of a second without trailing zeros; hours past 24 as they
/// are (intervals).
fn clock(out: &mut String, micros: i64, signed: bool) {
    let negative = micros < 0;
    let micros = micros.unsigned_abs();
    if signed && negative {
        out.push('-');
    }
    let seconds = micros / 1_000_000;
    out.push_str(&format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    ));
    let fraction = micros % 1_000_000;
    if fraction != 0 {
        let digits = format!("{fraction:06}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// An interval as PostgreSQL's default `IntervalStyle` (`postgres`) writes it:
/// `1 year 2 mons 3 days 04:05:06.5`, `-1 days +02:00:00`, `00:00:00`.
pub fn interval((months, days, micros): (i32, i32, i64)) -> String {
    let mut out = String::new();
    let mut zero = true;
    let mut before_negative = false;
    for (value, unit) in [(months / 12, "year"), (months % 12, "mon"), (days, "day")] {
        if value == 0 {
            continue;
        }
        if !zero {
            out.push(' ');
        }
        if before_negative && value > 0 {
            out.push('+');
        }
        out.push_str(&format!(
            "{value} {unit}{}",
            if value == 1 { "" } else { "s" }
        ));
        before_negative = value < 0;
        zero = false;
    }
    if zero || micros != 0 {
        if !zero {
            out.push(' ');
        }
        if micros >= 0 && before_negative {
            out.push('+');
        }
        clock(&mut out, micros, true);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerics_in_postgresql_binary_form() {
        // PostgreSQL 15's `numeric_send` of each.
        for (text, hex) in [
            ("12345.678", "0003000100000003000109291a7c"),
            ("-0.0001", "0001ffff400000040001"),
            ("0", "0000000000000000"),
            ("0.00", "0000000000000002"),
            ("10000", "00010001000000000001"),
            ("-1.50", "000200004000000200011388"),
            (
                "123456789012345678901234567890.1234567",
                "000a000700000007000c0d801ed204d2162e23340d801ed204d21626",
            ),
        ] {
            let bytes: String = numeric_bytes(text)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(bytes, hex, "{text}");
        }
    }

    #[test]
    fn floats_as_postgresql_writes_them() {
        for (v, text) in [
            (10.0, "10"),
            (1.5, "1.5"),
            (-0.25, "-0.25"),
            (0.1, "0.1"),
            (1e15, "1e+15"),
            (123456789012345.0, "123456789012345"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.2345678901234568e20, "1.2345678901234568e+20"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
            (0.0, "0"),
        ] {
            assert_eq!(float8(v, 1), text, "{v:e}");
        }
        assert_eq!(float8(0.1 + 0.2, 1), "0.30000000000000004");
        assert_eq!(float8(0.1 + 0.2, 0), "0.3");
        assert_eq!(float8(1234567.0, -10), "1.2346e+06");
        assert_eq!(float4(100000.0, 1), "100000");
        assert_eq!(float4(1e6, 1), "1e+06");
        assert_eq!(float4(0.1, 1), "0.1");
        assert_eq!(float4(1.1, 0), "1.1");
    }

    #[test]
    fn timestamps_as_postgresql_writes_them() {
        let t = 1_767_261_600_000_000; // 2026-01-01 10:00:00 UTC
        assert_eq!(timestamp::<chrono::Utc>(t, None), "2026-01-01 10:00:00");
        assert_eq!(
            timestamp::<chrono::Utc>(t + 500_000, None),
            "2026-01-01 10:00:00.5"
        );
        assert_eq!(
            timestamp::<chrono::Utc>(t + 1, None),
            "2026-01-01 10:00:00.000001"
        );
        assert_eq!(timestamp(t, Some(&chrono::Utc)), "2026-01-01 10:00:00+00");
        let india = chrono::FixedOffset::east_opt(5 * 3600 + 1800).unwrap();
        assert_eq!(timestamp(t, Some(&india)), "2026-01-01 15:30:00+05:30");
        let west = chrono::FixedOffset::west_opt(3 * 3600).unwrap();
        assert_eq!(timestamp(t, Some(&west)), "2026-01-01 07:00:00-03");
        // 1 BC is year 0.
        let bc = -62_167_219_200_000_000;
        assert_eq!(timestamp::<chrono::Utc>(bc, None), "0001-01-01 00:00:00 BC");
    }

    #[test]
    fn intervals_as_postgresql_writes_them() {
        assert_eq!(interval((0, 0, 0)), "00:00:00");
        assert_eq!(
            interval((14, 3, 14_706_500_000)),
            "1 year 2 mons 3 days 04:05:06.5"
        );
        assert_eq!(interval((0, 1, 0)), "1 day");
        assert_eq!(interval((0, -1, 7_200_000_000)), "-1 days +02:00:00");
        assert_eq!(interval((0, 0, -90_000_000)), "-00:01:30");
        assert_eq!(interval((0, 0, 180_000_000_000)), "50:00:00");
        assert_eq!(interval((-13, 0, 0)), "-1 years -1 mons");
    }
}
