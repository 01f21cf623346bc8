//! The continuous query engine: every derived stream, materialized view and persistent
//! `INSERT` is a task running epochs over its input (see `query`).
//!
//! The [`Engine`] owns those tasks: it starts them when the database opens (each resumes
//! from its checkpoint) and when one is created, stops them when one is dropped or the
//! server shuts down, answers `FLUSH`, reports their status for `sys.queries`, and serves
//! the contents of materialized views to `SELECT`.

pub mod checkpoint;
mod collect;
mod distinct;
mod lookup;
pub mod plan;
mod push;
mod query;
mod retract;
mod sessions;
pub mod state;
mod stream_join;
mod table_changes;

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::catalog::{CatalogData, Dialect, Emit, QueryDef, QueryId, QueryTarget, StartPosition};
use crate::error::{Error, Result};
use crate::metrics::Durations;
use crate::storage::{Hold, MetaUpdate, PartitionId, Snapshot, TopicId};
use crate::tables::scan::{ScanBounds, StreamScan, StreamScanExec, TableColumn, literal_of};
use crate::tables::{Continuous, QueryStatus, Tables};
use checkpoint::{Checkpoint, InputOffset};
use plan::{Aggregation, QueryPlan};
pub use push::PushQuery;
use state::Groups;

/// How epochs are paced and sized.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Epochs of one query start at most this often; new data within it waits for the next.
    pub min_interval: Duration,
    /// Input records one epoch reads at most (over all its partitions).
    pub max_epoch_rows: u64,
    /// Epochs a view's subscriber may fall behind before it is dropped.
    pub subscriber_max_lag_epochs: usize,
    /// Logins are trusted: a query owner the catalog does not have is a superuser.
    pub trusted_logins: bool,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            min_interval: Duration::from_millis(10),
            max_epoch_rows: 1_000_000,
            subscriber_max_lag_epochs: 1024,
            trusted_logins: true,
        }
    }
}

pub struct Engine {
    tables: Arc<Tables>,
    /// The database's session state: functions, settings; each query plans in a copy.
    base: SessionState,
    config: EngineConfig,
    queries: Mutex<BTreeMap<QueryId, Arc<Running>>>,
}

/// A started query: its task and what it shares with readers.
struct Running {
    def: QueryDef,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// What a query's task publishes.
pub(crate) struct Shared {
    status: Mutex<Status>,
    /// Input positions as of the last committed epoch, and whether the task has ended.
    progress: watch::Sender<Progress>,
    /// The contents of a materialized view, once its state is restored.
    view: std::sync::OnceLock<Arc<ViewContents>>,
    /// Each committed epoch's changes to a grouped view, while someone subscribes.
    changes: broadcast::Sender<Arc<ViewChange>>,
    /// How long its epochs take, from planning to commit.
    epoch_seconds: Arc<Durations>,
    /// How often it has failed since the server started.
    failures: AtomicU64,
}

/// One committed epoch's changes to a grouped view's rows: the rows of its changed groups
/// before the epoch (`removed`) and after it (`added`), in the view's columns.
pub struct ViewChange {
    pub epoch: u64,
    pub removed: Vec<RecordBatch>,
    pub added: Vec<RecordBatch>,
}

#[derive(Debug, Clone, Default)]
struct Progress {
    positions: Vec<InputOffset>,
    /// Why the query stopped running, if it failed.
    failed: Option<String>,
    stopped: bool,
}

impl Progress {
    fn covers(&self, targets: &[InputOffset]) -> bool {
        checkpoint::lag(&self.positions, targets) == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Running,
    Failed,
    Stopped,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Failed => "failed",
            State::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone)]
struct Status {
    state: State,
    epoch: u64,
    rows_in: u64,
    rows_out: u64,
    last_checkpoint_ms: Option<i64>,
    error: Option<String>,
    /// An aggregation's live groups, and the memory its state holds.
    groups: Option<u64>,
    state_bytes: u64,
    /// Over a stream with a watermark: the watermark, rows dropped as late, and per
    /// partition the greatest watermark-expression value read and whether it is idle.
    watermark: Option<i64>,
    late_rows: u64,
    event_times: Vec<(PartitionId, i64, bool)>,
    /// `(when, rows_in)` after recent epochs, for the input rate.
    samples: VecDeque<(Instant, u64)>,
    /// `(when, records not read yet)` after recent epochs, for the time to catch up.
    backlog: VecDeque<(Instant, u64)>,
    /// When the last epoch that read everything committed then started: the output
    /// reflects the input as of that moment.
    fresh_as_of: Instant,
}

/// The window the input rate is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(10);

impl Status {
    fn new() -> Status {
        Status {
            state: State::Starting,
            epoch: 0,
            rows_in: 0,
            rows_out: 0,
            last_checkpoint_ms: None,
            error: None,
            groups: None,
            state_bytes: 0,
            watermark: None,
            late_rows: 0,
            event_times: vec![],
            samples: [(Instant::now(), 0)].into(),
            backlog: VecDeque::new(),
            fresh_as_of: Instant::now(),
        }
    }

