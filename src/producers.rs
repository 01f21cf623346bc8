//! Idempotent producers: producer ids, epochs and per-partition sequence numbers, so that a
//! batch a producer sends again (after a timeout, a lost connection, a server restart) is
//! recognised and never appended twice.
//!
//! A producer's state is one metadata value in the commit log, committed in the same commit
//! record as the records it describes: after a crash, the state and the log agree, so a retry
//! of a batch whose append was acknowledged — or was durable but not yet acknowledged — is
//! answered with the offset it got, and a batch that was lost is appended.
//!
//! As Kafka does, each partition remembers a producer's last [`BATCHES_KEPT`] batches (a
//! client has at most five in flight per partition): a batch whose sequence numbers match
//! one of them is a duplicate; otherwise its first sequence must follow the last one.
//! Producers unused for [`EXPIRY_MS`] are forgotten when new ids are issued.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::{
    AppendedRange, Log, MetaAfter, MetaUpdate, Offset, PartitionId, Snapshot, TopicId, now_ms,
};

/// Set in every producer's metadata key; apart from query ids (which count up from 1) and
/// groups' keys (which have the top bit).
const PRODUCER_KEY_BIT: u64 = 1 << 62;
/// The key of the next producer id to issue (producer ids start at 1).
const NEXT_ID_KEY: u64 = PRODUCER_KEY_BIT;
/// The batches remembered per producer and partition.
pub const BATCHES_KEPT: usize = 5;
/// A producer not heard from for this long is forgotten (Kafka's
/// `producer.id.expiration.ms`).
pub const EXPIRY_MS: i64 = 24 * 60 * 60 * 1000;

fn producer_key(id: i64) -> u64 {
    PRODUCER_KEY_BIT | id as u64
}

fn is_producer_key(key: u64) -> bool {
    key & (PRODUCER_KEY_BIT | 1 << 63) == PRODUCER_KEY_BIT && key != NEXT_ID_KEY
}

/// A batch a producer appended: its sequence numbers and where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSequence {
    pub first: i32,
    pub last: i32,
    pub base_offset: Offset,
}

/// What is stored of one producer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerState {
    pub epoch: i16,
    pub last_used_ms: i64,
    /// Per partition, the producer's last batches, oldest first.
    pub partitions: Vec<(TopicId, PartitionId, VecDeque<BatchSequence>)>,
}

impl ProducerState {
    fn new(epoch: i16) -> ProducerState {
        ProducerState {
            epoch,
            last_used_ms: now_ms(),
            partitions: vec![],
        }
    }

    fn batches(&self, topic: TopicId, partition: PartitionId) -> Option<&VecDeque<BatchSequence>> {
        self.partitions
            .iter()
            .find(|(t, p, _)| *t == topic && *p == partition)
            .map(|(_, _, b)| b)
    }

    /// Records that a batch was appended.
    pub fn appended(&mut self, topic: TopicId, partition: PartitionId, batch: BatchSequence) {
        let at = match self
            .partitions
            .iter()
            .position(|(t, p, _)| *t == topic && *p == partition)
        {
            Some(at) => at,
            None => {
                self.partitions.push((topic, partition, VecDeque::new()));
                self.partitions.len() - 1
            }
        };
        let batches = &mut self.partitions[at].2;
        if batches.len() == BATCHES_KEPT {
            batches.pop_front();
        }
        batches.push_back(batch);
    }

    /// Forgets partitions of topics that no longer exist.
    pub fn retain_topics(&mut self, exists: impl Fn(TopicId) -> bool) {
        self.partitions.retain(|(t, _, _)| exists(*t));
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("producer state serializes")
    }

    fn decode(bytes: &[u8]) -> Result<ProducerState> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::Internal(format!("unreadable producer state: {e}")))
    }
}

/// How a batch from a producer relates to what it sent before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequence {
    /// The next batch: append it.
    Next,
    /// Sent before and appended at this offset: answer with it, append nothing.
    Duplicate(Offset),
    /// Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER (45): a gap, or a batch older than those kept.
    OutOfOrder { expected: i32 },
    /// Kafka's INVALID_PRODUCER_EPOCH (47): a newer epoch of this producer exists (47).
    Fenced { current: i16 },
    /// Kafka's UNKNOWN_PRODUCER_ID (59): no such producer, or it was forgotten.
    Unknown,
}

/// What a producer's batch for one partition says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub id: i64,
    pub epoch: i16,
    pub first_sequence: i32,
    pub records: i32,
}

impl ProducerBatch {
    pub fn last_sequence(&self) -> i32 {
        // Sequences wrap around after i32::MAX, as Kafka's do.
        ((i64::from(self.first_sequence) + i64::from(self.records) - 1) % (i64::from(i32::MAX) + 1))
            as i32
    }
}

