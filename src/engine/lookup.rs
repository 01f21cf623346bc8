//! Lookup joins by primary key: a looked-up table's latest rows, kept in memory by the
//! query and caught up with the table's log at each epoch, so that an epoch reads the rows
//! of the keys its own rows look up rather than the whole table.
//!
//! An epoch's plan joins the input's rows with a table scan (see [`super::plan`]). When
//! the join matches every primary-key column of the table with a value of the other side,
//! only the table rows with the keys that side brings can match; and when the join keeps
//! no unmatched table rows (inner, left, semi, anti joins with the table on the other
//! side), leaving the other table rows out changes nothing. So [`with_lookups`] replaces
//! such a join with a [`LookupJoinExec`]: when it runs, it runs the other side, encodes
//! its keys as the table's records encode theirs, takes those keys' rows from the
//! [`LookupTable`], and runs the same join over those two inputs. Any other join of a
//! looked-up table reads the table whole, as a bounded `SELECT` does.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::JoinType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::TableProvider;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::{CastExpr, Column, TryCastExpr};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, collect,
    execute_stream,
};
use futures::{StreamExt, TryStreamExt};

use super::plan::recompute;
use crate::error::{Error, Result};
use crate::ingest::key::encode_keys;
use crate::storage::{Log, Offset, PartitionId};
use crate::tables::keyed::{KeyedTable, scanned_table};

/// A table a continuous query looks up by its primary key.
pub struct LookupTable {
    name: String,
    /// Its provider: a [`KeyedTable`].
    provider: Arc<dyn TableProvider>,
    log: Arc<Log>,
    /// Its declared columns, which the kept rows hold.
    schema: SchemaRef,
    /// The primary key's columns, by position in `schema`, in key order.
    key: Vec<usize>,
    rows: Mutex<Rows>,
}

/// The latest row of each live key, as of `read_to`.
struct Rows {
    by_key: HashMap<Vec<u8>, OwnedRow>,
    converter: RowConverter,
    /// Per partition, where the next catch-up reads from.
    read_to: Vec<Offset>,
    bytes: usize,
    memory: Option<MemoryReservation>,
}

