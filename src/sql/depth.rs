//! How deep a statement's expressions may nest: the one bound that keeps every later pass
//! over a statement within its thread's stack.
//!
//! Parsing, planning, optimizing and evaluating an expression all recurse over its tree, and
//! not every recursion can grow the stack on demand (derived `Clone`, `Drop` and `PartialEq`
//! of DataFusion's and sqlparser's trees cannot), so a statement nested deeper than the stack
//! allows would abort the whole server. PostgreSQL bounds this with `max_stack_depth`; Runnel
//! bounds the nesting itself, in two steps, and refuses anything deeper with SQLSTATE 54001:
//!
//! 1. [`check_tokens`], before anything is parsed: an upper bound on the nesting from the
//!    tokens alone. sqlparser builds chains of infix operators (`a + b + …`, `x AND y AND …`)
//!    in a loop, so without this a few megabytes of SQL would become a tree millions deep,
//!    whose mere `Drop` overflows. The bound over-counts (every operator of a comma-separated
//!    item counts), so it is held to a multiple of the real limit.
//! 2. [`check_statement`], on the parsed tree: the exact nesting of expressions and
//!    subqueries, walked by sqlparser's visitor (which grows its stack as it needs).
//!
//! The server's threads get stacks big enough for every recursion over a tree at the limit,
//! in debug builds too (see `main.rs`); the tests check that a statement at the limit runs.

use std::ops::ControlFlow;

use datafusion::sql::parser::{CopyToSource, Statement as DfStatement};
use sqlparser::ast::{Expr, Query, Visit, Visitor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::{Error, Result};

/// Expressions and subqueries nest at most this deep. Deep enough for any query people
/// write and most that tools generate; shallow enough that DataFusion's planning, whose
/// time grows with the square of the depth, stays well under a second at the limit.
pub const MAX_EXPR_DEPTH: usize = 512;

/// The stack of every thread of the server's runtime: room for every recursion over a
/// statement at [`MAX_EXPR_DEPTH`], in a debug build.
pub const THREAD_STACK_BYTES: usize = 64 * 1024 * 1024;

/// Parentheses, function calls and subqueries nest at most this deep (sqlparser's own
/// recursion limit, which it checks as it parses).
pub const MAX_PARSER_RECURSION: usize = 256;

/// The error for a statement over sqlparser's recursion limit.
pub fn nested_too_deeply() -> Error {
    too_complex(format!(
        "parentheses, function calls and subqueries nest more than {MAX_PARSER_RECURSION} deep"
    ))
}

/// The token-level bound is held to this multiple of [`MAX_EXPR_DEPTH`]: it counts each
/// operator of `a = 1 AND b = 2` where the tree nests one level per `AND`.
const TOKEN_BOUND_FACTOR: usize = 4;

fn too_complex(detail: String) -> Error {
    Error::plan(
        "54001",
        format!(
            "statement too complex: expressions may nest at most {MAX_EXPR_DEPTH} levels deep ({detail}); split it up, or use IN (…) lists instead of long OR chains"
        ),
    )
}

/// Refuses `sql` if its tokens alone show expressions nested too deep to parse safely.
/// SQL that does not tokenize is left to the parser to report.
pub fn check_tokens(sql: &str) -> Result<()> {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let limit = MAX_EXPR_DEPTH * TOKEN_BOUND_FACTOR;
    // Operators counted in the current item of each open parenthesis, and their sum: a
    // bound on the depth of the expression being read.
    let mut items: Vec<usize> = vec![0];
    let mut depth = 0usize;
    for token in &tokens {
        match token {
            Token::LParen | Token::LBracket => {
                items.push(1);
                depth += 1;
            }
            Token::RParen | Token::RBracket if items.len() > 1 => {
                depth -= items.pop().expect("more than one");
            }
            Token::Comma | Token::SemiColon => {
                let item = items.last_mut().expect("never empty");
                depth -= *item;
                *item = 0;
            }
            token if is_operator(token) => {
                *items.last_mut().expect("never empty") += 1;
                depth += 1;
            }
            _ => {}
        }
        if depth > limit {
            return Err(too_complex(format!(
                "one expression has more than {limit} operators and parentheses"
            )));
        }
    }
    Ok(())
}

/// Whether `token` may continue a chain of infix or postfix operators.
fn is_operator(token: &Token) -> bool {
    match token {
        Token::Word(w) => matches!(
            w.keyword,
            Keyword::AND
                | Keyword::OR
                | Keyword::XOR
                | Keyword::IS
                | Keyword::IN
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::BETWEEN
                | Keyword::COLLATE
                | Keyword::AT
                | Keyword::OVERLAPS
                | Keyword::DIV
                | Keyword::OPERATOR
        ),
        Token::Whitespace(_)
        | Token::Number(..)
        | Token::Char(_)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::NationalStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_)
        | Token::Placeholder(_)
        | Token::Period
        | Token::Colon
        | Token::EOF => false,
        _ => true,
    }
}

