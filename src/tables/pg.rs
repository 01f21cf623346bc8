//! What PostgreSQL clients look for besides their data: the `pg_catalog` schema (from
//! datafusion-pg-catalog, built from the catalog on each query), the functions drivers and
//! BI tools call on connect (`version()`, `current_database()`, `current_schema()`,
//! `pg_table_is_visible()`, …), and the rewrites that let DataFusion plan their catalog
//! queries (`'x'::regclass`, `OPERATOR(pg_catalog.~)`, psql's `\d` sub-queries).
//!
//! DataFusion's own `information_schema` (tables, columns, views, schemata) is on too.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Int32Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session};
use datafusion::common::ScalarValue;
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::error::DataFusionError;
use datafusion::error::Result as DfResult;
use datafusion::execution::context::{SessionContext, SessionState};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility, create_udf,
};
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion_pg_catalog::pg_catalog::context::{PgCatalogContextProvider, Role};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use sqlparser::ast::{
    BinaryOperator, DataType as SqlDataType, Expr as SqlExpr, FunctionArg, FunctionArgExpr,
    FunctionArguments, GroupByExpr, SelectItem, SetExpr, Statement, visit_expressions_mut,
};

use super::Tables;
use crate::catalog::access::SUPERUSER;
use crate::catalog::{
    CATALOG_NAME, CatalogData, HIDDEN_COLUMNS, ObjectClass, PUBLIC_SCHEMA, Relation,
};
use crate::error::{Error, Result};
use crate::sql::text_type::TextType;

/// What `pg_catalog`'s functions need to know before a database starts: the OID of every
/// type in `pg_type` (for `to_regtype`) and each OID's name and element type (for the names
/// a `regtype` prints as), read once from a scratch context.
pub struct PgTypes(HashMap<String, i32>, Arc<HashMap<i32, (String, i32)>>);

impl PgTypes {
    pub async fn load() -> Result<PgTypes> {
        let ctx = SessionContext::new();
        let catalog = ctx
            .state()
            .config()
            .options()
            .catalog
            .default_catalog
            .clone();
        datafusion_pg_catalog::setup_pg_catalog(
            &ctx,
            &catalog,
            datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
        )
        .map_err(|e| Error::Internal(format!("setting up pg_catalog: {e}")))?;
        let batches = ctx
            .sql(
                "SELECT typname, CAST(oid AS BIGINT), CAST(typelem AS BIGINT) \
                 FROM pg_catalog.pg_type",
            )
            .await?
            .collect()
            .await?;
        let mut oids = HashMap::new();
        let mut names_of = HashMap::new();
        for batch in &batches {
            let names = cast(batch.column(0), &DataType::Utf8)
                .map_err(|e| Error::Internal(format!("reading pg_type: {e}")))?;
            let names = names.as_string::<i32>();
            let values = batch.column(1).as_primitive::<Int64Type>();
            let elements = batch.column(2).as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                if names.is_valid(row) && values.is_valid(row) {
                    let oid = values.value(row) as i32;
                    oids.insert(names.value(row).to_string(), oid);
                    let element = elements.is_valid(row).then(|| elements.value(row) as i32);
                    names_of.insert(oid, (names.value(row).to_string(), element.unwrap_or(0)));
                }
            }
        }
        Ok(PgTypes(oids, Arc::new(names_of)))
    }
}