    fn record_epoch(&mut self, epoch: u64, rows_in: u64, rows_out: u64, at_ms: i64) {
        let now = Instant::now();
        self.epoch = epoch;
        self.rows_in += rows_in;
        self.rows_out += rows_out;
        self.last_checkpoint_ms = Some(at_ms);
        self.samples.push_back((now, self.rows_in));
        keep_window(&mut self.samples, now);
    }

    /// After an epoch that started at `started`: `lag` records are left to read, and
    /// whether it read all that was committed when it started.
    fn record_backlog(&mut self, started: Instant, read_all: bool, lag: u64) {
        let now = Instant::now();
        if read_all {
            self.fresh_as_of = started;
        }
        self.backlog.push_back((now, lag));
        keep_window(&mut self.backlog, now);
    }

    /// How far behind its input the output is: 0 with nothing left to read, otherwise the
    /// time since the output last reflected everything committed.
    fn lag_secs(&self, lag: u64) -> f64 {
        match lag {
            0 => 0.0,
            _ => self.fresh_as_of.elapsed().as_secs_f64(),
        }
    }

    /// The time to read the `lag` records left at the pace the backlog has shrunk over
    /// about the last [`RATE_WINDOW`]; `None` while it is not shrinking.
    fn catch_up_secs(&self, lag: u64) -> Option<f64> {
        if lag == 0 {
            return Some(0.0);
        }
        let now = Instant::now();
        let &(at, then) = window_base(&self.backlog, now)?;
        let drained = then.checked_sub(lag).filter(|d| *d > 0)? as f64;
        let per_sec = drained / (now - at).as_secs_f64().max(1.0);
        Some((lag as f64 / per_sec * 10.0).round() / 10.0)
    }

