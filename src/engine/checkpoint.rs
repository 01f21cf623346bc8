//! Checkpoints and the decisions made from them. Pure: no I/O, no clocks.
//!
//! A continuous query's checkpoint is a metadata value in the commit log (key: the query id),
//! committed in the same record as the output of the epoch it describes. It says which epoch
//! was committed last, where each input partition was read up to, and where the state of a
//! view starts in its changelog. Before an epoch runs, the checkpoint is committed once more
//! with the epoch's plan (its input end offsets): after a crash the planned epoch is run again
//! over exactly the same input, so it produces the same output, once.

use serde::{Deserialize, Serialize};

use crate::storage::{Offset, PartitionId, Snapshot, TopicId};
use crate::tables::scan::Ranges;

/// Where one input partition has been read up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputOffset {
    pub topic: TopicId,
    pub partition: PartitionId,
    pub offset: Offset,
}

/// An epoch recorded before it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    pub epoch: u64,
    /// The input end offsets it reads up to (exclusive); it starts at the committed ones.
    pub ends: Vec<InputOffset>,
    /// The input partitions found idle when it was planned: they do not hold the
    /// watermark back (decided by the clock, so recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub idle: Vec<PartitionId>,
    /// Over a stream whose watermark is its writer's: that watermark (shifted) as of the
    /// input it reads up to, when it reads all there was (recorded, as the writer moves on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherited: Option<i64>,
    /// The same for each input of a join of streams that is a stream of closed windows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherited_inputs: Vec<(TopicId, i64)>,
}

/// Event time of a query over a stream with a watermark (times in microseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventTime {
    /// Per input partition that had rows: the greatest value of the watermark expression
    /// over them.
    pub maxima: Vec<(PartitionId, i64)>,
    /// The watermark: rows of the next epoch whose event time is below it are late, and
    /// windows ending at or before it are closed. `None` until a partition had rows.
    pub watermark: Option<i64>,
    /// Rows dropped as late, in all.
    pub late_rows: u64,
}

impl EventTime {
    /// Takes in an epoch's greatest watermark-expression value per partition.
    pub fn observe(&mut self, partition: PartitionId, max: i64) {
        match self.maxima.iter_mut().find(|(p, _)| *p == partition) {
            Some((_, m)) => *m = (*m).max(max),
            None => {
                self.maxima.push((partition, max));
                self.maxima.sort_unstable();
            }
        }
    }

    /// The watermark after an epoch, with `idle` partitions left out: the least of the
    /// partitions' maxima (an idle partition counts as the greatest of them, so that when
    /// every partition is idle the watermark reaches the last row read); never lower than
    /// before.
    pub fn advanced(&self, idle: &[PartitionId]) -> Option<i64> {
        let greatest = self.maxima.iter().map(|(_, m)| *m).max()?;
        let least = self
            .maxima
            .iter()
            .map(|(p, m)| if idle.contains(p) { greatest } else { *m })
            .min()
            .unwrap_or(greatest);
        Some(self.watermark.map_or(least, |w| w.max(least)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last epoch committed; 0 before the first.
    pub epoch: u64,
    /// Per input partition, the offset input has been processed up to (exclusive).
    pub inputs: Vec<InputOffset>,
    /// For a view: the changelog offset its state is replayed from.
    pub state_from: Offset,
    /// For a view: changelog records at or after `state_from` (what a replay reads).
    pub state_records: u64,
    /// The epoch running now, if one was planned and has not committed.
    pub planned: Option<Planned>,
    /// For a query with event-time state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<EventTime>,
    /// For a chain of aggregates: where each inner stage's changelog is replayed from,
    /// innermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inner_state: Vec<Changelog>,
    /// For a query that joins streams or reads a table: where it started reading each
    /// input. The input rows it keeps (its joins' sides, its image of the table) are
    /// rebuilt from there when it starts (and retention keeps them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub starts: Vec<InputOffset>,
    /// For a query joining streams with watermarks: each one's event time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_times: Vec<(TopicId, EventTime)>,
}

/// Where a changelog of groups is replayed from, and how much a replay reads: its records
/// and the values they add to the groups' sets (see `GroupState::entries`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changelog {
    pub from: Offset,
    pub records: u64,
}

impl Checkpoint {
    /// The checkpoint of a query that has not run yet, reading from `starts`.
    pub fn initial(starts: Vec<InputOffset>) -> Checkpoint {
        Checkpoint {
            epoch: 0,
            inputs: starts,
            state_from: Offset(0),
            state_records: 0,
            planned: None,
            event_time: None,
            inner_state: vec![],
            starts: vec![],
            input_times: vec![],
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a checkpoint serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("unreadable checkpoint: {e}"))
    }

    /// Where `topic`/`partition` has been read up to.
    pub fn position(&self, topic: TopicId, partition: PartitionId) -> Option<Offset> {
        position(&self.inputs, topic, partition)
    }
}

/// Where `topic`/`partition` has been read up to, according to `positions`.
pub fn position(
    positions: &[InputOffset],
    topic: TopicId,
    partition: PartitionId,
) -> Option<Offset> {
    positions
        .iter()
        .find(|i| i.topic == topic && i.partition == partition)
        .map(|i| i.offset)
}

/// Records below the high watermarks `high` that `positions` have not reached.
pub fn lag(positions: &[InputOffset], high: &[InputOffset]) -> u64 {
    high.iter()
        .map(|h| {
            let at = position(positions, h.topic, h.partition).map_or(0, |o| o.0);
            h.offset.0.saturating_sub(at)
        })
        .sum()
}

/// The high watermark of every partition of `topic` in `snapshot`.
pub fn high_watermarks(snapshot: &Snapshot, topic: TopicId) -> Vec<InputOffset> {
    snapshot
        .high_watermarks(topic)
        .into_iter()
        .enumerate()
        .map(|(p, offset)| InputOffset {
            topic,
            partition: PartitionId(p as u32),
            offset,
        })
        .collect()
}

/// The input of one epoch: per partition, the offset range to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochPlan {
    pub epoch: u64,
    pub ranges: Vec<(InputOffset, Offset)>,
    /// True when this replays an epoch planned before a restart.
    pub replay: bool,
}

impl EpochPlan {
    pub fn rows(&self) -> u64 {
        self.ranges
            .iter()
            .map(|(from, to)| to.0 - from.offset.0)
            .sum()
    }

