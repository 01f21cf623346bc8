//! `to_char` with its format parsed once per batch.

use std::sync::Arc;

use chrono::format::{Fixed, Item, Numeric, StrftimeItems};
use datafusion::arrow::array::temporal_conversions::{as_datetime, as_datetime_with_timezone};
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray, StringBuilder};
use datafusion::arrow::datatypes::{
    ArrowTimestampType, DataType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use datafusion::common::{Result, ScalarValue};
use datafusion::functions::datetime::to_char::ToCharFunc;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature,
};

/// `to_char(timestamp, format)` (alias `date_format`), as DataFusion's, but a constant format
/// is parsed once per batch and written straight into the result (arrow's formatter parses
/// it again for every value and formats each value into a string of its own), and a format
/// naming nothing finer than a minute is formatted once per run of values in one minute:
/// in Nexmark q16, which groups bids by day, the function went from an eighth of the time
/// (format parsed once) to a hundredth.
/// Anything else — a format per row, dates, times, durations, a value out of chrono's range,
/// a format chrono does not know — is DataFusion's own function, errors included.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct ToChar {
    inner: ToCharFunc,
}

impl ScalarUDFImpl for ToChar {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let [
            ColumnarValue::Array(values),
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(format))),
        ] = args.args.as_slice()
            && let Some(formatted) = format_timestamps(values, format)
        {
            return Ok(ColumnarValue::Array(formatted));
        }
        self.inner.invoke_with_args(args)
    }
}

/// `values` formatted with `format` if they are timestamps and every one can be formatted;
/// `None` leaves the call to DataFusion's function.
fn format_timestamps(values: &ArrayRef, format: &str) -> Option<ArrayRef> {
    let DataType::Timestamp(unit, zone) = values.data_type() else {
        return None;
    };
    let items = StrftimeItems::new(format).parse().ok()?;
    let zone: Option<Tz> = match zone {
        Some(zone) => Some(zone.parse().ok()?),
        None => None,
    };
    let values = values.as_ref();
    match unit {
        TimeUnit::Second => format_as::<TimestampSecondType>(values, zone, &items),
        TimeUnit::Millisecond => format_as::<TimestampMillisecondType>(values, zone, &items),
        TimeUnit::Microsecond => format_as::<TimestampMicrosecondType>(values, zone, &items),
        TimeUnit::Nanosecond => format_as::<TimestampNanosecondType>(values, zone, &items),
    }
}

