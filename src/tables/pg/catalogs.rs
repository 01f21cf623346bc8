//! Runnel's `pg_catalog`: datafusion-pg-catalog's tables, each wrapped where Runnel's
//! objects need more (owners, privileges, storage options, views' rules and dependencies,
//! `tableoid`).

use super::*;

/// An empty catalog of [`EMPTY_CATALOGS`], its columns all `oid`s.
pub(super) fn empty_catalog(name: &str) -> Option<Arc<dyn TableProvider>> {
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
                Ok(Some(Arc::new(Fixed(PgClass {
                    inner,
                    namespaces,
                    schema: Arc::new(Schema::new(fields)),
                    catalog: self.tables.catalog.snapshot(),
                }))))
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
                Ok(Some(Arc::new(Fixed(PgAttribute {
                    schema: with_arrays(
                        &inner.schema(),
                        &PgAttribute::ARRAYS.map(|c| (c, text_array())),
                    ),
                    inner,
                    classes,
                    namespaces,
                    catalog: self.tables.catalog.snapshot(),
                }))))
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
            Some(inner) if name.eq_ignore_ascii_case("pg_roles") => {
                Ok(Some(Arc::new(Fixed(PgRoles {
                    inner,
                    catalog: self.tables.catalog.snapshot(),
                }))))
            }
            Some(inner) if name.eq_ignore_ascii_case("pg_namespace") => Ok(Some(Arc::new(Fixed(
                PgNamespace::new(inner, self.tables.catalog.snapshot()),
            )))),
            // The roles a row-level policy applies to and a partition key's operator
            // classes, arrays of OIDs (pg_dump); Runnel has neither policies nor
            // partitioned tables.
            Some(inner) if name.eq_ignore_ascii_case("pg_policy") => Ok(Some(Arc::new(Fixed(
                NullArrays::new(inner, &[("polroles", oid_array())]),
            )))),
            // Per-database and per-role settings (`ALTER DATABASE … SET`): none.
            Some(inner) if name.eq_ignore_ascii_case("pg_db_role_setting") => Ok(Some(Arc::new(
                Fixed(NullArrays::new(inner, &[("setconfig", text_array())])),
            ))),
            Some(inner) if name.eq_ignore_ascii_case("pg_partitioned_table") => Ok(Some(Arc::new(
                Fixed(NullArrays::new(inner, &[("partclass", oid_array())])),
            ))),
            Some(inner) if name.eq_ignore_ascii_case("pg_database") => {
                Ok(Some(Arc::new(Fixed(PgDatabase::new(inner)))))
            }
            Some(inner) if name.eq_ignore_ascii_case("pg_proc") => {
                Ok(Some(Arc::new(Fixed(PgProc::new(inner)))))
            }
            Some(inner) if name.eq_ignore_ascii_case("pg_init_privs") => {
                Ok(Some(Arc::new(Fixed(PgInitPrivs { inner }))))
            }
            Some(other) => Ok(Some(other)),
            None => Ok(empty_catalog(name)),
        }
    }
}

/// `pg_roles` with each role's OID (datafusion-pg-catalog gives every role 0).
#[derive(Debug)]
pub(super) struct PgRoles {
    inner: Arc<dyn TableProvider>,
    catalog: Arc<CatalogData>,
}

#[async_trait]
impl Fix for PgRoles {
    fn inner(&self) -> &Arc<dyn TableProvider> {
        &self.inner
    }

    async fn fix(&self, _: &dyn Session) -> DfResult<BatchFix<'_>> {
        let schema = self.inner.schema();
        let (oid, name) = (schema.index_of("oid")?, schema.index_of("rolname")?);
        let oids = role_oids(&self.catalog);
        Ok(Box::new(move |batch| {
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
        }))
    }
}