    /// The offsets to read, per partition.
    pub fn partition_ranges(&self) -> Ranges {
        self.ranges
            .iter()
            .map(|(from, to)| (from.partition, from.offset..*to))
            .collect()
    }

    pub fn ends(&self) -> Vec<InputOffset> {
        self.ranges
            .iter()
            .map(|(from, to)| InputOffset {
                offset: *to,
                ..*from
            })
            .collect()
    }
}

/// The next epoch: the planned one if there is one (exactly its ranges), otherwise from the
/// committed positions up to the high watermarks, at most `max_rows` records in all (split
/// evenly over the partitions that have any). `None` when there is nothing to read.
pub fn next_epoch(
    checkpoint: &Checkpoint,
    high: &[InputOffset],
    max_rows: u64,
) -> Option<EpochPlan> {
    let start = |h: &InputOffset| InputOffset {
        offset: checkpoint
            .position(h.topic, h.partition)
            .unwrap_or(Offset(0)),
        ..*h
    };
    if let Some(planned) = &checkpoint.planned {
        let ranges = planned
            .ends
            .iter()
            .map(|end| (start(end), end.offset))
            .collect();
        return Some(EpochPlan {
            epoch: planned.epoch,
            ranges,
            replay: true,
        });
    }
    let behind: Vec<(InputOffset, u64)> = high
        .iter()
        .map(|h| {
            let from = start(h);
            (from, h.offset.0.saturating_sub(from.offset.0))
        })
        .collect();
    let epoch = checkpoint.epoch + 1;
    let backlogs: Vec<u64> = behind.iter().map(|(_, n)| *n).collect();
    let takes = share_out(&backlogs, max_rows, epoch as usize);
    if takes.iter().all(|n| *n == 0) {
        return None;
    }
    let ranges = behind
        .into_iter()
        .zip(takes)
        .map(|((from, _), n)| (from, from.offset.plus(n)))
        .collect();
    Some(EpochPlan {
        epoch,
        ranges,
        replay: false,
    })
}

/// How many of each partition's `backlogs` records to read, `max` in all at most: an equal
/// share each, with what a partition has no use for going to the others. When there are
/// fewer records to give than partitions with a backlog, they go one each, starting at
/// partition `first` (modulo their number), so that no partition waits for ever.
fn share_out(backlogs: &[u64], max: u64, first: usize) -> Vec<u64> {
    let mut takes = vec![0; backlogs.len()];
    let n = backlogs.len().max(1);
    let mut open: Vec<usize> = (0..backlogs.len())
        .map(|i| (i + first) % n)
        .filter(|&i| backlogs[i] > 0)
        .collect();
    let mut left = max;
    while !open.is_empty() && left > 0 {
        let share = left / open.len() as u64;
        if share == 0 {
            for &i in open.iter().take(left as usize) {
                takes[i] += 1;
            }
            break;
        }
        open.retain(|&i| {
            let give = share.min(backlogs[i] - takes[i]);
            takes[i] += give;
            left -= give;
            takes[i] < backlogs[i]
        });
    }
    takes
}

/// Whether a view's changelog should start over with a full snapshot of its state: when
/// replaying it would read more than twice what the state holds now (its entries: groups
/// and the values in their sets), and enough to matter.
pub fn snapshot_due(state_records: u64, live_entries: u64) -> bool {
    state_records > 10_000 && state_records > 2 * live_entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: u32, offset: u64) -> InputOffset {
        InputOffset {
            topic: TopicId(1),
            partition: PartitionId(partition),
            offset: Offset(offset),
        }
    }

