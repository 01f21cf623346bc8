//! Consumer groups: the offsets each group has committed, per topic partition.
//!
//! A group is a name, in one namespace: a SQL subscription (`CREATE SUBSCRIPTION billing`)
//! is the group `billing`, and so will be a Kafka client's `group.id = billing`. A group's
//! committed offsets are one metadata value in the commit log (see
//! [`crate::storage::commit_log`]), so a commit is one fsynced commit record: durable across a
//! crash, and atomic over every partition it names. As in Kafka, a committed offset is the
//! next record to read. A Kafka client may commit a metadata string with each offset; it is
//! kept with the offset, and a commit without one clears it.
//!
//! The value's key is derived from the group's name, with the top bit set so it never meets
//! a continuous query's checkpoint key (query ids count up from 1). The value names its group,
//! so two names whose keys collide are told apart and refused, never mixed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::now_ms;
use crate::storage::{Log, MetaUpdate, Offset, PartitionId, Snapshot, TopicId};

/// A partition of a topic, and an offset in it.
pub type PartitionOffset = (TopicId, PartitionId, Offset);

/// Set in every group's metadata key, and in no continuous query's.
const GROUP_KEY_BIT: u64 = 1 << 63;

/// The commit-log metadata key of a group's offsets.
pub fn group_key(group: &str) -> u64 {
    // FNV-1a: stable across builds and versions, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in group.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    GROUP_KEY_BIT | hash
}

/// Whether a metadata key holds a group's offsets (rather than a query's checkpoint).
pub fn is_group_key(key: u64) -> bool {
    key & GROUP_KEY_BIT != 0
}

/// What a group has committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffsets {
    pub group: String,
    /// Per topic partition, the next offset to read.
    pub offsets: BTreeMap<(TopicId, PartitionId), Offset>,
    /// The metadata committed with an offset, where it was not empty.
    pub metadata: BTreeMap<(TopicId, PartitionId), String>,
    pub committed_at_ms: i64,
}

/// The stored form: JSON, with the maps as lists (JSON keys are strings). Values written
/// before commit metadata existed have no `metadata`.
#[derive(Serialize, Deserialize)]
struct Stored {
    group: String,
    offsets: Vec<PartitionOffset>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    metadata: Vec<(TopicId, PartitionId, String)>,
    committed_at_ms: i64,
}

impl GroupOffsets {
    fn encode(&self) -> Vec<u8> {
        let stored = Stored {
            group: self.group.clone(),
            offsets: self
                .offsets
                .iter()
                .map(|((t, p), o)| (*t, *p, *o))
                .collect(),
            metadata: self
                .metadata
                .iter()
                .map(|((t, p), m)| (*t, *p, m.clone()))
                .collect(),
            committed_at_ms: self.committed_at_ms,
        };
        serde_json::to_vec(&stored).expect("offsets serialize")
    }

    fn decode(bytes: &[u8]) -> Result<GroupOffsets> {
        let stored: Stored = serde_json::from_slice(bytes)
            .map_err(|e| Error::Internal(format!("unreadable consumer group offsets: {e}")))?;
        Ok(GroupOffsets {
            group: stored.group,
            offsets: stored
                .offsets
                .into_iter()
                .map(|(t, p, o)| ((t, p), o))
                .collect(),
            metadata: stored
                .metadata
                .into_iter()
                .map(|(t, p, m)| ((t, p), m))
                .collect(),
            committed_at_ms: stored.committed_at_ms,
        })
    }

    fn new(group: &str, offsets: impl IntoIterator<Item = PartitionOffset>) -> GroupOffsets {
        GroupOffsets {
            group: group.to_string(),
            offsets: offsets.into_iter().map(|(t, p, o)| ((t, p), o)).collect(),
            metadata: BTreeMap::new(),
            committed_at_ms: now_ms(),
        }
    }

    /// The committed offsets of one topic, by partition.
    pub fn of_topic(&self, topic: TopicId) -> impl Iterator<Item = (PartitionId, Offset)> + '_ {
        self.offsets
            .range((topic, PartitionId(0))..=(topic, PartitionId(u32::MAX)))
            .map(|((_, p), o)| (*p, *o))
    }
}

/// The offsets store, and which groups have a consumer reading now.
pub struct Groups {
    log: Arc<Log>,
    /// Serialises commits, each a read-modify-write of its group's value.
    commits: tokio::sync::Mutex<()>,
    reading: Arc<Mutex<HashMap<String, Reader>>>,
}

impl Groups {
    pub fn new(log: Arc<Log>) -> Groups {
        Groups {
            log,
            commits: tokio::sync::Mutex::new(()),
            reading: Default::default(),
        }
    }

    /// What `group` has committed, as of `snapshot`.
    pub fn committed_in(snapshot: &Snapshot, group: &str) -> Result<Option<GroupOffsets>> {
        let Some(bytes) = snapshot.meta(group_key(group)) else {
            return Ok(None);
        };
        let offsets = GroupOffsets::decode(bytes)?;
        if offsets.group != group {
            return Err(key_collision(group, &offsets.group));
        }
        Ok(Some(offsets))
    }

    /// What `group` has committed now.
    pub fn committed(&self, group: &str) -> Result<Option<GroupOffsets>> {
        Self::committed_in(&self.log.snapshot(), group)
    }

    /// Every group with committed offsets.
    pub fn all(&self) -> Vec<GroupOffsets> {
        self.log
            .snapshot()
            .metas()
            .filter(|(key, _)| is_group_key(*key))
            .filter_map(|(_, bytes)| GroupOffsets::decode(bytes).ok())
            .collect()
    }