/// The system column every catalog table has in PostgreSQL: `tableoid`, the OID of the
/// table a row is in. pg_dump selects it from nearly every catalog it reads; `*` leaves it
/// out, as it leaves out `ctid` (`CATALOG_HIDDEN_COLUMNS`).
#[derive(Debug)]
pub(super) struct TableOid {
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
pub(super) struct NullArrays {
    inner: Arc<dyn TableProvider>,
    schema: SchemaRef,
    columns: Vec<usize>,
}

impl NullArrays {
    fn new(inner: Arc<dyn TableProvider>, columns: &[(&str, DataType)]) -> NullArrays {
        let schema = with_arrays(&inner.schema(), columns);
        let columns = columns
            .iter()
            .filter_map(|(name, _)| schema.index_of(name).ok())
            .collect();
        NullArrays {
            inner,
            schema,
            columns,
        }
    }
}

#[async_trait]
impl Fix for NullArrays {
    fn inner(&self) -> &Arc<dyn TableProvider> {
        &self.inner
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn fix(&self, _: &dyn Session) -> DfResult<BatchFix<'_>> {
        Ok(Box::new(move |batch| {
            let mut columns = batch.columns().to_vec();
            for &i in &self.columns {
                let array = self.schema.field(i).data_type();
                columns[i] = arrow::array::new_null_array(array, batch.num_rows());
            }
            Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
        }))
    }
}

/// `pg_database` as pg_dump's archive formats read it: the locale provider as PostgreSQL's
/// letter (`c`, libc; datafusion-pg-catalog writes the word), and PostgreSQL 15's
/// `datcollversion` (none recorded: NULL).
#[derive(Debug)]
pub(super) struct PgDatabase {
    inner: Arc<dyn TableProvider>,
    schema: SchemaRef,
}

impl PgDatabase {
    fn new(inner: Arc<dyn TableProvider>) -> PgDatabase {
        let mut fields = inner.schema().fields().to_vec();
        if inner.schema().index_of("datcollversion").is_err() {
            fields.push(Arc::new(Field::new("datcollversion", DataType::Utf8, true)));
        }
        PgDatabase {
            schema: Arc::new(Schema::new(fields)),
            inner,
        }
    }
}

#[async_trait]
impl Fix for PgDatabase {
    fn inner(&self) -> &Arc<dyn TableProvider> {
        &self.inner
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn fix(&self, _: &dyn Session) -> DfResult<BatchFix<'_>> {
        let provider = self.inner.schema().index_of("datlocprovider").ok();
        let added = self.inner.schema().fields().len() < self.schema.fields().len();
        Ok(Box::new(move |batch| {
            let mut columns = batch.columns().to_vec();
            if let Some(i) = provider {
                let words = cast(&columns[i], &DataType::Utf8)?;
                let letters: StringArray = words
                    .as_string::<i32>()
                    .iter()
                    .map(|word| {
                        word.map(|w| match w {
                            "libc" => "c",
                            "icu" => "i",
                            other => other,
                        })
                    })
                    .collect();
                columns[i] = cast(&letters, self.schema.field(i).data_type())?;
            }
            if added {
                columns.push(arrow::array::new_null_array(
                    &DataType::Utf8,
                    batch.num_rows(),
                ));
            }
            Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
        }))
    }
}

/// `pg_proc` with its array columns as arrays (datafusion-pg-catalog keeps them as text):
/// argument names (`text[]`, which pgcli reads for its casing), modes (`"char"[]`), all
/// arguments' types (`oid[]`) and privileges (`aclitem[]`, psql's `\df+`), whose grantor
/// is the bootstrap superuser, as the functions' owner is.
#[derive(Debug)]
pub(super) struct PgProc {
    inner: Arc<dyn TableProvider>,
    schema: SchemaRef,
}

impl PgProc {
    const TEXT_ARRAYS: [&str; 3] = ["proargnames", "proargmodes", "proacl"];
    const OID_ARRAYS: [&str; 1] = ["proallargtypes"];

