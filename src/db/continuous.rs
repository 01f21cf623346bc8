//! DDL of continuous queries: `CREATE STREAM … AS SELECT`, `CREATE MATERIALIZED VIEW`,
//! `INSERT … SELECT … EMIT CHANGES`, and `FLUSH`.
//!
//! Creating one plans its `SELECT` (refusing what cannot run incrementally), creates the
//! topics it writes (its output stream's, and an internal one for its state), commits its
//! starting checkpoint, then commits the catalog, and starts it. A crash before the catalog
//! commit leaves an unnamed topic and checkpoint, which start-up removes.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use arrow::compute::can_cast_types;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use tokio::sync::broadcast;

use super::ddl::{TopicOptions, kind_name};
use super::{Database, Output, command};
use crate::catalog::{Access, CleanupPolicy, HIDDEN_COLUMNS, Principal, Privilege};
use crate::catalog::{
    CatalogData, ColumnDef, Dialect, Emit, Inherited, InternalTopic, QueryDef, QueryId,
    QueryTarget, Relation, SqlType, StartPosition, StreamDef, TopicDef, ValueFormat, WatermarkDef,
    validate_name,
};
use crate::engine::plan::{Kind, QueryPlan};
use crate::engine::state::changelog_fields;
use crate::engine::{PushQuery, ViewSubscription};
use crate::error::{Error, Result};
use crate::sql;
use crate::sql::parser::{CreateStream, CreateView, InsertContinuous, OptionValue};
use crate::storage::now_ms;
use crate::storage::{Compression, TopicId};

/// Segment size of an aggregation's state changelog: small, so that segments a snapshot
/// has made redundant are soon sealed and deleted.
const CHANGELOG_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Refuses `who` a query reading what they may not `SELECT`: its input, and what it looks up.
fn check_reads(data: &CatalogData, who: &Principal, plan: &QueryPlan) -> Result<()> {
    plan.reads()
        .iter()
        .try_for_each(|read| data.check(who, Privilege::Select, read))
}

/// A query joining streams keeps every row of its inputs that can still match: nothing
/// bounds how late a match may come. Said when it is created.
fn note_join_state(plan: &QueryPlan, notices: &mut Vec<String>) {
    for streams in plan.unbounded_joins() {
        notices.push(format!(
            "the rows a join keeps of {streams} are not bounded: every row that passes the \
             join's filters stays in memory, for matches yet to come (a condition that bounds \
             the other stream's watermark column by a time column of these rows bounds \
             them, as b.date_time BETWEEN a.date_time AND a.expires does both sides; \
             sys.queries.state_bytes shows how much is kept)"
        ));
    }
}

/// `EMIT ON WINDOW CLOSE` needs windows that close: an aggregate grouped by the window of
/// a `TUMBLE` or `HOP` over the column of its stream's watermark.
fn check_emit(plan: &QueryPlan, emit: Emit) -> Result<()> {
    if plan.over_groups() {
        if emit != Emit::Changes {
            return Err(Error::Unsupported(
                "an aggregate over an aggregate whose groups never close cannot emit on \
                 window close: no window closes; leave out EMIT ON WINDOW CLOSE"
                    .into(),
            ));
        }
        return Ok(());
    }
    if let (Kind::Aggregate { inner, .. }, Emit::Changes) = (&plan.kind, emit)
        && !inner.is_empty()
    {
        return Err(Error::Unsupported(
            "an aggregate over an aggregate needs EMIT ON WINDOW CLOSE: the inner aggregate's \
             rows are final, and can feed the outer one, only once their windows close"
                .into(),
        ));
    }
    if let (Kind::Combine { .. }, Emit::Changes) = (&plan.kind, emit) {
        return Err(Error::Unsupported(
            "a join or union of windowed aggregates needs EMIT ON WINDOW CLOSE: each side's \
             rows are final, and can be joined without keeping them, once their windows close"
                .into(),
        ));
    }
    if plan.session.is_some() && emit == Emit::Changes {
        return Err(Error::Unsupported(
            "SESSION windows in continuous queries need EMIT ON WINDOW CLOSE: a session's \
             bounds move as rows arrive and sessions merge, so its row is final only when \
             the watermark passes its end"
                .into(),
        ));
    }
    if emit == Emit::Changes || plan.event_time_state() {
        return Ok(());
    }
    let why = if plan.event_time.is_none() {
        format!(
            "\"{}\" has no watermark (declare one: WATERMARK FOR column AS column - INTERVAL '…')",
            plan.input_name
        )
    } else if matches!(plan.kind, Kind::Stateless) {
        "the query has no windows to close: it must aggregate by window_start or window_end of TUMBLE or HOP".to_string()
    } else {
        "its GROUP BY must include window_start or window_end of a TUMBLE or HOP over the column of the stream's watermark, or that column itself".to_string()
    };
    Err(Error::Unsupported(format!(
        "EMIT ON WINDOW CLOSE needs windows that close: {why}"
    )))
}

