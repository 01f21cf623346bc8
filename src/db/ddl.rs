//! DDL: creating and dropping streams, topics and external tables, and the statements that
//! show them. Files are created before the catalog names them and removed after it stops
//! naming them.

use datafusion::execution::context::SessionState;
use std::collections::BTreeMap;

use super::{
    DEFAULT_PARTITIONS, DEFAULT_SEGMENT_BYTES, DESCRIBE_COLUMNS, Database, MAX_PARTITIONS, Output,
    SHOW_STREAMS_COLUMNS, SHOW_TOPICS_COLUMNS, TABLE_SEGMENT_BYTES, command, text_rows,
};
use crate::catalog::{Access, CleanupPolicy, HIDDEN_COLUMNS, Principal, topic_options};
use crate::catalog::{
    CatalogData, ColumnDef, ExternalTableDef, QueryId, QueryTarget, Relation, SqlType, StreamDef,
    StreamKind, TOMBSTONE_COLUMN, TopicDef, VALUE_COLUMN, ValueFormat, WatermarkDef, validate_name,
};
use crate::catalog::{PUBLIC_SCHEMA, format_ms};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::sql::parser::{CreateStream, CreateTopic, Drop, ObjectKind, OptionValue};
use crate::storage::now_ms;
use crate::storage::{Compression, KEY_COLUMN, TopicId};
use crate::tables::event_time::watermark_expression;

