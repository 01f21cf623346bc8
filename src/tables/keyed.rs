//! Tables as DataFusion reads them: the latest row per primary key.
//!
//! A table's topic holds every version of every key, each key in the partition its key
//! hashes to; [`KeyedTable`] reads the partitions up to the statement's snapshot and keeps,
//! per key, the record with the highest offset, leaving out keys whose latest record is a
//! tombstone. Each output partition reads whole log partitions, so the deduplication needs
//! no exchange. Filters are applied above it (a filter on a value is about the current row,
//! not about older versions), except those on `_partition`, which narrow the read, and
//! those that pin the primary key (`id = 5`, `id IN (…)`): then the table's key index says
//! where those keys' latest records are, and only those records are read, with whatever the
//! index has not read yet — what makes `UPDATE … WHERE id = 5` cost a key, not the table.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use super::blocking_scan::{BlockingScanExec, BlockingSource};
use super::scan::{Ranges, ScanBounds, StreamScan, TableColumn, literal_of};
use super::stream_table::{StatementSnapshot, hidden_columns};
use crate::catalog::{StreamDef, TopicDef};
use crate::error::Error;
use crate::ingest::key::{encode_keys, partition_for_key};
use crate::ingest::writer::RowWriter;
use crate::storage::{Log, Offset, PartitionId, Snapshot};

/// Rows emitted at a time.
const OUTPUT_ROWS: usize = 8192;
/// Reads of more keys than this scan the table.
const MAX_PINNED_KEYS: usize = 10_000;

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
    /// The primary key's columns: name and type, in key order.
    key_columns: Vec<(String, DataType)>,
    /// How many columns are declared (the hidden ones follow).
    declared: usize,
    log: Arc<Log>,
    /// Its key index, for reads of a few keys.
    writer: Arc<RowWriter>,
}

impl KeyedTable {
    pub fn new(
        stream: &StreamDef,
        topic: &TopicDef,
        log: Arc<Log>,
        writer: Arc<RowWriter>,
    ) -> KeyedTable {
        let n = stream.columns.len();
        // The storage schema: the declared columns, the tombstone flag, then the system
        // columns (timestamp, key, headers).
        let mut fields: Vec<Field> = stream
            .value_fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut columns: Vec<TableColumn> = (0..n).map(TableColumn::Stored).collect();
        for (field, column) in hidden_columns(n + 1) {
            fields.push(field);
            columns.push(column);
        }
        KeyedTable {
            name: stream.name.clone(),
            topic: topic.clone(),
            schema: Arc::new(Schema::new(fields)),
            columns,
            key: TableColumn::Stored(n + 2),
            tombstone: TableColumn::Stored(n),
            key_columns: stream
                .key_columns
                .iter()
                .map(|k| {
                    let (_, column) = stream.column(k).expect("key columns are columns");
                    (k.clone(), column.sql_type.arrow())
                })
                .collect(),
            declared: n,
            log,
            writer,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn topic(&self) -> &TopicDef {
        &self.topic
    }

    /// Its declared columns.
    pub fn declared_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(self.schema.fields()[..self.declared].to_vec()))
    }

    /// Its primary key's columns, by position among the declared ones, in key order; empty
    /// for a table without one.
    pub fn key_positions(&self) -> Vec<usize> {
        self.key_columns
            .iter()
            .filter_map(|(name, _)| self.schema.index_of(name).ok())
            .collect()
    }

