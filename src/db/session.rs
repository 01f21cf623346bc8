//! A client's session: statement dispatch, settings, and the extended protocol's prepare.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{FieldRef, SchemaRef, UInt64Type};
use datafusion::common::ParamValues;
use datafusion::dataframe::DataFrame;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, WriteOp};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::parser::Statement as DfStatement;
use futures::StreamExt;

use super::FileUse;
use super::copy::CopyIn;
use super::cursor::Cursor;
use super::transaction::{Block, DEFAULT_ISOLATION, DEFAULT_READ_ONLY, Transaction, setting_bool};
use super::{
    DESCRIBE_COLUMNS, Database, Output, SHOW_STREAMS_COLUMNS, SHOW_TOPICS_COLUMNS, command,
    text_rows, text_schema,
};
use crate::catalog::WRITE_SCHEMA;
use crate::catalog::access::{READ_SERVER_FILES, SUPERUSER, WRITE_SERVER_FILES};
use crate::catalog::{CatalogData, PUBLIC_SCHEMA, Principal, Privilege, Relation, SqlType};
use crate::error::{Error, Result};
use crate::ingest::WriteTarget;
use crate::ingest::writer::PendingWrite;
use crate::sql::parser::{CursorQuery, Declare, Fetch, Isolation, SavepointOp, TransactionModes};
use crate::sql::{self, Statement};
use crate::tables::stream_table::StatementSnapshot;

/// What a prepared statement takes and returns, for the extended protocol's Describe.
#[derive(Debug, Clone, Default)]
pub struct Described {
    /// Types of `$1`, `$2`, … (`None` where the query does not determine one), as fields:
    /// one cast to `uuid`, say, is text marked as such.
    pub parameters: Vec<Option<FieldRef>>,
    /// Columns of the rows it returns; `None` if it returns none.
    pub schema: Option<SchemaRef>,
    /// Whether its rows come as they happen, with no end (`EMIT CHANGES`, `SUBSCRIBE`).
    pub push: bool,
}

/// The setting that decides where push queries start.
const AUTO_OFFSET_RESET: &str = "auto_offset_reset";

/// One client's session: its settings, cursors, and any `COPY` in progress.
pub struct Session {
    pub(super) db: Arc<Database>,
    pub(super) state: SessionState,
    pub(super) vars: BTreeMap<String, String>,
    pub(super) copy: Option<CopyIn>,
    pub(super) notices: Vec<String>,
    /// Open cursors, by name; they end with the transaction block.
    pub(super) cursors: BTreeMap<String, Cursor>,
    pub(super) transaction: Transaction,
    /// The open block's characteristics and savepoints.
    pub(super) block: Block,
    /// Who logged in, as the client named itself at start-up.
    pub(super) user: Option<String>,
    /// The session's number in the server's life (as PostgreSQL's backend pid).
    pub(super) number: u32,
    /// Prepared statements `DEALLOCATE` named since the protocol layer last asked (`None`:
    /// all of them); that layer keeps them.
    pub(super) deallocated: Vec<Option<String>>,
    /// Statements of SQL's `PREPARE`, by name.
    pub(super) prepared: BTreeMap<String, SqlPrepared>,
}

/// A statement `PREPARE` made: its SQL and its parameters' declared types.
#[derive(Debug, Clone)]
pub struct SqlPrepared {
    sql: String,
    types: Vec<sqlparser::ast::DataType>,
}

