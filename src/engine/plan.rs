//! A continuous query's SQL, planned for epochs.
//!
//! The query is planned by DataFusion like any other, in a session whose tables are its
//! input stream, read through the epoch's offset ranges, and the tables, views and external
//! tables it looks up, read as they are when the epoch runs. Each epoch plans it again (so
//! `now()` means the epoch's start, and a lookup reads the table then) and takes the
//! physical plan apart:
//!
//! - **stateless**: projections, filters, `unnest` and lookup joins over the scan. The plan
//!   runs as it is and its rows are the epoch's output. A lookup join meets each input row
//!   with the looked-up side once, in its epoch, so it keeps nothing for later epochs; it
//!   may keep unmatched input rows (`LEFT JOIN table`), never the other side's. Joins
//!   by a table's primary key read only the keys they look up ([`super::lookup`]).
//! - **aggregate**: `[projections/filters] → Final aggregate → Partial aggregate → stateless`
//!   (lookup joins included).
//!   The `Partial` aggregate (with everything below it) runs over the epoch's records; a
//!   `PartialReduce` aggregate merges its output with the stored state of the groups it
//!   touched; the `Final` aggregate turns merged state into values, and the nodes above it
//!   (`HAVING`, the `SELECT` list) run over those values. Every DataFusion aggregate keeps
//!   its partial state this way, so every one is incremental.
//!
//! - **a chain of aggregates** (an aggregate over an aggregate): each aggregate is a stage
//!   as above with state of its own; the inner stage's windows leave its state when the
//!   watermark closes them, and their final rows are the next stage's input in the same
//!   epoch. Only final rows can feed a stage, so every inner stage groups by an event-time
//!   window and the query emits on window close.
//!
//! - **a join (or union) of aggregates whose windows close together**: each aggregate (or
//!   chain) is a branch of stages as above, and each epoch joins the rows of the windows
//!   the branches closed in it. Every join matches a window column of one side with the
//!   same window column of the other, so two rows that match close in the same epoch, and
//!   nothing needs keeping for a later one: the join is as final as its inputs, for every
//!   join type.
//!
//! - **over a table** (its only relation): the table's changes are the input, as signed
//!   rows ([`super::table_changes`]), and the logical plan is rewritten so that its
//!   aggregates are sums of them ([`super::retract`]); it is then an aggregate as above.
//!
//! - **an aggregate over one whose groups never close** (no window): a chain whose inner
//!   stage hands on, each epoch, its changed groups' rows after and before; the outer
//!   aggregate is rewritten into sums as over a table, and merges the partial states of
//!   the rows after with the negated states of the rows before.
//!
//! Anything else (sorts, limits, other joins, window functions) cannot be run
//! incrementally this way, and the query is refused when created, naming the part.