/// Refuses what `target`, a stream of a grouped query's changes (each epoch's changed
/// groups, one record each, keyed by the group), cannot say: a group that stops matching
/// `HAVING`, whose earlier record would need retracting, or a group of several rows (a
/// Top-N of more than one row, whose ranks move as better rows arrive).
fn check_changes(plan: &QueryPlan, emit: Emit, target: &str) -> Result<()> {
    if plan.over_groups() {
        return Err(Error::Unsupported(format!(
            "{target} of an aggregate over an aggregate is not supported yet: its groups \
             change and go as the inner groups change, which appended records cannot take \
             back; use a materialized view"
        )));
    }
    if plan.over_table() {
        return Err(Error::Unsupported(format!(
            "{target} over table \"{}\" is not supported yet: its groups change and go as \
             the table's rows are updated and deleted, which appended records cannot take \
             back; use a materialized view (CREATE MATERIALIZED VIEW … AS SELECT … FROM {})",
            plan.input_name, plan.input_name
        )));
    }
    let Kind::Aggregate {
        filtered, expanded, ..
    } = &plan.kind
    else {
        return Ok(());
    };
    if emit != Emit::Changes {
        return Ok(());
    }
    if *filtered {
        return Err(Error::Unsupported(format!(
            "{target} cannot filter aggregated values (HAVING): a group that stops matching \
             would need its earlier record retracted; use a materialized view"
        )));
    }
    if *expanded {
        return Err(Error::Unsupported(format!(
            "{target} cannot hold several rows per group (unnest, or a Top-N of more than one \
             row per partition): its records are upserts keyed by the group, and a group's \
             rows move as new rows arrive; use a materialized view"
        )));
    }
    Ok(())
}

/// A derived stream that emits windows on close carries its query's watermark, on the
/// output column of the group that decides when a window closes (`window_end`, or
/// `window_start`, or the input's watermark column): further queries can close windows
/// over it.
fn inherited_watermark(
    plan: &QueryPlan,
    emit: Emit,
    columns: &[ColumnDef],
    id: QueryId,
) -> Option<WatermarkDef> {
    let (Emit::OnWindowClose, Some(expiry), Kind::Aggregate { group_outputs, .. }) =
        (emit, &plan.expiry, &plan.kind)
    else {
        return None;
    };
    let column = &columns[(*group_outputs.get(expiry.column)?)?].name;
    Some(WatermarkDef {
        column: column.clone(),
        expression: column.clone(),
        idle_timeout_ms: None,
        inherited: Some(Inherited {
            query: id,
            shift_micros: 1 - expiry.plus,
        }),
    })
}

/// 42701 if two of the columns a view's or a derived stream's query gives would share a
/// name, as PostgreSQL refuses such a view (a query may return them; see
/// [`sql::column_names::repeated_output_name`]).
fn refuse_repeated_columns(query: &str) -> Result<()> {
    let Some(sql::Statement::DataFusion(statement)) = sql::parse(query)?.pop() else {
        return Ok(());
    };
    if let datafusion::sql::parser::Statement::Statement(statement) = statement.as_ref()
        && let sqlparser::ast::Statement::Query(query) = statement.as_ref()
        && let Some(name) = sql::column_names::repeated_output_name(query)
    {
        return Err(Error::plan(
            "42701",
            format!("column \"{name}\" specified more than once; give one of them an alias"),
        ));
    }
    Ok(())
}

impl Database {
    pub(super) async fn create_stream_as(
        &self,
        c: CreateStream,
        query: String,
        who: &Principal,
        notices: &mut Vec<String>,
    ) -> Result<Output> {
        validate_name("stream", &c.name)?;
        if !c.columns.is_empty() || c.watermark.is_some() {
            return Err(Error::plan(
                "42601",
                "CREATE STREAM … AS SELECT takes its columns from the query; leave out the column list",
            ));
        }
        let mut options = TopicOptions::parse(&c.options, &["timestamp", "topic", "start"])?;
        let start = start_position(options.take("start"))?;
        let topic_name = match options.take("topic") {
            Some(v) => v.as_text().to_string(),
            None => c.name.clone(),
        };
        validate_name("topic", &topic_name)?;

        let _ddl = self.tables.catalog.ddl_lock().await;
        let data = self.tables.catalog.snapshot();
        data.check_create(who)?;
        if let Some(done) = taken(&data, &c.name, c.if_not_exists, notices, "CREATE STREAM")? {
            return Ok(done);
        }
        if data.topics.contains_key(&topic_name) {
            return Err(Error::AlreadyExists(format!(
                "topic \"{topic_name}\" already exists"
            )));
        }
        refuse_repeated_columns(&query)?;
        let plan = self.engine.plan(&query, &data).await?;
        check_reads(&data, who, &plan)?;
        check_emit(&plan, c.emit)?;
        note_join_state(&plan, notices);
        let columns = stream_columns(&plan)?;
        let key_columns = match &plan.kind {
            Kind::Stateless | Kind::Combine { .. } => vec![],
            Kind::Aggregate { group_outputs, .. } => {
                check_changes(&plan, c.emit, "a derived stream")?;
                group_outputs
                    .iter()
                    .map(|o| o.map(|i| columns[i].name.clone()))
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| {
                        Error::Unsupported(
                            "a grouped derived stream must select every GROUP BY column as it is: they are the key of its upsert records"
                                .into(),
                        )
                    })?
            }
        };
        let timestamp_column = match options.take("timestamp") {
            None => None,
            Some(v) => {
                let name = v.as_text().to_string();
                let column = columns.iter().find(|c| c.name == name).ok_or_else(|| {
                    Error::plan(
                        "42703",
                        format!("timestamp column \"{name}\" is not a column of the query"),
                    )
                })?;
                if !matches!(
                    column.sql_type,
                    SqlType::Timestamp | SqlType::TimestampTz | SqlType::Date | SqlType::BigInt
                ) {
                    return Err(Error::plan(
                        "42804",
                        format!(
                            "timestamp column \"{name}\" is {}; it must be a timestamp, date or bigint (ms since the epoch)",
                            column.sql_type
                        ),
                    ));
                }
                Some(name)
            }
        };

