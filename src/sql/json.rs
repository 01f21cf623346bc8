//! JSON documents as PostgreSQL's `json` and `jsonb` treat them (see
//! [`crate::sql::text_type`] for how values are marked as one or the other).
//!
//! A `json` value is its input text, checked to be JSON; a `jsonb` value is kept in
//! PostgreSQL's normal form (object keys sorted shorter first and then bytewise, a repeated
//! key keeping its last value, `", "` and `": "` between items, numbers as `numeric` writes
//! them), so equal documents are equal text and what is printed is what PostgreSQL prints.

use jiter::{Jiter, Peek};

use crate::error::{Error, Result};

/// A parsed JSON document. Numbers keep their text; objects keep their members in order, with
/// repeats (as `json` does; [`Value::normalized`] makes the `jsonb` form).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

/// Deeper documents are refused (54001) rather than risk the stack: a query thread's stack
/// holds this many levels with room to spare, in a debug build too. (PostgreSQL refuses them
/// too, at a depth its `max_stack_depth` allows.)
const MAX_DEPTH: usize = 200;

/// `text` as a JSON document; 22P02 with PostgreSQL's message if it is not one, 54001 if it
/// is nested too deeply.
pub fn parse(text: &str) -> Result<Value> {
    let invalid = |e: jiter::JiterError| {
        Error::data("22P02", format!("invalid input syntax for type json: {e}"))
    };
    let mut jiter = Jiter::new(text.as_bytes());
    let peek = jiter.peek().map_err(invalid)?;
    let value = parse_value(&mut jiter, peek, 0).map_err(|e| match e {
        Failure::Jiter(e) => invalid(e),
        Failure::TooDeep => Error::plan(
            "54001",
            format!("JSON document nested more than {MAX_DEPTH} levels deep"),
        ),
    })?;
    jiter.finish().map_err(invalid)?;
    Ok(value)
}

enum Failure {
    Jiter(jiter::JiterError),
    TooDeep,
}

impl From<jiter::JiterError> for Failure {
    fn from(e: jiter::JiterError) -> Self {
        Failure::Jiter(e)
    }
}

fn parse_value(jiter: &mut Jiter, peek: Peek, depth: usize) -> Result<Value, Failure> {
    if depth > MAX_DEPTH {
        return Err(Failure::TooDeep);
    }
    Ok(match peek {
        Peek::Null => {
            jiter.known_null()?;
            Value::Null
        }
        Peek::True | Peek::False => Value::Bool(jiter.known_bool(peek)?),
        Peek::String => Value::String(jiter.known_str()?.to_string()),
        Peek::Array => {
            let mut items = vec![];
            let mut next = jiter.known_array()?;
            while let Some(peek) = next {
                items.push(parse_value(jiter, peek, depth + 1)?);
                next = jiter.array_step()?;
            }
            Value::Array(items)
        }
        Peek::Object => {
            let mut members = vec![];
            let mut key = jiter.known_object()?.map(str::to_string);
            while let Some(k) = key {
                let peek = jiter.peek()?;
                members.push((k, parse_value(jiter, peek, depth + 1)?));
                key = jiter.next_key()?.map(str::to_string);
            }
            Value::Object(members)
        }
        _ => {
            let bytes = jiter.known_number_bytes(peek)?;
            Value::Number(String::from_utf8_lossy(bytes).into_owned())
        }
    })
}

impl Value {
    /// The document in `jsonb`'s normal form.
    pub fn normalized(self) -> Value {
        match self {
            Value::Number(n) => Value::Number(numeric(&n)),
            Value::Array(items) => Value::Array(items.into_iter().map(Value::normalized).collect()),
            Value::Object(members) => {
                let mut sorted: Vec<(String, Value)> = vec![];
                for (key, value) in members {
                    let value = value.normalized();
                    match sorted.iter_mut().find(|(k, _)| *k == key) {
                        Some(slot) => slot.1 = value,
                        None => sorted.push((key, value)),
                    }
                }
                sorted.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then(a.cmp(b)));
                Value::Object(sorted)
            }
            other => other,
        }
    }

    /// The text `jsonb` prints for this document.
    pub fn to_jsonb(self) -> String {
        let mut out = String::new();
        self.normalized().write(&mut out, ", ", ": ");
        out
    }

    /// The document written with `item` between items and `colon` after keys.
    pub fn write(&self, out: &mut String, item: &str, colon: &str) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => out.push_str(n),
            Value::String(s) => quote(out, s),
            Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(item);
                    }
                    v.write(out, item, colon);
                }
                out.push(']');
            }
            Value::Object(members) => {
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push_str(item);
                    }
                    quote(out, k);
                    out.push_str(colon);
                    v.write(out, item, colon);
                }
                out.push('}');
            }
        }
    }

    /// `jsonb_pretty`: four spaces a level, as PostgreSQL indents (an empty array or object
    /// too spans two lines).
    pub fn pretty(&self, out: &mut String, level: usize) {
        let indent = |out: &mut String, level: usize| {
            out.push('\n');
            out.push_str(&"    ".repeat(level));
        };
        match self {
            Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    indent(out, level + 1);
                    v.pretty(out, level + 1);
                }
                indent(out, level);
                out.push(']');
            }
            Value::Object(members) => {
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    indent(out, level + 1);
                    quote(out, k);
                    out.push_str(": ");
                    v.pretty(out, level + 1);
                }
                indent(out, level);
                out.push('}');
            }
            other => other.write(out, ", ", ": "),
        }
    }

    /// `json_typeof`'s name for the document's kind.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// `self @> other`, as `jsonb` containment is defined: an object contains the members of
    /// another whose values it contains, an array contains another whose every element it
    /// contains somewhere, and a top-level array contains a scalar among its elements.
    pub fn contains(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Array(_), other) if !matches!(other, Value::Array(_) | Value::Object(_)) => {
                self.contains_nested(&Value::Array(vec![other.clone()]))
            }
            _ => self.contains_nested(other),
        }
    }

    fn contains_nested(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Object(mine), Value::Object(theirs)) => theirs.iter().all(|(k, v)| {
                mine.iter()
                    .rev()
                    .find(|(key, _)| key == k)
                    .is_some_and(|(_, mine)| mine.contains_nested(v))
            }),
            (Value::Array(mine), Value::Array(theirs)) => theirs
                .iter()
                .all(|v| mine.iter().any(|m| m.contains_nested(v))),
            (Value::Number(a), Value::Number(b)) => numeric_eq(a, b),
            (a, b) => a == b,
        }
    }

    /// `self ? key`: a key of a top-level object, or a string among a top-level array's
    /// elements.
    pub fn has_key(&self, key: &str) -> bool {
        match self {
            Value::Object(members) => members.iter().any(|(k, _)| k == key),
            Value::Array(items) => items
                .iter()
                .any(|v| matches!(v, Value::String(s) if s == key)),
            Value::String(s) => s == key,
            _ => false,
        }
    }
}

