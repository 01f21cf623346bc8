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
    Array, AsArray, Int32Array, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
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
pub struct PgTypes(
    HashMap<String, i32>,
    Arc<HashMap<i32, (String, i32)>>,
    /// The OID of each built-in function by name (the least, for overloaded names), for
    /// `regproc` columns, which hold names.
    HashMap<String, i32>,
);

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
        let mut functions = HashMap::new();
        let batches = ctx
            .sql("SELECT proname, CAST(min(oid) AS INT) FROM pg_catalog.pg_proc GROUP BY proname")
            .await?
            .collect()
            .await?;
        for batch in &batches {
            let names = cast(batch.column(0), &DataType::Utf8)
                .map_err(|e| Error::Internal(format!("reading pg_proc: {e}")))?;
            let names = names.as_string::<i32>();
            let values = batch.column(1).as_primitive::<Int32Type>();
            for row in 0..batch.num_rows() {
                if names.is_valid(row) && values.is_valid(row) {
                    functions.insert(names.value(row).to_string(), values.value(row));
                }
            }
        }
        Ok(PgTypes(oids, Arc::new(names_of), functions))
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
        .register_schema(
            PG_CATALOG,
            Arc::new(PgCatalogSchema::new(inner, tables.clone())),
        )
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
        // Runnel has no triggers and no indexes.
        ("pg_get_triggerdef", &[1, 2]),
        ("pg_get_indexdef", &[1, 3]),
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
    ctx.register_udf(acldefault(tables.clone()));
    ctx.register_udf(user_by_id(tables.clone()));
    ctx.register_udf(to_regtype(types));
    ctx.register_udf(regproc_oid(types));
    ctx.register_udf(view_definition(tables.clone()));
    ctx.register_udf(empty_array_of());
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

/// `regproc_oid(name)`: the OID of the built-in function a `regproc` column names (`-`,
/// none, is 0), for `oprcode::oid` and the like: `pg_catalog` keeps such columns as names.
fn regproc_oid(types: &PgTypes) -> ScalarUDF {
    let oids = types.2.clone();
    let lookup = move |args: &[ColumnarValue]| {
        let names = cast(&args[0].to_array(1)?, &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let found: Int32Array = names
            .iter()
            .map(|n| {
                n.and_then(|n| match n.trim_start_matches("pg_catalog.") {
                    "-" => Some(0),
                    name => oids.get(name).copied(),
                })
            })
            .collect();
        shaped_like(&args[0], Arc::new(found))
    };
    create_udf(
        REGPROC_OID,
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(lookup),
    )
}

const REGPROC_OID: &str = "regproc_oid";

/// PostgreSQL's catalog columns of type `regproc`, which Runnel's `pg_catalog` holds as the
/// functions' names.
const REGPROC_COLUMNS: [&str; 36] = [
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
fn regproc_columns_cast(mut statement: Statement) -> Statement {
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
                    let argument = std::mem::replace(
                        inner.as_mut(),
                        SqlExpr::Wildcard(
                            sqlparser::ast::helpers::attached_token::AttachedToken::empty(),
                        ),
                    );
                    *expr = SqlExpr::Function(sqlparser::ast::Function {
                        name: sqlparser::ast::ObjectName::from(vec![sqlparser::ast::Ident::new(
                            REGPROC_OID,
                        )]),
                        uses_odbc_syntax: false,
                        parameters: FunctionArguments::None,
                        args: FunctionArguments::List(sqlparser::ast::FunctionArgumentList {
                            duplicate_treatment: None,
                            args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(argument))],
                            clauses: vec![],
                        }),
                        filter: None,
                        null_treatment: None,
                        over: None,
                        within_group: vec![],
                    });
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
fn arrays_over_empty_arrays(mut statement: Statement) -> Statement {
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
        {
            *expr = SqlExpr::Function(sqlparser::ast::Function {
                name: sqlparser::ast::ObjectName::from(vec![sqlparser::ast::Ident::new(
                    EMPTY_ARRAY_OF,
                )]),
                uses_odbc_syntax: false,
                parameters: FunctionArguments::None,
                args: FunctionArguments::List(sqlparser::ast::FunctionArgumentList {
                    duplicate_treatment: None,
                    args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(column))],
                    clauses: vec![],
                }),
                filter: None,
                null_treatment: None,
                over: None,
                within_group: vec![],
            });
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

const EMPTY_ARRAY_OF: &str = "empty_array_of";

/// `pg_get_viewdef(oid [, pretty])` as `(SELECT view_definition(relname) FROM pg_class …)`:
/// the definition of the materialized view of that OID in `public` (NULL for other
/// relations), which Runnel keeps by name.
fn view_definitions_by_name(mut statement: Statement) -> Statement {
    let _ = visit_expressions_mut(&mut statement, |expr| {
        if let SqlExpr::Function(f) = expr
            && builtin_function_name(&f.name).as_deref() == Some("pg_get_viewdef")
            && let FunctionArguments::List(list) = &f.args
            && let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(oid))) = list.args.first()
            && let Ok(lookup) =
                sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
                    .try_with_sql(&format!(
                        "(SELECT max({VIEW_DEFINITION}(c.relname)) FROM pg_catalog.pg_class c \
                         JOIN pg_catalog.pg_namespace n ON c.relnamespace = n.oid \
                         WHERE n.nspname = '{PUBLIC_SCHEMA}' AND c.oid = {oid})"
                    ))
                    .and_then(|mut p| p.parse_expr())
        {
            *expr = lookup;
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

/// The lowercase name of a function called bare or in `pg_catalog`.
fn builtin_function_name(name: &sqlparser::ast::ObjectName) -> Option<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.as_ident().map(|i| i.value.to_ascii_lowercase()))
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [f] => Some(f.clone()),
        [schema, f] if schema == PG_CATALOG => Some(f.clone()),
        _ => None,
    }
}

const VIEW_DEFINITION: &str = "view_definition";