        let columns_of_stream = columns;
        let mut new = (*data).clone();
        let id = QueryId(new.next_query_id);
        new.next_query_id += 1;
        let topic = options.topic_def(
            TopicId(new.next_topic_id),
            &topic_name,
            Some(c.name.clone()),
            &who.name,
        );
        new.next_topic_id += 1;
        new.topics.insert(topic_name.clone(), topic.clone());
        new.streams.insert(
            c.name.clone(),
            StreamDef {
                name: c.name.clone(),
                kind: crate::catalog::StreamKind::Stream,
                topic: topic_name,
                columns: columns_of_stream.clone(),
                key_columns,
                value_format: ValueFormat::Json,
                timestamp_column,
                watermark: inherited_watermark(&plan, c.emit, &columns_of_stream, id),
                late_data_topic: None,
                access: Access::owned_by(&who.name),
            },
        );
        let state_topic = match &plan.kind {
            Kind::Aggregate {
                state_schema, sets, ..
            } => Some(state_topic_def(
                &mut new,
                "state",
                &c.name,
                id,
                changelog_fields(state_schema, sets),
                CHANGELOG_SEGMENT_BYTES,
            )?),
            Kind::Stateless | Kind::Combine { .. } => None,
        };
        let inner_topics = inner_state_topics(&mut new, &c.name, id, &plan)?;
        let def = QueryDef {
            id,
            name: c.name.clone(),
            target: QueryTarget::Stream { stream: c.name },
            sql: query,
            inputs: plan.reads(),
            start,
            state_topic: state_topic.as_ref().map(|t| t.name.clone()),
            closed_topic: None,
            inner_state_topics: inner_topics.iter().map(|t| t.name.clone()).collect(),
            created_at_ms: now_ms(),
            owner: who.name.clone(),
            emit: c.emit,
            dialect: Dialect::CURRENT,
        };
        let topics: Vec<TopicDef> = [Some(topic), state_topic]
            .into_iter()
            .flatten()
            .chain(inner_topics)
            .collect();
        self.create_query(new, def, &plan, topics).await?;
        Ok(command("CREATE STREAM"))
    }

    pub(super) async fn create_view(
        &self,
        v: CreateView,
        who: &Principal,
        notices: &mut Vec<String>,
    ) -> Result<Output> {
        validate_name("materialized view", &v.name)?;
        let mut start = StartPosition::default();
        for (key, value) in &v.options {
            match key.as_str() {
                "start" => start = start_position(Some(value.clone()))?,
                other => {
                    return Err(Error::data(
                        "22023",
                        format!(
                            "unknown option \"{other}\" for a materialized view (known: start)"
                        ),
                    ));
                }
            }
        }
        let _ddl = self.tables.catalog.ddl_lock().await;
        let data = self.tables.catalog.snapshot();
        data.check_create(who)?;
        if let Some(done) = taken(
            &data,
            &v.name,
            v.if_not_exists,
            notices,
            "CREATE MATERIALIZED VIEW",
        )? {
            return Ok(done);
        }
        refuse_repeated_columns(&v.query)?;
        let plan = self.engine.plan(&v.query, &data).await?;
        check_reads(&data, who, &plan)?;
        check_emit(&plan, v.emit)?;
        note_join_state(&plan, notices);
        let mut seen = BTreeSet::new();
        for field in plan.schema.fields() {
            if !seen.insert(field.name()) {
                return Err(Error::plan(
                    "42701",
                    format!(
                        "column \"{}\" appears twice in the view; give one an alias",
                        field.name()
                    ),
                ));
            }
        }
        let mut new = (*data).clone();
        let id = QueryId(new.next_query_id);
        new.next_query_id += 1;
        let (state_fields, segment_bytes) = match &plan.kind {
            Kind::Aggregate {
                state_schema, sets, ..
            } => (
                changelog_fields(state_schema, sets),
                CHANGELOG_SEGMENT_BYTES,
            ),
            Kind::Stateless | Kind::Combine { .. } => {
                (plan.schema.fields().clone(), super::DEFAULT_SEGMENT_BYTES)
            }
        };
        let state_topic =
            state_topic_def(&mut new, "state", &v.name, id, state_fields, segment_bytes)?;
        // Closed windows' rows move out of the aggregation's state into a topic of their
        // own (a join of closed windows has only such rows: they are its state topic's).
        let aggregate = matches!(plan.kind, Kind::Aggregate { .. });
        let closed_topic = match aggregate && plan.event_time_state() {
            true => Some(state_topic_def(
                &mut new,
                "closed",
                &v.name,
                id,
                plan.schema.fields().clone(),
                super::DEFAULT_SEGMENT_BYTES,
            )?),
            false => None,
        };
        let inner_topics = inner_state_topics(&mut new, &v.name, id, &plan)?;
        new.views.insert(
            v.name.clone(),
            crate::catalog::ViewDef {
                name: v.name.clone(),
                query: id,
                columns: plan.schema.fields().clone(),
                access: Access::owned_by(&who.name),
            },
        );
        let def = QueryDef {
            id,
            name: v.name.clone(),
            target: QueryTarget::View { view: v.name },
            sql: v.query,
            inputs: plan.reads(),
            start,
            state_topic: Some(state_topic.name.clone()),
            closed_topic: closed_topic.as_ref().map(|t| t.name.clone()),
            inner_state_topics: inner_topics.iter().map(|t| t.name.clone()).collect(),
            created_at_ms: now_ms(),
            owner: who.name.clone(),
            emit: v.emit,
            dialect: Dialect::CURRENT,
        };
        let topics = [Some(state_topic), closed_topic]
            .into_iter()
            .flatten()
            .chain(inner_topics)
            .collect();
        self.create_query(new, def, &plan, topics).await?;
        Ok(command("CREATE MATERIALIZED VIEW"))
    }

    pub(super) async fn insert_continuous(
        &self,
        i: InsertContinuous,
        who: &Principal,
    ) -> Result<Output> {
        let _ddl = self.tables.catalog.ddl_lock().await;
        let data = self.tables.catalog.snapshot();
        data.check(who, Privilege::Insert, &i.target)?;
        let relation = data.relation(&i.target).ok_or_else(|| {
            Error::UnknownRelation(format!("relation \"{}\" does not exist", i.target))
        })?;
        let target_fields: Fields = match &relation {
            Relation::Stream(stream, _) if stream.is_table() => {
                return Err(Error::Unsupported(format!(
                    "\"{}\" is a table; a continuous INSERT appends to a stream (continuous upserts into tables are not supported yet)",
                    i.target
                )));
            }
            Relation::Stream(stream, _) => stream.value_fields(),
            Relation::Topic(topic) => {
                crate::ingest::WriteTarget::of(&data, &Relation::Topic(topic))
                    .expect("topics are writable")
                    .row_schema
                    .fields()
                    .clone()
            }
            Relation::View(_) => {
                return Err(Error::plan(
                    "42809",
                    format!(
                        "cannot insert into materialized view \"{}\": its query maintains it",
                        i.target
                    ),
                ));
            }
            Relation::External(_) => {
                return Err(Error::Unsupported(format!(
                    "cannot insert into \"{}\": external tables are read-only",
                    i.target
                )));
            }
        };
        let plan = self.engine.plan(&i.query, &data).await?;
        check_reads(&data, who, &plan)?;
        check_emit(&plan, i.emit)?;
        check_changes(&plan, i.emit, "a persistent INSERT")?;
        // Which target column each query column goes to, as PostgreSQL's INSERT does it.
        let produced = plan.schema.fields();
        let targets: Vec<usize> = if i.columns.is_empty() {
            (0..produced.len()).collect()
        } else {
            let mut seen = BTreeSet::new();
            i.columns
                .iter()
                .map(|c| {
                    if !seen.insert(c) {
                        return Err(Error::plan(
                            "42701",
                            format!("column \"{c}\" specified more than once"),
                        ));
                    }
                    target_fields
                        .iter()
                        .position(|f| f.name() == c)
                        .ok_or_else(|| {
                            Error::plan(
                                "42703",
                                format!(
                                    "column \"{c}\" of relation \"{}\" does not exist",
                                    i.target
                                ),
                            )
                        })
                })
                .collect::<Result<_>>()?
        };
        let listed = if i.columns.is_empty() {
            target_fields.len()
        } else {
            targets.len()
        };
        if produced.len() > listed {
            return Err(Error::plan(
                "42601",
                "INSERT has more expressions than target columns",
            ));
        }
        if produced.len() < targets.len() {
            return Err(Error::plan(
                "42601",
                "INSERT has more target columns than expressions",
            ));
        }
        for (field, at) in produced.iter().zip(&targets) {
            let target = &target_fields[*at];
            if !can_cast_types(field.data_type(), target.data_type()) {
                return Err(Error::plan(
                    "42804",
                    format!(
                        "column \"{}\" is of type {} but expression \"{}\" is of type {}",
                        target.name(),
                        target.data_type(),
                        field.name(),
                        field.data_type()
                    ),
                ));
            }
        }
        for (at, target) in target_fields.iter().enumerate() {
            if !target.is_nullable() && !targets.contains(&at) {
                return Err(Error::plan(
                    "23502",
                    format!(
                        "null value in column \"{}\" of relation \"{}\": the query does not provide it",
                        target.name(),
                        i.target
                    ),
                ));
            }
        }
        if let Some(input) = plan.input_names().find(|n| feeds(&data, &i.target, n)) {
            return Err(Error::Unsupported(format!(
                "INSERT INTO {} … EMIT CHANGES would read its own output (through \"{input}\")",
                i.target
            )));
        }
        let mut new = (*data).clone();
        let id = QueryId(new.next_query_id);
        new.next_query_id += 1;
        let name = format!("insert_into_{}_{}", i.target, id);
        let state_topic = match &plan.kind {
            Kind::Aggregate {
                state_schema, sets, ..
            } => Some(state_topic_def(
                &mut new,
                "state",
                &name,
                id,
                changelog_fields(state_schema, sets),
                CHANGELOG_SEGMENT_BYTES,
            )?),
            Kind::Stateless | Kind::Combine { .. } => None,
        };
        let inner_topics = inner_state_topics(&mut new, &name, id, &plan)?;
        let columns = if i.columns.is_empty() {
            target_fields
                .iter()
                .take(produced.len())
                .map(|f| f.name().clone())
                .collect()
        } else {
            i.columns
        };
        let def = QueryDef {
            id,
            name,
            target: QueryTarget::Insert {
                stream: i.target,
                columns,
            },
            sql: i.query,
            inputs: plan.reads(),
            start: StartPosition::default(),
            state_topic: state_topic.as_ref().map(|t| t.name.clone()),
            closed_topic: None,
            inner_state_topics: inner_topics.iter().map(|t| t.name.clone()).collect(),
            created_at_ms: now_ms(),
            owner: who.name.clone(),
            emit: i.emit,
            dialect: Dialect::CURRENT,
        };
        let topics = state_topic.into_iter().chain(inner_topics).collect();
        self.create_query(new, def, &plan, topics).await?;
        Ok(command("CREATE QUERY"))
    }

    /// Creates `topics`, commits the catalog `new` that names them with the query's first
    /// checkpoint (one commit record), and starts the query. Undoes the topics if the commit
    /// fails.
    async fn create_query(
        &self,
        mut new: CatalogData,
        def: QueryDef,
        plan: &QueryPlan,
        topics: Vec<TopicDef>,
    ) -> Result<()> {
        new.queries.insert(def.id, def.clone());
        let undo = |created: Vec<TopicId>| async move {
            for id in created {
                if let Err(e) = self.tables.log.drop_topic(id).await {
                    tracing::error!(error = %e, "removing the files of a topic whose creation failed");
                }
            }
        };
        let mut created = vec![];
        for topic in &topics {
            if let Err(e) = self.tables.log.create_topic(new.topic_spec(topic)).await {
                undo(created).await;
                return Err(e.into());
            }
            created.push(topic.id);
        }
        let checkpoint = self.engine.initial_checkpoint(def.id, plan, def.start);
        if let Err(e) = self.tables.catalog.commit(new, vec![checkpoint]).await {
            undo(created).await;
            return Err(e);
        }
        self.engine.start(def).await;
        Ok(())
    }

    pub(super) async fn flush(&self) -> Result<Output> {
        self.engine.flush().await?;
        Ok(command("FLUSH"))
    }
}