    /// Reads the records of `ranges`, each in offset order, as batches of the declared
    /// columns, then the record's key (`Binary`), then its tombstone flag (`Boolean`).
    pub fn read_records(
        &self,
        ranges: Ranges,
        emit: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> DfResult<()> {
        let topic = self.log.topic(self.topic.id).ok_or_else(|| {
            Error::UnknownRelation(format!("table \"{}\" was dropped", self.name))
        })?;
        let mut read: Vec<TableColumn> = self.columns[..self.declared].to_vec();
        read.extend([self.key, self.tombstone]);
        let mut fields: Vec<Field> = self.schema.fields()[..self.declared]
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        fields.push(Field::new("__key", DataType::Binary, true));
        fields.push(Field::new("__tombstone", DataType::Boolean, true));
        let scan = StreamScan::of_epoch(self.name.clone(), topic, read, ranges, 1, None);
        let schema = Arc::new(Schema::new(fields));
        for partition in 0..scan.partitions() {
            scan.read(partition, &schema, emit)?;
        }
        Ok(())
    }

    /// The offset ranges that hold the latest records of the keys `filters` pin, as of
    /// `snapshot`; `None` to read everything (not every key column pinned, no index, or an
    /// index ahead of the snapshot).
    fn key_ranges(&self, filters: &[Expr], snapshot: &Snapshot) -> Option<Ranges> {
        let keys = pinned_keys(filters, &self.key_columns)?;
        let keys: Vec<(PartitionId, Vec<u8>)> = keys
            .into_iter()
            .map(|k| (PartitionId(partition_for_key(&k, self.topic.partitions)), k))
            .collect();
        let positions = self.writer.key_positions(self.topic.id, &keys)?;
        let mut ranges: Ranges = vec![];
        for position in positions {
            let high = snapshot.high_watermark(self.topic.id, position.partition);
            if position.indexed_to > high {
                return None; // the index has records the statement must not see
            }
            if let Some(at) = position.at {
                ranges.push((position.partition, at..Offset(at.0 + 1)));
            }
            if position.indexed_to < high {
                ranges.push((position.partition, position.indexed_to..high));
            }
        }
        // Each partition's ranges in offset order, so later records replace earlier ones.
        ranges.sort_by_key(|(p, r)| (p.0, r.start.0, r.end.0));
        ranges.dedup();
        Some(ranges)
    }
}

/// The keys (records' keys, encoded) that `filters` pin: each key column equal to a
/// literal, or for one of them an `IN` list; `None` unless all are pinned.
fn pinned_keys(filters: &[Expr], key_columns: &[(String, DataType)]) -> Option<Vec<Vec<u8>>> {
    if key_columns.is_empty() {
        return None;
    }
    let mut values: Vec<Option<Vec<ScalarValue>>> = vec![None; key_columns.len()];
    let position = |expr: &Expr| match expr {
        Expr::Column(c) => key_columns.iter().position(|(name, _)| *name == c.name),
        _ => None,
    };
    // A literal as the column's type, if it is that type's value exactly.
    let typed = |v: ScalarValue, t: &DataType| -> Option<ScalarValue> {
        let cast = v.cast_to(t).ok()?;
        (!cast.is_null() && cast.cast_to(&v.data_type()).ok()? == v).then_some(cast)
    };
    for conjunct in filters.iter().flat_map(split_conjunction) {
        let Some((column, literals)) = pinned_values(conjunct, &position) else {
            continue;
        };
        let t = &key_columns[column].1;
        let literals = literals
            .into_iter()
            .map(|v| typed(v, t))
            .collect::<Option<Vec<_>>>()?;
        values[column] = Some(literals);
    }
    let values: Vec<Vec<ScalarValue>> = values.into_iter().collect::<Option<_>>()?;
    let combinations: usize = values.iter().map(Vec::len).product();
    if combinations == 0 || combinations > MAX_PINNED_KEYS {
        return None;
    }
    // Every combination of the pinned values, as rows of the key columns.
    let mut columns: Vec<Vec<ScalarValue>> = vec![vec![]; values.len()];
    for n in 0..combinations {
        let mut rest = n;
        for (c, vs) in values.iter().enumerate() {
            columns[c].push(vs[rest % vs.len()].clone());
            rest /= vs.len();
        }
    }
    let arrays = columns
        .into_iter()
        .map(ScalarValue::iter_to_array)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let fields: Vec<Field> = key_columns
        .iter()
        .map(|(name, t)| Field::new(name, t.clone(), true))
        .collect();
    let rows = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).ok()?;
    let indices: Vec<usize> = (0..key_columns.len()).collect();
    let keys = encode_keys(&rows, &indices).ok()?;
    Some((0..keys.len()).map(|i| keys.value(i).to_vec()).collect())
}

/// The key column `expr` pins and the literals it may be: `k = 1`, `k IN (1, 2)`, or
/// `k = 1 OR k = 2` (DataFusion's form of a short `IN`).
fn pinned_values(
    expr: &Expr,
    position: &dyn Fn(&Expr) -> Option<usize>,
) -> Option<(usize, Vec<ScalarValue>)> {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => match (position(left), position(right)) {
            (Some(c), None) => Some((c, vec![literal_of(right)?])),
            (None, Some(c)) => Some((c, vec![literal_of(left)?])),
            _ => None,
        },
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let (a, mut left) = pinned_values(left, position)?;
            let (b, right) = pinned_values(right, position)?;
            (a == b).then(|| {
                left.extend(right);
                (a, left)
            })
        }
        Expr::InList(InList {
            expr,
            list,
            negated: false,
        }) => Some((
            position(expr)?,
            list.iter().map(literal_of).collect::<Option<_>>()?,
        )),
        _ => None,
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
        // Where the filters pin every key column, only those keys' records are read: the
        // index says where their latest records were, and what it has not read yet is read.
        let scan = match self.key_ranges(filters, &snapshot) {
            Some(ranges) => StreamScan::of_epoch(self.name.clone(), topic, read, ranges, 1, None),
            None => {
                let all = ScanBounds::from_filters(
                    filters,
                    &self.schema,
                    &self.name,
                    self.topic.partitions,
                )?;
                let bounds = ScanBounds {
                    partitions: all.partitions,
                    ..ScanBounds::all()
                };
                StreamScan::new(self.name.clone(), topic, &snapshot, read, bounds)
            }
        };
        let source = LatestRows {
            scan,
            read_schema: Arc::new(Schema::new(read_fields)),
            width: projection.len(),
        };
        let exec =
            BlockingScanExec::new(source, Arc::new(self.schema.project(&projection)?), limit);
        Ok(Arc::new(exec))
    }
}

/// The table `plan` scans, if it is a table's scan of its latest rows.
pub fn scanned_table(plan: &dyn ExecutionPlan) -> Option<&str> {
    plan.downcast_ref::<BlockingScanExec<LatestRows>>()
        .map(|scan| scan.source().scan.stream())
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
