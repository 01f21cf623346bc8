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
    // Tokens come in order: a cursor walks the text once to each one's line and column.
    let mut cursor = Cursor {
        sql,
        offset: 0,
        line: 1,
        column: 1,
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
        let Some(start) = cursor.advance_to(token.span.start.line, token.span.start.column) else {
            return sql.to_string();
        };
        if !sql[start..].starts_with(name.as_str()) {
            return sql.to_string();
        }
        out.push_str(&sql[copied..start]);
        out.push_str(&format!("({name}::{declared})"));
        copied = start + name.len();
    }
    out.push_str(&sql[copied..]);
    out
}

/// A position in the text, as a byte offset and the tokenizer's 1-based line and column
/// (in characters).
struct Cursor<'a> {
    sql: &'a str,
    offset: usize,
    line: u64,
    column: u64,
}

impl Cursor<'_> {
    /// The byte offset of `line` and `column`, at or after the cursor; `None` if the text
    /// has no such place.
    fn advance_to(&mut self, line: u64, column: u64) -> Option<usize> {
        let sql = self.sql;
        for c in sql[self.offset..].chars() {
            if (self.line, self.column) >= (line, column) {
                break;
            }
            self.offset += c.len_utf8();
            if c == '\n' {
                self.line += 1;
                self.column = 1;
            } else {
                self.column += 1;
            }
        }
        ((self.line, self.column) == (line, column)).then_some(self.offset)
    }
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
        // A batch of rows on one line, as drivers send them: every parameter cast.
        let rows: Vec<String> = (0..1000)
            .map(|i| format!("(${}, 'é', ${})", 2 * i + 1, 2 * i + 2))
            .collect();
        let types = vec![Some("int8"); 2000];
        let cast =
            with_declared_types(&format!("INSERT INTO t VALUES {}", rows.join(", ")), &types);
        assert!(cast.starts_with("INSERT INTO t VALUES (($1::int8), 'é', ($2::int8)), "));
        assert!(cast.ends_with("(($1999::int8), 'é', ($2000::int8))"));
    }
}
