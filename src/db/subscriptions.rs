//! Subscriptions, SQL's consumer groups: `CREATE SUBSCRIPTION`, `ALTER SUBSCRIPTION … RESET
//! TO`, `DROP SUBSCRIPTION`, and the cursors that read them.
//!
//! A subscription is a catalog entry (its name and stream) plus the group's committed
//! offsets in the offsets store ([`crate::groups`]). Creating one commits its starting
//! offsets first, then the catalog; dropping one commits the catalog first, then deletes the
//! offsets. Start-up removes offsets whose subscription the catalog does not have, so a
//! crash between the two leaves nothing behind.

use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use datafusion::dataframe::DataFrame;

use super::cursor::{Cursor, GroupCursor};
use super::{Database, Output, command};
use crate::catalog::access;
use crate::catalog::{
    Access, CatalogData, Principal, Privilege, Relation, SubscriptionDef, TopicDef, validate_name,
};
use crate::engine::PushQuery;
use crate::error::{Error, Result};
use crate::groups::{Groups, PartitionOffset, Reader};
use crate::sql::parser::{CreateSubscription, Drop, StartAt};
use crate::sql::{self, Statement};
use crate::storage::now_ms;
use crate::storage::{Offset, PartitionId};
use crate::tables::stream_table::StatementSnapshot;

impl Database {
    pub(super) async fn create_subscription(
        &self,
        c: CreateSubscription,
        who: &Principal,
        notices: &mut Vec<String>,
    ) -> Result<Output> {
        validate_name("subscription", &c.name)?;
        let mut start = StartAt::Latest;
        for (key, value) in &c.options {
            match key.as_str() {
                "start" => start = StartAt::parse(value.as_text())?,
                other => {
                    return Err(Error::plan(
                        "22023",
                        format!("unknown subscription option \"{other}\" (start)"),
                    ));
                }
            }
        }
        let _ddl = self.tables.catalog.ddl_lock().await;
        let data = self.tables.catalog.snapshot();
        data.check_create(who)?;
        if data.subscriptions.contains_key(&c.name) {
            let message = format!("subscription \"{}\" already exists", c.name);
            if c.if_not_exists {
                notices.push(format!("{message}, skipping"));
                return Ok(command("CREATE SUBSCRIPTION"));
            }
            return Err(Error::plan("42710", message));
        }
        let topic = readable_topic(&data, &c.relation)?;
        data.check(who, Privilege::Select, &c.relation)?;
        let offsets = self.offsets_at(&data, &c.relation, topic, &start).await?;
        let offsets = self.tables.groups.initial(&c.name, offsets)?;
        let mut new = (*data).clone();
        new.subscriptions.insert(
            c.name.clone(),
            SubscriptionDef {
                name: c.name,
                relation: c.relation,
                start: start.to_string(),
                created_at_ms: now_ms(),
                access: Access::owned_by(&who.name),
            },
        );
        self.tables.catalog.commit(new, vec![offsets]).await?;
        Ok(command("CREATE SUBSCRIPTION"))
    }

    /// `ALTER SUBSCRIPTION name RESET TO …`: moves the group's committed offsets, as Kafka's
    /// `kafka-consumer-groups --reset-offsets` does, and like it only while no one reads.
    pub(super) async fn reset_subscription(
        &self,
        name: &str,
        to: StartAt,
        who: &Principal,
    ) -> Result<Output> {
        let _ddl = self.tables.catalog.ddl_lock().await;
        let data = self.tables.catalog.snapshot();
        let sub = subscription(&data, name)?;
        who.require_owner(&sub.access.owner, "subscription", &sub.name)?;
        let topic = readable_topic(&data, &sub.relation)?;
        if let Some(reader) = self.tables.groups.reader(name) {
            return Err(in_use(name, reader, "reset"));
        }
        let offsets = self.offsets_at(&data, &sub.relation, topic, &to).await?;
        self.tables.groups.replace(name, offsets).await?;
        Ok(command("ALTER SUBSCRIPTION"))
    }

    pub(super) async fn drop_subscriptions(
        &self,
        d: Drop,
        who: &Principal,
        notices: &mut Vec<String>,
    ) -> Result<Output> {
        let _ddl = self.tables.catalog.ddl_lock().await;
        let data = self.tables.catalog.snapshot();
        let mut new = (*data).clone();
        let mut doomed = vec![];
        for name in &d.names {
            if let Some(sub) = data.subscriptions.get(name) {
                who.require_owner(&sub.access.owner, "subscription", &sub.name)?;
            }
            if new.subscriptions.remove(name).is_none() {
                if d.if_exists {
                    notices.push(format!("subscription \"{name}\" does not exist, skipping"));
                    continue;
                }
                subscription(&data, name)?;
            }
            if let Some(reader) = self.tables.groups.reader(name) {
                return Err(in_use(name, reader, "dropped"));
            }
            doomed.push(name.clone());
        }
        let forgotten = doomed.iter().map(|name| Groups::forget(name)).collect();
        self.tables.catalog.commit(new, forgotten).await?;
        Ok(command("DROP SUBSCRIPTION"))
    }