/// `None` if `name` is free; a notice and the command's tag with `IF NOT EXISTS`.
fn taken(
    data: &CatalogData,
    name: &str,
    if_not_exists: bool,
    notices: &mut Vec<String>,
    tag: &'static str,
) -> Result<Option<Output>> {
    let Some(existing) = data.relation(name) else {
        return Ok(None);
    };
    let message = format!("{} \"{name}\" already exists", kind_name(&existing));
    if if_not_exists {
        notices.push(format!("{message}, skipping"));
        return Ok(Some(command(tag)));
    }
    Err(Error::AlreadyExists(message))
}

fn start_position(value: Option<OptionValue>) -> Result<StartPosition> {
    match value
        .as_ref()
        .map(|v| v.as_text().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("earliest") => Ok(StartPosition::Earliest),
        Some("latest") => Ok(StartPosition::Latest),
        Some(other) => Err(Error::data(
            "22023",
            format!("invalid start \"{other}\" (earliest, latest)"),
        )),
    }
}

/// The columns of a derived stream, from its query's output.
fn stream_columns(plan: &QueryPlan) -> Result<Vec<ColumnDef>> {
    let mut columns: Vec<ColumnDef> = vec![];
    for field in plan.schema.fields() {
        let name = field.name();
        if HIDDEN_COLUMNS.contains(&name.as_str()) {
            return Err(Error::plan(
                "42701",
                format!(
                    "column name \"{name}\" conflicts with a system column name; give it an alias"
                ),
            ));
        }
        if columns.iter().any(|c| &c.name == name) {
            return Err(Error::plan(
                "42701",
                format!("column \"{name}\" appears twice in the query; give one an alias"),
            ));
        }
        let sql_type = SqlType::from_field(field).ok_or_else(|| {
            Error::Unsupported(format!(
                "column \"{name}\" is of type {}, which a stream cannot store; cast it, or use a materialized view",
                field.data_type()
            ))
        })?;
        // As PostgreSQL's CREATE TABLE AS: no NOT NULL from a query's inferred nullability.
        columns.push(ColumnDef {
            name: name.clone(),
            sql_type,
            nullable: true,
        });
    }
    Ok(columns)
}