/// `view_definition(name)`: the query of materialized view `name` as `pg_get_viewdef`
/// gives it (a leading space, `EMIT ON WINDOW CLOSE` if so, a closing `;`), NULL for a
/// name that is not a view's.
fn view_definition(tables: Arc<Tables>) -> ScalarUDF {
    let udf = move |args: &[ColumnarValue]| -> DfResult<ColumnarValue> {
        let names = cast(&args[0].to_array(1)?, &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let catalog = tables.catalog.snapshot();
        let definitions: StringArray = names
            .iter()
            .map(|name| {
                let Some(Relation::View(view)) = catalog.relation(name?) else {
                    return None;
                };
                let query = catalog.queries.get(&view.query)?;
                let emit = match query.emit {
                    crate::catalog::Emit::Changes => "",
                    crate::catalog::Emit::OnWindowClose => " EMIT ON WINDOW CLOSE",
                };
                Some(format!(
                    " {}{emit};",
                    query.sql.trim().trim_end_matches(';')
                ))
            })
            .collect();
        shaped_like(&args[0], Arc::new(definitions))
    };
    create_udf(
        VIEW_DEFINITION,
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(udf),
    )
}

/// `CASE … ELSE '{}' END` with `'{}'::text[]`: PostgreSQL types the literal by the other
/// results (pg_dump's `acldefault(…)`, an `aclitem[]`); DataFusion would take it for text.
fn empty_array_literals_in_case(mut statement: Statement) -> Statement {
    let _ = visit_expressions_mut(&mut statement, |expr| {
        if let SqlExpr::Case {
            conditions,
            else_result,
            ..
        } = expr
        {
            let results = conditions
                .iter_mut()
                .map(|c| &mut c.result)
                .chain(else_result.iter_mut().map(|e| e.as_mut()));
            for result in results {
                if let SqlExpr::Value(v) = result
                    && v.value == sqlparser::ast::Value::SingleQuotedString("{}".into())
                {
                    *result = SqlExpr::Cast {
                        kind: sqlparser::ast::CastKind::DoubleColon,
                        expr: Box::new(result.clone()),
                        data_type: SqlDataType::Array(
                            sqlparser::ast::ArrayElemTypeDef::SquareBracket(
                                Box::new(SqlDataType::Text),
                                None,
                            ),
                        ),
                        array: false,
                        format: None,
                    };
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

/// `empty_array_of(array)`: `{}` for a NULL or empty array (what `ARRAY(SELECT … FROM
/// unnest(array))` is then), 0A000 for any other (see [`arrays_over_empty_arrays`]).
fn empty_array_of() -> ScalarUDF {
    let udf = |args: &[ColumnarValue]| -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let rows = arrays[0].len();
        let nonempty = match arrays[0].data_type() {
            DataType::List(_) => {
                let lists = arrays[0].as_list::<i32>();
                (0..rows).any(|row| lists.is_valid(row) && !lists.value(row).is_empty())
            }
            DataType::Null => false,
            other => {
                return Err(DataFusionError::Plan(format!(
                    "unnest takes an array, not {other}"
                )));
            }
        };
        if nonempty {
            return Err(DataFusionError::External(Box::new(Error::Unsupported(
                "ARRAY(SELECT … FROM unnest(column)) over a column of the outer query, when the \
                 array has elements"
                    .into(),
            ))));
        }
        let mut out = ListBuilder::new(StringBuilder::new());
        for _ in 0..rows {
            out.append(true);
        }
        let array: arrow::array::ArrayRef = Arc::new(out.finish());
        shaped_like(&args[0], array)
    };
    ScalarUDF::from(
        datafusion::logical_expr::SimpleScalarUDF::new_with_signature(
            EMPTY_ARRAY_OF,
            Signature::any(1, Volatility::Stable),
            text_array(),
            Arc::new(udf),
        ),
    )
}

/// The column `expr` is, if one of [`REGPROC_COLUMNS`].
fn regproc_column(expr: &SqlExpr) -> Option<&sqlparser::ast::Ident> {
    let column = match expr {
        SqlExpr::Identifier(ident) => ident,
        SqlExpr::CompoundIdentifier(parts) => parts.last()?,
        _ => return None,
    };
    REGPROC_COLUMNS
        .contains(&column.value.to_ascii_lowercase().as_str())
        .then_some(column)
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

/// The OID of the schema `pg_catalog`, in PostgreSQL and in datafusion-pg-catalog.
const PG_CATALOG_NAMESPACE_OID: i64 = 11;

/// The system column of catalog tables Runnel has (see [`TableOid`]).
const TABLEOID: &str = "tableoid";

/// PostgreSQL's OIDs of its catalog relations (as PostgreSQL 15 has them), which clients
/// compare `tableoid`, `classid` and `'pg_class'::regclass` with: pg_dump finds a schema by
/// the pair (2615, its OID). `pg_class` gives `pg_catalog`'s relations these.
const CATALOG_RELATION_OIDS: [(&str, i32); 70] = [
    ("pg_default_acl", 826),
    ("pg_tablespace", 1213),
    ("pg_shdepend", 1214),
    ("pg_type", 1247),
    ("pg_attribute", 1249),
    ("pg_proc", 1255),
    ("pg_class", 1259),
    ("pg_authid", 1260),
    ("pg_auth_members", 1261),
    ("pg_database", 1262),
    ("pg_foreign_server", 1417),
    ("pg_user_mapping", 1418),
    ("pg_sequence", 2224),
    ("pg_foreign_data_wrapper", 2328),
    ("pg_shdescription", 2396),
    ("pg_aggregate", 2600),
    ("pg_am", 2601),
    ("pg_amop", 2602),
    ("pg_amproc", 2603),
    ("pg_attrdef", 2604),
    ("pg_cast", 2605),
    ("pg_constraint", 2606),
    ("pg_conversion", 2607),
    ("pg_depend", 2608),
    ("pg_description", 2609),
    ("pg_index", 2610),
    ("pg_inherits", 2611),
    ("pg_language", 2612),
    ("pg_largeobject", 2613),
    ("pg_namespace", 2615),
    ("pg_opclass", 2616),
    ("pg_operator", 2617),
    ("pg_rewrite", 2618),
    ("pg_statistic", 2619),
    ("pg_trigger", 2620),
    ("pg_opfamily", 2753),
    ("pg_db_role_setting", 2964),
    ("pg_largeobject_metadata", 2995),
    ("pg_extension", 3079),
    ("pg_foreign_table", 3118),
    ("pg_policy", 3256),
    ("pg_partitioned_table", 3350),
    ("pg_statistic_ext", 3381),
    ("pg_init_privs", 3394),
    ("pg_statistic_ext_data", 3429),
    ("pg_collation", 3456),
    ("pg_event_trigger", 3466),
    ("pg_enum", 3501),
    ("pg_range", 3541),
    ("pg_transform", 3576),
    ("pg_shseclabel", 3592),
    ("pg_seclabel", 3596),
    ("pg_ts_dict", 3600),
    ("pg_ts_parser", 3601),
    ("pg_ts_config", 3602),
    ("pg_ts_template", 3764),
    ("pg_replication_origin", 6000),
    ("pg_subscription", 6100),
    ("pg_subscription_rel", 6102),
    ("pg_publication", 6104),
    ("pg_publication_rel", 6106),
    ("pg_publication_namespace", 6237),
    ("pg_roles", 12000),
    ("pg_views", 12028),
    ("pg_tables", 12033),
    ("pg_matviews", 12038),
    ("pg_settings", 12104),
    ("pg_stat_user_tables", 12161),
    ("pg_stat_gssapi", 12253),
    ("pg_replication_slots", 12257),
];

/// Catalogs pg_dump reads that datafusion-pg-catalog does not have, each with its columns;
/// Runnel has nothing in them.
const EMPTY_CATALOGS: [(&str, &[&str]); 1] = [(
    "pg_transform",
    &["oid", "trftype", "trflang", "trffromsql", "trftosql"],
)];

/// Whether `name` (lowercase) is a relation of `pg_catalog`.
fn is_catalog_table(name: &str) -> bool {
    datafusion_pg_catalog::pg_catalog::PG_CATALOG_TABLES.contains(&name)
        || EMPTY_CATALOGS.iter().any(|(table, _)| *table == name)
}

/// An empty catalog of [`EMPTY_CATALOGS`], its columns all `oid`s.
fn empty_catalog(name: &str) -> Option<Arc<dyn TableProvider>> {
    let (_, columns) = EMPTY_CATALOGS
        .iter()
        .find(|(table, _)| table.eq_ignore_ascii_case(name))?;
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| Field::new(*c, DataType::Int32, false))
        .collect();
    let table = MemTable::try_new(Arc::new(Schema::new(fields)), vec![vec![]]).ok()?;
    Some(Arc::new(table))
}

/// The OID of relation `name` of `pg_catalog`.
fn catalog_relation_oid(name: &str) -> Option<i32> {
    CATALOG_RELATION_OIDS
        .iter()
        .find(|(relation, _)| relation.eq_ignore_ascii_case(name))
        .map(|(_, oid)| *oid)
}

/// `tableoid`'s number in `pg_attribute`, as PostgreSQL numbers it.
const TABLEOID_ATTNUM: i32 = -6;

/// The columns `*` leaves out of a `pg_catalog` relation.
const CATALOG_HIDDEN_COLUMNS: [&str; 1] = [TABLEOID];

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
            .map(empty_array_literals_in_case)
            .map(view_definitions_by_name)
            .collect(),
    )
}

/// `CASE WHEN … THEN (SELECT … FROM pg_attrdef | pg_sequence | pg_collation …) ELSE NULL
/// END` as NULL: Runnel's columns have no defaults, no identity sequences and no collation of
/// their own, and there are no publications whose column lists (`prattrs`) to spell out, so
/// these look-ups (SQLAlchemy's column reflection, pg_dump) find nothing; and DataFusion
/// cannot plan a correlated sub-query inside `CASE`.
fn absent_column_details(mut statement: Statement) -> Statement {
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

/// `typname[0]` as `substr(typname, 1, 1)`: a catalog's `name` (`typname`, `relname`, …) is
/// an array of characters in PostgreSQL, subscripted from 0 (pg_dump tells array types by
/// `typname[0] = '_'`); Runnel holds names as text.
fn characters_of_names(mut statement: Statement) -> Statement {
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
            && let Ok(character) =
                sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
                    .try_with_sql(&format!("substr({root}, ({index}) + 1, 1)"))
                    .and_then(|mut p| p.parse_expr())
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

/// Bare names of [`EMPTY_CATALOGS`] qualified with `pg_catalog`, as datafusion-pg-catalog
/// qualifies those of its own tables.
fn empty_catalogs_qualified(mut statement: Statement) -> Statement {
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
/// schema only.
fn regclass_literals_qualified(sql: &str) -> std::borrow::Cow<'_, str> {
    if !sql.to_ascii_lowercase().contains("regclass") {
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

/// The columns `*` leaves out of `name` if it names a table of `pg_catalog` (bare,
/// `pg_catalog.…` or `runnel.pg_catalog.…`).
pub fn catalog_hidden_columns(
    name: &sqlparser::ast::ObjectName,
) -> Option<&'static [&'static str]> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.as_ident().map(crate::catalog::normalize))
        .collect::<Option<_>>()?;
    let table = match parts.as_slice() {
        [table] => table,
        [schema, table] if schema == PG_CATALOG => table,
        [catalog, schema, table] if catalog == CATALOG_NAME && schema == PG_CATALOG => table,
        _ => return None,
    };
    is_catalog_table(table).then_some(&CATALOG_HIDDEN_COLUMNS[..])
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
        let mut names = self.inner.table_names();
        names.extend(EMPTY_CATALOGS.iter().map(|(name, _)| name.to_string()));
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let table = self.table_without_oid(name).await?;
        Ok(match (table, catalog_relation_oid(name)) {
            (Some(table), Some(oid)) => Some(Arc::new(TableOid::new(table, oid))),
            (table, _) => table,
        })
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name) || is_catalog_table(&name.to_ascii_lowercase())
    }
}

impl PgCatalogSchema {
    async fn table_without_oid(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let table = self.inner.table(name).await?;
        match table {
            Some(inner) if name.eq_ignore_ascii_case("pg_class") => {
                let mut fields = inner.schema().fields().to_vec();
                fields.push(Arc::new(Field::new("relacl", text_array(), true)));
                // Storage parameters, which psql's `\d+` shows and pg_dump writes back.
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
                    schema: with_null_arrays(&inner.schema(), &PgAttribute::ARRAYS),
                    inner,
                    classes,
                    namespaces,
                    catalog: self.tables.catalog.snapshot(),
                })))
            }
            Some(_) if name.eq_ignore_ascii_case("pg_settings") => Ok(Some(Arc::new(PgSettings))),
            Some(inner) if ObjectRows::of(name).is_some() => {
                let (Some(classes), Some(namespaces)) = (
                    self.inner.table("pg_class").await?,
                    self.inner.table("pg_namespace").await?,
                ) else {
                    return Err(DataFusionError::Internal(
                        "pg_catalog has no pg_class or pg_namespace".into(),
                    ));
                };
                Ok(Some(Arc::new(ObjectRows {
                    inner,
                    kind: ObjectRows::of(name).unwrap_or(ObjectRowsKind::Depend),
                    classes,
                    namespaces,
                    catalog: self.tables.catalog.snapshot(),
                })))
            }
            Some(inner) if name.eq_ignore_ascii_case("pg_roles") => Ok(Some(Arc::new(PgRoles {
                inner,
                catalog: self.tables.catalog.snapshot(),
            }))),
            Some(inner) if name.eq_ignore_ascii_case("pg_namespace") => Ok(Some(Arc::new(
                PgNamespace::new(inner, self.tables.catalog.snapshot()),
            ))),
            // The roles a row-level policy applies to and a partition key's operator
            // classes, arrays of OIDs (pg_dump); Runnel has neither policies nor
            // partitioned tables.
            Some(inner) if name.eq_ignore_ascii_case("pg_policy") => Ok(Some(Arc::new(
                NullArrays::new(inner, &[("polroles", oid_array())]),
            ))),
            Some(inner) if name.eq_ignore_ascii_case("pg_partitioned_table") => Ok(Some(Arc::new(
                NullArrays::new(inner, &[("partclass", oid_array())]),
            ))),
            Some(inner) if name.eq_ignore_ascii_case("pg_init_privs") => {
                Ok(Some(Arc::new(PgInitPrivs { inner })))
            }
            Some(other) => Ok(Some(other)),
            None => Ok(empty_catalog(name)),
        }
    }
}

