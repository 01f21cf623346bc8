//! Answers requests: one function per API, from the request's message to the response's.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse, InitProducerIdRequest,
    InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, ProducerId, RequestKind, ResponseKind,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::codec::{self, Closed, Request};
use super::records::{self, Codec};
use super::{Advertised, NODE_ID, apis};
use crate::db::Database;
use crate::db::kafka::{KafkaTopic, ProduceBatch, Produced, code};
use crate::producers::ProducerBatch;

/// Kafka's UNKNOWN_TOPIC_OR_PARTITION error code.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = code::UNKNOWN_TOPIC_OR_PARTITION;
/// Kafka's TRANSACTIONAL_ID_AUTHORIZATION_FAILED: transactions are not served.
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
/// The most a produced batch may decompress to.
const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;
/// The longest a Fetch waits for records, whatever it asks.
const MAX_WAIT: Duration = Duration::from_secs(60);

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
            RequestKind::Produce(request) => {
                let acks = request.acks;
                let response = self.produce(request).await;
                if acks == 0 {
                    // A producer with acks=0 reads no response.
                    return Ok(None);
                }
                ResponseKind::Produce(response)
            }
            RequestKind::Fetch(request) => ResponseKind::Fetch(self.fetch(request).await),
            RequestKind::ListOffsets(request) => {
                ResponseKind::ListOffsets(self.list_offsets(request, version).await)
            }
            RequestKind::InitProducerId(request) => {
                ResponseKind::InitProducerId(self.init_producer_id(request).await)
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

    async fn produce(&self, request: ProduceRequest) -> ProduceResponse {
        let transactional = request.transactional_id.is_some();
        let mut topics = vec![];
        // Per topic, per partition: an early answer, or the index of the batch to append.
        let mut plan: Vec<(TopicName, Vec<Planned>)> = vec![];
        for topic in request.topic_data {
            let mut batches = vec![];
            let mut partitions = vec![];
            for data in topic.partition_data {
                let batch = if transactional {
                    Err(refused(
                        TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                        "transactions are not supported (idempotent producers are)",
                    ))
                } else {
                    produce_batch(data.index, data.records.as_deref().unwrap_or_default())
                };
                partitions.push((
                    data.index,
                    batch.map(|batch| {
                        batches.push(batch);
                        batches.len() - 1
                    }),
                ));
            }
            topics.push((topic.name.0.to_string(), batches));
            plan.push((topic.name, partitions));
        }
        let mut produced = self.db.kafka_produce(topics).await.into_iter();
        let responses = plan
            .into_iter()
            .map(|(name, partitions)| {
                let mut answers: Vec<Option<Produced>> = produced
                    .next()
                    .unwrap_or_default()
                    .into_iter()
                    .map(Some)
                    .collect();
                let partition_responses = partitions
                    .into_iter()
                    .map(|(index, planned)| {
                        let answer = match planned {
                            Ok(i) => answers[i].take().expect("one answer per batch"),
                            Err(early) => early,
                        };
                        produce_response(index, answer)
                    })
                    .collect();
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(partition_responses)
            })
            .collect();
        ProduceResponse::default().with_responses(responses)
    }

    /// Answers when records reach `min_bytes`, or after `max_wait_ms`, waking on each
    /// commit to the log (never polling on a timer).
    async fn fetch(&self, request: FetchRequest) -> FetchResponse {
        let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        let mut commits = self.db.log().subscribe_commits();
        loop {
            commits.borrow_and_update();
            let (response, bytes, errors) = self.fetch_once(&request).await;
            if errors || bytes >= request.min_bytes.max(0) as usize {
                return response;
            }
            tokio::select! {
                changed = commits.changed() => if changed.is_err() { return response },
                _ = tokio::time::sleep_until(deadline) => {
                    return self.fetch_once(&request).await.0;
                }
            }
        }
    }

    /// One pass over the partitions a Fetch names: the response, its record bytes, and
    /// whether any partition has an error.
    async fn fetch_once(&self, request: &FetchRequest) -> (FetchResponse, usize, bool) {
        let max_bytes = if request.max_bytes > 0 {
            request.max_bytes as usize
        } else {
            usize::MAX
        };
        let mut used = 0usize;
        let mut errors = false;
        let mut topics = vec![];
        for topic in &request.topics {
            let mut partitions = vec![];
            for wanted in &topic.partitions {
                let room = max_bytes.saturating_sub(used);
                let limit = (wanted.partition_max_bytes.max(0) as usize).min(room);
                let mut data = PartitionData::default().with_partition_index(wanted.partition);
                // Past the response's size, nothing more is read; the first records of the
                // response are sent whatever their size (KIP-74).
                let limit = if used == 0 && limit == 0 && wanted.partition_max_bytes > 0 {
                    1
                } else {
                    limit
                };
                match self
                    .db
                    .kafka_fetch(&topic.topic.0, wanted.partition, wanted.fetch_offset, limit)
                    .await
                {
                    Ok(fetched) => {
                        let mut out = BytesMut::new();
                        for (base, records) in &fetched.batches {
                            records::encode_batch(&mut out, *base, records, Codec::None);
                        }
                        used += out.len();
                        data = data
                            .with_high_watermark(fetched.high_watermark)
                            .with_last_stable_offset(fetched.high_watermark)
                            .with_log_start_offset(fetched.log_start_offset)
                            .with_records(Some(out.freeze()));
                    }
                    Err((code, message)) => {
                        tracing::debug!(topic = %topic.topic.0, partition = wanted.partition, %message, "fetch refused");
                        errors = true;
                        data = data.with_error_code(code).with_high_watermark(-1);
                    }
                }
                partitions.push(data);
            }
            topics.push(
                FetchableTopicResponse::default()
                    .with_topic(topic.topic.clone())
                    .with_partitions(partitions),
            );
        }
        (
            FetchResponse::default().with_responses(topics),
            used,
            errors,
        )
    }

    async fn list_offsets(&self, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
        let mut topics = vec![];
        for topic in request.topics {
            let mut partitions = vec![];
            for wanted in topic.partitions {
                let mut answer = ListOffsetsPartitionResponse::default()
                    .with_partition_index(wanted.partition_index);
                // The max-timestamp query (-3) is version 7's.
                let timestamp = if wanted.timestamp == -3 && version < 7 {
                    -1
                } else {
                    wanted.timestamp
                };
                match self
                    .db
                    .kafka_list_offset(&topic.name.0, wanted.partition_index, timestamp)
                    .await
                {
                    Ok((offset, timestamp)) => {
                        answer = answer
                            .with_offset(offset)
                            .with_timestamp(timestamp)
                            .with_leader_epoch(if offset >= 0 { 0 } else { -1 });
                    }
                    Err((code, _)) => answer = answer.with_error_code(code).with_offset(-1),
                }
                partitions.push(answer);
            }
            topics.push(
                ListOffsetsTopicResponse::default()
                    .with_name(topic.name)
                    .with_partitions(partitions),
            );
        }
        ListOffsetsResponse::default().with_topics(topics)
    }

    async fn init_producer_id(&self, request: InitProducerIdRequest) -> InitProducerIdResponse {
        if request.transactional_id.is_some() {
            return InitProducerIdResponse::default()
                .with_error_code(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
        }
        let current =
            (request.producer_id.0 >= 0).then_some((request.producer_id.0, request.producer_epoch));
        match self.db.kafka_init_producer(current).await {
            Ok((id, epoch)) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch),
            Err(e) => {
                tracing::warn!(error = %e, "issuing a producer id");
                InitProducerIdResponse::default()
                    .with_error_code(code::KAFKA_STORAGE_ERROR)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
            }
        }
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

/// A partition of a Produce request: an early answer, or the index of its batch among those
/// the database appends.
type Planned = (i32, Result<usize, Produced>);

fn refused(code: i16, message: &str) -> Produced {
    Produced {
        code,
        message: Some(message.to_string()),
        base_offset: -1,
        log_append_time_ms: -1,
        log_start_offset: -1,
        record_errors: vec![],
    }
}

/// The batch a Produce request carries for one partition, decoded.
fn produce_batch(partition: i32, bytes: &[u8]) -> Result<ProduceBatch, Produced> {
    let (header, records) = records::decode_batch(bytes, MAX_BATCH_BYTES)
        .map_err(|e| refused(e.code(), &e.to_string()))?;
    if header.transactional() || header.control() {
        return Err(refused(
            TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            "transactions are not supported (idempotent producers are)",
        ));
    }
    let producer = (header.producer_id >= 0).then_some(ProducerBatch {
        id: header.producer_id,
        epoch: header.producer_epoch,
        first_sequence: header.base_sequence,
        records: header.record_count,
    });
    Ok(ProduceBatch {
        partition,
        records,
        producer,
        log_append_time: header.log_append_time(),
    })
}

fn produce_response(index: i32, answer: Produced) -> PartitionProduceResponse {
    if answer.code != code::NONE {
        tracing::debug!(partition = index, code = answer.code, message = ?answer.message, "produce refused");
    }
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(answer.code)
        .with_base_offset(answer.base_offset)
        .with_log_append_time_ms(answer.log_append_time_ms)
        .with_log_start_offset(answer.log_start_offset)
        .with_error_message(answer.message.map(StrBytes::from_string))
        .with_record_errors(
            answer
                .record_errors
                .into_iter()
                .map(|(i, why)| {
                    BatchIndexAndErrorMessage::default()
                        .with_batch_index(i)
                        .with_batch_index_error_message(Some(StrBytes::from_string(why)))
                })
                .collect(),
        )
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