    /// Input records per second over about the last [`RATE_WINDOW`].
    fn rate(&self) -> f64 {
        let now = Instant::now();
        let Some(&(at, rows)) = window_base(&self.samples, now) else {
            return 0.0;
        };
        let rate = (self.rows_in - rows) as f64 / (now - at).as_secs_f64().max(1.0);
        (rate * 10.0).round() / 10.0
    }
}

/// Drops samples older than needed: one from before [`RATE_WINDOW`] is kept, as a base.
fn keep_window(samples: &mut VecDeque<(Instant, u64)>, now: Instant) {
    while samples.len() > 1 && now - samples[1].0 >= RATE_WINDOW {
        samples.pop_front();
    }
}

/// The sample a rate over about the last [`RATE_WINDOW`] is measured from.
fn window_base(samples: &VecDeque<(Instant, u64)>, now: Instant) -> Option<&(Instant, u64)> {
    samples
        .iter()
        .rev()
        .find(|(t, _)| now - *t >= RATE_WINDOW)
        .or(samples.front())
}

/// What a materialized view's `SELECT` reads.
pub(crate) struct ViewContents {
    name: String,
    schema: SchemaRef,
    source: ViewSource,
}

enum ViewSource {
    /// A view without aggregation: its rows are the records of its state topic.
    Rows { topic: TopicId },
    /// An aggregating view: the final values of its groups, and the plan that turns them
    /// into the view's rows.
    Groups(Box<ViewGroups>),
}

struct ViewGroups {
    /// The groups, with their final values.
    groups: Arc<Groups>,
    /// Where the final values are in `groups`' rows.
    finals: state::Columns,
    /// The epoch `groups` are as of (changed only under their write lock).
    applied: AtomicU64,
    aggregation: Mutex<Aggregation>,
    /// Per group column: the view column that shows it unchanged, if any.
    group_outputs: Vec<Option<usize>>,
    /// A view of event-time windows: the rows of its closed windows, which have left
    /// `groups`.
    closed: Option<ClosedRows>,
}

/// The rows of a view's closed windows: an internal topic, read up to `end`, the offset
/// its records reached when `groups` were last changed (under their write lock), so that a
/// window's row is read either from `groups` or from here, once.
struct ClosedRows {
    topic: TopicId,
    end: AtomicU64,
}

/// Most keys a filter may name for a view to look them up instead of reading every group.
const MAX_LOOKUP_KEYS: usize = 1024;

impl ViewGroups {
    /// The key columns of the groups `filters` can match, when they pin every group column
    /// to literals (`user_id = 42`, `k IN (1, 2)`); `None` when all groups must be read.
    fn lookup_keys(
        &self,
        filters: &[Expr],
        schema: &Schema,
        final_schema: &Schema,
    ) -> Option<Vec<ArrayRef>> {
        let mut pinned: Vec<Option<Vec<ScalarValue>>> = vec![None; self.group_outputs.len()];
        if pinned.is_empty() {
            return None;
        }
        for filter in filters.iter().flat_map(|f| split_conjunction(f)) {
            // Only a plain column: a cast of the column could match keys the literal does not.
            let (column, values) = match filter {
                Expr::BinaryExpr(BinaryExpr {
                    left,
                    op: Operator::Eq,
                    right,
                }) => match (left.as_ref(), right.as_ref()) {
                    (Expr::Column(c), other) | (other, Expr::Column(c)) => {
                        match literal_of(other) {
                            Some(v) => (c, vec![v]),
                            None => continue,
                        }
                    }
                    _ => continue,
                },
                Expr::InList(list) if !list.negated => match list.expr.as_ref() {
                    Expr::Column(c) => {
                        match list.list.iter().map(literal_of).collect::<Option<Vec<_>>>() {
                            Some(values) => (c, values),
                            None => continue,
                        }
                    }
                    _ => continue,
                },
                _ => continue,
            };
            let Ok(at) = schema.index_of(&column.name) else {
                continue;
            };
            if let Some(group) = self.group_outputs.iter().position(|o| *o == Some(at)) {
                pinned[group] = Some(values);
            }
        }
        let pinned: Vec<Vec<ScalarValue>> = pinned.into_iter().collect::<Option<_>>()?;
        let combinations = pinned
            .iter()
            .try_fold(1usize, |n, v| n.checked_mul(v.len()))?;
        if combinations == 0 || combinations > MAX_LOOKUP_KEYS {
            return None;
        }
        // Every combination of the pinned values, one row each.
        let mut columns = vec![];
        let mut repeat = 1;
        for (group, values) in pinned.iter().enumerate() {
            let data_type = final_schema.field(group).data_type();
            let values: Vec<ScalarValue> = values
                .iter()
                .map(|v| v.cast_to(data_type).ok())
                .collect::<Option<_>>()?;
            let cycle = combinations / (repeat * values.len());
            let column = (0..cycle)
                .flat_map(|_| {
                    values
                        .iter()
                        .flat_map(|v| std::iter::repeat_n(v.clone(), repeat))
                })
                .collect::<Vec<_>>();
            columns.push(ScalarValue::iter_to_array(column).ok()?);
            repeat *= values.len();
        }
        Some(columns)
    }
}

impl ViewContents {
    /// The view's rows; `filters` (applied again by the caller) may narrow what is read.
    fn plan(
        &self,
        tables: &Tables,
        snapshot: &Snapshot,
        filters: &[Expr],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match &self.source {
            ViewSource::Rows { topic } => self.rows_plan(tables, snapshot, *topic, u64::MAX),
            ViewSource::Groups(groups) => {
                let aggregation = groups.aggregation.lock().expect("view lock").clone();
                let columns = &groups.finals;
                let state = groups.groups.read();
                let rows = match groups.lookup_keys(filters, &self.schema, columns.schema()) {
                    Some(keys) => {
                        let n = keys.first().map_or(0, |k| k.len());
                        state
                            .lookup_columns(&keys, n, columns)?
                            .into_iter()
                            .collect()
                    }
                    None => state.rows(columns)?,
                };
                let closed_end = groups
                    .closed
                    .as_ref()
                    .map(|c| c.end.load(Ordering::Acquire));
                drop(state);
                let open = aggregation.output_plan(rows)?;
                match (&groups.closed, closed_end) {
                    (Some(closed), Some(end)) => {
                        let closed = self.rows_plan(tables, snapshot, closed.topic, end)?;
                        UnionExec::try_new(vec![open, closed]).map_err(Error::from_datafusion)
                    }
                    _ => Ok(open),
                }
            }
        }
    }