use std::borrow::Cow;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    MemorySchemaProvider, SchemaProvider,
};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{JoinSide, JoinType};
use datafusion::datasource::TableProvider;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::context::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{AggregateUDF, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::{AggregateExprBuilder, AggregateFunctionExpr};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::utils::build_join_schema;
use datafusion::physical_plan::joins::{CrossJoinExec, HashJoinExec, NestedLoopJoinExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::sql::parser::Statement as DfStatement;

use crate::catalog::{CATALOG_NAME, PUBLIC_SCHEMA};
use crate::catalog::{CatalogData, Dialect, Inherited, Relation, TopicDef, WatermarkDef};
use crate::engine::checkpoint::{self, InputOffset};
use crate::engine::collect::Collect;
use crate::engine::lookup::{LookupTable, with_lookups};
use crate::engine::retract;
use crate::engine::sessions::SessionColumns;
use crate::engine::state::{self, Expiry, Groups};
use crate::engine::stream_join::{JoinState, StreamJoinExec, Watermarked, is_delta_join};
use crate::engine::table_changes::{TableChangesExec, TableChangesTable, TableImage};
use crate::error::{Error, Result};
use crate::sql::{self, Statement, Window};
use crate::storage::TIMESTAMP_COLUMN;
use crate::storage::{Log, Offset, TopicId};
use crate::tables::event_time::EventTimeScan;
use crate::tables::scan::{Ranges, StreamScanExec};
use crate::tables::stream_table::{EpochRanges, StreamTable};
use arrow::datatypes::{DataType, Field, TimeUnit};

/// Logical rules that would turn one aggregate into two stacked ones.
const LOGICAL_RULES_OFF: [&str; 1] = ["single_distinct_aggregation_to_group_by"];
/// Physical rules that would hide the Partial/Final split or answer from statistics.
const PHYSICAL_RULES_OFF: [&str; 4] = [
    "CombinePartialFinalAggregate",
    "aggregate_statistics",
    "LimitedDistinctAggregation",
    "LimitAggregation",
];

/// How long a partition stays quiet before it stops holding a watermark back, unless the
/// stream says otherwise (`watermark_idle_timeout`).
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;

/// A continuous query's SQL, planned against its one input.
pub struct QueryPlan {
    state: SessionState,
    logical: LogicalPlan,
    /// The streams and topics it reads, epoch by epoch; the first is `input`.
    inputs: Vec<Input>,
    /// The (first) stream or topic it reads, whose watermark it follows.
    pub input: TopicDef,
    pub input_name: String,
    /// The tables and views it looks up, read as they are when each epoch runs.
    pub lookups: Vec<String>,
    /// The tables it looks up by primary key, kept in memory between epochs.
    kept: Vec<Arc<LookupTable>>,
    /// Its joins of streams, each one's rows kept between epochs.
    joins: Vec<Arc<JoinState>>,
    /// Over a table: the rows of it the query has seen, which its changes retract.
    image: Option<Arc<TableImage>>,
    /// What the query returns.
    pub schema: SchemaRef,
    pub kind: Kind,
    /// Over a stream with a watermark: what each epoch's scan learns about event time.
    pub event_time: Option<Arc<EventTimeScan>>,
    /// An aggregate grouped by a window over the watermark's column has event-time state:
    /// when each group's window closes. Its late rows are dropped.
    pub expiry: Option<Expiry>,
    /// How long a partition read to its end stays quiet before it stops holding the
    /// watermark back.
    pub idle_timeout: std::time::Duration,
    /// Over a stream written by a query emitting on window close: that query's watermark
    /// is this one's (shifted), not the rows' greatest times.
    pub inherited: Option<Inherited>,
    /// Grouped by `SESSION` windows: where its state keeps a session's key and bounds.
    pub session: Option<SessionColumns>,
    /// Whether the query reads a `SESSION` window, whose rewrite orders each epoch's rows
    /// with window functions below the aggregate.
    sessions_rewritten: bool,
    /// An aggregate over an aggregate whose groups never close: the outer one keeps sums
    /// ([`retract::rewrite_over_groups`]) and takes back a changed inner group's old row.
    over_groups: bool,
}

/// A stream or topic a query reads, and the ranges of it the epoch being planned reads.
struct Input {
    name: String,
    topic: TopicDef,
    ranges: Arc<EpochRanges>,
    /// In a join of several streams: the stream's watermark column, and what each epoch's
    /// scan learns about it (a join's kept rows go as the other side's watermark passes).
    time: Option<(String, Arc<EventTimeScan>)>,
    /// A stream of closed windows: its watermark is its writer's (shifted), not what its
    /// rows show.
    inherited: Option<Inherited>,
}

/// The shape of a query, fixed when it is created.
#[derive(Debug, Clone)]
pub enum Kind {
    Stateless,
    Aggregate {
        /// The partial state of a group: group columns, then each aggregate's state.
        state_schema: SchemaRef,
        /// The lists the values of its `count(DISTINCT …)` aggregates come in, which it
        /// keeps in sets, and its changelog records after the partial state.
        sets: Vec<FieldRef>,
        /// The leading columns of `state_schema` that form the group key.
        groups: usize,
        /// What the `Final` aggregate returns: group columns, then values.
        final_schema: SchemaRef,
        /// Per group column: the output column that passes it through unchanged, if any.
        group_outputs: Vec<Option<usize>>,
        /// Whether nodes above the aggregate filter its groups (`HAVING`).
        filtered: bool,
        /// Whether nodes above the aggregate make several rows of a group (`unnest`, as
        /// a Top-N of more than one row does).
        expanded: bool,
        /// In a chain of aggregates, the stages before the last one (which the fields
        /// above describe), innermost first.
        inner: Vec<Stage>,
        /// Over a table or changing groups: the column of `state_schema` counting a
        /// group's rows. A group whose rows have all gone leaves the state.
        rows: Option<usize>,
    },
    /// A join or union of aggregates' closed windows: rows appended as windows close.
    Combine {
        /// Every branch's stages, each after the one it reads.
        stages: Vec<Stage>,
    },
}

/// An inner aggregate of a chain: its state, and when its groups close.
#[derive(Debug, Clone)]
pub struct Stage {
    pub state_schema: SchemaRef,
    /// As [`Kind::Aggregate`]'s.
    pub sets: Vec<FieldRef>,
    pub groups: usize,
    /// `None`: its groups never close; each epoch, the stage reading it takes in the rows
    /// of its changed groups and takes back their rows before.
    pub expiry: Option<Expiry>,
}

impl Stage {
    fn of(stage: &Aggregation, expiry: Expiry) -> Stage {
        Stage {
            expiry: Some(expiry),
            ..Stage::changing(stage)
        }
    }

    /// A stage whose groups never close.
    fn changing(stage: &Aggregation) -> Stage {
        Stage {
            state_schema: stage.state_schema(),
            sets: stage.sets(),
            groups: stage.groups(),
            expiry: None,
        }
    }

    /// What its changelog records: its partial state, then the values added to its sets.
    pub fn changelog_fields(&self) -> arrow::datatypes::Fields {
        state::changelog_fields(&self.state_schema, &self.sets)
    }
}

/// The column of an aggregate's state counting its groups' rows ([`retract::ROWS_COLUMN`]).
fn rows_column(state_schema: &SchemaRef) -> Result<usize> {
    let prefix = format!("{}[", retract::ROWS_COLUMN);
    let at = state_schema
        .fields()
        .iter()
        .position(|f| f.name().starts_with(&prefix));
    at.ok_or_else(|| {
        Error::Internal(format!(
            "an aggregate of changing rows without its count of rows: {state_schema:?}"
        ))
    })
}

/// `state` (partial states after `groups` group columns) with every state negated.
fn negated(state: &RecordBatch, groups: usize) -> Result<RecordBatch> {
    let mut columns = state.columns().to_vec();
    for column in &mut columns[groups..] {
        *column = arrow::compute::kernels::numeric::neg(column).map_err(|e| {
            Error::Internal(format!(
                "taking back a state of {}: {e}",
                column.data_type()
            ))
        })?;
    }
    RecordBatch::try_new(state.schema(), columns)
        .map_err(|e| Error::Internal(format!("taking back states: {e}")))
}

/// One epoch's physical plan, taken apart.
pub enum EpochPlan {
    Stateless(Arc<dyn ExecutionPlan>),
    Aggregate {
        /// In a chain of aggregates, the inner stages, innermost first: each one's closed
        /// windows are the next one's input.
        inner: Vec<Aggregation>,
        last: Aggregation,
    },
    Combine {
        /// Every branch's stages, each after the one it reads.
        stages: Vec<Aggregation>,
        top: Top,
    },
}

impl EpochPlan {
    /// The plans that read the epoch's records: a stateless plan, or a stage's partial
    /// aggregate with what is below it.
    fn reading_plans(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        match self {
            EpochPlan::Stateless(plan) => vec![plan],
            EpochPlan::Aggregate { inner, last } => inner
                .iter()
                .chain([last])
                .filter(|s| s.feed.is_none())
                .map(|s| &s.partial)
                .collect(),
            EpochPlan::Combine { stages, .. } => stages
                .iter()
                .filter(|s| s.feed.is_none())
                .map(|s| &s.partial)
                .collect(),
        }
    }

    /// How many joins of streams it has.
    fn stream_joins(&self, inputs: &[&str]) -> usize {
        fn count(plan: &Arc<dyn ExecutionPlan>, inputs: &[&str]) -> usize {
            let own = usize::from(stream_join(plan, inputs).unwrap_or(false));
            let below: usize = plan.children().into_iter().map(|c| count(c, inputs)).sum();
            own + below
        }
        self.reading_plans()
            .into_iter()
            .map(|p| count(p, inputs))
            .sum()
    }

    /// The plan with each join of streams run over its kept rows (see
    /// [`super::stream_join`]), the `k`-th (bottom up) keeping `joins[k]`.
    fn with_stream_joins(
        self,
        joins: &[Arc<JoinState>],
        inputs: &[&str],
        watermarked: &[Watermarked],
    ) -> Result<EpochPlan> {
        let mut next = 0;
        let mut replace = |plan: Arc<dyn ExecutionPlan>| -> Result<Arc<dyn ExecutionPlan>> {
            plan.transform_up(|node| {
                if !stream_join(&node, inputs).unwrap_or(false)
                    || node.downcast_ref::<StreamJoinExec>().is_some()
                {
                    return Ok(Transformed::no(node));
                }
                let state = joins.get(next).ok_or_else(|| {
                    DataFusionError::Internal(format!(
                        "the query was planned with {} joins of streams, not more",
                        joins.len()
                    ))
                })?;
                next += 1;
                let join = StreamJoinExec::planned(node, state.clone(), watermarked);
                Ok(Transformed::yes(Arc::new(join) as Arc<dyn ExecutionPlan>))
            })
            .map(|t| t.data)
            .map_err(df)
        };
        let mut stages = |stages: Vec<Aggregation>| -> Result<Vec<Aggregation>> {
            stages
                .into_iter()
                .map(|mut stage| {
                    if stage.feed.is_none() {
                        stage.partial = replace(stage.partial)?;
                    }
                    Ok(stage)
                })
                .collect()
        };
        let epoch = match self {
            EpochPlan::Stateless(plan) => EpochPlan::Stateless(replace(plan)?),
            EpochPlan::Aggregate { inner, last } => {
                let mut all = stages(inner)?;
                all.extend(stages(vec![last])?);
                let last = all.pop().expect("the last stage");
                EpochPlan::Aggregate { inner: all, last }
            }
            EpochPlan::Combine { stages: s, top } => EpochPlan::Combine {
                stages: stages(s)?,
                top,
            },
        };
        if next != joins.len() {
            return Err(Error::Internal(format!(
                "the query was planned with {} joins of streams, this epoch has {next}",
                joins.len()
            )));
        }
        Ok(epoch)
    }

    /// The plan with its joins that look a kept table up by primary key reading only the
    /// keys they look up (see [`super::lookup`]).
    fn with_lookups(self, tables: &[Arc<LookupTable>]) -> Result<EpochPlan> {
        if tables.is_empty() {
            return Ok(self);
        }
        let stages = |stages: Vec<Aggregation>| -> Result<Vec<Aggregation>> {
            stages
                .into_iter()
                .map(|stage| stage.with_lookups(tables))
                .collect()
        };
        Ok(match self {
            EpochPlan::Stateless(plan) => EpochPlan::Stateless(with_lookups(plan, tables)?),
            EpochPlan::Aggregate { inner, last } => EpochPlan::Aggregate {
                inner: stages(inner)?,
                last: last.with_lookups(tables)?,
            },
            EpochPlan::Combine { stages: s, top } => EpochPlan::Combine {
                stages: stages(s)?,
                top,
            },
        })
    }
}

/// The pieces of an aggregate's plan.
#[derive(Clone)]
pub struct Aggregation {
    /// The `Partial` aggregate over the epoch's records (or the inner stage's rows).
    partial: Arc<dyn ExecutionPlan>,
    /// The `Final` aggregate; its input is replaced by merged state.
    final_: Arc<dyn ExecutionPlan>,
    /// The nodes above `final_`, top first; each one's input is the next.
    above: Vec<Arc<dyn ExecutionPlan>>,
    /// A stage over another: what lies between its `Partial` and the inner `Final`.
    feed: Option<Feed>,
    /// A stage over another: that one, by its place in the query's list of stages.
    pub from: Option<usize>,
    /// Its `count(DISTINCT …)` aggregates, whose values its groups keep in sets.
    distinct: Option<Arc<Distinct>>,
}

/// An aggregation's `count(DISTINCT …)` aggregates, counted against sets of the values
/// each group has counted (see [`crate::engine::distinct`]): the `Partial` aggregate
/// returns each one's values in a list, the type DataFusion keeps them in; the state keeps
/// a count in its place, which merges (and is finalized) as a plain `count`'s.
struct Distinct {
    /// The columns of the `Partial` aggregate's output that are those lists.
    lists: Vec<usize>,
    /// The partial state as stored: a count in place of each list.
    state: SchemaRef,
    /// The aggregates as they merge stored state: a `count` for each `count(DISTINCT …)`.
    merging: Vec<Arc<AggregateFunctionExpr>>,
    /// The `Final` aggregate with those aggregates.
    final_: Arc<dyn ExecutionPlan>,
    /// The `Partial` aggregate with each `count(DISTINCT …)` collecting its values
    /// ([`Collect`]), duplicates included, which the sets drop.
    collecting: Option<Arc<dyn ExecutionPlan>>,
}

impl Distinct {
    /// The `count(DISTINCT x)` aggregates of `partial`, if it has any, and `final_` with
    /// each merging as a count.
    fn of(partial: &AggregateExec, final_: &Arc<dyn ExecutionPlan>) -> Result<Option<Distinct>> {
        let Some(last) = final_.downcast_ref::<AggregateExec>() else {
            return Ok(None);
        };
        let output = partial.schema();
        let mut fields = output.fields().to_vec();
        let mut column = partial.group_expr().num_group_exprs();
        let (mut lists, mut merging, mut collecting) = (vec![], vec![], vec![]);
        for expr in partial.aggr_expr() {
            let width = expr.state_fields().map_err(df)?.len();
            if expr.is_distinct()
                && expr.fun().name() == "count"
                && width == 1
                && expr.expressions().len() == 1
            {
                let collect = Collect::new(expr.state_fields().map_err(df)?[0].clone());
                collecting.push(Arc::new(
                    AggregateExprBuilder::new(
                        Arc::new(AggregateUDF::new_from_impl(collect)),
                        expr.expressions(),
                    )
                    .schema(partial.input_schema())
                    .alias(expr.name())
                    .build()
                    .map_err(df)?,
                ));
                let count =
                    AggregateExprBuilder::new(Arc::new(expr.fun().clone()), expr.expressions())
                        .schema(partial.input_schema())
                        .alias(expr.name())
                        .with_ignore_nulls(expr.ignore_nulls())
                        .build()
                        .map_err(df)?;
                fields[column] = count.state_fields().map_err(df)?[0].clone();
                lists.push(column);
                merging.push(Arc::new(count));
            } else {
                merging.push(expr.clone());
                collecting.push(expr.clone());
            }
            column += width;
        }
        if lists.is_empty() {
            return Ok(None);
        }
        let state = Arc::new(Schema::new(fields));
        let final_ = AggregateExec::try_new(
            *last.mode(),
            last.group_expr().clone(),
            merging.clone(),
            last.filter_expr().to_vec(),
            memory(vec![], state.clone())?,
            last.input_schema(),
        )
        .map_err(df)?;
        let collecting = AggregateExec::try_new(
            *partial.mode(),
            partial.group_expr().clone(),
            collecting,
            partial.filter_expr().to_vec(),
            partial.input().clone(),
            partial.input_schema(),
        )
        .map_err(df)?;
        // Lists in another shape than DataFusion's would not fit the rest of the plan: then
        // its own partial aggregate stays, whose lists hold each value once (slower, the same
        // counts).
        let collecting = (collecting.schema() == partial.schema())
            .then(|| Arc::new(collecting) as Arc<dyn ExecutionPlan>);
        Ok(Some(Distinct {
            lists,
            state,
            merging,
            final_: Arc::new(final_),
            collecting,
        }))
    }
}

/// What a join or union of aggregates does with their closed windows: the plan above the
/// aggregates, whose leaves are the branches' last `Final`s.
#[derive(Clone)]
pub struct Top {
    plan: Arc<dyn ExecutionPlan>,
    /// Per leaf: the stage whose closed windows it returns, and that `Final` in `plan`.
    leaves: Vec<(usize, Arc<dyn ExecutionPlan>)>,
}

/// The nodes between a stage's `Partial` aggregate and the inner stage's `Final` one, top
/// first, and what that `Final` returns: the inner stage's rows go in at the bottom.
#[derive(Clone)]
struct Feed {
    nodes: Vec<Arc<dyn ExecutionPlan>>,
    schema: SchemaRef,
}

/// `base` as a query made in `dialect` was planned: one made before `avg` of integers was
/// a `numeric` has DataFusion's, a `double precision`.
fn planned_as(base: &SessionState, dialect: Dialect) -> Result<Cow<'_, SessionState>> {
    if dialect.numeric_avg {
        return Ok(Cow::Borrowed(base));
    }
    let mut state = base.clone();
    datafusion::execution::FunctionRegistry::register_udaf(
        &mut state,
        datafusion::functions_aggregate::average::avg_udaf(),
    )
    .map_err(Error::from_datafusion)?;
    Ok(Cow::Owned(state))
}

impl QueryPlan {
    /// Plans `sql` (a `SELECT`) for a continuous query; refuses, with SQLSTATE `0A000`,
    /// what cannot run incrementally.
    pub async fn new(
        base: &SessionState,
        catalog: &CatalogData,
        log: Arc<Log>,
        sql: &str,
        dialect: Dialect,
    ) -> Result<QueryPlan> {
        let base = planned_as(base, dialect)?;
        let base = base.as_ref();
        let mut statement = query_statement(sql)?;
        // Its columns are named as PostgreSQL names a view's.
        if dialect.postgres_names
            && let DfStatement::Statement(s) = &mut statement
            && let sqlparser::ast::Statement::Query(query) = s.as_mut()
        {
            sql::column_names::name_all_columns(query);
        }
        // The first row of each partition (`ROW_NUMBER() … = 1`) is an aggregate.
        if let DfStatement::Statement(s) = &mut statement {
            sql::top_n::rewrite(s, catalog)?;
        }
        // Rewritten first: window table functions stand for derived tables over the stream
        // they name, which is what the query reads.
        let own_window_functions = calls_window_function(&statement);
        let windows = sql::rewrite(&mut statement, catalog)?;
        if own_window_functions && windows.iter().any(|w| w.session) {
            // Window functions below an aggregate are allowed for the SESSION rewrite's
            // own, which find each epoch's sessions; the query's would see one epoch.
            return Err(Error::Unsupported(
                "this query cannot run continuously: window functions (OVER …) are not \
                 supported in continuous queries yet"
                    .into(),
            ));
        }
        let references = base
            .resolve_table_references(&statement)
            .map_err(Error::from_datafusion)?;
        let mut names: Vec<String> = vec![];
        for reference in &references {
            if let Some(schema) = reference.schema()
                && schema != PUBLIC_SCHEMA
            {
                return Err(Error::Unsupported(format!(
                    "a continuous query reads one stream; \"{reference}\" is not one"
                )));
            }
            let name = reference.table().to_string();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        // One stream or topic drives the query: its records are what epochs read. Tables,
        // views and external tables beside it are looked up, read as they are when an epoch
        // runs (`FOR SYSTEM_TIME AS OF PROCTIME()`).
        let (mut driving, mut lookups) = (vec![], vec![]);
        for name in names {
            let relation = catalog.relation(&name).ok_or_else(|| {
                Error::UnknownRelation(format!("relation \"{name}\" does not exist"))
            })?;
            match relation {
                Relation::Stream(stream, _) if stream.is_table() => lookups.push(name),
                Relation::Stream(..) | Relation::Topic(_) => driving.push(name),
                Relation::View(_) | Relation::External(_) => lookups.push(name),
            }
        }
        // Without a stream, one table drives it: its changes are what epochs read.
        let over_table = match (driving.as_slice(), lookups.as_slice()) {
            ([], [table]) if is_table(catalog, table) => Some(table.clone()),
            _ => None,
        };
        if let Some(table) = &over_table {
            driving = vec![table.clone()];
            lookups.clear();
        }
        let input_name = match (driving.as_slice(), lookups.as_slice()) {
            ([], []) => {
                return Err(Error::Unsupported(
                    "a continuous query must read a stream (FROM stream)".into(),
                ));
            }
            ([], several) => return Err(no_stream_to_drive(catalog, several)),
            ([first, ..], _) => first.clone(),
        };
        if over_table.is_some() && !windows.is_empty() {
            return Err(Error::Unsupported(format!(
                "this query cannot run continuously: event-time windows over table \
                 \"{input_name}\" are not supported (its rows change; windows close on a \
                 stream's watermark)"
            )));
        }
        if driving.len() > 1 && !windows.is_empty() {
            return Err(Error::Unsupported(format!(
                "this query cannot run continuously: event-time windows in a query of \
                 several streams ({}) are not supported yet; write each stream's windows \
                 to a stream (… EMIT ON WINDOW CLOSE) and join those streams on their \
                 windows, which lets each window's rows go once the other stream has \
                 closed it",
                driving.join(", ")
            )));
        }
        let relation = catalog
            .relation(&input_name)
            .expect("the driving stream was just found");
        let input = match &relation {
            Relation::Stream(_, topic) | Relation::Topic(topic) => (*topic).clone(),
            _ => unreachable!("a stream or topic drives the query"),
        };
        let fields = catalog.value_fields(&input);
        // Windows over the record timestamp have a watermark without a declaration: the
        // greatest timestamp read, no delay.
        let record_time = windows
            .iter()
            .any(|w| w.relation == input_name && w.column == TIMESTAMP_COLUMN);
        // Windows over the record timestamp go by its watermark, whatever the stream
        // declares for another column.
        let watermark = match &relation {
            _ if record_time => Some(WatermarkDef {
                column: TIMESTAMP_COLUMN.into(),
                expression: TIMESTAMP_COLUMN.into(),
                idle_timeout_ms: match &relation {
                    Relation::Stream(stream, _) => {
                        stream.watermark.as_ref().and_then(|w| w.idle_timeout_ms)
                    }
                    _ => None,
                },
                inherited: None,
            }),
            Relation::Stream(stream, _) if !stream.is_table() => stream.watermark.clone(),
            _ => None,
        };
        // A join of streams follows no watermark yet: its inputs would each have their own.
        let watermark = watermark.filter(|_| driving.len() == 1);
        let event_time = match &watermark {
            Some(w) if w.column == TIMESTAMP_COLUMN => {
                // Stored after the value columns, as the log keeps it: milliseconds.
                let field = Field::new(
                    TIMESTAMP_COLUMN,
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                    true,
                );
                let stored = fields.len();
                Some(Arc::new(EventTimeScan::new(
                    base,
                    &field,
                    stored,
                    &w.expression,
                )?))
            }
            Some(w) => {
                let stored = fields
                    .iter()
                    .position(|f| *f.name() == w.column)
                    .ok_or_else(|| {
                        Error::Internal(format!(
                            "the watermark column \"{}\" of \"{input_name}\" is missing",
                            w.column
                        ))
                    })?;
                Some(Arc::new(EventTimeScan::new(
                    base,
                    &fields[stored],
                    stored,
                    &w.expression,
                )?))
            }
            None => None,
        };
        let parallelism = base.config().target_partitions();
        let mut inputs = vec![];
        let mut image = None;
        let mut providers: Vec<(String, Arc<dyn TableProvider>)> = vec![];
        for (k, name) in driving.iter().enumerate() {
            let relation = catalog
                .relation(name)
                .expect("the driving streams were just found");
            // Each stream of a join keeps its own watermark (as declared, or its writer's).
            let inherited = match &relation {
                Relation::Stream(stream, _) if driving.len() > 1 => {
                    stream.watermark.as_ref().and_then(|w| w.inherited.clone())
                }
                _ => None,
            };
            let time = match &relation {
                Relation::Stream(stream, topic) if driving.len() > 1 => match &stream.watermark {
                    Some(w) if w.column != TIMESTAMP_COLUMN => {
                        let fields = catalog.value_fields(topic);
                        let stored = fields.iter().position(|f| *f.name() == w.column);
                        match stored {
                            Some(at) => Some((
                                w.column.clone(),
                                Arc::new(EventTimeScan::new(base, &fields[at], at, &w.expression)?),
                            )),
                            None => None,
                        }
                    }
                    _ => None,
                },
                _ => None,
            };
            let ranges = Arc::new(EpochRanges {
                ranges: Default::default(),
                event_time: if k == 0 && driving.len() == 1 {
                    event_time.clone()
                } else {
                    time.as_ref().map(|(_, scan)| scan.clone())
                },
                parallelism,
            });
            match &relation {
                Relation::Stream(stream, topic) if stream.is_table() => {
                    // One at most: a query over a table reads only that table.
                    let table_image = Arc::new(TableImage::new(name));
                    let table = TableChangesTable::new(
                        stream,
                        topic,
                        log.clone(),
                        ranges.clone(),
                        table_image.clone(),
                    );
                    providers.push((name.clone(), Arc::new(table)));
                    image = Some(table_image);
                }
                _ => {
                    let table = StreamTable::of(catalog, &relation, log.clone())
                        .expect("streams and topics are tables")
                        .for_epochs(ranges.clone());
                    providers.push((name.clone(), Arc::new(table)));
                }
            }
            let topic = match &relation {
                Relation::Stream(_, topic) | Relation::Topic(topic) => (*topic).clone(),
                _ => unreachable!("a stream or topic drives the query"),
            };
            inputs.push(Input {
                name: name.clone(),
                topic,
                ranges,
                inherited: inherited.filter(|_| time.is_some()),
                time,
            });
        }
        let mut kept = vec![];
        for name in &lookups {
            let provider = lookup_provider(base, name).await?;
            kept.extend(LookupTable::of(&provider, log.clone()).map(Arc::new));
            providers.push((name.clone(), provider));
        }
        let state = epoch_state(base, providers)?;
        let mut logical = sql::plan_rewritten(&state, statement).await?;
        if let Some(table) = &over_table {
            // Its aggregates keep sums of the changes' signed rows.
            logical = retract::rewrite(logical, table)?;
        }
        let schema = Arc::new(logical.schema().as_arrow().clone());
        let mut plan = QueryPlan {
            state,
            logical,
            inputs,
            input,
            input_name,
            lookups,
            kept,
            joins: vec![],
            image,
            schema,
            kind: Kind::Stateless,
            event_time,
            expiry: None,
            idle_timeout: std::time::Duration::from_millis(
                watermark
                    .as_ref()
                    .and_then(|w| w.idle_timeout_ms)
                    .unwrap_or(DEFAULT_IDLE_TIMEOUT_MS),
            ),
            inherited: watermark.as_ref().and_then(|w| w.inherited.clone()),
            session: None,
            sessions_rewritten: windows.iter().any(|w| w.session),
            over_groups: false,
        };
        let window = one_window_size(&windows, &plan.input_name, watermark.as_ref());
        // Grouped by the watermark's column itself (a time of a closed window upstream,
        // say): a group is complete once the watermark is past it.
        let time_column = watermark
            .as_ref()
            .map(|w| w.column.as_str())
            .filter(|c| *c != TIMESTAMP_COLUMN);
        let (mut epoch, _) = plan.plan_epoch(&[]).await?;
        if plan.image.is_none()
            && let EpochPlan::Aggregate { inner, last } = &epoch
            && !inner.is_empty()
            && closing_stages(
                inner,
                &closings(inner.iter().chain([last]), window, time_column),
            )
            .is_none()
        {
            // An aggregate over one whose groups never close: the outer one takes back
            // what an inner group's row brought when the group changes.
            plan.logical = retract::rewrite_over_groups(plan.logical)?;
            plan.over_groups = true;
            epoch = plan.plan_epoch(&[]).await?.0;
        }
        let joins = epoch.stream_joins(&driving.iter().map(String::as_str).collect::<Vec<_>>());
        if joins > 0 && !windows.is_empty() {
            return Err(Error::Unsupported(
                "this query cannot run continuously: event-time windows over a join of \
                 streams are not supported yet"
                    .into(),
            ));
        }
        plan.joins = (0..joins)
            .map(|k| Arc::new(JoinState::new(format!("join {} of streams", k + 1))))
            .collect();
        if joins > 0 {
            // Planned once more with its joins, which find what bounds their kept rows.
            plan.plan_epoch(&[]).await?;
        }
        plan.kind = match &epoch {
            EpochPlan::Stateless(p) => {
                plan.schema = p.schema();
                Kind::Stateless
            }
            EpochPlan::Aggregate { inner, last } => {
                plan.schema = last.above.first().unwrap_or(&last.final_).schema();
                let closing = closings(inner.iter().chain([last]), window, time_column);
                let stages = match closing_stages(inner, &closing) {
                    Some(stages) => stages,
                    // Groups that never close, whose changes the last stage takes in.
                    None if plan.over_groups => inner.iter().map(Stage::changing).collect(),
                    None => {
                        return Err(Error::Unsupported(
                            "an aggregate over an aggregate runs continuously only when the \
                         inner one groups by an event-time window (window_start or \
                         window_end of TUMBLE or HOP over the column of the stream's \
                         watermark): its rows are final, and can feed the outer one, \
                         only once their window closes (or, for count, sum and avg over \
                         it, when the inner one's groups never close)"
                                .into(),
                        ));
                    }
                };
                plan.expiry = closing[inner.len()].first().copied();
                if let Some(session) = windows.iter().find(|w| w.session) {
                    plan.session = Some(session_columns(
                        session,
                        inner,
                        last,
                        watermark.as_ref(),
                        &plan.input_name,
                    )?);
                }
                let state_schema = last.state_schema();
                // A global aggregate keeps its one group, rows or none.
                let rows = match &plan.image {
                    _ if plan.over_groups && last.groups() > 0 => Some(rows_column(&state_schema)?),
                    Some(_) if last.groups() > 0 => Some(rows_column(&state_schema)?),
                    _ => None,
                };
                Kind::Aggregate {
                    state_schema,
                    sets: last.sets(),
                    groups: last.groups(),
                    final_schema: last.final_.schema(),
                    group_outputs: group_outputs(&last.above, last.groups()),
                    filtered: last.above.iter().any(|n| n.name() == "FilterExec"),
                    expanded: last.above.iter().any(|n| n.name() == "UnnestExec"),
                    inner: stages,
                    rows,
                }
            }
            EpochPlan::Combine { stages, top } => {
                if windows.iter().any(|w| w.session) {
                    return Err(Error::Unsupported(
                        "SESSION windows cannot be joined or united in a continuous query \
                         yet; write the sessions to a stream with EMIT ON WINDOW CLOSE and \
                         read that"
                            .into(),
                    ));
                }
                plan.schema = top.plan.schema();
                let closing = closings(stages.iter(), window, time_column);
                let Some(kinds) = closing_stages(stages, &closing) else {
                    return Err(Error::Unsupported(format!(
                        "this query cannot run continuously: {COMBINED}"
                    )));
                };
                top.check(&top.plan, &closing)?;
                Kind::Combine { stages: kinds }
            }
        };
        Ok(plan)
    }

    /// What it keeps in memory between epochs beside aggregate state: the rows of the
    /// tables it looks up by key, of its joins of streams, and of the table it reads.
    pub fn kept_bytes(&self) -> usize {
        let looked_up: usize = self.kept.iter().map(|t| t.bytes()).sum();
        let image = self.image.as_ref().map_or(0, |i| i.bytes());
        looked_up + image + self.joins.iter().map(|j| j.bytes()).sum::<usize>()
    }

    /// Runs the joins of streams of `epoch` (planned over the input its checkpoint has
    /// read, from where it started) into kept rows that are empty, for the output nothing,
    /// and the changes of the table it reads into its image of the table.
    pub async fn rebuild_kept(&self, epoch: &EpochPlan, ctx: Arc<TaskContext>) -> Result<()> {
        fn topmost(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<Arc<dyn ExecutionPlan>>) {
            if plan.downcast_ref::<StreamJoinExec>().is_some()
                || plan.downcast_ref::<TableChangesExec>().is_some()
            {
                out.push(plan.clone());
            } else {
                plan.children().into_iter().for_each(|c| topmost(c, out));
            }
        }
        let mut keeping = vec![];
        for plan in epoch.reading_plans() {
            topmost(plan, &mut keeping);
        }
        for plan in keeping {
            if let Some(join) = plan.downcast_ref::<StreamJoinExec>() {
                let state = join.state().clone();
                state.rebuild(plan, ctx.clone()).await.map_err(df)?;
            } else if let Some(scan) = plan.downcast_ref::<TableChangesExec>() {
                let image = scan.source().image().clone();
                image.rebuild(plan, ctx.clone()).await.map_err(df)?;
            }
        }
        Ok(())
    }

    /// Per join of streams whose kept rows nothing bounds, the streams of the sides that
    /// keep rows for ever.
    pub fn unbounded_joins(&self) -> Vec<String> {
        self.joins.iter().filter_map(|j| j.unbounded()).collect()
    }

    /// The streams it reads that have a watermark of their own in a join (their topics
    /// and scans), in input order; the others `None`.
    pub fn input_times(&self) -> Vec<Option<(TopicId, Arc<EventTimeScan>)>> {
        self.inputs
            .iter()
            .map(|i| i.time.as_ref().map(|(_, scan)| (i.topic.id, scan.clone())))
            .collect()
    }

    /// The inputs of a join of streams whose watermarks are their writers' (streams of
    /// closed windows), each with how it follows its writer's.
    pub fn inherited_inputs(&self) -> Vec<(TopicId, Inherited)> {
        self.inputs
            .iter()
            .filter_map(|i| Some((i.topic.id, i.inherited.clone()?)))
            .collect()
    }

    /// Tells its joins of streams where the epoch about to run starts reading.
    pub fn set_join_epoch(&self, ranges: &[(InputOffset, Offset)]) {
        let from: Vec<InputOffset> = ranges.iter().map(|(from, _)| *from).collect();
        for join in &self.joins {
            join.set_reading(from.clone());
        }
    }

    /// With one join of streams, both of whose sides let rows go: where a restart would
    /// have to read the inputs from to rebuild what it keeps now, per input partition of
    /// `ends` (the epoch's end where it keeps nothing read before). `None` otherwise: the
    /// rows are rebuilt from where the query started.
    pub fn rebuild_from(&self, ends: &[InputOffset]) -> Option<Vec<InputOffset>> {
        let [join] = self.joins.as_slice() else {
            return None;
        };
        if !join.bounded() {
            return None;
        }
        let oldest = join.oldest_kept();
        Some(
            ends.iter()
                .map(|end| {
                    let offset = checkpoint::position(&oldest, end.topic, end.partition)
                        .map_or(end.offset, |o| o.min(end.offset));
                    InputOffset { offset, ..*end }
                })
                .collect(),
        )
    }

    /// Tells its joins of streams the watermark of each input (in input order).
    pub fn set_join_watermarks(&self, watermarks: &[Option<i64>]) {
        for join in &self.joins {
            join.set_watermarks(watermarks.to_vec());
        }
    }

    /// Whether it keeps rows of its input for later epochs (a join's sides, a table's
    /// rows), which are rebuilt from the input when it starts.
    pub fn keeps_input_rows(&self) -> bool {
        !self.joins.is_empty() || self.image.is_some()
    }

    /// Whether it reads a table's changes.
    pub fn over_table(&self) -> bool {
        self.image.is_some()
    }

    /// Whether it aggregates the groups of an aggregate that change as they go (their rows
    /// are taken back and given again).
    pub fn over_groups(&self) -> bool {
        self.over_groups
    }

    /// Names the continuous query `query` as the owner of what its joins keep.
    pub fn owned_by(&self, query: &str) {
        self.joins.iter().for_each(|j| j.owned_by(query));
        if let Some(image) = &self.image {
            image.owned_by(query);
        }
    }

    /// Every relation it reads: its inputs, then what it looks up.
    pub fn reads(&self) -> Vec<String> {
        self.inputs
            .iter()
            .map(|i| i.name.clone())
            .chain(self.lookups.iter().cloned())
            .collect()
    }

    /// The streams and topics it reads epoch by epoch, by name.
    pub fn input_names(&self) -> impl Iterator<Item = &str> {
        self.inputs.iter().map(|i| i.name.as_str())
    }

    /// The topics it reads epoch by epoch.
    pub fn input_topics(&self) -> impl Iterator<Item = &TopicDef> {
        self.inputs.iter().map(|i| &i.topic)
    }

    /// The high watermark of every partition of every input in `snapshot`.
    pub fn high_watermarks(&self, snapshot: &crate::storage::Snapshot) -> Vec<InputOffset> {
        self.inputs
            .iter()
            .flat_map(|i| checkpoint::high_watermarks(snapshot, i.topic.id))
            .collect()
    }

    /// Whether the query has event-time state: its late rows are dropped and its closed
    /// windows evicted.
    pub fn event_time_state(&self) -> bool {
        (self.expiry.is_some() || matches!(self.kind, Kind::Combine { .. }))
            && self.event_time.is_some()
    }

    /// Plans the epoch that reads `ranges` of the inputs (each from an offset to another).
    pub async fn plan_epoch(
        &self,
        ranges: &[(InputOffset, Offset)],
    ) -> Result<(EpochPlan, Arc<TaskContext>)> {
        sql::cpu_bound(self.plan_epoch_now(ranges)).await
    }

    async fn plan_epoch_now(
        &self,
        ranges: &[(InputOffset, Offset)],
    ) -> Result<(EpochPlan, Arc<TaskContext>)> {
        for input in &self.inputs {
            let of_input: Ranges = ranges
                .iter()
                .filter(|(from, _)| from.topic == input.topic.id)
                .map(|(from, to)| (from.partition, from.offset..*to))
                .collect();
            *input.ranges.ranges.lock().expect("epoch ranges lock") = of_input;
        }
        let mut state = self.state.clone();
        state.mark_start_execution();
        let physical = state
            .create_physical_plan(&self.logical)
            .await
            .map_err(Error::from_datafusion)?;
        let names: Vec<&str> = self.input_names().collect();
        let epoch = take_apart(physical, &names, self.sessions_rewritten)?;
        let epoch = if self.joins.is_empty() {
            epoch
        } else {
            let watermarked: Vec<Watermarked> = self
                .inputs
                .iter()
                .map(|i| Watermarked {
                    name: &i.name,
                    column: i.time.as_ref().map(|(c, _)| c.as_str()),
                })
                .collect();
            epoch.with_stream_joins(&self.joins, &names, &watermarked)?
        };
        Ok((epoch.with_lookups(&self.kept)?, state.task_ctx()))
    }
}

/// What joins and unions of aggregates a continuous query can run.
const COMBINED: &str = "joins (and UNION) run continuously only between aggregates that \
     group by an event-time window of the stream (window_start or window_end of TUMBLE or \
     HOP over the column of its watermark), emitting on window close, and that match those \
     windows (ON a.window_start = b.window_start …): rows of one window close together on \
     both sides, and are joined then. To join a stream's rows with an aggregate's windows, \
     write the windows to a stream (… EMIT ON WINDOW CLOSE) and join the two streams, \
     bounding the rows kept by a condition on their times (Nexmark q7)";

/// The window over the watermark's column that a `window_start` of the query is, if the
/// query's windows over it all have one size: a group by `window_start` closes that much
/// after it.
fn one_window_size<'a>(
    windows: &'a [Window],
    input: &str,
    watermark: Option<&WatermarkDef>,
) -> Option<&'a Window> {
    let mut over = windows
        .iter()
        .filter(|w| w.relation == input && watermark.is_some_and(|m| m.column == w.column));
    let first = over.next()?;
    over.all(|w| w.size_micros == first.size_micros && w.session == first.session)
        .then_some(first)
}

