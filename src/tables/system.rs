//! System tables (`sys.*`): the log's state as relations, built when a query names them.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};

use super::{Continuous, QueryStatus, Tables};
use crate::catalog::Relation;
use crate::groups::Groups;
use crate::progress::CopyProgress;
use crate::storage::partition::Traffic;
use crate::storage::{Holds, PartitionId, TopicId};

pub const TABLES: [&str; 6] = [
    "topics",
    "partitions",
    "queries",
    "watermarks",
    "consumer_groups",
    "copies",
];

/// One row per partition of every topic, as of now.
pub struct PartitionRow {
    pub topic: String,
    pub topic_id: TopicId,
    pub stream: Option<String>,
    pub partition: i32,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub bytes: i64,
    pub segments: i32,
    /// Bytes on local disk and in the object store (tiered storage).
    pub local_bytes: i64,
    pub remote_bytes: i64,
    pub remote_segments: i32,
    /// The first offset a reader still needs, and who (the furthest behind).
    pub held_from: Option<i64>,
    pub held_by: Option<String>,
    /// Records and bytes in and out since the server started.
    pub traffic: Arc<Traffic>,
}

/// Each partition's row; with `holds`, who holds what of it (`sys.partitions`).
pub fn partition_rows(tables: &Tables, holds: Option<&Holds>) -> Vec<PartitionRow> {
    let data = tables.catalog.snapshot();
    let snapshot = tables.log.snapshot();
    let mut rows = vec![];
    for topic in data.topics.values() {
        let Some(log_topic) = tables.log.topic(topic.id) else {
            continue;
        };
        for partition in &log_topic.partitions {
            let stats = partition.stats();
            let held = holds.and_then(|h| h.furthest_behind(topic.id, partition.id));
            rows.push(PartitionRow {
                held_from: held.as_ref().map(|(offset, _)| offset.0 as i64),
                held_by: held.map(|(_, holders)| holders.join(", ")),
                topic: topic.name.clone(),
                topic_id: topic.id,
                traffic: partition.traffic.clone(),
                stream: topic.stream.clone(),
                partition: partition.id.0 as i32,
                log_start_offset: stats.log_start_offset.0 as i64,
                high_watermark: snapshot.high_watermark(topic.id, partition.id).0 as i64,
                bytes: stats.size_bytes as i64,
                segments: stats.segments as i32,
                local_bytes: stats.local_bytes as i64,
                remote_bytes: stats.remote_bytes as i64,
                remote_segments: stats.remote_segments as i32,
            });
        }
    }
    rows
}

pub fn table(
    name: &str,
    tables: &Tables,
    continuous: &Weak<dyn Continuous>,
) -> DfResult<Option<Arc<dyn TableProvider>>> {
    let batch = match name {
        "partitions" => partitions(tables)?,
        "topics" => topics(tables)?,
        "queries" => queries(continuous)?,
        "watermarks" => watermarks(continuous)?,
        "consumer_groups" => consumer_groups(tables)?,
        "copies" => copies(tables)?,
        _ => return Ok(None),
    };
    Ok(Some(Arc::new(MemTable::try_new(
        batch.schema(),
        vec![vec![batch]],
    )?)))
}

