//! Push queries: `SELECT … FROM stream EMIT CHANGES`, run for one client.
//!
//! A push query runs epochs like a continuous query (the same plan, taken apart the same
//! way), but commits nothing: each epoch's rows go to the client, and its state lives only as
//! long as the query. Stateless queries return the new rows; aggregates return the groups each
//! epoch changed, with their new values (ksqlDB's push queries).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::memory_pool::MemoryConsumer;
use tokio::sync::watch;
use tokio::time::Instant;

use super::checkpoint::{self, Checkpoint, InputOffset};
use super::plan::{EpochPlan, Kind, QueryPlan, run};
use super::state::Groups;
use super::{Engine, EngineConfig};
use crate::catalog::CatalogData;
use crate::error::{Error, Result};
use crate::storage::{Log, Offset};

pub struct PushQuery {
    plan: QueryPlan,
    log: Arc<Log>,
    config: EngineConfig,
    /// Where each input partition has been read up to.
    positions: Checkpoint,
    groups: Option<Groups>,
    commits: watch::Receiver<u64>,
}

impl PushQuery {
    /// Its plan: what it reads.
    pub fn plan(&self) -> &QueryPlan {
        &self.plan
    }

    /// Plans `sql`; it reads from the first record of its input if `earliest`, otherwise
    /// from its end now.
    pub async fn new(
        engine: &Engine,
        sql: &str,
        catalog: &CatalogData,
        earliest: bool,
    ) -> Result<PushQuery> {
        let log = engine.tables.log.clone();
        Self::starting_at(engine, sql, catalog, |end| {
            if earliest {
                log.log_start(end.topic, end.partition)
            } else {
                end.offset
            }
        })
        .await
    }

    /// Plans `sql`; it reads each input partition from `start(its high watermark now)`. An
    /// offset retention has deleted fails the read (`StorageError::Removed`).
    pub async fn starting_at(
        engine: &Engine,
        sql: &str,
        catalog: &CatalogData,
        start: impl Fn(&InputOffset) -> Offset,
    ) -> Result<PushQuery> {
        let plan = engine.plan(sql, catalog).await?;
        let log = engine.tables.log.clone();
        let snapshot = log.snapshot();
        let starts = plan
            .high_watermarks(&snapshot)
            .into_iter()
            .map(|end| InputOffset {
                offset: start(&end),
                ..end
            })
            .collect();
        if plan.over_groups() {
            return Err(Error::Unsupported(
                "a push query of an aggregate over an aggregate is not supported: its groups \
                 change and go as the inner groups change; create a materialized view and \
                 SUBSCRIBE to it"
                    .into(),
            ));
        }
        if plan.over_table() {
            return Err(Error::Unsupported(format!(
                "a push query over table \"{}\" is not supported: its rows change as the \
                 table is updated and deleted; create a materialized view over it and \
                 SUBSCRIBE to the view",
                plan.input_name
            )));
        }
        let groups = match &plan.kind {
            Kind::Stateless => None,
            Kind::Aggregate { .. } if plan.session.is_some() => {
                return Err(Error::Unsupported(
                    "SESSION windows are not supported in push queries: a session's row is \
                     final only when the watermark passes its end; create a stream of them \
                     with EMIT ON WINDOW CLOSE and SUBSCRIBE to that"
                        .into(),
                ));
            }
            Kind::Combine { .. } => {
                return Err(Error::Unsupported(
                    "a join or union of windowed aggregates is not supported in push \
                     queries: its rows are made as windows close; create a stream of it \
                     with EMIT ON WINDOW CLOSE and SUBSCRIBE to that"
                        .into(),
                ));
            }
            Kind::Aggregate { inner, .. } if !inner.is_empty() => {
                return Err(Error::Unsupported(
                    "an aggregate over an aggregate is not supported in push queries: the \
                     inner aggregate's rows are final only when their windows close; create \
                     a stream of it with EMIT ON WINDOW CLOSE and SUBSCRIBE to that"
                        .into(),
                ));
            }
            Kind::Aggregate {
                state_schema,
                sets,
                groups,
                ..
            } => {
                let memory = MemoryConsumer::new("state of a push query")
                    .register(&engine.base.runtime_env().memory_pool);
                Some(Groups::new(
                    state_schema,
                    None,
                    *groups,
                    None,
                    sets,
                    memory,
                )?)
            }
        };
        Ok(PushQuery {
            plan,
            commits: log.subscribe_commits(),
            log,
            config: engine.config.clone(),
            positions: Checkpoint::initial(starts),
            groups,
        })
    }

    pub fn schema(&self) -> SchemaRef {
        self.plan.schema.clone()
    }

    /// Where each input partition has been read up to (the next offset to read).
    pub fn positions(&self) -> &[InputOffset] {
        &self.positions.inputs
    }

    /// The rows of the next epoch that has any; waits for new records as long as it takes.
    /// No rows: the server is shutting down.
    pub async fn next(&mut self) -> Result<Vec<RecordBatch>> {
        self.read(self.config.max_epoch_rows, None).await
    }

    /// The rows of the next epoch that has any, reading `max_records` input records at
    /// most; waits for new records until `deadline` (no rows once it has passed). If the
    /// future is dropped, the records it was reading are read again by the next call.
    pub async fn read(
        &mut self,
        max_records: u64,
        deadline: Option<Instant>,
    ) -> Result<Vec<RecordBatch>> {
        if max_records == 0 {
            return Ok(vec![]);
        }
        loop {
            self.commits.borrow_and_update();
            let high = self.plan.high_watermarks(&self.log.snapshot());
            let Some(epoch) = checkpoint::next_epoch(&self.positions, &high, max_records) else {
                let changed = self.commits.changed();
                let changed = match deadline {
                    Some(deadline) => match tokio::time::timeout_at(deadline, changed).await {
                        Ok(changed) => changed,
                        Err(_) => return Ok(vec![]),
                    },
                    None => changed.await,
                };
                if changed.is_err() {
                    // The log is shutting down.
                    return Ok(vec![]);
                }
                continue;
            };
            let (plan, ctx) = self.plan.plan_epoch(&epoch.ranges).await?;
            let rows = match plan {
                EpochPlan::Stateless(plan) => run(plan, ctx).await?,
                EpochPlan::Combine { .. } => {
                    return Err(Error::Internal(
                        "a push query planned as a join of windows".into(),
                    ));
                }
                EpochPlan::Aggregate {
                    last: aggregation, ..
                } => {
                    let groups = self.groups.as_ref().expect("an aggregation has state");
                    let (merged, finals) = aggregation.merge(vec![], groups, ctx.clone()).await?;
                    // Output before the state changes, so that a dropped future changes nothing.
                    let rows = aggregation.output(finals, ctx).await?;
                    groups.write().upsert(merged)?;
                    rows
                }
            };
            for end in epoch.ends() {
                if let Some(at) = self
                    .positions
                    .inputs
                    .iter_mut()
                    .find(|i| i.topic == end.topic && i.partition == end.partition)
                {
                    at.offset = end.offset;
                }
            }
            self.positions.epoch = epoch.epoch;
            let rows: Vec<RecordBatch> = rows.into_iter().filter(|b| b.num_rows() > 0).collect();
            if !rows.is_empty() {
                return Ok(rows);
            }
        }
    }
}