    #[test]
    fn epochs_read_from_the_committed_positions_to_the_high_watermarks() {
        let cp = Checkpoint::initial(vec![at(0, 10), at(1, 0)]);
        let plan = next_epoch(&cp, &[at(0, 15), at(1, 3)], 1_000).unwrap();
        assert_eq!(plan.epoch, 1);
        assert_eq!(
            plan.ranges,
            vec![(at(0, 10), Offset(15)), (at(1, 0), Offset(3))]
        );
        assert_eq!(plan.rows(), 8);
        assert!(
            next_epoch(&cp, &[at(0, 10), at(1, 0)], 1_000).is_none(),
            "nothing new"
        );
    }

    #[test]
    fn epochs_are_capped_and_share_the_cap() {
        let cp = Checkpoint::initial(vec![]);
        let plan = next_epoch(&cp, &[at(0, 1_000), at(1, 10), at(2, 0)], 100).unwrap();
        // Two partitions have records: 50 each, and what partition 1 cannot use goes to 0.
        assert_eq!(plan.ranges[0], (at(0, 0), Offset(90)));
        assert_eq!(plan.ranges[1], (at(1, 0), Offset(10)));
        assert_eq!(plan.ranges[2], (at(2, 0), Offset(0)));
        assert_eq!(plan.rows(), 100);
    }

    #[test]
    fn a_small_cap_is_met_exactly_and_goes_round() {
        assert_eq!(share_out(&[5, 5, 5], 7, 0), vec![3, 2, 2]);
        assert_eq!(share_out(&[5, 5, 5], 2, 0), vec![1, 1, 0]);
        assert_eq!(share_out(&[5, 5, 5], 2, 1), vec![0, 1, 1]);
        assert_eq!(share_out(&[5, 0, 5], 1, 1), vec![0, 0, 1]);
        assert_eq!(share_out(&[1, 2, 3], 100, 0), vec![1, 2, 3]);
        assert_eq!(share_out(&[0, 0], 10, 0), vec![0, 0]);
        assert_eq!(share_out(&[4, 4], 0, 0), vec![0, 0]);
    }

    #[test]
    fn a_planned_epoch_is_replayed_exactly() {
        let mut cp = Checkpoint::initial(vec![at(0, 5)]);
        cp.epoch = 3;
        cp.planned = Some(Planned {
            epoch: 4,
            ends: vec![at(0, 9)],
            idle: vec![],
            inherited: None,
            inherited_inputs: vec![],
        });
        // More has arrived since, but the replay reads what the plan said.
        let plan = next_epoch(&cp, &[at(0, 100)], 1_000).unwrap();
        assert_eq!((plan.epoch, plan.replay), (4, true));
        assert_eq!(plan.ranges, vec![(at(0, 5), Offset(9))]);
        assert_eq!(plan.ends(), vec![at(0, 9)]);
    }

    #[test]
    fn partitions_new_to_the_checkpoint_start_at_zero() {
        let cp = Checkpoint::initial(vec![at(0, 5)]);
        let plan = next_epoch(&cp, &[at(0, 5), at(1, 2)], 1_000).unwrap();
        assert_eq!(plan.ranges[1], (at(1, 0), Offset(2)));
        assert_eq!(lag(&cp.inputs, &[at(0, 7), at(1, 2)]), 4);
    }

    #[test]
    fn checkpoints_round_trip_and_garbage_is_an_error() {
        let mut cp = Checkpoint::initial(vec![at(0, 5)]);
        cp.planned = Some(Planned {
            epoch: 1,
            ends: vec![at(0, 6)],
            idle: vec![PartitionId(1)],
            inherited: Some(-7),
            inherited_inputs: vec![(TopicId(3), 12)],
        });
        cp.event_time = Some(EventTime {
            maxima: vec![(PartitionId(0), 5)],
            watermark: Some(5),
            late_rows: 2,
        });
        assert_eq!(Checkpoint::decode(&cp.encode()).unwrap(), cp);
        assert!(Checkpoint::decode(b"{not json").is_err());
    }

    #[test]
    fn the_watermark_is_the_least_maximum_of_partitions_not_idle_and_never_falls() {
        let mut t = EventTime::default();
        assert_eq!(t.advanced(&[]), None, "no rows, no watermark");
        t.observe(PartitionId(0), 100);
        t.observe(PartitionId(2), 40);
        t.observe(PartitionId(0), 90);
        assert_eq!(t.maxima, vec![(PartitionId(0), 100), (PartitionId(2), 40)]);
        assert_eq!(t.advanced(&[]), Some(40));
        // A quiet partition stops holding the others back.
        assert_eq!(t.advanced(&[PartitionId(2)]), Some(100));
        // When all are quiet, the watermark reaches the last row read.
        assert_eq!(t.advanced(&[PartitionId(0), PartitionId(2)]), Some(100));
        t.watermark = Some(70);
        assert_eq!(t.advanced(&[]), Some(70), "monotone");
    }

    #[test]
    fn snapshots_when_replay_would_read_far_more_than_the_state() {
        assert!(!snapshot_due(5_000, 100), "too small to matter");
        assert!(snapshot_due(50_000, 100));
        assert!(!snapshot_due(50_000, 40_000));
    }
}
