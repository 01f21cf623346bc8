//! System tables (`sys.*`): the log's state as relations, built when a query names them.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::error::Result as DfResult;

use super::provider::Tables;

pub const TABLES: [&str; 2] = ["topics", "partitions"];

/// One row per partition of every topic, as of now.
struct PartitionRow {
    topic: String,
    stream: Option<String>,
    partition: i32,
    log_start_offset: i64,
    high_watermark: i64,
    bytes: i64,
    segments: i32,
}

fn partition_rows(tables: &Tables) -> Vec<PartitionRow> {
    let data = tables.catalog.snapshot();
    let snapshot = tables.log.snapshot();
    let mut rows = vec![];
    for topic in data.topics.values() {
        let Some(log_topic) = tables.log.topic(topic.id) else {
            continue;
        };
        for partition in &log_topic.partitions {
            let stats = partition.stats();
            rows.push(PartitionRow {
                topic: topic.name.clone(),
                stream: topic.stream.clone(),
                partition: partition.id.0 as i32,
                log_start_offset: stats.log_start_offset.0 as i64,
                high_watermark: snapshot.high_watermark(topic.id, partition.id).0 as i64,
                bytes: stats.size_bytes as i64,
                segments: stats.segments as i32,
            });
        }
    }
    rows
}

pub fn table(name: &str, tables: &Tables) -> DfResult<Option<Arc<dyn TableProvider>>> {
    let batch = match name {
        "partitions" => partitions(tables)?,
        "topics" => topics(tables)?,
        _ => return Ok(None),
    };
    Ok(Some(Arc::new(MemTable::try_new(
        batch.schema(),
        vec![vec![batch]],
    )?)))
}

fn partitions(tables: &Tables) -> DfResult<RecordBatch> {
    let rows = partition_rows(tables);
    let schema = Arc::new(Schema::new(vec![
        Field::new("topic", DataType::Utf8, false),
        Field::new("stream", DataType::Utf8, true),
        Field::new("partition", DataType::Int32, false),
        Field::new("log_start_offset", DataType::Int64, false),
        Field::new("high_watermark", DataType::Int64, false),
        Field::new("records", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("segments", DataType::Int32, false),
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
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn topics(tables: &Tables) -> DfResult<RecordBatch> {
    let data = tables.catalog.snapshot();
    let rows = partition_rows(tables);
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
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}