fn partitions(tables: &Tables) -> DfResult<RecordBatch> {
    let rows = partition_rows(tables, Some(&tables.log.holds()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("topic", DataType::Utf8, false),
        Field::new("stream", DataType::Utf8, true),
        Field::new("partition", DataType::Int32, false),
        Field::new("log_start_offset", DataType::Int64, false),
        Field::new("high_watermark", DataType::Int64, false),
        Field::new("records", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("segments", DataType::Int32, false),
        Field::new("held_from", DataType::Int64, true),
        Field::new("held_by", DataType::Utf8, true),
        Field::new("local_bytes", DataType::Int64, false),
        Field::new("remote_bytes", DataType::Int64, false),
        Field::new("remote_segments", DataType::Int32, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.topic))),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.stream.as_deref()),
        )),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.partition),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.log_start_offset),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.high_watermark),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.high_watermark - r.log_start_offset),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.bytes))),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.segments),
        )),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.held_from))),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.held_by.as_deref()),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.local_bytes),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.remote_bytes),
        )),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.remote_segments),
        )),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn topics(tables: &Tables) -> DfResult<RecordBatch> {
    let data = tables.catalog.snapshot();
    let rows = partition_rows(tables, None);
    let topics: Vec<_> = data.topics.values().collect();
    let sum = |name: &str, f: &dyn Fn(&PartitionRow) -> i64| -> i64 {
        rows.iter().filter(|r| r.topic == name).map(f).sum()
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("topic", DataType::Utf8, false),
        Field::new("stream", DataType::Utf8, true),
        Field::new("partitions", DataType::Int32, false),
        Field::new("compression", DataType::Utf8, false),
        Field::new("retention_ms", DataType::Int64, true),
        Field::new("retention_bytes", DataType::Int64, true),
        Field::new("segment_bytes", DataType::Int64, false),
        Field::new("records", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("segments", DataType::Int64, false),
        Field::new("cleanup_policy", DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            topics.iter().map(|t| &t.name),
        )),
        Arc::new(StringArray::from_iter(
            topics.iter().map(|t| t.stream.as_deref()),
        )),
        Arc::new(Int32Array::from_iter_values(
            topics.iter().map(|t| t.partitions as i32),
        )),
        Arc::new(StringArray::from_iter_values(
            topics.iter().map(|t| t.compression.name()),
        )),
        Arc::new(Int64Array::from_iter(
            topics.iter().map(|t| t.retention_ms.map(|v| v as i64)),
        )),
        Arc::new(Int64Array::from_iter(
            topics.iter().map(|t| t.retention_bytes.map(|v| v as i64)),
        )),
        Arc::new(Int64Array::from_iter_values(
            topics.iter().map(|t| t.segment_bytes as i64),
        )),
        Arc::new(Int64Array::from_iter_values(topics.iter().map(|t| {
            sum(&t.name, &|r| r.high_watermark - r.log_start_offset)
        }))),
        Arc::new(Int64Array::from_iter_values(
            topics.iter().map(|t| sum(&t.name, &|r| r.bytes)),
        )),
        Arc::new(Int64Array::from_iter_values(
            topics.iter().map(|t| sum(&t.name, &|r| r.segments as i64)),
        )),
        Arc::new(StringArray::from_iter_values(
            topics.iter().map(|t| t.cleanup_policy.name()),
        )),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The `COPY … FROM STDIN`s running now, as PostgreSQL's `pg_stat_progress_copy` shows
/// them (with `session` for its `pid`, and the rows committed so far by a large `COPY`'s
/// chunks).
fn copies(tables: &Tables) -> DfResult<RecordBatch> {
    let copies = tables.copies.running();
    let schema = Arc::new(Schema::new(vec![
        Field::new("session", DataType::Int32, false),
        Field::new("user_name", DataType::Utf8, false),
        Field::new("relation", DataType::Utf8, false),
        Field::new("command", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new(
            "started",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("bytes_processed", DataType::Int64, false),
        Field::new("tuples_processed", DataType::Int64, false),
        Field::new("tuples_committed", DataType::Int64, false),
    ]));
    let count = |f: fn(&CopyProgress) -> &AtomicU64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            copies.iter().map(|c| CopyProgress::get(f(c)) as i64),
        ))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from_iter_values(
            copies.iter().map(|c| c.session as i32),
        )),
        Arc::new(StringArray::from_iter_values(
            copies.iter().map(|c| &c.user),
        )),
        Arc::new(StringArray::from_iter_values(
            copies.iter().map(|c| &c.relation),
        )),
        Arc::new(StringArray::from_iter_values(
            copies.iter().map(|_| "COPY FROM"),
        )),
        Arc::new(StringArray::from_iter_values(copies.iter().map(|_| "PIPE"))),
        Arc::new(TimestampMicrosecondArray::from_iter_values(
            copies.iter().map(|c| c.started_ms * 1000),
        )),
        count(|c| &c.bytes),
        count(|c| &c.rows),
        count(|c| &c.committed),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn queries(continuous: &Weak<dyn Continuous>) -> DfResult<RecordBatch> {
    let queries = continuous
        .upgrade()
        .map(|e| e.statuses())
        .unwrap_or_default();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("target", DataType::Utf8, false),
        Field::new("input", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("epoch", DataType::Int64, false),
        Field::new("lag", DataType::Int64, false),
        Field::new("rows_in", DataType::Int64, false),
        Field::new("rows_out", DataType::Int64, false),
        Field::new("rows_per_sec", DataType::Float64, false),
        Field::new("lag_secs", DataType::Float64, false),
        Field::new("catch_up_secs", DataType::Float64, true),
        Field::new(
            "last_checkpoint",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("groups", DataType::Int64, true),
        Field::new("state_bytes", DataType::Int64, false),
        Field::new(
            "watermark",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("late_rows", DataType::Int64, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("sql", DataType::Utf8, false),
    ]));
    let text = |f: &dyn Fn(&QueryStatus) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(queries.iter().map(f)))
    };
    let number = |f: &dyn Fn(&QueryStatus) -> u64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            queries.iter().map(|q| f(q) as i64),
        ))
    };
    let columns: Vec<ArrayRef> = vec![
        number(&|q| q.id.0),
        text(&|q| &q.name),
        text(&|q| q.kind),
        text(&|q| &q.target),
        text(&|q| &q.input),
        text(&|q| q.state),
        number(&|q| q.epoch),
        number(&|q| q.lag),
        number(&|q| q.rows_in),
        number(&|q| q.rows_out),
        Arc::new(Float64Array::from_iter_values(
            queries.iter().map(|q| q.rows_per_sec),
        )),
        Arc::new(Float64Array::from_iter_values(
            queries
                .iter()
                .map(|q| (q.lag_secs * 1000.0).round() / 1000.0),
        )),
        Arc::new(Float64Array::from_iter(
            queries.iter().map(|q| q.catch_up_secs),
        )),
        Arc::new(TimestampMicrosecondArray::from_iter(
            queries
                .iter()
                .map(|q| q.last_checkpoint_ms.map(|ms| ms * 1000)),
        )),
        Arc::new(Int64Array::from_iter(
            queries.iter().map(|q| q.groups.map(|g| g as i64)),
        )),
        number(&|q| q.state_bytes),
        Arc::new(TimestampMicrosecondArray::from_iter(
            queries.iter().map(|q| q.watermark),
        )),
        number(&|q| q.late_rows),
        Arc::new(StringArray::from_iter(
            queries.iter().map(|q| q.error.as_deref()),
        )),
        text(&|q| &q.sql),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// One row per input partition of every continuous query over a stream with a watermark:
/// the greatest value of the watermark expression read from it, whether it is idle (then
/// it does not hold the watermark back), and the query's watermark.
fn watermarks(continuous: &Weak<dyn Continuous>) -> DfResult<RecordBatch> {
    let queries = match continuous.upgrade() {
        Some(c) => c.statuses(),
        None => vec![],
    };
    let rows: Vec<(&QueryStatus, u32, i64, bool)> = queries
        .iter()
        .flat_map(|q| {
            q.event_times
                .iter()
                .map(move |(p, max, idle)| (q, *p, *max, *idle))
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("query", DataType::Utf8, false),
        Field::new("stream", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new(
            "partition_watermark",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("idle", DataType::Boolean, false),
        Field::new(
            "watermark",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.0.name),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.0.input),
        )),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.1 as i32),
        )),
        Arc::new(TimestampMicrosecondArray::from_iter_values(
            rows.iter().map(|r| r.2),
        )),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.3)))),
        Arc::new(TimestampMicrosecondArray::from_iter(
            rows.iter().map(|r| r.0.watermark),
        )),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// One row per partition of every subscription's stream: where the group is, where the
