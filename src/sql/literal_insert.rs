//! A scanner for the statement bulk loaders send most: `INSERT INTO name [(columns)] VALUES
//! (literal, …), …` with nothing but plain literals.
//!
//! The general parser builds a syntax tree node per value and, for every literal, first tries
//! (and fails) to read it as a typed string, formatting an error each time; on 1,000-row
//! inserts that is most of the cost of the statement. This scanner reads the text once and
//! borrows the literals from it. Anything it does not recognise — comments, expressions,
//! escape strings, several statements — makes it give up (`None`), and the statement takes
//! the general path; a differential test checks that both agree.

use std::borrow::Cow;

use crate::ingest::values::{Literal, LiteralInsert};

struct Scanner<'a> {
    sql: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.sql.as_bytes()
    }

    fn skip_space(&mut self) {
        while let Some(b) = self.bytes().get(self.at) {
            if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                self.at += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.bytes().get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// An unquoted word, as written.
    fn word(&mut self) -> Option<&'a str> {
        self.skip_space();
        let start = self.at;
        let bytes = self.bytes();
        if !bytes
            .get(start)
            .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        {
            return None;
        }
        let mut end = start + 1;
        while bytes
            .get(end)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$')
        {
            end += 1;
        }
        self.at = end;
        Some(&self.sql[start..end])
    }

    fn keyword(&mut self, keyword: &str) -> bool {
        let save = self.at;
        if self.word().is_some_and(|w| w.eq_ignore_ascii_case(keyword)) {
            return true;
        }
        self.at = save;
        false
    }

    /// An identifier as PostgreSQL resolves it: unquoted folds to lower case.
    fn identifier(&mut self) -> Option<String> {
        if self.peek() == Some(b'"') {
            return self.quoted(b'"').map(|s| s.into_owned());
        }
        self.word().map(|w| w.to_lowercase())
    }

    /// A `'…'` or `"…"` token with doubled quotes inside; the cursor is on the quote.
    fn quoted(&mut self, quote: u8) -> Option<Cow<'a, str>> {
        let bytes = self.bytes();
        let start = self.at + 1;
        let mut i = start;
        let mut doubled = false;
        loop {
            let b = *bytes.get(i)?;
            if b == quote {
                if bytes.get(i + 1) == Some(&quote) {
                    doubled = true;
                    i += 2;
                    continue;
                }
                break;
            }
            i += 1;
        }
        self.at = i + 1;
        let raw = &self.sql[start..i];
        let text = if doubled {
            let q = quote as char;
            Cow::Owned(raw.replace(&format!("{q}{q}"), &q.to_string()))
        } else {
            Cow::Borrowed(raw)
        };
        if quote == b'"' && text.is_empty() {
            return None;
        }
        Some(text)
    }

    fn number(&mut self) -> Option<&'a str> {
        let bytes = self.bytes();
        let start = self.at;
        let mut i = start;
        if matches!(bytes.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let digits = |i: &mut usize| {
            let from = *i;
            while bytes.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i > from
        };
        let whole = digits(&mut i);
        let mut fraction = false;
        if bytes.get(i) == Some(&b'.') {
            i += 1;
            fraction = digits(&mut i);
        }
        if !whole && !fraction {
            return None;
        }
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(bytes.get(i), Some(b'-' | b'+')) {
                i += 1;
            }
            if !digits(&mut i) {
                return None;
            }
        }
        // A number runs into a letter or quote only in syntax we do not read (`1e`, `1abc`).
        if bytes
            .get(i)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'\'' || *b == b'"')
        {
            return None;
        }
        self.at = i;
        Some(&self.sql[start..i])
    }

    fn literal(&mut self) -> Option<Literal<'a>> {
        match self.peek()? {
            b'\'' => self.quoted(b'\'').map(Literal::Text),
            b'0'..=b'9' | b'.' | b'-' | b'+' => {
                let n = self.number()?;
                Some(Literal::Number(Cow::Borrowed(
                    n.strip_prefix('+').unwrap_or(n),
                )))
            }
            _ => {
                let w = self.word()?;
                if w.eq_ignore_ascii_case("null") {
                    Some(Literal::Null)
                } else if w.eq_ignore_ascii_case("true") {
                    Some(Literal::Bool(true))
                } else if w.eq_ignore_ascii_case("false") {
                    Some(Literal::Bool(false))
                } else {
                    None
                }
            }
        }
    }
}

