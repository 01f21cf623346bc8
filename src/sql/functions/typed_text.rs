//! The types Runnel keeps as marked text (`json`, `jsonb`, `uuid`; see
//! [`crate::sql::text_type`]) in queries: casts to them, which check and canonicalize their
//! text; comparisons of a `uuid` with a string, which read the string as a UUID; and
//! `gen_random_uuid()`.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, ListBuilder, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::{InList, ScalarFunction};
use datafusion::logical_expr::planner::TypePlanner;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::sql::sqlparser::ast::{ArrayElemTypeDef, DataType as SqlDataType, ExactNumberInfo};

use crate::catalog::types::SqlType;
use crate::error::Error;
use crate::sql::text_type::TextType;

/// Plans `json`, `jsonb` and `uuid` in casts as text fields marked with their type, and
/// `oid[]` as a list of integers marked as oids (so clients are told `oid[]`).
#[derive(Debug, Default)]
pub struct TextTypes;

impl TypePlanner for TextTypes {
    fn plan_type_field(&self, sql_type: &SqlDataType) -> Result<Option<FieldRef>> {
        Ok(match sql_type {
            SqlDataType::JSON => Some(TextType::Json.field("")),
            SqlDataType::JSONB => Some(TextType::Jsonb.field("")),
            SqlDataType::Uuid => Some(TextType::Uuid.field("")),
            SqlDataType::Numeric(ExactNumberInfo::None)
            | SqlDataType::Decimal(ExactNumberInfo::None)
            | SqlDataType::Dec(ExactNumberInfo::None) => {
                Some(crate::sql::numeric::unconstrained_field())
            }
            // PostgreSQL's one-byte `"char"` (`relkind`, `'r'::"char"`): text, as the
            // catalog tables have it.
            SqlDataType::Custom(name, args)
                if args.is_empty()
                    && matches!(name.0.as_slice(), [part] if part.as_ident()
                        .is_some_and(|i| i.quote_style == Some('"') && i.value == "char")) =>
            {
                Some(Arc::new(Field::new("", DataType::Utf8, true)))
            }
            SqlDataType::Array(ArrayElemTypeDef::SquareBracket(element, None))
                if matches!(element.as_ref(), SqlDataType::Custom(name, args)
                    if args.is_empty() && name.to_string().eq_ignore_ascii_case("oid")) =>
            {
                let oid = Field::new_list_field(DataType::Int32, true).with_metadata(
                    [(OID_ALIAS.to_string(), "oid".to_string())]
                        .into_iter()
                        .collect(),
                );
                Some(Arc::new(Field::new(
                    "",
                    DataType::List(Arc::new(oid)),
                    true,
                )))
            }
            _ => None,
        })
    }
}

/// The field metadata that marks an `Int32` as an oid (arrow-pg's and datafusion-pg-catalog's).
pub const OID_ALIAS: &str = arrow_pg::datatypes::PG_OID_ALIAS_KEY;

/// Replaces each cast to a marked type with the function that checks and canonicalizes its
/// text, and reads a string compared with a `uuid` as a UUID (so `u = 'A0EE…'` finds the
/// lowercase value, as in PostgreSQL), keeping the plan's column names. Runs before type
/// coercion, which then fits the arguments of what it made.
#[derive(Debug, Default)]
pub struct TextCasts;

impl AnalyzerRule for TextCasts {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        crate::sql::rewrite_expressions(plan, rewrite)
    }

    fn name(&self) -> &str {
        "text_type_casts"
    }
}

fn field_of(expr: &Expr, schema: &DFSchema) -> Option<FieldRef> {
    expr.to_field(schema).ok().map(|(_, f)| f)
}

