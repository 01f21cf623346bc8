//! Rewrites of the SQL syntax tree before DataFusion plans it.
//!
//! - Hidden columns: `*` over a stream leaves out `_partition`, `_offset`, `_timestamp`,
//!   `_key` (DataFusion has no notion of hidden columns; `EXCLUDE` gives it one). With one
//!   relation in `FROM`, the wildcard gets an `EXCLUDE`; with several, `*` becomes one
//!   qualified wildcard per relation, each stream's with its `EXCLUDE`. A `USING` or
//!   `NATURAL` join keeps its `*` as written, hidden columns included, because expanding it
//!   would change which join columns appear.
//! - `LIKE`/`ILIKE … ESCAPE 'c'`: DataFusion escapes with `\\` only, so a pattern with another
//!   escape character is translated when it is evaluated, by `like_escape(pattern, 'c')`
//!   (SQLAlchemy's catalog queries use `ESCAPE '/'`).
//! - Inserts: `INSERT INTO clicks` becomes `INSERT INTO __write.clicks`, the stream as an
//!   insert target (declared columns only), so DataFusion types the inserted values against
//!   the stream's columns.
//!   An insert's query may repeat a select-list expression (`INSERT … SELECT a, a`), as in
//!   PostgreSQL: its columns go in by position, so the repeats get aliases of their own.

use std::ops::ControlFlow;

use sqlparser::ast::{DataType, Expr, Value, visit_expressions_mut};
use sqlparser::ast::{
    ExcludeSelectItem, FunctionArguments, GroupByExpr, Ident, JoinConstraint, JoinOperator,
    ObjectName, ObjectNamePart, OrderByKind, Query, SelectItem, SelectItemQualifiedWildcardKind,
    SetExpr, Statement, TableAlias, TableAliasColumnDef, TableFactor, TableObject, VisitMut,
    VisitorMut, WildcardAdditionalOptions,
};

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::parser::relation_name;
use crate::catalog::WRITE_SCHEMA;
use crate::error::{Error, Result};

/// What the rewrite needs to know about a relation name: the columns `*` leaves out of it
/// (`None` for relations that are not streams or topics).
pub trait HiddenColumns {
    fn hidden_columns(&self, relation: &str) -> Option<&'static [&'static str]>;
}