impl fmt::Debug for LookupTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupTable")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl LookupTable {
    /// `provider`'s table kept for lookups, if it is a table with a primary key.
    pub fn of(provider: &Arc<dyn TableProvider>, log: Arc<Log>) -> Option<LookupTable> {
        let table = provider.downcast_ref::<KeyedTable>()?;
        let key = table.key_positions();
        if key.is_empty() {
            return None;
        }
        let schema = table.declared_schema();
        let fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields).ok()?;
        Some(LookupTable {
            name: table.name().to_string(),
            provider: provider.clone(),
            log,
            schema,
            key,
            rows: Mutex::new(Rows {
                by_key: HashMap::new(),
                converter,
                read_to: vec![],
                bytes: 0,
                memory: None,
            }),
        })
    }

    /// What its kept rows hold in memory.
    pub fn bytes(&self) -> usize {
        self.rows.lock().expect("lookup rows lock").bytes
    }

    fn table(&self) -> &KeyedTable {
        self.provider
            .downcast_ref::<KeyedTable>()
            .expect("a lookup table is a keyed table")
    }

    /// Reads what the table's log has past what was read, and applies it: upserts and
    /// tombstones, in offset order per partition (a key's records are in one partition).
    fn catch_up(&self, rows: &mut Rows, ctx: &TaskContext) -> Result<()> {
        let table = self.table();
        let topic = table.topic();
        let snapshot = self.log.snapshot();
        if rows.read_to.is_empty() {
            rows.read_to = (0..topic.partitions)
                .map(|p| self.log.log_start(topic.id, PartitionId(p)))
                .collect();
        }
        let mut ranges = vec![];
        let mut highs = vec![];
        for (p, from) in rows.read_to.iter().enumerate() {
            let high = snapshot.high_watermark(topic.id, PartitionId(p as u32));
            if *from < high {
                ranges.push((PartitionId(p as u32), *from..high));
            }
            highs.push(high.max(*from));
        }
        if ranges.is_empty() {
            return Ok(());
        }
        let Rows {
            by_key,
            converter,
            bytes,
            memory,
            ..
        } = rows;
        let memory = memory.get_or_insert_with(|| {
            MemoryConsumer::new(format!("lookup rows of table \"{}\"", self.name))
                .register(ctx.memory_pool())
        });
        let width = self.schema.fields().len();
        let mut failed = None;
        table.read_records(ranges, &mut |batch| {
            let values = match converter.convert_columns(&batch.columns()[..width]) {
                Ok(values) => values,
                Err(e) => {
                    failed = Some(Error::Internal(format!(
                        "lookup rows of {}: {e}",
                        self.name
                    )));
                    return false;
                }
            };
            let keys = batch.column(width).as_binary::<i32>();
            let tombstones = batch.column(width + 1).as_boolean();
            for i in 0..batch.num_rows() {
                if keys.is_null(i) {
                    continue;
                }
                let key = keys.value(i);
                let replaced = if tombstones.is_valid(i) && tombstones.value(i) {
                    by_key.remove(key)
                } else {
                    let row = values.row(i).owned();
                    *bytes += key.len() + row.as_ref().len() + ENTRY_OVERHEAD;
                    by_key.insert(key.to_vec(), row)
                };
                if let Some(old) = replaced {
                    *bytes -= key.len() + old.as_ref().len() + ENTRY_OVERHEAD;
                }
            }
            // Batch by batch, so a table too large stops the read, not the server.
            if let Err(e) = memory.try_resize(*bytes) {
                failed = Some(Error::from_datafusion(e));
                return false;
            }
            true
        })?;
        match failed {
            None => {
                rows.read_to = highs;
                Ok(())
            }
            Some(e) => {
                // Half caught up is no state to keep: the next read starts over.
                rows.by_key = HashMap::new();
                rows.read_to.clear();
                rows.bytes = 0;
                if let Some(memory) = &mut rows.memory {
                    memory.free();
                }
                Err(e)
            }
        }
    }

    /// The rows of `keys` the table has, each once, as `schema`'s columns (a projection
    /// of the declared ones, by name).
    fn rows_of(
        &self,
        keys: &BinaryArray,
        schema: &SchemaRef,
        ctx: &TaskContext,
    ) -> Result<RecordBatch> {
        let mut rows = self.rows.lock().expect("lookup rows lock");
        self.catch_up(&mut rows, ctx)?;
        let mut seen = std::collections::HashSet::new();
        let found: Vec<&OwnedRow> = keys
            .iter()
            .flatten()
            .filter(|k| seen.insert(*k))
            .filter_map(|k| rows.by_key.get(k))
            .collect();
        let columns = rows
            .converter
            .convert_rows(found.iter().map(|r| r.row()))
            .map_err(|e| Error::Internal(format!("lookup rows of {}: {e}", self.name)))?;
        let projected = schema
            .fields()
            .iter()
            .map(|f| {
                let i = self
                    .schema
                    .index_of(f.name())
                    .map_err(|e| Error::Internal(format!("lookup of {}: {e}", self.name)))?;
                Ok(columns[i].clone())
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(found.len()));
        RecordBatch::try_new_with_options(schema.clone(), projected, &options)
            .map_err(|e| Error::Internal(format!("lookup rows of {}: {e}", self.name)))
    }
}

/// What a kept row costs beyond its bytes: the map's entry, the key's and the row's
/// allocations.
const ENTRY_OVERHEAD: usize = 64;

/// `plan` with every join that looks a kept table up by its primary key replaced by a
/// [`LookupJoinExec`].
pub fn with_lookups(
    plan: Arc<dyn ExecutionPlan>,
    tables: &[Arc<LookupTable>],
) -> Result<Arc<dyn ExecutionPlan>> {
    if tables.is_empty() {
        return Ok(plan);
    }
    plan.transform_up(|node| {
        Ok(match LookupJoinExec::of(&node, tables) {
            Some(lookup) => Transformed::yes(Arc::new(lookup) as Arc<dyn ExecutionPlan>),
            None => Transformed::no(node),
        })
    })
    .map(|t| t.data)
    .map_err(Error::from_datafusion)
}

/// A hash join whose one side is a kept table's scan (under row-wise nodes), matched on its
/// primary key: it runs the other side, then the join over that side's rows and the table
/// rows of their keys.
pub struct LookupJoinExec {
    lookup: Lookup,
    properties: Arc<PlanProperties>,
}