/// Adds `pg_catalog` to the catalog `runnel` of `state`, and the PostgreSQL functions
/// clients call.
pub fn install(state: SessionState, tables: Arc<Tables>, types: &PgTypes) -> Result<SessionState> {
    let ctx = SessionContext::new_with_state(state);
    let internal =
        |e: Box<dyn std::fmt::Display>| Error::Internal(format!("setting up pg_catalog: {e}"));
    let roles = Roles {
        tables: tables.clone(),
    };
    datafusion_pg_catalog::setup_pg_catalog(&ctx, CATALOG_NAME, roles)
        .map_err(|e| internal(Box::new(e)))?;
    let catalog = ctx
        .catalog(CATALOG_NAME)
        .ok_or_else(|| internal(Box::new("no catalog")))?;
    let inner = catalog
        .schema(PG_CATALOG)
        .ok_or_else(|| internal(Box::new("no pg_catalog")))?;
    catalog
        .register_schema(PG_CATALOG, Arc::new(PgCatalogSchema::new(inner, tables)))
        .map_err(|e| internal(Box::new(e)))?;
    ctx.register_udf(version());
    ctx.register_udf(like_escape());
    // Runnel has no sequences (SQLAlchemy asks for each column it reflects), and the only
    // collations are pg_catalog's.
    ctx.register_udf(Constant::udf(
        "pg_get_serial_sequence",
        &[2],
        ScalarValue::Utf8(None),
    ));
    // A Runnel server is a primary, never a standby in recovery (pg_dump asks first).
    ctx.register_udf(Constant::udf(
        "pg_is_in_recovery",
        &[0],
        ScalarValue::Boolean(Some(false)),
    ));
    // Everything Runnel has is on the search path.
    for name in [
        "pg_collation_is_visible",
        "pg_type_is_visible",
        "pg_function_is_visible",
    ] {
        ctx.register_udf(Constant::udf(name, &[1], ScalarValue::Boolean(Some(true))));
    }
    // Nothing has a comment (there is no COMMENT ON); functions are only the built-in ones,
    // whose definitions are not SQL; the tablespaces are the built-in two, which have no
    // location. Sizes Runnel does not report per relation or database are NULL, not 0.
    for (name, arities) in [
        ("obj_description", &[1, 2][..]),
        ("col_description", &[2]),
        ("shobj_description", &[2]),
        ("pg_get_function_arguments", &[1]),
        ("pg_get_function_result", &[1]),
        ("pg_get_function_identity_arguments", &[1]),
    ] {
        ctx.register_udf(Constant::udf(name, arities, ScalarValue::Utf8(None)));
    }
    ctx.register_udf(Constant::udf(
        "pg_tablespace_location",
        &[1],
        ScalarValue::Utf8(Some(String::new())),
    ));
    for name in ["pg_table_size", "pg_database_size", "pg_indexes_size"] {
        ctx.register_udf(Constant::udf(name, &[1], ScalarValue::Int64(None)));
    }
    ctx.register_udf(pg_size_pretty());
    ctx.register_udf(to_regtype(types));
    ctx.register_udf(regtype_names(types));
    Ok(ctx.state())
}

/// `pg_roles` (psql's `\du`): the bootstrap superuser and the users of `CREATE USER`, as
/// the catalog has them when a query reads it.
#[derive(Clone)]
struct Roles {
    tables: Arc<Tables>,
}

impl std::fmt::Debug for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Roles")
    }
}

#[async_trait]
impl PgCatalogContextProvider for Roles {
    async fn roles(&self) -> Vec<String> {
        let catalog = self.tables.catalog.snapshot();
        let mut names: BTreeSet<String> = catalog.users.keys().cloned().collect();
        names.insert(SUPERUSER.to_string());
        names.into_iter().collect()
    }

    async fn role(&self, name: &str) -> Option<Role> {
        let catalog = self.tables.catalog.snapshot();
        let superuser = match catalog.users.get(name) {
            Some(user) => user.superuser,
            None if name == SUPERUSER => true,
            None => return None,
        };
        Some(Role {
            name: name.to_string(),
            is_superuser: superuser,
            can_login: true,
            can_create_db: superuser,
            can_create_role: superuser,
            can_create_user: superuser,
            can_replication: false,
            grants: vec![],
            inherited_roles: vec![],
        })
    }
}

/// `like_escape(pattern, escape)`: `pattern`, whose escape character is `escape`, as a
/// pattern whose escape character is `\` (see [`crate::sql::rewrite`]).
fn like_escape() -> ScalarUDF {
    let translate = |args: &[ColumnarValue]| {
        let rows = args
            .iter()
            .map(|a| match a {
                ColumnarValue::Array(a) => a.len(),
                ColumnarValue::Scalar(_) => 1,
            })
            .max()
            .unwrap_or(1);
        let patterns = cast(&args[0].to_array(rows)?, &DataType::Utf8)?;
        let escapes = cast(&args[1].to_array(rows)?, &DataType::Utf8)?;
        let (patterns, escapes) = (patterns.as_string::<i32>(), escapes.as_string::<i32>());
        let out: StringArray = (0..rows)
            .map(|i| {
                if patterns.is_null(i) || escapes.is_null(i) {
                    return None;
                }
                let escape = escapes.value(i).chars().next();
                let mut out = String::new();
                let mut chars = patterns.value(i).chars();
                while let Some(c) = chars.next() {
                    if Some(c) == escape {
                        if let Some(next) = chars.next() {
                            out.push('\\');
                            out.push(next);
                        }
                    } else if c == '\\' {
                        out.push_str("\\\\");
                    } else {
                        out.push(c);
                    }
                }
                Some(out)
            })
            .collect();
        let scalar = args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(Arc::new(out))
        })
    };
    create_udf(
        "like_escape",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(translate),
    )
}