pub fn rewrite(statement: &mut Statement, catalog: &dyn HiddenColumns) -> Result<()> {
    if let Statement::Insert(insert) = statement
        && let TableObject::TableName(name) = &mut insert.table
        && let Ok(relation) = relation_name(name)
        && catalog.hidden_columns(&relation).is_some()
    {
        *name = ObjectName(vec![
            ObjectNamePart::Identifier(Ident::with_quote('"', WRITE_SCHEMA)),
            ObjectNamePart::Identifier(Ident::with_quote('"', relation)),
        ]);
    }
    if let Statement::Insert(insert) = statement
        && let Some(source) = insert.source.as_deref_mut()
    {
        super::column_names::alias_repeated(source);
    }
    let _ = statement.visit(&mut Wildcards { catalog });
    let _ = statement.visit(&mut UnnestColumns);
    let literals = visit_expressions_mut(statement, |expr| {
        if let Err(e) = super::numeric::write_out_exponent(expr) {
            return ControlFlow::Break(e);
        }
        if let Expr::Cast {
            expr: inner,
            data_type: DataType::Bytea,
            ..
        } = expr
            && let Expr::Value(value) = inner.as_ref()
            && let Value::SingleQuotedString(text) | Value::EscapedStringLiteral(text) =
                &value.value
        {
            match bytea_input(text) {
                Some(bytes) => *expr = Expr::Value(Value::HexStringLiteral(hex(&bytes)).into()),
                None => {
                    return ControlFlow::Break(Error::data(
                        "22P02",
                        format!("invalid input syntax for type bytea: \"{text}\""),
                    ));
                }
            }
            return ControlFlow::Continue(());
        }
        if let Expr::Function(function) = expr
            && let FunctionArguments::Subquery(query) = &function.args
            && function.name.to_string().eq_ignore_ascii_case("array")
        {
            match array_of_subquery(query) {
                Some(aggregated) => *expr = aggregated,
                None => {
                    return ControlFlow::Break(Error::Unsupported(
                        "ARRAY(subquery) is supported for a subquery of one column without \
                         DISTINCT, GROUP BY, HAVING, LIMIT or OFFSET; write array_agg"
                            .into(),
                    ));
                }
            }
            return ControlFlow::Continue(());
        }
        // Set-returning functions in expressions: the array DataFusion computes, unnested.
        // (`"generate_series"` quoted is DataFusion's array function, which a statement
        // rewritten once and parsed again must not unnest twice.)
        if let Expr::Function(function) = expr
            && let FunctionArguments::List(args) = &function.args
            && let Some(array) = match builtin_function(&function.name).as_deref() {
                Some("regexp_split_to_table") => Some("regexp_split_to_array"),
                Some("generate_series") if !is_quoted(&function.name) => {
                    Some("\"generate_series\"")
                }
                _ => None,
            }
            && let Ok(unnested) = Parser::new(&PostgreSqlDialect {})
                .try_with_sql(&format!(
                    "unnest({array}({}))",
                    args.args
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .and_then(|mut p| p.parse_expr())
        {
            *expr = unnested;
            return ControlFlow::Continue(());
        }
        if let Expr::Like {
            pattern,
            escape_char,
            ..
        }
        | Expr::ILike {
            pattern,
            escape_char,
            ..
        } = expr
            && let Some(escape) = escape_char
            && !matches!(&escape.value, Value::SingleQuotedString(s) if s == "\\")
            && let Ok(translated) = Parser::new(&PostgreSqlDialect {})
                .try_with_sql(&format!("like_escape({pattern}, {escape})"))
                .and_then(|mut p| p.parse_expr())
        {
            **pattern = translated;
            *escape_char = None;
        }
        ControlFlow::Continue(())
    });
    match literals {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// `ARRAY(SELECT e FROM … [ORDER BY o])` as `coalesce((SELECT array_agg(e ORDER BY o) FROM
/// …), make_array())`: the same array, empty where the subquery has no rows, and a scalar
/// subquery that DataFusion decorrelates (psql's `\du` lists roles' memberships so).
/// `None` for a subquery that is not one plain column over its rows.
fn array_of_subquery(query: &Query) -> Option<Expr> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let plain = query.with.is_none()
        && query.limit_clause.is_none()
        && query.fetch.is_none()
        && select.distinct.is_none()
        && select.having.is_none()
        && matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    let ([SelectItem::UnnamedExpr(element)] | [SelectItem::ExprWithAlias { expr: element, .. }]) =
        select.projection.as_slice()
    else {
        return None;
    };
    if !plain {
        return None;
    }
    let order = match query.order_by.as_ref().map(|o| &o.kind) {
        None => String::new(),
        Some(OrderByKind::Expressions(exprs)) => format!(
            " ORDER BY {}",
            exprs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(_) => return None,
    };
    let parse = |text: &str| {
        Parser::new(&PostgreSqlDialect {})
            .try_with_sql(text)
            .and_then(|mut p| p.parse_expr())
            .ok()
    };
    let mut select = select.clone();
    select.projection = vec![SelectItem::UnnamedExpr(parse(&format!(
        "array_agg({element}{order})"
    ))?)];
    let mut query = query.clone();
    *query.body = SetExpr::Select(select);
    query.order_by = None;
    parse(&format!("coalesce(({query}), make_array())"))
}

/// The bytes a `bytea` literal stands for, read as PostgreSQL reads `bytea` input: `\x`
/// and pairs of hex digits, or text where `\\` is a backslash and `\ooo` an octal byte;
/// `None` if it is not valid input.
pub fn bytea_input(text: &str) -> Option<Vec<u8>> {
    if let Some(digits) = text.strip_prefix("\\x") {
        let digits: Vec<u8> = digits
            .bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        if !digits.len().is_multiple_of(2) {
            return None;
        }
        return digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
            .collect();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let octal = bytes.get(i + 1..i + 4)?;
            if !octal.iter().all(|b| (b'0'..=b'7').contains(b)) || octal[0] > b'3' {
                return None;
            }
            out.push(octal.iter().fold(0u8, |n, d| n * 8 + (d - b'0')));
            i += 4;
        }
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

struct Wildcards<'a> {
    catalog: &'a dyn HiddenColumns,
}

impl VisitorMut for Wildcards<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        self.set_expr(&mut query.body);
        ControlFlow::Continue(())
    }
}

/// `FROM unnest(array) AS x`: PostgreSQL names the one column `x`, as it does for any
/// function of one column in `FROM`; DataFusion named it `UNNEST(…)`.
struct UnnestColumns;

impl VisitorMut for UnnestColumns {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        // FROM regexp_split_to_table(s, pattern) [AS t], FROM pg_catalog.unnest(a) [AS t]:
        // the unnested array, named as PostgreSQL names it.
        if let TableFactor::Table {
            name,
            args: Some(args),
            alias,
            ..
        } = factor
        {
            let args: Vec<String> = args.args.iter().map(ToString::to_string).collect();
            let array = match builtin_function(name).as_deref() {
                Some("regexp_split_to_table") => Some((
                    format!("regexp_split_to_array({})", args.join(", ")),
                    "regexp_split_to_table",
                )),
                Some("unnest") if args.len() == 1 => Some((args[0].clone(), "unnest")),
                _ => None,
            };
            if let Some((array, column)) = array
                && let Ok(Statement::Query(query)) = Parser::new(&PostgreSqlDialect {})
                    .try_with_sql(&format!("SELECT * FROM UNNEST({array}) AS {column}"))
                    .and_then(|mut p| p.parse_statement())
                && let SetExpr::Select(select) = *query.body
                && let Some(from) = select.from.into_iter().next()
            {
                let given = alias.take();
                *factor = from.relation;
                if let (TableFactor::UNNEST { alias, .. }, Some(given)) = (&mut *factor, given) {
                    *alias = Some(given);
                }
            }
        }
        // FROM generate_series(…) [AS g]: its column is named by the alias, else
        // `generate_series`, as PostgreSQL names a function's one column.
        if let TableFactor::Table {
            name,
            args: Some(_),
            alias,
            ..
        } = factor
            && builtin_function(name).as_deref() == Some("generate_series")
        {
            name_the_column(alias, "generate_series");
        }
        // One array unnested in FROM: its column is named by the alias, else `unnest`.
        if let TableFactor::UNNEST {
            alias,
            array_exprs,
            with_offset: false,
            with_ordinality: false,
            ..
        } = factor
            && array_exprs.len() == 1
        {
            name_the_column(alias, "unnest");
        }
        ControlFlow::Continue(())
    }
}

/// Names the one column of a function in `FROM` by its alias, given (`AS g`) or `function`,
/// unless the alias names it already (`AS t(n)`).
fn name_the_column(alias: &mut Option<TableAlias>, function: &str) {
    let alias = alias.get_or_insert_with(|| TableAlias {
        explicit: false,
        name: Ident::new(function),
        columns: vec![],
        at: None,
    });
    if alias.columns.is_empty() {
        alias.columns = vec![TableAliasColumnDef::from_name(alias.name.value.clone())];
    }
}

/// Whether the function's own name is quoted.
fn is_quoted(name: &ObjectName) -> bool {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .is_some_and(|i| i.quote_style.is_some())
}

/// The lowercase name of a function named bare or in `pg_catalog` (`None` for one in
/// another schema).
pub(crate) fn builtin_function(name: &ObjectName) -> Option<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(|i| i.value.to_ascii_lowercase()))
        .collect();
    match parts.as_slice() {
        [f] => Some(f.clone()),
        [schema, f] if schema == "pg_catalog" => Some(f.clone()),
        _ => None,
    }
}

