//! A table as a continuous query's input: its changes, as signed rows.
//!
//! A table's topic holds each key's versions one after another: a record per write, a
//! tombstone per delete. A continuous query over a table reads those records epoch by
//! epoch, as it reads a stream's, but a new version of a key replaces the old one, so the
//! query must lose the old row as it gains the new. [`TableImage`] keeps, per key, the row
//! the query last saw, and [`TableChanges`] turns each record into the rows it changes:
//! the key's previous row with weight −1 (when it had one), its new row with weight +1
//! (unless the record is a tombstone). The aggregates over these signed rows are rewritten
//! into sums of weighted values ([`super::retract`]), which merge into the query's state
//! as every aggregate's partial state does.
//!
//! The image holds only the columns the query reads, in Arrow's row format, in memory
//! reserved against `--memory-limit`. Like the rows a join of streams keeps, it is not
//! written anywhere: when the query starts, it is rebuilt by reading the table's records
//! from where the query started to its checkpoint (the query holds them against
//! retention).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, RecordBatchOptions, UInt32Array,
};
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::catalog::{StreamDef, TopicDef};
use crate::error::Error;
use crate::storage::{KEY_COLUMN, Log};
use crate::tables::blocking_scan::{BlockingScanExec, BlockingSource};
use crate::tables::scan::{StreamScan, TableColumn};
use crate::tables::stream_table::{EpochRanges, hidden_columns};

/// The column of a table's changes that says whether a row comes (+1) or goes (−1).
pub const WEIGHT_COLUMN: &str = "__weight";

/// What an entry of the image costs beyond its key's and row's bytes.
const ENTRY_OVERHEAD: usize = 48;

/// A scan of a table's changes over an epoch's ranges.
pub type TableChangesExec = BlockingScanExec<TableChanges>;

/// The rows of a table a continuous query has seen, one per key: what a change of the
/// key retracts.
pub struct TableImage {
    table: String,
    /// The continuous query it belongs to (unnamed while a query is only planned).
    owner: OnceLock<String>,
    /// While set, changes only update the image: it is being rebuilt, and what the
    /// changes made of the query's result was committed long ago.
    rebuilding: AtomicBool,
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    /// The declared columns it keeps (by position) and how their values are encoded;
    /// set by the first scan.
    encoding: Option<(Vec<usize>, RowConverter)>,
    /// Record key → the key's row, encoded.
    rows: HashMap<Box<[u8]>, Box<[u8]>>,
    bytes: usize,
    memory: Option<MemoryReservation>,
}

