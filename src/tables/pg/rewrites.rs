//! Rewrites of client catalog queries into what DataFusion can plan: applied only to
//! statements that read the system catalogs ([`reads_system_catalogs`]), each for a query
//! shape a client sends (its doc names the client).

use super::*;

/// PostgreSQL's catalog columns of type `regproc`, which Runnel's `pg_catalog` holds as the
/// functions' names.
pub(super) const REGPROC_COLUMNS: [&str; 36] = [
    "aggcombinefn",
    "aggdeserialfn",
    "aggfinalfn",
    "aggfnoid",
    "aggmfinalfn",
    "aggminvtransfn",
    "aggmtransfn",
    "aggserialfn",
    "aggtransfn",
    "amhandler",
    "amproc",
    "conproc",
    "oprcode",
    "oprjoin",
    "oprrest",
    "prosupport",
    "prsend",
    "prsheadline",
    "prslextype",
    "prsstart",
    "prstoken",
    "rngcanonical",
    "rngsubdiff",
    "tmplinit",
    "tmpllexize",
    "trffromsql",
    "trftosql",
    "typanalyze",
    "typinput",
    "typmodin",
    "typmodout",
    "typoutput",
    "typreceive",
    "typsend",
    "typsubscript",
    "evtfoid",
];

/// Casts of `regproc` columns ([`REGPROC_COLUMNS`]): `oprcode::oid` as `regproc_oid(oprcode)`,
/// `amhandler::regproc` as the name it holds (what a `regproc` prints).
pub(super) fn regproc_columns_cast(mut statement: Statement) -> Statement {
    // A cast column keeps its name (`prsstart::oid` is `prsstart`, which pg_dump reads by).
    struct Named;
    impl sqlparser::ast::VisitorMut for Named {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut sqlparser::ast::Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = query.body.as_mut() {
                for item in &mut select.projection {
                    if let SelectItem::UnnamedExpr(expr @ SqlExpr::Cast { .. }) = item
                        && let SqlExpr::Cast { expr: inner, .. } = &*expr
                        && let Some(column) = regproc_column(inner)
                    {
                        let alias = column.clone();
                        *item = SelectItem::ExprWithAlias {
                            expr: expr.clone(),
                            alias,
                        };
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = sqlparser::ast::VisitMut::visit(&mut statement, &mut Named);
    let _ = visit_expressions_mut(&mut statement, |expr| {
        if let SqlExpr::Cast {
            expr: inner,
            data_type,
            ..
        } = expr
            && regproc_column(inner).is_some()
        {
            let target = data_type.to_string().to_ascii_lowercase();
            match target.trim_start_matches("pg_catalog.") {
                "oid" => {
                    if let Some(call) = parsed_expr(&format!("{REGPROC_OID}({inner})")) {
                        *expr = call;
                    }
                }
                "regproc" => *expr = inner.as_ref().clone(),
                _ => {}
            }
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

/// `ARRAY(SELECT … FROM unnest(column) …)` and `… FROM pg_options_to_table(column)`, over a
/// column of the outer query, as `empty_array_of(column)`: DataFusion cannot plan a table
/// function of an outer column, and the arrays catalog queries take apart this way (a
/// toast table's `reloptions`, foreign-data wrappers' options, event triggers' tags) are
/// NULL or empty in Runnel, which gives `{}`. A non-empty one is refused (0A000).
pub(super) fn arrays_over_empty_arrays(mut statement: Statement) -> Statement {
    let _ = visit_expressions_mut(&mut statement, |expr| {
        if let SqlExpr::Function(f) = expr
            && f.name.to_string().eq_ignore_ascii_case("array")
            && let FunctionArguments::Subquery(query) = &f.args
            && let SetExpr::Select(select) = query.body.as_ref()
            && let [from] = select.from.as_slice()
            && from.joins.is_empty()
            && select.selection.is_none()
            && let Some(column) = match &from.relation {
                sqlparser::ast::TableFactor::Table {
                    name,
                    args: Some(args),
                    ..
                } if matches!(
                    name.0
                        .last()
                        .and_then(|p| p.as_ident())
                        .map(|i| i.value.to_ascii_lowercase())
                        .as_deref(),
                    Some("unnest" | "pg_options_to_table")
                ) =>
                {
                    match args.args.as_slice() {
                        [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] => Some(e.clone()),
                        _ => None,
                    }
                }
                sqlparser::ast::TableFactor::UNNEST { array_exprs, .. } => {
                    match array_exprs.as_slice() {
                        [e] => Some(e.clone()),
                        _ => None,
                    }
                }
                _ => None,
            }
            && matches!(
                column,
                SqlExpr::Identifier(_) | SqlExpr::CompoundIdentifier(_)
            )
            && let Some(call) = parsed_expr(&format!("{EMPTY_ARRAY_OF}({column})"))
        {
            *expr = call;
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

/// `pg_get_viewdef(oid [, pretty])` as `(SELECT view_definition(relname) FROM pg_class …)`:
/// the definition of the materialized view of that OID in `public` (NULL for other
/// relations), which Runnel keeps by name.
pub(super) fn view_definitions_by_name(mut statement: Statement) -> Statement {
    let _ = visit_expressions_mut(&mut statement, |expr| {
        if let SqlExpr::Function(f) = expr
            && crate::sql::rewrite::builtin_function(&f.name).as_deref() == Some("pg_get_viewdef")
            && let FunctionArguments::List(list) = &f.args
            && let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(oid))) = list.args.first()
            && let Some(lookup) = parsed_expr(&format!(
                "(SELECT max({VIEW_DEFINITION}(c.relname)) FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON c.relnamespace = n.oid \
                 WHERE n.nspname = '{PUBLIC_SCHEMA}' AND c.oid = {oid})"
            ))
        {
            *expr = lookup;
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

/// `sql` parsed as an expression, if it parses.
fn parsed_expr(sql: &str) -> Option<SqlExpr> {
    sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .ok()
}

/// The column `expr` is, if one of [`REGPROC_COLUMNS`].
pub(super) fn regproc_column(expr: &SqlExpr) -> Option<&sqlparser::ast::Ident> {
    let column = match expr {
        SqlExpr::Identifier(ident) => ident,
        SqlExpr::CompoundIdentifier(parts) => parts.last()?,
        _ => return None,
    };
    REGPROC_COLUMNS
        .contains(&column.value.to_ascii_lowercase().as_str())
        .then_some(column)
}

/// Whether a query looks at the system catalogs, so that it is worth parsing again with the
/// PostgreSQL compatibility rewrites: it reads a `pg_catalog` or `information_schema`
/// relation (or a `pg_…` one), calls a schema-qualified or `pg_…` function or one of those
/// catalog queries use, or casts to an object-identifier type (`'t'::regclass`). Decided on the parsed query, so
/// that text (`'/pg_admin'`) or a column named like a catalog does not count.
pub fn reads_system_catalogs(query: &sqlparser::ast::Statement) -> bool {
    use sqlparser::ast::{Visit, Visitor};
    struct Catalogs(bool);
    impl Visitor for Catalogs {
        type Break = ();
        fn pre_visit_relation(&mut self, name: &sqlparser::ast::ObjectName) -> ControlFlow<()> {
            let parts: Vec<String> = name
                .0
                .iter()
                .map(|p| p.to_string().to_ascii_lowercase())
                .collect();
            let catalog = parts.iter().any(|p| {
                let p = p.trim_matches('"');
                p == "pg_catalog" || p == "information_schema"
            }) || parts
                .last()
                .is_some_and(|p| p.trim_matches('"').starts_with("pg_"));
            self.0 |= catalog;
            if catalog {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
        fn pre_visit_expr(&mut self, expr: &SqlExpr) -> ControlFlow<()> {
            let catalog = match expr {
                SqlExpr::Function(f) => {
                    let qualified = f.name.to_string().to_ascii_lowercase();
                    let name = qualified
                        .rsplit('.')
                        .next()
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_string();
                    qualified.contains('.')
                        || name.starts_with("pg_")
                        || name.starts_with("has_")
                        || name.ends_with("_description")
                        || matches!(
                            name.as_str(),
                            "current_user" | "session_user" | "format_type" | "current_schemas"
                        )
                }
                SqlExpr::Cast {
                    data_type: SqlDataType::Custom(name, _),
                    ..
                } => {
                    let name = name.to_string().to_ascii_lowercase();
                    name.starts_with("reg") || name.ends_with("oid")
                }
                SqlExpr::Cast {
                    data_type: SqlDataType::Regclass,
                    ..
                } => true,
                _ => false,
            };
            self.0 |= catalog;
            if catalog {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    let mut found = Catalogs(false);
    let _ = query.visit(&mut found);
    found.0
}

/// `sql` parsed and rewritten for DataFusion as datafusion-postgres does it, if it is only
/// queries (catalog queries are); `None` otherwise, or if it does not parse that way.
pub fn parse_catalog_queries(sql: &str) -> Option<Vec<Statement>> {
    thread_local! {
        static PARSER: PostgresCompatibilityParser = PostgresCompatibilityParser::new();
    }
    let sql = regproc_literals_as_names(sql);
    let sql = regclass_literals_qualified(&sql);
    let statements = PARSER.with(|p| p.parse(&sql)).ok()?;
    if statements.is_empty() || !statements.iter().all(|s| matches!(s, Statement::Query(_))) {
        return None;
    }
    Some(
        statements
            .into_iter()
            .map(empty_catalogs_qualified)
            .map(index_queries_found_empty)
            .map(visibility_by_search_path)
            .map(absent_column_details)
            .map(domains_over_base_types)
            .map(type_names_of_regtype)
            .map(type_names_of_regtype_arrays)
            .map(absent_column_privileges_and_policies)
            .map(scalar_subqueries_aggregated)
            .map(arrays_of_oids)
            .map(characters_of_names)
            .map(regproc_columns_cast)
            .map(arrays_over_empty_arrays)
            .map(view_definitions_by_name)
            .collect(),
    )
}

/// `CASE WHEN … THEN (SELECT … FROM pg_attrdef | pg_sequence | pg_collation …) ELSE NULL
/// END` as NULL: Runnel's columns have no defaults, no identity sequences and no collation of
/// their own, and there are no publications whose column lists (`prattrs`) to spell out, so
/// these look-ups (SQLAlchemy's column reflection, pg_dump) find nothing; and DataFusion
/// cannot plan a correlated sub-query inside `CASE`.
pub(super) fn absent_column_details(mut statement: Statement) -> Statement {
    let looks_up_details = |e: &SqlExpr| {
        let SqlExpr::Subquery(q) = e else {
            return false;
        };
        let text = q.to_string().to_ascii_lowercase();
        ["pg_attrdef", "pg_sequence", "pg_collation", "prattrs"]
            .iter()
            .any(|t| text.contains(t))
    };
    let _ = visit_expressions_mut(&mut statement, |expr| {
        if let SqlExpr::Case {
            conditions,
            else_result,
            ..
        } = expr
            && !conditions.is_empty()
            && conditions.iter().all(|w| looks_up_details(&w.result))
            && else_result.as_deref().is_none_or(
                |e| matches!(e, SqlExpr::Value(v) if v.value == sqlparser::ast::Value::Null),
            )
        {
            *expr = SqlExpr::Value(sqlparser::ast::Value::Null.into());
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

/// `CASE WHEN t.typtype = 'd' THEN (WITH RECURSIVE … typbasetype …) END` as `CASE WHEN
/// t.typtype = 'd' THEN t.typbasetype END`: asyncpg's type introspection follows a domain's
/// base types down to the last with a correlated recursive query, which DataFusion cannot
/// plan. Runnel's only domains are information_schema's, each over a base type (a test
/// checks it), so the last base type is the first.
pub(super) fn domains_over_base_types(mut statement: Statement) -> Statement {
    let domain_type = |e: &SqlExpr| match e {
        SqlExpr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => match (left.as_ref(), right.as_ref()) {
            (SqlExpr::CompoundIdentifier(parts), SqlExpr::Value(v))
                if v.value == sqlparser::ast::Value::SingleQuotedString("d".into())
                    && parts.len() == 2
                    && parts[1].value.eq_ignore_ascii_case("typtype") =>
            {
                Some(parts[0].clone())
            }
            _ => None,
        },
        _ => None,
    };
    let follows_base_types = |e: &SqlExpr| {
        matches!(e, SqlExpr::Subquery(q)
            if q.with.as_ref().is_some_and(|w| w.recursive)
                && q.to_string().to_ascii_lowercase().contains("typbasetype"))
    };
    let _ = visit_expressions_mut(&mut statement, |expr| {
        if let SqlExpr::Case {
            operand: None,
            conditions,
            ..
        } = expr
            && let [when] = conditions.as_mut_slice()
            && let Some(domain) = domain_type(&when.condition)
            && follows_base_types(&when.result)
        {
            when.result = SqlExpr::CompoundIdentifier(vec![
                domain,
                sqlparser::ast::Ident::new("typbasetype"),
            ]);
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

/// `array_agg(x.atttypid …)`, of a catalog column that holds oids, as `CAST(… AS oid[])`:
/// in PostgreSQL it is an `oid[]`, which asyncpg's type introspection needs to read its
/// own answer (an `int4[]` there would have to be introspected first).
pub(super) fn arrays_of_oids(mut statement: Statement) -> Statement {
    const OID_COLUMNS: [&str; 6] = [
        "oid",
        "atttypid",
        "typelem",
        "typbasetype",
        "typrelid",
        "reltype",
    ];
    let _ = visit_expressions_mut(&mut statement, |expr| {
        if let SqlExpr::Function(f) = expr
            && f.name.to_string().eq_ignore_ascii_case("array_agg")
            && let FunctionArguments::List(list) = &f.args
            && let [FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::CompoundIdentifier(parts)))] =
                list.args.as_slice()
            && parts
                .last()
                .is_some_and(|p| OID_COLUMNS.contains(&p.value.to_ascii_lowercase().as_str()))
            && let Some(oids) = parsed_expr(&format!("CAST({expr} AS oid[])"))
        {
            *expr = oids;
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

/// `typname[0]` as `substr(typname, 1, 1)`: a catalog's `name` (`typname`, `relname`, …) is
/// an array of characters in PostgreSQL, subscripted from 0 (pg_dump tells array types by
/// `typname[0] = '_'`); Runnel holds names as text.
pub(super) fn characters_of_names(mut statement: Statement) -> Statement {
    let _ = visit_expressions_mut(&mut statement, |expr| {
        if let SqlExpr::CompoundFieldAccess { root, access_chain } = expr
            && let [
                sqlparser::ast::AccessExpr::Subscript(sqlparser::ast::Subscript::Index { index }),
            ] = access_chain.as_slice()
            && let Some(column) = match root.as_ref() {
                SqlExpr::Identifier(ident) => Some(ident),
                SqlExpr::CompoundIdentifier(parts) => parts.last(),
                _ => None,
            }
            && column.value.to_ascii_lowercase().ends_with("name")
            && let Some(character) = parsed_expr(&format!("substr({root}, ({index}) + 1, 1)"))
        {
            *expr = character;
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

/// `CAST(… x::regtype[] … AS text[])` with `regtype_names(x)` for `x::regtype[]`: the names
/// of the types, as PostgreSQL prints a `regtype[]` (pgcli lists functions' argument types
/// so, from `pg_proc`'s `oidvector` and oid arrays, which Runnel's `pg_proc` holds as text).
pub(super) fn type_names_of_regtype_arrays(mut statement: Statement) -> Statement {
    fn regtype_array(e: &SqlExpr) -> Option<&SqlExpr> {
        match e {
            SqlExpr::Cast {
                expr,
                data_type:
                    SqlDataType::Array(sqlparser::ast::ArrayElemTypeDef::SquareBracket(element, _)),
                ..
            } if matches!(element.as_ref(), SqlDataType::Custom(name, _)
                if name.to_string().eq_ignore_ascii_case("regtype")) =>
            {
                Some(expr)
            }
            _ => None,
        }
    }
    let _ = visit_expressions_mut(&mut statement, |expr| {
        if let SqlExpr::Cast {
            expr: inner,
            data_type:
                SqlDataType::Array(sqlparser::ast::ArrayElemTypeDef::SquareBracket(element, _)),
            ..
        } = expr
            && matches!(element.as_ref(), SqlDataType::Text)
        {
            let _ = visit_expressions_mut(inner.as_mut(), |e| {
                if let Some(oids) = regtype_array(e)
                    && let Some(named) = parsed_expr(&format!("regtype_names({oids})"))
                {
                    *e = named;
                }
                ControlFlow::<()>::Continue(())
            });
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

/// `oid::regtype::text` as the type's name, as PostgreSQL writes a `regtype` (`integer`,
/// `-` for 0): datafusion-pg-catalog plans a `regtype` as the number.
pub(super) fn type_names_of_regtype(mut statement: Statement) -> Statement {
    let _ = visit_expressions_mut(&mut statement, |expr| {
        if let SqlExpr::Cast {
            expr: inner,
            data_type: SqlDataType::Text,
            ..
        } = expr
            && let SqlExpr::Cast {
                expr: oid,
                data_type: SqlDataType::Custom(name, _),
                ..
            } = inner.as_ref()
            && name.to_string().eq_ignore_ascii_case("regtype")
            && let Some(named) = parsed_expr(&format!("regtype_names(CAST({oid} AS text))[1]"))
        {
            *expr = named;
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

/// `array_to_string(ARRAY(SELECT … attacl … | … FROM pg_policy …), sep)` as `''`: Runnel
/// grants on relations, not on columns, and has no row security policies, so these lists
/// (psql's `\dp` columns "Column privileges" and "Policies") are empty; and DataFusion
/// cannot plan an `ARRAY(sub-query)`.
pub(super) fn absent_column_privileges_and_policies(mut statement: Statement) -> Statement {
    let _ = visit_expressions_mut(&mut statement, |expr| {
        if let SqlExpr::Function(f) = expr
            && f.name
                .to_string()
                .to_ascii_lowercase()
                .ends_with("array_to_string")
            && let FunctionArguments::List(list) = &f.args
            && let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Function(array)))) =
                list.args.first()
            && array.name.to_string().eq_ignore_ascii_case("array")
            && let FunctionArguments::Subquery(query) = &array.args
        {
            let text = query.to_string().to_ascii_lowercase();
            if text.contains("attacl") || text.contains("pg_policy") {
                *expr =
                    SqlExpr::Value(sqlparser::ast::Value::SingleQuotedString(String::new()).into());
            }
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

/// A scalar sub-query of a catalog query, `(SELECT e FROM … WHERE …)`, as
/// `(SELECT max(e) FROM … WHERE …)`: DataFusion plans a correlated one only if it is
/// aggregated. The catalog rows these look up (a column's default, its collation, a type)
/// are one at most, so the answer is the same. (SQLAlchemy's column reflection has three.)
/// One that orders its rows, or limits them to more than one, picks rows, which `max`
/// would not: it stays. A bare `LIMIT 1` (datafusion-pg-catalog adds one to every scalar
/// sub-query; pg_dump's `(SELECT spcname FROM pg_tablespace t WHERE t.oid =
/// dattablespace)`) picks any one row, as `max` does.
pub(super) fn scalar_subqueries_aggregated(mut statement: Statement) -> Statement {
    let _ = visit_expressions_mut(&mut statement, |expr| {
        if let SqlExpr::Subquery(query) = expr
            && query.order_by.is_none()
            && limits_to_any_one_row(query.limit_clause.as_ref())
            && let SetExpr::Select(select) = query.body.as_mut()
            && matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty())
            && let [SelectItem::UnnamedExpr(item) | SelectItem::ExprWithAlias { expr: item, .. }] =
                select.projection.as_mut_slice()
            && !is_aggregate(item)
            && let Some(aggregated) = parsed_expr(&format!("max({item})"))
        {
            *item = aggregated;
            query.limit_clause = None;
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

/// No limit, or `LIMIT 1` alone.
fn limits_to_any_one_row(limit: Option<&sqlparser::ast::LimitClause>) -> bool {
    match limit {
        None => true,
        Some(sqlparser::ast::LimitClause::LimitOffset {
            limit: Some(SqlExpr::Value(one)),
            offset: None,
            limit_by,
        }) => limit_by.is_empty() && one.value == sqlparser::ast::Value::Number("1".into(), false),
        Some(_) => false,
    }
}

pub(super) fn is_aggregate(expr: &SqlExpr) -> bool {
    const AGGREGATES: [&str; 9] = [
        "count",
        "sum",
        "min",
        "max",
        "avg",
        "array_agg",
        "string_agg",
        "bool_and",
        "bool_or",
    ];
    matches!(expr, SqlExpr::Function(f)
    if f.name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| {
        AGGREGATES.contains(&i.value.to_ascii_lowercase().as_str())
    }))
}

/// `pg_table_is_visible(c.oid)` as PostgreSQL means it: the relation is in a schema on the
/// search path (`public`, and `pg_catalog`), so `\dt` and SQLAlchemy's default-schema
/// listings leave out `sys`. (datafusion-pg-catalog's function says yes to everything.)
pub(super) fn visibility_by_search_path(mut statement: Statement) -> Statement {
    let _ = visit_expressions_mut(&mut statement, |expr| {
        if let SqlExpr::Function(f) = expr
            && f.name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .is_some_and(|i| i.value.eq_ignore_ascii_case("pg_table_is_visible"))
            && let FunctionArguments::List(list) = &f.args
            && let [FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::CompoundIdentifier(parts)))] =
                list.args.as_slice()
            && parts
                .last()
                .is_some_and(|p| p.value.eq_ignore_ascii_case("oid"))
        {
            let mut namespace = parts.clone();
            namespace.last_mut().expect("not empty").value = "relnamespace".into();
            let namespace = SqlExpr::CompoundIdentifier(namespace);
            let sql = format!(
                "{namespace} IN (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname IN ('public', 'pg_catalog'))"
            );
            if let Some(visible) = parsed_expr(&sql) {
                *expr = visible;
            }
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

/// `'pg_catalog.f'::regproc` as `'f'`: `pg_type`'s `typinput` and friends hold function
/// names here, so a comparison with one (DBeaver's array-type probe) compares names.
pub(super) fn regproc_literals_as_names(sql: &str) -> std::borrow::Cow<'_, str> {
    const CAST: &str = "'::regproc";
    if !sql.contains(CAST) {
        return sql.into();
    }
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(end) = rest.find(CAST) {
        let literal_start = rest[..end].rfind('\'').map_or(0, |i| i + 1);
        let name = &rest[literal_start..end];
        let name = name.rsplit('.').next().unwrap_or(name);
        out.push_str(&rest[..literal_start]);
        out.push_str(name);
        out.push('\'');
        rest = &rest[end + CAST.len()..];
    }
    out.push_str(rest);
    out.into()
}

/// Bare names of [`EMPTY_CATALOGS`] qualified with `pg_catalog`, as datafusion-pg-catalog
/// qualifies those of its own tables.
pub(super) fn empty_catalogs_qualified(mut statement: Statement) -> Statement {
    let _ = sqlparser::ast::visit_relations_mut(&mut statement, |name| {
        if let [part] = name.0.as_slice()
            && let Some(ident) = part.as_ident()
            && EMPTY_CATALOGS
                .iter()
                .any(|(table, _)| *table == crate::catalog::normalize(ident))
        {
            let table = ident.clone();
            *name = sqlparser::ast::ObjectName::from(vec![
                sqlparser::ast::Ident::new(PG_CATALOG),
                table,
            ]);
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

/// `'pg_class'::regclass` as `'pg_catalog.pg_class'::regclass`: PostgreSQL looks for a
/// relation in `pg_catalog` before the schemas of the search path (pg_dump names catalogs
/// bare with an empty search path), where datafusion-pg-catalog looks in the current
/// schema only. And `'f(text)'::regprocedure` as `regprocedure_oid('f(text)')` (psql's
/// `\sf f(text)`; see [`super::routines::regprocedure_oid`]).
pub(super) fn regclass_literals_qualified(sql: &str) -> std::borrow::Cow<'_, str> {
    let lower = sql.to_ascii_lowercase();
    if !lower.contains("regclass") && !lower.contains("regprocedure") {
        return sql.into();
    }
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    let Ok(mut statements) = sqlparser::parser::Parser::parse_sql(&dialect, sql) else {
        return sql.into();
    };
    let mut qualified = false;
    for statement in &mut statements {
        let _ = visit_expressions_mut(statement, |expr| {
            if let SqlExpr::Cast {
                expr: literal,
                data_type,
                ..
            } = expr
                && matches!(data_type, SqlDataType::Regclass)
                    | data_type
                        .to_string()
                        .eq_ignore_ascii_case("pg_catalog.regclass")
                && let SqlExpr::Value(value) = literal.as_mut()
                && let sqlparser::ast::Value::SingleQuotedString(name) = &mut value.value
                && is_catalog_table(name)
            {
                *name = format!("{PG_CATALOG}.{name}");
                qualified = true;
            }
            if let SqlExpr::Cast {
                expr: literal,
                data_type,
                ..
            } = expr
                && matches!(
                    data_type.to_string().to_ascii_lowercase().as_str(),
                    "regprocedure" | "pg_catalog.regprocedure"
                )
                && let SqlExpr::Value(value) = literal.as_ref()
                && let sqlparser::ast::Value::SingleQuotedString(signature) = &value.value
                && let Some(call) = parsed_expr(&format!(
                    "{}('{}')",
                    super::routines::REGPROCEDURE_OID,
                    signature.replace('\'', "''")
                ))
            {
                *expr = call;
                qualified = true;
            }
            ControlFlow::<()>::Continue(())
        });
    }
    if !qualified {
        return sql.into();
    }
    statements
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("; ")
        .into()
}

/// A query that expands index or constraint keys (`information_schema._pg_expandarray(
/// i.indkey)` in pgjdbc's `getPrimaryKeys` and `getIndexInfo`, `unnest(conkey)` in
/// SQLAlchemy's constraint reflection) as what it returns: no rows, since Runnel has no
/// indexes or constraints (`pg_index` and `pg_constraint` are empty). DataFusion cannot
/// plan those set-returning calls, which would never be made.
pub(super) fn index_queries_found_empty(statement: Statement) -> Statement {
    let Statement::Query(query) = &statement else {
        return statement;
    };
    let text = statement.to_string().to_ascii_lowercase();
    let expands_keys = text.contains("_pg_expandarray")
        || (text.contains("unnest(") && (text.contains("indkey") || text.contains("conkey")));
    if !expands_keys {
        return statement;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return statement;
    };
    let columns: Vec<String> = select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::ExprWithAlias { alias, .. } => alias.value.clone(),
            SelectItem::UnnamedExpr(SqlExpr::Identifier(ident)) => ident.value.clone(),
            SelectItem::UnnamedExpr(SqlExpr::CompoundIdentifier(parts)) => {
                parts.last().map_or_else(String::new, |p| p.value.clone())
            }
            other => other.to_string(),
        })
        .collect();
    let projection = columns
        .iter()
        .map(|c| format!("CAST(NULL AS TEXT) AS \"{}\"", c.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(", ");
    let empty = format!("SELECT {projection} WHERE false");
    match sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, &empty) {
        Ok(mut parsed) if parsed.len() == 1 => parsed.pop().expect("one statement"),
        _ => statement,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        parse_catalog_queries(sql)
            .expect("a catalog query")
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn a_scalar_subquery_limited_to_one_row_is_aggregated() {
        let sql = rewritten(
            "SELECT (SELECT spcname FROM pg_tablespace t WHERE t.oid = dattablespace) \
             FROM pg_database",
        );
        assert!(sql.contains("SELECT max(spcname) FROM"), "{sql}");
        assert!(!sql.contains("LIMIT"), "{sql}");
        // One that orders its rows picks one: it stays.
        let sql = rewritten(
            "SELECT (SELECT spcname FROM pg_tablespace t ORDER BY oid LIMIT 1) FROM pg_database",
        );
        assert!(!sql.contains("max("), "{sql}");
    }

    #[test]
    fn pg_dump_catalog_reads_become_plannable() {
        // A regproc column cast to oid keeps its name (pg_dump reads columns by name).
        let sql = rewritten("SELECT tableoid, oid, prsstart::oid FROM pg_ts_parser");
        assert!(sql.contains("regproc_oid(prsstart) AS prsstart"), "{sql}");
        // A name's first character.
        let sql = rewritten("SELECT typname[0] = '_' FROM pg_type");
        assert!(sql.contains("SUBSTR(typname, (0) + 1, 1)"), "{sql}");
        // A table function of an outer row's array, which is empty here.
        let sql = rewritten(
            "SELECT array_to_string(ARRAY(SELECT quote_ident(option_name) FROM \
             pg_options_to_table(fdwoptions) ORDER BY option_name), ',') FROM \
             pg_foreign_data_wrapper",
        );
        assert!(sql.contains("empty_array_of(fdwoptions)"), "{sql}");
        // A catalog named bare in a regclass literal is pg_catalog's.
        let sql = rewritten("SELECT 1 FROM pg_depend WHERE classid = 'pg_class'::regclass");
        assert!(sql.contains("pg_catalog.pg_class"), "{sql}");
        // A view's definition, looked up by the relation's name.
        let sql = rewritten("SELECT pg_catalog.pg_get_viewdef('16400'::pg_catalog.oid)");
        assert!(sql.contains("view_definition(c.relname)"), "{sql}");
    }

    #[test]
    fn text_that_looks_like_a_catalog_is_left_alone() {
        let statement = sqlparser::parser::Parser::parse_sql(
            &sqlparser::dialect::PostgreSqlDialect {},
            "SELECT 'pg_class'::text, '/pg_admin' FROM clicks",
        )
        .unwrap()
        .remove(0);
        assert!(!reads_system_catalogs(&statement));
    }
}