/// stream ends, and the records between (its lag).
/// A consumer group's position in one partition, as `sys.consumer_groups` shows it.
pub struct GroupRow {
    pub group: String,
    pub stream: String,
    pub partition: i32,
    pub committed: Option<i64>,
    pub high: i64,
    /// Whether a subscription cursor reads it now.
    pub reading: bool,
    pub committed_at_ms: Option<i64>,
}

impl GroupRow {
    /// Records after its committed offset, if it committed one.
    pub fn lag(&self) -> Option<i64> {
        self.committed.map(|c| (self.high - c).max(0))
    }
}

/// Every subscription's partitions, then Kafka consumers' groups by what they committed.
pub fn group_rows(tables: &Tables) -> crate::error::Result<Vec<GroupRow>> {
    let data = tables.catalog.snapshot();
    let snapshot = tables.log.snapshot();
    let mut rows = vec![];
    for sub in data.subscriptions.values() {
        let Some(Relation::Stream(_, topic) | Relation::Topic(topic)) =
            data.relation(&sub.relation)
        else {
            continue;
        };
        let offsets = Groups::committed_in(&snapshot, &sub.name)?;
        for p in 0..topic.partitions {
            let p = PartitionId(p);
            rows.push(GroupRow {
                group: sub.name.clone(),
                stream: sub.relation.clone(),
                partition: p.0 as i32,
                committed: offsets
                    .as_ref()
                    .and_then(|o| o.offsets.get(&(topic.id, p)))
                    .map(|o| o.0 as i64),
                high: snapshot.high_watermark(topic.id, p).0 as i64,
                reading: tables.groups.reader(&sub.name).is_some(),
                committed_at_ms: offsets.as_ref().map(|o| o.committed_at_ms),
            });
        }
    }
    // Groups with no subscription: Kafka consumers' groups, by what they committed.
    for offsets in tables.groups.all() {
        if data.subscriptions.contains_key(&offsets.group) {
            continue;
        }
        for (&(topic_id, p), offset) in &offsets.offsets {
            let Some(topic) = data.topics.values().find(|t| t.id == topic_id) else {
                continue;
            };
            rows.push(GroupRow {
                group: offsets.group.clone(),
                stream: topic.stream.clone().unwrap_or_else(|| topic.name.clone()),
                partition: p.0 as i32,
                committed: Some(offset.0 as i64),
                high: snapshot.high_watermark(topic_id, p).0 as i64,
                reading: false,
                committed_at_ms: Some(offsets.committed_at_ms),
            });
        }
    }
    Ok(rows)
}

fn consumer_groups(tables: &Tables) -> DfResult<RecordBatch> {
    let rows = group_rows(tables).map_err(|e| DataFusionError::External(Box::new(e)))?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("group", DataType::Utf8, false),
        Field::new("stream", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("committed", DataType::Int64, true),
        Field::new("high", DataType::Int64, false),
        Field::new("lag", DataType::Int64, true),
        Field::new("reading", DataType::Boolean, false),
        Field::new(
            "committed_at",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.group))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.stream),
        )),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.partition),
        )),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.committed))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.high))),
        Arc::new(Int64Array::from_iter(rows.iter().map(GroupRow::lag))),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.reading)),
        )),
        Arc::new(TimestampMicrosecondArray::from_iter(
            rows.iter().map(|r| r.committed_at_ms.map(|ms| ms * 1000)),
        )),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}