/// A relation of a `FROM` clause: the name `*` qualifies it by, and its hidden columns.
struct FromRelation {
    qualifier: ObjectName,
    hidden: Option<&'static [&'static str]>,
}

impl Wildcards<'_> {
    fn set_expr(&self, body: &mut SetExpr) {
        match body {
            SetExpr::Select(select) => {
                let mut relations = vec![];
                let mut using = false;
                for table in &select.from {
                    relations.push(self.relation(&table.relation));
                    for join in &table.joins {
                        relations.push(self.relation(&join.relation));
                        using |= join_uses_columns(&join.join_operator);
                    }
                }
                let mut projection = Vec::with_capacity(select.projection.len());
                for item in select.projection.drain(..) {
                    match item {
                        SelectItem::Wildcard(options) => {
                            if relations.len() == 1 {
                                let mut options = options;
                                if let Some(hidden) = relations[0].hidden {
                                    exclude(&mut options, hidden);
                                }
                                projection.push(SelectItem::Wildcard(options));
                            } else if using
                                || relations.iter().all(|r| r.hidden.is_none())
                                || !plain(&options)
                            {
                                projection.push(SelectItem::Wildcard(options));
                            } else {
                                for r in &relations {
                                    let mut options = WildcardAdditionalOptions::default();
                                    if let Some(hidden) = r.hidden {
                                        exclude(&mut options, hidden);
                                    }
                                    projection.push(SelectItem::QualifiedWildcard(
                                        SelectItemQualifiedWildcardKind::ObjectName(
                                            r.qualifier.clone(),
                                        ),
                                        options,
                                    ));
                                }
                            }
                        }
                        SelectItem::QualifiedWildcard(
                            SelectItemQualifiedWildcardKind::ObjectName(name),
                            mut options,
                        ) => {
                            let hidden = relations
                                .iter()
                                .find(|r| same_name(&r.qualifier, &name))
                                .and_then(|r| r.hidden);
                            if let Some(hidden) = hidden {
                                exclude(&mut options, hidden);
                            }
                            projection.push(SelectItem::QualifiedWildcard(
                                SelectItemQualifiedWildcardKind::ObjectName(name),
                                options,
                            ));
                        }
                        other => projection.push(other),
                    }
                }
                select.projection = projection;
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr(left);
                self.set_expr(right);
            }
            _ => {}
        }
    }

    fn relation(&self, factor: &TableFactor) -> FromRelation {
        match factor {
            TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } => {
                let hidden = match relation_name(name) {
                    Ok(r) => self.catalog.hidden_columns(&r),
                    Err(_) => crate::tables::pg::catalog_hidden_columns(name),
                };
                let qualifier = match alias {
                    Some(alias) => ObjectName(vec![ObjectNamePart::Identifier(alias.name.clone())]),
                    None => name.clone(),
                };
                FromRelation { qualifier, hidden }
            }
            TableFactor::Derived { alias, .. } | TableFactor::Table { alias, .. } => FromRelation {
                qualifier: alias
                    .as_ref()
                    .map(|a| ObjectName(vec![ObjectNamePart::Identifier(a.name.clone())]))
                    .unwrap_or(ObjectName(vec![])),
                hidden: None,
            },
            _ => FromRelation {
                qualifier: ObjectName(vec![]),
                hidden: None,
            },
        }
    }
}