/// PostgreSQL settings clients ask for, with the values Runnel behaves by.
const DEFAULT_VARS: [(&str, &str); 18] = [
    ("application_name", ""),
    (AUTO_OFFSET_RESET, "latest"),
    ("client_encoding", "UTF8"),
    ("datestyle", "ISO, MDY"),
    (DEFAULT_ISOLATION, "read committed"),
    (DEFAULT_READ_ONLY, "off"),
    ("extra_float_digits", "1"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("search_path", "public"),
    ("server_encoding", "UTF8"),
    ("server_version", crate::SERVER_VERSION),
    ("server_version_num", crate::SERVER_VERSION_NUM),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("timezone", "UTC"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "off"),
];

/// Settings that describe the server, which PostgreSQL does not let a session change.
const FIXED_SETTINGS: [&str; 4] = [
    "integer_datetimes",
    "server_encoding",
    "server_version",
    "server_version_num",
];

/// PostgreSQL settings that clients and tools set (pg_dump's output, drivers, ORMs) and
/// that Runnel accepts and shows back without acting on them.
const ACCEPTED_SETTINGS: [&str; 35] = [
    "bytea_output",
    "check_function_bodies",
    "client_min_messages",
    "cursor_tuple_fraction",
    "default_table_access_method",
    "default_tablespace",
    "default_transaction_deferrable",
    "default_with_oids",
    "enable_hashjoin",
    "enable_mergejoin",
    "enable_nestloop",
    "enable_seqscan",
    "geqo",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "jit",
    "lc_messages",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "lock_timeout",
    "log_statement",
    "maintenance_work_mem",
    "max_parallel_workers_per_gather",
    "role",
    "row_security",
    "session_authorization",
    "session_replication_role",
    "synchronize_seqscans",
    "synchronous_commit",
    "temp_buffers",
    "trace_sort",
    "transaction_timeout",
    "work_mem",
    "xmloption",
];

impl Session {
    /// Every setting's value in this session: Runnel's defaults and what it `SET`.
    fn settings(&self) -> BTreeMap<String, String> {
        let mut settings: BTreeMap<String, String> = DEFAULT_VARS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        settings.extend(self.vars.clone());
        for (name, value) in self.transaction_settings() {
            settings.insert(name.into(), value.into());
        }
        settings
    }

    /// Gives `current_setting()` and `pg_settings` the session's settings as they are now.
    pub(super) fn publish_settings(&mut self) {
        let settings = self.settings();
        let rows = settings
            .iter()
            .map(|(name, setting)| {
                let boot = DEFAULT_VARS.iter().find(|(k, _)| k == name).map(|(_, v)| v);
                crate::tables::pg::SettingRow {
                    name: name.clone(),
                    setting: setting.clone(),
                    boot_val: boot.map(|v| v.to_string()),
                    source: if self.vars.contains_key(name) {
                        "session"
                    } else {
                        "default"
                    },
                    context: if FIXED_SETTINGS.contains(&name.as_str()) {
                        "internal"
                    } else {
                        "user"
                    },
                }
            })
            .collect();
        self.state
            .config_mut()
            .set_extension(Arc::new(crate::tables::pg::SessionSettings { rows }));
        let _ = datafusion::execution::FunctionRegistry::register_udf(
            &mut self.state,
            Arc::new(crate::tables::pg::current_setting(settings)),
        );
    }

    /// Records who the client logged in as (the front end knows after start-up).
    pub fn set_user(&mut self, user: &str) {
        if self.user.as_deref() != Some(user) {
            self.user = Some(user.to_string());
            // session_user() and current_user (which clients' catalog queries call) name them.
            for name in ["session_user", "current_user"] {
                let _ = datafusion::execution::FunctionRegistry::register_udf(
                    &mut self.state,
                    Arc::new(crate::tables::pg::constant_text(name, user)),
                );
            }
        }
    }

    /// Who runs this session's statements, as the catalog has them now.
    pub(super) fn principal(&self) -> Principal {
        let name = self.user.as_deref().unwrap_or(SUPERUSER);
        self.db
            .tables
            .catalog
            .snapshot()
            .principal(name, !self.db.config.password_auth)
    }

    /// The prepared statements `DEALLOCATE` has named since the last call (`None`: all).
    pub fn take_deallocated(&mut self) -> Vec<Option<String>> {
        std::mem::take(&mut self.deallocated)
    }

    /// Notices raised by the statements run since the last call (e.g. `IF EXISTS` skips).
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// Runs every statement of `sql` in order, stopping at the first error (which is the
    /// last element).
    pub async fn execute(&mut self, sql: &str) -> Vec<Result<Output>> {
        sql::cpu_bound(self.execute_statements(sql)).await
    }

    async fn execute_statements(&mut self, sql: &str) -> Vec<Result<Output>> {
        // The fast path of `INSERT … VALUES (literals)`; a failed or read-only block takes
        // the general one, which refuses it.
        if self.copy.is_none()
            && self.transaction != Transaction::Failed
            && !self.read_only()
            && let Some((name, literals)) = sql::literal_insert::scan(sql)
            && let Ok(name) = sql::parser::relation_name_parts(&name)
            && let Some(output) = self.insert_literals(&name, &literals).await
        {
            return vec![output];
        }
        let statements = match parse(sql) {
            Ok(s) if s.is_empty() => return vec![Ok(Output::Empty)],
            Ok(s) => s,
            Err(e) => return vec![Err(e)],
        };
        let mut out = vec![];
        for statement in statements {
            let result = self.run(statement, None).await;
            let failed = result.is_err();
            out.push(result);
            if failed {
                break;
            }
        }
        out
    }

    /// `CALL nexmark(events, options)`: the streams `person`, `auction` and `bid` (made
    /// if missing, with `partitions` of the options, 4 by default, and a watermark four
    /// seconds behind), then a run's events appended to them (the other options are the
    /// `nexmark` table function's).
    async fn load_nexmark(&mut self, events: u64, options: &str) -> Result<Output> {
        let mut partitions = 4;
        let mut rest = vec![];
        for option in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            match option.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("partitions", n)) => {
                    partitions = n.parse::<u32>().map_err(|_| {
                        Error::data(
                            "22023",
                            format!("nexmark: partitions must be a number, not \"{n}\""),
                        )
                    })?
                }
                _ => rest.push(option),
            }
        }
        let options = rest.join(", ").replace('\'', "''");
        let mut sql = String::new();
        for (kind, columns) in crate::tables::nexmark::STREAMS {
            sql.push_str(&format!(
                "CREATE STREAM IF NOT EXISTS {kind} ({columns}, \
                 WATERMARK FOR date_time AS date_time - INTERVAL '4 seconds') \
                 WITH (partitions = {partitions});"
            ));
        }
        for (kind, _) in crate::tables::nexmark::STREAMS {
            sql.push_str(&format!(
                "INSERT INTO {kind} SELECT * FROM nexmark('{kind}', {events}, '{options}');"
            ));
        }
        for result in Box::pin(self.execute_statements(&sql)).await {
            result?;
        }
        Ok(command("CALL"))
    }

    /// Runs one statement with parameter values (the extended protocol's Execute).
    pub async fn execute_one(&mut self, sql: &str, params: ParamValues) -> Result<Output> {
        sql::cpu_bound(self.execute_prepared(sql, params)).await
    }

    async fn execute_prepared(&mut self, sql: &str, params: ParamValues) -> Result<Output> {
        let mut statements = parse(sql)?;
        if statements.is_empty() {
            return Ok(Output::Empty);
        }
        if statements.len() != 1 {
            return Err(Error::Syntax(
                "cannot insert multiple commands into a prepared statement".into(),
            ));
        }
        self.run(statements.pop().expect("one"), Some(params)).await
    }

    /// What a statement takes and returns, without running it (the extended protocol's
    /// Parse and Describe).
    pub async fn describe(&mut self, sql: &str) -> Result<Described> {
        sql::cpu_bound(self.describe_statement(sql)).await
    }

    async fn describe_statement(&mut self, sql: &str) -> Result<Described> {
        let mut statements = parse(sql)?;
        if statements.is_empty() {
            return Ok(Described::default());
        }
        if statements.len() != 1 {
            return Err(Error::Syntax(
                "cannot insert multiple commands into a prepared statement".into(),
            ));
        }
        let statement = statements.pop().expect("one");
        let push = matches!(&statement, Statement::Push(_))
            || matches!(&statement, Statement::Subscribe(s) if !s.copy);
        let schema = match statement {
            Statement::ShowStreams => Some(text_schema(&SHOW_STREAMS_COLUMNS)),
            Statement::ShowTopics => Some(text_schema(&SHOW_TOPICS_COLUMNS)),
            Statement::Describe(_) => Some(text_schema(&DESCRIBE_COLUMNS)),
            Statement::ShowVariable(name) if name == "all" => {
                Some(text_schema(&["name", "setting"]))
            }
            Statement::ShowVariable(name) => Some(text_schema(&[name.as_str()])),
            s @ (Statement::ShowQueries | Statement::ShowViews) => {
                let sql = show_sql(&s).expect("a SHOW over system tables");
                return Box::pin(self.describe(sql)).await;
            }
            Statement::Push(q) => Some(self.db.push_schema(&q).await?),
            Statement::Fetch(f) => Some(self.cursor(&f.cursor)?.schema()),
            Statement::Declare(Declare {
                query: CursorQuery::Statement(query),
                ..
            }) => {
                // Its parameters are those of its query (psycopg binds a named cursor's).
                let Statement::DataFusion(statement) = *query else {
                    return Ok(Described {
                        parameters: vec![],
                        schema: None,
                        push: false,
                    });
                };
                let catalog = self.db.tables.catalog.snapshot();
                let plan = sql::plan(&self.state, *statement, &catalog).await?;
                return Ok(Described {
                    parameters: parameter_types(&plan)?,
                    schema: None,
                    push: false,
                });
            }
            Statement::Subscribe(s) if !s.copy => Some(self.db.subscribe_schema(&s).await?),
            Statement::DataFusion(statement) => {
                let catalog = self.db.tables.catalog.snapshot();
                // An ON CONFLICT takes the parameters of the INSERT it resolves.
                let mut statement = super::table_writes::without_on_conflict(*statement);
                let names = query_of(&mut statement).map(|query| {
                    let names = sql::column_names::postgresql_names(query);
                    sql::column_names::alias_repeated(query);
                    sql::column_names::name_inner_columns(query);
                    names
                });
                // Described, not run: the settings stay as they are.
                set_configs(&mut statement)?;
                let plan = sql::plan(&self.state, statement, &catalog).await?;
                let parameters = parameter_types(&plan)?;
                let schema = match &plan {
                    LogicalPlan::Ddl(_)
                    | LogicalPlan::Dml(_)
                    | LogicalPlan::Copy(_)
                    | LogicalPlan::Statement(_) => None,
                    _ => {
                        let schema = Arc::new(plan.schema().as_arrow().clone());
                        Some(match &names {
                            Some(names) => postgresql_schema(&schema, names),
                            None => schema,
                        })
                    }
                };
                return Ok(Described {
                    parameters,
                    schema,
                    push: false,
                });
            }
            _ => None,
        };
        Ok(Described {
            parameters: vec![],
            schema,
            push,
        })
    }

    async fn run(&mut self, statement: Statement, params: Option<ParamValues>) -> Result<Output> {
        if self.copy.is_some() {
            return Err(Error::Protocol("a COPY is in progress".into()));
        }
        if self.transaction == Transaction::Failed
            && !matches!(
                statement,
                Statement::Commit { .. }
                    | Statement::Rollback { .. }
                    | Statement::Savepoint(SavepointOp::RollbackTo(_))
            )
        {
            return Err(Error::plan(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            ));
        }
        let result = match self.check_writable(&statement) {
            Ok(()) => self.dispatch(statement, params).await,
            Err(e) => Err(e),
        };
        if result.is_err() && self.transaction == Transaction::Open {
            self.transaction = Transaction::Failed;
        }
        result
    }

    async fn dispatch(
        &mut self,
        statement: Statement,
        params: Option<ParamValues>,
    ) -> Result<Output> {
        let db = self.db.clone();
        let who = self.principal();
        match statement {
            Statement::CreateStream(c) => db.create_stream(c, &who, &mut self.notices).await,
            Statement::CreateTopic(c) => db.create_topic(c, &who, &mut self.notices).await,
            Statement::CreateView(v) => db.create_view(v, &who, &mut self.notices).await,
            Statement::InsertContinuous(i) => db.insert_continuous(i, &who).await,
            Statement::Flush => db.flush().await,
            Statement::Lock(lock) => self.lock(&lock).await,
            Statement::Refresh(name) => {
                let catalog = db.tables.catalog.snapshot();
                match catalog.relation(&name) {
                    // A view, or a derived stream (which pg_dump writes as one).
                    Some(_) if catalog.defining_query(&name).is_some() => {}
                    Some(_) => {
                        return Err(Error::plan(
                            "42809",
                            format!("\"{name}\" is not a materialized view"),
                        ));
                    }
                    None => {
                        return Err(Error::UnknownRelation(format!(
                            "relation \"{name}\" does not exist"
                        )));
                    }
                }
                db.flush().await?;
                Ok(command("REFRESH MATERIALIZED VIEW"))
            }
            Statement::Comment(comment) => comment_on(&db, &comment),
            Statement::Prepare {
                name,
                types,
                statement,
            } => self.prepare(name, types, statement).await,
            Statement::Execute { name, parameters } => {
                Box::pin(self.execute_named(&name, parameters)).await
            }
            Statement::Deallocate(name) => {
                let tag = match name {
                    Some(_) => "DEALLOCATE",
                    None => "DEALLOCATE ALL",
                };
                match &name {
                    Some(name) => {
                        self.prepared.remove(name);
                    }
                    None => self.prepared.clear(),
                }
                self.deallocated.push(name);
                Ok(command(tag))
            }
            Statement::LoadNexmark { events, options } => self.load_nexmark(events, &options).await,
            Statement::Subscribe(s) => db.subscribe(s, &who).await,
            Statement::Push(q) => {
                if matches!(&params, Some(ParamValues::List(v)) if !v.is_empty())
                    || matches!(&params, Some(ParamValues::Map(m)) if !m.is_empty())
                {
                    return Err(Error::Unsupported(
                        "push queries (EMIT CHANGES) do not take parameters yet".into(),
                    ));
                }
                db.push_query(q, &who, self.push_starts_earliest()).await
            }
            Statement::ShowQueries | Statement::ShowViews => {
                let sql = show_sql(&statement).expect("a SHOW over system tables");
                let Some(Statement::DataFusion(s)) = sql::parse(sql)?.pop() else {
                    return Err(Error::Internal("SHOW query".into()));
                };
                self.run_datafusion(*s, None).await
            }
            Statement::Drop(d) => db.drop_objects(d, &who, &mut self.notices).await,
            Statement::ShowStreams => db.show_streams(),
            Statement::ShowTopics => db.show_topics(),
            Statement::Describe(name) => db.describe(&name).await,
            Statement::CopyFrom(c) => self.start_copy(c, &who),
            Statement::CopyTo(c) => {
                let Some(Statement::DataFusion(query)) = sql::parse(&c.query)?.pop() else {
                    return Err(Error::Syntax(format!(
                        "COPY … TO STDOUT takes a query, not \"{}\"",
                        c.query
                    )));
                };
                match self.run_datafusion(*query, params).await? {
                    Output::Rows(rows) => Ok(Output::CopyOut {
                        rows,
                        options: c.options,
                    }),
                    _ => Err(Error::Syntax(format!(
                        "COPY … TO STDOUT takes a query, not \"{}\"",
                        c.query
                    ))),
                }
            }
            Statement::Set { name, value } => self.set(name, value),
            Statement::ShowVariable(name) => self.show(&name),
            Statement::Begin(modes) => self.begin(modes),
            Statement::Commit { chain } => self.commit(chain).await,
            Statement::Rollback { chain } => self.rollback(chain),
            Statement::Savepoint(op) => self.savepoint(op),
            Statement::SetTransaction { modes, session } => self.set_transaction(modes, session),
            Statement::ImportSnapshot(id) => self.import_snapshot(&id),
            Statement::Declare(d) => self.declare(d, params).await,
            Statement::Fetch(f) => self.fetch(f).await,
            Statement::Close(name) => {
                match name {
                    Some(name) => {
                        self.cursors.remove(&name).ok_or_else(|| no_cursor(&name))?;
                    }
                    None => self.cursors.clear(),
                }
                Ok(command("CLOSE CURSOR"))
            }
            Statement::CreateSubscription(c) => {
                db.create_subscription(c, &who, &mut self.notices).await
            }
            Statement::ResetSubscription { name, to } => {
                db.reset_subscription(&name, to, &who).await
            }
            Statement::User(u) => db.manage_user(u, &who, &mut self.notices).await,
            Statement::Grant(g) => db.grant(g, &who).await,
            Statement::DataFusion(statement) => self.run_datafusion(*statement, params).await,
        }
    }

    /// `PREPARE name [(types)] AS statement`: checks that the statement parses and plans
    /// (as PostgreSQL does), and keeps it for `EXECUTE`.
    async fn prepare(
        &mut self,
        name: String,
        types: Vec<sqlparser::ast::DataType>,
        sql: String,
    ) -> Result<Output> {
        if self.prepared.contains_key(&name) {
            return Err(Error::plan(
                "42P05",
                format!("prepared statement \"{name}\" already exists"),
            ));
        }
        Box::pin(self.describe_statement(&typed_sql(&sql, &types))).await?;
        self.prepared.insert(name, SqlPrepared { sql, types });
        Ok(command("PREPARE"))
    }

    /// `EXECUTE name [(values)]`: the prepared statement, its parameters the values, each
    /// of its declared type.
    async fn execute_named(
        &mut self,
        name: &str,
        parameters: Vec<sqlparser::ast::Expr>,
    ) -> Result<Output> {
        let prepared = self.prepared.get(name).cloned().ok_or_else(|| {
            Error::plan(
                "26000",
                format!("prepared statement \"{name}\" does not exist"),
            )
        })?;
        if !prepared.types.is_empty() && prepared.types.len() != parameters.len() {
            return Err(Error::plan(
                "42601",
                format!(
                    "wrong number of parameters for prepared statement \"{name}\": expected {}, got {}",
                    prepared.types.len(),
                    parameters.len()
                ),
            ));
        }
        let mut values = vec![];
        if !parameters.is_empty() {
            let select = parameters
                .iter()
                .enumerate()
                .map(|(i, value)| match prepared.types.get(i) {
                    Some(t) => format!("CAST(({value}) AS {t})"),
                    None => format!("({value})"),
                })
                .collect::<Vec<_>>()
                .join(", ");
            let Output::Rows(rows) = Box::pin(
                self.execute_prepared(&format!("SELECT {select}"), ParamValues::List(vec![])),
            )
            .await?
            else {
                return Err(Error::Internal("EXECUTE's values are a row".into()));
            };
            let batches: Vec<RecordBatch> = futures::TryStreamExt::try_collect(rows).await?;
            let batch = batches
                .iter()
                .find(|b| b.num_rows() > 0)
                .ok_or_else(|| Error::Internal("EXECUTE's values are a row".into()))?;
            for column in batch.columns() {
                values.push(datafusion::common::ScalarValue::try_from_array(column, 0)?.into());
            }
        }
        let typed = typed_sql(&prepared.sql, &prepared.types);
        Box::pin(self.execute_prepared(&typed, ParamValues::List(values))).await
    }

    /// `LOCK TABLE … IN ACCESS SHARE MODE`, as pg_dump takes it before reading: checks that
    /// each relation exists and may be read. Reads in Runnel see a snapshot and take no
    /// locks, so there is nothing to hold; stronger modes, which would keep writers out,
    /// are refused.
    async fn lock(&mut self, lock: &sqlparser::ast::Lock) -> Result<Output> {
        use sqlparser::ast::LockTableMode;
        if self.transaction != Transaction::Open {
            return Err(Error::plan(
                "25P01",
                "LOCK TABLE can only be used in transaction blocks",
            ));
        }
        // Without `IN … MODE`, PostgreSQL takes ACCESS EXCLUSIVE.
        let mode = lock
            .lock_mode
            .clone()
            .unwrap_or(LockTableMode::AccessExclusive);
        if mode != LockTableMode::AccessShare {
            return Err(Error::Unsupported(format!(
                "LOCK TABLE … IN {mode} MODE: Runnel has no table locks (ACCESS SHARE, which \
                 only reads, is accepted)"
            )));
        }
        let who = self.principal();
        let catalog = self.db.tables.catalog.snapshot();
        for target in &lock.tables {
            let sql = format!("SELECT * FROM {} WHERE false", target.name);
            let Some(Statement::DataFusion(statement)) = sql::parse(&sql)?.pop() else {
                return Err(Error::Syntax(format!("invalid name {}", target.name)));
            };
            let plan = sql::plan(&self.state, *statement, &catalog).await?;
            self.authorize(&plan, &catalog, &who)?;
        }
        Ok(command("LOCK TABLE"))
    }

    /// `TRUNCATE name`, of a relation that holds no records: nothing to do (pg_restore
    /// truncates a table it has just made before loading it). A stream is append-only:
    /// one that holds records is refused, and its retention drops them.
    fn truncate(&self, name: &str, catalog: &CatalogData) -> Result<Output> {
        let topic = match catalog.relation(name) {
            Some(Relation::Stream(_, topic) | Relation::Topic(topic)) => topic,
            Some(_) => {
                return Err(Error::plan(
                    "42809",
                    format!("\"{name}\" is not a stream, table or topic"),
                ));
            }
            None => {
                return Err(Error::UnknownRelation(format!(
                    "relation \"{name}\" does not exist"
                )));
            }
        };
        let log = &self.db.tables.log;
        let ends = log.snapshot().high_watermarks(topic.id);
        let holds_records = ends.iter().enumerate().any(|(partition, end)| {
            *end > log.log_start(topic.id, crate::storage::PartitionId(partition as u32))
        });
        if holds_records {
            return Err(Error::Unsupported(format!(
                "TRUNCATE of \"{name}\", which holds records, is not supported: streams are \
                 append-only (their retention drops old records; a table's rows go with DELETE)"
            )));
        }
        Ok(command("TRUNCATE TABLE"))
    }

    async fn run_datafusion(
        &mut self,
        statement: DfStatement,
        params: Option<ParamValues>,
    ) -> Result<Output> {
        if let DfStatement::Statement(s) = &statement
            && let sqlparser::ast::Statement::Insert(insert) = s.as_ref()
            && let Some(on) = &insert.on
        {
            return self.insert_on_conflict(insert, on, params).await;
        }
        if params.is_none()
            && let DfStatement::Statement(s) = &statement
            && let sqlparser::ast::Statement::Insert(insert) = s.as_ref()
            && let sqlparser::ast::TableObject::TableName(name) = &insert.table
            && let Ok(name) = sql::parser::relation_name(name)
            && let Some(literals) = crate::ingest::values::LiteralInsert::from_ast(insert)
            && let Some(output) = self.insert_literals(&name, &literals).await
        {
            return output;
        }
        let who = self.principal();
        self.authorize_files(&statement, &who)?;
        let mut statement = statement;
        let names = query_of(&mut statement).map(|query| {
            let names = sql::column_names::postgresql_names(query);
            sql::column_names::alias_repeated(query);
            sql::column_names::name_inner_columns(query);
            names
        });
        for (name, value) in set_configs(&mut statement)? {
            self.set(name, Some(value))?;
        }
        // `TRUNCATE ONLY` (pg_restore's, before it loads a table it made): no relation has
        // children to leave out.
        if let DfStatement::Statement(s) = &mut statement
            && let sqlparser::ast::Statement::Truncate(truncate) = s.as_mut()
        {
            for target in &mut truncate.table_names {
                target.only = false;
            }
        }
        let definition =
            matches!(statement, DfStatement::CreateExternalTable(_)).then(|| statement.to_string());
        let mut state = self.state.clone();
        state.mark_start_execution(); // now() and friends: one instant per statement
        state
            .config_mut()
            .set_extension(Arc::new(StatementSnapshot(self.db.tables.log.snapshot())));
        let catalog = self.db.tables.catalog.snapshot();
        let mut plan = sql::plan(&state, statement, &catalog).await?;
        if let Some(params) = params {
            plan = plan.with_param_values(params)?;
        }
        self.authorize(&plan, &catalog, &who)?;
        match &plan {
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)) => {
                let sql = definition.expect("a CREATE EXTERNAL TABLE statement");
                return self
                    .db
                    .create_external_table(&state, cmd, sql, &who, &mut self.notices)
                    .await;
            }
            LogicalPlan::Ddl(ddl) => {
                return Err(Error::Unsupported(format!(
                    "{} is not supported: Runnel stores streams (CREATE STREAM) and reads files (CREATE EXTERNAL TABLE)",
                    ddl.name()
                )));
            }
            LogicalPlan::Dml(dml) => {
                if matches!(dml.op, WriteOp::Update | WriteOp::Delete)
                    && matches!(dml.table_name.schema(), None | Some(PUBLIC_SCHEMA))
                    && let Some(relation @ Relation::Stream(stream, _)) =
                        catalog.relation(dml.table_name.table())
                    && stream.is_table()
                {
                    let target = WriteTarget::of(&catalog, &relation).expect("tables are writable");
                    return self.write_table(dml, state, stream, target).await;
                }
                if matches!(dml.op, WriteOp::Truncate) {
                    return self.truncate(dml.table_name.table(), &catalog);
                }
                if !matches!(dml.op, WriteOp::Insert(_)) {
                    return Err(Error::Unsupported(format!(
                        "{} is not supported: streams are append-only",
                        dml.op.name()
                    )));
                }
                // The rewrite points inserts into streams and topics at the write schema;
                // anything else is a file (external table), which SQL never writes.
                if dml.table_name.schema() != Some(WRITE_SCHEMA) {
                    if let Some(Relation::View(_)) = catalog.relation(dml.table_name.table()) {
                        return Err(Error::plan(
                            "42809",
                            format!(
                                "cannot insert into materialized view \"{}\": its query maintains it",
                                dml.table_name.table()
                            ),
                        ));
                    }
                    return Err(Error::Unsupported(format!(
                        "cannot insert into \"{}\": external tables are read-only; write files with COPY (query) TO 'file'",
                        dml.table_name.table()
                    )));
                }
                sql::assignment::check_insert(dml)?;
                let rows = count(DataFrame::new(state, plan)).await?;
                return Ok(Output::Command {
                    tag: "INSERT",
                    rows: Some(rows),
                });
            }
            LogicalPlan::Copy(_) => {
                let rows = count(DataFrame::new(state, plan)).await?;
                return Ok(Output::Command {
                    tag: "COPY",
                    rows: Some(rows),
                });
            }
            LogicalPlan::Statement(s) => {
                return Err(Error::Unsupported(format!("{} is not supported", s.name())));
            }
            _ => {}
        }
        let stream = DataFrame::new(state, plan).execute_stream().await?;
        Ok(Output::Rows(match names {
            Some(names) => named_as_postgresql(stream, &names),
            None => stream,
        }))
    }

    /// Refuses server-file access `who` may not have before the statement is planned, as
    /// PostgreSQL checks privileges before anything about the file: what planning would say
    /// about a path (its format, its contents) is for those who may use it.
    fn authorize_files(&self, statement: &DfStatement, who: &Principal) -> Result<()> {
        match statement {
            DfStatement::CopyTo(copy) => {
                who.require_role(WRITE_SERVER_FILES, "write server files")?;
                self.db.files.check(&copy.target, FileUse::Write)
            }
            DfStatement::CreateExternalTable(cmd) => {
                who.require_role(READ_SERVER_FILES, "read server files")?;
                cmd.locations
                    .iter()
                    .try_for_each(|location| self.db.files.check(location, FileUse::Read))
            }
            _ => Ok(()),
        }
    }

    /// Refuses a planned statement that reads, writes or touches what `who` may not: every
    /// relation it scans needs SELECT, its insert target INSERT, and server files the
    /// predefined roles and a path outside the data directory.
    pub(super) fn authorize(
        &self,
        plan: &LogicalPlan,
        catalog: &CatalogData,
        who: &Principal,
    ) -> Result<()> {
        use datafusion::common::tree_node::TreeNodeRecursion;
        let mut denied = Ok(());
        plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node
                && matches!(scan.table_name.schema(), None | Some(PUBLIC_SCHEMA))
                && catalog.relation(scan.table_name.table()).is_some()
                && let Err(e) = catalog.check(who, Privilege::Select, scan.table_name.table())
            {
                denied = Err(e);
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        denied?;
        match plan {
            LogicalPlan::Dml(dml) if dml.table_name.schema() == Some(WRITE_SCHEMA) => {
                catalog.check(who, Privilege::Insert, dml.table_name.table())
            }
            LogicalPlan::Dml(dml) if matches!(dml.op, WriteOp::Update | WriteOp::Delete) => {
                let privilege = match dml.op {
                    WriteOp::Update => Privilege::Update,
                    _ => Privilege::Delete,
                };
                match catalog.relation(dml.table_name.table()) {
                    Some(_) => catalog.check(who, privilege, dml.table_name.table()),
                    None => Ok(()),
                }
            }
            LogicalPlan::Copy(copy) => {
                who.require_role(WRITE_SERVER_FILES, "write server files")?;
                self.db.files.check(&copy.output_url, FileUse::Write)
            }
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)) => {
                who.require_role(READ_SERVER_FILES, "read server files")?;
                for location in &cmd.locations {
                    self.db.files.check(location, FileUse::Read)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// `INSERT INTO stream VALUES` of plain literals, written without a query plan; `None`
    /// when the statement needs planning.
    async fn insert_literals(
        &self,
        name: &str,
        insert: &crate::ingest::values::LiteralInsert<'_>,
    ) -> Option<Result<Output>> {
        let data = self.db.tables.catalog.snapshot();
        let relation = data.relation(name)?;
        let target = WriteTarget::of(&data, &relation)?;
        if let Err(e) = data.check(&self.principal(), Privilege::Insert, name) {
            return Some(Err(e));
        }
        let types: Vec<SqlType> = match &relation {
            Relation::Stream(stream, _) => stream.columns.iter().map(|c| c.sql_type).collect(),
            _ => vec![SqlType::Bytea, SqlType::Bytea],
        };
        let rows = match crate::ingest::values::literal_rows(insert, &target, &types)? {
            Ok(rows) => rows,
            Err(e) => return Some(Err(e)),
        };
        let writer = &self.db.tables.writer;
        let mut pending = PendingWrite::default();
        let result = async {
            writer.stage(&target, &rows, &mut pending)?;
            let rows = writer.commit(pending).await?;
            Ok(Output::Command {
                tag: "INSERT",
                rows: Some(rows),
            })
        };
        Some(result.await)
    }

    /// `COMMIT`: commits the offsets subscription cursors have fetched up to, then ends the
    /// block (a failed block is rolled back instead).
    async fn declare(&mut self, d: Declare, params: Option<ParamValues>) -> Result<Output> {
        if self.cursors.contains_key(&d.name) {
            return Err(Error::plan(
                "42P03",
                format!("cursor \"{}\" already exists", d.name),
            ));
        }
        let cursor = match d.query {
            CursorQuery::Subscription(group) => {
                self.db
                    .subscription_cursor(&group, &self.principal())
                    .await?
            }
            CursorQuery::Statement(statement) => {
                let output = match *statement {
                    Statement::DataFusion(s) => self.run_datafusion(*s, params).await?,
                    Statement::Push(q) => {
                        let who = self.principal();
                        self.db
                            .push_query(q, &who, self.push_starts_earliest())
                            .await?
                    }
                    Statement::Subscribe(s) => self.db.subscribe(s, &self.principal()).await?,
                    other => {
                        return Err(Error::Internal(format!("a cursor over {other:?}")));
                    }
                };
                match output {
                    Output::Rows(stream) => Cursor::rows(stream),
                    Output::Push(rows) => Cursor::push(rows),
                    other => {
                        return Err(Error::Internal(format!("a cursor over {other:?}")));
                    }
                }
            }
        };
        self.cursors.insert(d.name, cursor);
        self.transaction = Transaction::Open;
        Ok(Output::Declared)
    }

    async fn fetch(&mut self, f: Fetch) -> Result<Output> {
        let cursor = self
            .cursors
            .get_mut(&f.cursor)
            .ok_or_else(|| no_cursor(&f.cursor))?;
        let rows = cursor.fetch(f.count, f.timeout).await?;
        Ok(Output::Fetched {
            schema: cursor.schema(),
            rows,
        })
    }

    /// The columns of the open cursor `name`, if there is one.
    pub fn cursor_schema(&self, name: &str) -> Option<SchemaRef> {
        self.cursors.get(name).map(Cursor::schema)
    }

    fn cursor(&self, name: &str) -> Result<&Cursor> {
        self.cursors.get(name).ok_or_else(|| no_cursor(name))
    }

    fn set(&mut self, name: String, value: Option<String>) -> Result<Output> {
        if name.starts_with("datafusion.") {
            let value = value.ok_or_else(|| {
                Error::Unsupported("RESET of datafusion settings is not supported".into())
            })?;
            self.state
                .config_mut()
                .options_mut()
                .set(&name, &value)
                .map_err(Error::from_datafusion)?;
            return Ok(command("SET"));
        }
        if name == "all" && value.is_none() {
            self.vars.clear();
            self.publish_settings();
            return Ok(command("RESET"));
        }
        // As in PostgreSQL: a setting must exist, unless it is a custom one (`app.name`).
        if !name.contains('.')
            && !DEFAULT_VARS.iter().any(|(known, _)| *known == name)
            && !ACCEPTED_SETTINGS.contains(&name.as_str())
        {
            return Err(Error::plan(
                "42704",
                format!("unrecognized configuration parameter \"{name}\""),
            ));
        }
        match (name.as_str(), value.as_deref()) {
            // PostgreSQL's other spelling of SET TRANSACTION ISOLATION LEVEL / READ ONLY.
            ("transaction_isolation", Some(v)) => {
                let isolation = Some(isolation_named(&name, v)?);
                return self.set_transaction(
                    TransactionModes {
                        isolation,
                        read_only: None,
                    },
                    false,
                );
            }
            ("transaction_read_only", Some(v)) => {
                let read_only = Some(bool_named(&name, v)?);
                return self.set_transaction(
                    TransactionModes {
                        isolation: None,
                        read_only,
                    },
                    false,
                );
            }
            (DEFAULT_ISOLATION, Some(v)) => {
                isolation_named(&name, v)?;
            }
            (DEFAULT_READ_ONLY, Some(v)) => {
                bool_named(&name, v)?;
            }
            ("role" | "session_authorization", Some(v))
                if v != "none" && Some(v) != self.user.as_deref() =>
            {
                return Err(Error::Unsupported(format!(
                    "SET {name} to another user is not supported: a session acts as the user \
                     who logged in"
                )));
            }
            _ => {}
        }
        if name == AUTO_OFFSET_RESET
            && let Some(v) = &value
            && v != "earliest"
            && v != "latest"
        {
            return Err(Error::plan(
                "22023",
                format!("invalid value for {AUTO_OFFSET_RESET}: \"{v}\" (earliest or latest)"),
            ));
        }
        if name == "timezone" {
            self.set_time_zone(value.as_deref())?;
        }
        let tag = match value {
            Some(v) => {
                self.vars.insert(name, v);
                "SET"
            }
            None => {
                self.vars.remove(&name);
                "RESET"
            }
        };
        self.publish_settings();
        Ok(command(tag))
    }

    /// Makes `zone` (`None`: UTC, the default) the zone DataFusion gives `now()` and
    /// `timestamp with time zone` values, and reads times without an offset in, as
    /// PostgreSQL's `TimeZone`; 22023 if it names no zone.
    fn set_time_zone(&mut self, zone: Option<&str>) -> Result<()> {
        let zone = match zone.map(str::trim) {
            None => "UTC",
            Some(z) if z.eq_ignore_ascii_case("default") || z.eq_ignore_ascii_case("local") => {
                "UTC"
            }
            Some(z) => z,
        };
        if zone.parse::<arrow::array::timezone::Tz>().is_err() {
            return Err(Error::data(
                "22023",
                format!("invalid value for parameter \"TimeZone\": \"{zone}\""),
            ));
        }
        self.state.config_mut().options_mut().execution.time_zone = Some(zone.to_string());
        // Functions whose answer depends on the zone (`now()`) are made again for it.
        let config = self.state.config_options().clone();
        let updated: Vec<_> = self
            .state
            .scalar_functions()
            .values()
            .filter_map(|udf| udf.inner().with_updated_config(&config))
            .collect();
        for udf in updated {
            datafusion::execution::FunctionRegistry::register_udf(&mut self.state, Arc::new(udf))
                .map_err(Error::from_datafusion)?;
        }
        Ok(())
    }

    /// Whether push queries start at the beginning of their input (`SET auto_offset_reset =
    /// 'earliest'`, Kafka's consumer setting) rather than its end.
    fn push_starts_earliest(&self) -> bool {
        self.vars.get(AUTO_OFFSET_RESET).map(String::as_str) == Some("earliest")
    }

    /// The value of setting `name` (`SHOW name`), if there is such a setting.
    pub fn variable(&self, name: &str) -> Option<String> {
        let name = match name {
            "transaction isolation level" => "transaction_isolation",
            other => other,
        };
        if let Some((_, value)) = self
            .transaction_settings()
            .into_iter()
            .find(|(setting, _)| *setting == name)
        {
            return Some(value.into());
        }
        if let Some(v) = self.vars.get(name) {
            return Some(v.clone());
        }
        if name.starts_with("datafusion.") {
            return self
                .state
                .config_options()
                .entries()
                .into_iter()
                .find(|e| e.key == name)
                .map(|e| e.value.unwrap_or_default());
        }
        DEFAULT_VARS
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    fn show(&self, name: &str) -> Result<Output> {
        if name == "all" {
            let rows = self
                .settings()
                .into_iter()
                .map(|(k, v)| vec![Some(k), Some(v)])
                .collect();
            return text_rows(&["name", "setting"], rows);
        }
        let value = self.variable(name).ok_or_else(|| {
            Error::plan(
                "42704",
                format!("unrecognized configuration parameter \"{name}\""),
            )
        })?;
        text_rows(&[name], vec![vec![Some(value)]])
    }
}

/// The isolation level a setting names (22023 if none).
fn isolation_named(setting: &str, value: &str) -> Result<Isolation> {
    Isolation::named(value).ok_or_else(|| invalid_value(setting, value))
}

/// The boolean a setting's value is (22023 if none).
fn bool_named(setting: &str, value: &str) -> Result<bool> {
    setting_bool(value).ok_or_else(|| invalid_value(setting, value))
}

fn invalid_value(setting: &str, value: &str) -> Error {
    Error::data(
        "22023",
        format!("invalid value for parameter \"{setting}\": \"{value}\""),
    )
}

/// Splits and parses `sql`. Queries of the system catalogs (what psql's `\d`, pgjdbc's
/// `DatabaseMetaData` and BI tools send) get PostgreSQL compatibility rewrites.
fn parse(sql: &str) -> Result<Vec<Statement>> {
    let statements = sql::parse(sql)?;
    let queries: Vec<&sqlparser::ast::Statement> = statements
        .iter()
        .filter_map(|s| match s {
            Statement::DataFusion(s) => match s.as_ref() {
                DfStatement::Statement(s)
                    if matches!(s.as_ref(), sqlparser::ast::Statement::Query(_)) =>
                {
                    Some(s.as_ref())
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    if queries.len() == statements.len()
        && queries
            .iter()
            .any(|q| crate::tables::pg::reads_system_catalogs(q))
        && let Some(rewritten) = crate::tables::pg::parse_catalog_queries(sql)
        && rewritten.len() == statements.len()
    {
        return Ok(rewritten
            .into_iter()
            .map(|s| Statement::DataFusion(Box::new(DfStatement::Statement(Box::new(s)))))
            .collect());
    }
    Ok(statements)
}

/// `COMMENT ON … IS ''` or `IS NULL` (pg_dump writes one for the schema `public`): Runnel
/// keeps no comments, so only removing one is done as asked; the object must exist.
fn comment_on(db: &Database, comment: &sqlparser::ast::Statement) -> Result<Output> {
    use sqlparser::ast::CommentObject;
    let sqlparser::ast::Statement::Comment {
        object_type,
        object_name,
        comment,
        ..
    } = comment
    else {
        return Err(Error::Syntax(format!("not a comment: {comment}")));
    };
    if comment.as_deref().is_some_and(|c| !c.is_empty()) {
        return Err(Error::Unsupported(
            "COMMENT ON with a comment: Runnel keeps no comments yet".into(),
        ));
    }
    let catalog = db.tables.catalog.snapshot();
    match object_type {
        CommentObject::Schema => {
            let name = object_name.to_string();
            if name.trim_matches('"') != crate::catalog::PUBLIC_SCHEMA {
                return Err(Error::plan(
                    "3F000",
                    format!("schema \"{name}\" does not exist"),
                ));
            }
        }
        CommentObject::Table | CommentObject::View | CommentObject::MaterializedView => {
            let name = sql::parser::relation_name(object_name)?;
            if catalog.relation(&name).is_none() {
                return Err(Error::UnknownRelation(format!(
                    "relation \"{name}\" does not exist"
                )));
            }
        }
        other => {
            return Err(Error::Unsupported(format!("COMMENT ON {other}")));
        }
    }
    Ok(command("COMMENT"))
}

/// `sql` with its parameters cast to the types `PREPARE` declared for them.
fn typed_sql(sql: &str, types: &[sqlparser::ast::DataType]) -> String {
    let names: Vec<String> = types.iter().map(ToString::to_string).collect();
    let declared: Vec<Option<&str>> = names.iter().map(|n| Some(n.as_str())).collect();
    sql::declared::with_declared_types(sql, &declared)
}

fn no_cursor(name: &str) -> Error {
    Error::plan("34000", format!("cursor \"{name}\" does not exist"))
}

/// The query over system tables a `SHOW` statement runs.
fn show_sql(statement: &Statement) -> Option<&'static str> {
    match statement {
        Statement::ShowQueries => Some(
            "SELECT name, kind, input, state, epoch, lag, rows_per_sec, last_checkpoint, error \
             FROM sys.queries ORDER BY id",
        ),
        Statement::ShowViews => Some(
            "SELECT target AS name, state, epoch, lag, last_checkpoint, sql AS definition \
             FROM sys.queries WHERE kind = 'view' ORDER BY target",
        ),
        _ => None,
    }
}

/// Runs a plan that returns one row with a `count` column (INSERT, COPY … TO).
async fn count(frame: DataFrame) -> Result<u64> {
    let mut stream = frame.execute_stream().await?;
    let mut total = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if batch.num_columns() > 0 && batch.num_rows() > 0 {
            total += batch
                .column(0)
                .as_primitive::<UInt64Type>()
                .values()
                .iter()
                .sum::<u64>();
        }
    }
    Ok(total)
}

/// The `set_config(name, value, is_local)` calls of `statement`, each replaced by the value
/// it returns, and the settings they make, for the session to apply before the statement
/// runs (as `SET name = value`; `is_local` is taken as the session's, there being no
/// transaction-scoped settings). Their arguments must be constants (0A000 otherwise): the
/// settings are made once, not per row.
fn set_configs(statement: &mut DfStatement) -> Result<Vec<(String, String)>> {
    use sqlparser::ast::{Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArguments, Value};
    let DfStatement::Statement(statement) = statement else {
        return Ok(vec![]);
    };
    let mut made = vec![];
    let mut refused = None;
    let _ = sqlparser::ast::visit_expressions_mut(statement.as_mut(), |e| {
        let SqlExpr::Function(f) = e else {
            return std::ops::ControlFlow::<()>::Continue(());
        };
        if !f.name.to_string().eq_ignore_ascii_case("set_config") {
            return std::ops::ControlFlow::Continue(());
        }
        let constant = |arg: &FunctionArg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Value(v))) => match &v.value {
                Value::SingleQuotedString(s) => Some(s.clone()),
                Value::Boolean(b) => Some(b.to_string()),
                _ => None,
            },
            _ => None,
        };
        let args: Option<Vec<String>> = match &f.args {
            FunctionArguments::List(list) if list.args.len() == 3 => {
                list.args.iter().map(constant).collect()
            }
            _ => None,
        };
        match args {
            Some(args) => {
                let value = args[1].clone();
                made.push((args[0].to_ascii_lowercase(), value.clone()));
                *e = SqlExpr::value(Value::SingleQuotedString(value));
            }
            None => {
                refused = Some(Error::Unsupported(
                    "set_config takes a constant name, value and is_local; use SET".into(),
                ));
            }
        }
        std::ops::ControlFlow::Continue(())
    });
    match refused {
        Some(e) => Err(e),
        None => Ok(made),
    }
}

fn parameter_types(plan: &LogicalPlan) -> Result<Vec<Option<FieldRef>>> {
    let types = plan.get_parameter_types().map_err(Error::from_datafusion)?;
    let casts = cast_parameter_types(plan);
    let mut numbered = vec![];
    for (name, t) in types {
        // A parameter DataFusion leaves untyped takes the type it is cast to (`$1::int2`),
        // as PostgreSQL infers it; one cast to a type kept as marked text is of that type.
        let t = match (t, casts.get(&name)) {
            (_, Some(cast)) if crate::sql::text_type::TextType::of(cast).is_some() => {
                Some(cast.clone())
            }
            (Some(t), _) => Some(Arc::new(arrow::datatypes::Field::new("", t, true))),
            (None, cast) => cast.cloned(),
        };
        let index: usize = name
            .trim_start_matches('$')
            .parse()
            .map_err(|_| Error::Unsupported(format!("named parameter {name}; use $1, $2, …")))?;
        if index == 0 {
            return Err(Error::Syntax("parameters are numbered from $1".into()));
        }
        numbered.push((index, t));
    }
    // A parameter the plan does not use (a rewrite took out its expression) has no type.
    let mut out = vec![None; numbered.iter().map(|(i, _)| *i).max().unwrap_or(0)];
    for (index, t) in numbered {
        out[index - 1] = t;
    }
    Ok(out)
}

/// The types parameters are cast to where they appear (`$1::int2`, `CAST($2 AS bytea)`):
/// the first cast of each.
fn cast_parameter_types(plan: &LogicalPlan) -> std::collections::HashMap<String, FieldRef> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::{Cast, Expr, TryCast};
    let mut found = std::collections::HashMap::new();
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) = e
                    && let Expr::Placeholder(p) = expr.as_ref()
                {
                    found.entry(p.id.clone()).or_insert_with(|| field.clone());
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

/// The query a statement runs, if it is one (a plain `SELECT`, `VALUES`, …).
fn query_of(statement: &mut DfStatement) -> Option<&mut sqlparser::ast::Query> {
    match statement {
        DfStatement::Statement(s) => match s.as_mut() {
            sqlparser::ast::Statement::Query(query) => Some(query),
            _ => None,
        },
        _ => None,
    }
}

/// `schema` with its columns named as PostgreSQL names them (`names`).
fn postgresql_schema(schema: &SchemaRef, names: &sql::column_names::ColumnNames) -> SchemaRef {
    let Some(names) = names.renames(schema.fields().len()) else {
        return schema.clone();
    };
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .zip(names)
        .map(|(field, name)| match name {
            Some(name) => Arc::new(field.as_ref().clone().with_name(name)),
            None => field.clone(),
        })
        .collect();
    Arc::new(arrow::datatypes::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

/// A query's rows with its columns named as PostgreSQL names them (the rows are the same;
/// only the names the client sees change).
fn named_as_postgresql(
    stream: SendableRecordBatchStream,
    names: &sql::column_names::ColumnNames,
) -> SendableRecordBatchStream {
    let schema = postgresql_schema(&stream.schema(), names);
    if Arc::ptr_eq(&schema, &stream.schema()) {
        return stream;
    }
    let named = schema.clone();
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        stream.map(move |batch| {
            batch.and_then(|batch| {
                RecordBatch::try_new(named.clone(), batch.columns().to_vec())
                    .map_err(|e| datafusion::error::DataFusionError::ArrowError(Box::new(e), None))
            })
        }),
    ))
}