/// Adds the internal topic a query keeps its state in to `new`.
/// An internal topic of query `id` (of `owner`), holding its `what`.
fn state_topic_def(
    new: &mut CatalogData,
    what: &str,
    owner: &str,
    id: QueryId,
    columns: Fields,
    segment_bytes: u64,
) -> Result<TopicDef> {
    let name = format!("__{what}_{owner}_{id}");
    if new.topics.contains_key(&name) {
        return Err(Error::AlreadyExists(format!(
            "topic \"{name}\" already exists"
        )));
    }
    let topic = TopicDef {
        id: TopicId(new.next_topic_id),
        name: name.clone(),
        partitions: 1,
        compression: Compression::Lz4,
        retention_ms: None,
        retention_bytes: None,
        segment_bytes,
        cleanup_policy: CleanupPolicy::Delete,
        delete_retention_ms: None,
        stream: None,
        created_at_ms: now_ms(),
        internal: Some(InternalTopic { query: id, columns }),
        access: Access::default(),
    };
    new.next_topic_id += 1;
    new.topics.insert(name, topic.clone());
    Ok(topic)
}

/// Adds to `new` the changelogs of the inner stages of a chain of aggregates, innermost
/// first, or of every stage of a join of aggregates.
fn inner_state_topics(
    new: &mut CatalogData,
    owner: &str,
    id: QueryId,
    plan: &QueryPlan,
) -> Result<Vec<TopicDef>> {
    let stages = match &plan.kind {
        Kind::Aggregate { inner, .. } => inner,
        Kind::Combine { stages } => stages,
        Kind::Stateless => return Ok(vec![]),
    };
    stages
        .iter()
        .enumerate()
        .map(|(k, stage)| {
            state_topic_def(
                new,
                &format!("stage{k}"),
                owner,
                id,
                stage.changelog_fields(),
                CHANGELOG_SEGMENT_BYTES,
            )
        })
        .collect()
}