    /// Commits offsets of `group`: those named replace the committed ones, the others stay.
    /// Durable when this returns.
    pub async fn commit(
        &self,
        group: &str,
        offsets: impl IntoIterator<Item = PartitionOffset>,
    ) -> Result<()> {
        self.commit_with_metadata(group, offsets.into_iter().map(|o| (o, String::new())))
            .await
    }

    /// Commits offsets of `group` as [`Groups::commit`] does, each with its metadata (a Kafka
    /// client's string; empty for none).
    pub async fn commit_with_metadata(
        &self,
        group: &str,
        offsets: impl IntoIterator<Item = (PartitionOffset, String)>,
    ) -> Result<()> {
        let _one_at_a_time = self.commits.lock().await;
        let mut value = self
            .committed(group)?
            .unwrap_or_else(|| GroupOffsets::new(group, []));
        for ((topic, partition, offset), metadata) in offsets {
            value.offsets.insert((topic, partition), offset);
            if metadata.is_empty() {
                value.metadata.remove(&(topic, partition));
            } else {
                value.metadata.insert((topic, partition), metadata);
            }
        }
        value.committed_at_ms = now_ms();
        self.store(group, Some(value.encode())).await
    }

    /// The change that sets `group`'s offsets to `offsets` (and nothing else), to commit
    /// with the catalog of a new subscription. Refuses a name whose key another group holds.
    pub fn initial(
        &self,
        group: &str,
        offsets: impl IntoIterator<Item = PartitionOffset>,
    ) -> Result<MetaUpdate> {
        self.committed(group)?;
        let value = GroupOffsets::new(group, offsets);
        Ok((group_key(group), Some(value.encode())))
    }

    /// The change that forgets `group`'s offsets, to commit with the catalog that drops
    /// its subscription.
    pub fn forget(group: &str) -> MetaUpdate {
        (group_key(group), None)
    }

    /// Replaces every committed offset of `group` (a reset).
    pub async fn replace(
        &self,
        group: &str,
        offsets: impl IntoIterator<Item = PartitionOffset>,
    ) -> Result<()> {
        let _one_at_a_time = self.commits.lock().await;
        self.committed(group)?; // refuses a name whose key another group holds
        let value = GroupOffsets::new(group, offsets);
        self.store(group, Some(value.encode())).await
    }

    async fn store(&self, group: &str, value: Option<Vec<u8>>) -> Result<()> {
        self.log
            .commit(vec![], vec![(group_key(group), value)])
            .await?;
        Ok(())
    }

    /// Marks `group` as being read by `reader`, until the returned guard is dropped; an
    /// error if it is read already. A group is read by one SQL cursor, or by Kafka consumers
    /// (the coordinator shares its partitions out among them), never by both at once: each
    /// would commit where it had read, and the other's records would be read twice.
    pub fn start_reading(&self, group: &str, reader: Reader) -> Result<Reading> {
        let mut reading = self.reading.lock().expect("lock");
        if let Some(other) = reading.get(group) {
            return Err(Error::plan(
                "55006",
                format!(
                    "subscription \"{group}\" is being read by {other}; a group is read by one SQL cursor or by Kafka consumers, one at a time"
                ),
            ));
        }
        reading.insert(group.to_string(), reader);
        Ok(Reading {
            group: group.to_string(),
            reading: self.reading.clone(),
        })
    }

    /// Who reads `group` now, if anyone.
    pub fn reader(&self, group: &str) -> Option<Reader> {
        self.reading.lock().expect("lock").get(group).copied()
    }
}

/// Who reads a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// A subscription cursor in a SQL session.
    Cursor,
    /// Members of a Kafka consumer group.
    Kafka,
}

impl std::fmt::Display for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reader::Cursor => "a cursor",
            Reader::Kafka => "Kafka consumers",
        })
    }
}

/// A group being read; dropping it lets another consumer read the group.
#[derive(Debug)]
pub struct Reading {
    group: String,
    reading: Arc<Mutex<HashMap<String, Reader>>>,
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.reading.lock().expect("lock").remove(&self.group);
    }
}

fn key_collision(group: &str, other: &str) -> Error {
    Error::plan(
        "42710",
        format!(
            "consumer group name \"{group}\" cannot be used: its offsets would share storage with group \"{other}\"; choose another name"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_apart_from_query_ids() {
        assert!(is_group_key(group_key("billing")));
        assert!(!is_group_key(1) && !is_group_key(u64::from(u32::MAX)));
        assert_eq!(group_key("billing"), group_key("billing"));
        assert_ne!(group_key("billing"), group_key("billinh"));
        // A changed hash would orphan every stored offset: pin it.
        assert_eq!(group_key(""), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn offsets_round_trip() {
        let value = GroupOffsets {
            group: "g".into(),
            offsets: [
                ((TopicId(3), PartitionId(0)), Offset(7)),
                ((TopicId(3), PartitionId(1)), Offset(0)),
                ((TopicId(4), PartitionId(0)), Offset(1)),
            ]
            .into(),
            metadata: [((TopicId(3), PartitionId(1)), "from a Kafka client".into())].into(),
            committed_at_ms: 5,
        };
        assert_eq!(GroupOffsets::decode(&value.encode()).unwrap(), value);
        // Values stored before commit metadata existed read with none.
        let old = br#"{"group":"g","offsets":[[3,0,7]],"committed_at_ms":5}"#;
        let decoded = GroupOffsets::decode(old).unwrap();
        assert_eq!(decoded.offsets.len(), 1);
        assert!(decoded.metadata.is_empty());
        let topic3: Vec<_> = value.of_topic(TopicId(3)).collect();
        assert_eq!(
            topic3,
            vec![(PartitionId(0), Offset(7)), (PartitionId(1), Offset(0))]
        );
    }
}