/// The OID of each role: PostgreSQL's bootstrap superuser's (10) for Runnel's, then the
/// users in the order they were made, from the first OID of user objects (16384) on.
/// Owners (`relowner`, `nspowner`) and `acldefault()` refer to roles by these.
fn role_oids(catalog: &CatalogData) -> HashMap<String, i32> {
    let mut users: Vec<_> = catalog
        .users
        .values()
        .filter(|u| u.name != SUPERUSER)
        .map(|u| (u.created_at_ms, u.name.clone()))
        .collect();
    users.sort();
    let mut oids: HashMap<String, i32> = users
        .into_iter()
        .zip(FIRST_USER_ROLE_OID..)
        .map(|((_, name), oid)| (name, oid))
        .collect();
    oids.insert(SUPERUSER.to_string(), BOOTSTRAP_SUPERUSER_OID);
    oids
}

const BOOTSTRAP_SUPERUSER_OID: i32 = 10;
const FIRST_USER_ROLE_OID: i32 = 16384;

/// `pg_roles` with each role's OID (datafusion-pg-catalog gives every role 0).
#[derive(Debug)]
struct PgRoles {
    inner: Arc<dyn TableProvider>,
    catalog: Arc<CatalogData>,
}

#[async_trait]
impl TableProvider for PgRoles {
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
        let (oid, name) = (schema.index_of("oid")?, schema.index_of("rolname")?);
        let oids = role_oids(&self.catalog);
        scan_fixed(
            self.inner.as_ref(),
            &schema,
            state,
            projection,
            filters,
            limit,
            |batch| {
                let names = cast(batch.column(name), &DataType::Utf8)?;
                let names = names.as_string::<i32>();
                let numbered: Int32Array = (0..batch.num_rows())
                    .map(|row| {
                        names
                            .is_valid(row)
                            .then(|| oids.get(names.value(row)))
                            .flatten()
                    })
                    .map(|oid| oid.copied())
                    .collect();
                let mut columns = batch.columns().to_vec();
                columns[oid] = cast(&numbered, schema.field(oid).data_type())?;
                Ok(RecordBatch::try_new(batch.schema(), columns)?)
            },
        )
        .await
    }
}