    /// The rows in `topic` (of the view's columns) below offset `end`.
    fn rows_plan(
        &self,
        tables: &Tables,
        snapshot: &Snapshot,
        topic: TopicId,
        end: u64,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let topic = tables
            .log
            .topic(topic)
            .ok_or_else(|| Error::UnknownRelation(format!("view \"{}\" was dropped", self.name)))?;
        let columns = (0..self.schema.fields().len())
            .map(TableColumn::Stored)
            .collect();
        let mut bounds = ScanBounds::all();
        bounds.offsets.end = end;
        let scan = StreamScan::new(self.name.clone(), topic, snapshot, columns, bounds);
        Ok(Arc::new(StreamScanExec::new(
            scan,
            self.schema.clone(),
            None,
        )))
    }
}

/// A subscription to a grouped view: its rows as of one epoch, then every later epoch's
/// changes.
pub struct ViewSubscription {
    pub schema: SchemaRef,
    pub snapshot: Vec<RecordBatch>,
    /// The epoch `snapshot` is as of; changes up to it are already in it.
    pub epoch: u64,
    pub changes: broadcast::Receiver<Arc<ViewChange>>,
    /// Epochs it may fall behind before it is ended.
    pub max_lag_epochs: usize,
}

impl Engine {
    /// Subscribes to the grouped materialized view `view`.
    pub async fn subscribe_view(&self, view: &str) -> Result<ViewSubscription> {
        let running = self
            .running()
            .into_iter()
            .find(|r| matches!(&r.def.target, QueryTarget::View { view: v } if v == view))
            .ok_or_else(|| Error::UnknownRelation(format!("view \"{view}\" does not exist")))?;
        let not_yet = || {
            Error::plan(
                "55000",
                format!("view \"{view}\" is not running; see sys.queries"),
            )
        };
        let contents = running.shared.view.get().ok_or_else(not_yet)?;
        let ViewSource::Groups(groups) = &contents.source else {
            return Err(Error::Unsupported(match running.def.emit {
                Emit::OnWindowClose => format!(
                    "SUBSCRIBE to view \"{view}\", which emits on window close, is not supported yet; a derived stream with EMIT ON WINDOW CLOSE gives the same rows, and SUBSCRIBE to it pushes each as its window closes"
                ),
                Emit::Changes => format!(
                    "SUBSCRIBE to view \"{view}\" without aggregation is not supported yet; SUBSCRIBE to the stream it reads"
                ),
            }));
        };
        // Subscribe first, then read: a change committed in between is in the snapshot or
        // after its epoch, never lost.
        let changes = running.shared.changes.subscribe();
        let aggregation = groups.aggregation.lock().expect("view lock").clone();
        let (rows, epoch, closed_end) = {
            let state = groups.groups.read();
            (
                state.rows(&groups.finals)?,
                groups.applied.load(Ordering::Acquire),
                groups
                    .closed
                    .as_ref()
                    .map(|c| c.end.load(Ordering::Acquire)),
            )
        };
        let ctx = Arc::new(datafusion::execution::TaskContext::from(&self.base));
        let mut snapshot = aggregation.output(rows, ctx.clone()).await?;
        if let (Some(closed), Some(end)) = (&groups.closed, closed_end) {
            let log = self.tables.log.snapshot();
            let plan = contents.rows_plan(&self.tables, &log, closed.topic, end)?;
            snapshot.extend(plan::run(plan, ctx).await?);
        }
        Ok(ViewSubscription {
            max_lag_epochs: self.config.subscriber_max_lag_epochs,
            schema: contents.schema.clone(),
            snapshot,
            epoch,
            changes,
        })
    }