    fn new(inner: Arc<dyn TableProvider>) -> PgProc {
        let columns: Vec<(&str, DataType)> = PgProc::TEXT_ARRAYS
            .iter()
            .map(|c| (*c, text_array()))
            .chain(PgProc::OID_ARRAYS.iter().map(|c| (*c, oid_array())))
            .collect();
        PgProc {
            schema: with_arrays(&inner.schema(), &columns),
            inner,
        }
    }
}

/// An `aclitem` (`grantee=privileges/grantor`) of a built-in object with PostgreSQL's
/// bootstrap superuser, `postgres`, under Runnel's name for it.
pub(super) fn with_superuser(item: &str) -> String {
    let role = |name: &str| if name == "postgres" { SUPERUSER } else { name }.to_string();
    let parts = item
        .split_once('=')
        .and_then(|(grantee, rest)| Some((grantee, rest.rsplit_once('/')?)));
    match parts {
        Some((grantee, (privileges, grantor))) => {
            format!("{}={privileges}/{}", role(grantee), role(grantor))
        }
        None => item.to_string(),
    }
}

/// Text columns of lists as `text[]`; in an ACL (`acl`), the built-in objects' grantor and
/// owner under Runnel's name for the bootstrap superuser.
fn text_lists(column: &arrow::array::ArrayRef, acl: bool) -> DfResult<arrow::array::ArrayRef> {
    let column = cast(column, &DataType::Utf8)?;
    let mut out = ListBuilder::new(StringBuilder::new());
    for text in column.as_string::<i32>() {
        match listed_items(text) {
            Some(items) => {
                for item in items {
                    out.values().append_value(match acl {
                        true => with_superuser(&item),
                        false => item,
                    });
                }
                out.append(true);
            }
            None => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

#[async_trait]
impl Fix for PgProc {
    fn inner(&self) -> &Arc<dyn TableProvider> {
        &self.inner
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn fix(&self, _: &dyn Session) -> DfResult<BatchFix<'_>> {
        let index = |names: &[&str]| -> DfResult<Vec<usize>> {
            names.iter().map(|n| Ok(self.schema.index_of(n)?)).collect()
        };
        let (texts, oids) = (index(&PgProc::TEXT_ARRAYS)?, index(&PgProc::OID_ARRAYS)?);
        let acl = self.schema.index_of("proacl")?;
        Ok(Box::new(move |batch| {
            let mut columns = batch.columns().to_vec();
            for &i in &texts {
                columns[i] = text_lists(&columns[i], i == acl)?;
            }
            for &i in &oids {
                let column = cast(&columns[i], &DataType::Utf8)?;
                let mut out = ListBuilder::new(arrow::array::Int32Builder::new());
                for text in column.as_string::<i32>() {
                    match listed_items(text) {
                        Some(items) => {
                            for item in items {
                                out.values().append_option(item.parse::<i32>().ok());
                            }
                            out.append(true);
                        }
                        None => out.append_null(),
                    }
                }
                columns[i] = Arc::new(out.finish());
            }
            Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
        }))
    }
}

/// The privileges objects had when the database was made, which pg_dump writes back where
/// they changed: the built-in rows of functions, types and languages, whose ACLs
/// `pg_catalog` has from the same source, but none for relations and schemas, whose ACLs
/// Runnel keeps itself (NULL, the defaults, until a `GRANT`).
#[derive(Debug)]
pub(super) struct PgInitPrivs {
    inner: Arc<dyn TableProvider>,
}

#[async_trait]
impl Fix for PgInitPrivs {
    fn inner(&self) -> &Arc<dyn TableProvider> {
        &self.inner
    }

    fn schema(&self) -> SchemaRef {
        with_arrays(&self.inner.schema(), &[("initprivs", text_array())])
    }

    async fn fix(&self, _: &dyn Session) -> DfResult<BatchFix<'_>> {
        let schema = self.inner.schema();
        let class = schema.index_of("classoid")?;
        let privileges = schema.index_of("initprivs")?;
        let fixed = self.schema();
        Ok(Box::new(move |batch| {
            let classes = cast(batch.column(class), &DataType::Int64)?;
            let classes = classes.as_primitive::<Int64Type>();
            let keep: arrow::array::BooleanArray = classes
                .iter()
                .map(|c| Some(!matches!(c, Some(PG_CLASS_OID | PG_NAMESPACE_OID))))
                .collect();
            let batch = arrow::compute::filter_record_batch(&batch, &keep)?;
            let mut columns = batch.columns().to_vec();
            columns[privileges] = text_lists(&columns[privileges], true)?;
            Ok(RecordBatch::try_new(fixed.clone(), columns)?)
        }))
    }
}

/// `pg_namespace` with schemas' privileges as `aclitem[]` (psql's `\dn+` joins them into
/// text): the defaults, NULL; and `information_schema` under the OID the built-in rows of
/// `pg_type` and `pg_proc` give it ([`fixed_namespace_oid`]).
#[derive(Debug)]
pub(super) struct PgNamespace {
    inner: Arc<dyn TableProvider>,
    schema: SchemaRef,
    catalog: Arc<CatalogData>,
}

impl PgNamespace {
    fn new(inner: Arc<dyn TableProvider>, catalog: Arc<CatalogData>) -> PgNamespace {
        PgNamespace {
            schema: with_arrays(&inner.schema(), &[("nspacl", text_array())]),
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
            Some(i) if !acl[i].starts_with("=U") => {
                acl[i].insert(1, 'U');
            }
            Some(_) => {}
            None => acl.insert(1.min(acl.len()), everyone),
        }
        acl
    }
}

#[async_trait]
impl Fix for PgNamespace {
    fn inner(&self) -> &Arc<dyn TableProvider> {
        &self.inner
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn fix(&self, _: &dyn Session) -> DfResult<BatchFix<'_>> {
        let (oid, name, acl) = (
            self.schema.index_of("oid")?,
            self.schema.index_of("nspname")?,
            self.schema.index_of("nspacl")?,
        );
        Ok(Box::new(move |batch| {
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
        }))
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
pub(super) struct PgSettings;

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

/// A catalog table made from one of datafusion-pg-catalog's by fixing each of its batches
/// (a column's values, its type); [`Fixed`] makes it a table.
#[async_trait]
pub(super) trait Fix: std::fmt::Debug + Send + Sync {
    /// The table it is made from.
    fn inner(&self) -> &Arc<dyn TableProvider>;

    /// Its columns: the inner table's unless the fix changes their types.
    fn schema(&self) -> SchemaRef {
        self.inner().schema()
    }

    /// What a scan does to each batch of the inner table, after looking up what it needs.
    async fn fix(&self, state: &dyn Session) -> DfResult<BatchFix<'_>>;
}

pub(super) type BatchFix<'a> = Box<dyn Fn(RecordBatch) -> DfResult<RecordBatch> + Send + Sync + 'a>;

/// The table of a [`Fix`]: the inner table's rows, fixed, scanned in memory.
#[derive(Debug)]
pub(super) struct Fixed<T>(pub(super) T);

#[async_trait]
impl<T: Fix + 'static> TableProvider for Fixed<T> {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        self.0.inner().table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let fix = self.0.fix(state).await?;
        let schema = self.0.schema();
        scan_fixed(
            self.0.inner().as_ref(),
            &schema,
            state,
            projection,
            filters,
            limit,
            fix,
        )
        .await
    }
}

/// The rows of catalog table `inner`, each batch made one of `schema` by `fix`, scanned as
/// a table in memory.
pub(super) async fn scan_fixed(
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

/// `schema` with each of `columns` of the array type given (the scans make them NULL).
pub(super) fn with_arrays(schema: &Schema, columns: &[(&str, DataType)]) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(
            |field| match columns.iter().find(|(n, _)| n == field.name()) {
                Some((_, array)) => Field::new(field.name(), array.clone(), true),
                None => field.as_ref().clone(),
            },
        )
        .collect();
    Arc::new(Schema::new(fields))
}

/// `oid[]`, as Runnel's `pg_catalog` has it.
pub(super) fn oid_array() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true)))
}