/// `pg_get_userbyid(oid)`: the name of the role with that OID ([`role_oids`]), as
/// PostgreSQL's `unknown (OID=n)` for none.
fn user_by_id(tables: Arc<Tables>) -> ScalarUDF {
    let udf = move |args: &[ColumnarValue]| -> DfResult<ColumnarValue> {
        let oids = cast(&args[0].to_array(1)?, &DataType::Int64)?;
        let oids = oids.as_primitive::<Int64Type>();
        let names: HashMap<i64, String> = role_oids(&tables.catalog.snapshot())
            .into_iter()
            .map(|(name, oid)| (i64::from(oid), name))
            .collect();
        let found: StringArray = oids
            .iter()
            .map(|oid| {
                oid.map(|oid| {
                    names
                        .get(&oid)
                        .cloned()
                        .unwrap_or_else(|| format!("unknown (OID={oid})"))
                })
            })
            .collect();
        shaped_like(&args[0], Arc::new(found))
    };
    create_udf(
        "pg_get_userbyid",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(udf),
    )
}

/// `acldefault(kind, owner)`: the privileges an object of `kind` (PostgreSQL's letters:
/// `r` relation, `n` schema, `f` function, …) owned by role `owner` has before any `GRANT`
/// or `REVOKE`, as `aclitem[]` text (pg_dump compares each object's ACL with it).
fn acldefault(tables: Arc<Tables>) -> ScalarUDF {
    let udf = move |args: &[ColumnarValue]| -> DfResult<ColumnarValue> {
        let rows = args
            .iter()
            .find_map(|a| match a {
                ColumnarValue::Array(a) => Some(a.len()),
                ColumnarValue::Scalar(_) => None,
            })
            .unwrap_or(1);
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let kinds = cast(&arrays[0], &DataType::Utf8)?;
        let kinds = kinds.as_string::<i32>();
        let owners = cast(&arrays[1], &DataType::Int64)?;
        let owners = owners.as_primitive::<Int64Type>();
        let catalog = tables.catalog.snapshot();
        let names: HashMap<i64, String> = role_oids(&catalog)
            .into_iter()
            .map(|(name, oid)| (i64::from(oid), name))
            .collect();
        let mut out = ListBuilder::new(StringBuilder::new());
        for row in 0..kinds.len() {
            if kinds.is_null(row) || owners.is_null(row) {
                out.append_null();
                continue;
            }
            let owner = names
                .get(&owners.value(row))
                .map_or_else(|| owners.value(row).to_string(), Clone::clone);
            let (world, own) = match kinds.value(row) {
                "r" => ("", "arwdDxt"),
                "s" => ("", "rwU"),
                "d" => ("Tc", "CTc"),
                "f" => ("X", "X"),
                "l" | "T" => ("U", "U"),
                "L" => ("", "rw"),
                "n" => ("", "UC"),
                "t" => ("", "C"),
                "F" | "S" => ("", "U"),
                "c" => ("", ""),
                other => {
                    return Err(DataFusionError::Execution(format!(
                        "unrecognized object type abbreviation: {other}"
                    )));
                }
            };
            if !world.is_empty() {
                out.values().append_value(format!("={world}/{owner}"));
            }
            if !own.is_empty() {
                out.values().append_value(format!("{owner}={own}/{owner}"));
            }
            out.append(true);
        }
        let array: arrow::array::ArrayRef = Arc::new(out.finish());
        Ok(
            if rows == 1 && args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?)
            } else {
                ColumnarValue::Array(array)
            },
        )
    };
    create_udf(
        "acldefault",
        vec![DataType::Utf8, DataType::Int64],
        text_array(),
        Volatility::Stable,
        Arc::new(udf),
    )
}