    /// `DECLARE c SUBSCRIPTION CURSOR FOR name`: a cursor reading the subscription's stream
    /// from the group's committed offsets.
    pub(super) async fn subscription_cursor(&self, name: &str, who: &Principal) -> Result<Cursor> {
        let data = self.tables.catalog.snapshot();
        let sub = subscription(&data, name)?;
        if !sub.access.allows(who, Privilege::Usage) && !sub.access.allows(who, Privilege::Select) {
            return Err(access::denied(Privilege::Usage, "subscription", name));
        }
        data.check(who, Privilege::Select, &sub.relation)?;
        let topic = readable_topic(&data, &sub.relation)?;
        let reading = self.tables.groups.start_reading(name, Reader::Cursor)?;
        let committed = self.tables.groups.committed(name)?;
        let position = |p: PartitionId| {
            committed
                .as_ref()
                .and_then(|c| c.offsets.get(&(topic.id, p)).copied())
        };
        let sql = format!("SELECT * FROM \"{}\"", sub.relation);
        // A partition the group has no offset for starts at its first record (Kafka's
        // auto.offset.reset = earliest). A committed offset retention has deleted since
        // fails the FETCH, until the subscription is reset.
        let log = self.tables.log.clone();
        let query = PushQuery::starting_at(&self.engine, &sql, &data, |end| {
            position(end.partition).unwrap_or_else(|| log.log_start(topic.id, end.partition))
        })
        .await?;
        Ok(Cursor::group(GroupCursor {
            group: name.to_string(),
            query: Box::new(query),
            moved: false,
            _reading: reading,
        }))
    }

    /// Per partition of `topic`, where `start` is now: its first record (the log start
    /// offset), its end (the high watermark), or its first record at or after a time.
    async fn offsets_at(
        &self,
        data: &CatalogData,
        relation: &str,
        topic: &TopicDef,
        start: &StartAt,
    ) -> Result<Vec<PartitionOffset>> {
        let snapshot = self.tables.log.snapshot();
        let log_topic = self.tables.log.topic(topic.id).ok_or_else(|| {
            Error::Internal(format!("topic \"{}\" is not in the log", topic.name))
        })?;
        let mut offsets: Vec<_> = log_topic
            .partitions
            .iter()
            .map(|p| {
                let offset = match start {
                    StartAt::Earliest => p.stats().log_start_offset,
                    StartAt::Latest | StartAt::Timestamp(_) => {
                        snapshot.high_watermark(topic.id, p.id)
                    }
                };
                (topic.id, p.id, offset)
            })
            .collect();
        if let StartAt::Timestamp(ms) = start {
            let firsts = self.first_offsets_since(data, relation, *ms).await?;
            for (partition, offset) in firsts {
                if let Some(o) = offsets.iter_mut().find(|o| o.1 == partition) {
                    o.2 = offset;
                }
            }
        }
        Ok(offsets)
    }

    /// Per partition, the offset of the first record of `relation` stamped at or after
    /// `ms` (Kafka's offsets-for-times); partitions without one are left out.
    async fn first_offsets_since(
        &self,
        data: &CatalogData,
        relation: &str,
        ms: i64,
    ) -> Result<Vec<(PartitionId, Offset)>> {
        let sql = format!(
            "SELECT _partition, min(_offset) FROM \"{relation}\" \
             WHERE _timestamp >= to_timestamp_millis({ms}) GROUP BY _partition"
        );
        let Some(Statement::DataFusion(statement)) = sql::parse(&sql)?.pop() else {
            return Err(Error::Internal("offsets-for-times query".into()));
        };
        let mut state = self.state.clone();
        state
            .config_mut()
            .set_extension(Arc::new(StatementSnapshot(self.tables.log.snapshot())));
        let plan = sql::plan(&state, *statement, data).await?;
        let batches: Vec<RecordBatch> = DataFrame::new(state, plan).collect().await?;
        let mut firsts = vec![];
        for batch in batches {
            let partitions = batch.column(0).as_primitive::<Int32Type>();
            let offsets = batch.column(1).as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                firsts.push((
                    PartitionId(partitions.value(row) as u32),
                    Offset(offsets.value(row) as u64),
                ));
            }
        }
        Ok(firsts)
    }
}

fn subscription<'a>(data: &'a CatalogData, name: &str) -> Result<&'a SubscriptionDef> {
    data.subscriptions
        .get(name)
        .ok_or_else(|| Error::plan("42704", format!("subscription \"{name}\" does not exist")))
}

/// The topic a subscription can read: a stream's, or a schemaless topic.
fn readable_topic<'a>(data: &'a CatalogData, relation: &str) -> Result<&'a TopicDef> {
    match data.relation(relation) {
        Some(Relation::Stream(_, topic) | Relation::Topic(topic)) => Ok(topic),
        Some(Relation::View(_)) => Err(Error::Unsupported(format!(
            "\"{relation}\" is a materialized view; a subscription reads a stream (SUBSCRIBE {relation} streams a view's changes)"
        ))),
        Some(Relation::External(_)) => Err(Error::Unsupported(format!(
            "\"{relation}\" is an external table (files); a subscription reads a stream"
        ))),
        None => Err(Error::UnknownRelation(format!(
            "relation \"{relation}\" does not exist"
        ))),
    }
}

fn in_use(name: &str, reader: Reader, what: &str) -> Error {
    let first = match reader {
        Reader::Cursor => "close the cursor (COMMIT or ROLLBACK)",
        Reader::Kafka => "stop its Kafka consumers",
    };
    Error::plan(
        "55006",
        format!(
            "subscription \"{name}\" is being read by {reader} and cannot be {what}; {first} first"
        ),
    )
}