/// Per stage (each after the one it reads), the group columns that say when its groups
/// close, best first: those of its window for a stage reading the input, those passing
/// through the inner stage's for a stage over another. Empty for groups that never close.
fn closings<'a>(
    stages: impl Iterator<Item = &'a Aggregation>,
    window: Option<&Window>,
    time_column: Option<&str>,
) -> Vec<Vec<Expiry>> {
    let mut closing: Vec<Vec<Expiry>> = vec![];
    for stage in stages {
        let closes = match stage.from {
            None => closing_columns(stage, window, time_column),
            Some(k) => stage.closing_over(&closing[k]),
        };
        closing.push(closes);
    }
    closing
}

/// The state of each of `stages`, closing by its best closing column; `None` if the groups
/// of one never close.
fn closing_stages(stages: &[Aggregation], closing: &[Vec<Expiry>]) -> Option<Vec<Stage>> {
    stages
        .iter()
        .zip(closing)
        .map(|(stage, closes)| Some(Stage::of(stage, *closes.first()?)))
        .collect()
}

/// The group columns of the innermost aggregate that say when a group closes, best first:
/// a `window_end` (when it passes), a `window_start` (when it passes less the window's
/// size), the watermark's column itself (once the watermark is past it).
fn closing_columns(
    stage: &Aggregation,
    window: Option<&Window>,
    time_column: Option<&str>,
) -> Vec<Expiry> {
    let state = stage.partial.schema();
    let group = |name: &str| {
        state.fields()[..stage.groups()]
            .iter()
            .position(|f| f.name() == name)
    };
    let mut closing = vec![];
    if let Some(window) = window {
        closing.extend(group("window_end").map(|column| Expiry { column, plus: 0 }));
        closing.extend(group("window_start").map(|column| Expiry {
            column,
            plus: window.size_micros,
        }));
    }
    closing.extend(
        time_column
            .and_then(group)
            .map(|column| Expiry { column, plus: 1 }),
    );
    closing
}