/// Where `batch` stands against `state`.
pub fn check(
    state: Option<&ProducerState>,
    topic: TopicId,
    partition: PartitionId,
    batch: &ProducerBatch,
) -> Sequence {
    let Some(state) = state else {
        return Sequence::Unknown;
    };
    if batch.epoch < state.epoch {
        return Sequence::Fenced {
            current: state.epoch,
        };
    }
    let batches = match state.batches(topic, partition) {
        Some(batches) if batch.epoch == state.epoch => batches,
        // A new epoch (or a first batch here) starts its sequences at 0.
        _ if batch.first_sequence == 0 => return Sequence::Next,
        _ => return Sequence::OutOfOrder { expected: 0 },
    };
    if let Some(sent) = batches
        .iter()
        .find(|b| b.first == batch.first_sequence && b.last == batch.last_sequence())
    {
        return Sequence::Duplicate(sent.base_offset);
    }
    let expected = batches
        .back()
        .map_or(0, |b| if b.last == i32::MAX { 0 } else { b.last + 1 });
    if batch.first_sequence == expected {
        Sequence::Next
    } else {
        Sequence::OutOfOrder { expected }
    }
}

/// The producers' states, each behind its own lock: a producer's batches are checked and
/// committed one at a time, different producers' concurrently.
pub struct Producers {
    log: Arc<Log>,
    locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// Serialises issuing ids.
    issuing: tokio::sync::Mutex<()>,
}

/// A producer's state, locked until dropped.
pub struct Locked {
    pub id: i64,
    pub state: Option<ProducerState>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Locked {
    /// The change that stores this producer's state as it is now.
    fn update(&mut self) -> Option<MetaUpdate> {
        let state = self.state.as_mut()?;
        state.last_used_ms = now_ms();
        Some((producer_key(self.id), Some(state.encode())))
    }

    /// The change that stores this producer's state with `batches` (topic, partition,
    /// first and last sequence) appended, made once the log has given them offsets, for
    /// [`Log::commit_after`]. Batches for one partition take its ranges in order.
    pub fn after_append(&self, batches: Vec<(TopicId, PartitionId, i32, i32)>) -> MetaAfter {
        let id = self.id;
        let mut state = self.state.clone().unwrap_or_else(|| ProducerState::new(0));
        Box::new(move |ranges: &[AppendedRange]| {
            let mut used = vec![false; ranges.len()];
            for (topic, partition, first, last) in batches {
                let range = (0..ranges.len()).find(|i| {
                    !used[*i] && ranges[*i].topic == topic && ranges[*i].partition == partition
                });
                if let Some(i) = range {
                    used[i] = true;
                    state.appended(
                        topic,
                        partition,
                        BatchSequence {
                            first,
                            last,
                            base_offset: ranges[i].base_offset,
                        },
                    );
                }
            }
            state.last_used_ms = now_ms();
            vec![(producer_key(id), Some(state.encode()))]
        })
    }
}

impl Producers {
    pub fn new(log: Arc<Log>) -> Producers {
        Producers {
            log,
            locks: Mutex::new(HashMap::new()),
            issuing: tokio::sync::Mutex::new(()),
        }
    }