impl fmt::Debug for TableImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableImage")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl TableImage {
    pub fn new(table: &str) -> TableImage {
        TableImage {
            table: table.to_string(),
            owner: OnceLock::new(),
            rebuilding: AtomicBool::new(false),
            kept: Mutex::new(Kept::default()),
        }
    }

    /// Names the continuous query it belongs to, for its errors and the memory pool.
    pub fn owned_by(&self, query: &str) {
        let _ = self.owner.set(query.to_string());
    }

    fn called(&self) -> String {
        match self.owner.get() {
            Some(query) => format!(
                "the rows of table \"{}\" kept by continuous query \"{query}\"",
                self.table
            ),
            None => format!("the rows of table \"{}\"", self.table),
        }
    }

    /// What it holds in memory.
    pub fn bytes(&self) -> usize {
        self.kept.lock().expect("table image lock").bytes
    }

    /// Runs `scan` (this image's [`TableChangesExec`]) only to bring the image up to the
    /// end of what it reads.
    pub async fn rebuild(
        &self,
        scan: Arc<dyn ExecutionPlan>,
        ctx: Arc<datafusion::execution::TaskContext>,
    ) -> DfResult<()> {
        self.rebuilding.store(true, Ordering::Release);
        let out = datafusion::physical_plan::collect(scan, ctx).await;
        self.rebuilding.store(false, Ordering::Release);
        out.map(|_| ())
    }

    /// Applies `batch` (records: the kept columns, the tombstone flag, the record key) in
    /// order, and returns the rows it retracts and the rows it adds, as `layout` wants
    /// them (a kept column by position, or the weight).
    fn apply(
        &self,
        batch: &RecordBatch,
        columns: &[usize],
        out: &Out,
        pool: &Arc<dyn MemoryPool>,
    ) -> DfResult<Vec<RecordBatch>> {
        let width = columns.len();
        let tombstones = batch.column(width).as_boolean();
        let keys = batch.column(width + 1).as_binary::<i32>();
        let mut kept = self.kept.lock().expect("table image lock");
        let Kept {
            encoding,
            rows,
            bytes,
            memory,
        } = &mut *kept;
        let (kept_columns, converter) = match encoding {
            Some(encoding) => encoding,
            None => {
                let fields = batch.schema().fields()[..width]
                    .iter()
                    .map(|f| SortField::new(f.data_type().clone()))
                    .collect();
                encoding.insert((columns.to_vec(), RowConverter::new(fields)?))
            }
        };
        if kept_columns.as_slice() != columns {
            return Err(internal(format!(
                "the rows of table \"{}\" are kept as columns {kept_columns:?}, read as {columns:?}",
                self.table
            )));
        }
        // A query reading no column of the table (`count(*)`) keeps empty rows: Arrow's
        // row format has no rows without columns.
        let values = match width {
            0 => None,
            _ => Some(converter.convert_columns(&batch.columns()[..width])?),
        };
        let (mut added, mut freed) = (0, 0);
        let mut retracted: Vec<Box<[u8]>> = vec![];
        // The record (by row) of each row retracted, whose key is that row's.
        let mut retracted_at: Vec<u32> = vec![];
        let mut inserted: Vec<u32> = vec![];
        for i in 0..batch.num_rows() {
            if keys.is_null(i) {
                continue; // not a row of the table
            }
            let key = keys.value(i);
            let previous = if tombstones.is_valid(i) && tombstones.value(i) {
                let previous = rows.remove(key);
                if let Some(row) = &previous {
                    freed += key.len() + row.len() + ENTRY_OVERHEAD;
                }
                previous
            } else {
                let row: Box<[u8]> = values
                    .as_ref()
                    .map_or(Box::default(), |v| v.row(i).as_ref().into());
                added += row.len();
                inserted.push(i as u32);
                match rows.get_mut(key) {
                    Some(slot) => {
                        freed += slot.len();
                        Some(std::mem::replace(slot, row))
                    }
                    None => {
                        added += key.len() + ENTRY_OVERHEAD;
                        rows.insert(key.into(), row);
                        None
                    }
                }
            };
            if let Some(row) = previous {
                retracted.push(row);
                retracted_at.push(i as u32);
            }
        }
        *bytes = (*bytes + added).saturating_sub(freed);
        let memory =
            memory.get_or_insert_with(|| MemoryConsumer::new(self.called()).register(pool));
        memory.try_grow(added)?;
        memory.shrink(freed.min(memory.size()));
        if self.rebuilding.load(Ordering::Acquire) {
            return Ok(vec![]);
        }
        let mut batches = vec![];
        if !retracted.is_empty() {
            let parser = converter.parser();
            let values = match width {
                0 => vec![],
                _ => converter.convert_rows(retracted.iter().map(|r| parser.parse(r)))?,
            };
            let keys = take(keys, &UInt32Array::from(retracted_at), None)?;
            batches.push(out.batch(values, keys, -1, retracted.len())?);
        }
        if !inserted.is_empty() {
            let indices = UInt32Array::from(inserted);
            let values = batch.columns()[..width]
                .iter()
                .map(|c| take(c, &indices, None))
                .collect::<Result<Vec<_>, _>>()?;
            let keys = take(keys, &indices, None)?;
            batches.push(out.batch(values, keys, 1, indices.len())?);
        }
        Ok(batches)
    }
}

/// The shape of a scan's rows: what each column is.
#[derive(Debug)]
struct Out {
    schema: SchemaRef,
    layout: Vec<OutColumn>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum OutColumn {
    /// A kept column, by position.
    Kept(usize),
    /// The row's record key (`_key`): a key has one row at a time.
    Key,
    Weight,
}

impl Out {
    fn batch(
        &self,
        values: Vec<ArrayRef>,
        keys: ArrayRef,
        weight: i64,
        rows: usize,
    ) -> DfResult<RecordBatch> {
        let weights: ArrayRef = Arc::new(Int64Array::from_value(weight, rows));
        let columns = self
            .layout
            .iter()
            .map(|at| match at {
                OutColumn::Kept(k) => values[*k].clone(),
                OutColumn::Key => keys.clone(),
                OutColumn::Weight => weights.clone(),
            })
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?)
    }
}

/// What a [`TableChangesExec`] reads: an epoch's ranges of a table's topic, through the
/// query's image of the table.
#[derive(Debug)]
pub struct TableChanges {
    scan: StreamScan,
    /// What the scan reads: the kept columns, the tombstone flag, the key.
    read_schema: SchemaRef,
    columns: Vec<usize>,
    out: Out,
    image: Arc<TableImage>,
    pool: Arc<dyn MemoryPool>,
}

impl TableChanges {
    /// The table it reads.
    pub fn table(&self) -> &str {
        self.scan.stream()
    }

    pub fn image(&self) -> &Arc<TableImage> {
        &self.image
    }
}

