//! A leaf plan node whose partitions are read by blocking code (file reads), one blocking
//! thread per partition, handing batches to DataFusion through a small bounded channel.
//! Stream scans and text-file scans are this node with their own [`BlockingSource`].

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions,
};

/// What a [`BlockingScanExec`] reads.
pub trait BlockingSource: fmt::Debug + Send + Sync + 'static {
    /// The plan node's name in `EXPLAIN`.
    fn name(&self) -> &'static str;

    /// The rest of its `EXPLAIN` line.
    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;

    /// How many partitions it reads (at least one).
    fn partitions(&self) -> usize;

    /// Reads `partition`, handing each batch (in `schema`) to `emit`; stops early when
    /// `emit` returns false (the consumer is gone). Runs on a blocking thread.
    fn read(
        &self,
        partition: usize,
        schema: &SchemaRef,
        emit: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> DfResult<()>;
}

#[derive(Debug)]
pub struct BlockingScanExec<S> {
    source: Arc<S>,
    schema: SchemaRef,
    limit: Option<usize>,
    properties: Arc<PlanProperties>,
}

impl<S: BlockingSource> BlockingScanExec<S> {
    pub fn new(source: S, schema: SchemaRef, limit: Option<usize>) -> BlockingScanExec<S> {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(source.partitions().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        BlockingScanExec {
            source: Arc::new(source),
            schema,
            limit,
            properties: Arc::new(properties),
        }
    }

    pub fn source(&self) -> &S {
        &self.source
    }
}

impl<S: BlockingSource> DisplayAs for BlockingScanExec<S> {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.source.name())?;
        self.source.describe(f)?;
        let names: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        write!(f, ", projection=[{}]", names.join(", "))?;
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl<S: BlockingSource> ExecutionPlan for BlockingScanExec<S> {
    fn name(&self) -> &str {
        self.source.name()
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
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.schema.clone(), 2);
        if partition >= self.source.partitions() {
            return Ok(builder.build()); // nothing to read: one empty partition
        }
        let source = self.source.clone();
        let schema = self.schema.clone();
        let mut remaining = self.limit.unwrap_or(usize::MAX);
        let tx = builder.tx();
        builder.spawn_blocking(move || {
            source.read(partition, &schema, &mut |batch| {
                let batch = if batch.num_rows() > remaining {
                    batch.slice(0, remaining)
                } else {
                    batch
                };
                remaining -= batch.num_rows();
                tx.blocking_send(Ok(batch)).is_ok() && remaining > 0
            })
        });
        Ok(builder.build())
    }
}
