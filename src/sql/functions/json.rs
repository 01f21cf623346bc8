//! PostgreSQL's `json` and `jsonb` in queries: the operators `->`, `->>`, `#>`, `#>>`, `@>`,
//! `<@`, `?`, `?|`, `?&`, and the common functions (`json_typeof`, `json_array_length`, `json_extract_path`,
//! `to_json`, `json_build_object`, `jsonb_pretty`, … each with its `jsonb_` twin).
//!
//! Paths are followed by datafusion-functions-json (`json_get_json`, `json_as_text`), which
//! finds a member without parsing the rest of the document; the rest works on
//! [`crate::sql::json::Value`]s. A result's field carries its type (see
//! [`crate::sql::text_type`]), so clients are told `json` or `jsonb` and a `->` can follow
//! another. Casts to either are [`super::typed_text`]'s.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Int32Builder, StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::{DFSchema, Result, ScalarValue, plan_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility, lit,
};
use datafusion::sql::sqlparser::ast::BinaryOperator;

use crate::error::Error;
use crate::sql::array_literal;
use crate::sql::json::{self, Value};
use crate::sql::text_type::TextType;

use super::typed_text::Retyped;

/// The kind of JSON `expr` is, if it is marked as one.
fn kind_of(expr: &Expr, schema: &DFSchema) -> Option<TextType> {
    let (_, field) = expr.to_field(schema).ok()?;
    TextType::of(&field).filter(|t| t.is_json())
}

fn is_text(expr: &Expr, schema: &DFSchema) -> bool {
    matches!(
        expr.get_type(schema),
        Ok(DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
    )
}

/// The JSON operators, on text marked `json`/`jsonb` or plain text holding JSON.
#[derive(Debug, Default)]
pub struct JsonOperators;

impl ExprPlanner for JsonOperators {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        let RawBinaryExpr { op, left, right } = expr;
        let json_left = kind_of(&left, schema);
        let applies = match op {
            BinaryOperator::Arrow
            | BinaryOperator::LongArrow
            | BinaryOperator::HashArrow
            | BinaryOperator::HashLongArrow
            | BinaryOperator::Question
            | BinaryOperator::QuestionAnd
            | BinaryOperator::QuestionPipe => json_left.is_some() || is_text(&left, schema),
            // Arrays have their own `@>`; JSON's needs JSON (or text) on both sides.
            BinaryOperator::AtArrow | BinaryOperator::ArrowAt => {
                (json_left.is_some() || kind_of(&right, schema).is_some())
                    && is_text(&left, schema)
                    && is_text(&right, schema)
            }
            _ => false,
        };
        if !applies {
            return Ok(PlannerResult::Original(RawBinaryExpr { op, left, right }));
        }
        let kind = json_left.unwrap_or(TextType::Json);
        let call = |udf: ScalarUDF, args: Vec<Expr>| {
            Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(udf), args))
        };
        let planned = match op {
            BinaryOperator::Arrow => call(Path::udf(Path::Get, Some(kind)), vec![left, right]),
            BinaryOperator::LongArrow => call(Path::udf(Path::Text, None), vec![left, right]),
            BinaryOperator::HashArrow => call(
                Path::udf(Path::Get, Some(kind)),
                vec![left, text_array(right)?],
            ),
            BinaryOperator::HashLongArrow => {
                call(Path::udf(Path::Text, None), vec![left, text_array(right)?])
            }
            BinaryOperator::AtArrow => call(Doc::udf(DocOp::Contains), vec![left, right]),
            BinaryOperator::ArrowAt => call(Doc::udf(DocOp::Contains), vec![right, left]),
            BinaryOperator::Question => call(Doc::udf(DocOp::Exists), vec![left, right]),
            BinaryOperator::QuestionPipe => {
                call(Doc::udf(DocOp::ExistsAny), vec![left, text_array(right)?])
            }
            BinaryOperator::QuestionAnd => {
                call(Doc::udf(DocOp::ExistsAll), vec![left, text_array(right)?])
            }
            _ => unreachable!("operators checked above"),
        };
        Ok(PlannerResult::Planned(planned))
    }
}