impl Database {
    pub(super) async fn create_stream(
        &self,
        c: CreateStream,
        who: &Principal,
        notices: &mut Vec<String>,
    ) -> Result<Output> {
        if let Some(query) = c.query.clone() {
            return self.create_stream_as(c, query, who, notices).await;
        }
        let table = c.kind == StreamKind::Table;
        let (what, tag) = match table {
            true => ("table", "CREATE TABLE"),
            false => ("stream", "CREATE STREAM"),
        };
        validate_name(what, &c.name)?;
        if c.columns.is_empty() {
            return Err(Error::plan(
                "42601",
                format!("{what} \"{}\" needs at least one column", c.name),
            ));
        }
        let mut columns: Vec<ColumnDef> = vec![];
        for spec in &c.columns {
            if HIDDEN_COLUMNS.contains(&spec.name.as_str()) || spec.name == TOMBSTONE_COLUMN {
                return Err(Error::plan(
                    "42701",
                    format!(
                        "column name \"{}\" conflicts with a system column name",
                        spec.name
                    ),
                ));
            }
            if columns.iter().any(|c| c.name == spec.name) {
                return Err(Error::plan(
                    "42701",
                    format!("column \"{}\" specified more than once", spec.name),
                ));
            }
            columns.push(ColumnDef {
                name: spec.name.clone(),
                sql_type: spec.sql_type,
                nullable: spec.nullable,
            });
        }
        let key_columns: Vec<String> = c
            .columns
            .iter()
            .filter(|c| c.key)
            .map(|c| c.name.clone())
            .collect();
        let mut options = TopicOptions::parse(
            &c.options,
            match table {
                true => &["value_format", "timestamp", "topic"],
                false => &[
                    "value_format",
                    "timestamp",
                    "topic",
                    "watermark_idle_timeout",
                    "late_data_topic",
                ],
            },
        )?;
        if table && (options.retention_ms.is_some() || options.retention_bytes.is_some()) {
            return Err(Error::Unsupported(format!(
                "table \"{}\" cannot have retention: a table keeps the latest row of every key",
                c.name
            )));
        }
        if table {
            // A table is its keyed changelog, compacted to the latest record of each key.
            options.compacted_by_default(TABLE_SEGMENT_BYTES);
        }
        if table && c.watermark.is_some() {
            return Err(Error::Unsupported(format!(
                "table \"{}\" cannot have a watermark: event time is for streams",
                c.name
            )));
        }
        let value_format = match options.take("value_format") {
            None => ValueFormat::Json,
            Some(v) => ValueFormat::parse(v.as_text()).ok_or_else(|| {
                Error::data(
                    "22023",
                    format!("invalid value_format \"{}\" (json, csv, raw)", v.as_text()),
                )
            })?,
        };
        let column_type = |name: &str, role: &str| -> Result<SqlType> {
            columns
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.sql_type)
                .ok_or_else(|| {
                    Error::plan(
                        "42703",
                        format!(
                            "{role} column \"{name}\" does not exist in stream \"{}\"",
                            c.name
                        ),
                    )
                })
        };
        let timestamp_column = match options.take("timestamp") {
            None => None,
            Some(v) => {
                let name = v.as_text().to_string();
                let t = column_type(&name, "timestamp")?;
                if !matches!(
                    t,
                    SqlType::Timestamp | SqlType::TimestampTz | SqlType::Date | SqlType::BigInt
                ) {
                    return Err(Error::plan(
                        "42804",
                        format!(
                            "timestamp column \"{name}\" is {t}; it must be a timestamp, date or bigint (ms since the epoch)"
                        ),
                    ));
                }
                Some(name)
            }
        };
        let watermark = match &c.watermark {
            None => None,
            Some((column, expression)) => {
                let t = column_type(column, "watermark")?;
                if !matches!(t, SqlType::Timestamp | SqlType::TimestampTz) {
                    return Err(Error::plan(
                        "42804",
                        format!("watermark column \"{column}\" is {t}; it must be a timestamp"),
                    ));
                }
                let field = arrow::datatypes::Field::new(column, t.arrow(), true);
                let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![field]));
                let session = datafusion::prelude::SessionContext::new().state();
                watermark_expression(&session, &schema, expression)?;
                let idle_timeout_ms = match options.take("watermark_idle_timeout") {
                    None => None,
                    Some(v) => match parse_duration_ms(v.as_text())? {
                        Some(ms) if ms > 0 => Some(ms),
                        _ => {
                            return Err(Error::data(
                                "22023",
                                format!(
                                    "watermark_idle_timeout must be a positive duration, not \"{}\"",
                                    v.as_text()
                                ),
                            ));
                        }
                    },
                };
                Some(WatermarkDef {
                    column: column.clone(),
                    expression: expression.clone(),
                    idle_timeout_ms,
                    inherited: None,
                })
            }
        };
        if options.take("watermark_idle_timeout").is_some() {
            return Err(Error::plan(
                "42601",
                "watermark_idle_timeout needs a watermark (WATERMARK FOR column AS …)",
            ));
        }
        if value_format == ValueFormat::Raw {
            let values: Vec<&ColumnDef> = columns
                .iter()
                .filter(|c| !key_columns.contains(&c.name))
                .collect();
            if values.len() != 1 || !matches!(values[0].sql_type, SqlType::Text | SqlType::Bytea) {
                return Err(Error::data(
                    "22023",
                    "value_format 'raw' needs exactly one non-KEY column, of type text or bytea",
                ));
            }
        }
        let topic_name = match options.take("topic") {
            Some(v) => v.as_text().to_string(),
            None => c.name.clone(),
        };
        validate_name("topic", &topic_name)?;
        let late = match options.take("late_data_topic") {
            None => None,
            Some(v) => {
                let name = v.as_text().to_string();
                validate_name("stream", &name)?;
                if name == c.name || name == topic_name {
                    return Err(Error::plan(
                        "42P07",
                        format!("late_data_topic \"{name}\" cannot be the stream itself"),
                    ));
                }
                Some(late_stream(
                    &name,
                    &c.name,
                    &columns,
                    &key_columns,
                    timestamp_column.as_deref(),
                )?)
            }
        };

        let _ddl = self.tables.catalog.ddl_lock().await;
        let data = self.tables.catalog.snapshot();
        data.check_create(who)?;
        if let Some(existing) = data.relation(&c.name) {
            if c.if_not_exists {
                notices.push(format!(
                    "{} \"{}\" already exists, skipping",
                    kind_name(&existing),
                    c.name
                ));
                return Ok(command(tag));
            }
            return Err(Error::AlreadyExists(format!(
                "{} \"{}\" already exists",
                kind_name(&existing),
                c.name
            )));
        }
        if data.topics.contains_key(&topic_name) {
            return Err(Error::AlreadyExists(format!(
                "topic \"{topic_name}\" already exists"
            )));
        }
        let adopted = match &late {
            Some(late) => adopts_late_stream(&data, late, who)?,
            None => false,
        };
        let mut new = (*data).clone();
        let topic = options.topic_def(
            TopicId(new.next_topic_id),
            &topic_name,
            Some(c.name.clone()),
            &who.name,
        );
        new.next_topic_id += 1;
        let mut topics = vec![topic.clone()];
        let late_data_topic = late.as_ref().map(|l| l.name.clone());
        if let Some(mut late) = late.filter(|_| !adopted) {
            let mut topic = options.topic_def(
                TopicId(new.next_topic_id),
                &late.name,
                Some(late.name.clone()),
                &who.name,
            );
            // Late rows are a record of what was dropped: every one is kept.
            topic.cleanup_policy = CleanupPolicy::Delete;
            topic.delete_retention_ms = None;
            new.next_topic_id += 1;
            late.access = Access::owned_by(&who.name);
            new.topics.insert(late.name.clone(), topic.clone());
            new.streams.insert(late.name.clone(), late);
            topics.push(topic);
        }
        new.streams.insert(
            c.name.clone(),
            StreamDef {
                name: c.name.clone(),
                kind: c.kind,
                topic: topic_name.clone(),
                columns,
                key_columns,
                value_format,
                timestamp_column,
                watermark,
                late_data_topic,
                access: Access::owned_by(&who.name),
            },
        );
        new.topics.insert(topic_name, topic.clone());
        for (i, topic) in topics.iter().enumerate() {
            if let Err(e) = self.create_topic_files(&new, topic).await {
                for made in &topics[..i] {
                    let _ = self.tables.log.drop_topic(made.id).await;
                }
                return Err(e);
            }
        }
        let ids: Vec<TopicId> = topics.iter().map(|t| t.id).collect();
        self.commit_or_undo(new, &ids).await?;
        Ok(command(tag))
    }

    pub(super) async fn create_topic(
        &self,
        c: CreateTopic,
        who: &Principal,
        notices: &mut Vec<String>,
    ) -> Result<Output> {
        validate_name("topic", &c.name)?;
        let options = TopicOptions::parse(&c.options, &[])?;
        let _ddl = self.tables.catalog.ddl_lock().await;
        let data = self.tables.catalog.snapshot();
        data.check_create(who)?;
        let taken = data
            .relation(&c.name)
            .map(|r| kind_name(&r))
            .or(data.topics.contains_key(&c.name).then_some("topic"));
        if let Some(kind) = taken {
            if c.if_not_exists {
                notices.push(format!("{kind} \"{}\" already exists, skipping", c.name));
                return Ok(command("CREATE TOPIC"));
            }
            return Err(Error::AlreadyExists(format!(
                "{kind} \"{}\" already exists",
                c.name
            )));
        }
        let mut new = (*data).clone();
        let topic = options.topic_def(TopicId(new.next_topic_id), &c.name, None, &who.name);
        new.next_topic_id += 1;
        new.topics.insert(c.name.clone(), topic.clone());
        self.create_topic_files(&new, &topic).await?;
        self.commit_or_undo(new, &[topic.id]).await?;
        Ok(command("CREATE TOPIC"))
    }

    async fn create_topic_files(&self, data: &CatalogData, topic: &TopicDef) -> Result<()> {
        self.tables.log.create_topic(data.topic_spec(topic)).await?;
        Ok(())
    }

    /// Commits a catalog with new topics; if that fails, removes the topics' files.
    async fn commit_or_undo(&self, data: CatalogData, topics: &[TopicId]) -> Result<()> {
        if let Err(e) = self.tables.catalog.commit(data, vec![]).await {
            for topic in topics {
                if let Err(undo) = self.tables.log.drop_topic(*topic).await {
                    tracing::error!(error = %undo, "removing the files of a topic whose creation failed");
                }
            }
            return Err(e);
        }
        Ok(())
    }

    pub(super) async fn create_external_table(
        &self,
        state: &SessionState,
        cmd: &datafusion::logical_expr::CreateExternalTable,
        sql: String,
        who: &Principal,
        notices: &mut Vec<String>,
    ) -> Result<Output> {
        let name = cmd.name.table().to_string();
        if let Some(schema) = cmd.name.schema()
            && schema != PUBLIC_SCHEMA
        {
            return Err(Error::plan(
                "3F000",
                format!("schema \"{schema}\" does not exist"),
            ));
        }
        validate_name("external table", &name)?;
        self.tables.catalog.snapshot().check_create(who)?;
        let provider = self.external_provider(state, cmd).await?;
        let _ddl = self.tables.catalog.ddl_lock().await;
        let data = self.tables.catalog.snapshot();
        if let Some(existing) = data.relation(&name) {
            if cmd.if_not_exists {
                notices.push(format!(
                    "{} \"{name}\" already exists, skipping",
                    kind_name(&existing)
                ));
                return Ok(command("CREATE EXTERNAL TABLE"));
            }
            return Err(Error::AlreadyExists(format!(
                "{} \"{name}\" already exists",
                kind_name(&existing)
            )));
        }
        let mut new = (*data).clone();
        new.external_tables.insert(
            name.clone(),
            ExternalTableDef {
                name: name.clone(),
                sql,
                access: Access::owned_by(&who.name),
            },
        );
        self.tables.catalog.commit(new, vec![]).await?;
        self.tables
            .external
            .write()
            .expect("lock")
            .insert(name, provider);
        Ok(command("CREATE EXTERNAL TABLE"))
    }

    pub(super) async fn drop_objects(
        &self,
        d: Drop,
        who: &Principal,
        notices: &mut Vec<String>,
    ) -> Result<Output> {
        let tag = match d.kind {
            ObjectKind::Stream => "DROP STREAM",
            ObjectKind::Topic => "DROP TOPIC",
            ObjectKind::Table => "DROP TABLE",
            ObjectKind::View => "DROP MATERIALIZED VIEW",
            ObjectKind::Query => "DROP QUERY",
            ObjectKind::Subscription => return self.drop_subscriptions(d, who, notices).await,
        };
        let _ddl = self.tables.catalog.ddl_lock().await;
        let data = self.tables.catalog.snapshot();
        let mut new = (*data).clone();
        let mut doomed_topics = vec![];
        let mut doomed_tables = vec![];
        let mut doomed_queries: Vec<QueryId> = vec![];
        // The persistent inserts into a dropped stream or topic go with it.
        let drop_writers = |target: &str, doomed: &mut Vec<QueryId>, notices: &mut Vec<String>| {
            for q in data.queries.values() {
                if matches!(&q.target, QueryTarget::Insert { stream, .. } if stream == target) {
                    notices.push(format!(
                        "dropping continuous query \"{}\", which writes to \"{target}\"",
                        q.name
                    ));
                    doomed.push(q.id);
                }
            }
        };
        for name in &d.names {
            let wrong = |relation: &Relation<'_>| {
                let (kind, verb) = match relation {
                    Relation::Stream(stream, _) if stream.is_table() => ("table", "DROP TABLE"),
                    Relation::Stream(..) => ("stream", "DROP STREAM"),
                    Relation::Topic(_) => ("topic", "DROP TOPIC"),
                    Relation::External(_) => ("table", "DROP TABLE"),
                    Relation::View(_) => ("materialized view", "DROP MATERIALIZED VIEW"),
                };
                Error::plan(
                    "42809",
                    format!(
                        "\"{name}\" is a {kind}, not a {}; use {verb}",
                        d.kind.name().to_lowercase()
                    ),
                )
            };
            let missing = |what: &str, notices: &mut Vec<String>| {
                if d.if_exists {
                    notices.push(format!("{what} \"{name}\" does not exist, skipping"));
                    Ok(())
                } else {
                    Err(Error::UnknownRelation(format!(
                        "{what} \"{name}\" does not exist"
                    )))
                }
            };
            match d.kind {
                ObjectKind::Stream | ObjectKind::Table => match data.relation(name) {
                    Some(Relation::Stream(stream, topic))
                        if stream.is_table() == (d.kind == ObjectKind::Table) =>
                    {
                        let kind = if stream.is_table() { "table" } else { "stream" };
                        who.require_owner(&stream.access.owner, kind, name)?;
                        new.streams.remove(&stream.name);
                        new.topics.remove(&topic.name);
                        doomed_topics.push(topic.id);
                        if let Some(q) = data.query_maintaining(&stream.name) {
                            doomed_queries.push(q.id);
                        }
                        drop_writers(&stream.name, &mut doomed_queries, notices);
                    }
                    Some(Relation::External(table)) if d.kind == ObjectKind::Table => {
                        who.require_owner(&table.access.owner, "external table", name)?;
                        new.external_tables.remove(&table.name);
                        doomed_tables.push(table.name.clone());
                    }
                    Some(other) => return Err(wrong(&other)),
                    None => missing(&d.kind.name().to_lowercase(), notices)?,
                },
                ObjectKind::Topic => match data.topics.get(name) {
                    Some(topic) => {
                        if let Some(stream) = &topic.stream {
                            return Err(Error::Dependent(format!(
                                "topic \"{name}\" holds the records of stream \"{stream}\"; use DROP STREAM {stream}"
                            )));
                        }
                        if let Some(internal) = &topic.internal {
                            let owner = data
                                .queries
                                .get(&internal.query)
                                .map_or("?", |q| q.name.as_str());
                            return Err(Error::Dependent(format!(
                                "topic \"{name}\" holds the state of continuous query \"{owner}\"; drop that instead"
                            )));
                        }
                        who.require_owner(&topic.access.owner, "topic", name)?;
                        new.topics.remove(name);
                        doomed_topics.push(topic.id);
                        drop_writers(name, &mut doomed_queries, notices);
                    }
                    None => missing("topic", notices)?,
                },
                ObjectKind::View => match data.relation(name) {
                    Some(Relation::View(view)) => {
                        who.require_owner(&view.access.owner, "materialized view", name)?;
                        new.views.remove(&view.name);
                        doomed_queries.push(view.query);
                    }
                    Some(other) => return Err(wrong(&other)),
                    None => missing("materialized view", notices)?,
                },
                ObjectKind::Query => match data.queries.values().find(|q| &q.name == name) {
                    Some(q) => match &q.target {
                        QueryTarget::Insert { .. } => {
                            who.require_owner(&q.owner, "query", name)?;
                            doomed_queries.push(q.id)
                        }
                        QueryTarget::Stream { stream } => {
                            return Err(Error::plan(
                                "42809",
                                format!(
                                    "query \"{name}\" maintains stream \"{stream}\"; use DROP STREAM {stream}"
                                ),
                            ));
                        }
                        QueryTarget::View { view } => {
                            return Err(Error::plan(
                                "42809",
                                format!(
                                    "query \"{name}\" maintains materialized view \"{view}\"; use DROP MATERIALIZED VIEW {view}"
                                ),
                            ));
                        }
                    },
                    None => missing("query", notices)?,
                },
                ObjectKind::Subscription => unreachable!("dropped by drop_subscriptions"),
            }
        }
        for id in &doomed_queries {
            if let Some(query) = new.queries.remove(id) {
                for internal in [query.state_topic, query.closed_topic]
                    .into_iter()
                    .flatten()
                    .chain(query.inner_state_topics)
                {
                    if let Some(topic) = new.topics.remove(&internal) {
                        doomed_topics.push(topic.id);
                    }
                }
            }
        }
        // What stays must keep its inputs.
        for query in new.queries.values() {
            if let Some(input) = query.inputs.iter().find(|i| new.relation(i).is_none()) {
                return Err(Error::Dependent(format!(
                    "cannot drop \"{input}\": continuous query \"{}\" reads it; drop that first",
                    query.name
                )));
            }
        }
        if let Some((stream, late)) = new.streams.values().find_map(|s| {
            s.late_data_topic
                .as_ref()
                .filter(|l| new.relation(l).is_none())
                .map(|l| (&s.name, l))
        }) {
            return Err(Error::Dependent(format!(
                "cannot drop \"{late}\": stream \"{stream}\" sends its late rows there (late_data_topic); drop that first"
            )));
        }
        if let Some(sub) = new
            .subscriptions
            .values()
            .find(|s| new.relation(&s.relation).is_none())
        {
            return Err(Error::Dependent(format!(
                "cannot drop \"{}\": subscription \"{}\" reads it; drop that first (DROP SUBSCRIPTION)",
                sub.relation, sub.name
            )));
        }
        for id in &doomed_queries {
            self.engine.stop(*id).await;
        }
        let forgotten = doomed_queries
            .iter()
            .map(|id| Engine::forget(*id))
            .collect();
        if let Err(e) = self.tables.catalog.commit(new, forgotten).await {
            for id in &doomed_queries {
                if let Some(def) = data.queries.get(id) {
                    self.engine.start(def.clone()).await;
                }
            }
            return Err(e);
        }
        for name in doomed_tables {
            self.tables.external.write().expect("lock").remove(&name);
        }
        for id in doomed_topics {
            self.tables.writer.forget(id);
            // The catalog no longer has the topic; if deleting its files fails now, start-up
            // finishes it (the topic's id was issued, and the catalog no longer names it).
            if let Err(e) = self.tables.log.drop_topic(id).await {
                tracing::warn!(topic = %id, error = %e, "deleting a dropped topic's files");
            }
        }
        Ok(command(tag))
    }

    pub(super) fn show_streams(&self) -> Result<Output> {
        let data = self.tables.catalog.snapshot();
        let rows = data
            .streams
            .values()
            .map(|s| {
                vec![
                    Some(s.name.clone()),
                    Some(s.topic.clone()),
                    Some(data.topics[&s.topic].partitions.to_string()),
                    (!s.key_columns.is_empty()).then(|| s.key_columns.join(", ")),
                    Some(s.value_format.name().to_string()),
                    s.timestamp_column.clone(),
                ]
            })
            .collect();
        text_rows(&SHOW_STREAMS_COLUMNS, rows)
    }

    pub(super) fn show_topics(&self) -> Result<Output> {
        let data = self.tables.catalog.snapshot();
        let rows = data
            .topics
            .values()
            .map(|t| {
                vec![
                    Some(t.name.clone()),
                    t.stream.clone(),
                    Some(t.partitions.to_string()),
                    Some(t.compression.name().to_string()),
                    t.retention_ms.map(format_ms),
                    t.retention_bytes.map(|b| b.to_string()),
                ]
            })
            .collect();
        text_rows(&SHOW_TOPICS_COLUMNS, rows)
    }

    pub(super) async fn describe(&self, name: &str) -> Result<Output> {
        let data = self.tables.catalog.snapshot();
        let relation = data
            .relation(name)
            .ok_or_else(|| Error::UnknownRelation(format!("relation \"{name}\" does not exist")))?;
        let mut lines: Vec<(String, String, String)> = vec![];
        let topic = match &relation {
            Relation::Stream(stream, topic) => {
                for c in &stream.columns {
                    let mut extra = vec![];
                    if stream.key_columns.contains(&c.name) {
                        extra.push("key".to_string());
                    }
                    if !c.nullable {
                        extra.push("not null".to_string());
                    }
                    if stream.timestamp_column.as_ref() == Some(&c.name) {
                        extra.push("record timestamp".to_string());
                    }
                    match stream.watermark.as_ref().filter(|w| w.column == c.name) {
                        Some(w) if w.inherited.is_some() => {
                            extra.push("watermark of its query's closed windows".to_string())
                        }
                        Some(w) => extra.push(format!("watermark {}", w.expression)),
                        None => {}
                    }
                    lines.push((c.name.clone(), c.sql_type.to_string(), extra.join(", ")));
                }
                for (column, t) in [
                    ("_partition", "integer"),
                    ("_offset", "bigint"),
                    ("_timestamp", "timestamp"),
                    ("_key", "bytea"),
                    ("_headers", "record[]"),
                ] {
                    lines.push((column.into(), t.into(), "hidden".into()));
                }
                if let Some(query) = data.query_maintaining(&stream.name) {
                    lines.push((
                        "(definition)".into(),
                        query.sql.clone(),
                        "derived stream".into(),
                    ));
                }
                Some(*topic)
            }
            Relation::Topic(topic) => {
                lines.push((KEY_COLUMN.into(), "bytea".into(), "key".into()));
                lines.push((VALUE_COLUMN.into(), "bytea".into(), String::new()));
                for (column, t) in [
                    ("_partition", "integer"),
                    ("_offset", "bigint"),
                    ("_timestamp", "timestamp"),
                    ("_headers", "record[]"),
                ] {
                    lines.push((column.into(), t.into(), "hidden".into()));
                }
                Some(*topic)
            }
            Relation::View(view) => {
                for f in view.columns.iter() {
                    let t = SqlType::from_field(f)
                        .map_or_else(|| f.data_type().to_string(), |t| t.to_string());
                    lines.push((f.name().clone(), t, String::new()));
                }
                if let Some(query) = data.queries.get(&view.query) {
                    lines.push((
                        "(definition)".into(),
                        query.sql.clone(),
                        "materialized view".into(),
                    ));
                }
                None
            }
            Relation::External(table) => {
                let provider = self
                    .tables
                    .external
                    .read()
                    .expect("lock")
                    .get(&table.name)
                    .cloned();
                if let Some(provider) = provider {
                    for f in provider.schema().fields() {
                        lines.push((f.name().clone(), f.data_type().to_string(), String::new()));
                    }
                }
                lines.push((
                    "(definition)".into(),
                    table.sql.clone(),
                    "external table".into(),
                ));
                None
            }
        };
        if let Some(topic) = topic {
            let mut options = topic_options(topic, data.stream_of_topic(topic));
            if topic.retention_ms.is_none() && topic.cleanup_policy == CleanupPolicy::Delete {
                // Said plainly here, where `WITH (…)` would leave it out.
                let at = options
                    .iter()
                    .position(|(option, _)| *option == "compression")
                    .map_or(options.len(), |i| i + 1);
                options.insert(at, ("retention", "forever".to_string()));
            }
            for (k, v) in options {
                lines.push((k.to_string(), v, "option".to_string()));
            }
        }
        let rows = lines
            .into_iter()
            .map(|(n, t, e)| vec![Some(n), Some(t), Some(e)])
            .collect();
        text_rows(&DESCRIBE_COLUMNS, rows)
    }
}

