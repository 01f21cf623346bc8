//! One continuous query's task: epoch after epoch, from its checkpoint on.
//!
//! An epoch (DESIGN §5): pick the input ranges from the committed positions to the high
//! watermarks (capped), commit that plan, run the bounded plan over exactly those ranges,
//! and commit, in one write to the log, the output records, the changed state (an
//! aggregation's changed groups, appended to its state topic) and the checkpoint. A crash
//! anywhere in between leaves the last committed epoch in place, and the planned epoch is
//! run again over the same input; since output and checkpoint commit together, its output
//! is appended once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, TimestampMillisecondArray, new_null_array,
};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::execution::TaskContext;
use datafusion::execution::context::SessionState;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use tokio::sync::watch;

use super::checkpoint::{self, Changelog, Checkpoint, EventTime, InputOffset, Planned};
use super::plan::{Aggregation, EpochPlan, Kind, QueryPlan, run};
use super::sessions::Sessions;
use super::state::{Groups, changelog_fields};
use super::{
    ClosedRows, EngineConfig, Shared, State, ViewChange, ViewContents, ViewGroups, ViewSource,
};
use crate::catalog::{CatalogData, Emit, Inherited, Privilege, QueryDef, QueryTarget, Relation};
use crate::error::{Error, Result};
use crate::ingest::WriteTarget;
use crate::ingest::writer::PendingWrite;
use crate::storage::now_ms;
use crate::storage::{Offset, PartitionBatch, PartitionId, ReadOptions, TopicId};
use crate::tables::Tables;
use crate::tables::event_time::EventTimeScan;

pub(super) struct QueryTask {
    def: QueryDef,
    plan: QueryPlan,
    tables: Arc<Tables>,
    config: EngineConfig,
    shared: Arc<Shared>,
    checkpoint: Checkpoint,
    output: Option<Output>,
    /// The stream the input's `late_data_topic` names, where late rows go.
    late_output: Option<WriteTarget>,
    state_topic: Option<StateTopic>,
    /// A view of event-time windows: where its closed windows' rows go.
    closed_topic: Option<StateTopic>,
    /// An aggregation's groups (shared with its view's readers, if it has a view).
    groups: Option<Arc<Groups>>,
    /// A chain of aggregates: its inner stages, innermost first.
    inner: Vec<InnerStage>,
    /// An aggregation over sessions: each key's open sessions.
    sessions: Option<Sessions>,
    /// The memory pool every query shares, which its state is reserved in.
    memory: Arc<dyn MemoryPool>,
    /// Per input partition: its high watermark when last seen, and since when it has been
    /// that (a partition fully read and quiet for long enough is idle).
    activity: HashMap<PartitionId, (Offset, Instant)>,
    /// Over a stream whose watermark is its writer's: the input's high watermarks and the
    /// writer's watermark (shifted) as of one snapshot.
    upstream: Option<(Vec<InputOffset>, i64)>,
    /// The same for each input of a join of streams that is a stream of closed windows.
    upstream_inputs: Vec<(TopicId, Vec<InputOffset>, i64)>,
}

/// The stream a query appends to, and where each of its columns comes from.
struct Output {
    target: WriteTarget,
    /// Per column of the stream: the query's output column, or `None` for NULL.
    columns: Vec<Option<usize>>,
}

/// The internal topic a query keeps its state in.
struct StateTopic {
    id: TopicId,
    storage_schema: SchemaRef,
}

/// An inner stage of a chain of aggregates: its groups, kept until their windows close,
/// and their changelog.
struct InnerStage {
    groups: Arc<Groups>,
    topic: StateTopic,
    /// Its groups never close: the stage reading it takes in their changes.
    changing: bool,
}

/// The internal topic `name` of query `def`, which holds rows of `fields`' types.
fn internal_topic(
    data: &CatalogData,
    def: &QueryDef,
    name: &str,
    fields: &arrow::datatypes::Fields,
) -> Result<StateTopic> {
    let topic = data.topics.get(name).ok_or_else(|| {
        Error::Internal(format!(
            "the state topic \"{name}\" of \"{}\" is missing",
            def.name
        ))
    })?;
    let stored = data.value_fields(topic);
    let same = stored.len() == fields.len()
        && stored
            .iter()
            .zip(fields.iter())
            .all(|(a, b)| a.data_type() == b.data_type());
    if !same {
        return Err(Error::Internal(format!(
            "the stored state of \"{}\" does not match its plan; drop and recreate it",
            def.name
        )));
    }
    Ok(StateTopic {
        id: topic.id,
        storage_schema: data.storage_schema(topic),
    })
}

/// A continuous query runs with its owner's rights, as the catalog has them now: it needs
/// SELECT on its input and INSERT on the stream it appends to. A query whose owner lost
/// them fails, saying so, rather than reading on.
fn owner_may_run(
    def: &QueryDef,
    data: &CatalogData,
    plan: &QueryPlan,
    trusted: bool,
) -> Result<()> {
    let owner = data.principal(&def.owner, trusted);
    plan.reads()
        .iter()
        .try_for_each(|read| data.check(&owner, Privilege::Select, read))
        .and_then(|()| match def.output_stream() {
            Some(stream) => data.check(&owner, Privilege::Insert, stream),
            None => Ok(()),
        })
        .map_err(|e| {
            Error::plan(
                e.sqlstate(),
                format!(
                    "continuous query \"{}\" runs with the rights of its owner {}: {e}",
                    def.name, def.owner
                ),
            )
        })
}

