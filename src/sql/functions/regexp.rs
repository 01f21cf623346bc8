//! `regexp_match` with PostgreSQL's answers, PostgreSQL's `regexp_substr`, and the rewrite of
//! `(regexp_match(s, pattern))[n]` into `regexp_substr`, which finds the same substring
//! without building an array per row to take one element of it.
//!
//! Patterns use the `regex` crate's syntax and flags (`i`, `m`, `s`, `x`, …), as every
//! DataFusion regular-expression function does; `g` is refused, as PostgreSQL refuses it here.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use datafusion::arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, GenericStringBuilder, Int64Array, LargeStringArray,
    LargeStringBuilder, ListBuilder, OffsetSizeTrait, StringArray, StringBuilder, StringViewArray,
    StringViewBuilder,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::config::ConfigOptions;
use datafusion::functions::regex::regexpmatch::RegexpMatchFunc;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility, lit,
};
use regex::{CaptureLocations, Regex};

use crate::error::Error;

/// `regexp_match(string, pattern [, flags])`: the capture groups of the first match as a text
/// array (the whole match when the pattern has no groups), NULL when nothing matches. Unlike
/// DataFusion's, a group that took no part in the match is a NULL element, as in PostgreSQL,
/// so `(regexp_match(…))[n]` is always the n-th group; and the capture positions of a pattern
/// are kept for the whole batch instead of allocated per row.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct RegexpMatch {
    inner: RegexpMatchFunc,
}

impl ScalarUDFImpl for RegexpMatch {
    fn name(&self) -> &str {
        self.inner.name()
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
        let DataType::List(item) = args.return_field.data_type() else {
            // A NULL string: nothing to match.
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from(
                args.return_field.data_type(),
            )?));
        };
        let (values, pattern, flags) = match args.args.as_slice() {
            [values, pattern] => (values, pattern, None),
            [values, pattern, flags] => (values, pattern, Some(flags)),
            other => return exec_err!("regexp_match takes 2 or 3 arguments, not {}", other.len()),
        };
        let constant = all_constant(&args.args);
        let rows = if constant { 1 } else { args.number_rows };
        let values = Texts::of(values)?;
        let mut patterns = Patterns::new("regexp_match", pattern, flags)?;
        let lists = match item.data_type() {
            DataType::Utf8 => match_lists(&values, &mut patterns, rows, StringBuilder::new()),
            DataType::LargeUtf8 => {
                match_lists(&values, &mut patterns, rows, LargeStringBuilder::new())
            }
            DataType::Utf8View => {
                match_lists(&values, &mut patterns, rows, StringViewBuilder::new())
            }
            other => exec_err!("regexp_match cannot return arrays of {other}"),
        }?;
        columnar(constant, lists)
    }
}

/// Each row's first match's groups, as a list per row.
fn match_lists<B: TextBuilder>(
    values: &Texts<'_>,
    patterns: &mut Patterns<'_>,
    rows: usize,
    builder: B,
) -> Result<ArrayRef> {
    let mut lists = ListBuilder::with_capacity(builder, rows);
    for row in 0..rows {
        let Some(value) = values.get(row) else {
            lists.append(false);
            continue;
        };
        let Some((regex, groups)) = patterns.at(row)? else {
            lists.append(false);
            continue;
        };
        if regex.captures_read(groups, value).is_none() {
            lists.append(false);
            continue;
        }
        let first = if groups.len() == 1 { 0 } else { 1 };
        for group in first..groups.len() {
            lists
                .values()
                .push(groups.get(group).map(|(start, end)| &value[start..end]));
        }
        lists.append(true);
    }
    Ok(Arc::new(lists.finish()))
}

/// `regexp_split_to_array(string, pattern [, flags])`: the pieces of `string` between the
/// matches of `pattern`, as PostgreSQL splits: a zero-length match at the start or end of the
/// string, or right after another match, splits nothing (`''` splits into characters).
/// `regexp_split_to_table` is this array unnested (`sql::rewrite`).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RegexpSplitToArray {
    signature: Signature,
}