    pub fn new(tables: Arc<Tables>, base: SessionState, config: EngineConfig) -> Engine {
        Engine {
            tables,
            base,
            config,
            queries: Mutex::new(BTreeMap::new()),
        }
    }

    /// The session state queries plan in (a copy each).
    pub fn base(&self) -> &SessionState {
        &self.base
    }

    /// Starts every query of the catalog from its checkpoint (views' state restored before
    /// this returns).
    pub async fn start_all(self: &Arc<Self>) -> Result<()> {
        let data = self.tables.catalog.snapshot();
        for def in data.queries.values() {
            self.start(def.clone()).await;
        }
        Ok(())
    }

    /// Where each continuous query of `data` still has to read its input from: its
    /// checkpoint (the start of an epoch that was planned and not committed).
    pub fn holds(&self, data: &CatalogData) -> Vec<Hold> {
        let snapshot = self.tables.log.snapshot();
        // A query keeps a table's rows as their latest per key: compaction leaves that be.
        let tables: HashSet<TopicId> = data
            .topics
            .values()
            .filter(|t| data.stream_of_topic(t).is_some_and(|s| s.is_table()))
            .map(|t| t.id)
            .collect();
        let mut holds = vec![];
        for def in data.queries.values() {
            let Some(checkpoint) = snapshot
                .meta(def.id.0)
                .and_then(|b| Checkpoint::decode(b).ok())
            else {
                continue;
            };
            holds.extend(checkpoint.inputs.iter().map(|input| Hold {
                topic: input.topic,
                partition: input.partition,
                offset: input.offset,
                holder: format!("query {}", def.name),
                waits: true,
            }));
            holds.extend(checkpoint.starts.iter().map(|input| Hold {
                topic: input.topic,
                partition: input.partition,
                offset: input.offset,
                holder: format!("query {} (the input rows it keeps)", def.name),
                waits: !tables.contains(&input.topic),
            }));
        }
        holds
    }

    /// Plans a new continuous query's `SELECT`, refusing what cannot run incrementally.
    pub async fn plan(&self, sql: &str, catalog: &CatalogData) -> Result<QueryPlan> {
        self.plan_as(sql, catalog, Dialect::CURRENT).await
    }

    /// Plans an existing query's `SELECT` as it was made to ([`Dialect`]).
    pub async fn plan_as(
        &self,
        sql: &str,
        catalog: &CatalogData,
        dialect: Dialect,
    ) -> Result<QueryPlan> {
        QueryPlan::new(&self.base, catalog, self.tables.log.clone(), sql, dialect).await
    }

    /// The checkpoint a new query starts from, to commit with the catalog that names it.
    pub fn initial_checkpoint(
        &self,
        id: QueryId,
        plan: &QueryPlan,
        start: StartPosition,
    ) -> MetaUpdate {
        let snapshot = self.tables.log.snapshot();
        let starts: Vec<InputOffset> = plan
            .input_topics()
            .flat_map(|topic| {
                (0..topic.partitions).map(|p| InputOffset {
                    topic: topic.id,
                    partition: PartitionId(p),
                    // A table's rows are all its records: a query over one reads them
                    // from the first.
                    offset: match start {
                        _ if plan.over_table() => {
                            self.tables.log.log_start(topic.id, PartitionId(p))
                        }
                        StartPosition::Earliest => {
                            self.tables.log.log_start(topic.id, PartitionId(p))
                        }
                        StartPosition::Latest => snapshot.high_watermark(topic.id, PartitionId(p)),
                    },
                })
            })
            .collect();
        let mut checkpoint = Checkpoint::initial(starts.clone());
        if plan.keeps_input_rows() {
            // What it keeps of its input is rebuilt from there when it starts again.
            checkpoint.starts = starts;
        }
        (id.0, Some(checkpoint.encode()))
    }