/// A function's result for `input`'s rows: a scalar for a scalar.
fn shaped_like(
    input: &ColumnarValue,
    out: arrow::array::ArrayRef,
) -> datafusion::common::Result<ColumnarValue> {
    Ok(match input {
        ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?),
        ColumnarValue::Array(_) => ColumnarValue::Array(out),
    })
}

/// `to_regtype(name)`: the oid of the type named so in `pg_type`, or NULL (psycopg looks
/// types up with it on connect).
fn to_regtype(types: &PgTypes) -> ScalarUDF {
    let oids = types.0.clone();
    let lookup = move |args: &[ColumnarValue]| {
        let names = cast(&args[0].to_array(1)?, &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let found: Int32Array = names
            .iter()
            .map(|n| n.and_then(|n| oids.get(n.trim_start_matches("pg_catalog.")).copied()))
            .collect();
        shaped_like(&args[0], Arc::new(found))
    };
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(lookup),
    )
}

/// A type's name as a `regtype` prints it (its `format_type`): SQL's names for the
/// built-in types, `"any"` and `"char"` quoted, an array as its element's name and `[]`,
/// `-` for 0, `???` for an OID no type has.
fn regtype_name(types: &HashMap<i32, (String, i32)>, oid: i32) -> String {
    if oid == 0 {
        return "-".into();
    }
    let Some((name, element)) = types.get(&oid) else {
        return "???".into();
    };
    if name.starts_with('_') && *element != 0 {
        return format!("{}[]", regtype_name(types, *element));
    }
    crate::catalog::types::sql_type_name(name).to_string()
}

/// `regtype_names(oids)`: the names of the types of a list of OIDs, given as an `oidvector`'s
/// text (`23 25`) or an array's (`{23,25}`): `CAST(x::regtype[] AS text[])` in catalog
/// queries (pgcli's list of functions) is this.
fn regtype_names(types: &PgTypes) -> ScalarUDF {
    let names = types.1.clone();
    let lookup = move |args: &[ColumnarValue]| {
        let texts = cast(&args[0].to_array(1)?, &DataType::Utf8)?;
        let mut out = ListBuilder::new(StringBuilder::new());
        for text in texts.as_string::<i32>() {
            match text {
                None => out.append_null(),
                Some(text) => {
                    for oid in text
                        .split(|c: char| !c.is_ascii_digit())
                        .filter(|n| !n.is_empty())
                    {
                        let oid = oid.parse().unwrap_or(-1);
                        out.values().append_value(regtype_name(&names, oid));
                    }
                    out.append(true);
                }
            }
        }
        shaped_like(&args[0], Arc::new(out.finish()))
    };
    create_udf(
        "regtype_names",
        vec![DataType::Utf8],
        text_array(),
        Volatility::Stable,
        Arc::new(lookup),
    )
}

const PG_CATALOG: &str = "pg_catalog";

/// `version()`: clients parse the PostgreSQL version out of it, so it leads with the one
/// Runnel speaks, then says what it is.
fn version() -> ScalarUDF {
    let text = format!(
        "PostgreSQL {} on {}-{} (Runnel {}), 64-bit",
        crate::SERVER_VERSION,
        std::env::consts::ARCH,
        std::env::consts::OS,
        env!("CARGO_PKG_VERSION")
    );
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))),
    )
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
    let statements = PARSER.with(|p| p.parse(&sql)).ok()?;
    if statements.is_empty() || !statements.iter().all(|s| matches!(s, Statement::Query(_))) {
        return None;
    }
    Some(
        statements
            .into_iter()
            .map(index_queries_found_empty)
            .map(visibility_by_search_path)
            .map(absent_column_details)
            .map(domains_over_base_types)
            .map(type_names_of_regtype)
            .map(type_names_of_regtype_arrays)
            .map(absent_column_privileges_and_policies)
            .map(scalar_subqueries_aggregated)
            .map(arrays_of_oids)
            .collect(),
    )
}