/// Refuses a parsed statement whose expressions or subqueries nest deeper than
/// [`MAX_EXPR_DEPTH`].
pub fn check_statement(statement: &DfStatement) -> Result<()> {
    let mut depth = Depth::default();
    let outcome = match statement {
        DfStatement::Statement(s) => s.visit(&mut depth),
        DfStatement::CopyTo(copy) => match &copy.source {
            CopyToSource::Query(q) => q.visit(&mut depth),
            CopyToSource::Relation(_) => ControlFlow::Continue(()),
        },
        DfStatement::Explain(explain) => return check_statement(&explain.statement),
        DfStatement::CreateExternalTable(_) | DfStatement::Reset(_) => ControlFlow::Continue(()),
    };
    match outcome {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(too_complex("this statement nests deeper".into())),
    }
}

/// Counts nesting on the way down, stopping as soon as it passes the limit.
#[derive(Default)]
struct Depth {
    now: usize,
}

impl Depth {
    fn enter(&mut self) -> ControlFlow<()> {
        self.now += 1;
        if self.now > MAX_EXPR_DEPTH {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

impl Visitor for Depth {
    type Break = ();

    fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.enter()
    }

    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.now -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.enter()
    }

    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.now -= 1;
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(op: &str, terms: usize) -> String {
        format!("SELECT {}", vec!["1"; terms].join(op))
    }

    fn parsed(sql: &str) -> DfStatement {
        let mut statements = datafusion::sql::parser::DFParser::parse_sql(sql).unwrap();
        statements.pop_front().unwrap()
    }

    #[test]
    fn chains_at_the_limit_pass_and_longer_ones_are_refused() {
        let ok = chain(" + ", MAX_EXPR_DEPTH - 2);
        check_tokens(&ok).unwrap();
        check_statement(&parsed(&ok)).unwrap();
        let deep = chain(" + ", MAX_EXPR_DEPTH + 10);
        check_tokens(&deep).unwrap();
        let e = check_statement(&parsed(&deep)).unwrap_err();
        assert_eq!(e.sqlstate(), "54001");
        // Far past the limit, the tokens alone refuse it: it is never parsed.
        let huge = chain(" + ", MAX_EXPR_DEPTH * TOKEN_BOUND_FACTOR + 10);
        assert_eq!(check_tokens(&huge).unwrap_err().sqlstate(), "54001");
    }

    #[test]
    fn flat_lists_of_any_length_pass() {
        let values: Vec<String> = (0..100_000).map(|i| format!("({i}, 'x', -1)")).collect();
        let insert = format!("INSERT INTO t VALUES {}", values.join(", "));
        check_tokens(&insert).unwrap();
        let list: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
        let select = format!("SELECT * FROM t WHERE x IN ({}) AND y = 1", list.join(", "));
        check_tokens(&select).unwrap();
        check_statement(&parsed(&select)).unwrap();
    }

    #[test]
    fn subqueries_count_as_nesting() {
        let mut sql = "SELECT 1".to_string();
        for _ in 0..20 {
            sql = format!("SELECT ({sql})");
        }
        check_statement(&parsed(&sql)).unwrap();
        // Shallow subqueries around a chain just under the limit tip it over.
        let chain = vec!["1"; MAX_EXPR_DEPTH - 5].join(" + ");
        check_statement(&parsed(&format!("SELECT {chain}"))).unwrap();
        let nested = format!("SELECT (SELECT (SELECT (SELECT ({chain}))))");
        assert!(check_statement(&parsed(&nested)).is_err());
    }
}