/// `s` as a JSON string, escaped as PostgreSQL escapes it.
pub fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON number as PostgreSQL's `numeric` prints it: an exponent is spelled out (`1e2` is
/// `100`, `1.5e-3` is `0.0015`) and a negative zero loses its sign.
fn numeric(n: &str) -> String {
    let (negative, digits, point) = decimal(n);
    let scale = digits.len() as i64 - point;
    let mut out = String::new();
    if negative && digits.bytes().any(|b| b != b'0') {
        out.push('-');
    }
    if point <= 0 {
        out.push('0');
    } else {
        let whole = &digits[..(point as usize).min(digits.len())];
        let whole = whole.trim_start_matches('0');
        out.push_str(if whole.is_empty() { "0" } else { whole });
        for _ in digits.len() as i64..point {
            out.push('0');
        }
    }
    if scale > 0 {
        out.push('.');
        for _ in point..0 {
            out.push('0');
        }
        out.push_str(&digits[point.max(0) as usize..]);
    }
    out
}

/// A number's sign, its digits, and where the decimal point falls among them.
fn decimal(n: &str) -> (bool, String, i64) {
    let (negative, n) = match n.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, n),
    };
    let (mantissa, exponent) = match n.find(['e', 'E']) {
        Some(i) => (&n[..i], n[i + 1..].parse::<i64>().unwrap_or(0)),
        None => (n, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    (negative, digits, whole.len() as i64 + exponent)
}

/// Whether two JSON numbers are the same number (`1.0` and `1`).
fn numeric_eq(a: &str, b: &str) -> bool {
    fn canonical(n: &str) -> (bool, String, i64) {
        let (negative, digits, point) = decimal(n);
        let leading = digits.len() - digits.trim_start_matches('0').len();
        let significant = digits.trim_matches('0').to_string();
        if significant.is_empty() {
            return (false, significant, 0);
        }
        (negative, significant, point - leading as i64)
    }
    canonical(a) == canonical(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jsonb(text: &str) -> String {
        parse(text).unwrap().to_jsonb()
    }

    #[test]
    fn jsonb_prints_as_postgres_does() {
        // Each answer is PostgreSQL 15's.
        assert_eq!(
            jsonb(r#"{"b":1, "a":[1,2,{"zz":null,"y":true}], "aa": "x"}"#),
            r#"{"a": [1, 2, {"y": true, "zz": null}], "b": 1, "aa": "x"}"#
        );
        assert_eq!(jsonb(r#"{"a":1,"a":2}"#), r#"{"a": 2}"#);
        assert_eq!(
            jsonb("[1e2, 1.50, -0, 1.5e-3, 0.1e1, 12E+1]"),
            "[100, 1.50, 0, 0.0015, 1, 120]"
        );
        assert_eq!(jsonb(r#""a\u00e9\n\"""#), "\"a\u{e9}\\n\\\"\"");
        assert_eq!(jsonb(" [ ] "), "[]");
        assert!(parse("{\"a\":}").is_err());
        assert!(parse("[1] x").is_err());
        assert!(parse(&"[".repeat(5000)).is_err());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(parse(&deep).unwrap().to_jsonb(), deep);
    }

    #[test]
    fn containment_and_keys_are_postgres_s() {
        let v = |t: &str| parse(t).unwrap();
        assert!(v(r#"{"a":1,"b":[1,2,3]}"#).contains(&v(r#"{"b":[3,1]}"#)));
        assert!(!v(r#"{"a":1}"#).contains(&v(r#"{"a":1,"b":2}"#)));
        assert!(v(r#"["foo","bar"]"#).contains(&v(r#""foo""#)));
        assert!(!v(r#"[1,2,[1,3]]"#).contains(&v("[1,3]")));
        assert!(v(r#"[1,2,[1,3]]"#).contains(&v("[[1,3]]")));
        assert!(v("[1.0]").contains(&v("[1]")));
        assert!(v(r#"["a","b"]"#).has_key("a"));
        assert!(v(r#"{"a":null}"#).has_key("a"));
        assert!(!v(r#"{"x":{"a":1}}"#).has_key("a"));
    }

    #[test]
    fn pretty_indents_four_spaces() {
        let mut out = String::new();
        parse(r#"{"a":[1,{}],"b":{"c":"d"}}"#)
            .unwrap()
            .normalized()
            .pretty(&mut out, 0);
        assert_eq!(
            out,
            "{\n    \"a\": [\n        1,\n        {\n        }\n    ],\n    \"b\": {\n        \"c\": \"d\"\n    }\n}"
        );
    }
}