/// A path or key list: a `text[]` expression as it is, or PostgreSQL's array literal
/// (`'{a,b}'`) as the array it spells.
fn text_array(expr: Expr) -> Result<Expr> {
    match &expr {
        Expr::Literal(ScalarValue::Utf8(Some(text)), _) => {
            let items = array_literal::parse(text)?;
            Ok(datafusion::functions_nested::expr_fn::make_array(
                items
                    .into_iter()
                    .map(|item| lit(ScalarValue::Utf8(item)))
                    .collect(),
            ))
        }
        _ => Ok(expr),
    }
}

/// The functions of this module, by their SQL names.
pub fn udfs() -> Vec<ScalarUDF> {
    let mut udfs = vec![
        Path::named("json_extract_path", Path::Get, Some(TextType::Json)),
        Path::named("jsonb_extract_path", Path::Get, Some(TextType::Jsonb)),
        Path::named("json_extract_path_text", Path::Text, None),
        Path::named("jsonb_extract_path_text", Path::Text, None),
    ];
    for (json, jsonb, op) in [
        ("json_typeof", "jsonb_typeof", DocOp::Typeof),
        (
            "json_array_length",
            "jsonb_array_length",
            DocOp::ArrayLength,
        ),
    ] {
        udfs.push(Doc::named(json, op));
        udfs.push(Doc::named(jsonb, op));
    }
    for (name, op) in [
        ("jsonb_pretty", DocOp::Pretty),
        ("jsonb_contains", DocOp::Contains),
        ("jsonb_exists", DocOp::Exists),
        ("jsonb_exists_any", DocOp::ExistsAny),
        ("jsonb_exists_all", DocOp::ExistsAll),
    ] {
        udfs.push(Doc::named(name, op));
    }
    for kind in [TextType::Json, TextType::Jsonb] {
        for build in [Build::Scalar, Build::Object, Build::Array] {
            udfs.push(ScalarUDF::from(ToJson::new(build, kind)));
        }
    }
    udfs
}

/// A column of text from an argument, whatever its string type.
fn texts(arg: &ColumnarValue, rows: usize) -> Result<StringArray> {
    let array = arg.to_array(rows)?;
    Ok(cast(&array, &DataType::Utf8)?.as_string::<i32>().clone())
}

/// What a path function returns: the JSON found there, or it as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Path {
    Get,
    Text,
}

impl Path {
    fn udf(path: Path, returns: Option<TextType>) -> ScalarUDF {
        let name = match (path, returns) {
            (Path::Get, Some(TextType::Jsonb)) => "jsonb_get",
            (Path::Get, _) => "json_get",
            (Path::Text, _) => "json_get_text",
        };
        Path::named(name, path, returns)
    }

    fn named(name: &'static str, path: Path, returns: Option<TextType>) -> ScalarUDF {
        let inner = match path {
            Path::Get => datafusion_functions_json::udfs::json_get_json_udf(),
            Path::Text => datafusion_functions_json::udfs::json_as_text_udf(),
        };
        Retyped::udf(
            name,
            inner.as_ref().clone(),
            returns.or((path == Path::Get).then_some(TextType::Json)),
        )
    }
}

/// The functions that read a whole document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DocOp {
    Typeof,
    ArrayLength,
    Pretty,
    /// `a @> b`
    Contains,
    /// `a ? key`
    Exists,
    /// `a ?| keys`
    ExistsAny,
    /// `a ?& keys`
    ExistsAll,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Doc {
    name: &'static str,
    op: DocOp,
    signature: Signature,
}

impl Doc {
    fn udf(op: DocOp) -> ScalarUDF {
        let name = match op {
            DocOp::Typeof => "json_typeof",
            DocOp::ArrayLength => "json_array_length",
            DocOp::Pretty => "jsonb_pretty",
            DocOp::Contains => "jsonb_contains",
            DocOp::Exists => "jsonb_exists",
            DocOp::ExistsAny => "jsonb_exists_any",
            DocOp::ExistsAll => "jsonb_exists_all",
        };
        Doc::named(name, op)
    }