impl QueryTask {
    /// Plans the query, loads its checkpoint and restores its state.
    pub(super) async fn start(
        def: QueryDef,
        data: &CatalogData,
        base: &SessionState,
        tables: Arc<Tables>,
        config: EngineConfig,
        shared: Arc<Shared>,
    ) -> Result<QueryTask> {
        let plan = QueryPlan::new(base, data, tables.log.clone(), &def.sql, def.dialect).await?;
        owner_may_run(&def, data, &plan, config.trusted_logins)?;
        let snapshot = tables.log.snapshot();
        let checkpoint = match snapshot.meta(def.id.0) {
            Some(bytes) => Checkpoint::decode(bytes).map_err(Error::Internal)?,
            None => {
                tracing::warn!(query = %def.name, "no checkpoint; starting from the beginning");
                Checkpoint::initial(vec![])
            }
        };
        let mut checkpoint = checkpoint;
        if plan.event_time.is_some() && checkpoint.event_time.is_none() {
            checkpoint.event_time = Some(EventTime::default());
        }
        if let Some(other) = checkpoint
            .inputs
            .iter()
            .find(|i| !plan.input_topics().any(|t| t.id == i.topic))
        {
            return Err(Error::Internal(format!(
                "the checkpoint of query \"{}\" is for topic {}, which it does not read",
                def.name, other.topic
            )));
        }
        let output = match &def.target {
            QueryTarget::Stream { stream } => Some(output_of(data, stream, &[], &plan)?),
            QueryTarget::Insert { stream, columns } => {
                Some(output_of(data, stream, columns, &plan)?)
            }
            QueryTarget::View { .. } => None,
        };
        let late_output = match data.relation(&plan.input_name) {
            Some(Relation::Stream(stream, _)) if plan.event_time_state() => {
                match &stream.late_data_topic {
                    None => None,
                    Some(late) => {
                        let relation = data.relation(late).ok_or_else(|| {
                            Error::Internal(format!(
                                "the late_data_topic \"{late}\" of \"{}\" is missing",
                                stream.name
                            ))
                        })?;
                        WriteTarget::of(data, &relation)
                    }
                }
            }
            _ => None,
        };
        let state_topic = match &def.state_topic {
            None => None,
            Some(name) => {
                let wanted = match &plan.kind {
                    Kind::Aggregate {
                        state_schema, sets, ..
                    } => changelog_fields(state_schema, sets),
                    Kind::Stateless | Kind::Combine { .. } => plan.schema.fields().clone(),
                };
                Some(internal_topic(data, &def, name, &wanted)?)
            }
        };
        let closed_topic = match &def.closed_topic {
            None => None,
            Some(name) => {
                let topic = data.topics.get(name).ok_or_else(|| {
                    Error::Internal(format!(
                        "the topic of closed windows \"{name}\" of \"{}\" is missing",
                        def.name
                    ))
                })?;
                Some(StateTopic {
                    id: topic.id,
                    storage_schema: data.storage_schema(topic),
                })
            }
        };
        plan.owned_by(&def.name);
        let memory = base.runtime_env().memory_pool.clone();
        let stages = match &plan.kind {
            Kind::Aggregate { inner, .. } => inner.as_slice(),
            Kind::Combine { stages } => stages.as_slice(),
            Kind::Stateless => &[],
        };
        if stages.len() != def.inner_state_topics.len() {
            return Err(Error::Internal(format!(
                "the stored state of \"{}\" does not match its plan; drop and recreate it",
                def.name
            )));
        }
        let mut inner = vec![];
        for (stage, name) in stages.iter().zip(&def.inner_state_topics) {
            let consumer =
                MemoryConsumer::new(format!("state of continuous query \"{}\"", def.name));
            inner.push(InnerStage {
                groups: Arc::new(Groups::new(
                    &stage.state_schema,
                    None,
                    stage.groups,
                    stage.expiry,
                    &stage.sets,
                    consumer.register(&memory),
                )?),
                topic: internal_topic(data, &def, name, &stage.changelog_fields())?,
                changing: stage.expiry.is_none(),
            });
        }
        checkpoint
            .inner_state
            .resize(inner.len(), Changelog::default());
        let sessions = match (&plan.session, &plan.kind) {
            (Some(columns), Kind::Aggregate { state_schema, .. }) => {
                Some(Sessions::new(columns.clone(), state_schema)?)
            }
            _ => None,
        };
        let mut task = QueryTask {
            memory,
            def,
            plan,
            tables,
            config,
            shared,
            checkpoint,
            output,
            late_output,
            state_topic,
            closed_topic,
            groups: None,
            inner,
            sessions,
            activity: HashMap::new(),
            upstream: None,
            upstream_inputs: vec![],
        };
        task.restore().await?;
        {
            let mut status = task.shared.status.lock().expect("status lock");
            status.state = State::Running;
            status.epoch = task.checkpoint.epoch;
            task.publish_state_size(&mut status);
            let idle = task.checkpoint.planned.as_ref().map(|p| p.idle.clone());
            task.publish_event_time(&mut status, &idle.unwrap_or_default());
        }
        let positions = task.checkpoint.inputs.clone();
        task.shared
            .progress
            .send_modify(|p| p.positions = positions);
        Ok(task)
    }

    /// Rebuilds an aggregation's state from its changelog, and a view's contents.
    async fn restore(&mut self) -> Result<()> {
        self.rebuild_kept().await?;
        let planned = match self.plan.kind {
            Kind::Stateless => None,
            _ => Some(self.plan.plan_epoch(&[]).await?),
        };
        if let Some((epoch, ctx)) = &planned {
            self.replay_stages(epoch, ctx).await?;
        }
        let contents = match &self.plan.kind {
            Kind::Stateless | Kind::Combine { .. } => self
                .state_topic
                .as_ref()
                .map(|t| ViewSource::Rows { topic: t.id }),
            Kind::Aggregate {
                state_schema,
                sets,
                groups,
                final_schema,
                group_outputs,
                ..
            } => {
                let view = matches!(self.def.target, QueryTarget::View { .. });
                let closing = self.closed_topic.as_ref().map(|t| t.id);
                // A view emitting on close shows only its closed windows' rows.
                let finals_shown = view && self.def.emit == Emit::Changes;
                let Some((
                    EpochPlan::Aggregate {
                        last: aggregation, ..
                    },
                    ctx,
                )) = planned
                else {
                    return Err(Error::Internal(
                        "an aggregate query planned without its aggregate".into(),
                    ));
                };
                let expiry = if self.plan.event_time_state() && (!view || closing.is_some()) {
                    self.plan.expiry
                } else {
                    None
                };
                let state = Arc::new(Groups::new(
                    state_schema,
                    finals_shown.then_some(final_schema),
                    *groups,
                    expiry,
                    sets,
                    self.reservation("state"),
                )?);
                if let Some(topic) = &self.state_topic {
                    let from = self.checkpoint.state_from;
                    self.replay_changelog(topic.id, from, &state, &aggregation, &ctx)
                        .await?;
                }
                if let Some(sessions) = &mut self.sessions {
                    for rows in state.read().rows(&state.partial)? {
                        sessions.insert(&rows)?;
                    }
                }
                if *groups == 0 && state.read().is_empty() {
                    // A global aggregate has its one group before any input (count 0).
                    let (merged, finals) = aggregation.merge(vec![], &state, ctx.clone()).await?;
                    let rows = state.to_store(&merged, &finals)?;
                    state.write().upsert(rows)?;
                }
                self.groups = Some(state.clone());
                let closed = closing.map(|topic| ClosedRows {
                    topic,
                    end: AtomicU64::new(
                        self.tables
                            .log
                            .snapshot()
                            .high_watermark(topic, PartitionId(0))
                            .0,
                    ),
                });
                match (state.finals.clone(), closing) {
                    // A view's groups hold final values: that is what makes them a view's.
                    (Some(finals), _) => Some(ViewSource::Groups(Box::new(ViewGroups {
                        groups: state,
                        finals,
                        applied: AtomicU64::new(self.checkpoint.epoch),
                        aggregation: Mutex::new(aggregation),
                        group_outputs: group_outputs.clone(),
                        closed,
                    }))),
                    (None, Some(topic)) if view => Some(ViewSource::Rows { topic }),
                    (None, _) => None,
                }
            }
        };
        if let (QueryTarget::View { view }, Some(source)) = (&self.def.target, contents) {
            let contents = Arc::new(ViewContents {
                name: view.clone(),
                schema: self.plan.schema.clone(),
                source,
            });
            let _ = self.shared.view.set(contents);
        }
        Ok(())
    }

