//! The column types a stream can declare, their PostgreSQL names and their Arrow storage.
//!
//! A closed set on purpose: every type here has a fixed Arrow representation in the log, a
//! PostgreSQL name for `DESCRIBE` and clients, and a key encoding (see `ingest::key`).

use std::fmt;

use arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};
use serde::{Deserialize, Serialize};
use sqlparser::ast::{DataType as Ast, ExactNumberInfo, TimezoneInfo};

use crate::error::{Error, Result};
use crate::sql::text_type::TextType;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum SqlType {
    Boolean,
    SmallInt,
    Integer,
    BigInt,
    Real,
    Double,
    Numeric { precision: u8, scale: i8 },
    Text,
    Bytea,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Interval,
    Json,
    Jsonb,
    Uuid,
}

/// `numeric` without a declared precision: the widest Arrow decimal with a useful scale.
const NUMERIC_DEFAULT: SqlType = SqlType::Numeric {
    precision: 38,
    scale: 10,
};

impl SqlType {
    /// The type of a column definition, from the parser's AST.
    pub fn from_ast(ast: &Ast) -> Result<SqlType> {
        let numeric = |info: &ExactNumberInfo| -> Result<SqlType> {
            match *info {
                ExactNumberInfo::None => Ok(NUMERIC_DEFAULT),
                ExactNumberInfo::Precision(p) => numeric_of(p, 0),
                ExactNumberInfo::PrecisionAndScale(p, s) => numeric_of(p, s),
            }
        };
        Ok(match ast {
            Ast::Bool | Ast::Boolean => SqlType::Boolean,
            Ast::SmallInt(_) | Ast::Int2(_) => SqlType::SmallInt,
            Ast::Int(_) | Ast::Integer(_) | Ast::Int4(_) => SqlType::Integer,
            Ast::BigInt(_) | Ast::Int8(_) => SqlType::BigInt,
            Ast::Real | Ast::Float4 => SqlType::Real,
            Ast::DoublePrecision | Ast::Float8 | Ast::Double(ExactNumberInfo::None) => {
                SqlType::Double
            }
            Ast::Float(info) => match info {
                ExactNumberInfo::Precision(p) if *p <= 24 => SqlType::Real,
                _ => SqlType::Double,
            },
            Ast::Numeric(info) | Ast::Decimal(info) | Ast::Dec(info) => numeric(info)?,
            Ast::Text
            | Ast::Varchar(_)
            | Ast::CharacterVarying(_)
            | Ast::CharVarying(_)
            | Ast::Char(_)
            | Ast::Character(_)
            | Ast::String(_) => SqlType::Text,
            Ast::Bytea => SqlType::Bytea,
            Ast::Date => SqlType::Date,
            Ast::Time(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => SqlType::Time,
            Ast::Timestamp(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => {
                SqlType::Timestamp
            }
            Ast::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => {
                SqlType::TimestampTz
            }
            Ast::Interval { .. } => SqlType::Interval,
            Ast::JSON => SqlType::Json,
            Ast::JSONB => SqlType::Jsonb,
            Ast::Uuid => SqlType::Uuid,
            Ast::Custom(name, _) => match name.to_string().to_ascii_lowercase().as_str() {
                "timestamptz" => SqlType::TimestampTz,
                "int2" => SqlType::SmallInt,
                "int4" => SqlType::Integer,
                "int8" => SqlType::BigInt,
                "float4" => SqlType::Real,
                "float8" => SqlType::Double,
                "bool" => SqlType::Boolean,
                "string" => SqlType::Text,
                other => {
                    return Err(Error::plan(
                        "42704",
                        format!("type \"{other}\" does not exist"),
                    ));
                }
            },
            other => {
                return Err(Error::Unsupported(format!(
                    "columns of type {other} are not supported in streams"
                )));
            }
        })
    }

    /// How the log stores the column.
    pub fn arrow(self) -> DataType {
        match self {
            SqlType::Boolean => DataType::Boolean,
            SqlType::SmallInt => DataType::Int16,
            SqlType::Integer => DataType::Int32,
            SqlType::BigInt => DataType::Int64,
            SqlType::Real => DataType::Float32,
            SqlType::Double => DataType::Float64,
            SqlType::Numeric { precision, scale } => DataType::Decimal128(precision, scale),
            SqlType::Text | SqlType::Json | SqlType::Jsonb | SqlType::Uuid => DataType::Utf8,
            SqlType::Bytea => DataType::Binary,
            SqlType::Date => DataType::Date32,
            SqlType::Time => DataType::Time64(TimeUnit::Microsecond),
            SqlType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            SqlType::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            SqlType::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
        }
    }

    /// A column of this type named `name`, as the log stores it: `json`, `jsonb` and `uuid`
    /// are text marked with their type.
    pub fn field(self, name: &str, nullable: bool) -> Field {
        let field = Field::new(name, self.arrow(), nullable);
        match self.text_type() {
            Some(t) => field.with_metadata(t.metadata()),
            None => field,
        }
    }

    pub fn text_type(self) -> Option<TextType> {
        match self {
            SqlType::Json => Some(TextType::Json),
            SqlType::Jsonb => Some(TextType::Jsonb),
            SqlType::Uuid => Some(TextType::Uuid),
            _ => None,
        }
    }

    /// The column type that holds the values of `field`: [`SqlType::from_arrow`] of its
    /// type, or the text type it is marked with.
    pub fn from_field(field: &Field) -> Option<SqlType> {
        match TextType::of(field) {
            Some(TextType::Json) => Some(SqlType::Json),
            Some(TextType::Jsonb) => Some(SqlType::Jsonb),
            Some(TextType::Uuid) => Some(SqlType::Uuid),
            None => SqlType::from_arrow(field.data_type()),
        }
    }

    /// The column type that holds values of Arrow type `t` (for the columns of a derived
    /// stream, which come from its query); `None` for types a stream cannot store.
    pub fn from_arrow(t: &DataType) -> Option<SqlType> {
        Some(match t {
            DataType::Boolean => SqlType::Boolean,
            DataType::Int8 | DataType::Int16 | DataType::UInt8 => SqlType::SmallInt,
            DataType::Int32 | DataType::UInt16 => SqlType::Integer,
            DataType::Int64 | DataType::UInt32 => SqlType::BigInt,
            DataType::UInt64 => SqlType::Numeric {
                precision: 20,
                scale: 0,
            },
            DataType::Float16 | DataType::Float32 => SqlType::Real,
            DataType::Float64 => SqlType::Double,
            DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s)
                if *s >= 0 && s.unsigned_abs() <= *p =>
            {
                SqlType::Numeric {
                    precision: (*p).min(38),
                    scale: *s,
                }
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
                SqlType::Text
            }
            DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_) => SqlType::Bytea,
            DataType::Date32 | DataType::Date64 => SqlType::Date,
            DataType::Time32(_) | DataType::Time64(_) => SqlType::Time,
            DataType::Timestamp(_, None) => SqlType::Timestamp,
            DataType::Timestamp(_, Some(_)) => SqlType::TimestampTz,
            DataType::Interval(_) | DataType::Duration(_) => SqlType::Interval,
            DataType::Dictionary(_, values) => return SqlType::from_arrow(values),
            _ => return None,
        })
    }

