//! Parameter types a client declares when it prepares a statement.
//!
//! In PostgreSQL a type named in Parse is the parameter's type; what the statement's text
//! would infer counts only for parameters left unnamed. DataFusion infers every
//! parameter's type from where it appears (`1 + $1` makes `$1` an `integer`), so a client
//! that declared `bigint` would be told, and sent, an `integer`. [`with_declared_types`]
//! writes the declared numeric types into the statement as casts (`($1::int8)`), which
//! DataFusion then takes as the parameter's type.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

/// `sql` with each parameter whose declared type is one of `types` (by number, `None` for
/// an undeclared one) cast to it; `sql` as it is if it has none or does not tokenize.
pub fn with_declared_types(sql: &str, types: &[Option<&str>]) -> String {
    if types.iter().all(Option::is_none) {
        return sql.to_string();
    }
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .with_unescape(false)
        .tokenize_with_location()
    else {
        return sql.to_string();
    };
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    // The byte offset of a 1-based line and column (in characters).
    let offset = |line: u64, column: u64| -> Option<usize> {
        let start = *line_starts.get(usize::try_from(line).ok()?.checked_sub(1)?)?;
        let column = usize::try_from(column).ok()?.checked_sub(1)?;
        sql[start..]
            .char_indices()
            .nth(column)
            .map(|(i, _)| start + i)
    };
    let mut out = String::with_capacity(sql.len() + 16);
    let mut copied = 0;
    for token in tokens {
        let Token::Placeholder(name) = &token.token else {
            continue;
        };
        let Some(declared) = name
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| types.get(i).copied().flatten())
        else {
            continue;
        };
        let Some(start) = offset(token.span.start.line, token.span.start.column) else {
            return sql.to_string();
        };
        if !sql[start..].starts_with(name.as_str()) || start < copied {
            return sql.to_string();
        }
        out.push_str(&sql[copied..start]);
        out.push_str(&format!("({name}::{declared})"));
        copied = start + name.len();
    }
    out.push_str(&sql[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::with_declared_types;

    #[test]
    fn declared_parameters_are_cast_where_they_appear() {
        assert_eq!(
            with_declared_types("SELECT 1 + $1, $2", &[Some("int8"), None]),
            "SELECT 1 + ($1::int8), $2"
        );
        assert_eq!(
            with_declared_types("SELECT 'é$1',\n  $1 -- $1\n", &[Some("int4")]),
            "SELECT 'é$1',\n  ($1::int4) -- $1\n"
        );
        assert_eq!(with_declared_types("SELECT $1", &[None]), "SELECT $1");
        assert_eq!(
            with_declared_types("SELECT 'unterminated", &[Some("int4")]),
            "SELECT 'unterminated"
        );
    }
}