/// The system column every catalog table has in PostgreSQL: `tableoid`, the OID of the
/// table a row is in. pg_dump selects it from nearly every catalog it reads; `*` leaves it
/// out, as it leaves out `ctid` (`CATALOG_HIDDEN_COLUMNS`).
#[derive(Debug)]
struct TableOid {
    inner: Arc<dyn TableProvider>,
    oid: i32,
    schema: SchemaRef,
}

impl TableOid {
    fn new(inner: Arc<dyn TableProvider>, oid: i32) -> TableOid {
        let mut fields = inner.schema().fields().to_vec();
        fields.push(Arc::new(Field::new(TABLEOID, DataType::Int32, false)));
        TableOid {
            inner,
            oid,
            schema: Arc::new(Schema::new(fields)),
        }
    }
}

#[async_trait]
impl TableProvider for TableOid {
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
        let own = self.schema.fields().len() - 1;
        if let Some(projection) = projection
            && !projection.contains(&own)
        {
            return self
                .inner
                .scan(state, Some(projection), filters, limit)
                .await;
        }
        let oid = self.oid;
        scan_fixed(
            self.inner.as_ref(),
            &self.schema,
            state,
            projection,
            filters,
            limit,
            |batch| {
                let mut columns = batch.columns().to_vec();
                columns.push(Arc::new(Int32Array::from(vec![oid; batch.num_rows()])));
                Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
            },
        )
        .await
    }
}

/// A catalog table whose `columns` are NULL arrays of the types given, whatever type the
/// inner table gives them.
#[derive(Debug)]
struct NullArrays {
    inner: Arc<dyn TableProvider>,
    schema: SchemaRef,
    columns: Vec<usize>,
}

impl NullArrays {
    fn new(inner: Arc<dyn TableProvider>, columns: &[(&str, DataType)]) -> NullArrays {
        let mut indices = vec![];
        let fields: Vec<Field> = inner
            .schema()
            .fields()
            .iter()
            .enumerate()
            .map(
                |(i, field)| match columns.iter().find(|(n, _)| n == field.name()) {
                    Some((_, array)) => {
                        indices.push(i);
                        Field::new(field.name(), array.clone(), true)
                    }
                    None => field.as_ref().clone(),
                },
            )
            .collect();
        NullArrays {
            inner,
            schema: Arc::new(Schema::new(fields)),
            columns: indices,
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
                    let array = self.schema.field(i).data_type();
                    columns[i] = arrow::array::new_null_array(array, batch.num_rows());
                }
                Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
            },
        )
        .await
    }
}

/// The privileges objects had when the database was made, which pg_dump writes back where
/// they changed: the built-in rows of functions, types and languages, whose ACLs
/// `pg_catalog` has from the same source, but none for relations and schemas, whose ACLs
/// Runnel keeps itself (NULL, the defaults, until a `GRANT`).
#[derive(Debug)]
struct PgInitPrivs {
    inner: Arc<dyn TableProvider>,
}

#[async_trait]
impl TableProvider for PgInitPrivs {
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
        let class = schema.index_of("classoid")?;
        scan_fixed(
            self.inner.as_ref(),
            &schema,
            state,
            projection,
            filters,
            limit,
            |batch| {
                let classes = cast(batch.column(class), &DataType::Int64)?;
                let classes = classes.as_primitive::<Int64Type>();
                let keep: arrow::array::BooleanArray = classes
                    .iter()
                    .map(|c| Some(!matches!(c, Some(PG_CLASS_OID | PG_NAMESPACE_OID))))
                    .collect();
                Ok(arrow::compute::filter_record_batch(&batch, &keep)?)
            },
        )
        .await
    }
}

/// `pg_namespace` with schemas' privileges as `aclitem[]` (psql's `\dn+` joins them into
/// text): the defaults, NULL; and `information_schema` under the OID the built-in rows of
/// `pg_type` and `pg_proc` give it ([`fixed_namespace_oid`]).
#[derive(Debug)]
struct PgNamespace {
    inner: Arc<dyn TableProvider>,
    schema: SchemaRef,
    catalog: Arc<CatalogData>,
}

impl PgNamespace {
    fn new(inner: Arc<dyn TableProvider>, catalog: Arc<CatalogData>) -> PgNamespace {
        PgNamespace {
            schema: with_null_arrays(&inner.schema(), &["nspacl"]),
            inner,
            catalog,
        }
    }