    /// The change that deletes a dropped query's checkpoint, to commit with the catalog.
    pub fn forget(id: QueryId) -> MetaUpdate {
        (id.0, None)
    }

    /// Starts a query of the catalog. A query that cannot start is kept as failed, with
    /// its error, for `sys.queries`.
    pub async fn start(self: &Arc<Self>, def: QueryDef) {
        let data = self.tables.catalog.snapshot();
        let (progress, _) = watch::channel(Progress::default());
        let shared = Arc::new(Shared {
            status: Mutex::new(Status::new()),
            progress,
            view: std::sync::OnceLock::new(),
            changes: broadcast::channel(self.config.subscriber_max_lag_epochs.max(1)).0,
            epoch_seconds: Arc::new(Durations::new(0.001, 16)),
            failures: AtomicU64::new(0),
        });
        let (stop, stopped) = watch::channel(false);
        let running = Arc::new(Running {
            def: def.clone(),
            shared: shared.clone(),
            stop,
            task: Mutex::new(None),
        });
        self.queries
            .lock()
            .expect("queries lock")
            .insert(def.id, running.clone());
        let task = query::QueryTask::start(
            def,
            &data,
            &self.base,
            self.tables.clone(),
            self.config.clone(),
            shared.clone(),
        )
        .await;
        match task {
            Ok(task) => {
                let handle = tokio::spawn(task.run(stopped));
                *running.task.lock().expect("task lock") = Some(handle);
            }
            Err(e) => shared.fail(&running.def, &e),
        }
    }

    /// Stops a query and waits for its task to end (after its current epoch).
    pub async fn stop(&self, id: QueryId) {
        let running = self.queries.lock().expect("queries lock").remove(&id);
        if let Some(running) = running {
            running.stop.send_replace(true);
            let handle = running.task.lock().expect("task lock").take();
            if let Some(handle) = handle {
                let _ = handle.await;
            }
        }
    }

    /// Stops every query (at shutdown).
    pub async fn shutdown(&self) {
        let ids: Vec<QueryId> = self
            .queries
            .lock()
            .expect("queries lock")
            .keys()
            .copied()
            .collect();
        for id in ids {
            self.stop(id).await;
        }
    }

    fn running(&self) -> Vec<Arc<Running>> {
        self.queries
            .lock()
            .expect("queries lock")
            .values()
            .cloned()
            .collect()
    }

    /// Waits until every query has processed everything appended to its input before now,
    /// including what queries it reads from produce on the way. Fails if a query has
    /// failed or stopped before getting there.
    pub async fn flush(&self) -> Result<()> {
        for query in topological(self.running()) {
            let snapshot = self.tables.log.snapshot();
            let targets = query.shared.high_watermarks(&snapshot);
            if targets.is_empty() {
                continue;
            }
            let mut progress = query.shared.progress.subscribe();
            let outcome = progress
                .wait_for(|p| p.failed.is_some() || p.stopped || p.covers(&targets))
                .await
                .map(|p| p.clone());
            match outcome {
                Ok(p) if p.covers(&targets) => {}
                Ok(p) if p.failed.is_some() => {
                    return Err(Error::plan(
                        "55000",
                        format!(
                            "continuous query \"{}\" has failed: {}",
                            query.def.name,
                            p.failed.unwrap_or_default()
                        ),
                    ));
                }
                // Stopped (dropped meanwhile): nothing to wait for.
                _ => {}
            }
        }
        Ok(())
    }
}

impl Continuous for Engine {
    fn statuses(&self) -> Vec<QueryStatus> {
        let snapshot = self.tables.log.snapshot();
        self.running()
            .iter()
            .map(|r| {
                let status = r.shared.status.lock().expect("status lock").clone();
                let progress = r.shared.progress.borrow().clone();
                let lag =
                    checkpoint::lag(&progress.positions, &r.shared.high_watermarks(&snapshot));
                let (kind, target) = match &r.def.target {
                    QueryTarget::Stream { stream } => ("stream", stream.clone()),
                    QueryTarget::View { view } => ("view", view.clone()),
                    QueryTarget::Insert { stream, .. } => ("insert", stream.clone()),
                };
                QueryStatus {
                    id: r.def.id,
                    name: r.def.name.clone(),
                    kind,
                    target,
                    input: r.def.inputs.join(", "),
                    state: status.state.name(),
                    epoch: status.epoch,
                    lag,
                    rows_in: status.rows_in,
                    rows_out: status.rows_out,
                    rows_per_sec: if status.state == State::Running {
                        status.rate()
                    } else {
                        0.0
                    },
                    lag_secs: status.lag_secs(lag),
                    catch_up_secs: match status.state {
                        State::Running => status.catch_up_secs(lag),
                        _ => None,
                    },
                    epoch_seconds: r.shared.epoch_seconds.clone(),
                    failures: r.shared.failures.load(Ordering::Relaxed),
                    last_checkpoint_ms: status.last_checkpoint_ms,
                    groups: status.groups,
                    state_bytes: status.state_bytes,
                    watermark: status.watermark,
                    late_rows: status.late_rows,
                    event_times: status
                        .event_times
                        .iter()
                        .map(|(p, max, idle)| (p.0, *max, *idle))
                        .collect(),
                    error: status.error.clone(),
                    sql: r.def.sql.clone(),
                }
            })
            .collect()
    }