pub(super) fn kind_name(relation: &Relation<'_>) -> &'static str {
    match relation {
        Relation::Stream(stream, _) if stream.is_table() => "table",
        Relation::Stream(..) => "stream",
        Relation::Topic(_) => "topic",
        Relation::External(_) => "table",
        Relation::View(_) => "materialized view",
    }
}

/// A duration (see [`crate::sql::duration::parse_duration`]) in milliseconds, a bare number being milliseconds
/// as in Kafka's `retention.ms`. `None` for `-1` / `'forever'` (no limit).
fn parse_duration_ms(text: &str) -> Result<Option<u64>> {
    let t = text.trim().to_ascii_lowercase();
    if t == "-1" || t == "forever" || t == "infinite" || t == "none" {
        return Ok(None);
    }
    if let Ok(ms) = t.parse::<u64>() {
        return Ok(Some(ms));
    }
    let ms = crate::sql::duration::parse_duration(&t)?.as_millis();
    u64::try_from(ms)
        .map(Some)
        .map_err(|_| Error::data("22007", format!("duration \"{text}\" is too long")))
}

/// `WITH (…)` options that configure a topic, plus the stream-only ones the caller takes.
pub(super) struct TopicOptions {
    partitions: u32,
    compression: Compression,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    segment_bytes: Option<u64>,
    cleanup_policy: Option<CleanupPolicy>,
    delete_retention_ms: Option<u64>,
    rest: BTreeMap<String, OptionValue>,
}

impl TopicOptions {
    pub(super) fn parse(options: &[(String, OptionValue)], extra: &[&str]) -> Result<TopicOptions> {
        let mut out = TopicOptions {
            partitions: DEFAULT_PARTITIONS,
            compression: Compression::None,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: None,
            cleanup_policy: None,
            delete_retention_ms: None,
            rest: BTreeMap::new(),
        };
        let number = |key: &str, v: &OptionValue| -> Result<i64> {
            v.as_text().parse::<i64>().map_err(|_| {
                Error::data(
                    "22023",
                    format!(
                        "option {key} must be a whole number, not \"{}\"",
                        v.as_text()
                    ),
                )
            })
        };
        let mut seen = std::collections::HashSet::new();
        for (key, value) in options {
            if !seen.insert(key.clone()) {
                return Err(Error::plan(
                    "42601",
                    format!("option {key} given more than once"),
                ));
            }
            match key.as_str() {
                "partitions" => {
                    let n = number(key, value)?;
                    if n < 1 || n > MAX_PARTITIONS as i64 {
                        return Err(Error::data(
                            "22023",
                            format!("partitions must be between 1 and {MAX_PARTITIONS}, not {n}"),
                        ));
                    }
                    out.partitions = n as u32;
                }
                "compression" => {
                    out.compression = Compression::parse(value.as_text()).ok_or_else(|| {
                        Error::data(
                            "22023",
                            format!(
                                "invalid compression \"{}\" (none, lz4, zstd)",
                                value.as_text()
                            ),
                        )
                    })?;
                }
                "retention" | "retention_ms" => {
                    out.retention_ms = match value {
                        OptionValue::Number(n) if key == "retention_ms" || n.starts_with('-') => {
                            parse_duration_ms(n)?
                        }
                        other => parse_duration_ms(other.as_text())?,
                    };
                }
                "retention_bytes" => {
                    let n = number(key, value)?;
                    out.retention_bytes = if n < 0 { None } else { Some(n as u64) };
                }
                "segment_bytes" => {
                    let n = number(key, value)?;
                    if n < 4096 {
                        return Err(Error::data(
                            "22023",
                            format!("segment_bytes must be at least 4096, not {n}"),
                        ));
                    }
                    out.segment_bytes = Some(n as u64);
                }
                "cleanup_policy" => {
                    out.cleanup_policy =
                        Some(CleanupPolicy::parse(value.as_text()).ok_or_else(|| {
                            Error::data(
                                "22023",
                                format!(
                                    "invalid cleanup_policy \"{}\" (delete, compact)",
                                    value.as_text()
                                ),
                            )
                        })?);
                }
                "delete_retention" | "delete_retention_ms" => {
                    out.delete_retention_ms = match value {
                        OptionValue::Number(n)
                            if key == "delete_retention_ms" || n.starts_with('-') =>
                        {
                            parse_duration_ms(n)?
                        }
                        other => parse_duration_ms(other.as_text())?,
                    };
                }
                k if extra.contains(&k) => {
                    out.rest.insert(key.clone(), value.clone());
                }
                _ => {
                    let mut known = vec![
                        "partitions",
                        "compression",
                        "retention",
                        "retention_bytes",
                        "segment_bytes",
                        "cleanup_policy",
                        "delete_retention",
                    ];
                    known.extend_from_slice(extra);
                    return Err(Error::data(
                        "22023",
                        format!("unknown option \"{key}\" (known: {})", known.join(", ")),
                    ));
                }
            }
        }
        let compact = out.cleanup_policy == Some(CleanupPolicy::Compact);
        if compact && (out.retention_ms.is_some() || out.retention_bytes.is_some()) {
            return Err(Error::data(
                "22023",
                "cleanup_policy 'compact' keeps the latest record of every key: it takes no retention limits (retention, retention_bytes)",
            ));
        }
        if !compact && out.delete_retention_ms.is_some() {
            return Err(Error::data(
                "22023",
                "delete_retention is how long a compacted topic keeps tombstones: it needs cleanup_policy 'compact'",
            ));
        }
        Ok(out)
    }

    /// Makes the topic compacted unless its options say otherwise (a table's), with
    /// segments of `segment_bytes` unless they say otherwise.
    pub(super) fn compacted_by_default(&mut self, segment_bytes: u64) {
        if self.cleanup_policy.is_none() && self.retention_ms.is_none() {
            self.cleanup_policy = Some(CleanupPolicy::Compact);
        }
        self.segment_bytes.get_or_insert(segment_bytes);
    }

    pub(super) fn take(&mut self, key: &str) -> Option<OptionValue> {
        self.rest.remove(key)
    }

    pub(super) fn topic_def(
        &self,
        id: TopicId,
        name: &str,
        stream: Option<String>,
        owner: &str,
    ) -> TopicDef {
        TopicDef {
            id,
            name: name.to_string(),
            partitions: self.partitions,
            compression: self.compression,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            segment_bytes: self.segment_bytes.unwrap_or(DEFAULT_SEGMENT_BYTES),
            cleanup_policy: self.cleanup_policy.unwrap_or_default(),
            delete_retention_ms: self.delete_retention_ms,
            stream,
            created_at_ms: now_ms(),
            internal: None,
            access: Access::owned_by(owner),
        }
    }
}

/// Whether the late-data stream `late` exists already, as this stream would make it (a
/// restore: pg_dump creates it first, as `pg_depend` orders them); then the new stream
/// sends its late rows there. Its owner or a superuser may do that; anything else of that
/// name is 42P07.
fn adopts_late_stream(data: &CatalogData, late: &StreamDef, who: &Principal) -> Result<bool> {
    let existing = match data.relation(&late.name) {
        None if !data.topics.contains_key(&late.name) => return Ok(false),
        Some(Relation::Stream(existing, _)) => Some(existing),
        _ => None,
    };
    let fits = existing.is_some_and(|existing| {
        existing.kind == late.kind
            && existing.columns == late.columns
            && existing.key_columns == late.key_columns
            && existing.timestamp_column == late.timestamp_column
            && existing.watermark.is_none()
            && existing.late_data_topic.is_none()
            && (who.superuser || existing.access.owner == who.name)
            && data.query_maintaining(&late.name).is_none()
            && !data
                .streams
                .values()
                .any(|s| s.late_data_topic.as_deref() == Some(late.name.as_str()))
    });
    if !fits {
        return Err(Error::AlreadyExists(format!(
            "late_data_topic \"{}\" already exists; it is created with the stream (or, when \
             restoring, must be a stream of the columns it would be given)",
            late.name
        )));
    }
    Ok(true)
}

/// The stream the late rows of `stream` go to: its columns, then `query` (the query that
/// dropped the row), `partition` and `offset` (where the row is in `stream`), keyed and
/// timed as `stream` is.
fn late_stream(
    name: &str,
    stream: &str,
    columns: &[ColumnDef],
    key_columns: &[String],
    timestamp_column: Option<&str>,
) -> Result<StreamDef> {
    let added = [
        ("query", SqlType::Text),
        ("partition", SqlType::Integer),
        ("offset", SqlType::BigInt),
    ];
    let mut all = columns.to_vec();
    for (column, sql_type) in added {
        if columns.iter().any(|c| c.name == column) {
            return Err(Error::plan(
                "42701",
                format!(
                    "late_data_topic adds a column \"{column}\", which \"{stream}\" has already"
                ),
            ));
        }
        all.push(ColumnDef {
            name: column.into(),
            sql_type,
            nullable: false,
        });
    }
    Ok(StreamDef {
        name: name.to_string(),
        kind: StreamKind::Stream,
        topic: name.to_string(),
        columns: all,
        key_columns: key_columns.to_vec(),
        value_format: ValueFormat::Json,
        timestamp_column: timestamp_column.map(str::to_string),
        watermark: None,
        late_data_topic: None,
        access: Access::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_kafka_and_spark_users_write_them() {
        assert_eq!(parse_duration_ms("7 days").unwrap(), Some(7 * 86_400_000));
        assert_eq!(
            parse_duration_ms("1 hour 30 minutes").unwrap(),
            Some(5_400_000)
        );
        assert_eq!(parse_duration_ms("500ms").unwrap(), Some(500));
        assert_eq!(parse_duration_ms("60000").unwrap(), Some(60_000));
        assert_eq!(parse_duration_ms("forever").unwrap(), None);
        assert_eq!(
            parse_duration_ms("7 fortnights").unwrap_err().sqlstate(),
            "22007"
        );
        assert_eq!(format_ms(7 * 86_400_000), "1 week");
        assert_eq!(format_ms(2 * 86_400_000), "2 days");
    }
}
