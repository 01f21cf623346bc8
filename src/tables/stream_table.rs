//! Streams and topics as DataFusion tables.
//!
//! [`StreamTable`] is what `SELECT … FROM clicks` reads: the declared columns, then the
//! hidden columns `_partition`, `_offset`, `_timestamp`, `_key` (left out of `SELECT *` by
//! the planner's rewrite, selectable by name). Every scan is bounded: it reads each
//! partition up to the high watermark of the statement's log snapshot.
//!
//! [`StreamSinkTable`] is the same relation as an `INSERT` target: only the declared columns,
//! written through [`RowWriter`] as one atomic append per statement.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan};
use futures::StreamExt;

use super::event_time::EventTimeScan;
use super::scan::{Ranges, ScanBounds, StreamScan, StreamScanExec, TableColumn};
use crate::catalog::{
    CatalogData, OFFSET_COLUMN, PARTITION_COLUMN, Relation, TopicDef, VALUE_COLUMN,
};
use crate::error::Error;
use crate::ingest::WriteTarget;
use crate::ingest::writer::{PendingWrite, RowWriter};
use crate::storage::{HEADERS_COLUMN, KEY_COLUMN, Log, Snapshot, TIMESTAMP_COLUMN, headers_type};

/// The log snapshot a statement reads, set on the session before planning so that every
/// scan in the statement sees the same committed offsets.
#[derive(Debug, Clone)]
pub struct StatementSnapshot(pub Arc<Snapshot>);

impl StatementSnapshot {
    /// The snapshot of the statement `state` plans, or the log's latest outside a statement.
    pub fn of(state: &dyn Session, log: &Log) -> Arc<Snapshot> {
        state
            .config()
            .get_extension::<StatementSnapshot>()
            .map(|s| s.0.clone())
            .unwrap_or_else(|| log.snapshot())
    }
}

/// A stream or schemaless topic, for reading.
#[derive(Debug)]
pub struct StreamTable {
    pub name: String,
    topic: TopicDef,
    schema: SchemaRef,
    columns: Vec<TableColumn>,
    log: Arc<Log>,
    /// For a continuous query: the ranges its current epoch reads, instead of a snapshot.
    epoch: Option<Arc<EpochRanges>>,
}

/// What one epoch of a continuous query reads, set before it is planned: offset ranges,
/// and, over a stream with a watermark, what its scan learns about event time.
#[derive(Debug, Default)]
pub struct EpochRanges {
    pub ranges: std::sync::Mutex<Ranges>,
    pub event_time: Option<Arc<EventTimeScan>>,
    /// How many threads read the ranges at most.
    pub parallelism: usize,
}