    /// The privileges on `public`: its owner's, everyone's `USAGE` (which Runnel does not
    /// check), then the grants — PostgreSQL 15's default `{owner=UC/owner,=U/owner}` until
    /// one.
    fn public_acl(&self) -> Vec<String> {
        let access = &self.catalog.schema;
        let mut acl = access.acl(ObjectClass::Schema);
        let everyone = format!("=U/{}", access.owner);
        match acl.iter().position(|item| item.starts_with('=')) {
            Some(i) if !acl[i].starts_with("=U") && !acl[i][1..].starts_with("CU") => {
                acl[i].insert(1, 'U');
            }
            Some(_) => {}
            None => acl.insert(1.min(acl.len()), everyone),
        }
        acl
    }
}

#[async_trait]
impl TableProvider for PgNamespace {
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
        let (oid, name, acl) = (
            self.schema.index_of("oid")?,
            self.schema.index_of("nspname")?,
            self.schema.index_of("nspacl")?,
        );
        scan_fixed(
            self.inner.as_ref(),
            &self.schema,
            state,
            projection,
            filters,
            limit,
            |batch| {
                let names = cast(batch.column(name), &DataType::Utf8)?;
                let names = names.as_string::<i32>();
                let oids = cast(batch.column(oid), &DataType::Int64)?;
                let oids = oids.as_primitive::<Int64Type>();
                let renumbered: Int64Array = (0..batch.num_rows())
                    .map(|row| {
                        let fixed = names
                            .is_valid(row)
                            .then(|| fixed_namespace_oid(names.value(row)));
                        fixed
                            .flatten()
                            .or_else(|| oids.is_valid(row).then(|| oids.value(row)))
                    })
                    .collect();
                let mut acls = ListBuilder::new(StringBuilder::new());
                for row in 0..batch.num_rows() {
                    if names.is_valid(row) && names.value(row) == PUBLIC_SCHEMA {
                        for item in self.public_acl() {
                            acls.values().append_value(item);
                        }
                        acls.append(true);
                    } else {
                        acls.append_null();
                    }
                }
                let mut columns = batch.columns().to_vec();
                columns[oid] = cast(&renumbered, self.schema.field(oid).data_type())?;
                columns[acl] = Arc::new(acls.finish());
                Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
            },
        )
        .await
    }
}

/// The OID a schema has whatever datafusion-pg-catalog numbers it: `pg_catalog`'s, and
/// `information_schema`'s in the PostgreSQL that `pg_type`'s and `pg_proc`'s built-in rows
/// come from (its domains and functions live there).
fn fixed_namespace_oid(name: &str) -> Option<i64> {
    match name {
        PG_CATALOG => Some(PG_CATALOG_NAMESPACE_OID),
        crate::tables::information_schema::INFORMATION_SCHEMA => Some(INFORMATION_SCHEMA_OID),
        _ => None,
    }
}

const INFORMATION_SCHEMA_OID: i64 = 13283;

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

/// `schema` with columns `names` as nullable `text[]` (the scans make them NULL).
fn with_null_arrays(schema: &Schema, names: &[&str]) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| match names.contains(&field.name().as_str()) {
            true => Field::new(field.name(), text_array(), true),
            false => field.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// `oid[]`, as Runnel's `pg_catalog` has it.
fn oid_array() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true)))
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
        let owner = inner.index_of("relowner")?;
        let oid = inner.index_of("oid")?;
        let all_namespaces = namespace_oids(self.namespaces.as_ref(), state).await?;
        let public: BTreeSet<i64> = all_namespaces
            .iter()
            .filter(|(_, name)| name == PUBLIC_SCHEMA)
            .map(|(oid, _)| *oid)
            .collect();
        let fixed_namespaces: HashMap<i64, i64> = all_namespaces
            .iter()
            .filter_map(|(oid, name)| Some((*oid, fixed_namespace_oid(name)?)))
            .collect();
        let roles = role_oids(&self.catalog);
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
                let owners: Int32Array = (0..batch.num_rows())
                    .map(|row| {
                        let owner = ours(row).and_then(|r| roles.get(&r.access().owner).copied());
                        Some(owner.unwrap_or(BOOTSTRAP_SUPERUSER_OID))
                    })
                    .collect();
                let oids = cast(batch.column(oid), &DataType::Int32)?;
                let oids = oids.as_primitive::<Int32Type>();
                let renumbered: Int32Array = (0..batch.num_rows())
                    .map(|row| {
                        let catalogs = namespaces.is_valid(row)
                            && namespaces.value(row) == PG_CATALOG_NAMESPACE_OID;
                        catalogs
                            .then(|| catalog_relation_oid(names.value(row)))
                            .flatten()
                            .or_else(|| oids.is_valid(row).then(|| oids.value(row)))
                    })
                    .collect();
                let relnamespaces: Int64Array = (0..batch.num_rows())
                    .map(|row| {
                        namespaces.is_valid(row).then(|| {
                            let namespace = namespaces.value(row);
                            *fixed_namespaces.get(&namespace).unwrap_or(&namespace)
                        })
                    })
                    .collect();
                let mut columns = batch.columns().to_vec();
                columns[oid] = cast(&renumbered, inner.field(oid).data_type())?;
                columns[namespace] = cast(&relnamespaces, inner.field(namespace).data_type())?;
                columns[kind] = Arc::new(relkind);
                columns[owner] = cast(&owners, inner.field(owner).data_type())?;
                columns.push(Arc::new(relacl.finish()));
                // A stream's or table's options, as `CREATE TABLE … WITH (…)` takes them.
                let mut reloptions = ListBuilder::new(StringBuilder::new());
                for row in 0..batch.num_rows() {
                    let parameters = ours(row)
                        .map(|_| self.catalog.storage_parameters(names.value(row)))
                        .unwrap_or_default();
                    if parameters.is_empty() {
                        reloptions.append_null();
                        continue;
                    }
                    for (name, value) in parameters {
                        reloptions.values().append_value(format!("{name}={value}"));
                    }
                    reloptions.append(true);
                }
                columns.push(Arc::new(reloptions.finish()));
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
    /// The inner table's, with [`PgAttribute::ARRAYS`] as `text[]`.
    schema: SchemaRef,
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
    /// The (relation OID, column name) of each `NOT NULL` column.
    not_null: BTreeSet<(i64, String)>,
    /// The OIDs `pg_class` gives `pg_catalog`'s relations ([`catalog_relation_oid`]), by
    /// the ones datafusion-pg-catalog numbers their columns with.
    catalogs: HashMap<i64, i32>,
}