/// What a [`LookupJoinExec`] runs.
#[derive(Clone)]
struct Lookup {
    join: Arc<dyn ExecutionPlan>,
    /// Which child of the join the table is: 0 (left) or 1 (right).
    table_side: usize,
    /// The other side's expressions giving each key column's value, in key order.
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The key columns, named and typed as the table's records encode them.
    key_fields: Vec<Field>,
    table: Arc<LookupTable>,
    /// The nodes from the join's table child down to the scan, the scan last.
    chain: Chain,
}

/// Nodes each over the next.
type Chain = Vec<Arc<dyn ExecutionPlan>>;

impl fmt::Debug for LookupJoinExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupJoinExec")
            .field("table", &self.lookup.table.name)
            .finish_non_exhaustive()
    }
}

impl LookupJoinExec {
    fn of(node: &Arc<dyn ExecutionPlan>, tables: &[Arc<LookupTable>]) -> Option<LookupJoinExec> {
        let join = node.downcast_ref::<HashJoinExec>()?;
        let (left_keys, right_keys): (Vec<_>, Vec<_>) = join.on().iter().cloned().unzip();
        for table_side in [0, 1] {
            let (table_child, table_keys, other_keys) = if table_side == 0 {
                (join.left(), &left_keys, &right_keys)
            } else {
                (join.right(), &right_keys, &left_keys)
            };
            if keeps_unmatched(*join.join_type(), table_side) {
                continue;
            }
            let Some((chain, columns)) = chain_to_scan(table_child, table_keys) else {
                continue;
            };
            let scan = chain.last().expect("a chain ends at its scan");
            let Some(table) = scanned_table(scan.as_ref())
                .and_then(|name| tables.iter().find(|t| t.name == name))
            else {
                continue;
            };
            // Each key column, matched by one of the join's equalities.
            let scanned = scan.schema();
            let names: Vec<&str> = columns
                .iter()
                .map(|c| scanned.field(*c).name().as_str())
                .collect();
            let keys: Option<Vec<Arc<dyn PhysicalExpr>>> = table
                .key
                .iter()
                .map(|k| {
                    let name = table.schema.field(*k).name();
                    let at = names.iter().position(|n| n == name)?;
                    Some(other_keys[at].clone())
                })
                .collect();
            let Some(keys) = keys else {
                continue;
            };
            // Every column the scan reads must be a declared one (the kept rows hold those).
            if scan
                .schema()
                .fields()
                .iter()
                .any(|f| table.schema.index_of(f.name()).is_err())
            {
                continue;
            }
            let key_fields = table
                .key
                .iter()
                .map(|k| table.schema.field(*k).clone().with_nullable(true))
                .collect();
            let properties = PlanProperties::new(
                EquivalenceProperties::new(node.schema()),
                Partitioning::UnknownPartitioning(1),
                EmissionType::Final,
                Boundedness::Bounded,
            );
            return Some(LookupJoinExec {
                lookup: Lookup {
                    join: node.clone(),
                    table_side,
                    keys,
                    key_fields,
                    table: table.clone(),
                    chain,
                },
                properties: Arc::new(properties),
            });
        }
        None
    }
}

impl Lookup {
    /// The join over its other side's rows and the table rows of their keys.
    async fn run(self, ctx: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let Lookup {
            join,
            table_side,
            keys,
            key_fields,
            table,
            chain,
        } = self;
        let other = join.children()[1 - table_side].clone();
        let rows = collect(other.clone(), ctx.clone()).await?;
        let mut wanted: Vec<BinaryArray> = vec![];
        let key_schema = Arc::new(Schema::new(key_fields));
        for batch in &rows {
            let columns = keys
                .iter()
                .zip(key_schema.fields())
                .map(|(expr, field)| {
                    let values = expr.evaluate(batch)?.into_array(batch.num_rows())?;
                    // A value the key's type cannot hold matches no key: NULL.
                    Ok(cast(&values, field.data_type())?)
                })
                .collect::<DfResult<Vec<ArrayRef>>>()?;
            let batch = RecordBatch::try_new(key_schema.clone(), columns)?;
            let encoded = encode_keys(&batch, &(0..keys.len()).collect::<Vec<_>>())
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            // Keys with a NULL part match nothing.
            let valid: Vec<bool> = (0..batch.num_rows())
                .map(|i| batch.columns().iter().all(|c| c.is_valid(i)))
                .collect();
            wanted.push(BinaryArray::new(
                encoded.offsets().clone(),
                encoded.values().clone(),
                Some(valid.into()),
            ));
        }
        let scan = chain.last().expect("a chain ends at its scan").clone();
        let schema = scan.schema();
        let found = {
            let task = ctx.clone();
            let all: Vec<&dyn Array> = wanted.iter().map(|a| a as &dyn Array).collect();
            let keys = arrow::compute::concat(&all)?;
            let keys = keys.as_binary::<i32>().clone();
            tokio::task::spawn_blocking(move || table.rows_of(&keys, &schema, &task))
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?
                .map_err(|e| DataFusionError::External(Box::new(e)))?
        };
        tracing::debug!(rows = found.num_rows(), "looked up by key");
        let mut side = super::plan::memory(vec![found], scan.schema())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        for node in chain.iter().rev().skip(1) {
            side = node.clone().replace_children(vec![side], recompute())?;
        }
        let other_rows = super::plan::memory(rows, other.schema())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let children = if table_side == 0 {
            vec![side, other_rows]
        } else {
            vec![other_rows, side]
        };
        let join = join.replace_children(children, recompute())?;
        execute_stream(join, ctx)
    }
}