impl BlockingSource for TableChanges {
    fn name(&self) -> &'static str {
        "TableChangesExec"
    }

    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.scan.describe(f)
    }

    fn partitions(&self) -> usize {
        self.scan.partitions()
    }

    fn read(
        &self,
        partition: usize,
        _schema: &SchemaRef,
        emit: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> DfResult<()> {
        // Each partition of the scan reads whole partitions of the topic, in offset order,
        // and a key's records are all in one of them: its changes apply in order.
        let mut failed = None;
        self.scan.read(
            partition,
            &self.read_schema,
            &mut |records| match self
                .image
                .apply(&records, &self.columns, &self.out, &self.pool)
            {
                Ok(rows) => rows.into_iter().all(&mut *emit),
                Err(e) => {
                    failed = Some(e);
                    false
                }
            },
        )?;
        failed.map_or(Ok(()), Err)
    }
}

/// A table as a continuous query reads it: its declared columns, its hidden ones (of which
/// it reads `_key`, the others it refuses) and [`WEIGHT_COLUMN`], over the epoch's ranges of
/// its topic.
#[derive(Debug)]
pub struct TableChangesTable {
    name: String,
    topic: TopicDef,
    /// How many columns are declared (the tombstone flag is stored after them, then the
    /// timestamp, the key and the headers).
    declared: usize,
    schema: SchemaRef,
    log: Arc<Log>,
    ranges: Arc<EpochRanges>,
    image: Arc<TableImage>,
}

impl TableChangesTable {
    pub fn new(
        stream: &StreamDef,
        topic: &TopicDef,
        log: Arc<Log>,
        ranges: Arc<EpochRanges>,
        image: Arc<TableImage>,
    ) -> TableChangesTable {
        let mut fields: Vec<Field> = stream
            .value_fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let declared = fields.len();
        // Its hidden columns are named (a `*` excludes them), and only `_key` is read: a row
        // that goes has no record (partition, offset, timestamp) of its own.
        fields.extend(hidden_columns(declared + 1).into_iter().map(|(f, _)| f));
        fields.push(Field::new(WEIGHT_COLUMN, DataType::Int64, false));
        TableChangesTable {
            name: stream.name.clone(),
            topic: topic.clone(),
            declared,
            schema: Arc::new(Schema::new(fields)),
            log,
            ranges,
            image,
        }
    }
}

#[async_trait]
impl TableProvider for TableChangesTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Filters are not pushed down (the default): every record changes the image, whatever
    /// they say of its row.
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let topic = self.log.topic(self.topic.id).ok_or_else(|| {
            Error::UnknownRelation(format!("table \"{}\" was dropped", self.name))
        })?;
        let weight = self.schema.fields().len() - 1;
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.declared).chain([weight]).collect(),
        };
        let key = self.schema.index_of(KEY_COLUMN)?;
        if let Some(hidden) = projection
            .iter()
            .find(|i| (self.declared..weight).contains(*i) && **i != key)
        {
            return Err(Error::Unsupported(format!(
                "this query cannot run continuously: {} of table \"{}\" is not kept for its \
                 rows in a continuous query (a row that is updated or deleted goes without a \
                 record of its own)",
                self.schema.field(*hidden).name(),
                self.name
            ))
            .into());
        }
        let mut columns: Vec<usize> = projection
            .iter()
            .copied()
            .filter(|i| *i < self.declared)
            .collect();
        columns.sort_unstable();
        columns.dedup();
        let layout = projection
            .iter()
            .map(|i| match columns.iter().position(|c| c == i) {
                Some(k) => OutColumn::Kept(k),
                None if *i == key => OutColumn::Key,
                None => OutColumn::Weight,
            })
            .collect();
        let stored = topic.spec.schema.clone();
        let mut read: Vec<TableColumn> = columns.iter().map(|c| TableColumn::Stored(*c)).collect();
        let mut fields: Vec<Field> = columns
            .iter()
            .map(|c| stored.field(*c).clone().with_nullable(true))
            .collect();
        // The tombstone flag, then the key.
        read.extend([
            TableColumn::Stored(self.declared),
            TableColumn::Stored(self.declared + 2),
        ]);
        fields.push(Field::new("__tombstone", DataType::Boolean, true));
        fields.push(Field::new("__key", DataType::Binary, true));
        let ranges = self
            .ranges
            .ranges
            .lock()
            .expect("epoch ranges lock")
            .clone();
        let scan = StreamScan::of_epoch(
            self.name.clone(),
            topic,
            read,
            ranges,
            self.ranges.parallelism,
            None,
        );
        let schema = Arc::new(self.schema.project(&projection)?);
        let source = TableChanges {
            scan,
            read_schema: Arc::new(Schema::new(fields)),
            columns,
            out: Out {
                schema: schema.clone(),
                layout,
            },
            image: self.image.clone(),
            pool: state.runtime_env().memory_pool.clone(),
        };
        Ok(Arc::new(TableChangesExec::new(source, schema, None)))
    }
}

fn internal(message: String) -> DataFusionError {
    DataFusionError::External(Box::new(Error::Internal(message)))
}
