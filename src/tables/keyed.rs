//! Tables as DataFusion reads them: the latest row per primary key.
//!
//! A table's topic holds every version of every key, each key in the partition its key
//! hashes to; [`KeyedTable`] reads the partitions up to the statement's snapshot and keeps,
//! per key, the record with the highest offset, leaving out keys whose latest record is a
//! tombstone. Each output partition reads whole log partitions, so the deduplication needs
//! no exchange. Filters are applied above it (a filter on a value is about the current row,
//! not about older versions), except those on `_partition`, which narrow the read.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use super::blocking_scan::{BlockingScanExec, BlockingSource};
use super::scan::{ScanBounds, StreamScan, TableColumn};
use super::stream_table::StatementSnapshot;
use crate::catalog::{OFFSET_COLUMN, PARTITION_COLUMN, StreamDef, TopicDef};
use crate::error::Error;
use crate::storage::{HEADERS_COLUMN, KEY_COLUMN, Log, TIMESTAMP_COLUMN, headers_type};

/// Rows emitted at a time.
const OUTPUT_ROWS: usize = 8192;

/// A table, for reading: its declared columns, then the hidden columns of its rows'
/// latest records.
#[derive(Debug)]
pub struct KeyedTable {
    name: String,
    topic: TopicDef,
    schema: SchemaRef,
    columns: Vec<TableColumn>,
    /// Where the records keep their key and tombstone flag.
    key: TableColumn,
    tombstone: TableColumn,
    log: Arc<Log>,
}

impl KeyedTable {
    pub fn new(stream: &StreamDef, topic: &TopicDef, log: Arc<Log>) -> KeyedTable {
        let n = stream.columns.len();
        // The storage schema: the declared columns, the tombstone flag, then the system
        // columns (timestamp, key, headers).
        let mut fields: Vec<Field> = stream
            .value_fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut columns: Vec<TableColumn> = (0..n).map(TableColumn::Stored).collect();
        fields.push(Field::new(PARTITION_COLUMN, DataType::Int32, false));
        columns.push(TableColumn::Partition);
        fields.push(Field::new(OFFSET_COLUMN, DataType::Int64, false));
        columns.push(TableColumn::Offset);
        fields.push(Field::new(
            TIMESTAMP_COLUMN,
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ));
        columns.push(TableColumn::Stored(n + 1));
        fields.push(Field::new(KEY_COLUMN, DataType::Binary, true));
        columns.push(TableColumn::Stored(n + 2));
        fields.push(Field::new(HEADERS_COLUMN, headers_type(), true));
        columns.push(TableColumn::Stored(n + 3));
        KeyedTable {
            name: stream.name.clone(),
            topic: topic.clone(),
            schema: Arc::new(Schema::new(fields)),
            columns,
            key: TableColumn::Stored(n + 2),
            tombstone: TableColumn::Stored(n),
            log,
        }
    }
}

#[async_trait]
impl TableProvider for KeyedTable {
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
        // Only `_partition` narrows the read; DataFusion applies every filter anyway.
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
            Error::UnknownRelation(format!("table \"{}\" was dropped", self.name))
        })?;
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.columns.len()).collect(),
        };
        // What is read: the projection, then the key and the tombstone flag.
        let mut read: Vec<TableColumn> = projection.iter().map(|i| self.columns[*i]).collect();
        read.push(self.key);
        read.push(self.tombstone);
        // Tombstones are read too, with NULLs where the rows have values.
        let mut read_fields: Vec<Field> = projection
            .iter()
            .map(|i| self.schema.field(*i).clone().with_nullable(true))
            .collect();
        read_fields.push(Field::new("__key", DataType::Binary, true));
        read_fields.push(Field::new("__tombstone", DataType::Boolean, true));
        let all =
            ScanBounds::from_filters(filters, &self.schema, &self.name, self.topic.partitions)?;
        let bounds = ScanBounds {
            partitions: all.partitions,
            ..ScanBounds::all()
        };
        let source = LatestRows {
            scan: StreamScan::new(self.name.clone(), topic, &snapshot, read, bounds),
            read_schema: Arc::new(Schema::new(read_fields)),
            width: projection.len(),
        };
        let exec =
            BlockingScanExec::new(source, Arc::new(self.schema.project(&projection)?), limit);
        Ok(Arc::new(exec))
    }
}

/// The latest row of each key a stream scan reads, tombstones left out.
#[derive(Debug)]
struct LatestRows {
    /// Reads the output columns, then the key, then the tombstone flag.
    scan: StreamScan,
    read_schema: SchemaRef,
    /// How many output columns there are.
    width: usize,
}

impl BlockingSource for LatestRows {
    fn name(&self) -> &'static str {
        "TableScanExec"
    }

    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.scan.describe(f)?;
        write!(f, ", latest per key")
    }

    fn partitions(&self) -> usize {
        self.scan.partitions()
    }

    fn read(
        &self,
        partition: usize,
        schema: &SchemaRef,
        emit: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> DfResult<()> {
        let mut batches = vec![];
        self.scan.read(partition, &self.read_schema, &mut |batch| {
            batches.push(batch);
            true
        })?;
        // Later records of a key replace earlier ones: the scan reads each log partition in
        // offset order, and a key's records are all in one partition.
        let mut latest: HashMap<&[u8], (usize, usize)> = HashMap::new();
        for (b, batch) in batches.iter().enumerate() {
            let keys = batch.column(self.width).as_binary::<i32>();
            for i in 0..batch.num_rows() {
                if keys.is_valid(i) {
                    latest.insert(keys.value(i), (b, i));
                }
            }
        }
        let mut rows: Vec<(usize, usize)> = latest
            .into_values()
            .filter(|(b, i)| {
                let tombstone = batches[*b].column(self.width + 1).as_boolean();
                !(tombstone.is_valid(*i) && tombstone.value(*i))
            })
            .collect();
        rows.sort_unstable();
        if self.width == 0 {
            // Nothing but a count: rows without columns.
            for chunk in rows.chunks(OUTPUT_ROWS) {
                let options = RecordBatchOptions::new().with_row_count(Some(chunk.len()));
                if !emit(RecordBatch::try_new_with_options(
                    schema.clone(),
                    vec![],
                    &options,
                )?) {
                    break;
                }
            }
            return Ok(());
        }
        let columns: Vec<usize> = (0..self.width).collect();
        let projected = batches
            .iter()
            .map(|b| b.project(&columns))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&RecordBatch> = projected.iter().collect();
        for chunk in rows.chunks(OUTPUT_ROWS) {
            let out = arrow::compute::interleave_record_batch(&refs, chunk)?;
            let out = RecordBatch::try_new(schema.clone(), out.columns().to_vec())?;
            if !emit(out) {
                break;
            }
        }
        Ok(())
    }
}