impl PgAttribute {
    /// Columns of arrays, all NULL: column privileges (`aclitem[]`, which psql's `\dp`
    /// and pg_dump read), attribute and foreign-data options.
    const ARRAYS: [&str; 3] = ["attacl", "attoptions", "attfdwoptions"];

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
                if namespaces.is_valid(row)
                    && namespaces.value(row) == PG_CATALOG_NAMESPACE_OID
                    && let Some(fixed) = catalog_relation_oid(names.value(row))
                {
                    ours.catalogs.insert(oids.value(row), fixed);
                }
                if !(namespaces.is_valid(row) && public.contains(&namespaces.value(row))) {
                    continue;
                }
                let fields: Vec<(String, Option<TextType>)> =
                    match self.catalog.relation(names.value(row)) {
                        Some(Relation::Stream(stream, _)) => {
                            ours.with_hidden.insert(oids.value(row));
                            for column in stream.columns.iter().filter(|c| !c.nullable) {
                                ours.not_null.insert((oids.value(row), column.name.clone()));
                            }
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
        let schema = self.schema.clone();
        let arrays: Vec<usize> = PgAttribute::ARRAYS
            .iter()
            .map(|name| schema.index_of(name))
            .collect::<Result<_, _>>()?;
        let relation = schema.index_of("attrelid")?;
        let name = schema.index_of("attname")?;
        let type_oid = schema.index_of("atttypid")?;
        let number = schema.index_of("attnum")?;
        let not_null = schema.index_of("attnotnull")?;
        let ours = self.our_columns(state).await?;
        scan_fixed(
            self.inner.as_ref(),
            &schema,
            state,
            projection,
            filters,
            limit,
            |batch| {
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
                        // A catalog's `tableoid` is PostgreSQL's system column -6.
                        let system = key(row).is_some_and(|(relation, name)| {
                            name == TABLEOID && ours.catalogs.contains_key(&relation)
                        });
                        match hidden {
                            Some(i) => Some(-1 - i as i32),
                            None if system => Some(TABLEOID_ATTNUM),
                            None => numbers.is_valid(row).then(|| numbers.value(row)),
                        }
                    })
                    .collect();
                let relations: Int64Array = (0..batch.num_rows())
                    .map(|row| {
                        relations.is_valid(row).then(|| {
                            let relation = relations.value(row);
                            ours.catalogs
                                .get(&relation)
                                .map_or(relation, |fixed| i64::from(*fixed))
                        })
                    })
                    .collect();
                let flags = batch.column(not_null).as_boolean();
                let not_nulls: arrow::array::BooleanArray = (0..batch.num_rows())
                    .map(|row| {
                        let ours = key(row).is_some_and(|(relation, name)| {
                            ours.not_null.contains(&(relation, name.to_string()))
                        });
                        Some(ours || (flags.is_valid(row) && flags.value(row)))
                    })
                    .collect();
                let mut columns = batch.columns().to_vec();
                columns[not_null] = Arc::new(not_nulls);
                columns[relation] = cast(&relations, batch.schema().field(relation).data_type())?;
                columns[type_oid] = Arc::new(patched);
                columns[number] = cast(&renumbered, batch.schema().field(number).data_type())?;
                for &i in &arrays {
                    columns[i] = arrow::array::new_null_array(&text_array(), batch.num_rows());
                }
                Ok(RecordBatch::try_new(schema.clone(), columns)?)
            },
        )
        .await
    }
}

/// Catalogs with rows for Runnel's objects: `pg_rewrite` has a view's `_RETURN` rule per
/// materialized view (and none of the built-in rows, whose views Runnel's `pg_catalog`
/// does not have); `pg_depend` adds how each rule depends on the relations its view reads
/// (so pg_dump creates a view after them), and makes the schema `sys` and its relations
/// members of the built-in extension `runnel` ([`RUNNEL_EXTENSION_OID`]), which
/// `pg_extension` adds: pg_dump leaves an extension's members out, as it leaves out
/// `pg_catalog`.
#[derive(Debug)]
struct ObjectRows {
    inner: Arc<dyn TableProvider>,
    kind: ObjectRowsKind,
    classes: Arc<dyn TableProvider>,
    namespaces: Arc<dyn TableProvider>,
    catalog: Arc<CatalogData>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ObjectRowsKind {
    Rewrite,
    Depend,
    Extension,
}

/// The built-in extension that holds the schema `sys`: an OID below those of user objects
/// (16384), which pg_dump takes for built-in.
const RUNNEL_EXTENSION_OID: i64 = 16383;
const PG_CLASS_OID: i64 = 1259;
const PG_NAMESPACE_OID: i64 = 2615;
const PG_REWRITE_OID: i64 = 2618;
const PG_EXTENSION_OID: i64 = 3079;

impl ObjectRows {
    fn of(name: &str) -> Option<ObjectRowsKind> {
        match name.to_ascii_lowercase().as_str() {
            "pg_rewrite" => Some(ObjectRowsKind::Rewrite),
            "pg_depend" => Some(ObjectRowsKind::Depend),
            "pg_extension" => Some(ObjectRowsKind::Extension),
            _ => None,
        }
    }