impl Default for RegexpSplitToArray {
    fn default() -> Self {
        RegexpSplitToArray {
            signature: Signature::one_of(
                vec![
                    datafusion::logical_expr::TypeSignature::Exact(vec![DataType::Utf8; 2]),
                    datafusion::logical_expr::TypeSignature::Exact(vec![DataType::Utf8; 3]),
                ],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for RegexpSplitToArray {
    fn name(&self) -> &str {
        "regexp_split_to_array"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::new_list(DataType::Utf8, true))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let constant = all_constant(&args.args);
        let rows = if constant { 1 } else { args.number_rows };
        let values = Texts::of(&args.args[0])?;
        let mut patterns = Patterns::new("regexp_split_to_array", &args.args[1], args.args.get(2))?;
        let mut lists = ListBuilder::with_capacity(StringBuilder::new(), rows);
        for row in 0..rows {
            let (Some(value), Some((regex, _))) = (values.get(row), patterns.at(row)?) else {
                lists.append(false);
                continue;
            };
            let mut start = 0;
            let mut last_end = None;
            for found in regex.find_iter(value) {
                let at = found.start();
                if found.is_empty() && (at == 0 || at == value.len() || Some(at) == last_end) {
                    continue;
                }
                lists.values().append_value(&value[start..at]);
                start = found.end();
                last_end = Some(found.end());
            }
            lists.values().append_value(&value[start..]);
            lists.append(true);
        }
        columnar(constant, Arc::new(lists.finish()))
    }
}

/// `regexp_substr(string, pattern [, start [, n [, flags [, subexpr]]]])`, as PostgreSQL has
/// it: the substring matching the `n`-th match of `pattern` (matches counted without overlap
/// from character `start`), or its `subexpr`-th capture group; NULL when there is no such
/// match or the group took no part in it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RegexpSubstr {
    signature: Signature,
}

impl Default for RegexpSubstr {
    fn default() -> Self {
        RegexpSubstr {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// Which of `regexp_substr`'s arguments are integers (the others are text).
const SUBSTR_INTEGERS: [bool; 6] = [false, false, true, true, false, true];

impl ScalarUDFImpl for RegexpSubstr {
    fn name(&self) -> &str {
        "regexp_substr"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let fits = (2..=6).contains(&arg_types.len())
            && arg_types
                .iter()
                .zip(SUBSTR_INTEGERS)
                .all(|(given, integer)| {
                    given.is_null()
                        || if integer {
                            given.is_integer()
                        } else {
                            matches!(
                                given,
                                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                            )
                        }
                });
        if !fits {
            let given: Vec<String> = arg_types.iter().map(|t| t.to_string()).collect();
            return plan_err!(
                "No function matches regexp_substr({}): it takes (text, text [, integer \
                 [, integer [, text [, integer]]]])",
                given.join(", ")
            );
        }
        Ok(arg_types
            .iter()
            .zip(SUBSTR_INTEGERS)
            .enumerate()
            .map(|(at, (given, integer))| match (at, integer) {
                (_, true) => DataType::Int64,
                (0, _) if !given.is_null() => given.clone(),
                _ if given.is_null() => DataType::Utf8,
                _ => given.clone(),
            })
            .collect())
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types.first().cloned().unwrap_or(DataType::Utf8))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let constant = all_constant(&args.args);
        let rows = if constant { 1 } else { args.number_rows };
        let arg = |at: usize| args.args.get(at);
        let values = Texts::of(&args.args[0])?;
        let mut patterns = Patterns::new("regexp_substr", &args.args[1], arg(4))?;
        let starts = Integers::of(arg(2), 1)?;
        let occurrences = Integers::of(arg(3), 1)?;
        let subexprs = Integers::of(arg(5), 0)?;
        let call = Substr {
            values: &values,
            starts: &starts,
            occurrences: &occurrences,
            subexprs: &subexprs,
        };
        let found = match args.return_field.data_type() {
            DataType::Utf8 => call.run(&mut patterns, rows, StringBuilder::new()),
            DataType::LargeUtf8 => call.run(&mut patterns, rows, LargeStringBuilder::new()),
            DataType::Utf8View => call.run(&mut patterns, rows, StringViewBuilder::new()),
            other => exec_err!("regexp_substr cannot return {other}"),
        }?;
        columnar(constant, found)
    }
}

/// The per-row arguments of one `regexp_substr` call besides its pattern.
struct Substr<'a> {
    values: &'a Texts<'a>,
    starts: &'a Integers<'a>,
    occurrences: &'a Integers<'a>,
    subexprs: &'a Integers<'a>,
}

impl Substr<'_> {
    fn run<B: TextBuilder>(
        &self,
        patterns: &mut Patterns<'_>,
        rows: usize,
        mut out: B,
    ) -> Result<ArrayRef> {
        for row in 0..rows {
            let (Some(value), Some(start), Some(occurrence), Some(subexpr)) = (
                self.values.get(row),
                self.starts.get(row),
                self.occurrences.get(row),
                self.subexprs.get(row),
            ) else {
                out.push(None);
                continue;
            };
            let start = positive("start", start, 1)?;
            let occurrence = positive("n", occurrence, 1)?;
            let subexpr = positive("subexpr", subexpr, 0)?;
            let Some((regex, groups)) = patterns.at(row)? else {
                out.push(None);
                continue;
            };
            out.push(nth_match(value, regex, groups, start, occurrence, subexpr));
        }
        Ok(ArrayBuilder::finish(&mut out))
    }
}

/// `value` as an index, if it is at least `least` (never negative); PostgreSQL's error
/// otherwise. Checked for every row, so the error is built out of line.
#[inline]
fn positive(parameter: &'static str, value: i64, least: i64) -> Result<usize> {
    match usize::try_from(value) {
        Ok(index) if value >= least => Ok(index),
        _ => Err(out_of_range(parameter, value)),
    }
}

#[cold]
fn out_of_range(parameter: &str, value: i64) -> DataFusionError {
    error(
        "22023",
        format!("invalid value for parameter \"{parameter}\": {value}"),
    )
}

/// The `subexpr`-th group of the `occurrence`-th match of `regex` in `value` from character
/// `start` (both counted from 1). After an empty match the search moves one character on, as
/// PostgreSQL's does.
fn nth_match<'v>(
    value: &'v str,
    regex: &Regex,
    groups: &mut CaptureLocations,
    start: usize,
    occurrence: usize,
    subexpr: usize,
) -> Option<&'v str> {
    let mut at = if start == 1 {
        0
    } else {
        value
            .char_indices()
            .map(|(at, _)| at)
            .chain([value.len()])
            .nth(start - 1)?
    };
    for found in 1.. {
        let whole = regex.captures_read_at(groups, value, at)?;
        if found == occurrence {
            break;
        }
        at = if whole.is_empty() {
            let next = value[whole.end()..].chars().next()?;
            whole.end() + next.len_utf8()
        } else {
            whole.end()
        };
    }
    let (start, end) = groups.get(subexpr)?;
    Some(&value[start..end])
}