/// Whether a join of `join_type` keeps rows of its `side` (0 left, 1 right) that match
/// nothing: then leaving table rows out would change its result.
fn keeps_unmatched(join_type: JoinType, side: usize) -> bool {
    use JoinType::*;
    match join_type {
        Inner => false,
        Left | LeftSemi | LeftAnti | LeftMark => side == 0,
        Right | RightSemi | RightAnti | RightMark => side == 1,
        Full => true,
    }
}

/// The nodes from `plan` down to a table scan through nodes that pass rows through (the
/// scan last), and the scan's columns that `keys` (expressions over `plan`'s output) are:
/// columns passed through unchanged, or widened from one integer type to another (which
/// keeps equality).
fn chain_to_scan(
    plan: &Arc<dyn ExecutionPlan>,
    keys: &[Arc<dyn PhysicalExpr>],
) -> Option<(Chain, Vec<usize>)> {
    let mut columns: Vec<usize> = keys
        .iter()
        .map(|k| k.downcast_ref::<Column>().map(Column::index))
        .collect::<Option<_>>()?;
    let mut chain = vec![plan.clone()];
    let mut node = plan.clone();
    loop {
        if scanned_table(node.as_ref()).is_some() {
            return Some((chain, columns));
        }
        if let Some(p) = node.downcast_ref::<ProjectionExec>() {
            let input = p.input().schema();
            for c in columns.iter_mut() {
                *c = passed_through(&p.expr()[*c].expr, &input)?;
            }
        } else if let Some(f) = node.downcast_ref::<datafusion::physical_plan::filter::FilterExec>()
        {
            if let Some(p) = f.projection() {
                for c in columns.iter_mut() {
                    *c = p[*c];
                }
            }
        } else if !matches!(
            node.name(),
            "CoalesceBatchesExec" | "RepartitionExec" | "CooperativeExec"
        ) {
            return None;
        }
        let child = match node.children().as_slice() {
            [child] => (*child).clone(),
            _ => return None,
        };
        node = child;
        chain.push(node.clone());
    }
}

/// The column of `input` that `expr` is, unchanged or cast from one integer type to another
/// (equal values stay equal, and no two become equal).
fn passed_through(expr: &Arc<dyn PhysicalExpr>, input: &Schema) -> Option<usize> {
    if let Some(c) = expr.downcast_ref::<Column>() {
        return Some(c.index());
    }
    let (inner, to) = if let Some(c) = expr.downcast_ref::<CastExpr>() {
        (c.expr(), c.cast_type())
    } else if let Some(c) = expr.downcast_ref::<TryCastExpr>() {
        (c.expr(), c.cast_type())
    } else {
        return None;
    };
    let column = inner.downcast_ref::<Column>()?;
    let from = input.fields().get(column.index())?.data_type();
    (from.is_integer() && to.is_integer()).then_some(column.index())
}

impl DisplayAs for LookupJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LookupJoinExec: table={}, by its primary key",
            self.lookup.table.name
        )
    }
}

impl ExecutionPlan for LookupJoinExec {
    fn name(&self) -> &'static str {
        "LookupJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "LookupJoinExec has one partition, not {partition}"
            )));
        }
        let run = self.lookup.clone().run(ctx);
        let stream = futures::stream::once(run).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.lookup.join.schema(),
            stream.boxed(),
        )))
    }
}
