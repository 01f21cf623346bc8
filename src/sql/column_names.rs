//! Result column names as PostgreSQL gives them. DataFusion names an unaliased expression
//! by its text (`count(*)`, `Float64(1.5)`, `a + b`); PostgreSQL by a rule of its own
//! (`count`, `?column?`, `?column?`): a column keeps its name, a function call takes the
//! function's, a cast the name of what it casts or else the type's, and anything else is
//! `?column?`. Clients show and key rows by these names (pandas, BI tools), so the result
//! a client sees is named as PostgreSQL would name it.

use std::ops::ControlFlow;

use sqlparser::ast::{
    CastKind, DataType, Expr, Ident, ObjectName, Query, Select, SelectItem, SetExpr, TimezoneInfo,
    VisitMut, VisitorMut,
};

/// What PostgreSQL calls an expression that has no name of its own.
const UNNAMED: &str = "?column?";

/// The names PostgreSQL gives the columns of `query` that have no alias.
pub fn postgresql_names(query: &Query) -> ColumnNames {
    let items = leftmost_select(&query.body)
        .map(|select| {
            select
                .projection
                .iter()
                .map(|item| match item {
                    SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => Item::Wildcard,
                    SelectItem::UnnamedExpr(expr) => Item::Column(Some(expression_name(expr))),
                    _ => Item::Column(None),
                })
                .collect()
        })
        .unwrap_or_default();
    ColumnNames { items }
}

/// The first name two of `query`'s output columns share, by their aliases and the names
/// PostgreSQL gives the others, which a view (or a derived stream) cannot have: PostgreSQL
/// refuses it with 42701.
pub fn repeated_output_name(query: &Query) -> Option<String> {
    let select = leftmost_select(&query.body)?;
    let mut seen = std::collections::HashSet::new();
    select
        .projection
        .iter()
        .filter_map(|item| match item {
            SelectItem::UnnamedExpr(expr) => Some(expression_name(expr)),
            SelectItem::ExprWithAlias { alias, .. } => Some(crate::catalog::normalize(alias)),
            _ => None,
        })
        .find(|name| !seen.insert(name.clone()))
}

/// Gives the second and later of repeated unaliased select-list expressions
/// (`SELECT count(*), count(*)`, `SELECT a, a`) an alias of their own, `name:2`, …:
/// PostgreSQL returns such columns side by side, DataFusion refuses a projection with two
/// columns of one name. Subqueries count as one expression, since DataFusion names each
/// `(<subquery>)`. Take the names the client sees ([`postgresql_names`]) first.
pub fn alias_repeated(query: &mut Query) {
    fn walk(body: &mut SetExpr) {
        match body {
            SetExpr::Select(select) => {
                let mut seen: std::collections::HashSet<String> = Default::default();
                let mut aliases: std::collections::HashSet<String> = Default::default();
                for item in &mut select.projection {
                    let SelectItem::UnnamedExpr(expr) = item else {
                        continue;
                    };
                    if seen.insert(datafusion_name(expr)) {
                        continue;
                    }
                    let name = expression_name(expr);
                    let alias = (2..)
                        .map(|n| format!("{name}:{n}"))
                        .find(|a| !aliases.contains(a))
                        .unwrap_or_default();
                    aliases.insert(alias.clone());
                    *item = SelectItem::ExprWithAlias {
                        expr: expr.clone(),
                        alias: Ident::with_quote('"', alias),
                    };
                }
            }
            SetExpr::Query(query) => walk(&mut query.body),
            SetExpr::SetOperation { left, right, .. } => {
                walk(left);
                walk(right);
            }
            _ => {}
        }
    }
    walk(&mut query.body)
}

/// Names the unaliased expressions of `query`'s inner queries (its CTEs, derived tables and
/// subqueries) as PostgreSQL does, with an alias, so that the outer query reads them by
/// PostgreSQL's names (`WITH w AS (SELECT count(1) …) SELECT count FROM w`). The second and
/// later items of one select list to share a name are `name:2`, …, as DataFusion refuses a
/// projection with two columns of one name (PostgreSQL lets them be, and refuses a
/// reference to either). The outermost select list keeps its names: the client is told
/// PostgreSQL's ([`postgresql_names`]) without them.
pub fn name_inner_columns(query: &mut Query) {
    name_columns(query, false)
}