/// `(regexp_match(s, pattern [, flags]))[n]`, with the pattern, flags and `n` constants and
/// `n` naming one of the pattern's groups, becomes `regexp_substr(s, pattern, 1, 1, flags,
/// n)`: the same substring (or NULL), without an array built per row to take one element of.
/// Nexmark q21 filters and projects on such an expression.
#[derive(Debug)]
pub struct RegexpMatchElement {
    substr: Arc<ScalarUDF>,
}

impl Default for RegexpMatchElement {
    fn default() -> Self {
        RegexpMatchElement {
            substr: Arc::new(ScalarUDF::from(RegexpSubstr::default())),
        }
    }
}

impl FunctionRewrite for RegexpMatchElement {
    fn name(&self) -> &str {
        "regexp_match_element"
    }

    fn rewrite(
        &self,
        expr: Expr,
        _schema: &DFSchema,
        _config: &ConfigOptions,
    ) -> Result<Transformed<Expr>> {
        match self.substring_call(&expr) {
            Some(call) => Ok(Transformed::yes(call)),
            None => Ok(Transformed::no(expr)),
        }
    }
}

impl RegexpMatchElement {
    fn substring_call(&self, expr: &Expr) -> Option<Expr> {
        let Expr::ScalarFunction(element) = expr else {
            return None;
        };
        let [
            Expr::ScalarFunction(matched),
            Expr::Literal(ScalarValue::Int64(Some(n)), _),
        ] = element.args.as_slice()
        else {
            return None;
        };
        if element.func.name() != "array_element" || matched.func.name() != "regexp_match" {
            return None;
        }
        let (value, pattern, flags) = match matched.args.as_slice() {
            [value, pattern] => (value, pattern, lit("")),
            [value, pattern, flags] => (value, pattern, flags.clone()),
            _ => return None,
        };
        let regex = KEPT
            .compile(
                "regexp_match",
                constant_text(pattern)?,
                constant_text(&flags)?,
            )
            .ok()?;
        // Without groups the array holds the whole match, group 0.
        let group = match regex.captures_len() - 1 {
            0 if *n == 1 => 0,
            groups if (1..=groups).contains(&usize::try_from(*n).ok()?) => *n,
            _ => return None,
        };
        Some(Expr::ScalarFunction(ScalarFunction::new_udf(
            self.substr.clone(),
            vec![
                value.clone(),
                pattern.clone(),
                lit(1_i64),
                lit(1_i64),
                flags,
                lit(group),
            ],
        )))
    }
}

