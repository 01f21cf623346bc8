//! The Kafka APIs Runnel serves and the versions of each, which ApiVersions advertises.
//!
//! Only what is implemented and tested with real clients is advertised: a client that sees
//! an API advertised uses it. Old clients decide features from these ranges, so they are
//! as wide as what is served (see `docs/kafka.md`).

use std::ops::RangeInclusive;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::api_versions_response::ApiVersion;

/// Each served API and its versions.
const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::DescribeCluster, 0, 1),
];

/// APIs advertised from an older version than served. Produce from 0: librdkafka up to
/// 2.11.0 compresses batches only if the broker advertises Produce 0 (as Kafka 4 does for
/// this reason, while refusing Produce 0–2, which close the connection here too).
const ADVERTISED_FROM: &[(ApiKey, i16)] = &[(ApiKey::Produce, 0)];

/// The served API with this key, and its versions.
pub fn served(key: i16) -> Option<(ApiKey, RangeInclusive<i16>)> {
    SERVED
        .iter()
        .find(|(api, _, _)| *api as i16 == key)
        .map(|(api, min, max)| (*api, *min..=*max))
}

/// The versions of `key` served, if it is.
pub fn versions(key: ApiKey) -> Option<RangeInclusive<i16>> {
    served(key as i16).map(|(_, versions)| versions)
}

/// The ApiVersions table.
pub fn advertised() -> Vec<ApiVersion> {
    SERVED
        .iter()
        .map(|(api, min, max)| {
            let min = ADVERTISED_FROM
                .iter()
                .find(|(a, _)| a == api)
                .map_or(*min, |(_, from)| *from);
            ApiVersion::default()
                .with_api_key(*api as i16)
                .with_min_version(min)
                .with_max_version(*max)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_range_is_one_the_protocol_defines() {
        for (api, min, max) in SERVED {
            let valid = api.valid_versions();
            assert!(
                valid.min <= *min && *max <= valid.max,
                "{api:?} {min}–{max} outside {}–{}",
                valid.min,
                valid.max
            );
        }
    }
}