fn rewrite(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    match expr {
        Expr::Cast(mut cast_expr) => {
            if let (DataType::Timestamp(..), Expr::Literal(ScalarValue::Utf8(Some(text)), _)) =
                (cast_expr.field.data_type(), cast_expr.expr.as_mut())
                && let Some(with_seconds) = crate::ingest::values::with_seconds(text)
            {
                *text = with_seconds;
                return Ok(Transformed::yes(Expr::Cast(cast_expr)));
            }
            if matches!(
                cast_expr.field.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) && field_of(&cast_expr.expr, schema)
                .is_some_and(|from| matches!(from.data_type(), DataType::List(_)))
            {
                // `ARRAY[1, 2]::text`: PostgreSQL's text of the array, `{1,2}`.
                let text = Expr::ScalarFunction(ScalarFunction::new_udf(
                    Arc::new(ScalarUDF::from(ArrayOutput::default())),
                    vec![*cast_expr.expr],
                ));
                return Ok(Transformed::yes(match cast_expr.field.data_type() {
                    DataType::Utf8 => text,
                    other => Expr::Cast(datafusion::logical_expr::Cast::new(
                        Box::new(text),
                        other.clone(),
                    )),
                }));
            }
            if let DataType::List(_) = cast_expr.field.data_type()
                && field_of(&cast_expr.expr, schema).is_some_and(|from| {
                    matches!(
                        from.data_type(),
                        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                    )
                })
            {
                // `'{1,2}'::int[]`: the literal's elements, each cast to the element type.
                let texts = Expr::ScalarFunction(ScalarFunction::new_udf(
                    Arc::new(ScalarUDF::from(ArrayInput::default())),
                    vec![*cast_expr.expr],
                ));
                cast_expr.expr = Box::new(texts);
                return Ok(Transformed::yes(Expr::Cast(cast_expr)));
            }
            let Some(to) = TextType::of(&cast_expr.field) else {
                return Ok(Transformed::no(Expr::Cast(cast_expr)));
            };
            // A column of a query further out: its type is not in this node's inputs.
            let Some(from) = field_of(&cast_expr.expr, schema) else {
                return Ok(Transformed::no(Expr::Cast(cast_expr)));
            };
            if TextType::of(&from) == Some(to) {
                return Ok(Transformed::yes(*cast_expr.expr));
            }
            match from.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
                    Ok(Transformed::yes(input(to, *cast_expr.expr)))
                }
                // `json` to `jsonb` and back go through their text.
                _ if TextType::of(&from).is_some_and(TextType::is_json) && to.is_json() => {
                    Ok(Transformed::yes(input(to, *cast_expr.expr)))
                }
                other => Err(Error::plan(
                    "42846",
                    format!(
                        "cannot cast type {} to {}",
                        TextType::of(&from).map_or_else(
                            || {
                                SqlType::from_arrow(other)
                                    .map_or_else(|| other.to_string(), |t| t.to_string())
                            },
                            |t| t.name().to_string()
                        ),
                        to.name()
                    ),
                )
                .into()),
            }
        }
        // `CASE … THEN acl ELSE '{}' END`: a string among the results is an array of the
        // others' type, as PostgreSQL reads an untyped literal (pg_dump's `acldefault`).
        Expr::Case(mut case) => {
            let to = case
                .when_then_expr
                .iter()
                .map(|(_, then)| then.as_ref())
                .chain(case.else_expr.as_deref())
                .find_map(|e| list_type(e, schema));
            let Some(to) = to else {
                return Ok(Transformed::no(Expr::Case(case)));
            };
            let results = case
                .when_then_expr
                .iter_mut()
                .map(|(_, then)| then)
                .chain(case.else_expr.as_mut());
            let mut changed = false;
            for result in results.filter(|r| is_string_literal(r)) {
                let literal =
                    std::mem::replace(result.as_mut(), Expr::Literal(ScalarValue::Null, None));
                **result = array_of_text(literal, to.clone());
                changed = true;
            }
            Ok(match changed {
                true => Transformed::yes(Expr::Case(case)),
                false => Transformed::no(Expr::Case(case)),
            })
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) if op.supports_propagation() => {
            // `roles = '{0}'`: the literal is an array of the other side's type, as
            // PostgreSQL reads an untyped literal.
            if is_string_literal(&right)
                && let Some(to) = list_type(&left, schema)
            {
                let right = Box::new(array_of_text(*right, to));
                return Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr {
                    left,
                    op,
                    right,
                })));
            }
            if is_string_literal(&left)
                && let Some(to) = list_type(&right, schema)
            {
                let left = Box::new(array_of_text(*left, to));
                return Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr {
                    left,
                    op,
                    right,
                })));
            }
            let (left, right) = match (uuid_side(&left, schema), uuid_side(&right, schema)) {
                (true, false) if is_string_literal(&right) => {
                    (left, Box::new(input(TextType::Uuid, *right)))
                }
                (false, true) if is_string_literal(&left) => {
                    (Box::new(input(TextType::Uuid, *left)), right)
                }
                _ => {
                    return Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr {
                        left,
                        op,
                        right,
                    })));
                }
            };
            Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr {
                left,
                op,
                right,
            })))
        }
        Expr::InList(InList {
            expr,
            list,
            negated,
        }) if uuid_side(&expr, schema) && list.iter().any(is_string_literal) => {
            let list = list
                .into_iter()
                .map(|e| {
                    if is_string_literal(&e) {
                        input(TextType::Uuid, e)
                    } else {
                        e
                    }
                })
                .collect();
            Ok(Transformed::yes(Expr::InList(InList {
                expr,
                list,
                negated,
            })))
        }
        other => Ok(Transformed::no(other)),
    }
}

fn uuid_side(expr: &Expr, schema: &DFSchema) -> bool {
    field_of(expr, schema).is_some_and(|f| TextType::of(&f) == Some(TextType::Uuid))
}

/// The type of `expr` if it is an array.
fn list_type(expr: &Expr, schema: &DFSchema) -> Option<DataType> {
    field_of(expr, schema)
        .filter(|f| matches!(f.data_type(), DataType::List(_)))
        .map(|f| f.data_type().clone())
}

/// A string literal read as PostgreSQL's text of an array of type `to` (`'{1,2}'`).
fn array_of_text(literal: Expr, to: DataType) -> Expr {
    let texts = Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(ScalarUDF::from(ArrayInput::default())),
        vec![literal],
    ));
    Expr::Cast(datafusion::logical_expr::Cast::new(Box::new(texts), to))
}