    fn view_plan(
        &self,
        view: &str,
        snapshot: &Snapshot,
        filters: &[Expr],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let running = self
            .queries
            .lock()
            .expect("queries lock")
            .values()
            .find(|r| matches!(&r.def.target, QueryTarget::View { view: v } if v == view))
            .cloned();
        let unavailable = |why: String| {
            Error::plan(
                "55000",
                format!("materialized view \"{view}\" is unavailable: {why}"),
            )
        };
        let running = running.ok_or_else(|| unavailable("its query is not running".into()))?;
        match running.shared.view.get() {
            Some(contents) => contents.plan(&self.tables, snapshot, filters),
            None => {
                let status = running.shared.status.lock().expect("status lock").clone();
                Err(unavailable(
                    status.error.unwrap_or_else(|| "it is starting".into()),
                ))
            }
        }
    }
}

impl Shared {
    /// The high watermarks of the inputs it has positions in.
    fn high_watermarks(&self, snapshot: &Snapshot) -> Vec<InputOffset> {
        let mut topics: Vec<TopicId> = self
            .progress
            .borrow()
            .positions
            .iter()
            .map(|p| p.topic)
            .collect();
        topics.sort_unstable_by_key(|t| t.0);
        topics.dedup();
        topics
            .into_iter()
            .flat_map(|topic| checkpoint::high_watermarks(snapshot, topic))
            .collect()
    }

    fn fail(&self, def: &QueryDef, e: &Error) {
        tracing::error!(query = %def.name, error = %e, sqlstate = e.sqlstate(), "continuous query failed");
        self.failures.fetch_add(1, Ordering::Relaxed);
        let message = e.to_string();
        {
            let mut status = self.status.lock().expect("status lock");
            status.state = State::Failed;
            status.error = Some(message.clone());
        }
        self.progress.send_modify(|p| p.failed = Some(message));
    }
}

/// Queries ordered so that each comes after the queries writing its input.
fn topological(queries: Vec<Arc<Running>>) -> Vec<Arc<Running>> {
    let mut out = vec![];
    let mut pending = queries;
    while !pending.is_empty() {
        let written: BTreeSet<&str> = pending
            .iter()
            .filter_map(|q| q.def.output_stream())
            .collect();
        let (ready, wait): (Vec<_>, Vec<_>) = pending
            .iter()
            .cloned()
            .partition(|q| q.def.inputs.iter().all(|i| !written.contains(i.as_str())));
        if ready.is_empty() {
            // A cycle (refused at CREATE, but never loop on one): take the rest as they are.
            out.extend(wait);
            break;
        }
        out.extend(ready);
        pending = wait;
    }
    out
}