/// The hidden columns of the rows of a topic whose records store `values` value columns
/// (then the timestamp, key and headers): `_partition`, `_offset`, `_timestamp`, `_key`,
/// `_headers`.
pub(crate) fn hidden_columns(values: usize) -> [(Field, TableColumn); 5] {
    [
        (
            Field::new(PARTITION_COLUMN, DataType::Int32, false),
            TableColumn::Partition,
        ),
        (
            Field::new(OFFSET_COLUMN, DataType::Int64, false),
            TableColumn::Offset,
        ),
        (
            Field::new(
                TIMESTAMP_COLUMN,
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
            TableColumn::Stored(values),
        ),
        (
            Field::new(KEY_COLUMN, DataType::Binary, true),
            TableColumn::Stored(values + 1),
        ),
        (
            Field::new(HEADERS_COLUMN, headers_type(), true),
            TableColumn::Stored(values + 2),
        ),
    ]
}

impl StreamTable {
    /// `None` for relations that are not streams or topics.
    pub fn of(
        catalog: &CatalogData,
        relation: &Relation<'_>,
        log: Arc<Log>,
    ) -> Option<StreamTable> {
        let (name, topic) = match relation {
            Relation::Stream(stream, topic) => (stream.name.clone(), (*topic).clone()),
            Relation::Topic(topic) => (topic.name.clone(), (*topic).clone()),
            Relation::External(_) | Relation::View(_) => return None,
        };
        let values = catalog.value_fields(&topic);
        let n = values.len();
        let mut fields: Vec<Field> = vec![];
        let mut columns = vec![];
        let stream = matches!(relation, Relation::Stream(..));
        if !stream {
            // A schemaless topic shows its key and value.
            fields.push(Field::new(KEY_COLUMN, DataType::Binary, true));
            columns.push(TableColumn::Stored(n + 1));
            fields.push(Field::new(VALUE_COLUMN, DataType::Binary, true));
            columns.push(TableColumn::Stored(0));
        } else {
            for (i, f) in values.iter().enumerate() {
                fields.push(f.as_ref().clone().with_nullable(true));
                columns.push(TableColumn::Stored(i));
            }
        }
        for (field, column) in hidden_columns(n) {
            // A schemaless topic shows its key first.
            if stream || field.name() != KEY_COLUMN {
                fields.push(field);
                columns.push(column);
            }
        }
        Some(StreamTable {
            name,
            topic,
            schema: Arc::new(Schema::new(fields)),
            columns,
            log,
            epoch: None,
        })
    }

    /// The same relation for a continuous query: its scans read the epoch's `ranges`.
    pub fn for_epochs(mut self, ranges: Arc<EpochRanges>) -> StreamTable {
        self.epoch = Some(ranges);
        self
    }
}

#[async_trait]
impl TableProvider for StreamTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // The scan narrows what it reads by the filters on hidden columns it understands;
        // DataFusion still applies every filter to the rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let snapshot = StatementSnapshot::of(state, &self.log);
        let topic = self.log.topic(self.topic.id).ok_or_else(|| {
            Error::UnknownRelation(format!("stream \"{}\" was dropped", self.name))
        })?;
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.columns.len()).collect(),
        };
        let columns = projection.iter().map(|i| self.columns[*i]).collect();
        let scan = match &self.epoch {
            Some(epoch) => {
                let ranges = epoch.ranges.lock().expect("epoch ranges lock").clone();
                StreamScan::of_epoch(
                    self.name.clone(),
                    topic,
                    columns,
                    ranges,
                    epoch.parallelism,
                    epoch.event_time.clone(),
                )
            }
            None => {
                let bounds = ScanBounds::from_filters(
                    filters,
                    &self.schema,
                    &self.name,
                    self.topic.partitions,
                )?;
                StreamScan::new(self.name.clone(), topic, &snapshot, columns, bounds)
            }
        };
        let exec = StreamScanExec::new(scan, Arc::new(self.schema.project(&projection)?), limit);
        Ok(Arc::new(exec))
    }
}

/// A stream or topic as an `INSERT` target: its declared columns only.
#[derive(Debug)]
pub struct StreamSinkTable {
    target: WriteTarget,
    writer: Arc<RowWriter>,
    chunk_bytes: usize,
}

impl StreamSinkTable {
    pub fn new(target: WriteTarget, writer: Arc<RowWriter>, chunk_bytes: usize) -> StreamSinkTable {
        StreamSinkTable {
            target,
            writer,
            chunk_bytes,
        }
    }
}

#[async_trait]
impl TableProvider for StreamSinkTable {
    fn schema(&self) -> SchemaRef {
        self.target.row_schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Err(Error::Internal(format!(
            "the insert target \"{}\" is not readable",
            self.target.relation
        ))
        .into())
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return Err(Error::Unsupported(format!(
                "streams are append-only: {insert_op} into \"{}\" is not supported",
                self.target.relation
            ))
            .into());
        }
        let sink = StreamSink {
            target: self.target.clone(),
            writer: self.writer.clone(),
            chunk_bytes: self.chunk_bytes,
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

/// Collects an `INSERT`'s rows and appends them as one atomic write (or, past
/// `chunk_bytes`, in atomic chunks of about that size).
struct StreamSink {
    target: WriteTarget,
    writer: Arc<RowWriter>,
    chunk_bytes: usize,
}

impl fmt::Debug for StreamSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamSink({})", self.target.relation)
    }
}

impl DisplayAs for StreamSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamSink: stream={}", self.target.relation)
    }
}

#[async_trait]
impl DataSink for StreamSink {
    fn schema(&self) -> &SchemaRef {
        &self.target.row_schema
    }

    async fn write_all(
        &self,
        mut data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> DfResult<u64> {
        let mut pending = PendingWrite::default();
        let mut written = 0;
        while let Some(batch) = data.next().await {
            let batch = batch?;
            // Rows arrive in the sink's schema, possibly with other field names or
            // nullability; the columns are what count.
            let rows = arrow::array::RecordBatch::try_new(
                self.target.row_schema.clone(),
                batch.columns().to_vec(),
            )
            .map_err(|e| Error::Internal(format!("rows for \"{}\": {e}", self.target.relation)))?;
            self.writer.stage(&self.target, &rows, &mut pending)?;
            if pending.bytes() >= self.chunk_bytes {
                written += self.writer.commit(std::mem::take(&mut pending)).await?;
            }
        }
        written += self.writer.commit(pending).await?;
        Ok(written)
    }
}