const SESSION_GROUPS: &str = "a continuous query over SESSION windows must aggregate by \
     window_start and window_end (and the sessions' key), with EMIT ON WINDOW CLOSE";

/// Where the state of an aggregate over `session` keeps a session's key and bounds: every
/// group column but `window_start` and `window_end` is the key. Sessions close when the
/// watermark passes their end, so the window must be over the watermark's column, and they
/// are one aggregate's groups, not a chain's.
fn session_columns(
    session: &Window,
    inner: &[Aggregation],
    last: &Aggregation,
    watermark: Option<&WatermarkDef>,
    input: &str,
) -> Result<SessionColumns> {
    if session.relation != input || watermark.is_none_or(|w| w.column != session.column) {
        return Err(Error::Unsupported(format!(
            "a continuous query's SESSION window must be over the column of the stream's \
             watermark (a session closes when the watermark passes its end); \"{}\" has \
             no watermark on \"{}\"",
            session.relation, session.column
        )));
    }
    if !inner.is_empty() {
        return Err(Error::Unsupported(
            "SESSION windows in a chain of aggregates are not supported yet; write the \
             sessions to a stream with EMIT ON WINDOW CLOSE and aggregate that"
                .into(),
        ));
    }
    let state = last.partial.schema();
    let groups = &state.fields()[..last.groups()];
    let at = |name: &str| groups.iter().position(|f| f.name() == name);
    let (Some(start), Some(end)) = (at("window_start"), at("window_end")) else {
        return Err(Error::Unsupported(SESSION_GROUPS.into()));
    };
    Ok(SessionColumns {
        keys: (0..groups.len())
            .filter(|c| ![start, end].contains(c))
            .collect(),
        start,
        end,
    })
}