/// The target relation (as named, possibly schema-qualified) and the literal rows, if `sql`
/// is exactly one such `INSERT`.
pub fn scan(sql: &str) -> Option<(Vec<String>, LiteralInsert<'_>)> {
    let mut s = Scanner { sql, at: 0 };
    if !(s.keyword("insert") && s.keyword("into")) {
        return None;
    }
    let mut name = vec![s.identifier()?];
    while s.eat(b'.') {
        name.push(s.identifier()?);
    }
    let mut columns = vec![];
    if s.eat(b'(') {
        loop {
            columns.push(s.identifier()?);
            if s.eat(b')') {
                break;
            }
            if !s.eat(b',') {
                return None;
            }
        }
    }
    if !s.keyword("values") {
        return None;
    }
    let mut rows = vec![];
    loop {
        if !s.eat(b'(') {
            return None;
        }
        let mut row = Vec::with_capacity(columns.len().max(1));
        loop {
            row.push(s.literal()?);
            if s.eat(b')') {
                break;
            }
            if !s.eat(b',') {
                return None;
            }
        }
        rows.push(row);
        if !s.eat(b',') {
            break;
        }
    }
    s.eat(b';');
    if s.peek().is_some() {
        return None;
    }
    Some((name, LiteralInsert { columns, rows }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    /// Relation name parts, column list, rendered rows.
    type Scanned = (Vec<String>, Vec<String>, Vec<Vec<String>>);

    fn general(sql: &str) -> Option<Scanned> {
        let statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .ok()?
            .remove(0);
        let sqlparser::ast::Statement::Insert(insert) = statement else {
            return None;
        };
        let sqlparser::ast::TableObject::TableName(name) = &insert.table else {
            return None;
        };
        let name = name
            .0
            .iter()
            .map(|p| crate::catalog::normalize(p.as_ident().unwrap()))
            .collect();
        let literal = LiteralInsert::from_ast(&insert)?;
        Some((name, literal.columns.clone(), render(&literal)))
    }

    fn render(l: &LiteralInsert<'_>) -> Vec<Vec<String>> {
        l.rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|v| match v {
                        Literal::Null => "NULL".to_string(),
                        Literal::Number(n) => format!("n:{n}"),
                        Literal::Text(t) => format!("t:{t}"),
                        Literal::Bool(b) => format!("b:{b}"),
                    })
                    .collect()
            })
            .collect()
    }

    fn fast(sql: &str) -> Option<Scanned> {
        let (name, literal) = scan(sql)?;
        Some((name, literal.columns.clone(), render(&literal)))
    }

    #[test]
    fn agrees_with_the_general_parser() {
        let cases = [
            "INSERT INTO clicks VALUES (1, '/home', '2026-01-01 10:00:00'), (2, 'it''s', NULL)",
            "insert into Clicks (User_Id, \"Url\") values (-1.5e3, 'x');",
            "INSERT INTO public.clicks VALUES (TRUE, false, +7, .5, 3.)",
            "INSERT\n INTO\tclicks VALUES ( 1 ,\n'a' ) , (2,'b')",
            "INSERT INTO \"We\"\"ird\" VALUES ('')",
        ];
        for sql in cases {
            assert_eq!(fast(sql), general(sql), "{sql}");
            assert!(fast(sql).is_some(), "{sql}");
        }
    }

    #[test]
    fn anything_else_is_left_to_the_general_parser() {
        for sql in [
            "INSERT INTO clicks VALUES (now())",
            "INSERT INTO clicks VALUES (1 + 2)",
            "INSERT INTO clicks VALUES (E'a\\tb')",
            "INSERT INTO clicks VALUES (1) -- comment",
            "INSERT INTO clicks VALUES (1); INSERT INTO clicks VALUES (2)",
            "INSERT INTO clicks SELECT 1",
            "INSERT INTO clicks VALUES (1)) ",
            "INSERT INTO clicks VALUES ('unterminated)",
            "INSERT INTO clicks VALUES (1e)",
            "INSERT INTO clicks VALUES ($1)",
            "INSERT INTO clicks VALUES (DATE '2026-01-01')",
            "SELECT 1",
        ] {
            assert!(fast(sql).is_none(), "{sql}");
        }
    }
}