    /// Locks producer `id` and reads its committed state.
    pub async fn lock(&self, id: i64) -> Result<Locked> {
        let lock = {
            let mut locks = self.locks.lock().expect("producer locks");
            // One lock per producer at work: those nobody holds or waits for go, or every
            // producer id ever issued would keep one.
            if locks.len() >= 1024 {
                locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            }
            locks.entry(id).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        let state = Self::state_in(&self.log.snapshot(), id)?;
        Ok(Locked {
            id,
            state,
            _guard: guard,
        })
    }

    fn state_in(snapshot: &Snapshot, id: i64) -> Result<Option<ProducerState>> {
        if id <= 0 {
            return Ok(None);
        }
        snapshot
            .meta(producer_key(id))
            .map(|bytes| ProducerState::decode(bytes))
            .transpose()
    }

    /// Gives a producer an id and epoch (Kafka's InitProducerId). A producer that names its
    /// current id and epoch gets the next epoch of the same id, its sequences reset;
    /// otherwise a new id. Producers unused for [`EXPIRY_MS`] are forgotten in the same
    /// commit.
    pub async fn init(&self, current: Option<(i64, i16)>) -> Result<(i64, i16)> {
        if let Some((id, epoch)) = current {
            let mut locked = self.lock(id).await?;
            if let Some(state) = &locked.state
                && state.epoch == epoch
                && epoch < i16::MAX
            {
                locked.state = Some(ProducerState::new(epoch + 1));
                let update = locked.update().expect("a state");
                self.log.commit(vec![], vec![update]).await?;
                return Ok((id, epoch + 1));
            }
        }
        let _one_at_a_time = self.issuing.lock().await;
        let snapshot = self.log.snapshot();
        let id = match snapshot.meta(NEXT_ID_KEY) {
            Some(bytes) => i64::from_le_bytes(
                bytes[..]
                    .try_into()
                    .map_err(|_| Error::Internal("unreadable next producer id".into()))?,
            ),
            None => 1,
        };
        let cutoff = now_ms() - EXPIRY_MS;
        let mut updates: Vec<MetaUpdate> = snapshot
            .metas()
            .filter(|(key, _)| is_producer_key(*key))
            .filter(|(_, bytes)| {
                ProducerState::decode(bytes).is_ok_and(|s| s.last_used_ms < cutoff)
            })
            .map(|(key, _)| (key, None))
            .collect();
        updates.push((NEXT_ID_KEY, Some((id + 1).to_le_bytes().to_vec())));
        updates.push((producer_key(id), Some(ProducerState::new(0).encode())));
        self.log.commit(vec![], updates).await?;
        Ok((id, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(epoch: i16, first: i32, records: i32) -> ProducerBatch {
        ProducerBatch {
            id: 7,
            epoch,
            first_sequence: first,
            records,
        }
    }

    const T: TopicId = TopicId(1);
    const P: PartitionId = PartitionId(0);

    #[test]
    fn sequences_follow_duplicates_are_found_gaps_refused() {
        let mut state = ProducerState::new(0);
        assert_eq!(
            check(Some(&state), T, P, &batch(0, 1, 5)),
            Sequence::OutOfOrder { expected: 0 }
        );
        assert_eq!(check(Some(&state), T, P, &batch(0, 0, 5)), Sequence::Next);
        state.appended(
            T,
            P,
            BatchSequence {
                first: 0,
                last: 4,
                base_offset: Offset(100),
            },
        );
        assert_eq!(
            check(Some(&state), T, P, &batch(0, 0, 5)),
            Sequence::Duplicate(Offset(100))
        );
        assert_eq!(check(Some(&state), T, P, &batch(0, 5, 1)), Sequence::Next);
        assert_eq!(
            check(Some(&state), T, P, &batch(0, 6, 1)),
            Sequence::OutOfOrder { expected: 5 }
        );
        // Another partition has its own sequences.
        assert_eq!(
            check(Some(&state), T, PartitionId(1), &batch(0, 0, 1)),
            Sequence::Next
        );
        for i in 0..BATCHES_KEPT as i32 {
            state.appended(
                T,
                P,
                BatchSequence {
                    first: 5 + i,
                    last: 5 + i,
                    base_offset: Offset(105 + i as u64),
                },
            );
        }
        // The first batch is no longer remembered.
        assert!(matches!(
            check(Some(&state), T, P, &batch(0, 0, 5)),
            Sequence::OutOfOrder { .. }
        ));
        assert_eq!(
            check(Some(&state), T, P, &batch(0, 9, 1)),
            Sequence::Duplicate(Offset(109))
        );
    }

    #[test]
    fn epochs_fence_and_restart_sequences() {
        let mut state = ProducerState::new(3);
        state.appended(
            T,
            P,
            BatchSequence {
                first: 0,
                last: 9,
                base_offset: Offset(0),
            },
        );
        assert_eq!(
            check(Some(&state), T, P, &batch(2, 10, 1)),
            Sequence::Fenced { current: 3 }
        );
        assert_eq!(check(Some(&state), T, P, &batch(4, 0, 1)), Sequence::Next);
        assert_eq!(
            check(Some(&state), T, P, &batch(4, 10, 1)),
            Sequence::OutOfOrder { expected: 0 }
        );
        assert_eq!(check(None, T, P, &batch(0, 0, 1)), Sequence::Unknown);
    }

    #[test]
    fn sequences_wrap_around() {
        let b = batch(0, i32::MAX - 1, 3);
        assert_eq!(b.last_sequence(), 0);
        let mut state = ProducerState::new(0);
        state.appended(
            T,
            P,
            BatchSequence {
                first: i32::MAX - 1,
                last: i32::MAX,
                base_offset: Offset(0),
            },
        );
        assert_eq!(check(Some(&state), T, P, &batch(0, 0, 1)), Sequence::Next);
    }

    #[test]
    fn keys_are_apart_from_groups_and_queries() {
        assert!(is_producer_key(producer_key(1)));
        assert!(!is_producer_key(NEXT_ID_KEY));
        assert!(!is_producer_key(crate::groups::group_key("billing")));
        assert!(!is_producer_key(1));
    }
}