/// Whether records appended to `from` reach `to` through continuous queries (or `from`
/// is `to`).
fn feeds(data: &CatalogData, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut frontier = vec![from.to_string()];
    while let Some(next) = frontier.pop() {
        if next == to {
            return true;
        }
        if !seen.insert(next.clone()) {
            continue;
        }
        for query in data.readers_of(&next) {
            if let Some(out) = query.output_stream() {
                frontier.push(out.to_string());
            }
        }
    }
    false
}

/// The rows of a push query (`SELECT … EMIT CHANGES`) or subscription, epoch by epoch.
pub struct PushRows {
    source: PushSource,
    /// Rows still to return, if the query has a `LIMIT`.
    remaining: Option<u64>,
    /// Sent as `COPY … TO STDOUT` data rather than as rows.
    pub copy: bool,
}

enum PushSource {
    Query(Box<PushQuery>),
    /// A view without aggregation: its query's rows, each with `_diff = 1`.
    Appended {
        query: Box<PushQuery>,
        schema: SchemaRef,
    },
    /// A view's rows, then its changes, with `_diff` first.
    View {
        name: String,
        schema: SchemaRef,
        subscription: ViewSubscription,
        snapshot_sent: bool,
    },
}

impl PushRows {
    pub fn schema(&self) -> SchemaRef {
        match &self.source {
            PushSource::Query(q) => q.schema(),
            PushSource::View { schema, .. } | PushSource::Appended { schema, .. } => schema.clone(),
        }
    }

