//! What PostgreSQL clients look for besides their data: the `pg_catalog` schema (from
//! datafusion-pg-catalog, built from the catalog on each query), the functions drivers and
//! BI tools call on connect (`version()`, `current_database()`, `current_schema()`,
//! `pg_table_is_visible()`, …), and the rewrites that let DataFusion plan their catalog
//! queries (`'x'::regclass`, `OPERATOR(pg_catalog.~)`, psql's `\d` sub-queries).
//!
//! [`catalogs`] has the tables, [`functions`] the functions ([`routines`] those that print
//! the built-in functions' definitions), [`rewrites`] the rewrites; here
//! are what they share: PostgreSQL's OIDs for the catalogs, the schemas and the roles.
//! `information_schema` is Runnel's own (`tables::information_schema`).

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
use crate::catalog::{CATALOG_NAME, CatalogData, ObjectClass, PUBLIC_SCHEMA, Relation};
use crate::error::{Error, Result};
use crate::sql::rewrite::HiddenColumns;
use crate::sql::text_type::TextType;

mod catalogs;
mod functions;
mod rewrites;
mod routines;

use catalogs::*;
pub use catalogs::{PgCatalogSchema, SessionSettings, SettingRow};
use functions::*;
pub use functions::{constant_text, current_setting, snapshot_exported};
pub use rewrites::{parse_catalog_queries, reads_system_catalogs};

/// What `pg_catalog`'s functions need to know before a database starts: the OID of every
/// type in `pg_type` (for `to_regtype`) and each OID's name and element type (for the names
/// a `regtype` prints as), read once from a scratch context.
pub struct PgTypes(
    HashMap<String, i32>,
    Arc<HashMap<i32, (String, i32)>>,
    /// The OID of each built-in function by name (the least, for overloaded names), for
    /// `regproc` columns, which hold names.
    HashMap<String, i32>,
    /// Each built-in function, by OID, for the functions that print its definition.
    Arc<HashMap<i32, routines::Routine>>,
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
        let batches = ctx
            .sql(&format!(
                "SELECT {} FROM pg_catalog.pg_proc",
                routines::ROUTINE_COLUMNS
            ))
            .await?
            .collect()
            .await?;
        let routines = routines::routines(&batches)?;
        // The least OID of each name, for `regproc` columns.
        let mut functions: HashMap<String, i32> = HashMap::new();
        for (oid, routine) in &routines {
            let least = functions.entry(routine.name().to_string()).or_insert(*oid);
            *least = (*least).min(*oid);
        }
        Ok(PgTypes(
            oids,
            Arc::new(names_of),
            functions,
            Arc::new(routines),
        ))
    }
}

/// The items of an array as datafusion-pg-catalog writes one into text: `['a', '']`,
/// `[23, 26]` or `{a,b}`, each in its place (an argument without a name is `''`); `None`
/// for none (NULL, or text that is not a list).
fn listed_items(text: Option<&str>) -> Option<Vec<String>> {
    let text = text?.trim();
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .or_else(|| text.strip_prefix('{').and_then(|t| t.strip_suffix('}')))?;
    if inner.trim().is_empty() {
        return Some(vec![]);
    }
    Some(
        inner
            .split(',')
            .map(|item| item.trim().trim_matches('\'').to_string())
            .collect(),
    )
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
    ctx.register_udf(export_snapshot());
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
    // Nothing has a comment (there is no COMMENT ON); the tablespaces are the built-in two,
    // which have no location. Sizes Runnel does not report per relation or database are
    // NULL, not 0.
    for (name, arities) in [
        ("obj_description", &[1, 2][..]),
        ("col_description", &[2]),
        ("shobj_description", &[2]),
        // No built-in function has an SQL-standard body (`BEGIN ATOMIC`).
        ("pg_get_function_sqlbody", &[1]),
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
    ctx.register_udf(routines::regprocedure_oid(types));
    for udf in routines::routine_functions(types) {
        ctx.register_udf(udf);
    }
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

/// The built-in extension that holds the schema `sys`: an OID below those of user objects
/// (16384), which pg_dump takes for built-in.
const RUNNEL_EXTENSION_OID: i64 = 16383;

const PG_CLASS_OID: i64 = 1259;

const PG_NAMESPACE_OID: i64 = 2615;

const PG_REWRITE_OID: i64 = 2618;

const PG_EXTENSION_OID: i64 = 3079;
