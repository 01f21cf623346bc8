//! Answers requests: one function per API, from the request's message to the response's.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiVersionsResponse, BrokerId, MetadataRequest, MetadataResponse, RequestKind, ResponseKind,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::codec::{self, Closed, Request};
use super::{Advertised, NODE_ID, apis};
use crate::db::Database;
use crate::db::kafka::KafkaTopic;

/// Kafka's UNKNOWN_TOPIC_OR_PARTITION error code.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

pub struct Handler {
    db: Arc<Database>,
    advertised: Advertised,
}

impl Handler {
    pub fn new(db: Arc<Database>, advertised: Advertised) -> Handler {
        Handler { db, advertised }
    }

    /// The response frame to `request`, if it gets one.
    pub async fn handle(&self, request: Request) -> Result<Option<Bytes>, Closed> {
        let Request {
            key,
            version,
            header,
            body,
        } = request;
        let response = match body {
            RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions()),
            RequestKind::Metadata(request) => {
                ResponseKind::Metadata(self.metadata(&request, version))
            }
            other => {
                // `codec::decode` lets through only what `apis` serves.
                return Err(Closed(format!("{key:?} is not handled: {other:?}")));
            }
        };
        codec::encode(header.correlation_id, key, version, &response)
            .map(Some)
            .map_err(|e| Closed(format!("encoding a {key:?} v{version} response: {e}")))
    }

    fn metadata(&self, request: &MetadataRequest, version: i16) -> MetadataResponse {
        let topics = self.db.kafka_topics();
        // No topic list (or, before version 1, an empty one) asks for every topic.
        let wanted: Option<Vec<&str>> = match &request.topics {
            None => None,
            Some(list) if list.is_empty() && version == 0 => None,
            Some(list) => Some(
                list.iter()
                    .map(|t| t.name.as_ref().map_or("", |n| n.0.as_str()))
                    .collect(),
            ),
        };
        let topics = match wanted {
            None => topics.iter().map(|t| topic_metadata(t, version)).collect(),
            Some(names) => names
                .into_iter()
                .map(|name| match topics.iter().find(|t| t.name == name) {
                    Some(topic) => topic_metadata(topic, version),
                    None => MetadataResponseTopic::default()
                        .with_error_code(UNKNOWN_TOPIC_OR_PARTITION)
                        .with_name(Some(TopicName(StrBytes::from_string(name.to_string())))),
                })
                .collect(),
        };
        let broker = MetadataResponseBroker::default()
            .with_node_id(BrokerId(NODE_ID))
            .with_host(StrBytes::from_string(self.advertised.host.clone()))
            .with_port(i32::from(self.advertised.port));
        let mut response = MetadataResponse::default()
            .with_brokers(vec![broker])
            .with_topics(topics);
        if version >= 1 {
            response = response.with_controller_id(BrokerId(NODE_ID));
        }
        if version >= 2 {
            response = response.with_cluster_id(Some(StrBytes::from_string(self.db.cluster_id())));
        }
        response
    }
}

fn api_versions() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(apis::advertised())
}

/// A topic and its partitions, each led by this node.
fn topic_metadata(topic: &KafkaTopic, version: i16) -> MetadataResponseTopic {
    let partitions = (0..topic.partitions as i32)
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(BrokerId(NODE_ID))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(NODE_ID)])
                .with_isr_nodes(vec![BrokerId(NODE_ID)])
        })
        .collect();
    let mut metadata = MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_partitions(partitions);
    if version >= 10 {
        metadata = metadata.with_topic_id(Uuid::from_bytes(topic.id));
    }
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn metadata_encodes_in_every_served_version_without_tagged_fields() {
        let topic = KafkaTopic {
            name: "clicks".into(),
            id: [9u8; 16],
            partitions: 3,
        };
        for version in apis::versions(ApiKey::Metadata).unwrap() {
            let response = MetadataResponse::default()
                .with_brokers(vec![
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(NODE_ID))
                        .with_host(StrBytes::from_static_str("localhost"))
                        .with_port(9092),
                ])
                .with_topics(vec![topic_metadata(&topic, version)]);
            let frame = codec::encode(
                5,
                ApiKey::Metadata,
                version,
                &ResponseKind::Metadata(response),
            )
            .unwrap_or_else(|e| panic!("v{version}: {e}"));
            let mut body = frame.slice(4..);
            assert_eq!(body.get_i32(), 5);
            if ApiKey::Metadata.response_header_version(version) >= 1 {
                assert_eq!(body.get_u8(), 0, "no tagged fields in the header");
            }
            let back = MetadataResponse::decode(&mut body, version).unwrap();
            assert_eq!(back.topics[0].partitions.len(), 3);
            assert!(back.unknown_tagged_fields.is_empty());
        }
    }

    #[test]
    fn api_versions_has_no_tagged_fields_in_any_version() {
        // librdkafka before 2.2 mis-skips tagged fields: the v3 and v4 responses must end
        // with an empty tag buffer, and the header is version 0 for every version.
        for version in apis::versions(ApiKey::ApiVersions).unwrap() {
            let frame = codec::encode(
                1,
                ApiKey::ApiVersions,
                version,
                &ResponseKind::ApiVersions(api_versions()),
            )
            .unwrap();
            assert_eq!(ApiKey::ApiVersions.response_header_version(version), 0);
            if version >= 3 {
                assert_eq!(frame[frame.len() - 1], 0, "v{version}: an empty tag buffer");
                // throttle_time_ms (4 bytes) and the empty tag buffer close the body.
                assert_eq!(&frame[frame.len() - 5..frame.len() - 1], &[0, 0, 0, 0]);
            }
        }
    }
}