    /// Rebuilds the rows it keeps of its input — its joins' sides, or its image of the
    /// table it reads — from the input, from where the query started reading to its
    /// checkpoint.
    async fn rebuild_kept(&self) -> Result<()> {
        if !self.plan.keeps_input_rows() {
            return Ok(());
        }
        let mut ranges = vec![];
        for start in &self.checkpoint.starts {
            let to = self
                .checkpoint
                .position(start.topic, start.partition)
                .unwrap_or(start.offset);
            if to <= start.offset {
                continue;
            }
            let first = self.tables.log.log_start(start.topic, start.partition);
            if first > start.offset {
                return Err(Error::Internal(format!(
                    "the input rows \"{}\" keeps cannot be rebuilt: partition {} of \
                     topic {} no longer has its records from offset {} (it starts at {})",
                    self.def.name, start.partition.0, start.topic, start.offset.0, first.0
                )));
            }
            ranges.push((*start, to));
        }
        if ranges.is_empty() {
            return Ok(());
        }
        // Kept rows the watermarks had passed go as they are rebuilt.
        self.plan.set_join_watermarks(&self.join_watermarks());
        if let Some(scan) = &self.plan.event_time {
            scan.begin(None, false);
        }
        let started = Instant::now();
        self.plan.set_join_epoch(&ranges);
        let (epoch, ctx) = self.plan.plan_epoch(&ranges).await?;
        self.plan.rebuild_kept(&epoch, ctx).await?;
        if let Some(scan) = &self.plan.event_time {
            scan.take();
        }
        for (_, scan) in self.plan.input_times().iter().flatten() {
            scan.take();
        }
        tracing::info!(
            query = %self.def.name,
            rows = ranges.iter().map(|(from, to)| to.0 - from.offset.0).sum::<u64>(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "rebuilt the input rows it keeps"
        );
        Ok(())
    }

    /// Rebuilds the groups of a chain's inner stages, or of a join's stages, from their
    /// changelogs.
    async fn replay_stages(&self, epoch: &EpochPlan, ctx: &Arc<TaskContext>) -> Result<()> {
        let stages = match epoch {
            EpochPlan::Aggregate { inner, .. } => inner.as_slice(),
            EpochPlan::Combine { stages, .. } => stages.as_slice(),
            EpochPlan::Stateless(_) => &[],
        };
        for ((stage, aggregation), log) in self
            .inner
            .iter()
            .zip(stages)
            .zip(&self.checkpoint.inner_state)
        {
            self.replay_changelog(stage.topic.id, log.from, &stage.groups, aggregation, ctx)
                .await?;
        }
        Ok(())
    }

    /// Replays the changelog of `groups` from `from` (its latest snapshot) on; a view's
    /// final values are computed as each batch of groups comes back.
    async fn replay_changelog(
        &self,
        topic: TopicId,
        from: Offset,
        groups: &Arc<Groups>,
        aggregation: &Aggregation,
        ctx: &Arc<TaskContext>,
    ) -> Result<()> {
        let log_topic = self
            .tables
            .log
            .topic(topic)
            .ok_or_else(|| Error::Internal(format!("state topic {topic} is missing")))?;
        let end = self
            .tables
            .log
            .snapshot()
            .high_watermark(topic, PartitionId(0));
        // Windows closed before the checkpoint were evicted (and, emitting on close,
        // emitted): their groups in the changelog are passed over again.
        let closed = self.watermark();
        let (groups, aggregation, ctx) = (groups.clone(), aggregation.clone(), ctx.clone());
        let runtime = tokio::runtime::Handle::current();
        let mut report = crate::progress::Reporter::new(
            format!("query {}: replaying its state", self.def.name),
            end.0.saturating_sub(from.0),
            "records",
        );
        tokio::task::spawn_blocking(move || -> Result<()> {
            let schema = groups.changelog.clone();
            let partition = log_topic.partition(PartitionId(0))?.clone();
            // The values, and the key that marks a deletion.
            let values = schema.fields().len();
            let options = ReadOptions {
                schema: log_topic.spec.schema.clone(),
                projection: Some((0..values).chain([values + 1]).collect()),
                min_timestamp_ms: None,
                max_timestamp_ms: None,
            };
            for read in partition.reader(from..end, options) {
                let read = read?;
                report.advance(read.batch.num_rows() as u64);
                let columns = read.batch.columns();
                let batch = RecordBatch::try_new(schema.clone(), columns[..values].to_vec())
                    .map_err(|e| Error::Internal(format!("reading aggregate state: {e}")))?;
                let deleted = &columns[values];
                // Deletions, in order with the upserts around them.
                let mut at = 0;
                while at < batch.num_rows() {
                    let delete = deleted.is_valid(at);
                    let run = (at..batch.num_rows())
                        .take_while(|i| deleted.is_valid(*i) == delete)
                        .count();
                    let rows = batch.slice(at, run);
                    at += run;
                    if delete {
                        groups.write().remove(&rows)?;
                        continue;
                    }
                    let finals = match groups.finals {
                        Some(_) => runtime
                            .block_on(aggregation.finalize(vec![rows.clone()], ctx.clone()))?,
                        None => vec![],
                    };
                    let rows = groups.to_store(&rows, &finals)?;
                    groups.write().upsert(rows)?;
                }
                if let Some(closed) = closed {
                    groups.write().evict(closed, &groups.partial)?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Internal(format!("restoring state: {e}")))?
    }

    /// Runs epochs until told to stop or an epoch fails.
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        // A panic (here, or in a scan's thread, which DataFusion resumes here) fails this
        // query alone, as an error its readers and FLUSH see, instead of ending its task
        // with the query still shown running.
        let outcome = match crate::panics::contain(self.epochs(&mut stop)).await {
            Ok(outcome) => outcome,
            Err(panic) if panic.is_empty() => Err(Error::Internal(
                "the query's task panicked (the server log has where)".into(),
            )),
            Err(panic) => Err(Error::Internal(format!(
                "the query's task panicked: {panic}"
            ))),
        };
        match outcome {
            Ok(()) => {
                self.shared.status.lock().expect("status lock").state = State::Stopped;
                self.shared.progress.send_modify(|p| p.stopped = true);
            }
            Err(e) => self.shared.fail(&self.def, &e),
        }
    }

    async fn epochs(&mut self, stop: &mut watch::Receiver<bool>) -> Result<()> {
        let mut commits = self.tables.log.subscribe_commits();
        let mut last_start: Option<Instant> = None;
        loop {
            if *stop.borrow_and_update() {
                return Ok(());
            }
            commits.borrow_and_update();
            let snapshot = self.tables.log.snapshot();
            let high = self.plan.high_watermarks(&snapshot);
            self.note_activity(&high);
            self.upstream = self
                .inherited_watermark(&snapshot)
                .map(|w| (high.clone(), w));
            self.upstream_inputs = self.inherited_input_watermarks(&snapshot, &high);
            let next = checkpoint::next_epoch(&self.checkpoint, &high, self.config.max_epoch_rows)
                .or_else(|| self.tick(&high));
            let Some(epoch) = next else {
                let quiet = self.next_idle(&high);
                tokio::select! {
                    _ = commits.changed() => {}
                    _ = stop.changed() => {}
                    _ = sleep_until(quiet) => {}
                }
                continue;
            };
            if let Some(started) = last_start {
                let since = started.elapsed();
                if since < self.config.min_interval && !epoch.replay {
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.min_interval - since) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            }
            let started = Instant::now();
            last_start = Some(started);
            let reads_all = !epoch.replay && checkpoint::lag(&epoch.ends(), &high) == 0;
            self.run_epoch(epoch, started).await?;
            let left = checkpoint::lag(
                &self.checkpoint.inputs,
                &self.plan.high_watermarks(&self.tables.log.snapshot()),
            );
            self.shared
                .status
                .lock()
                .expect("status lock")
                .record_backlog(started, reads_all, left);
        }
    }

    /// Runs one epoch, begun at `started`, to its commit.
    async fn run_epoch(&mut self, epoch: checkpoint::EpochPlan, started: Instant) -> Result<()> {
        let key = self.def.id.0;
        if !epoch.replay {
            owner_may_run(
                &self.def,
                &self.tables.catalog.snapshot(),
                &self.plan,
                self.config.trusted_logins,
            )?;
            let idle = match &self.checkpoint.event_time {
                Some(_) => self.idle(&epoch.ends()),
                None => vec![],
            };
            let ends = epoch.ends();
            let inherited = self
                .upstream
                .as_ref()
                .filter(|(high, _)| self.reads_all(&ends, high))
                .map(|(_, w)| *w);
            let inherited_inputs = self
                .upstream_inputs
                .iter()
                .filter(|(_, high, _)| self.reads_all(&ends, high))
                .map(|(topic, _, w)| (*topic, *w))
                .collect();
            self.checkpoint.planned = Some(Planned {
                epoch: epoch.epoch,
                ends,
                idle,
                inherited,
                inherited_inputs,
            });
            self.tables
                .log
                .commit(vec![], vec![(key, Some(self.checkpoint.encode()))])
                .await?;
        }
        let idle = self
            .checkpoint
            .planned
            .as_ref()
            .map(|p| p.idle.clone())
            .unwrap_or_default();
        // The watermark the epoch's rows are classified by (the epoch moves it on).
        let start = self.watermark();
        if let Some(event_time) = &self.plan.event_time {
            event_time.begin(start, self.plan.event_time_state());
        }
        let input_times = self.plan.input_times();
        for (topic, scan) in input_times.iter().flatten() {
            // A join keeps late rows: they meet what the other side still keeps.
            scan.begin(self.input_watermark(*topic), false);
        }
        self.plan.set_join_epoch(&epoch.ranges);
        let (plan, ctx) = self.plan.plan_epoch(&epoch.ranges).await?;
        let mut pending = PendingWrite::default();
        let mut state_rows: Vec<RecordBatch> = vec![];
        let mut changed: Option<(RecordBatch, Vec<RecordBatch>)> = None;
        let mut view_change: Option<ViewChange> = None;
        let rows_out;
        let late: Vec<(PartitionId, Offset)>;
        let mut closed_rows: Vec<RecordBatch> = vec![];
        // Each inner stage's changed groups still open, for its changelog.
        let mut inner_rows: Vec<RecordBatch> = vec![];
        // Sessions merged into others: their groups are gone.
        let mut removed: Option<RecordBatch> = None;
        match plan {
            EpochPlan::Stateless(plan) => {
                let out = run(plan, ctx).await?;
                late = self.event_time_seen(&idle);
                (rows_out, state_rows) = self.output_rows(out, &mut pending)?;
            }
            EpochPlan::Combine { stages, top } => {
                // Every branch's windows that close now, joined (or united).
                let (closed, seen);
                (closed, inner_rows, seen, _) =
                    self.run_stages(&stages, start, &idle, &ctx).await?;
                late = match seen {
                    Some(late) => late,
                    None => self.event_time_seen(&idle),
                };
                let out = run(top.plan(&closed)?, ctx).await?;
                (rows_out, state_rows) = self.output_rows(out, &mut pending)?;
            }
            EpochPlan::Aggregate {
                inner,
                last: aggregation,
            } => {
                // A chain: the windows the inner stages close are the next one's input (or
                // the changes of groups that never close: their rows now, and before).
                let (mut closed, mut before, seen);
                (closed, inner_rows, seen, before) =
                    self.run_stages(&inner, start, &idle, &ctx).await?;
                let rows = closed.pop().unwrap_or_default();
                let back = before.pop().unwrap_or_default();
                let groups = self.groups.clone().expect("an aggregation has state");
                let merged = match self.sessions.as_mut() {
                    Some(sessions) => {
                        let states = |pieces| {
                            let (states, moved) = sessions
                                .absorb(pieces, |absorbed| groups.lookup_partial(absorbed))?;
                            removed = moved;
                            Ok(states)
                        };
                        aggregation.merge_with(rows, states, ctx.clone()).await?
                    }
                    None => {
                        aggregation
                            .merge_taking_back(rows, back, &groups, ctx.clone())
                            .await?
                    }
                };
                // Over a table: groups whose rows have all gone leave the state.
                let merged = match &self.plan.kind {
                    Kind::Aggregate {
                        rows: Some(count), ..
                    } => {
                        let (alive, gone) = without_rows(merged, *count)?;
                        removed = gone;
                        alive
                    }
                    _ => merged,
                };
                // The changed groups' values: what an upsert stream or a view shows.
                let finals = match self.def.emit {
                    Emit::Changes => {
                        aggregation
                            .finalize(vec![merged.clone()], ctx.clone())
                            .await?
                    }
                    Emit::OnWindowClose => vec![],
                };
                late = match seen {
                    Some(late) => late,
                    None => self.event_time_seen(&idle),
                };
                if self.def.emit == Emit::OnWindowClose {
                    // The epoch's groups join the state, and every window the watermark
                    // has passed leaves it with its final rows, committed with the epoch:
                    // a failed commit fails the query, which starts again from its
                    // checkpoint with its state as it was.
                    let (closed, open) =
                        fold(&groups, removed.as_ref(), &merged, self.watermark())?;
                    if let Some(sessions) = &mut self.sessions {
                        for rows in &closed {
                            sessions.close(rows)?;
                        }
                    }
                    let finals = aggregation.finalize(closed, ctx.clone()).await?;
                    let out = aggregation.output(finals, ctx.clone()).await?;
                    (rows_out, closed_rows) = self.output_rows(out, &mut pending)?;
                    state_rows = vec![open];
                } else if self.sessions.is_some() {
                    return Err(Error::Internal(
                        "sessions that merge cannot emit changes".into(),
                    ));
                } else if self.output.is_some() {
                    let out = aggregation.output(finals.clone(), ctx.clone()).await?;
                    rows_out = out.iter().map(|b| b.num_rows() as u64).sum();
                    self.stage_output(&out, &mut pending)?;
                } else {
                    rows_out = merged.num_rows() as u64;
                }
                if let Some(contents) = self.shared.view.get()
                    && let ViewSource::Groups(view) = &contents.source
                {
                    if self.shared.changes.receiver_count() > 0 {
                        // The changed groups' rows before and after, for subscribers.
                        let before = {
                            let state = groups.read();
                            let mut before = vec![];
                            for batch in finals.iter().chain(&removed) {
                                before.extend(state.lookup(batch, &view.finals)?);
                            }
                            before
                        };
                        view_change = Some(ViewChange {
                            epoch: epoch.epoch,
                            removed: aggregation.output(before, ctx.clone()).await?,
                            added: aggregation.output(finals.clone(), ctx.clone()).await?,
                        });
                    }
                    *view.aggregation.lock().expect("view lock") = aggregation.clone();
                }
                if self.def.emit == Emit::Changes {
                    if self.closed_topic.is_some()
                        && let Some(w) = self.watermark()
                    {
                        // The view's windows that close now: their rows move to the topic
                        // of closed windows in this epoch's commit, and out of the state
                        // once it is committed.
                        let expired = groups.read().expired(w, &groups.partial, &merged)?;
                        let finals = aggregation.finalize(expired, ctx.clone()).await?;
                        closed_rows = aggregation.output(finals, ctx.clone()).await?;
                    }
                    state_rows = vec![merged.clone()];
                    changed = Some((merged, finals));
                }
            }
        }
        self.input_times_seen(&input_times);
        if let Some(from) = self.plan.rebuild_from(&epoch.ends()) {
            // Rows read before what an interval join keeps are no longer needed for a
            // restart: retention may take them.
            for start in &mut self.checkpoint.starts {
                if let Some(at) = checkpoint::position(&from, start.topic, start.partition) {
                    start.offset = start.offset.max(at);
                }
            }
        }
        self.stage_late(&late, &mut pending)?;
        let mut batches = pending.into_batches();
        if let Some(topic) = &self.closed_topic {
            batches.extend(state_records(topic, &closed_rows, Change::Upsert)?);
        }
        if let Some(topic) = &self.state_topic {
            let mut records = state_records(topic, removed.as_slice(), Change::Delete)?;
            records.extend(state_records(topic, &state_rows, Change::Upsert)?);
            // A row each (a view's rows, without groups), and the values added to sets.
            let entries = |rows: &RecordBatch| match &self.groups {
                Some(groups) => groups.entries(rows),
                None => rows.num_rows() as u64,
            };
            self.checkpoint.state_records +=
                removed.iter().chain(&state_rows).map(entries).sum::<u64>();
            batches.extend(records);
        }
        for ((stage, rows), log) in self
            .inner
            .iter()
            .zip(&inner_rows)
            .zip(&mut self.checkpoint.inner_state)
        {
            let records = state_records(&stage.topic, std::slice::from_ref(rows), Change::Upsert)?;
            log.records += stage.groups.entries(rows);
            batches.extend(records);
        }
        for end in epoch.ends() {
            match self
                .checkpoint
                .inputs
                .iter_mut()
                .find(|i| i.topic == end.topic && i.partition == end.partition)
            {
                Some(at) => at.offset = end.offset,
                None => self.checkpoint.inputs.push(end),
            }
        }
        self.checkpoint.epoch = epoch.epoch;
        self.checkpoint.planned = None;
        self.tables
            .log
            .commit(batches, vec![(key, Some(self.checkpoint.encode()))])
            .await?;

        // Committed: what readers see moves to this epoch.
        if let Some((merged, finals)) = changed {
            let groups = self.groups.as_ref().expect("an aggregation has state");
            let rows = groups.to_store(&merged, &finals)?;
            let mut state = groups.write();
            // Applied whole even past the memory limit (then the query fails after it),
            // so that a view's readers never see half an epoch.
            let applied = match &removed {
                Some(gone) => state.remove(gone).and_then(|()| state.upsert(rows)),
                None => state.upsert(rows),
            };
            // Windows the watermark has passed are closed: their rows stay where they
            // were written (a view's in its topic of closed windows), their state goes.
            if let (Ok(()), Some(w)) = (&applied, self.watermark()) {
                state.evict(w, &groups.partial)?;
            }
            if let Some(contents) = self.shared.view.get()
                && let ViewSource::Groups(view) = &contents.source
            {
                if let Some(closed) = &view.closed {
                    let log = self.tables.log.snapshot();
                    let end = log.high_watermark(closed.topic, PartitionId(0));
                    closed.end.store(end.0, Ordering::Release);
                }
                view.applied.store(epoch.epoch, Ordering::Release);
                if let Some(change) = view_change {
                    // Sent under the lock: a subscriber reading the view sees this epoch
                    // either in its snapshot or as a change, not both.
                    let _ = self.shared.changes.send(Arc::new(change));
                }
            }
            drop(state);
            applied?;
        }
        if !input_times.is_empty() {
            self.plan.set_join_watermarks(&self.join_watermarks());
        }
        // Counted before the progress below lets FLUSH return, so a scrape after it sees
        // the epoch.
        self.shared.epoch_seconds.observe(started.elapsed());
        {
            let mut status = self.shared.status.lock().expect("status lock");
            status.record_epoch(epoch.epoch, epoch.rows(), rows_out, now_ms());
            self.publish_state_size(&mut status);
            self.publish_event_time(&mut status, &idle);
        }
        let positions = self.checkpoint.inputs.clone();
        self.shared
            .progress
            .send_modify(|p| p.positions = positions);
        self.maybe_snapshot().await
    }

    /// Runs `stages` (a chain's inner stages, or a join's): each merges its input — the
    /// epoch's records, or the rows of the windows the stage it reads closed — into its
    /// groups, and the windows the watermark closes leave them. Returns, per stage, the
    /// final rows of the windows it closed (taken by the stage that reads them) and its
    /// changed groups still open (for its changelog); and what the first read of the
    /// epoch's records saw of event time, if a stage read them; and per stage, for one
    /// whose groups never close, its changed groups' rows before the epoch (its closed
    /// rows are their rows after). A stage reading the records again classifies them by
    /// `start` too, and what it sees is the same.
    async fn run_stages(
        &mut self,
        stages: &[Aggregation],
        start: Option<i64>,
        idle: &[PartitionId],
        ctx: &Arc<TaskContext>,
    ) -> Result<StagesRun> {
        if stages.len() != self.inner.len() {
            return Err(Error::Internal(format!(
                "\"{}\" was planned with {} stages, its state has {}",
                self.def.name,
                stages.len(),
                self.inner.len()
            )));
        }
        let (mut closed, mut open, mut seen, mut before) = (vec![], vec![], None, vec![]);
        for (k, stage) in stages.iter().enumerate() {
            let groups = self.inner[k].groups.clone();
            let changing = self.inner[k].changing;
            let rows = match stage.from {
                Some(j) => std::mem::take(&mut closed[j]),
                None => {
                    if let (Some(scan), Some(_)) = (&self.plan.event_time, &seen) {
                        scan.begin(start, self.plan.event_time_state());
                    }
                    vec![]
                }
            };
            let merged = stage.merge_state(rows, &groups, ctx.clone()).await?;
            if stage.from.is_none() {
                if seen.is_none() {
                    seen = Some(self.event_time_seen(idle));
                } else if let Some(scan) = &self.plan.event_time {
                    scan.take();
                }
            }
            // The changed groups' state before the epoch, for the stage reading them to
            // take back what their rows brought.
            let was = match changing {
                true => groups.lookup_partial(&merged)?,
                false => None,
            };
            let (done, still_open) = fold(&groups, None, &merged, self.watermark())?;
            if changing {
                closed.push(stage.finalize(vec![merged], ctx.clone()).await?);
                before.push(
                    stage
                        .finalize(was.into_iter().collect(), ctx.clone())
                        .await?,
                );
            } else {
                closed.push(stage.finalize(done, ctx.clone()).await?);
                before.push(vec![]);
            }
            open.push(still_open);
        }
        Ok((closed, open, seen, before))
    }

    /// Stages an epoch's rows for the output stream, and says how many; without one (a
    /// view), hands them back, for the topic the view keeps them in.
    fn output_rows(
        &self,
        out: Vec<RecordBatch>,
        pending: &mut PendingWrite,
    ) -> Result<(u64, Vec<RecordBatch>)> {
        let rows = out.iter().map(|b| b.num_rows() as u64).sum();
        match self.output {
            Some(_) => {
                self.stage_output(&out, pending)?;
                Ok((rows, vec![]))
            }
            None => Ok((rows, out)),
        }
    }

    /// The watermark: input rows below it are late, windows ending at or before it closed.
    fn watermark(&self) -> Option<i64> {
        self.checkpoint.event_time.as_ref()?.watermark
    }

    /// Takes in what the epoch's scan saw of event time, with `idle` partitions not
    /// holding the watermark back: the rows it dropped as late.
    fn event_time_seen(&mut self, idle: &[PartitionId]) -> Vec<(PartitionId, Offset)> {
        let (Some(scan), Some(time)) = (&self.plan.event_time, &mut self.checkpoint.event_time)
        else {
            return vec![];
        };
        let mut seen = scan.take();
        // The epoch's partitions are read in parallel: their late rows come interleaved.
        seen.late.sort_unstable();
        for (partition, max) in seen.maxima {
            time.observe(partition, max);
        }
        time.late_rows += seen.late.len() as u64;
        time.watermark = match &self.plan.inherited {
            None => time.advanced(idle),
            Some(_) => {
                let writer = self.checkpoint.planned.as_ref().and_then(|p| p.inherited);
                time.watermark.max(writer)
            }
        };
        seen.late
    }

    /// The watermark of input `topic` of a join of streams, as of the last epoch.
    fn input_watermark(&self, topic: TopicId) -> Option<i64> {
        self.checkpoint
            .input_times
            .iter()
            .find(|(t, _)| *t == topic)
            .and_then(|(_, time)| time.watermark)
    }

    /// The watermark of each input of a join of streams, in input order.
    fn join_watermarks(&self) -> Vec<Option<i64>> {
        self.plan
            .input_times()
            .iter()
            .map(|t| {
                t.as_ref()
                    .and_then(|(topic, _)| self.input_watermark(*topic))
            })
            .collect()
    }

    /// Takes in what the epoch's scans of a join's streams saw of their event time: each
    /// stream's watermark is the least of its partitions' greatest times (partitions that
    /// had no rows yet wait), or, for a stream of closed windows, its writer's as of what
    /// the epoch read, when it read all there was.
    fn input_times_seen(&mut self, input_times: &[Option<(TopicId, Arc<EventTimeScan>)>]) {
        let writers: Vec<(TopicId, i64)> = self
            .checkpoint
            .planned
            .as_ref()
            .map(|p| p.inherited_inputs.clone())
            .unwrap_or_default();
        let inherited = self.plan.inherited_inputs();
        for (topic, scan) in input_times.iter().flatten() {
            let seen = scan.take();
            let times = &mut self.checkpoint.input_times;
            let at = match times.iter().position(|(t, _)| t == topic) {
                Some(at) => at,
                None => {
                    times.push((*topic, EventTime::default()));
                    times.len() - 1
                }
            };
            let time = &mut times[at].1;
            for (partition, max) in seen.maxima {
                time.observe(partition, max);
            }
            time.watermark = match inherited.iter().any(|(t, _)| t == topic) {
                false => time.advanced(&[]),
                true => {
                    let writer = writers.iter().find(|(t, _)| t == topic).map(|(_, w)| *w);
                    time.watermark.max(writer)
                }
            };
        }
    }

    /// For each input of a join of streams that is a stream of closed windows: its high
    /// watermarks (of `high`) and its writer's watermark, shifted, as of `snapshot`.
    fn inherited_input_watermarks(
        &self,
        snapshot: &crate::storage::Snapshot,
        high: &[InputOffset],
    ) -> Vec<(TopicId, Vec<InputOffset>, i64)> {
        self.plan
            .inherited_inputs()
            .into_iter()
            .filter_map(|(topic, inherited)| {
                let watermark = writer_watermark(snapshot, &inherited)?;
                let high = high.iter().filter(|h| h.topic == topic).copied().collect();
                Some((topic, high, watermark))
            })
            .collect()
    }

    /// The watermark of the query writing the input, shifted to this query's, as of
    /// `snapshot` (which holds the rows that query had appended by then).
    fn inherited_watermark(&self, snapshot: &crate::storage::Snapshot) -> Option<i64> {
        writer_watermark(snapshot, self.plan.inherited.as_ref()?)
    }

    /// Whether reading up to `ends` (or, where it says nothing, the checkpoint) reads
    /// every record below `high`.
    fn reads_all(&self, ends: &[InputOffset], high: &[InputOffset]) -> bool {
        high.iter().all(|h| {
            checkpoint::position(ends, h.topic, h.partition)
                .or_else(|| self.checkpoint.position(h.topic, h.partition))
                .unwrap_or(Offset(0))
                >= h.offset
        })
    }

    /// Notes which partitions' high watermarks moved.
    fn note_activity(&mut self, high: &[InputOffset]) {
        let now = Instant::now();
        for h in high {
            match self.activity.get_mut(&h.partition) {
                Some((at, since)) if *at != h.offset => (*at, *since) = (h.offset, now),
                Some(_) => {}
                None => {
                    self.activity.insert(h.partition, (h.offset, now));
                }
            }
        }
    }

    /// The partitions that are idle now: read to the end (`ends`, or the committed
    /// positions) and without new records for the stream's idle timeout.
    fn idle(&self, ends: &[InputOffset]) -> Vec<PartitionId> {
        let timeout = self.plan.idle_timeout;
        let mut idle: Vec<PartitionId> = self
            .activity
            .iter()
            .filter(|(p, (high, since))| {
                let read = checkpoint::position(ends, self.plan.input.id, **p)
                    .or_else(|| self.checkpoint.position(self.plan.input.id, **p))
                    .unwrap_or(Offset(0));
                read >= *high && since.elapsed() >= timeout
            })
            .map(|(p, _)| *p)
            .collect();
        idle.sort_unstable();
        idle
    }

    /// An epoch without input, when partitions going idle would move the watermark on
    /// and close windows.
    fn tick(&self, high: &[InputOffset]) -> Option<checkpoint::EpochPlan> {
        let time = self.checkpoint.event_time.as_ref()?;
        if !self.plan.event_time_state() || self.checkpoint.planned.is_some() {
            return None;
        }
        let next = match (&self.plan.inherited, &self.upstream) {
            (None, _) => time.advanced(&self.idle(&[])),
            (Some(_), Some((seen, writer))) => Some(*writer).filter(|_| self.reads_all(&[], seen)),
            (Some(_), None) => None,
        };
        if next <= time.watermark {
            return None;
        }
        let ranges = high
            .iter()
            .map(|h| {
                let at = self
                    .checkpoint
                    .position(h.topic, h.partition)
                    .unwrap_or(Offset(0));
                (InputOffset { offset: at, ..*h }, at)
            })
            .collect();
        Some(checkpoint::EpochPlan {
            epoch: self.checkpoint.epoch + 1,
            ranges,
            replay: false,
        })
    }

    /// When the next partition that had rows would turn idle, if it stays quiet.
    fn next_idle(&self, high: &[InputOffset]) -> Option<Instant> {
        let time = self.checkpoint.event_time.as_ref()?;
        // A watermark taken from the input's writer does not wait for partitions.
        if !self.plan.event_time_state() || self.plan.inherited.is_some() {
            return None;
        }
        let idle = self.idle(&[]);
        high.iter()
            .filter(|h| time.maxima.iter().any(|(p, _)| *p == h.partition))
            .filter(|h| !idle.contains(&h.partition))
            .filter_map(|h| self.activity.get(&h.partition))
            .map(|(_, since)| *since + self.plan.idle_timeout)
            .min()
    }

    /// The query's event time, for `sys.queries` and `sys.watermarks`.
    fn publish_event_time(&self, status: &mut super::Status, idle: &[PartitionId]) {
        if let Some(time) = &self.checkpoint.event_time {
            status.watermark = time.watermark;
            status.late_rows = time.late_rows;
            status.event_times = time
                .maxima
                .iter()
                .map(|(p, max)| (*p, *max, idle.contains(p)))
                .collect();
        }
    }

    /// How many groups the query's state has and what it holds, for `sys.queries`.
    /// Tables looked up by key count too: their rows are kept in memory.
    fn publish_state_size(&self, status: &mut super::Status) {
        let looked_up = self.plan.kept_bytes() as u64;
        if self.groups.is_none() && self.inner.is_empty() {
            status.state_bytes = looked_up;
            return;
        }
        let (mut rows, mut bytes) = (0, 0);
        for groups in self
            .groups
            .iter()
            .chain(self.inner.iter().map(|s| &s.groups))
        {
            let state = groups.read();
            rows += state.len();
            bytes += state.memory_bytes();
        }
        status.groups = Some(rows as u64);
        status.state_bytes = bytes as u64 + looked_up;
    }

    /// A reservation in the shared memory pool for the query's `what`.
    fn reservation(&self, what: &str) -> MemoryReservation {
        MemoryConsumer::new(format!("{what} of continuous query \"{}\"", self.def.name))
            .register(&self.memory)
    }

    /// Appends the query's rows to its output stream's pending write.
    fn stage_output(&self, out: &[RecordBatch], pending: &mut PendingWrite) -> Result<()> {
        let output = self.output.as_ref().expect("a query with an output stream");
        let options = CastOptions {
            safe: false,
            ..Default::default()
        };
        for batch in out.iter().filter(|b| b.num_rows() > 0) {
            let columns = output
                .target
                .row_schema
                .fields()
                .iter()
                .zip(&output.columns)
                .map(|(field, source)| match source {
                    Some(i) => cast_with_options(batch.column(*i), field.data_type(), &options)
                        .map_err(|e| {
                            Error::data(
                                "22P02",
                                format!(
                                    "a row of \"{}\" does not fit column \"{}\" of \"{}\": {e}",
                                    self.def.name,
                                    field.name(),
                                    output.target.relation
                                ),
                            )
                        }),
                    None => Ok(new_null_array(field.data_type(), batch.num_rows())),
                })
                .collect::<Result<Vec<ArrayRef>>>()?;
            let rows = RecordBatch::try_new(output.target.row_schema.clone(), columns)
                .map_err(|e| Error::Internal(format!("output of \"{}\": {e}", self.def.name)))?;
            self.tables.writer.stage(&output.target, &rows, pending)?;
        }
        Ok(())
    }

    /// Appends the records at `late` (rows of the input dropped as late, in order per
    /// partition) to the input's `late_data_topic`, with the query's name and where each
    /// was.
    fn stage_late(&self, late: &[(PartitionId, Offset)], pending: &mut PendingWrite) -> Result<()> {
        let Some(target) = &self.late_output else {
            return Ok(());
        };
        let topic =
            self.tables.log.topic(self.plan.input.id).ok_or_else(|| {
                Error::Internal(format!("\"{}\" is missing", self.plan.input_name))
            })?;
        let columns = target.row_schema.fields().len() - 3;
        let options = ReadOptions {
            schema: topic.spec.schema.clone(),
            projection: Some((0..columns).collect()),
            min_timestamp_ms: None,
            max_timestamp_ms: None,
        };
        for run in late.chunk_by(|a, b| a.0 == b.0) {
            let partition = topic.partition(run[0].0)?.clone();
            let offsets: Vec<Offset> = run.iter().map(|(_, o)| *o).collect();
            let range = offsets[0]..offsets[offsets.len() - 1].plus(1);
            for read in partition.reader(range, options.clone()) {
                let read = read?;
                let take: Vec<u32> = offsets
                    .iter()
                    .filter_map(|o| read.position_of(*o))
                    .map(|i| i as u32)
                    .collect();
                if take.is_empty() {
                    continue;
                }
                let n = take.len();
                let at = arrow::array::UInt32Array::from(take);
                let mut values = read
                    .batch
                    .columns()
                    .iter()
                    .map(|c| arrow::compute::take(c, &at, None))
                    .collect::<std::result::Result<Vec<ArrayRef>, _>>()
                    .map_err(|e| Error::Internal(format!("late rows: {e}")))?;
                values.push(Arc::new(arrow::array::StringArray::from_iter_values(
                    std::iter::repeat_n(&self.def.name, n),
                )));
                values.push(Arc::new(arrow::array::Int32Array::from_value(
                    run[0].0.0 as i32,
                    n,
                )));
                values.push(Arc::new(arrow::array::Int64Array::from_iter_values(
                    at.values()
                        .iter()
                        .map(|i| read.offset(*i as usize).0 as i64),
                )));
                let rows = RecordBatch::try_new(target.row_schema.clone(), values)
                    .map_err(|e| Error::Internal(format!("late rows: {e}")))?;
                self.tables.writer.stage(target, &rows, pending)?;
            }
        }
        Ok(())
    }

    /// Starts an aggregation's changelogs over with a snapshot of its state once replaying
    /// one would read far more records than there are groups, and drops what came before.
    async fn maybe_snapshot(&mut self) -> Result<()> {
        for stage in 0..self.inner.len() {
            let log = self.checkpoint.inner_state[stage];
            let (groups, topic) = (&self.inner[stage].groups, &self.inner[stage].topic);
            if let Some(from) = self.snapshot_changelog(groups, topic, log).await? {
                self.checkpoint.inner_state[stage] = from;
            }
        }
        let (Some(groups), Some(topic)) = (&self.groups, &self.state_topic) else {
            return Ok(());
        };
        let log = Changelog {
            from: self.checkpoint.state_from,
            records: self.checkpoint.state_records,
        };
        if let Some(log) = self.snapshot_changelog(groups, topic, log).await? {
            (self.checkpoint.state_from, self.checkpoint.state_records) = (log.from, log.records);
        }
        Ok(())
    }

    /// Writes a snapshot of `groups` to their changelog `topic` if one is due, commits the
    /// checkpoint that replays from it, and drops the records before it: the changelog as
    /// it is now.
    async fn snapshot_changelog(
        &self,
        groups: &Groups,
        topic: &StateTopic,
        log: Changelog,
    ) -> Result<Option<Changelog>> {
        let (rows, live, entries) = {
            let state = groups.read();
            let entries = state.entries();
            if !checkpoint::snapshot_due(log.records, entries) {
                return Ok(None);
            }
            (groups.changelog_rows(&state)?, state.len() as u64, entries)
        };
        let from = self
            .tables
            .log
            .snapshot()
            .high_watermark(topic.id, PartitionId(0));
        let records = state_records(topic, &rows, Change::Upsert)?;
        let snapshot = Changelog {
            from,
            records: entries,
        };
        let mut next = self.checkpoint.clone();
        match self.inner.iter().position(|s| s.topic.id == topic.id) {
            Some(stage) => next.inner_state[stage] = snapshot,
            None => (next.state_from, next.state_records) = (from, live),
        }
        self.tables
            .log
            .commit(records, vec![(self.def.id.0, Some(next.encode()))])
            .await?;
        let dropped = self
            .tables
            .log
            .truncate_before(topic.id, PartitionId(0), from)
            .await?;
        tracing::debug!(query = %self.def.name, groups = live, segments = dropped, "state snapshot");
        Ok(Some(snapshot))
    }
}

/// Sleeps until `at`, or for ever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// What a record of a changelog of groups says of its group.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    /// It is the group's row now (a record without a key).
    Upsert,
    /// The group is gone (a record with a key; its values are the group's last).
    Delete,
}

/// Rows as records of a state topic (append time; a key only on deletions).
fn state_records(
    topic: &StateTopic,
    rows: &[RecordBatch],
    change: Change,
) -> Result<Vec<PartitionBatch>> {
    let now = now_ms();
    rows.iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| {
            let n = b.num_rows();
            let mut columns = b.columns().to_vec();
            let keys: ArrayRef = match change {
                Change::Upsert => new_null_array(&DataType::Binary, n),
                Change::Delete => Arc::new(arrow::array::BinaryArray::from_iter_values(
                    std::iter::repeat_n(b"delete", n),
                )),
            };
            columns.extend(crate::storage::system_columns(
                Arc::new(TimestampMillisecondArray::from_value(now, n)),
                keys,
            ));
            let records = RecordBatch::try_new(topic.storage_schema.clone(), columns)
                .map_err(|e| Error::Internal(format!("state records: {e}")))?;
            Ok(PartitionBatch {
                topic: topic.id,
                partition: PartitionId(0),
                records,
            })
        })
        .collect()
}

/// What [`QueryTask::run_stages`] returns: per stage, the final rows of the windows it
/// closed and its changed groups still open; the late rows the epoch's records held.
type StagesRun = (
    Vec<Vec<RecordBatch>>,
    Vec<RecordBatch>,
    Option<Vec<(PartitionId, Offset)>>,
    Vec<Vec<RecordBatch>>,
);

/// `merged` (changed groups' partial state) split into the groups that still have rows
/// and those whose rows, counted in column `count`, have all gone (`None` if none have).
fn without_rows(merged: RecordBatch, count: usize) -> Result<(RecordBatch, Option<RecordBatch>)> {
    let counts = merged
        .column(count)
        .as_primitive_opt::<arrow::datatypes::Int64Type>()
        .ok_or_else(|| Error::Internal("a group's count of rows is not a BIGINT".into()))?;
    let gone: arrow::array::BooleanArray =
        counts.iter().map(|n| Some(n.unwrap_or(0) == 0)).collect();
    if gone.true_count() == 0 {
        return Ok((merged, None));
    }
    let internal = |e: arrow::error::ArrowError| Error::Internal(format!("groups: {e}"));
    let alive = arrow::compute::filter_record_batch(
        &merged,
        &arrow::compute::not(&gone).map_err(internal)?,
    )
    .map_err(internal)?;
    let gone = arrow::compute::filter_record_batch(&merged, &gone).map_err(internal)?;
    Ok((alive, Some(gone)))
}

/// Folds an epoch's changed groups `merged` into `groups`, less the groups `removed`, and
/// takes out the groups the watermark has closed: their rows, and what a changelog needs
/// of `merged` (the groups still open; a restore evicts the others again).
fn fold(
    groups: &Groups,
    removed: Option<&RecordBatch>,
    merged: &RecordBatch,
    watermark: Option<i64>,
) -> Result<(Vec<RecordBatch>, RecordBatch)> {
    let mut state = groups.write();
    if let Some(removed) = removed {
        state.remove(removed)?;
    }
    state.upsert(merged.clone())?;
    let closed = match watermark {
        Some(w) => state.evict(w, &groups.partial)?,
        None => vec![],
    };
    Ok((closed, state.open_after(watermark, merged)?))
}

/// Where the columns of `stream` come from in the query's output: `columns` names them in
/// the order the query returns them (all of them, in order, when empty).
fn output_of(
    data: &CatalogData,
    stream: &str,
    columns: &[String],
    plan: &QueryPlan,
) -> Result<Output> {
    let relation = data
        .relation(stream)
        .ok_or_else(|| Error::UnknownRelation(format!("stream \"{stream}\" does not exist")))?;
    let mut target = WriteTarget::of(data, &relation)
        .ok_or_else(|| Error::Unsupported(format!("\"{stream}\" is not a stream or topic")))?;
    if matches!(plan.kind, Kind::Aggregate { .. }) {
        // Upsert records: every update of a key, the NULL key too, in one partition.
        target.null_key_partition = Some(0);
    }
    let produced = plan.schema.fields().len();
    let names = target.column_names();
    let sources = if columns.is_empty() {
        (0..names.len())
            .map(|i| (i < produced).then_some(i))
            .collect()
    } else {
        names
            .iter()
            .map(|n| columns.iter().position(|c| c == n))
            .collect()
    };
    Ok(Output {
        target,
        columns: sources,
    })
}

/// The watermark of the query `inherited` names, shifted as it says, as of `snapshot`.
fn writer_watermark(snapshot: &crate::storage::Snapshot, inherited: &Inherited) -> Option<i64> {
    let writer = Checkpoint::decode(snapshot.meta(inherited.query.0)?).ok()?;
    Some(
        writer
            .event_time?
            .watermark?
            .saturating_add(inherited.shift_micros),
    )
}