/// Names every unaliased expression of `query` as PostgreSQL does, its outermost select
/// list's too: a materialized view's or a derived stream's columns are what its readers
/// name (`SELECT count FROM per_url`), as PostgreSQL names a view's (its `pg_get_viewdef`
/// shows `count(*) AS count`).
pub fn name_all_columns(query: &mut Query) {
    name_columns(query, true)
}

fn name_columns(query: &mut Query, outermost: bool) {
    struct Inner {
        depth: usize,
        outermost: bool,
    }
    impl VisitorMut for Inner {
        type Break = ();

        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            if self.depth > 0 || self.outermost {
                name_selects(&mut query.body);
            }
            self.depth += 1;
            ControlFlow::Continue(())
        }

        fn post_visit_query(&mut self, _query: &mut Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
    }
    fn name_selects(body: &mut SetExpr) {
        match body {
            SetExpr::Select(select) => name_select(select),
            SetExpr::SetOperation { left, right, .. } => {
                name_selects(left);
                name_selects(right);
            }
            _ => {}
        }
    }
    fn name_select(select: &mut Select) {
        let names: Vec<Option<String>> = select
            .projection
            .iter()
            .map(|item| match item {
                SelectItem::UnnamedExpr(expr) => Some(expression_name(expr)),
                SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
                _ => None,
            })
            .collect();
        let mut taken: std::collections::HashSet<String> = select
            .projection
            .iter()
            .filter_map(|item| match item {
                SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
                _ => None,
            })
            .collect();
        let mut seen: std::collections::HashMap<&str, usize> = Default::default();
        for (item, name) in select.projection.iter_mut().zip(&names) {
            let SelectItem::UnnamedExpr(expr) = item else {
                continue;
            };
            let Some(name) = name else { continue };
            let seen = seen.entry(name.as_str()).or_default();
            *seen += 1;
            let alias = if *seen == 1 {
                if matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
                    taken.insert(name.clone());
                    continue;
                }
                name.clone()
            } else {
                (*seen..)
                    .map(|n| format!("{name}:{n}"))
                    .find(|a| !taken.contains(a))
                    .unwrap_or_default()
            };
            taken.insert(alias.clone());
            *item = SelectItem::ExprWithAlias {
                expr: expr.clone(),
                alias: Ident::with_quote('"', alias),
            };
        }
    }
    let _ = query.visit(&mut Inner {
        depth: 0,
        outermost,
    });
}