    fn named(name: &'static str, op: DocOp) -> ScalarUDF {
        let arguments = match op {
            DocOp::Typeof | DocOp::ArrayLength | DocOp::Pretty => 1,
            _ => 2,
        };
        ScalarUDF::from(Doc {
            name,
            op,
            signature: Signature::any(arguments, Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for Doc {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.op {
            DocOp::Typeof | DocOp::Pretty => DataType::Utf8,
            DocOp::ArrayLength => DataType::Int32,
            _ => DataType::Boolean,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let documents = texts(&args.args[0], rows)?;
        let parse = json::parse;
        let result: ArrayRef = match self.op {
            DocOp::Typeof | DocOp::Pretty => {
                let mut out = StringBuilder::new();
                for text in documents.iter() {
                    match text {
                        None => out.append_null(),
                        Some(text) => {
                            let value = parse(text)?;
                            if self.op == DocOp::Typeof {
                                out.append_value(value.type_name());
                            } else {
                                let mut pretty = String::new();
                                value.normalized().pretty(&mut pretty, 0);
                                out.append_value(pretty);
                            }
                        }
                    }
                }
                Arc::new(out.finish())
            }
            DocOp::ArrayLength => {
                let mut out = Int32Builder::new();
                for text in documents.iter() {
                    match text.map(parse).transpose()? {
                        None => out.append_null(),
                        Some(Value::Array(items)) => out.append_value(items.len() as i32),
                        Some(other) => {
                            return Err(Error::data(
                                "22023",
                                format!(
                                    "cannot get array length of a {}",
                                    match other {
                                        Value::Object(_) => "non-array",
                                        _ => "scalar",
                                    }
                                ),
                            )
                            .into());
                        }
                    }
                }
                Arc::new(out.finish())
            }
            DocOp::Contains | DocOp::Exists => {
                let others = texts(&args.args[1], rows)?;
                let mut out = BooleanBuilder::new();
                for (text, other) in documents.iter().zip(others.iter()) {
                    let (Some(text), Some(other)) = (text, other) else {
                        out.append_null();
                        continue;
                    };
                    let value = parse(text)?;
                    out.append_value(match self.op {
                        DocOp::Contains => value.contains(&parse(other)?),
                        _ => value.has_key(other),
                    });
                }
                Arc::new(out.finish())
            }
            DocOp::ExistsAny | DocOp::ExistsAll => {
                let keys = args.args[1].to_array(rows)?;
                let keys = match keys.data_type() {
                    DataType::List(_) => keys,
                    DataType::Null => {
                        return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(None)));
                    }
                    other => {
                        return plan_err!("{} takes a text[] of keys, not {other}", self.name);
                    }
                };
                let keys = keys.as_list::<i32>();
                let mut out = BooleanBuilder::new();
                for (row, text) in documents.iter().enumerate() {
                    let Some(text) = text.filter(|_| keys.is_valid(row)) else {
                        out.append_null();
                        continue;
                    };
                    let value = parse(text)?;
                    let wanted = cast(&keys.value(row), &DataType::Utf8)?;
                    let mut wanted = wanted.as_string::<i32>().iter().flatten();
                    out.append_value(if self.op == DocOp::ExistsAny {
                        wanted.any(|k| value.has_key(k))
                    } else {
                        wanted.all(|k| value.has_key(k))
                    });
                }
                Arc::new(out.finish())
            }
        };
        Ok(ColumnarValue::Array(result))
    }
}

/// What a conversion to JSON builds from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Build {
    /// `to_json(value)`
    Scalar,
    /// `json_build_object(key, value, …)`
    Object,
    /// `json_build_array(value, …)`
    Array,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ToJson {
    name: &'static str,
    build: Build,
    kind: TextType,
    signature: Signature,
}

impl ToJson {
    fn new(build: Build, kind: TextType) -> ToJson {
        let jsonb = kind == TextType::Jsonb;
        let (name, signature) = match (build, jsonb) {
            (Build::Scalar, false) => ("to_json", Signature::any(1, Volatility::Stable)),
            (Build::Scalar, true) => ("to_jsonb", Signature::any(1, Volatility::Stable)),
            (Build::Object, false) => ("json_build_object", variadic()),
            (Build::Object, true) => ("jsonb_build_object", variadic()),
            (Build::Array, false) => ("json_build_array", variadic()),
            (Build::Array, true) => ("jsonb_build_array", variadic()),
        };
        ToJson {
            name,
            build,
            kind,
            signature,
        }
    }
}

fn variadic() -> Signature {
    Signature::one_of(
        vec![
            datafusion::logical_expr::TypeSignature::VariadicAny,
            datafusion::logical_expr::TypeSignature::Nullary,
        ],
        Volatility::Stable,
    )
}

impl ScalarUDFImpl for ToJson {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        if self.build == Build::Object && !args.arg_fields.len().is_multiple_of(2) {
            return Err(Error::plan(
                "22023",
                format!(
                    "argument list must have even number of elements: {} takes key/value pairs",
                    self.name
                ),
            )
            .into());
        }
        Ok(self.kind.field(self.name))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let columns = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<Result<Vec<_>>>()?;
        let mut out = StringBuilder::new();
        let mut text = String::new();
        for row in 0..rows {
            text.clear();
            match self.build {
                Build::Scalar => {
                    if columns[0].is_null(row) {
                        out.append_null();
                        continue;
                    }
                    write_json(&mut text, &columns[0], &args.arg_fields[0], row)?;
                }
                Build::Array => {
                    text.push('[');
                    for (i, (column, field)) in columns.iter().zip(&args.arg_fields).enumerate() {
                        if i > 0 {
                            text.push_str(", ");
                        }
                        write_json(&mut text, column, field, row)?;
                    }
                    text.push(']');
                }
                Build::Object => {
                    text.push('{');
                    for (i, pair) in columns.chunks(2).enumerate() {
                        if pair[0].is_null(row) {
                            return Err(Error::data(
                                "22004",
                                "null value not allowed for object key",
                            )
                            .into());
                        }
                        if i > 0 {
                            text.push_str(", ");
                        }
                        let key = cast(&pair[0].slice(row, 1), &DataType::Utf8)?;
                        json::quote(&mut text, key.as_string::<i32>().value(0));
                        text.push_str(" : ");
                        write_json(&mut text, &pair[1], &args.arg_fields[2 * i + 1], row)?;
                    }
                    text.push('}');
                }
            }
            match self.kind {
                TextType::Json | TextType::Uuid => out.append_value(&text),
                TextType::Jsonb => out.append_value(json::parse(&text)?.to_jsonb()),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// The value at `row` of `column` as JSON, as `to_json` writes it: numbers and booleans as
/// themselves, JSON as it is, arrays and rows as arrays and objects, the rest as strings of
/// their text.
fn write_json(out: &mut String, column: &ArrayRef, field: &Field, row: usize) -> Result<()> {
    if column.is_null(row) {
        out.push_str("null");
        return Ok(());
    }
    let formatted = |column: &ArrayRef| -> Result<String> {
        let options = FormatOptions::default();
        Ok(ArrayFormatter::try_new(column.as_ref(), &options)?
            .value(row)
            .to_string())
    };
    match column.data_type() {
        DataType::Boolean => out.push_str(if column.as_boolean().value(row) {
            "true"
        } else {
            "false"
        }),
        t if t.is_integer() || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)) => {
            let text = formatted(column)?;
            out.push_str(&text);
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let value = cast(&column.slice(row, 1), &DataType::Float64)?;
            let value = value.as_primitive::<Float64Type>().value(0);
            let text = crate::pgwire::text::float8(value, 1);
            if value.is_finite() {
                out.push_str(&text);
            } else {
                json::quote(out, &text);
            }
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let text = formatted(column)?;
            if TextType::of(field).is_some() {
                out.push_str(&text);
            } else {
                json::quote(out, &text);
            }
        }
        DataType::List(item) | DataType::LargeList(item) => {
            let values = match column.data_type() {
                DataType::List(_) => column.as_list::<i32>().value(row),
                _ => column.as_list::<i64>().value(row),
            };
            out.push('[');
            for i in 0..values.len() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, &values, item, i)?;
            }
            out.push(']');
        }
        DataType::Struct(fields) => {
            let columns = column.as_struct();
            out.push('{');
            for (i, (field, values)) in fields.iter().zip(columns.columns()).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json::quote(out, field.name());
                out.push(':');
                write_json(out, values, field, row)?;
            }
            out.push('}');
        }
        DataType::Null => out.push_str("null"),
        _ => {
            let text = formatted(column)?;
            json::quote(out, &text);
        }
    }
    Ok(())
}