    /// The next epoch's rows (waiting for them as long as it takes); `None` once the
    /// `LIMIT` is reached.
    pub async fn next(&mut self) -> Result<Option<Vec<RecordBatch>>> {
        if self.remaining == Some(0) {
            return Ok(None);
        }
        let mut rows = match &mut self.source {
            PushSource::Query(q) => q.next().await?,
            PushSource::Appended { query, schema } => {
                let rows = query.next().await?;
                if rows.is_empty() {
                    return Ok(None); // the server is shutting down
                }
                with_diff(schema, &rows, 1)?
            }
            PushSource::View {
                name,
                schema,
                subscription,
                snapshot_sent,
            } => {
                if !*snapshot_sent {
                    *snapshot_sent = true;
                    let snapshot = std::mem::take(&mut subscription.snapshot);
                    with_diff(schema, &snapshot, 1)?
                } else {
                    loop {
                        let change = match subscription.changes.recv().await {
                            Ok(change) => change,
                            Err(broadcast::error::RecvError::Closed) => return Ok(None),
                            Err(broadcast::error::RecvError::Lagged(_)) => {
                                return Err(Error::plan(
                                    "53400",
                                    format!(
                                        "this subscription fell more than {} epochs behind view \"{name}\" and was ended (--subscriber-max-lag-epochs); subscribe again",
                                        subscription.max_lag_epochs
                                    ),
                                ));
                            }
                        };
                        if change.epoch <= subscription.epoch {
                            continue; // already in the snapshot
                        }
                        let mut rows = with_diff(schema, &change.removed, -1)?;
                        rows.extend(with_diff(schema, &change.added, 1)?);
                        if !rows.is_empty() {
                            break rows;
                        }
                    }
                }
            }
        };
        if rows.is_empty() && matches!(self.source, PushSource::Query(_)) {
            return Ok(None); // the server is shutting down
        }
        if let Some(remaining) = &mut self.remaining {
            let mut kept = vec![];
            for batch in rows {
                if *remaining == 0 {
                    break;
                }
                let n = (batch.num_rows() as u64).min(*remaining);
                kept.push(batch.slice(0, n as usize));
                *remaining -= n;
            }
            rows = kept;
        }
        Ok(Some(rows))
    }
}

impl Database {
    /// Starts a push query: from the end of its input, or its beginning if `earliest`.
    pub(super) async fn push_query(
        &self,
        q: sql::parser::PushQuery,
        who: &Principal,
        earliest: bool,
    ) -> Result<Output> {
        refuse_parameters(&q.query)?;
        let data = self.tables.catalog.snapshot();
        let query = PushQuery::new(&self.engine, &q.query, &data, earliest).await?;
        check_reads(&data, who, query.plan())?;
        Ok(Output::Push(Box::new(PushRows {
            source: PushSource::Query(Box::new(query)),
            remaining: q.limit,
            copy: false,
        })))
    }

    /// The columns a push query returns.
    pub(super) async fn push_schema(&self, q: &sql::parser::PushQuery) -> Result<SchemaRef> {
        refuse_parameters(&q.query)?;
        let data = self.tables.catalog.snapshot();
        Ok(self.engine.plan(&q.query, &data).await?.schema)
    }

    /// The columns a `SUBSCRIBE` returns.
    pub(super) async fn subscribe_schema(&self, s: &sql::parser::Subscribe) -> Result<SchemaRef> {
        let data = self.tables.catalog.snapshot();
        let is_view = matches!(data.relation(&s.relation), Some(Relation::View(_)));
        if is_view {
            if let Some(query) = self.rows_view_query(&data, &s.relation).await? {
                return Ok(view_subscription_schema(&query.schema()));
            }
            let subscription = self.engine.subscribe_view(&s.relation).await?;
            return Ok(view_subscription_schema(&subscription.schema));
        }
        let q = sql::parser::PushQuery {
            query: format!("SELECT * FROM \"{}\"", s.relation),
            limit: None,
        };
        self.push_schema(&q).await
    }

