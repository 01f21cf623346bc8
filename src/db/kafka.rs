//! What the Kafka front end (`crate::kafka`) asks of the database: the cluster's identity
//! and its topics as Kafka clients see them. Produce, fetch and groups come through here
//! too, so that the front end knows nothing below this module.

use base64::Engine as _;

use super::Database;

/// A topic or stream, as a Kafka topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaTopic {
    pub name: String,
    /// Stable for the topic's life; a topic dropped and created again gets a new one.
    pub id: [u8; 16],
    pub partitions: u32,
}

impl Database {
    /// The cluster id Kafka clients see: the data directory's identity, as Kafka writes
    /// cluster ids (22 characters of URL-safe base64).
    pub fn cluster_id(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.log().identity().id)
    }

    /// Every topic and stream, by name. A continuous query's own state topics are not
    /// Kafka topics.
    pub fn kafka_topics(&self) -> Vec<KafkaTopic> {
        let data = self.catalog().snapshot();
        let cluster = self.log().identity().id;
        data.topics
            .values()
            .filter(|t| t.internal.is_none())
            .map(|t| KafkaTopic {
                name: t.name.clone(),
                id: topic_uuid(&cluster, t.id.0),
                partitions: t.partitions,
            })
            .collect()
    }
}

/// A topic's Kafka id: a version-8 UUID of the data directory's identity and the topic's
/// number, which is never reused, so ids are stable, distinct and never zero.
fn topic_uuid(cluster: &[u8; 16], topic: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&cluster[..8]);
    id[8..].copy_from_slice(&topic.to_be_bytes());
    id[6] = (id[6] & 0x0f) | 0x80; // version 8: custom
    id[8] = (id[8] & 0x3f) | 0x80; // RFC 4122 variant
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_are_distinct_and_never_zero() {
        let cluster = [7u8; 16];
        let ids: std::collections::BTreeSet<[u8; 16]> =
            (1..1000).map(|t| topic_uuid(&cluster, t)).collect();
        assert_eq!(ids.len(), 999);
        assert!(!ids.contains(&[0u8; 16]));
        assert_ne!(topic_uuid(&[1u8; 16], 5), topic_uuid(&[2u8; 16], 5));
    }
}