/// `expr`'s text with its subqueries' text left out, as DataFusion's name of it leaves it.
fn datafusion_name(expr: &Expr) -> String {
    let mut expr = expr.clone();
    let _ = sqlparser::ast::visit_expressions_mut(&mut expr, |e| {
        match e {
            Expr::Subquery(_) => *e = Expr::Identifier(Ident::new("<subquery>")),
            Expr::Exists { negated, .. } => {
                *e = Expr::Identifier(Ident::new(if *negated {
                    "NOT EXISTS <subquery>"
                } else {
                    "EXISTS <subquery>"
                }))
            }
            Expr::InSubquery { expr, negated, .. } => {
                let text = format!("{expr} {}IN <subquery>", if *negated { "NOT " } else { "" });
                *e = Expr::Identifier(Ident::new(text))
            }
            // DataFusion names a cast as what it casts (`a` and `a::text` are both `a`).
            Expr::Cast {
                kind: sqlparser::ast::CastKind::Cast | sqlparser::ast::CastKind::DoubleColon,
                expr,
                ..
            } => *e = expr.as_ref().clone(),
            _ => {}
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    expr.to_string()
}

/// The names a client sees of a query's columns, where they differ from DataFusion's.
#[derive(Debug, Default, Clone)]
pub struct ColumnNames {
    items: Vec<Item>,
}

#[derive(Debug, Clone)]
enum Item {
    Wildcard,
    /// A select-list item; its PostgreSQL name if it has no alias.
    Column(Option<String>),
}

impl ColumnNames {
    /// The names of the `columns` result columns (`None`: DataFusion's name stays); `None`
    /// if nothing is renamed, or a wildcard's width cannot be told (two wildcards).
    pub fn renames(&self, columns: usize) -> Option<Vec<Option<String>>> {
        if !self
            .items
            .iter()
            .any(|item| matches!(item, Item::Column(Some(_))))
        {
            return None;
        }
        let wildcards = self
            .items
            .iter()
            .filter(|item| matches!(item, Item::Wildcard))
            .count();
        let named = self.items.len() - wildcards;
        // One wildcard's width is what the other items leave; several cannot be told apart.
        let wildcard_width = match wildcards {
            0 if named == columns => 0,
            1 if columns >= named => columns - named,
            _ => return None,
        };
        let mut names = Vec::with_capacity(columns);
        for item in &self.items {
            match item {
                Item::Wildcard => names.extend(std::iter::repeat_n(None, wildcard_width)),
                Item::Column(rename) => names.push(rename.clone()),
            }
        }
        (names.len() == columns).then_some(names)
    }
}

/// The SELECT whose select list names a query's columns (the first of a UNION's).
fn leftmost_select(body: &SetExpr) -> Option<&Select> {
    match body {
        SetExpr::Select(select) => Some(select),
        SetExpr::Query(query) => leftmost_select(&query.body),
        SetExpr::SetOperation { left, .. } => leftmost_select(left),
        _ => None,
    }
}

/// PostgreSQL's name for an unaliased select-list expression (its `FigureColname`).
pub fn expression_name(expr: &Expr) -> String {
    figure(expr)
        .map(|(name, _)| name)
        .unwrap_or_else(|| UNNAMED.to_string())
}

/// An expression's name and how strongly it holds: 2 for names of their own (a column, a
/// function), 1 for names a cast or CASE fall back on, which an outer cast replaces.
fn figure(expr: &Expr) -> Option<(String, u8)> {
    let strong = |name: &str| Some((name.to_string(), 2));
    match expr {
        Expr::Identifier(ident) => Some((identifier(ident), 2)),
        Expr::CompoundIdentifier(parts) => parts.last().map(|p| (identifier(p), 2)),
        Expr::CompoundFieldAccess { root, .. } => figure(root),
        Expr::Function(function) => Some((last_part(&function.name), 2)),
        Expr::Nested(inner) | Expr::Collate { expr: inner, .. } => figure(inner),
        Expr::Cast {
            kind: CastKind::Cast | CastKind::DoubleColon | CastKind::TryCast | CastKind::SafeCast,
            expr,
            data_type,
            ..
        } => match figure(expr) {
            Some((name, 2)) => Some((name, 2)),
            _ => Some((type_name(data_type), 1)),
        },
        Expr::TypedString(typed) => Some((type_name(&typed.data_type), 1)),
        Expr::Interval(_) => Some(("interval".into(), 1)),
        Expr::Case { else_result, .. } => match else_result.as_deref().and_then(figure) {
            Some((name, 2)) => Some((name, 2)),
            _ => Some(("case".into(), 1)),
        },
        Expr::Exists { .. } => strong("exists"),
        Expr::Array(_) => strong("array"),
        Expr::Tuple(_) => strong("row"),
        Expr::Subquery(query) => {
            let select = leftmost_select(&query.body)?;
            match select.projection.first()? {
                SelectItem::UnnamedExpr(expr) => {
                    Some((expression_name(expr), 2)).filter(|(n, _)| n != UNNAMED)
                }
                SelectItem::ExprWithAlias { alias, .. } => Some((identifier(alias), 2)),
                _ => None,
            }
        }
        Expr::Extract { .. } => strong("extract"),
        Expr::Substring { .. } => strong("substring"),
        Expr::Trim { .. } => strong("btrim"),
        Expr::Position { .. } => strong("position"),
        Expr::Overlay { .. } => strong("overlay"),
        Expr::Ceil { .. } => strong("ceil"),
        Expr::Floor { .. } => strong("floor"),
        Expr::AtTimeZone { .. } => strong("timezone"),
        _ => None,
    }
}

/// An identifier as the catalog has it: unquoted ones are folded to lower case.
fn identifier(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

fn last_part(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(|part| part.as_ident())
        .map(identifier)
        .unwrap_or_else(|| UNNAMED.to_string())
}

/// A type as PostgreSQL names it in a column name (`int4` for `integer`).
fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::SmallInt(_) | DataType::Int2(_) => "int2".into(),
        DataType::Int(_) | DataType::Integer(_) | DataType::Int4(_) => "int4".into(),
        DataType::BigInt(_) | DataType::Int8(_) => "int8".into(),
        DataType::Real | DataType::Float4 => "float4".into(),
        DataType::Double(_) | DataType::DoublePrecision | DataType::Float8 => "float8".into(),
        DataType::Float(_) => "float8".into(),
        DataType::Boolean | DataType::Bool => "bool".into(),
        DataType::Text | DataType::String(_) => "text".into(),
        DataType::Varchar(_) | DataType::CharacterVarying(_) => "varchar".into(),
        DataType::Char(_) | DataType::Character(_) => "bpchar".into(),
        DataType::Numeric(_) | DataType::Decimal(_) | DataType::Dec(_) => "numeric".into(),
        DataType::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => {
            "timestamptz".into()
        }
        DataType::Timestamp(..) => "timestamp".into(),
        DataType::Time(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => "timetz".into(),
        DataType::Time(..) => "time".into(),
        DataType::Date => "date".into(),
        DataType::Interval { .. } => "interval".into(),
        DataType::Bytea => "bytea".into(),
        DataType::JSON => "json".into(),
        DataType::JSONB => "jsonb".into(),
        DataType::Uuid => "uuid".into(),
        DataType::Custom(name, _) => last_part(name),
        other => other.to_string().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn names(sql: &str, columns: usize) -> Option<Vec<Option<String>>> {
        let statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .pop()
            .unwrap();
        let sqlparser::ast::Statement::Query(query) = statement else {
            panic!("not a query")
        };
        postgresql_names(&query).renames(columns)
    }

    fn named(list: &[Option<&str>]) -> Option<Vec<Option<String>>> {
        Some(list.iter().map(|n| n.map(str::to_string)).collect())
    }

    #[test]
    fn columns_are_named_as_postgresql_names_them() {
        assert_eq!(
            names(
                "SELECT count(*), sum(a), 1.5, a + 1, A, \"B\", t.c, CAST(a AS int), '1'::bigint, \
                 x AS y, (SELECT max(v) FROM u), CASE WHEN a THEN 1 END, DATE '2020-01-01', \
                 coalesce(a, 1), (a), NOW(), TIMESTAMP '2020-01-01'::timestamptz, \
                 CASE WHEN a THEN 1 ELSE b END",
                18
            ),
            named(&[
                Some("count"),
                Some("sum"),
                Some("?column?"),
                Some("?column?"),
                Some("a"),
                Some("B"),
                Some("c"),
                Some("a"),
                Some("int8"),
                None,
                Some("max"),
                Some("case"),
                Some("date"),
                Some("coalesce"),
                Some("a"),
                Some("now"),
                Some("timestamptz"),
                Some("b"),
            ])
        );
    }

    #[test]
    fn repeated_expressions_get_aliases_of_their_own() {
        let mut query = match Parser::parse_sql(
            &PostgreSqlDialect {},
            "SELECT count(*), count(*), a, a, a + 1 FROM t UNION SELECT 1, 1, 2, 2, 3",
        )
        .unwrap()
        .pop()
        .unwrap()
        {
            sqlparser::ast::Statement::Query(query) => query,
            _ => panic!("not a query"),
        };
        let names = postgresql_names(&query);
        alias_repeated(&mut query);
        assert_eq!(
            query.to_string(),
            "SELECT count(*), count(*) AS \"count:2\", a, a AS \"a:2\", a + 1 FROM t \
             UNION SELECT 1, 1 AS \"?column?:2\", 2, 2 AS \"?column?:3\", 3"
        );
        assert_eq!(
            names.renames(5),
            named(&[
                Some("count"),
                Some("count"),
                Some("a"),
                Some("a"),
                Some("?column?")
            ])
        );
    }

    #[test]
    fn a_wildcard_keeps_its_columns_names() {
        assert_eq!(
            names("SELECT *, count(*) FROM t", 3),
            named(&[None, None, Some("count")])
        );
        assert_eq!(names("SELECT a.*, b.*, 1 FROM a, b", 5), None);
        assert_eq!(names("SELECT *, x AS y FROM t", 3), None);
        assert_eq!(
            names("SELECT 1 UNION SELECT 2", 1),
            named(&[Some("?column?")])
        );
    }
}