/// `text[]`, as arrow has it.
pub(super) fn text_array() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

#[derive(Debug)]
pub(super) struct PgClass {
    inner: Arc<dyn TableProvider>,
    /// `pg_namespace`, to tell Runnel's relations (in `public`) from the system's.
    namespaces: Arc<dyn TableProvider>,
    /// The inner table's columns and `relacl`.
    schema: SchemaRef,
    catalog: Arc<CatalogData>,
}

#[async_trait]
impl Fix for PgClass {
    fn inner(&self) -> &Arc<dyn TableProvider> {
        &self.inner
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn fix(&self, state: &dyn Session) -> DfResult<BatchFix<'_>> {
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
        Ok(Box::new(move |batch| {
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
                        (Some("r"), Some(Relation::Stream(stream, _)))
                            if self.catalog.defining_query(&stream.name).is_some() =>
                        {
                            Some("m")
                        }
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
        }))
    }
}

/// `pg_attribute` with the types Runnel keeps as marked text (`json`, `jsonb`, `uuid`)
/// under their own OIDs, where pg_catalog's table sees only their storage (`text`).
#[derive(Debug)]
pub(super) struct PgAttribute {
    inner: Arc<dyn TableProvider>,
    /// The inner table's, with [`PgAttribute::ARRAYS`] as `text[]`.
    schema: SchemaRef,
    classes: Arc<dyn TableProvider>,
    namespaces: Arc<dyn TableProvider>,
    catalog: Arc<CatalogData>,
}