    /// `SUBSCRIBE stream [WITH (snapshot = …)]`: the stream's new records (all of them with
    /// `snapshot = true`), as a push query of its columns.
    pub(super) async fn subscribe(
        &self,
        s: sql::parser::Subscribe,
        who: &Principal,
    ) -> Result<Output> {
        let data = self.tables.catalog.snapshot();
        data.check(who, Privilege::Select, &s.relation)?;
        let mut snapshot = false;
        let mut snapshot_given = false;
        for (key, value) in &s.options {
            match key.as_str() {
                "snapshot" => {
                    snapshot_given = true;
                    snapshot = match value.as_text().to_ascii_lowercase().as_str() {
                        "true" | "on" | "1" => true,
                        "false" | "off" | "0" => false,
                        other => {
                            return Err(Error::plan(
                                "22023",
                                format!("snapshot must be true or false, not \"{other}\""),
                            ));
                        }
                    }
                }
                other => {
                    return Err(Error::plan(
                        "22023",
                        format!("unknown SUBSCRIBE option \"{other}\" (snapshot)"),
                    ));
                }
            }
        }
        match data.relation(&s.relation) {
            Some(Relation::Stream(..) | Relation::Topic(_)) => {}
            Some(Relation::View(_)) => {
                if snapshot_given {
                    return Err(Error::plan(
                        "22023",
                        "a view's subscription always starts with its contents; snapshot applies to streams",
                    ));
                }
                if let Some(query) = self.rows_view_query(&data, &s.relation).await? {
                    let schema = view_subscription_schema(&query.schema());
                    return Ok(Output::Push(Box::new(PushRows {
                        source: PushSource::Appended {
                            query: Box::new(query),
                            schema,
                        },
                        remaining: None,
                        copy: s.copy,
                    })));
                }
                let subscription = self.engine.subscribe_view(&s.relation).await?;
                let schema = view_subscription_schema(&subscription.schema);
                return Ok(Output::Push(Box::new(PushRows {
                    source: PushSource::View {
                        name: s.relation,
                        schema,
                        subscription,
                        snapshot_sent: false,
                    },
                    remaining: None,
                    copy: s.copy,
                })));
            }
            Some(Relation::External(_)) => {
                return Err(Error::Unsupported(format!(
                    "\"{}\" is an external table (files); it does not change, SELECT from it",
                    s.relation
                )));
            }
            None => {
                return Err(Error::UnknownRelation(format!(
                    "relation \"{}\" does not exist",
                    s.relation
                )));
            }
        }
        let sql = format!("SELECT * FROM \"{}\"", s.relation);
        let query = PushQuery::new(&self.engine, &sql, &data, snapshot).await?;
        Ok(Output::Push(Box::new(PushRows {
            source: PushSource::Query(Box::new(query)),
            remaining: None,
            copy: s.copy,
        })))
    }
}

impl Database {
    /// For a view without aggregation, its query as a push query from the beginning of its
    /// input: such a view holds every row its query gives, so the query's rows are the view's
    /// rows so far, then each new one. `None` for a grouped view.
    async fn rows_view_query(&self, data: &CatalogData, view: &str) -> Result<Option<PushQuery>> {
        let def = data
            .query_maintaining(view)
            .ok_or_else(|| Error::UnknownRelation(format!("view \"{view}\" does not exist")))?;
        let plan = self.engine.plan_as(&def.sql, data, def.dialect).await?;
        if !matches!(plan.kind, Kind::Stateless) {
            return Ok(None);
        }
        if def.start != StartPosition::Earliest {
            return Err(Error::Unsupported(format!(
                "SUBSCRIBE to view \"{view}\" without aggregation that started at 'latest' is not supported yet; SUBSCRIBE to the stream it reads"
            )));
        }
        Ok(Some(
            PushQuery::new(&self.engine, &def.sql, data, true).await?,
        ))
    }
}

/// A view subscription's columns: `_diff` (+1 a row added, -1 a row removed), then the view's.
pub(super) fn view_subscription_schema(view: &SchemaRef) -> SchemaRef {
    let mut fields = vec![Arc::new(Field::new("_diff", DataType::Int64, false))];
    fields.extend(view.fields().iter().cloned());
    Arc::new(Schema::new(fields))
}

/// `rows` with a leading `_diff` column of `diff`.
fn with_diff(schema: &SchemaRef, rows: &[RecordBatch], diff: i64) -> Result<Vec<RecordBatch>> {
    rows.iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| {
            let mut columns: Vec<ArrayRef> =
                vec![Arc::new(Int64Array::from_value(diff, b.num_rows()))];
            columns.extend(b.columns().iter().cloned());
            RecordBatch::try_new(schema.clone(), columns)
                .map_err(|e| Error::Internal(format!("view subscription rows: {e}")))
        })
        .collect()
}

/// Push queries run with the values they were written with: a parameter (`$1`) is refused
/// when the query is prepared, as the documentation says, rather than failing to plan.
fn refuse_parameters(query: &str) -> Result<()> {
    use sqlparser::ast::{Expr, Value, visit_expressions};
    let Ok(statements) =
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, query)
    else {
        return Ok(()); // planning reports what is wrong with it
    };
    let placeholder = visit_expressions(&statements, |expr| match expr {
        Expr::Value(v) if matches!(v.value, Value::Placeholder(_)) => {
            std::ops::ControlFlow::Break(v.value.to_string())
        }
        _ => std::ops::ControlFlow::Continue(()),
    });
    match placeholder {
        std::ops::ControlFlow::Break(name) => Err(Error::Unsupported(format!(
            "push queries (EMIT CHANGES) do not take parameters ({name}): write the values into the query"
        ))),
        std::ops::ControlFlow::Continue(()) => Ok(()),
    }
}