    /// Runnel's rows, each as its columns' values (the others NULL).
    async fn rows(&self, state: &dyn Session) -> DfResult<Vec<Vec<(&'static str, ScalarValue)>>> {
        use ScalarValue::{Boolean, Int64, Utf8};
        let text = |s: &str| Utf8(Some(s.to_string()));
        if self.kind == ObjectRowsKind::Extension {
            return Ok(vec![vec![
                ("oid", Int64(Some(RUNNEL_EXTENSION_OID))),
                ("extname", text("runnel")),
                ("extowner", Int64(Some(i64::from(BOOTSTRAP_SUPERUSER_OID)))),
                ("extnamespace", Int64(Some(PG_CATALOG_NAMESPACE_OID))),
                ("extrelocatable", Boolean(Some(false))),
                ("extversion", text(env!("CARGO_PKG_VERSION"))),
            ]]);
        }
        let namespaces = namespace_oids(self.namespaces.as_ref(), state).await?;
        let relations = relation_oids(self.classes.as_ref(), state).await?;
        let ours = |schema: &str, name: &str| {
            namespaces
                .iter()
                .filter(|(_, n)| n == schema)
                .find_map(|(namespace, _)| relations.get(&(*namespace, name.to_string())))
                .copied()
        };
        let mut rows = vec![];
        for name in self.catalog.relation_names() {
            let (Some(Relation::View(view)), Some(oid)) =
                (self.catalog.relation(&name), ours(PUBLIC_SCHEMA, &name))
            else {
                continue;
            };
            // The rule has its view's OID: OIDs are unique per catalog.
            if self.kind == ObjectRowsKind::Rewrite {
                rows.push(vec![
                    ("oid", Int64(Some(oid))),
                    ("rulename", text("_RETURN")),
                    ("ev_class", Int64(Some(oid))),
                    ("ev_type", text("1")),
                    ("ev_enabled", text("O")),
                    ("is_instead", Boolean(Some(true))),
                    ("ev_qual", text("<>")),
                    ("ev_action", text("")),
                ]);
                continue;
            }
            let inputs = self
                .catalog
                .queries
                .get(&view.query)
                .map(|q| q.inputs.clone())
                .unwrap_or_default();
            let depends = |on: i64, deptype: &str| {
                vec![
                    ("classid", Int64(Some(PG_REWRITE_OID))),
                    ("objid", Int64(Some(oid))),
                    ("objsubid", Int64(Some(0))),
                    ("refclassid", Int64(Some(PG_CLASS_OID))),
                    ("refobjid", Int64(Some(on))),
                    ("refobjsubid", Int64(Some(0))),
                    ("deptype", text(deptype)),
                ]
            };
            rows.push(depends(oid, "i"));
            for input in inputs {
                if let Some(input) = ours(PUBLIC_SCHEMA, &input) {
                    rows.push(depends(input, "n"));
                }
            }
        }
        if self.kind == ObjectRowsKind::Depend {
            let member = |class: i64, oid: i64| {
                vec![
                    ("classid", Int64(Some(class))),
                    ("objid", Int64(Some(oid))),
                    ("objsubid", Int64(Some(0))),
                    ("refclassid", Int64(Some(PG_EXTENSION_OID))),
                    ("refobjid", Int64(Some(RUNNEL_EXTENSION_OID))),
                    ("refobjsubid", Int64(Some(0))),
                    ("deptype", text("e")),
                ]
            };
            for (namespace, name) in &namespaces {
                if name == crate::catalog::SYS_SCHEMA {
                    rows.push(member(PG_NAMESPACE_OID, *namespace));
                    for ((_, _), oid) in relations.iter().filter(|((n, _), _)| n == namespace) {
                        rows.push(member(PG_CLASS_OID, *oid));
                    }
                }
            }
        }
        Ok(rows)
    }
}

#[async_trait]
impl TableProvider for ObjectRows {
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
        let mut batches = match self.kind {
            ObjectRowsKind::Rewrite => vec![],
            _ => {
                let all = self.inner.scan(state, None, &[], None).await?;
                collect(all, state.task_ctx()).await?
            }
        };
        let rows = self.rows(state).await?;
        let columns = schema
            .fields()
            .iter()
            .map(|field| {
                let values = rows.iter().map(|row| {
                    row.iter()
                        .find(|(name, _)| *name == field.name())
                        .map_or(ScalarValue::Null, |(_, value)| value.clone())
                });
                let values: Vec<ScalarValue> = values.collect();
                let array = match values.is_empty() {
                    true => arrow::array::new_empty_array(field.data_type()),
                    false => cast(&ScalarValue::iter_to_array(values)?, field.data_type())?,
                };
                Ok(array)
            })
            .collect::<DfResult<Vec<_>>>()?;
        batches.push(RecordBatch::try_new(schema.clone(), columns)?);
        MemTable::try_new(schema, vec![batches])?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// The OID of each relation of `pg_class` (as datafusion-pg-catalog numbers them), by its
/// schema's OID and its name.
async fn relation_oids(
    classes: &dyn TableProvider,
    state: &dyn Session,
) -> DfResult<HashMap<(i64, String), i64>> {
    let all = classes.scan(state, None, &[], None).await?;
    let schema = all.schema();
    let (oid, name, namespace) = (
        schema.index_of("oid")?,
        schema.index_of("relname")?,
        schema.index_of("relnamespace")?,
    );
    let mut oids = HashMap::new();
    for batch in collect(all, state.task_ctx()).await? {
        let values = cast(batch.column(oid), &DataType::Int64)?;
        let values = values.as_primitive::<Int64Type>();
        let names = cast(batch.column(name), &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let namespaces = cast(batch.column(namespace), &DataType::Int64)?;
        let namespaces = namespaces.as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            if values.is_valid(row) && names.is_valid(row) && namespaces.is_valid(row) {
                oids.insert(
                    (namespaces.value(row), names.value(row).to_string()),
                    values.value(row),
                );
            }
        }
    }
    Ok(oids)
}

/// The OIDs `pg_namespace` gives schemas named `public`.
async fn public_namespace_oids(
    namespaces: &dyn TableProvider,
    state: &dyn Session,
) -> DfResult<BTreeSet<i64>> {
    Ok(namespace_oids(namespaces, state)
        .await?
        .into_iter()
        .filter(|(_, name)| name == PUBLIC_SCHEMA)
        .map(|(oid, _)| oid)
        .collect())
}

/// Each schema of `pg_namespace` (as datafusion-pg-catalog has it): its OID and name.
async fn namespace_oids(
    namespaces: &dyn TableProvider,
    state: &dyn Session,
) -> DfResult<Vec<(i64, String)>> {
    let all = namespaces.scan(state, None, &[], None).await?;
    let schema = all.schema();
    let (oid, name) = (schema.index_of("oid")?, schema.index_of("nspname")?);
    let mut oids = vec![];
    for batch in collect(all, state.task_ctx()).await? {
        let names = cast(batch.column(name), &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let values = cast(batch.column(oid), &DataType::Int64)?;
        let values = values.as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            if names.is_valid(row) && values.is_valid(row) {
                oids.push((values.value(row), names.value(row).to_string()));
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