/// `CASE WHEN … THEN (SELECT … FROM pg_attrdef | pg_sequence | pg_collation …) ELSE NULL
/// END` as NULL: Runnel's columns have no defaults, no identity sequences and no collation of
/// their own, so these look-ups (SQLAlchemy's column reflection) find nothing; and DataFusion
/// cannot plan a correlated sub-query inside `CASE`.
fn absent_column_details(mut statement: Statement) -> Statement {
    let looks_up_details = |e: &SqlExpr| {
        let SqlExpr::Subquery(q) = e else {
            return false;
        };
        let text = q.to_string().to_ascii_lowercase();
        ["pg_attrdef", "pg_sequence", "pg_collation"]
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
fn domains_over_base_types(mut statement: Statement) -> Statement {
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
fn arrays_of_oids(mut statement: Statement) -> Statement {
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
            && let Ok(oids) =
                sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
                    .try_with_sql(&format!("CAST({expr} AS oid[])"))
                    .and_then(|mut p| p.parse_expr())
        {
            *expr = oids;
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

/// `CAST(… x::regtype[] … AS text[])` with `regtype_names(x)` for `x::regtype[]`: the names
/// of the types, as PostgreSQL prints a `regtype[]` (pgcli lists functions' argument types
/// so, from `pg_proc`'s `oidvector` and oid arrays, which Runnel's `pg_proc` holds as text).
fn type_names_of_regtype_arrays(mut statement: Statement) -> Statement {
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
                    && let Ok(named) =
                        sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
                            .try_with_sql(&format!("regtype_names({oids})"))
                            .and_then(|mut p| p.parse_expr())
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
fn type_names_of_regtype(mut statement: Statement) -> Statement {
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
            && let Ok(named) =
                sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
                    .try_with_sql(&format!("regtype_names(CAST({oid} AS text))[1]"))
                    .and_then(|mut p| p.parse_expr())
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
fn absent_column_privileges_and_policies(mut statement: Statement) -> Statement {
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
/// One that orders or limits its rows picks a row, which `max` would not: it stays.
fn scalar_subqueries_aggregated(mut statement: Statement) -> Statement {
    let _ = visit_expressions_mut(&mut statement, |expr| {
        if let SqlExpr::Subquery(query) = expr
            && query.order_by.is_none()
            && query.limit_clause.is_none()
            && let SetExpr::Select(select) = query.body.as_mut()
            && matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty())
            && let [SelectItem::UnnamedExpr(item) | SelectItem::ExprWithAlias { expr: item, .. }] =
                select.projection.as_mut_slice()
            && !is_aggregate(item)
            && let Ok(aggregated) =
                sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
                    .try_with_sql(&format!("max({item})"))
                    .and_then(|mut p| p.parse_expr())
        {
            *item = aggregated;
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

fn is_aggregate(expr: &SqlExpr) -> bool {
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
fn visibility_by_search_path(mut statement: Statement) -> Statement {
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
            if let Ok(visible) =
                sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
                    .try_with_sql(&sql)
                    .and_then(|mut p| p.parse_expr())
            {
                *expr = visible;
            }
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

/// `'pg_catalog.f'::regproc` as `'f'`: `pg_type`'s `typinput` and friends hold function
/// names here, so a comparison with one (DBeaver's array-type probe) compares names.
fn regproc_literals_as_names(sql: &str) -> std::borrow::Cow<'_, str> {
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

/// A query that expands index or constraint keys (`information_schema._pg_expandarray(
/// i.indkey)` in pgjdbc's `getPrimaryKeys` and `getIndexInfo`, `unnest(conkey)` in
/// SQLAlchemy's constraint reflection) as what it returns: no rows, since Runnel has no
/// indexes or constraints (`pg_index` and `pg_constraint` are empty). DataFusion cannot
/// plan those set-returning calls, which would never be made.
fn index_queries_found_empty(statement: Statement) -> Statement {
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

/// `pg_catalog` as datafusion-pg-catalog builds it, except that `pg_class` calls Runnel's
/// materialized views what they are (`relkind = 'm'`: psql's `\dm`, pgjdbc's
/// "MATERIALIZED VIEW"; DataFusion only knows tables and views) and has `relacl`, each
/// relation's privileges (psql's `\dp`).
#[derive(Debug)]
pub struct PgCatalogSchema {
    inner: Arc<dyn SchemaProvider>,
    tables: Arc<Tables>,
}

impl PgCatalogSchema {
    pub fn new(inner: Arc<dyn SchemaProvider>, tables: Arc<Tables>) -> PgCatalogSchema {
        PgCatalogSchema { inner, tables }
    }
}

#[async_trait]
impl SchemaProvider for PgCatalogSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let table = self.inner.table(name).await?;
        match table {
            Some(inner) if name.eq_ignore_ascii_case("pg_class") => {
                let mut fields = inner.schema().fields().to_vec();
                fields.push(Arc::new(Field::new("relacl", text_array(), true)));
                // Storage parameters, which psql's `\d+` shows: none.
                fields.push(Arc::new(Field::new("reloptions", text_array(), true)));
                let namespaces = self.inner.table("pg_namespace").await?.ok_or_else(|| {
                    DataFusionError::Internal("pg_catalog has no pg_namespace".into())
                })?;
                Ok(Some(Arc::new(PgClass {
                    inner,
                    namespaces,
                    schema: Arc::new(Schema::new(fields)),
                    catalog: self.tables.catalog.snapshot(),
                })))
            }
            Some(inner) if name.eq_ignore_ascii_case("pg_attribute") => {
                let (Some(classes), Some(namespaces)) = (
                    self.inner.table("pg_class").await?,
                    self.inner.table("pg_namespace").await?,
                ) else {
                    return Err(DataFusionError::Internal(
                        "pg_catalog has no pg_class or pg_namespace".into(),
                    ));
                };
                Ok(Some(Arc::new(PgAttribute {
                    inner,
                    classes,
                    namespaces,
                    catalog: self.tables.catalog.snapshot(),
                })))
            }
            Some(_) if name.eq_ignore_ascii_case("pg_settings") => Ok(Some(Arc::new(PgSettings))),
            // Schemas' privileges as `aclitem[]` (psql's `\dn+` joins them into text): the
            // defaults, NULL.
            Some(inner) if name.eq_ignore_ascii_case("pg_namespace") => {
                Ok(Some(Arc::new(NullArrays::new(inner, &["nspacl"]))))
            }
            other => Ok(other),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// A catalog table whose `columns` are NULL `text[]`, whatever type the inner table gives
/// them.
#[derive(Debug)]
struct NullArrays {
    inner: Arc<dyn TableProvider>,
    schema: SchemaRef,
    columns: Vec<usize>,
}

impl NullArrays {
    fn new(inner: Arc<dyn TableProvider>, names: &[&str]) -> NullArrays {
        let mut columns = vec![];
        let fields: Vec<Field> = inner
            .schema()
            .fields()
            .iter()
            .enumerate()
            .map(|(i, field)| {
                if names.contains(&field.name().as_str()) {
                    columns.push(i);
                    Field::new(field.name(), text_array(), true)
                } else {
                    field.as_ref().clone()
                }
            })
            .collect();
        NullArrays {
            inner,
            schema: Arc::new(Schema::new(fields)),
            columns,
        }
    }
}

#[async_trait]
impl TableProvider for NullArrays {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        scan_fixed(
            self.inner.as_ref(),
            &self.schema,
            state,
            projection,
            filters,
            limit,
            |batch| {
                let mut columns = batch.columns().to_vec();
                for &i in &self.columns {
                    columns[i] = arrow::array::new_null_array(&text_array(), batch.num_rows());
                }
                Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
            },
        )
        .await
    }
}

/// A session's settings as `pg_settings` shows them; the session keeps them in its
/// configuration's extensions, up to date after each `SET`.
#[derive(Debug, Default)]
pub struct SessionSettings {
    pub rows: Vec<SettingRow>,
}

#[derive(Debug)]
pub struct SettingRow {
    pub name: String,
    pub setting: String,
    /// The value at start, if Runnel has one of its own.
    pub boot_val: Option<String>,
    /// `default`, or `session` once `SET`.
    pub source: &'static str,
    /// `internal` for what cannot be set, else `user`.
    pub context: &'static str,
}

/// `pg_settings`, PostgreSQL's columns over the settings of the session that reads it.
#[derive(Debug)]
struct PgSettings;

impl PgSettings {
    const TEXT_COLUMNS: [&str; 8] = [
        "name",
        "setting",
        "unit",
        "category",
        "short_desc",
        "extra_desc",
        "context",
        "vartype",
    ];
}

#[async_trait]
impl TableProvider for PgSettings {
    fn schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = Self::TEXT_COLUMNS
            .iter()
            .map(|name| Field::new(*name, DataType::Utf8, true))
            .collect();
        for name in ["source", "min_val", "max_val"] {
            fields.push(Field::new(name, DataType::Utf8, true));
        }
        fields.push(Field::new("enumvals", text_array(), true));
        for name in ["boot_val", "reset_val", "sourcefile"] {
            fields.push(Field::new(name, DataType::Utf8, true));
        }
        fields.push(Field::new("sourceline", DataType::Int32, true));
        fields.push(Field::new("pending_restart", DataType::Boolean, true));
        Arc::new(Schema::new(fields))
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let settings = state
            .config()
            .get_extension::<SessionSettings>()
            .unwrap_or_default();
        let rows = &settings.rows;
        let text = |f: &dyn Fn(&SettingRow) -> Option<&str>| -> arrow::array::ArrayRef {
            Arc::new(rows.iter().map(f).collect::<StringArray>())
        };
        let schema = self.schema();
        let columns = vec![
            text(&|r| Some(r.name.as_str())),
            text(&|r| Some(r.setting.as_str())),
            text(&|_| None),
            text(&|_| None),
            text(&|_| None),
            text(&|_| None),
            text(&|r| Some(r.context)),
            text(&|_| Some("string")),
            text(&|r| Some(r.source)),
            text(&|_| None),
            text(&|_| None),
            arrow::array::new_null_array(&text_array(), rows.len()),
            text(&|r| r.boot_val.as_deref()),
            text(&|r| r.boot_val.as_deref()),
            text(&|_| None),
            Arc::new(Int32Array::new_null(rows.len())),
            Arc::new(arrow::array::BooleanArray::from(vec![false; rows.len()])),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        MemTable::try_new(schema, vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// The rows of catalog table `inner`, each batch made one of `schema` by `fix`, scanned as
/// a table in memory.
async fn scan_fixed(
    inner: &dyn TableProvider,
    schema: &SchemaRef,
    state: &dyn Session,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
    limit: Option<usize>,
    fix: impl Fn(RecordBatch) -> DfResult<RecordBatch>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let all = inner.scan(state, None, &[], None).await?;
    let batches = collect(all, state.task_ctx())
        .await?
        .into_iter()
        .map(fix)
        .collect::<DfResult<Vec<_>>>()?;
    MemTable::try_new(schema.clone(), vec![batches])?
        .scan(state, projection, filters, limit)
        .await
}

/// `text[]`, as arrow has it.
fn text_array() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

#[derive(Debug)]
struct PgClass {
    inner: Arc<dyn TableProvider>,
    /// `pg_namespace`, to tell Runnel's relations (in `public`) from the system's.
    namespaces: Arc<dyn TableProvider>,
    /// The inner table's columns and `relacl`.
    schema: SchemaRef,
    catalog: Arc<CatalogData>,
}

#[async_trait]
impl TableProvider for PgClass {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let inner = self.inner.schema();
        let name = inner.index_of("relname")?;
        let kind = inner.index_of("relkind")?;
        let namespace = inner.index_of("relnamespace")?;
        let public = public_namespace_oids(self.namespaces.as_ref(), state).await?;
        scan_fixed(
            self.inner.as_ref(),
            &self.schema,
            state,
            projection,
            filters,
            limit,
            |batch| {
                let names = batch.column(name).as_string::<i32>();
                let kinds = batch.column(kind).as_string::<i32>();
                let namespaces = cast(batch.column(namespace), &DataType::Int64)?;
                let namespaces = namespaces.as_primitive::<Int64Type>();
                let ours = |row: usize| {
                    (namespaces.is_valid(row) && public.contains(&namespaces.value(row)))
                        .then(|| self.catalog.relation(names.value(row)))
                        .flatten()
                };
                let relkind: StringArray = (0..batch.num_rows())
                    .map(|row| {
                        let k = kinds.is_valid(row).then(|| kinds.value(row));
                        match (k, ours(row)) {
                            (Some("v"), Some(Relation::View(_))) => Some("m"),
                            (other, _) => other,
                        }
                    })
                    .collect();
                // NULL, as PostgreSQL has it, until something is granted.
                let mut relacl = ListBuilder::new(StringBuilder::new());
                for row in 0..batch.num_rows() {
                    match ours(row).map(|r| r.access().clone()) {
                        Some(access) if !access.grants.is_empty() => {
                            for item in access.acl(ObjectClass::Relation) {
                                relacl.values().append_value(item);
                            }
                            relacl.append(true);
                        }
                        _ => relacl.append_null(),
                    }
                }
                let mut columns = batch.columns().to_vec();
                columns[kind] = Arc::new(relkind);
                columns.push(Arc::new(relacl.finish()));
                columns.push(arrow::array::new_null_array(
                    &text_array(),
                    batch.num_rows(),
                ));
                Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
            },
        )
        .await
    }
}

/// `pg_attribute` with the types Runnel keeps as marked text (`json`, `jsonb`, `uuid`)
/// under their own OIDs, where pg_catalog's table sees only their storage (`text`).
#[derive(Debug)]
struct PgAttribute {
    inner: Arc<dyn TableProvider>,
    classes: Arc<dyn TableProvider>,
    namespaces: Arc<dyn TableProvider>,
    catalog: Arc<CatalogData>,
}

/// What `pg_attribute` says of Runnel's relations that datafusion-pg-catalog cannot know.
#[derive(Default)]
struct OurColumns {
    /// The type OID of each (relation OID, column name) whose column is of a type kept as
    /// marked text.
    text_typed: HashMap<(i64, String), i32>,
    /// Relations with hidden columns (`_partition`, `_offset`, …): numbered below zero, as
    /// PostgreSQL numbers system columns, so tools that list a table's columns
    /// (`attnum > 0`) leave them out as they leave out `ctid`.
    with_hidden: BTreeSet<i64>,
}

impl OurColumns {
    fn is_empty(&self) -> bool {
        self.text_typed.is_empty() && self.with_hidden.is_empty()
    }
}

impl PgAttribute {
    async fn our_columns(&self, state: &dyn Session) -> DfResult<OurColumns> {
        let public = public_namespace_oids(self.namespaces.as_ref(), state).await?;
        let all = self.classes.scan(state, None, &[], None).await?;
        let schema = all.schema();
        let (oid, name, namespace) = (
            schema.index_of("oid")?,
            schema.index_of("relname")?,
            schema.index_of("relnamespace")?,
        );
        let mut ours = OurColumns::default();
        for batch in collect(all, state.task_ctx()).await? {
            let oids = cast(batch.column(oid), &DataType::Int64)?;
            let oids = oids.as_primitive::<Int64Type>();
            let names = cast(batch.column(name), &DataType::Utf8)?;
            let names = names.as_string::<i32>();
            let namespaces = cast(batch.column(namespace), &DataType::Int64)?;
            let namespaces = namespaces.as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                if !(namespaces.is_valid(row) && public.contains(&namespaces.value(row))) {
                    continue;
                }
                let fields: Vec<(String, Option<TextType>)> =
                    match self.catalog.relation(names.value(row)) {
                        Some(Relation::Stream(stream, _)) => {
                            ours.with_hidden.insert(oids.value(row));
                            stream
                                .columns
                                .iter()
                                .map(|c| (c.name.clone(), c.sql_type.text_type()))
                                .collect()
                        }
                        Some(Relation::View(view)) => view
                            .columns
                            .iter()
                            .map(|f| (f.name().clone(), TextType::of(f)))
                            .collect(),
                        _ => continue,
                    };
                for (column, t) in fields {
                    if let Some(t) = t {
                        ours.text_typed.insert((oids.value(row), column), t.oid());
                    }
                }
            }
        }
        Ok(ours)
    }
}

#[async_trait]
impl TableProvider for PgAttribute {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = self.inner.schema();
        let relation = schema.index_of("attrelid")?;
        let name = schema.index_of("attname")?;
        let type_oid = schema.index_of("atttypid")?;
        let number = schema.index_of("attnum")?;
        let ours = self.our_columns(state).await?;
        scan_fixed(
            self.inner.as_ref(),
            &schema,
            state,
            projection,
            filters,
            limit,
            |batch| {
                if ours.is_empty() {
                    return Ok(batch);
                }
                let relations = cast(batch.column(relation), &DataType::Int64)?;
                let relations = relations.as_primitive::<Int64Type>();
                let names = batch.column(name).as_string::<i32>();
                let types = batch.column(type_oid).as_primitive::<Int32Type>();
                let key = |row: usize| {
                    (relations.is_valid(row) && names.is_valid(row))
                        .then(|| (relations.value(row), names.value(row)))
                };
                let patched: Int32Array = (0..batch.num_rows())
                    .map(|row| {
                        let text_typed = key(row).and_then(|(relation, name)| {
                            ours.text_typed.get(&(relation, name.to_string()))
                        });
                        match text_typed {
                            Some(oid) => Some(*oid),
                            None => types.is_valid(row).then(|| types.value(row)),
                        }
                    })
                    .collect();
                let numbers = cast(batch.column(number), &DataType::Int32)?;
                let numbers = numbers.as_primitive::<Int32Type>();
                let renumbered: Int32Array = (0..batch.num_rows())
                    .map(|row| {
                        let hidden = key(row).and_then(|(relation, name)| {
                            ours.with_hidden
                                .contains(&relation)
                                .then(|| HIDDEN_COLUMNS.iter().position(|h| *h == name))
                                .flatten()
                        });
                        match hidden {
                            Some(i) => Some(-1 - i as i32),
                            None => numbers.is_valid(row).then(|| numbers.value(row)),
                        }
                    })
                    .collect();
                let mut columns = batch.columns().to_vec();
                columns[type_oid] = Arc::new(patched);
                columns[number] = cast(&renumbered, batch.schema().field(number).data_type())?;
                Ok(RecordBatch::try_new(batch.schema(), columns)?)
            },
        )
        .await
    }
}

/// The OIDs `pg_namespace` gives schemas named `public`.
async fn public_namespace_oids(
    namespaces: &dyn TableProvider,
    state: &dyn Session,
) -> DfResult<BTreeSet<i64>> {
    let all = namespaces.scan(state, None, &[], None).await?;
    let schema = all.schema();
    let (oid, name) = (schema.index_of("oid")?, schema.index_of("nspname")?);
    let mut oids = BTreeSet::new();
    for batch in collect(all, state.task_ctx()).await? {
        let names = cast(batch.column(name), &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let values = cast(batch.column(oid), &DataType::Int64)?;
        let values = values.as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            if names.is_valid(row) && names.value(row) == PUBLIC_SCHEMA && values.is_valid(row) {
                oids.insert(values.value(row));
            }
        }
    }
    Ok(oids)
}

/// `current_setting(name [, missing_ok])` over a session's settings as they are now (the
/// session registers it again whenever one changes): the value of `name` (case-insensitive),
/// or NULL if there is no such setting and `missing_ok`, else 42704 as in PostgreSQL.
pub fn current_setting(settings: std::collections::BTreeMap<String, String>) -> ScalarUDF {
    ScalarUDF::from(CurrentSetting {
        settings,
        signature: Signature::one_of(
            vec![TypeSignature::String(1), TypeSignature::Any(2)],
            Volatility::Stable,
        ),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentSetting {
    settings: std::collections::BTreeMap<String, String>,
    signature: Signature,
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let args = ColumnarValue::values_to_arrays(&args.args)?;
        let names = cast(&args[0], &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let missing_ok = match args.get(1) {
            Some(flag) => Some(cast(flag, &DataType::Boolean)?),
            None => None,
        };
        let mut out = StringBuilder::new();
        for row in 0..names.len() {
            if names.is_null(row) {
                out.append_null();
                continue;
            }
            let name = names.value(row).to_ascii_lowercase();
            match self.settings.get(&name) {
                Some(value) => out.append_value(value),
                None if missing_ok
                    .as_ref()
                    .is_some_and(|m| m.as_boolean().value(row)) =>
                {
                    out.append_null()
                }
                None => {
                    return Err(Error::plan(
                        "42704",
                        format!("unrecognized configuration parameter \"{name}\""),
                    )
                    .into());
                }
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// A function of no arguments that returns `value` (a session's `session_user()`).
pub fn constant_text(name: &'static str, value: &str) -> ScalarUDF {
    Constant::udf(name, &[0], ScalarValue::Utf8(Some(value.to_string())))
}

/// A catalog function whose answer is the same for every argument in Runnel.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Constant {
    name: &'static str,
    value: ScalarValue,
    signature: Signature,
}

impl Constant {
    /// The function `name` of any arguments, as many as one of `arities`.
    fn udf(name: &'static str, arities: &[usize], value: ScalarValue) -> ScalarUDF {
        let signature = match arities {
            [0] => Signature::nullary(Volatility::Stable),
            [n] => Signature::any(*n, Volatility::Stable),
            several => Signature::one_of(
                several.iter().map(|n| TypeSignature::Any(*n)).collect(),
                Volatility::Stable,
            ),
        };
        ScalarUDF::from(Constant {
            name,
            value,
            signature,
        })
    }
}

/// `pg_size_pretty(bytes)`: a size as PostgreSQL writes it — bytes below 10 kB, then kB,
/// MB, GB, TB, PB, each rounded half up, moving to the next unit at 20 times 1024 / 2.
fn pg_size_pretty() -> ScalarUDF {
    create_udf(
        "pg_size_pretty",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let sizes = ColumnarValue::values_to_arrays(args)?;
            let sizes = sizes[0].as_primitive::<Int64Type>();
            let out: StringArray = sizes.iter().map(|s| s.map(size_pretty)).collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    )
}

fn size_pretty(bytes: i64) -> String {
    const LIMIT: i64 = 10 * 1024;
    if bytes.abs() < LIMIT {
        return format!("{bytes} bytes");
    }
    // One bit more than the unit keeps, for rounding half away from zero.
    let half_rounded = |x: i64| (x + x.signum()) / 2;
    let mut size = bytes / 512;
    for unit in ["kB", "MB", "GB", "TB"] {
        if size.abs() < LIMIT * 2 - 1 {
            return format!("{} {unit}", half_rounded(size));
        }
        size /= 1024;
    }
    format!("{} PB", half_rounded(size))
}

impl ScalarUDFImpl for Constant {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(self.value.data_type())
    }

    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::size_pretty;

    #[test]
    fn sizes_read_as_postgresql_writes_them() {
        // What PostgreSQL 15's pg_size_pretty answers for each.
        for (bytes, pretty) in [
            (0, "0 bytes"),
            (10239, "10239 bytes"),
            (10240, "10 kB"),
            (-10240, "-10 kB"),
            (10485248, "10 MB"),
            (10485759, "10 MB"),
            (11534336, "11 MB"),
            (i64::MAX, "8192 PB"),
            (-123456789, "-118 MB"),
        ] {
            assert_eq!(size_pretty(bytes), pretty, "{bytes}");
        }
    }
}