    pub fn is_temporal(self) -> bool {
        matches!(
            self,
            SqlType::Date
                | SqlType::Time
                | SqlType::Timestamp
                | SqlType::TimestampTz
                | SqlType::Interval
        )
    }
}

fn numeric_of(precision: u64, scale: i64) -> Result<SqlType> {
    if !(1..=38).contains(&precision) {
        return Err(Error::data(
            "22023",
            format!("NUMERIC precision {precision} must be between 1 and 38"),
        ));
    }
    if scale < 0 || scale as u64 > precision {
        return Err(Error::data(
            "22023",
            format!("NUMERIC scale {scale} must be between 0 and precision {precision}"),
        ));
    }
    Ok(SqlType::Numeric {
        precision: precision as u8,
        scale: scale as i8,
    })
}

impl SqlType {
    /// The name PostgreSQL's `regtype` prints (`pg_typeof`, `information_schema`): without
    /// a type modifier, and times and timestamps in full.
    pub fn regtype_name(self) -> &'static str {
        sql_type_name(self.udt_name())
    }

    /// PostgreSQL's internal name of the type, `pg_type.typname` (`int8`, `timestamptz`).
    pub fn udt_name(self) -> &'static str {
        match self {
            SqlType::Boolean => "bool",
            SqlType::SmallInt => "int2",
            SqlType::Integer => "int4",
            SqlType::BigInt => "int8",
            SqlType::Real => "float4",
            SqlType::Double => "float8",
            SqlType::Numeric { .. } => "numeric",
            SqlType::Text => "text",
            SqlType::Json => "json",
            SqlType::Jsonb => "jsonb",
            SqlType::Uuid => "uuid",
            SqlType::Bytea => "bytea",
            SqlType::Date => "date",
            SqlType::Time => "time",
            SqlType::Timestamp => "timestamp",
            SqlType::TimestampTz => "timestamptz",
            SqlType::Interval => "interval",
        }
    }
}