/// A wildcard with no options of its own (only then can `*` be split per relation).
fn plain(options: &WildcardAdditionalOptions) -> bool {
    options.opt_exclude.is_none()
        && options.opt_except.is_none()
        && options.opt_ilike.is_none()
        && options.opt_replace.is_none()
        && options.opt_rename.is_none()
        && options.opt_alias.is_none()
}

fn exclude(options: &mut WildcardAdditionalOptions, hidden: &[&str]) {
    let mut names: Vec<ObjectName> = match options.opt_exclude.take() {
        Some(ExcludeSelectItem::Single(name)) => vec![name],
        Some(ExcludeSelectItem::Multiple(names)) => names,
        None => vec![],
    };
    for column in hidden {
        let already = names
            .iter()
            .any(|n| n.to_string().trim_matches('"') == *column);
        if !already {
            names.push(ObjectName(vec![ObjectNamePart::Identifier(Ident::new(
                *column,
            ))]));
        }
    }
    options.opt_exclude = Some(ExcludeSelectItem::Multiple(names));
}

fn same_name(a: &ObjectName, b: &ObjectName) -> bool {
    let last = |n: &ObjectName| {
        n.0.last()
            .and_then(|p| p.as_ident())
            .map(super::parser::normalize)
    };
    !a.0.is_empty() && last(a) == last(b)
}