fn is_string_literal(expr: &Expr) -> bool {
    matches!(
        expr,
        Expr::Literal(
            ScalarValue::Utf8(Some(_))
                | ScalarValue::LargeUtf8(Some(_))
                | ScalarValue::Utf8View(Some(_)),
            _
        )
    )
}

fn input(to: TextType, expr: Expr) -> Expr {
    Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(ScalarUDF::from(TextInput::new(to))),
        vec![expr],
    ))
}

/// `json_in`, `jsonb_in`, `uuid_in`: text to the type, checked and in its canonical form.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TextInput {
    to: TextType,
    signature: Signature,
}

impl TextInput {
    fn new(to: TextType) -> TextInput {
        TextInput {
            to,
            signature: Signature::string(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for TextInput {
    fn name(&self) -> &str {
        match self.to {
            TextType::Json => "json_in",
            TextType::Jsonb => "jsonb_in",
            TextType::Uuid => "uuid_in",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(self.to.field(self.name()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let texts = args.args[0].to_array(args.number_rows)?;
        let texts = cast(&texts, &DataType::Utf8)?;
        let mut out = StringBuilder::new();
        for text in texts.as_string::<i32>() {
            match text {
                None => out.append_null(),
                Some(text) => match self.to.input(text) {
                    Ok(None) => out.append_value(text),
                    Ok(Some(canonical)) => out.append_value(canonical),
                    Err(e) => return Err(e.into()),
                },
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `array_in`: PostgreSQL's text of an array (`{a,"b c",NULL}`) to a list of its elements'
/// texts, which a cast then reads as the element type.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ArrayInput {
    signature: Signature,
}

impl Default for ArrayInput {
    fn default() -> Self {
        ArrayInput {
            signature: Signature::string(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for ArrayInput {
    fn name(&self) -> &str {
        "array_in"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::new_list(DataType::Utf8, true))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let texts = args.args[0].to_array(args.number_rows)?;
        let texts = cast(&texts, &DataType::Utf8)?;
        let mut out = ListBuilder::new(StringBuilder::new());
        for text in texts.as_string::<i32>() {
            match text {
                None => out.append_null(),
                Some(text) => {
                    for element in crate::sql::array_literal::parse(text)? {
                        out.values().append_option(element);
                    }
                    out.append(true);
                }
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `array_out`: an array as PostgreSQL's text of it (`{1,2}`; see
/// [`crate::pgwire::text::array_text`]).
#[derive(Debug, PartialEq, Eq, Hash)]
struct ArrayOutput {
    signature: Signature,
}

impl Default for ArrayOutput {
    fn default() -> Self {
        ArrayOutput {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for ArrayOutput {
    fn name(&self) -> &str {
        "array_out"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let lists = args.args[0].to_array(args.number_rows)?;
        let text = crate::pgwire::text::array_text(&lists)
            .map_err(|e| datafusion::error::DataFusionError::Execution(e.to_string()))?;
        Ok(ColumnarValue::Array(text))
    }
}

/// Another function under PostgreSQL's name, its result marked as a text type (or not).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Retyped {
    name: &'static str,
    inner: ScalarUDF,
    returns: Option<TextType>,
}

impl Retyped {
    pub fn udf(name: &'static str, inner: ScalarUDF, returns: Option<TextType>) -> ScalarUDF {
        ScalarUDF::from(Retyped {
            name,
            inner,
            returns,
        })
    }
}

impl ScalarUDFImpl for Retyped {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        self.inner.return_type(args)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let field = Field::new(self.name, self.inner.return_type(&types)?, true);
        Ok(Arc::new(match self.returns {
            Some(t) => field.with_metadata(t.metadata()),
            None => field,
        }))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.inner.invoke_with_args(args)
    }
}

/// `gen_random_uuid()`: DataFusion's `uuid()` (a version 4 UUID), as a `uuid`.
pub fn gen_random_uuid() -> ScalarUDF {
    Retyped::udf(
        "gen_random_uuid",
        datafusion::functions::string::uuid().as_ref().clone(),
        Some(TextType::Uuid),
    )
}

/// `pg_typeof(value)`: the PostgreSQL name of its argument's type, as `regtype` prints it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PgTypeof {
    signature: Signature,
}

impl Default for PgTypeof {
    fn default() -> Self {
        PgTypeof {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for PgTypeof {
    fn name(&self) -> &str {
        "pg_typeof"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = type_name(&args.arg_fields[0]);
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(name))))
    }
}

/// The name `pg_typeof` gives a value of `field`'s type: PostgreSQL's (`integer[]` for an
/// array, of any dimensions), or Arrow's for a type PostgreSQL has no name for.
fn type_name(field: &Field) -> String {
    match field.data_type() {
        DataType::Null => "unknown".to_string(),
        DataType::List(element) | DataType::LargeList(element) => match element.data_type() {
            DataType::List(_) | DataType::LargeList(_) => type_name(element),
            _ => format!("{}[]", type_name(element)),
        },
        data_type => match SqlType::from_field(field) {
            Some(t) => t.regtype_name().to_string(),
            None => data_type.to_string(),
        },
    }
}