/// The name a `regtype` prints for the type PostgreSQL calls `typname` internally: SQL's
/// names for the built-in types (`integer` for `int4`), `"any"` and `"char"` quoted,
/// other types as they are called.
pub fn sql_type_name(typname: &str) -> &str {
    match typname {
        "bool" => "boolean",
        "int2" => "smallint",
        "int4" => "integer",
        "int8" => "bigint",
        "float4" => "real",
        "float8" => "double precision",
        "varchar" => "character varying",
        "bpchar" => "character",
        "varbit" => "bit varying",
        "time" => "time without time zone",
        "timetz" => "time with time zone",
        "timestamp" => "timestamp without time zone",
        "timestamptz" => "timestamp with time zone",
        "any" => "\"any\"",
        "char" => "\"char\"",
        other => other,
    }
}

/// The PostgreSQL name, as `DESCRIBE` shows it.
impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlType::Boolean => write!(f, "boolean"),
            SqlType::SmallInt => write!(f, "smallint"),
            SqlType::Integer => write!(f, "integer"),
            SqlType::BigInt => write!(f, "bigint"),
            SqlType::Real => write!(f, "real"),
            SqlType::Double => write!(f, "double precision"),
            SqlType::Numeric { precision, scale } => write!(f, "numeric({precision},{scale})"),
            SqlType::Text => write!(f, "text"),
            SqlType::Json => write!(f, "json"),
            SqlType::Jsonb => write!(f, "jsonb"),
            SqlType::Uuid => write!(f, "uuid"),
            SqlType::Bytea => write!(f, "bytea"),
            SqlType::Date => write!(f, "date"),
            SqlType::Time => write!(f, "time"),
            SqlType::Timestamp => write!(f, "timestamp"),
            SqlType::TimestampTz => write!(f, "timestamp with time zone"),
            SqlType::Interval => write!(f, "interval"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn parse(s: &str) -> Result<SqlType> {
        let dialect = PostgreSqlDialect {};
        let ty = Parser::new(&dialect)
            .try_with_sql(s)
            .unwrap()
            .parse_data_type()
            .unwrap();
        SqlType::from_ast(&ty)
    }

    #[test]
    fn postgres_spellings_map_to_one_type() {
        assert_eq!(parse("BIGINT").unwrap(), SqlType::BigInt);
        assert_eq!(parse("int8").unwrap(), SqlType::BigInt);
        assert_eq!(parse("varchar(20)").unwrap(), SqlType::Text);
        assert_eq!(parse("double precision").unwrap(), SqlType::Double);
        assert_eq!(parse("timestamptz").unwrap(), SqlType::TimestampTz);
        assert_eq!(
            parse("timestamp with time zone").unwrap(),
            SqlType::TimestampTz
        );
        assert_eq!(
            parse("numeric(10,2)").unwrap(),
            SqlType::Numeric {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(parse("numeric(10,2)").unwrap().to_string(), "numeric(10,2)");
    }

    #[test]
    fn unknown_and_unsupported_types_are_errors() {
        assert_eq!(parse("frobnicate").unwrap_err().sqlstate(), "42704");
        assert_eq!(parse("numeric(50,2)").unwrap_err().sqlstate(), "22023");
    }
}