fn join_uses_columns(op: &JoinOperator) -> bool {
    let constraint = match op {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c)
        | JoinOperator::CrossJoin(c)
        | JoinOperator::Semi(c)
        | JoinOperator::LeftSemi(c)
        | JoinOperator::RightSemi(c)
        | JoinOperator::Anti(c)
        | JoinOperator::LeftAnti(c)
        | JoinOperator::RightAnti(c)
        | JoinOperator::StraightJoin(c) => c,
        _ => return false,
    };
    matches!(
        constraint,
        JoinConstraint::Using(_) | JoinConstraint::Natural
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    struct Streams;

    impl HiddenColumns for Streams {
        fn hidden_columns(&self, relation: &str) -> Option<&'static [&'static str]> {
            matches!(relation, "clicks" | "users").then_some(&["_partition", "_offset"][..])
        }
    }

    fn rewritten(sql: &str) -> String {
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        rewrite(&mut statement, &Streams).unwrap();
        statement.to_string()
    }

    #[test]
    fn bytea_literals_are_read_as_postgresql_reads_them() {
        assert_eq!(
            rewritten("SELECT '\\x01 0aFF'::bytea, CAST('a\\\\b\\001' AS BYTEA)"),
            "SELECT X'010AFF', X'615C6201'"
        );
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, "SELECT '\\x012'::bytea")
            .unwrap()
            .remove(0);
        let e = rewrite(&mut statement, &Streams).unwrap_err();
        assert_eq!(e.sqlstate(), "22P02");
    }

    #[test]
    fn star_over_one_stream_excludes_hidden_columns() {
        assert_eq!(
            rewritten("SELECT * FROM clicks"),
            "SELECT * EXCLUDE (_partition, _offset) FROM clicks"
        );
        assert_eq!(rewritten("SELECT * FROM other"), "SELECT * FROM other");
        assert_eq!(
            rewritten("SELECT * FROM (SELECT * FROM clicks) AS c"),
            "SELECT * FROM (SELECT * EXCLUDE (_partition, _offset) FROM clicks) AS c"
        );
    }

    #[test]
    fn star_over_joins_expands_per_relation() {
        assert_eq!(
            rewritten("SELECT * FROM clicks c JOIN other o ON c.id = o.id"),
            "SELECT c.* EXCLUDE (_partition, _offset), o.* FROM clicks c JOIN other o ON c.id = o.id"
        );
        assert_eq!(
            rewritten("SELECT c.*, u.name FROM clicks c JOIN users u ON c.id = u.id"),
            "SELECT c.* EXCLUDE (_partition, _offset), u.name FROM clicks c JOIN users u ON c.id = u.id"
        );
    }

    #[test]
    fn inserts_target_the_write_schema() {
        assert_eq!(
            rewritten("INSERT INTO clicks VALUES (1)"),
            "INSERT INTO \"__write\".\"clicks\" VALUES (1)"
        );
        assert_eq!(
            rewritten("INSERT INTO clicks SELECT * FROM clicks"),
            "INSERT INTO \"__write\".\"clicks\" SELECT * EXCLUDE (_partition, _offset) FROM clicks"
        );
        assert_eq!(
            rewritten("INSERT INTO other VALUES (1)"),
            "INSERT INTO other VALUES (1)"
        );
    }
}