/// The text of a non-NULL text literal.
fn constant_text(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Literal(value, _) => value.try_as_str()?,
        _ => None,
    }
}

/// Whether every argument of a call is a constant: then it answers for one row, with a
/// constant.
fn all_constant(args: &[ColumnarValue]) -> bool {
    args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)))
}

/// `result` as the call's value: a constant when every argument was one.
fn columnar(constant: bool, result: ArrayRef) -> Result<ColumnarValue> {
    if constant {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
            &result, 0,
        )?))
    } else {
        Ok(ColumnarValue::Array(result))
    }
}

/// A text argument: one constant or a value per row, in any of Arrow's string types.
enum Texts<'a> {
    Constant(Option<&'a str>),
    Utf8(&'a StringArray),
    Large(&'a LargeStringArray),
    View(&'a StringViewArray),
}

impl<'a> Texts<'a> {
    fn of(arg: &'a ColumnarValue) -> Result<Texts<'a>> {
        Ok(match arg {
            ColumnarValue::Scalar(value) if value.is_null() => Texts::Constant(None),
            ColumnarValue::Scalar(value) => match value.try_as_str() {
                Some(text) => Texts::Constant(text),
                None => return exec_err!("expected text, got {}", value.data_type()),
            },
            ColumnarValue::Array(values) => match values.data_type() {
                DataType::Utf8 => Texts::Utf8(values.as_string()),
                DataType::LargeUtf8 => Texts::Large(values.as_string()),
                DataType::Utf8View => Texts::View(values.as_string_view()),
                other => return exec_err!("expected text, got {other}"),
            },
        })
    }

    fn get(&self, row: usize) -> Option<&'a str> {
        match self {
            Texts::Constant(value) => *value,
            Texts::Utf8(values) => values.is_valid(row).then(|| values.value(row)),
            Texts::Large(values) => values.is_valid(row).then(|| values.value(row)),
            Texts::View(values) => values.is_valid(row).then(|| values.value(row)),
        }
    }

    /// The value of every row, when the argument is a constant.
    fn constant(&self) -> Option<Option<&'a str>> {
        match self {
            Texts::Constant(value) => Some(*value),
            _ => None,
        }
    }
}

/// An integer argument (coerced to `Int64`): one constant or a value per row.
enum Integers<'a> {
    Constant(Option<i64>),
    Rows(&'a Int64Array),
}

impl<'a> Integers<'a> {
    /// The argument, or `default` for every row when it was not given.
    fn of(arg: Option<&'a ColumnarValue>, default: i64) -> Result<Integers<'a>> {
        Ok(match arg {
            None => Integers::Constant(Some(default)),
            Some(ColumnarValue::Scalar(ScalarValue::Int64(value))) => Integers::Constant(*value),
            Some(ColumnarValue::Scalar(value)) if value.is_null() => Integers::Constant(None),
            Some(ColumnarValue::Array(values)) if values.data_type() == &DataType::Int64 => {
                Integers::Rows(values.as_primitive())
            }
            Some(other) => return exec_err!("expected bigint, got {}", other.data_type()),
        })
    }

    fn get(&self, row: usize) -> Option<i64> {
        match self {
            Integers::Constant(value) => *value,
            Integers::Rows(values) => values.is_valid(row).then(|| values.value(row)),
        }
    }
}

/// A regular expression and the capture positions it fills.
type Compiled = (Regex, CaptureLocations);

/// The compiled patterns of one call: compiled once when the pattern and flags are
/// constants, else once per distinct pattern and flags met in the batch.
struct Patterns<'a> {
    function: &'static str,
    patterns: Texts<'a>,
    flags: Texts<'a>,
    constant: Option<Compiled>,
    /// By flags, then pattern.
    met: HashMap<String, HashMap<String, Compiled>>,
}

/// Distinct patterns kept per batch before the cache starts over: a column of patterns all
/// different compiles each once without holding them all.
const MAX_PATTERNS: usize = 64;

impl<'a> Patterns<'a> {
    fn new(
        function: &'static str,
        pattern: &'a ColumnarValue,
        flags: Option<&'a ColumnarValue>,
    ) -> Result<Patterns<'a>> {
        let patterns = Texts::of(pattern)?;
        let flags = match flags {
            Some(flags) => Texts::of(flags)?,
            None => Texts::Constant(Some("")),
        };
        let constant = match (patterns.constant(), flags.constant()) {
            (Some(Some(pattern)), Some(Some(flags))) => {
                let regex = KEPT.compile(function, pattern, flags)?;
                let groups = regex.capture_locations();
                Some((regex, groups))
            }
            _ => None,
        };
        Ok(Patterns {
            function,
            patterns,
            flags,
            constant,
            met: HashMap::new(),
        })
    }

    /// The regular expression of `row` and its capture positions; `None` when its pattern
    /// or flags are NULL.
    fn at(&mut self, row: usize) -> Result<Option<(&Regex, &mut CaptureLocations)>> {
        if let Some((regex, groups)) = &mut self.constant {
            return Ok(Some((regex, groups)));
        }
        let (Some(pattern), Some(flags)) = (self.patterns.get(row), self.flags.get(row)) else {
            return Ok(None);
        };
        let known = self
            .met
            .get(flags)
            .is_some_and(|patterns| patterns.contains_key(pattern));
        if !known {
            if self.met.values().map(HashMap::len).sum::<usize>() >= MAX_PATTERNS {
                self.met.clear();
            }
            let regex = compile(self.function, pattern, flags)?;
            let groups = regex.capture_locations();
            self.met
                .entry(flags.to_string())
                .or_default()
                .insert(pattern.to_string(), (regex, groups));
        }
        let (regex, groups) = self
            .met
            .get_mut(flags)
            .and_then(|patterns| patterns.get_mut(pattern))
            .expect("compiled just above");
        Ok(Some((regex, groups)))
    }
}

/// Constant patterns compiled lately, shared by every query and batch: compiling a pattern
/// such as Nexmark q21's takes as long as matching it against about a thousand URLs, and a
/// batch is 8,192 rows. (Patterns that change from row to row are compiled per batch, by
/// [`Patterns`], so they cannot push the constant ones out.)
static KEPT: LazyLock<Kept> = LazyLock::new(|| Kept::new(MAX_KEPT));

/// Patterns kept compiled before [`KEPT`] starts over: enough for the queries running at
/// once, and few, since each holds its automata (its NFA and one-pass DFA, large for a
/// large pattern). What a kept pattern hands out is a clone, with a pool of matching caches
/// of its own: the threads matching one batch's clone never wait on another's.
const MAX_KEPT: usize = 16;

/// Compiled patterns by pattern and flags, at most `max`. A `Regex` is cheap to clone and
/// safe to use from many threads.
struct Kept {
    patterns: Mutex<HashMap<(String, String), Regex>>,
    max: usize,
}

impl Kept {
    fn new(max: usize) -> Kept {
        Kept {
            patterns: Mutex::default(),
            max,
        }
    }

    /// `pattern` compiled with `flags`, as [`compile`] does, once while it stays kept.
    fn compile(&self, function: &str, pattern: &str, flags: &str) -> Result<Regex> {
        let key = (pattern.to_string(), flags.to_string());
        if let Some(regex) = self.lock().get(&key) {
            return Ok(regex.clone());
        }
        let regex = compile(function, pattern, flags)?;
        let mut kept = self.lock();
        if kept.len() >= self.max {
            kept.clear();
        }
        kept.insert(key, regex.clone());
        Ok(regex)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Regex>> {
        // The map is whole between statements: a panic elsewhere leaves nothing half-done.
        self.patterns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `pattern` compiled with `flags`; PostgreSQL's errors for a bad pattern or the `g` flag.
fn compile(function: &str, pattern: &str, flags: &str) -> Result<Regex> {
    if flags.contains('g') {
        return Err(error(
            "22023",
            format!("{function}() does not support the \"global\" option"),
        ));
    }
    let source = match flags {
        "" => Cow::Borrowed(pattern),
        flags => Cow::Owned(format!("(?{flags}){pattern}")),
    };
    Regex::new(&source).map_err(|e| {
        // A syntax error's text draws the pattern with a caret under the fault; PostgreSQL
        // says what is wrong in one line.
        let why = match &e {
            regex::Error::Syntax(text) => text
                .lines()
                .find_map(|line| line.strip_prefix("error: "))
                .unwrap_or(text)
                .to_string(),
            other => other.to_string(),
        };
        error("2201B", format!("invalid regular expression: {why}"))
    })
}

fn error(code: &'static str, message: String) -> DataFusionError {
    DataFusionError::External(Box::new(Error::data(code, message)))
}

/// A builder of one of Arrow's string types.
trait TextBuilder: ArrayBuilder {
    fn push(&mut self, text: Option<&str>);
}

impl<O: OffsetSizeTrait> TextBuilder for GenericStringBuilder<O> {
    fn push(&mut self, text: Option<&str>) {
        self.append_option(text);
    }
}

impl TextBuilder for StringViewBuilder {
    fn push(&mut self, text: Option<&str>) {
        self.append_option(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Field;

    fn invoke(udf: &dyn ScalarUDFImpl, args: Vec<ColumnarValue>) -> Result<ArrayRef> {
        let rows = args
            .iter()
            .find_map(|a| match a {
                ColumnarValue::Array(a) => Some(a.len()),
                ColumnarValue::Scalar(_) => None,
            })
            .unwrap_or(1);
        let types: Vec<DataType> = args.iter().map(|a| a.data_type()).collect();
        let returns = udf.return_type(&types)?;
        let args = ScalarFunctionArgs {
            arg_fields: types
                .iter()
                .map(|t| Arc::new(Field::new("a", t.clone(), true)))
                .collect(),
            args,
            number_rows: rows,
            return_field: Arc::new(Field::new("r", returns, true)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        udf.invoke_with_args(args)?.into_array(rows)
    }

    fn texts(values: &[Option<&str>]) -> ColumnarValue {
        ColumnarValue::Array(Arc::new(StringArray::from(values.to_vec())))
    }

    fn text(value: &str) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(value.into())))
    }

    fn int(value: i64) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Int64(Some(value)))
    }

    fn strings(array: &ArrayRef) -> Vec<Option<String>> {
        let array = array.as_string::<i32>();
        array.iter().map(|s| s.map(str::to_string)).collect()
    }

    fn lists(array: &ArrayRef) -> Vec<Option<Vec<Option<String>>>> {
        let lists = array.as_list::<i32>();
        (0..lists.len())
            .map(|row| lists.is_valid(row).then(|| strings(&lists.value(row))))
            .collect()
    }

    fn some(values: &[Option<&str>]) -> Option<Vec<Option<String>>> {
        Some(values.iter().map(|v| v.map(str::to_string)).collect())
    }

    #[test]
    fn regexp_match_gives_null_for_groups_outside_the_match() {
        let values = texts(&[Some("y"), Some("xy"), Some("z"), None, Some("abc")]);
        let got = invoke(&RegexpMatch::default(), vec![values, text("(x)?(y)")]).unwrap();
        assert_eq!(
            lists(&got),
            vec![
                some(&[None, Some("y")]),
                some(&[Some("x"), Some("y")]),
                None,
                None,
                None,
            ]
        );
        // Without groups, the whole match.
        let values = texts(&[Some("abcabc"), Some("x")]);
        let got = invoke(&RegexpMatch::default(), vec![values, text("b.")]).unwrap();
        assert_eq!(lists(&got), vec![some(&[Some("bc")]), None]);
    }

    #[test]
    fn regexp_match_takes_flags_and_patterns_per_row() {
        let values = texts(&[Some("ABC"), Some("abc"), Some("abc"), Some("abc")]);
        let patterns = texts(&[Some("b"), Some("(c)"), None, Some("(c)")]);
        let flags = texts(&[Some("i"), Some(""), Some(""), None]);
        let got = invoke(&RegexpMatch::default(), vec![values, patterns, flags]).unwrap();
        assert_eq!(
            lists(&got),
            vec![some(&[Some("B")]), some(&[Some("c")]), None, None]
        );
    }

    #[test]
    fn compiled_patterns_are_kept_and_the_kept_set_stays_bounded() {
        let kept = Kept::new(4);
        let held = |pattern: &str, flags: &str| {
            kept.lock()
                .contains_key(&(pattern.to_string(), flags.to_string()))
        };
        kept.compile("regexp_match", "kept-(a+)", "i").unwrap();
        assert!(held("kept-(a+)", "i"));
        kept.compile("regexp_match", "kept-(a+)", "i").unwrap();
        assert_eq!(kept.lock().len(), 1, "compiled once, kept once");
        // Flags are part of the key.
        let cased = kept.compile("regexp_match", "kept-(a+)", "").unwrap();
        assert!(!cased.is_match("KEPT-A"));
        assert!(
            kept.lock()
                .get(&("kept-(a+)".into(), "i".into()))
                .unwrap()
                .is_match("KEPT-A")
        );
        // Errors are not kept.
        assert!(kept.compile("regexp_match", "(", "").is_err());
        assert!(kept.compile("regexp_match", "a", "g").is_err());
        assert!(!held("(", "") && !held("a", "g"));
        // More patterns than are kept: each still compiled as written.
        for n in 0..10 {
            let regex = kept
                .compile("regexp_match", &format!("^x{{{n}}}$"), "")
                .unwrap();
            assert!(regex.is_match(&"x".repeat(n)), "{n}");
            assert!(!regex.is_match(&"x".repeat(n + 1)), "{n}");
            assert!(kept.lock().len() <= 4);
            assert!(held(&format!("^x{{{n}}}$"), ""));
        }
    }

    #[test]
    fn bad_patterns_and_the_global_flag_are_postgres_errors() {
        let values = texts(&[Some("a")]);
        let bad = invoke(&RegexpMatch::default(), vec![values.clone(), text("(")]);
        let bad = Error::from_datafusion(bad.unwrap_err());
        assert_eq!(bad.sqlstate(), "2201B", "{bad}");
        let global = invoke(
            &RegexpMatch::default(),
            vec![values.clone(), text("a"), text("g")],
        );
        let global = Error::from_datafusion(global.unwrap_err());
        assert_eq!(global.sqlstate(), "22023", "{global}");
        let start = invoke(&RegexpSubstr::default(), vec![values, text("a"), int(0)]);
        let start = Error::from_datafusion(start.unwrap_err());
        assert_eq!(start.sqlstate(), "22023", "{start}");
    }

    #[test]
    fn regexp_substr_counts_characters_and_matches_as_postgres_does() {
        let substr =
            |args: Vec<ColumnarValue>| strings(&invoke(&RegexpSubstr::default(), args).unwrap());
        let value = || texts(&[Some("1 22 333 ü4444"), None]);
        let one = |s: &str| vec![Some(s.to_string()), None];
        assert_eq!(substr(vec![value(), text("[0-9]+")]), one("1"));
        assert_eq!(substr(vec![value(), text("[0-9]+"), int(2)]), one("22"));
        assert_eq!(
            substr(vec![value(), text("[0-9]+"), int(1), int(3)]),
            one("333")
        );
        // Character 11 is the one after `ü`, which takes two bytes.
        assert_eq!(substr(vec![value(), text("[0-9]+"), int(11)]), one("4444"));
        assert_eq!(
            substr(vec![value(), text("[0-9]+"), int(1), int(5)]),
            vec![None, None]
        );
        assert_eq!(
            substr(vec![
                value(),
                text("([0-9])([0-9]*)"),
                int(1),
                int(2),
                text(""),
                int(2)
            ]),
            one("2")
        );
        assert_eq!(
            substr(vec![
                value(),
                text("(x)?([0-9]+)"),
                int(1),
                int(1),
                text(""),
                int(1)
            ]),
            vec![None, None]
        );
        assert_eq!(
            substr(vec![
                value(),
                text("([0-9]+)"),
                int(1),
                int(1),
                text(""),
                int(2)
            ]),
            vec![None, None]
        );
        // Empty matches move the search on by one character.
        let empty = texts(&[Some("ab")]);
        assert_eq!(
            substr(vec![empty.clone(), text("x*"), int(1), int(3)]),
            vec![Some(String::new())]
        );
        assert_eq!(substr(vec![empty, text("x*"), int(1), int(4)]), vec![None]);
    }

    /// The rewritten call answers as `array_element(regexp_match(…), n)` does, for every group.
    #[test]
    fn the_rewrite_keeps_every_element() {
        let values = [
            Some("https://www.nexmark.com/a/b?channel_id=12&x=1"),
            Some("channel_id=7"),
            Some("x&channel_id="),
            Some("no channel here"),
            None,
        ];
        for (pattern, n) in [
            ("(&|^)channel_id=([^&]*)", 1),
            ("(&|^)channel_id=([^&]*)", 2),
            ("channel_id=[0-9]+", 1),
        ] {
            let lists = lists(
                &invoke(&RegexpMatch::default(), vec![texts(&values), text(pattern)]).unwrap(),
            );
            let expected: Vec<Option<String>> = lists
                .iter()
                .map(|list| list.as_ref().and_then(|l| l[n - 1].clone()))
                .collect();
            let rewritten = RegexpMatchElement::default()
                .substring_call(&Expr::ScalarFunction(ScalarFunction::new_udf(
                    datafusion::functions_nested::extract::array_element_udf(),
                    vec![
                        Expr::ScalarFunction(ScalarFunction::new_udf(
                            Arc::new(ScalarUDF::from(RegexpMatch::default())),
                            vec![datafusion::prelude::col("v"), lit(pattern)],
                        )),
                        lit(n as i64),
                    ],
                )))
                .expect("rewritten");
            let Expr::ScalarFunction(call) = rewritten else {
                panic!("a call");
            };
            let args = call
                .args
                .iter()
                .map(|a| match a {
                    Expr::Column(_) => texts(&values),
                    Expr::Literal(v, _) => ColumnarValue::Scalar(v.clone()),
                    other => panic!("{other}"),
                })
                .collect();
            let got = strings(&invoke(&RegexpSubstr::default(), args).unwrap());
            assert_eq!(got, expected, "{pattern} [{n}]");
        }
    }
}
