//! Push queries: `SELECT … FROM stream EMIT CHANGES`, run for one client.
//!
//! A push query runs epochs like a continuous query (the same plan, taken apart the same
//! way), but commits nothing: each epoch's rows go to the client, and its state lives only as
//! long as the query. Stateless queries return the new rows; aggregates return the groups each
//! epoch changed, with their new values (ksqlDB's push queries).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use tokio::sync::watch;

use super::checkpoint::{self, Checkpoint, InputOffset};
use super::plan::{EpochPlan, Kind, QueryPlan, run};
use super::state::GroupState;
use super::{Engine, EngineConfig};
use crate::catalog::CatalogData;
use crate::error::Result;
use crate::storage::{Log, Offset};

pub struct PushQuery {
    plan: QueryPlan,
    log: Arc<Log>,
    config: EngineConfig,
    /// Where each input partition has been read up to.
    positions: Checkpoint,
    groups: Option<GroupState>,
    commits: watch::Receiver<u64>,
}

impl PushQuery {
    /// Plans `sql`; it reads from the first record of its input if `earliest`, otherwise
    /// from its end now.
    pub async fn new(
        engine: &Engine,
        sql: &str,
        catalog: &CatalogData,
        earliest: bool,
    ) -> Result<PushQuery> {
        let plan = engine.plan(sql, catalog).await?;
        let log = engine.tables.log.clone();
        let snapshot = log.snapshot();
        let starts = checkpoint::high_watermarks(&snapshot, plan.input.id)
            .into_iter()
            .map(|end| InputOffset {
                // Reads start at the log start offset when retention has deleted before it.
                offset: if earliest { Offset(0) } else { end.offset },
                ..end
            })
            .collect();
        let groups = match &plan.kind {
            Kind::Stateless => None,
            Kind::Aggregate {
                state_schema,
                groups,
                ..
            } => Some(GroupState::new(state_schema.clone(), *groups)?),
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

    /// The rows of the next epoch that has any; waits for new records as long as it takes.
    pub async fn next(&mut self) -> Result<Vec<RecordBatch>> {
        loop {
            self.commits.borrow_and_update();
            let high = checkpoint::high_watermarks(&self.log.snapshot(), self.plan.input.id);
            let Some(epoch) =
                checkpoint::next_epoch(&self.positions, &high, self.config.max_epoch_rows)
            else {
                if self.commits.changed().await.is_err() {
                    // The log is shutting down.
                    return Ok(vec![]);
                }
                continue;
            };
            let (plan, ctx) = self.plan.plan_epoch(epoch.partition_ranges()).await?;
            let rows = match plan {
                EpochPlan::Stateless(plan) => run(plan, ctx).await?,
                EpochPlan::Aggregate(aggregation) => {
                    let groups = self.groups.as_mut().expect("an aggregation has state");
                    let (merged, finals) = aggregation.merge(groups, ctx.clone()).await?;
                    groups.upsert(merged)?;
                    aggregation.output(finals, ctx).await?
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