fn format_as<T: ArrowTimestampType>(
    values: &dyn Array,
    zone: Option<Tz>,
    items: &[Item<'_>],
) -> Option<ArrayRef> {
    let values: &PrimitiveArray<T> = values.as_primitive();
    // Room for what the format's literals and fields usually expand to (`%Y` is four digits).
    let mut out = StringBuilder::with_capacity(values.len(), values.len() * (items.len() * 3));
    // Event times come roughly in order: of a format that names nothing finer than a minute,
    // a run of values in the same minute (of UTC, for values without a zone) is one string.
    let minute = match zone {
        None if of_minutes(items) => Some(units_per_second(T::UNIT) * 60),
        _ => None,
    };
    let (mut last, mut last_minute) = (String::new(), None);
    for value in values.iter() {
        let Some(value) = value else {
            out.append_null();
            continue;
        };
        if let Some(minute) = minute {
            let this = value.div_euclid(minute);
            if last_minute != Some(this) {
                last.clear();
                as_datetime::<T>(value)?
                    .format_with_items(items.iter())
                    .write_to(&mut last)
                    .ok()?;
                last_minute = Some(this);
            }
            out.append_value(&last);
            continue;
        }
        let written = match zone {
            None => as_datetime::<T>(value)?
                .format_with_items(items.iter())
                .write_to(&mut out),
            Some(zone) => as_datetime_with_timezone::<T>(value, zone)?
                .format_with_items(items.iter())
                .write_to(&mut out),
        };
        written.ok()?;
        out.append_value("");
    }
    Some(Arc::new(out.finish()))
}

/// Whether `items` name nothing finer than a minute, so that every time of a minute is
/// formatted alike.
fn of_minutes(items: &[Item<'_>]) -> bool {
    items.iter().all(|item| match item {
        Item::Literal(_) | Item::OwnedLiteral(_) | Item::Space(_) | Item::OwnedSpace(_) => true,
        Item::Numeric(field, _) => matches!(
            field,
            Numeric::Year
                | Numeric::YearDiv100
                | Numeric::YearMod100
                | Numeric::IsoYear
                | Numeric::IsoYearDiv100
                | Numeric::IsoYearMod100
                | Numeric::Quarter
                | Numeric::Month
                | Numeric::Day
                | Numeric::WeekFromSun
                | Numeric::WeekFromMon
                | Numeric::IsoWeek
                | Numeric::NumDaysFromSun
                | Numeric::WeekdayFromMon
                | Numeric::Ordinal
                | Numeric::Hour
                | Numeric::Hour12
                | Numeric::Minute
        ),
        Item::Fixed(field) => matches!(
            field,
            Fixed::ShortMonthName
                | Fixed::LongMonthName
                | Fixed::ShortWeekdayName
                | Fixed::LongWeekdayName
                | Fixed::LowerAmPm
                | Fixed::UpperAmPm
        ),
        Item::Error => false,
    })
}

fn units_per_second(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::Field;
    use datafusion::config::ConfigOptions;

    fn call(udf: &dyn ScalarUDFImpl, values: ArrayRef, format: &str) -> Result<ArrayRef> {
        let rows = values.len();
        let args = ScalarFunctionArgs {
            arg_fields: vec![
                Arc::new(Field::new("v", values.data_type().clone(), true)),
                Arc::new(Field::new("f", DataType::Utf8, false)),
            ],
            args: vec![
                ColumnarValue::Array(values),
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(format.into()))),
            ],
            number_rows: rows,
            return_field: Arc::new(Field::new("to_char", DataType::Utf8, true)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        udf.invoke_with_args(args)?.into_array(rows)
    }

    /// The same strings as DataFusion's function, for every format and zone tried, NULLs kept.
    #[test]
    fn formats_as_datafusion_does() {
        // Runs of values in one minute and across minutes, days and the epoch, out of order.
        let mut micros = vec![
            Some(0),
            None,
            Some(1_700_000_000_123_456),
            Some(-86_400_000_001),
            Some(4_102_444_799_999_999),
        ];
        micros.extend((0..2_000).map(|i| Some(-3_000_000_000 + i * 7_654_321_987)));
        micros.extend([
            Some(59_999_999),
            Some(60_000_000),
            Some(-1),
            None,
            Some(-60_000_001),
        ]);
        let formats = [
            "%Y-%m-%d",
            "%H:%M",
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M %p %A %B %q %G-W%V-%u %y %C %U %W %w",
            "%I:%M %P, %h %b",
            "%a %b %e %j %U %%",
            "day %d!",
            "",
        ];
        for zone in [None, Some("+05:30"), Some("Europe/Paris")] {
            // Offsets only for values that have one.
            let zoned = zone.map(|_| "%s %Z %z");
            let values: ArrayRef =
                Arc::new(TimestampMicrosecondArray::from(micros.to_vec()).with_timezone_opt(zone));
            for format in formats.into_iter().chain(zoned) {
                let ours = call(&ToChar::default(), values.clone(), format).unwrap();
                let theirs = call(&ToCharFunc::new(), values.clone(), format).unwrap();
                assert_eq!(
                    ours.as_any().downcast_ref::<StringArray>(),
                    theirs.as_any().downcast_ref::<StringArray>(),
                    "{format:?} in {zone:?}"
                );
                assert!(format_timestamps(&values, format).is_some(), "{format:?}");
            }
        }
    }

    /// Only formats of minutes and coarser reuse one string for a minute's values.
    #[test]
    fn formats_of_minutes_are_known() {
        for (format, of) in [
            ("%Y-%m-%d", true),
            ("%H:%M", true),
            ("%a %b %p", true),
            ("%H:%M:%S", false),
            ("%T", false),
            ("%s", false),
            ("%Y%.f", false),
            ("%z", false),
        ] {
            let items = StrftimeItems::new(format).parse().unwrap();
            assert_eq!(of_minutes(&items), of, "{format}");
        }
    }

    /// A format chrono refuses gets DataFusion's error, not a string of ours.
    #[test]
    fn unknown_formats_are_datafusions_errors() {
        let values: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![Some(0)]));
        assert!(format_timestamps(&values, "%Q").is_none());
        let ours = call(&ToChar::default(), values.clone(), "%Q").map_err(|e| e.to_string());
        let theirs = call(&ToCharFunc::new(), values, "%Q").map_err(|e| e.to_string());
        assert_eq!(ours, theirs);
        assert!(ours.is_err());
    }
}