/// Whether `statement` calls a window function (`… OVER (…)`) of its own.
fn calls_window_function(statement: &DfStatement) -> bool {
    let DfStatement::Statement(statement) = statement else {
        return false;
    };
    sqlparser::ast::visit_expressions(statement.as_ref(), |expr| match expr {
        sqlparser::ast::Expr::Function(f) if f.over.is_some() => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// The one `SELECT` of `sql`.
fn query_statement(sql: &str) -> Result<DfStatement> {
    let mut statements = sql::parse(sql)?;
    match (statements.pop(), statements.is_empty()) {
        (Some(Statement::DataFusion(s)), true) if matches!(&*s, DfStatement::Statement(q) if matches!(**q, sqlparser::ast::Statement::Query(_))) => {
            Ok(*s)
        }
        _ => Err(Error::Syntax(format!(
            "a continuous query is one SELECT, not \"{sql}\""
        ))),
    }
}

/// Whether `name` is a table.
fn is_table(catalog: &CatalogData, name: &str) -> bool {
    matches!(catalog.relation(name), Some(Relation::Stream(stream, _)) if stream.is_table())
}

/// Why a query reading only `relations` (no stream, not one table) cannot run
/// continuously.
fn no_stream_to_drive(catalog: &CatalogData, relations: &[String]) -> Error {
    let tables: Vec<&str> = relations
        .iter()
        .filter(|r| is_table(catalog, r))
        .map(String::as_str)
        .collect();
    if tables.len() > 1 || (!tables.is_empty() && relations.len() > 1) {
        return Error::Unsupported(format!(
            "this query cannot run continuously: a query over a table reads that one table; \
             joins of tables (or of a table with views) are not supported yet ({})",
            relations.join(", ")
        ));
    }
    let Some(relation) = relations.first() else {
        return Error::Unsupported("a continuous query must read a stream (FROM stream)".into());
    };
    Error::Unsupported(match catalog.relation(relation) {
        Some(Relation::External(_)) => format!(
            "\"{relation}\" is an external table (files); a continuous query reads a stream"
        ),
        _ => format!(
            "\"{relation}\" is a materialized view; continuous queries over views are not supported yet (read the stream it is built from, or look the view up from a stream: FROM stream JOIN {relation} ON …)"
        ),
    })
}

/// How `base` reads `name` (a table, view or external table) in a bounded query: each
/// epoch's plan reads it as it is then.
async fn lookup_provider(base: &SessionState, name: &str) -> Result<Arc<dyn TableProvider>> {
    let schema = base
        .catalog_list()
        .catalog(CATALOG_NAME)
        .and_then(|c| c.schema(PUBLIC_SCHEMA))
        .ok_or_else(|| Error::Internal("the public schema is missing".into()))?;
    schema
        .table(name)
        .await
        .map_err(Error::from_datafusion)?
        .ok_or_else(|| Error::UnknownRelation(format!("relation \"{name}\" does not exist")))
}

/// A session like `base` whose only tables are `tables` (the input, then what it looks
/// up), planning plans with aggregates split in two that repartition nothing: the scan's
/// partitions (read in parallel, one per core at most) are merged once, above the first
/// aggregate's `Partial` or at the top.
fn epoch_state(
    base: &SessionState,
    tables: Vec<(String, Arc<dyn TableProvider>)>,
) -> Result<SessionState> {
    let schema = Arc::new(MemorySchemaProvider::new());
    for (name, table) in tables {
        schema
            .register_table(name, table)
            .map_err(Error::from_datafusion)?;
    }
    let catalog = Arc::new(MemoryCatalogProvider::new());
    catalog
        .register_schema(PUBLIC_SCHEMA, schema)
        .map_err(Error::from_datafusion)?;
    let catalogs = Arc::new(MemoryCatalogProviderList::new());
    catalogs.register_catalog(CATALOG_NAME.into(), catalog);
    let logical = base
        .optimizers()
        .iter()
        .filter(|r| !LOGICAL_RULES_OFF.contains(&r.name()))
        .cloned()
        .collect();
    let physical = base
        .physical_optimizers()
        .iter()
        .filter(|r| !PHYSICAL_RULES_OFF.contains(&r.name()))
        .cloned()
        .collect();
    let mut config = base.config().clone().with_target_partitions(1);
    // A join's sides stay where the query put them, epoch after epoch (a join of streams
    // keeps each side's rows).
    config.options_mut().optimizer.join_reordering = false;
    Ok(SessionStateBuilder::new_from_existing(base.clone())
        .with_config(config)
        .with_catalog_list(catalogs)
        .with_optimizer_rules(logical)
        .with_physical_optimizer_rules(physical)
        .build())
}

/// Nodes that pass rows through one at a time: fine anywhere in a continuous plan.
fn is_row_wise(plan: &dyn ExecutionPlan) -> bool {
    matches!(
        plan.name(),
        "ProjectionExec"
            | "FilterExec"
            | "UnnestExec"
            | "CoalesceBatchesExec"
            | "CoalescePartitionsExec"
            | "RepartitionExec"
            | "CooperativeExec"
    )
}

/// Nodes that sort an epoch's rows (per partition, and merging the sorted partitions),
/// for an order-sensitive aggregate or the `SESSION` rewrite's window functions.
fn orders(plan: &dyn ExecutionPlan) -> bool {
    matches!(plan.name(), "SortExec" | "SortPreservingMergeExec")
}

/// Why a node cannot be part of a continuous query, in the user's words.
fn refusal(plan: &dyn ExecutionPlan) -> Error {
    let what = match plan.name() {
        "SortExec" | "SortPreservingMergeExec" | "PartialSortExec" => {
            "ORDER BY (the output of a continuous query has no end to sort; sort when reading it)"
                .to_string()
        }
        "GlobalLimitExec" | "LocalLimitExec" => {
            "LIMIT/OFFSET (a continuous query has no end to count from)".to_string()
        }
        "WindowAggExec" | "BoundedWindowAggExec" => {
            "window functions (OVER …) are not supported in continuous queries yet".to_string()
        }
        "UnionExec" | "InterleaveExec" => COMBINED.into(),
        "AggregateExec" => {
            "an aggregate over an aggregate (nested GROUP BY or DISTINCT) is not supported in continuous queries yet"
                .into()
        }
        name if name.contains("Join") => COMBINED.into(),
        name => format!("the plan step {name} cannot run incrementally"),
    };
    Error::Unsupported(format!("this query cannot run continuously: {what}"))
}

/// Checks that `plan` is row-wise down to the scans of `inputs` (through lookup joins and
/// joins of streams).
fn check_stateless(plan: &Arc<dyn ExecutionPlan>, inputs: &[&str]) -> Result<()> {
    if is_input_scan(plan.as_ref(), inputs) || plan.name() == "EmptyExec" {
        return Ok(());
    }
    if let Some(side) = lookup_join(plan, inputs)? {
        return check_stateless(&side, inputs);
    }
    if stream_join(plan, inputs)? {
        return plan
            .children()
            .into_iter()
            .try_for_each(|side| check_stateless(side, inputs));
    }
    if !is_row_wise(plan.as_ref()) {
        return Err(refusal(plan.as_ref()));
    }
    plan.children()
        .into_iter()
        .try_for_each(|child| check_stateless(child, inputs))
}

/// Whether `plan` is the scan of the epoch's ranges of one of the query's `inputs`.
fn is_input_scan(plan: &dyn ExecutionPlan, inputs: &[&str]) -> bool {
    plan.downcast_ref::<StreamScanExec>()
        .is_some_and(|scan| inputs.contains(&scan.source().stream()))
        || plan
            .downcast_ref::<TableChangesExec>()
            .is_some_and(|scan| inputs.contains(&scan.source().table()))
}

/// Whether `plan` reads one of the query's inputs anywhere below.
fn reads_input(plan: &Arc<dyn ExecutionPlan>, inputs: &[&str]) -> bool {
    is_input_scan(plan.as_ref(), inputs)
        || plan
            .children()
            .into_iter()
            .any(|child| reads_input(child, inputs))
}

/// Whether `plan` has an aggregate anywhere below.
fn aggregates(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<AggregateExec>().is_some() || plan.children().into_iter().any(aggregates)
}

/// Whether `plan` joins the rows of streams on both sides (no aggregate between): a join
/// that keeps each side's rows for the other's later ones, run by
/// [`super::stream_join`]. Joins it cannot run that way are refused.
fn stream_join(plan: &Arc<dyn ExecutionPlan>, inputs: &[&str]) -> Result<bool> {
    if !combines(plan.as_ref()) && !plan.name().contains("Join") {
        return Ok(false);
    }
    let children = plan.children();
    let [left, right] = children.as_slice() else {
        return Ok(false);
    };
    if !(reads_input(left, inputs) && reads_input(right, inputs))
        || aggregates(left)
        || aggregates(right)
    {
        return Ok(false);
    }
    if is_delta_join(plan.as_ref()) || plan.downcast_ref::<StreamJoinExec>().is_some() {
        return Ok(true);
    }
    let why = match plan.downcast_ref::<HashJoinExec>() {
        Some(join) => format!(
            "a {} join of two streams is not supported yet, only inner joins: an outer join \
             would have to know when a row can no longer find a match",
            join.join_type().to_string().to_uppercase()
        ),
        None if plan.name() == "UnionExec" => "a UNION of streams is not supported yet".to_string(),
        None => "a join of two streams needs an equality between them (ON a.key = b.key), \
                 which finds each row's matches among the other stream's rows by key"
            .to_string(),
    };
    Err(Error::Unsupported(format!(
        "this query cannot run continuously: {why}"
    )))
}

/// If `plan` is a lookup join — the input's rows joined with what only reads tables, views
/// or files, as they are when the epoch runs — its side that reads the input. Each input
/// row meets the other side once, in its epoch, so the join is as final as the rows: for
/// inner joins and joins that keep unmatched input rows (`LEFT JOIN table`), semi- and
/// anti-joins (`IN`, `NOT EXISTS`). A join that would keep the other side's unmatched
/// rows is refused: which of them match changes as the stream goes on.
fn lookup_join(
    plan: &Arc<dyn ExecutionPlan>,
    inputs: &[&str],
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let join_type = if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        *join.join_type()
    } else if let Some(join) = plan.downcast_ref::<NestedLoopJoinExec>() {
        *join.join_type()
    } else if plan.downcast_ref::<CrossJoinExec>().is_some() {
        JoinType::Inner
    } else {
        return Ok(None);
    };
    let children = plan.children();
    let [left, right] = children.as_slice() else {
        return Ok(None);
    };
    let (input_left, input_right) = (reads_input(left, inputs), reads_input(right, inputs));
    if input_left == input_right {
        return Ok(None);
    }
    use JoinType::*;
    let keeps_only_input = match join_type {
        Inner => true,
        Left | LeftSemi | LeftAnti | LeftMark => input_left,
        Right | RightSemi | RightAnti | RightMark => input_right,
        Full => false,
    };
    if !keeps_only_input {
        return Err(Error::Unsupported(format!(
            "this query cannot run continuously: a {} join of the stream with a table or \
             view keeps the table's rows that no stream row matched, and which those are \
             changes as the stream goes on; a lookup join is an inner join, or a LEFT JOIN \
             with the stream on the left",
            join_type.to_string().to_uppercase()
        )));
    }
    Ok(Some(if input_left { *left } else { *right }.clone()))
}

fn only_child(plan: &Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    match plan.children().as_slice() {
        [one] => Ok((*one).clone()),
        _ => Err(refusal(plan.as_ref())),
    }
}

/// Takes `plan` apart; `sessions`: the query reads a `SESSION` window, whose rewrite finds
/// each epoch's sessions with window functions below the aggregate.
fn take_apart(plan: Arc<dyn ExecutionPlan>, inputs: &[&str], sessions: bool) -> Result<EpochPlan> {
    let mut above = vec![];
    let mut node = plan.clone();
    loop {
        if let Some(agg) = node.downcast_ref::<AggregateExec>() {
            let mut stages = chained(stages_of(&node, agg, above, inputs, sessions)?, 0);
            let last = stages.pop().expect("an aggregate has a stage");
            return Ok(EpochPlan::Aggregate {
                inner: stages,
                last,
            });
        }
        if combines(node.as_ref())
            && lookup_join(&node, inputs)?.is_none()
            && !stream_join(&node, inputs)?
        {
            let mut stages = vec![];
            let mut leaves = vec![];
            branches(&node, inputs, sessions, &mut stages, &mut leaves)?;
            return Ok(EpochPlan::Combine {
                stages,
                top: Top { plan, leaves },
            });
        }
        if !is_row_wise(node.as_ref()) {
            if sessions {
                return Err(Error::Unsupported(SESSION_GROUPS.into()));
            }
            check_stateless(&node, inputs)?;
            return Ok(EpochPlan::Stateless(plan));
        }
        above.push(node.clone());
        node = only_child(&node)?;
    }
}

/// Nodes that join or unite the rows of their inputs.
fn combines(plan: &dyn ExecutionPlan) -> bool {
    plan.downcast_ref::<HashJoinExec>().is_some() || plan.name() == "UnionExec"
}

/// A chain's stages (innermost first) as they go into a query's list of stages after
/// `before` others: each reads the one before it.
fn chained(mut chain: Vec<Aggregation>, before: usize) -> Vec<Aggregation> {
    for (k, stage) in chain.iter_mut().enumerate() {
        stage.from = k.checked_sub(1).map(|k| before + k);
    }
    chain
}

/// Adds the aggregates below `node` (a join, a union, or a row-wise node over one), each
/// with the chain it reads, to `stages`, and each one's `Final` to `leaves`.
fn branches(
    node: &Arc<dyn ExecutionPlan>,
    inputs: &[&str],
    sessions: bool,
    stages: &mut Vec<Aggregation>,
    leaves: &mut Vec<(usize, Arc<dyn ExecutionPlan>)>,
) -> Result<()> {
    if let Some(agg) = node.downcast_ref::<AggregateExec>() {
        let chain = chained(
            stages_of(node, agg, vec![], inputs, sessions)?,
            stages.len(),
        );
        stages.extend(chain);
        leaves.push((stages.len() - 1, node.clone()));
        return Ok(());
    }
    if is_input_scan(node.as_ref(), inputs) {
        return Err(Error::Unsupported(format!(
            "this query cannot run continuously: {COMBINED}"
        )));
    }
    if !is_row_wise(node.as_ref()) && !combines(node.as_ref()) {
        return Err(refusal(node.as_ref()));
    }
    for child in node.children() {
        branches(child, inputs, sessions, stages, leaves)?;
    }
    Ok(())
}

/// The stages of the aggregate whose `Final` is `node` (with `above` over it): the stages
/// of an aggregate below it first, if there is one, then its own.
fn stages_of(
    node: &Arc<dyn ExecutionPlan>,
    agg: &AggregateExec,
    above: Vec<Arc<dyn ExecutionPlan>>,
    inputs: &[&str],
    sessions: bool,
) -> Result<Vec<Aggregation>> {
    if *agg.mode() != AggregateMode::Final && *agg.mode() != AggregateMode::FinalPartitioned {
        return Err(Error::Internal(format!(
            "a continuous aggregate was planned as {:?}, not Final over Partial",
            agg.mode()
        )));
    }
    let mut partial = only_child(node)?;
    while partial.downcast_ref::<AggregateExec>().is_none() && is_row_wise(partial.as_ref()) {
        partial = only_child(&partial)?;
    }
    match partial.downcast_ref::<AggregateExec>() {
        Some(p) if *p.mode() == AggregateMode::Partial => {}
        _ => return Err(refusal(partial.as_ref())),
    }
    // Below the partial aggregate: row-wise nodes (and sorts, which order one epoch's rows
    // for an order-sensitive aggregate, whose state merges in order) down to the input, or
    // down to another aggregate's `Final`.
    let mut feed = vec![];
    let mut below = only_child(&partial)?;
    loop {
        if let Some(inner) = below.downcast_ref::<AggregateExec>() {
            let mut chain = stages_of(&below, inner, vec![], inputs, sessions)?;
            chain.push(Aggregation::new(
                partial,
                node.clone(),
                above,
                Some(Feed {
                    nodes: feed,
                    schema: below.schema(),
                }),
                sessions,
            )?);
            return Ok(chain);
        }
        // A lookup join reads the input's rows, not an inner stage's: what it joins them
        // with only has to reach the input.
        let looked_up = match lookup_join(&below, inputs)? {
            Some(side) => check_stateless(&side, inputs).map(|()| true)?,
            None => false,
        };
        let joined = stream_join(&below, inputs)?;
        if joined {
            check_stateless(&below, inputs)?;
        }
        if looked_up
            || joined
            || is_input_scan(below.as_ref(), inputs)
            || below.name() == "EmptyExec"
        {
            return Ok(vec![Aggregation::new(
                partial,
                node.clone(),
                above,
                None,
                sessions,
            )?]);
        }
        let session_window =
            sessions && matches!(below.name(), "WindowAggExec" | "BoundedWindowAggExec");
        if !is_row_wise(below.as_ref()) && !orders(below.as_ref()) && !session_window {
            return Err(refusal(below.as_ref()));
        }
        feed.push(below.clone());
        below = only_child(&below)?;
    }
}

/// The column of the bottom input of `nodes` (top first) that column `i` of their output
/// is, unchanged; `None` if it is computed.
fn source_column(nodes: &[Arc<dyn ExecutionPlan>], mut i: usize) -> Option<usize> {
    for node in nodes {
        if let Some(p) = node.downcast_ref::<ProjectionExec>() {
            i = p.expr()[i].expr.downcast_ref::<Column>()?.index();
        } else if let Some(f) = node.downcast_ref::<FilterExec>() {
            if let Some(p) = f.projection() {
                i = p[i];
            }
        } else if node.name() == "UnnestExec"
            || !(is_row_wise(node.as_ref()) || orders(node.as_ref()))
        {
            // An unnest makes columns; anything else row-wise passes them through.
            return None;
        }
    }
    Some(i)
}

/// For each of the first `groups` columns of the aggregate's output, the column of the
/// query's output that is that group column unchanged (through projections and filters).
fn group_outputs(above: &[Arc<dyn ExecutionPlan>], groups: usize) -> Vec<Option<usize>> {
    let mut at: Vec<Option<usize>> = (0..groups).map(Some).collect();
    for node in above.iter().rev() {
        let map = |i: usize| -> Option<usize> {
            if let Some(p) = node.downcast_ref::<ProjectionExec>() {
                p.expr().iter().position(|e| {
                    e.expr
                        .downcast_ref::<Column>()
                        .is_some_and(|c| c.index() == i)
                })
            } else if let Some(f) = node.downcast_ref::<FilterExec>() {
                match f.projection() {
                    Some(p) => p.iter().position(|c| *c == i),
                    None => Some(i),
                }
            } else {
                Some(i)
            }
        };
        at = at.into_iter().map(|i| i.and_then(map)).collect();
    }
    at
}

fn df(e: datafusion::error::DataFusionError) -> Error {
    Error::from_datafusion(e)
}

/// For each row of `rows`, the row of `of` with the same leading `groups` columns (each
/// group is in `of` once).
fn same_groups(rows: &RecordBatch, of: &RecordBatch, groups: usize) -> Result<UInt32Array> {
    if groups == 0 {
        return Ok(UInt32Array::from(vec![0; rows.num_rows()]));
    }
    let fields = of.schema().fields()[..groups]
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let converter =
        RowConverter::new(fields).map_err(|e| Error::Internal(format!("merged groups: {e}")))?;
    let at = state::same_groups(
        &converter,
        &rows.columns()[..groups],
        &of.columns()[..groups],
    )?;
    Ok(UInt32Array::from(at))
}

/// `plan` reading `child` instead of its input.
fn replace_child(
    plan: Arc<dyn ExecutionPlan>,
    child: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.replace_children(vec![child], recompute()).map_err(df)
}

/// Replacing a node's children recomputes its properties from theirs.
pub(super) fn recompute() -> ReplaceChildrenOptions {
    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute)
}

/// An in-memory plan of `batches`.
pub(super) fn memory(
    batches: Vec<RecordBatch>,
    schema: SchemaRef,
) -> Result<Arc<dyn ExecutionPlan>> {
    let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
    MemorySourceConfig::try_new_exec(&[batches], schema, None)
        .map(|e| e as Arc<dyn ExecutionPlan>)
        .map_err(df)
}

impl Aggregation {
    /// The aggregation whose `Partial` aggregate is `partial`, and `Final` `final_`. Its
    /// `count(DISTINCT …)` aggregates keep their values in sets, unless the query has
    /// `SESSION` windows, whose merges of sessions merge their lists.
    fn new(
        partial: Arc<dyn ExecutionPlan>,
        final_: Arc<dyn ExecutionPlan>,
        above: Vec<Arc<dyn ExecutionPlan>>,
        feed: Option<Feed>,
        sessions: bool,
    ) -> Result<Aggregation> {
        let distinct = match partial.downcast_ref::<AggregateExec>() {
            Some(p) if !sessions => Distinct::of(p, &final_)?.map(Arc::new),
            _ => None,
        };
        let partial = distinct
            .as_ref()
            .and_then(|d| d.collecting.clone())
            .unwrap_or(partial);
        Ok(Aggregation {
            partial,
            final_,
            above,
            feed,
            from: None,
            distinct,
        })
    }

    /// A stage reading the epoch's records, with the joins below it that look a kept
    /// table up reading only the keys they look up.
    fn with_lookups(mut self, tables: &[Arc<LookupTable>]) -> Result<Aggregation> {
        if self.feed.is_none() {
            self.partial = with_lookups(self.partial, tables)?;
        }
        Ok(self)
    }

    /// A group's partial state, as stored and merged.
    pub fn state_schema(&self) -> SchemaRef {
        match &self.distinct {
            Some(d) => d.state.clone(),
            None => self.partial.schema(),
        }
    }

    /// The lists its `count(DISTINCT …)` aggregates' values come in, kept in sets.
    pub fn sets(&self) -> Vec<FieldRef> {
        let schema = self.partial.schema();
        self.distinct.as_ref().map_or(vec![], |d| {
            d.lists
                .iter()
                .map(|c| schema.fields()[*c].clone())
                .collect()
        })
    }

    /// How many group columns lead its state.
    fn groups(&self) -> usize {
        self.partial
            .downcast_ref::<AggregateExec>()
            .expect("a partial aggregate")
            .group_expr()
            .num_group_exprs()
    }

    /// For a stage over a stage whose groups close by `closing`: its group columns that
    /// are one of those, unchanged, and close its groups as they close the inner ones.
    fn closing_over(&self, closing: &[Expiry]) -> Vec<Expiry> {
        let Some(feed) = &self.feed else {
            return vec![];
        };
        let partial = self
            .partial
            .downcast_ref::<AggregateExec>()
            .expect("a partial aggregate");
        let mut found = vec![];
        for inner in closing {
            for (column, (expr, _)) in partial.group_expr().expr().iter().enumerate() {
                let from = expr
                    .downcast_ref::<Column>()
                    .and_then(|c| source_column(&feed.nodes, c.index()));
                if from == Some(inner.column) {
                    found.push(Expiry {
                        column,
                        plus: inner.plus,
                    });
                }
            }
        }
        found
    }

    /// Aggregates into partial state (a group may appear more than once) the epoch's
    /// records, or for a stage over another, `rows`: the final rows of the windows that
    /// stage closed.
    pub async fn partial(
        &self,
        rows: Vec<RecordBatch>,
        ctx: Arc<TaskContext>,
    ) -> Result<Vec<RecordBatch>> {
        let plan = match &self.feed {
            None => self.partial.clone(),
            Some(feed) => {
                let mut plan = memory(rows, feed.schema.clone())?;
                for node in feed.nodes.iter().rev() {
                    plan = replace_child(node.clone(), plan)?;
                }
                replace_child(self.partial.clone(), plan)?
            }
        };
        collect(plan, ctx).await.map_err(df)
    }

    /// Merges partial states (as stored) into one row per group.
    pub async fn reduce(
        &self,
        states: Vec<RecordBatch>,
        ctx: Arc<TaskContext>,
    ) -> Result<Vec<RecordBatch>> {
        let aggregates = match &self.distinct {
            Some(d) => d.merging.clone(),
            None => self.partial_aggregate().aggr_expr().to_vec(),
        };
        self.reduce_with(aggregates, self.state_schema(), states, ctx)
            .await
    }

    /// Merges partial states of `schema` into one row per group with `aggregates`.
    async fn reduce_with(
        &self,
        aggregates: Vec<Arc<AggregateFunctionExpr>>,
        schema: SchemaRef,
        states: Vec<RecordBatch>,
        ctx: Arc<TaskContext>,
    ) -> Result<Vec<RecordBatch>> {
        let partial = self.partial_aggregate();
        let reduce = AggregateExec::try_new(
            AggregateMode::PartialReduce,
            partial.group_expr().as_final(),
            aggregates,
            partial.filter_expr().to_vec(),
            memory(states, schema)?,
            partial.input_schema(),
        )
        .map_err(df)?;
        collect(Arc::new(reduce), ctx).await.map_err(df)
    }

    fn partial_aggregate(&self) -> &AggregateExec {
        self.partial
            .downcast_ref::<AggregateExec>()
            .expect("a partial aggregate")
    }

    /// The aggregates' values for groups in merged state (values added to sets after it,
    /// if any, are passed over).
    pub async fn finalize(
        &self,
        state: Vec<RecordBatch>,
        ctx: Arc<TaskContext>,
    ) -> Result<Vec<RecordBatch>> {
        let schema = self.state_schema();
        let width = schema.fields().len();
        let state = state
            .into_iter()
            .map(|b| match b.num_columns() > width {
                true => b
                    .project(&(0..width).collect::<Vec<_>>())
                    .map_err(|e| Error::Internal(format!("merged state: {e}"))),
                false => Ok(b),
            })
            .collect::<Result<Vec<_>>>()?;
        let input = memory(state, schema)?;
        let last = match &self.distinct {
            Some(d) => d.final_.clone(),
            None => self.final_.clone(),
        };
        let plan = replace_child(last, input)?;
        collect(plan, ctx).await.map_err(df)
    }

    /// Runs the epoch's partial aggregate (over `rows`, for a stage over another) and
    /// merges it with the stored state of the groups it touched in `groups`: the merged
    /// state of every changed group, one row each, followed by the values each adds to
    /// its sets (as [`Groups::changelog`] has them).
    pub async fn merge_state(
        &self,
        rows: Vec<RecordBatch>,
        groups: &Groups,
        ctx: Arc<TaskContext>,
    ) -> Result<RecordBatch> {
        let Some(distinct) = &self.distinct else {
            let states = |touched: RecordBatch| -> Result<Vec<RecordBatch>> {
                let mut states: Vec<RecordBatch> =
                    groups.lookup_partial(&touched)?.into_iter().collect();
                states.push(touched);
                Ok(states)
            };
            return self.merge_with(rows, states, ctx).await;
        };
        // The epoch's values, one row per group, counted against the sets.
        let schema = self.partial.schema();
        let partial = concat(&schema, &self.partial(rows, ctx.clone()).await?)?;
        let aggregates = self.partial_aggregate().aggr_expr().to_vec();
        let touched = concat(
            &schema,
            &self
                .reduce_with(aggregates, schema.clone(), vec![partial], ctx.clone())
                .await?,
        )?;
        let keys = &touched.columns()[..self.groups()];
        let lists: Vec<ArrayRef> = distinct
            .lists
            .iter()
            .map(|c| touched.column(*c).clone())
            .collect();
        let (counts, added) = groups.novel(keys, &lists)?;
        let mut columns = touched.columns().to_vec();
        for (c, count) in distinct.lists.iter().zip(counts) {
            columns[*c] = count;
        }
        let counted = RecordBatch::try_new(distinct.state.clone(), columns)
            .map_err(|e| Error::Internal(format!("distinct counts: {e}")))?;
        let mut states: Vec<RecordBatch> = groups.lookup_partial(&counted)?.into_iter().collect();
        states.push(counted.clone());
        let merged = concat(&distinct.state, &self.reduce(states, ctx).await?)?;
        // The values added, in the merged rows' order.
        let at = same_groups(&merged, &counted, self.groups())?;
        let mut columns = merged.columns().to_vec();
        for list in added {
            columns.push(
                take(&list, &at, None)
                    .map_err(|e| Error::Internal(format!("distinct values: {e}")))?,
            );
        }
        RecordBatch::try_new(groups.changelog.clone(), columns)
            .map_err(|e| Error::Internal(format!("merged state: {e}")))
    }

    /// Runs the epoch's partial aggregate (over `rows`, for a stage over another) and
    /// merges, one row per group, the partial states `states` makes of its output. Not
    /// for an aggregation with sets.
    pub async fn merge_with(
        &self,
        rows: Vec<RecordBatch>,
        states: impl FnOnce(RecordBatch) -> Result<Vec<RecordBatch>>,
        ctx: Arc<TaskContext>,
    ) -> Result<RecordBatch> {
        if self.distinct.is_some() {
            return Err(Error::Internal(
                "an aggregation with sets merged without them".into(),
            ));
        }
        let schema = self.partial.schema();
        let touched = concat(&schema, &self.partial(rows, ctx.clone()).await?)?;
        concat(&schema, &self.reduce(states(touched)?, ctx).await?)
    }

    /// As [`Aggregation::merge_state`], taking back what the rows `back` brought: the rows
    /// an inner stage's changed groups had before. Their partial states, negated, merge
    /// with the epoch's; every state of an aggregate over changing groups is a sum
    /// ([`retract::rewrite_over_groups`]), so a negated one takes back what it added.
    pub async fn merge_taking_back(
        &self,
        rows: Vec<RecordBatch>,
        back: Vec<RecordBatch>,
        groups: &Groups,
        ctx: Arc<TaskContext>,
    ) -> Result<RecordBatch> {
        if back.iter().all(|b| b.num_rows() == 0) {
            return self.merge_state(rows, groups, ctx).await;
        }
        if self.distinct.is_some() {
            return Err(Error::Internal(
                "an aggregation with sets takes rows back".into(),
            ));
        }
        let schema = self.partial.schema();
        let mut partials = self.partial(rows, ctx.clone()).await?;
        for batch in self.partial(back, ctx.clone()).await? {
            partials.push(negated(&batch, self.groups())?);
        }
        let touched = concat(&schema, &partials)?;
        let mut states: Vec<RecordBatch> = groups.lookup_partial(&touched)?.into_iter().collect();
        states.push(touched);
        concat(&schema, &self.reduce(states, ctx).await?)
    }

    /// As [`Aggregation::merge_state`], with the changed groups' values.
    pub async fn merge(
        &self,
        rows: Vec<RecordBatch>,
        groups: &Groups,
        ctx: Arc<TaskContext>,
    ) -> Result<(RecordBatch, Vec<RecordBatch>)> {
        let merged = self.merge_state(rows, groups, ctx.clone()).await?;
        let finals = self.finalize(vec![merged.clone()], ctx).await?;
        Ok((merged, finals))
    }

    /// The query's rows for final values (`HAVING` and the `SELECT` list applied).
    pub fn output_plan(&self, finals: Vec<RecordBatch>) -> Result<Arc<dyn ExecutionPlan>> {
        let mut plan = memory(finals, self.final_.schema())?;
        for node in self.above.iter().rev() {
            plan = replace_child(node.clone(), plan)?;
        }
        Ok(plan)
    }

    pub async fn output(
        &self,
        finals: Vec<RecordBatch>,
        ctx: Arc<TaskContext>,
    ) -> Result<Vec<RecordBatch>> {
        collect(self.output_plan(finals)?, ctx).await.map_err(df)
    }
}

impl Top {
    /// The plan that joins (or unites) the windows the stages closed, `closed[k]` the
    /// final rows of stage `k`'s.
    pub fn plan(&self, closed: &[Vec<RecordBatch>]) -> Result<Arc<dyn ExecutionPlan>> {
        self.graft(&self.plan, closed)
    }

    fn graft(
        &self,
        node: &Arc<dyn ExecutionPlan>,
        closed: &[Vec<RecordBatch>],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some((stage, _)) = self.leaves.iter().find(|(_, leaf)| same(leaf, node)) {
            return memory(closed[*stage].clone(), node.schema());
        }
        let children = node
            .children()
            .into_iter()
            .map(|child| self.graft(child, closed))
            .collect::<Result<Vec<_>>>()?;
        let options = recompute();
        node.clone().replace_children(children, options).map_err(df)
    }

    /// Checks that every join under `node` matches rows that close in the same epoch, the
    /// stages' groups closing by `closing`: one of its equalities is between columns that
    /// are the same window bound on both sides.
    fn check(&self, node: &Arc<dyn ExecutionPlan>, closing: &[Vec<Expiry>]) -> Result<()> {
        if self.leaves.iter().any(|(_, leaf)| same(leaf, node)) {
            return Ok(());
        }
        if let Some(join) = node.downcast_ref::<HashJoinExec>() {
            let together = join.on().iter().any(|(left, right)| {
                let at = |side: &Arc<dyn ExecutionPlan>, expr: &Arc<dyn PhysicalExpr>| {
                    let column = expr.downcast_ref::<Column>()?;
                    self.closes(side, column.index(), closing)
                };
                at(join.left(), left).is_some_and(|plus| at(join.right(), right) == Some(plus))
            });
            if !together {
                return Err(Error::Unsupported(format!(
                    "this query cannot run continuously: {COMBINED}"
                )));
            }
        }
        node.children()
            .into_iter()
            .try_for_each(|child| self.check(child, closing))
    }

    /// If column `i` of `node` is a window bound of a stage's groups, unchanged: how long
    /// after its value the group closes (the same for every branch of a union).
    fn closes(
        &self,
        node: &Arc<dyn ExecutionPlan>,
        i: usize,
        closing: &[Vec<Expiry>],
    ) -> Option<i64> {
        if let Some((stage, _)) = self.leaves.iter().find(|(_, leaf)| same(leaf, node)) {
            // A `Final` returns the group columns first, as its state holds them.
            return closing[*stage]
                .iter()
                .find(|e| e.column == i)
                .map(|e| e.plus);
        }
        if let Some(join) = node.downcast_ref::<HashJoinExec>() {
            let i = join
                .projection
                .as_ref()
                .map_or(Some(i), |p| p.get(i).copied())?;
            let (_, columns) = build_join_schema(
                &join.left().schema(),
                &join.right().schema(),
                join.join_type(),
            );
            let column = columns.get(i)?;
            return match column.side {
                JoinSide::Left => self.closes(join.left(), column.index, closing),
                JoinSide::Right => self.closes(join.right(), column.index, closing),
                JoinSide::None => None,
            };
        }
        if node.name() == "UnionExec" {
            let mut each = node
                .children()
                .into_iter()
                .map(|child| self.closes(child, i, closing));
            let first = each.next()??;
            return each.all(|p| p == Some(first)).then_some(first);
        }
        let [child] = node.children()[..] else {
            return None;
        };
        let i = source_column(std::slice::from_ref(node), i)?;
        self.closes(child, i, closing)
    }
}

/// Whether `a` and `b` are the same node of a plan.
fn same(a: &Arc<dyn ExecutionPlan>, b: &Arc<dyn ExecutionPlan>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// The latest [`Aggregation`] of a query, for reading its view between epochs.
pub type SharedAggregation = Arc<Mutex<Option<Aggregation>>>;

fn concat(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch> {
    arrow::compute::concat_batches(schema, batches)
        .map_err(|e| Error::Internal(format!("aggregate state: {e}")))
}

pub async fn run(plan: Arc<dyn ExecutionPlan>, ctx: Arc<TaskContext>) -> Result<Vec<RecordBatch>> {
    collect(plan, ctx).await.map_err(df)
}

#[cfg(test)]
mod tests {
    use super::*;

    use datafusion::prelude::SessionContext;

    async fn avg_type(state: &SessionState) -> DataType {
        let plan = state
            .create_logical_plan("SELECT avg(x) FROM (VALUES (1), (2)) t(x)")
            .await
            .unwrap();
        plan.schema().field(0).data_type().clone()
    }

    #[tokio::test]
    async fn a_query_is_planned_as_it_was_made() {
        let mut base = SessionContext::new().state();
        for udaf in sql::functions::udafs() {
            datafusion::execution::FunctionRegistry::register_udaf(&mut base, Arc::new(udaf))
                .unwrap();
        }
        let current = planned_as(&base, Dialect::CURRENT).unwrap();
        assert_eq!(avg_type(&current).await, DataType::Decimal128(38, 16));
        let earlier = planned_as(&base, Dialect::default()).unwrap();
        assert_eq!(avg_type(&earlier).await, DataType::Float64);
    }
}