/// What `pg_attribute` says of Runnel's relations that datafusion-pg-catalog cannot know.
#[derive(Default)]
pub(super) struct OurColumns {
    /// The type OID of each (relation OID, column name) whose column is of a type kept as
    /// marked text.
    text_typed: HashMap<(i64, String), i32>,
    /// Relations with hidden columns (`_partition`, `_offset`, …): numbered below zero, as
    /// PostgreSQL numbers system columns, so tools that list a table's columns
    /// (`attnum > 0`) leave them out as they leave out `ctid`.
    with_hidden: HashMap<i64, &'static [&'static str]>,
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
        let mut ours = OurColumns::default();
        for ((namespace, name), oid) in relation_oids(self.classes.as_ref(), state).await? {
            if namespace == PG_CATALOG_NAMESPACE_OID
                && let Some(fixed) = catalog_relation_oid(&name)
            {
                ours.catalogs.insert(oid, fixed);
            }
            if !public.contains(&namespace) {
                continue;
            }
            if let Some(hidden) = self.catalog.hidden_columns(&name) {
                ours.with_hidden.insert(oid, hidden);
            }
            let fields: Vec<(String, Option<TextType>)> = match self.catalog.relation(&name) {
                Some(Relation::Stream(stream, _)) => {
                    for column in stream.columns.iter().filter(|c| !c.nullable) {
                        ours.not_null.insert((oid, column.name.clone()));
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
                    ours.text_typed.insert((oid, column), t.oid());
                }
            }
        }
        Ok(ours)
    }
}

#[async_trait]
impl Fix for PgAttribute {
    fn inner(&self) -> &Arc<dyn TableProvider> {
        &self.inner
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn fix(&self, state: &dyn Session) -> DfResult<BatchFix<'_>> {
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
        Ok(Box::new(move |batch| {
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
                            .get(&relation)
                            .and_then(|hidden| hidden.iter().position(|h| *h == name))
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
        }))
    }
}

/// Catalogs with rows for Runnel's objects: `pg_rewrite` has a view's `_RETURN` rule per
/// materialized view and derived stream (and none of the built-in rows, whose views Runnel's `pg_catalog`
/// does not have); `pg_depend` adds how each rule depends on the relations its view reads
/// (so pg_dump creates a view after them) and how a stream depends on its late-data
/// stream, and makes the schema `sys` and its relations
/// members of the built-in extension `runnel` ([`RUNNEL_EXTENSION_OID`]), which
/// `pg_extension` adds: pg_dump leaves an extension's members out, as it leaves out
/// `pg_catalog`.
#[derive(Debug)]
pub(super) struct ObjectRows {
    inner: Arc<dyn TableProvider>,
    kind: ObjectRowsKind,
    classes: Arc<dyn TableProvider>,
    namespaces: Arc<dyn TableProvider>,
    catalog: Arc<CatalogData>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum ObjectRowsKind {
    Rewrite,
    Depend,
    Extension,
}

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
            let (Some(query), Some(oid)) = (
                self.catalog.defining_query(&name),
                ours(PUBLIC_SCHEMA, &name),
            ) else {
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
            let inputs = query.inputs.clone();
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
            // A stream needs its late-data stream (pg_dump restores that first, and
            // `CREATE STREAM … WITH (late_data_topic)` takes it as its own).
            for stream in self.catalog.streams.values() {
                let late = stream.late_data_topic.as_deref();
                if let (Some(oid), Some(late)) = (
                    ours(PUBLIC_SCHEMA, &stream.name),
                    late.and_then(|late| ours(PUBLIC_SCHEMA, late)),
                ) {
                    rows.push(vec![
                        ("classid", Int64(Some(PG_CLASS_OID))),
                        ("objid", Int64(Some(oid))),
                        ("objsubid", Int64(Some(0))),
                        ("refclassid", Int64(Some(PG_CLASS_OID))),
                        ("refobjid", Int64(Some(late))),
                        ("refobjsubid", Int64(Some(0))),
                        ("deptype", text("n")),
                    ]);
                }
            }
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
pub(super) async fn relation_oids(
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
pub(super) async fn public_namespace_oids(
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
pub(super) async fn namespace_oids(
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
