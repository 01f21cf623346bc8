//! Answers requests: one function per API, from the request's message to the response's.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterRequest, DescribeClusterResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatResponse,
    InitProducerIdRequest, InitProducerIdResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProduceRequest, ProduceResponse,
    ProducerId, RequestHeader, RequestKind, ResponseKind, SyncGroupRequest, SyncGroupResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

mod fetch;

pub use fetch::ReadAhead;

use super::codec::{self, Closed, Request};
use super::coordinator::{self, Coordinator, Join};
use super::records;
use super::{Advertised, NODE_ID, Settings, apis};
use crate::db::Database;
use crate::db::kafka::{KafkaTopic, OffsetToCommit, ProduceBatch, Produced, TopicOffsets, code};
use crate::producers::ProducerBatch;

/// Kafka's UNKNOWN_TOPIC_OR_PARTITION error code.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = code::UNKNOWN_TOPIC_OR_PARTITION;
/// Kafka's TRANSACTIONAL_ID_AUTHORIZATION_FAILED: transactions are not served.
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
/// Kafka's INVALID_REQUEST.
const INVALID_REQUEST: i16 = code::INVALID_REQUEST;
/// Kafka's UNSUPPORTED_ENDPOINT_TYPE (DescribeCluster for controllers).
const UNSUPPORTED_ENDPOINT_TYPE: i16 = 114;
/// Kafka's UNKNOWN_TOPIC_ID (DeleteTopics by id).
const UNKNOWN_TOPIC_ID: i16 = 100;
/// Kafka's FENCED_LEADER_EPOCH: an epoch newer than the partition's (always 0 here).
const FENCED_LEADER_EPOCH: i16 = 74;
/// The most a produced batch may decompress to.
const MAX_BATCH_BYTES: usize = crate::db::kafka::MAX_MESSAGE_BYTES;

pub struct Handler {
    db: Arc<Database>,
    advertised: Advertised,
    auto_create_topics: bool,
    num_partitions: u32,
    coordinator: Arc<Coordinator>,
}

/// What a request gets.
pub enum Answer<'a> {
    /// Its response frame.
    Now(Bytes),
    /// A Produce whose records are queued for the log.
    Queued(Queued<'a>),
}

/// The response frame (or none) of a Produce, once the records it queued are durable.
pub type Queued<'a> = Pin<Box<dyn Future<Output = Result<Option<Bytes>, Closed>> + Send + 'a>>;

/// Who sent a request: the connection's peer and the header's client id.
pub struct Client<'a> {
    pub host: String,
    pub id: &'a str,
}

impl Handler {
    /// Needs a Tokio runtime: the group coordinator's deadlines run on it.
    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }

    pub fn new(db: Arc<Database>, settings: Settings) -> Handler {
        let coordinator = Coordinator::start({
            let db = db.clone();
            Box::new(move |group| db.kafka_claim_group(group))
        });
        Handler {
            db,
            advertised: settings.advertised,
            auto_create_topics: settings.auto_create_topics,
            num_partitions: settings.num_partitions,
            coordinator,
        }
    }

    /// The response frame to `request`, if it gets one: at once, or, for a Produce, once
    /// the records it queued for the log are durable.
    pub async fn handle(
        &self,
        request: Request,
        peer: std::net::SocketAddr,
        ahead: &mut ReadAhead,
    ) -> Result<Answer<'_>, Closed> {
        let Request {
            key,
            version,
            header,
            body,
        } = request;
        let client = Client {
            host: format!("/{}", peer.ip()),
            id: header.client_id.as_deref().unwrap_or(""),
        };
        let response = match body {
            RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions()),
            RequestKind::Metadata(request) => {
                ResponseKind::Metadata(self.metadata(&request, version).await)
            }
            RequestKind::Produce(request) => {
                let acks = request.acks;
                let produced = self.produce(request).await;
                return Ok(Answer::Queued(Box::pin(async move {
                    let response = produced.await;
                    if acks == 0 {
                        // A producer with acks=0 reads no response.
                        return Ok(None);
                    }
                    encode(&header, key, version, &ResponseKind::Produce(response)).map(Some)
                })));
            }
            RequestKind::Fetch(request) => ResponseKind::Fetch(self.fetch(request, ahead).await),
            RequestKind::ListOffsets(request) => {
                ResponseKind::ListOffsets(self.list_offsets(request, version).await)
            }
            RequestKind::InitProducerId(request) => {
                ResponseKind::InitProducerId(self.init_producer_id(request).await)
            }
            RequestKind::FindCoordinator(request) => {
                ResponseKind::FindCoordinator(self.find_coordinator(request, version))
            }
            RequestKind::JoinGroup(request) => {
                ResponseKind::JoinGroup(self.join_group(request, version, &client).await)
            }
            RequestKind::SyncGroup(request) => {
                ResponseKind::SyncGroup(self.sync_group(request).await)
            }
            RequestKind::Heartbeat(request) => ResponseKind::Heartbeat(
                HeartbeatResponse::default().with_error_code(self.coordinator.heartbeat(
                    &request.group_id.0,
                    &request.member_id,
                    request.generation_id,
                )),
            ),
            RequestKind::LeaveGroup(request) => {
                ResponseKind::LeaveGroup(self.leave_group(request, version))
            }
            RequestKind::OffsetCommit(request) => {
                ResponseKind::OffsetCommit(self.offset_commit(request).await)
            }
            RequestKind::OffsetFetch(request) => {
                ResponseKind::OffsetFetch(self.offset_fetch(request, version))
            }
            RequestKind::ListGroups(request) => ResponseKind::ListGroups(self.list_groups(request)),
            RequestKind::DescribeGroups(request) => {
                ResponseKind::DescribeGroups(self.describe_groups(request))
            }
            RequestKind::CreateTopics(request) => {
                ResponseKind::CreateTopics(self.create_topics(request, version).await)
            }
            RequestKind::DeleteTopics(request) => {
                ResponseKind::DeleteTopics(self.delete_topics(request, version).await)
            }
            RequestKind::DescribeConfigs(request) => {
                ResponseKind::DescribeConfigs(self.describe_configs(request, version))
            }
            RequestKind::DescribeCluster(request) => {
                ResponseKind::DescribeCluster(self.describe_cluster(request))
            }
            RequestKind::OffsetForLeaderEpoch(request) => {
                ResponseKind::OffsetForLeaderEpoch(self.offset_for_leader_epoch(request).await)
            }
            other => {
                // `codec::decode` lets through only what `apis` serves.
                return Err(Closed(format!("{key:?} is not handled: {other:?}")));
            }
        };
        encode(&header, key, version, &response).map(Answer::Now)
    }

    /// Queues the appends of a Produce request; the future returned answers it.
    async fn produce(&self, request: ProduceRequest) -> impl Future<Output = ProduceResponse> {
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
        let produced = self.db.kafka_produce(topics).await;
        async move {
            let mut produced = produced.await.into_iter();
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
    }

    async fn create_topics(
        &self,
        request: CreateTopicsRequest,
        version: i16,
    ) -> CreateTopicsResponse {
        let mut results = vec![];
        for topic in request.topics {
            let name = topic.name.0.to_string();
            let partitions = match topic.num_partitions {
                -1 => Ok(self.num_partitions),
                n if n > 0 => Ok(n as u32),
                n => Err((code::INVALID_PARTITIONS, format!("{n} partitions"))),
            };
            let outcome = match partitions {
                Err(e) => Err(e),
                Ok(_) if !matches!(topic.replication_factor, -1 | 1) => Err((
                    code::INVALID_REPLICATION_FACTOR,
                    format!(
                        "replication factor {}: this is a single node, so 1 (or -1 for the default)",
                        topic.replication_factor
                    ),
                )),
                Ok(_) if !topic.assignments.is_empty() => Err((
                    code::INVALID_REQUEST,
                    "manual replica assignments are not supported".to_string(),
                )),
                Ok(partitions) => {
                    let configs: Vec<(String, Option<String>)> = topic
                        .configs
                        .iter()
                        .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                        .collect();
                    self.db
                        .kafka_create_topic(&name, partitions, &configs, request.validate_only)
                        .await
                }
            };
            let mut result = CreatableTopicResult::default().with_name(topic.name);
            match outcome {
                Ok(()) => {
                    if let Some(created) =
                        self.db.kafka_topics().into_iter().find(|t| t.name == name)
                    {
                        result = result
                            .with_topic_id(Uuid::from_bytes(created.id))
                            .with_num_partitions(created.partitions as i32);
                    } else {
                        result = result.with_num_partitions(topic.num_partitions.max(1));
                    }
                    result = result.with_replication_factor(1);
                }
                Err((code, message)) => {
                    result = result
                        .with_error_code(code)
                        .with_num_partitions(-1)
                        .with_replication_factor(-1);
                    if version >= 1 {
                        result = result.with_error_message(Some(StrBytes::from_string(message)));
                    }
                }
            }
            results.push(result);
        }
        CreateTopicsResponse::default().with_topics(results)
    }

    async fn delete_topics(
        &self,
        request: DeleteTopicsRequest,
        version: i16,
    ) -> DeleteTopicsResponse {
        // Up to v5 topics are named in `topic_names`; from v6, in `topics` (by name or id).
        let known = self.db.kafka_topics();
        let wanted: Vec<(Option<String>, Uuid)> = if version >= 6 {
            request
                .topics
                .into_iter()
                .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
                .collect()
        } else {
            request
                .topic_names
                .into_iter()
                .map(|n| (Some(n.0.to_string()), Uuid::nil()))
                .collect()
        };
        let mut responses = vec![];
        for (name, id) in wanted {
            let name = name.or_else(|| {
                known
                    .iter()
                    .find(|t| Uuid::from_bytes(t.id) == id)
                    .map(|t| t.name.clone())
            });
            let topic_id = name
                .as_ref()
                .and_then(|n| known.iter().find(|t| t.name == *n))
                .map_or(id, |t| Uuid::from_bytes(t.id));
            let outcome = match &name {
                Some(name) => self.db.kafka_delete_topic(name).await,
                None => Err((UNKNOWN_TOPIC_ID, format!("no topic has id {id}"))),
            };
            let mut result = DeletableTopicResult::default()
                .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
                .with_topic_id(topic_id);
            if let Err((code, message)) = outcome {
                result = result
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(message)));
            }
            responses.push(result);
        }
        DeleteTopicsResponse::default().with_responses(responses)
    }

    /// With one leader epoch (0) for every partition, the end of an epoch is the end of
    /// the log.
    async fn offset_for_leader_epoch(
        &self,
        request: OffsetForLeaderEpochRequest,
    ) -> OffsetForLeaderEpochResponse {
        let mut topics = vec![];
        for topic in request.topics {
            let mut partitions = vec![];
            for wanted in topic.partitions {
                let mut answer = EpochEndOffset::default().with_partition(wanted.partition);
                match self
                    .db
                    .kafka_list_offset(&topic.topic.0, wanted.partition, -1)
                    .await
                {
                    Ok((end, _)) if wanted.leader_epoch <= 0 => {
                        answer = answer.with_leader_epoch(0).with_end_offset(end);
                    }
                    Ok(_) => {
                        answer = answer.with_error_code(FENCED_LEADER_EPOCH);
                    }
                    Err((code, _)) => answer = answer.with_error_code(code),
                }
                partitions.push(answer);
            }
            topics.push(
                OffsetForLeaderTopicResult::default()
                    .with_topic(topic.topic)
                    .with_partitions(partitions),
            );
        }
        OffsetForLeaderEpochResponse::default().with_topics(topics)
    }

    fn describe_configs(
        &self,
        request: DescribeConfigsRequest,
        version: i16,
    ) -> DescribeConfigsResponse {
        const TOPIC: i8 = 2;
        const BROKER: i8 = 4;
        let results = request
            .resources
            .into_iter()
            .map(|resource| {
                let configs = match resource.resource_type {
                    TOPIC => self.db.kafka_topic_configs(&resource.resource_name),
                    BROKER
                        if resource.resource_name.is_empty()
                            || *resource.resource_name == *NODE_ID.to_string() =>
                    {
                        Ok(self
                            .db
                            .kafka_broker_configs(self.auto_create_topics, self.num_partitions))
                    }
                    BROKER => Err((
                        INVALID_REQUEST,
                        format!("there is no broker {}", resource.resource_name),
                    )),
                    other => Err((
                        INVALID_REQUEST,
                        format!(
                            "resource type {other} has no configs here (topics and the broker do)"
                        ),
                    )),
                };
                let result = DescribeConfigsResult::default()
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name);
                match configs {
                    Ok(configs) => {
                        let keys = resource.configuration_keys;
                        let source = if resource.resource_type == TOPIC {
                            1
                        } else {
                            4
                        };
                        result.with_configs(
                            configs
                                .into_iter()
                                .filter(|c| {
                                    keys.as_ref()
                                        .is_none_or(|k| k.iter().any(|k| **k == *c.name))
                                })
                                .map(|c| {
                                    let mut entry = DescribeConfigsResourceResult::default()
                                        .with_name(StrBytes::from_static_str(c.name))
                                        .with_value(Some(StrBytes::from_string(c.value)))
                                        // AlterConfigs is not served: SQL changes them.
                                        .with_read_only(true)
                                        .with_config_source(if c.default { 5 } else { source })
                                        .with_documentation(None);
                                    if version >= 3 {
                                        entry = entry.with_config_type(c.kind as i8);
                                    }
                                    entry
                                })
                                .collect(),
                        )
                    }
                    Err((code, message)) => result
                        .with_error_code(code)
                        .with_error_message(Some(StrBytes::from_string(message))),
                }
            })
            .collect();
        DescribeConfigsResponse::default().with_results(results)
    }

    fn describe_cluster(&self, request: DescribeClusterRequest) -> DescribeClusterResponse {
        // Endpoint type 1 is brokers; 2 (controllers) is what KRaft controllers answer.
        if request.endpoint_type > 1 {
            return DescribeClusterResponse::default()
                .with_error_code(UNSUPPORTED_ENDPOINT_TYPE)
                .with_endpoint_type(request.endpoint_type);
        }
        DescribeClusterResponse::default()
            .with_endpoint_type(1)
            .with_cluster_id(StrBytes::from_string(self.db.cluster_id()))
            .with_controller_id(BrokerId(NODE_ID))
            .with_brokers(vec![
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(NODE_ID))
                    .with_host(StrBytes::from_string(self.advertised.host.clone()))
                    .with_port(i32::from(self.advertised.port)),
            ])
    }

    fn find_coordinator(
        &self,
        request: FindCoordinatorRequest,
        version: i16,
    ) -> FindCoordinatorResponse {
        let host = StrBytes::from_string(self.advertised.host.clone());
        let port = i32::from(self.advertised.port);
        // Key type 0 is a group; 1, a transactional id, is not served.
        let error = if request.key_type == 0 {
            code::NONE
        } else {
            TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        };
        if version >= 4 {
            let coordinators = request
                .coordinator_keys
                .into_iter()
                .map(|key| {
                    CoordinatorEntry::default()
                        .with_key(key)
                        .with_node_id(BrokerId(NODE_ID))
                        .with_host(host.clone())
                        .with_port(port)
                        .with_error_code(error)
                })
                .collect();
            return FindCoordinatorResponse::default().with_coordinators(coordinators);
        }
        FindCoordinatorResponse::default()
            .with_error_code(error)
            .with_node_id(BrokerId(NODE_ID))
            .with_host(host)
            .with_port(port)
    }

    async fn join_group(
        &self,
        request: JoinGroupRequest,
        version: i16,
        client: &Client<'_>,
    ) -> JoinGroupResponse {
        let session = Duration::from_millis(request.session_timeout_ms.max(0) as u64);
        // Before version 1 the rebalance timeout is the session timeout.
        let rebalance = if version >= 1 {
            Duration::from_millis(request.rebalance_timeout_ms.max(0) as u64)
        } else {
            session
        };
        let joined = self
            .coordinator
            .join(Join {
                group: request.group_id.0.to_string(),
                member_id: request.member_id.to_string(),
                instance_id: request.group_instance_id.map(|i| i.to_string()),
                client_id: client.id.to_string(),
                client_host: client.host.clone(),
                session_timeout: session,
                rebalance_timeout: rebalance,
                protocol_type: request.protocol_type.to_string(),
                protocols: request
                    .protocols
                    .into_iter()
                    .map(|p| (p.name.to_string(), p.metadata))
                    .collect(),
                requires_member_id: version >= 4,
            })
            .await;
        JoinGroupResponse::default()
            .with_error_code(joined.error)
            .with_generation_id(joined.generation)
            .with_protocol_type(joined.protocol_type.map(StrBytes::from_string))
            .with_protocol_name(Some(StrBytes::from_string(
                joined.protocol.unwrap_or_default(),
            )))
            .with_leader(StrBytes::from_string(joined.leader))
            .with_member_id(StrBytes::from_string(joined.member_id))
            .with_members(
                joined
                    .members
                    .into_iter()
                    .map(|m| {
                        JoinGroupResponseMember::default()
                            .with_member_id(StrBytes::from_string(m.member_id))
                            .with_group_instance_id(m.instance_id.map(StrBytes::from_string))
                            .with_metadata(m.metadata)
                    })
                    .collect(),
            )
    }

    async fn sync_group(&self, request: SyncGroupRequest) -> SyncGroupResponse {
        let synced = self
            .coordinator
            .sync(
                &request.group_id.0,
                &request.member_id,
                request.generation_id,
                request
                    .assignments
                    .into_iter()
                    .map(|a| (a.member_id.to_string(), a.assignment))
                    .collect(),
            )
            .await;
        SyncGroupResponse::default()
            .with_error_code(synced.error)
            .with_protocol_type(synced.protocol_type.map(StrBytes::from_string))
            .with_protocol_name(synced.protocol.map(StrBytes::from_string))
            .with_assignment(synced.assignment)
    }

    fn leave_group(&self, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
        let group = &request.group_id.0;
        if version < 3 {
            let codes = self
                .coordinator
                .leave(group, &[request.member_id.to_string()]);
            return LeaveGroupResponse::default().with_error_code(codes[0]);
        }
        let ids: Vec<String> = request
            .members
            .iter()
            .map(|m| m.member_id.to_string())
            .collect();
        let codes = self.coordinator.leave(group, &ids);
        let members = request
            .members
            .into_iter()
            .zip(codes)
            .map(|(m, code)| {
                MemberResponse::default()
                    .with_member_id(m.member_id)
                    .with_group_instance_id(m.group_instance_id)
                    .with_error_code(code)
            })
            .collect();
        LeaveGroupResponse::default().with_members(members)
    }

    async fn offset_commit(&self, request: OffsetCommitRequest) -> OffsetCommitResponse {
        let group = request.group_id.0.to_string();
        let allowed = self.coordinator.may_commit(
            &group,
            &request.member_id,
            request.generation_id_or_member_epoch,
        );
        let offsets: Vec<OffsetToCommit> = request
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| OffsetToCommit {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                })
            })
            .collect();
        let codes = if allowed == code::NONE {
            self.db.kafka_commit_offsets(&group, &offsets).await
        } else {
            vec![allowed; offsets.len()]
        };
        let mut codes = codes.into_iter();
        let topics = request
            .topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(codes.next().unwrap_or(allowed))
                    })
                    .collect();
                OffsetCommitResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect();
        OffsetCommitResponse::default().with_topics(topics)
    }

    fn offset_fetch(&self, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
        // From version 8 a request names several groups, each with its topics.
        if version >= 8 {
            let groups = request
                .groups
                .into_iter()
                .map(|g| {
                    let wanted = g.topics.map(|topics| {
                        topics
                            .into_iter()
                            .map(|t| (t.name.0.to_string(), t.partition_indexes))
                            .collect()
                    });
                    let answer = OffsetFetchResponseGroup::default();
                    match self.db.kafka_committed(&g.group_id.0, wanted) {
                        Ok(topics) => {
                            answer.with_topics(topics.into_iter().map(group_topic).collect())
                        }
                        Err(code) => answer.with_error_code(code),
                    }
                    .with_group_id(g.group_id)
                })
                .collect();
            return OffsetFetchResponse::default().with_groups(groups);
        }
        let wanted = request.topics.map(|topics| {
            topics
                .into_iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes))
                .collect()
        });
        match self.db.kafka_committed(&request.group_id.0, wanted) {
            Ok(topics) => OffsetFetchResponse::default()
                .with_topics(topics.into_iter().map(single_group_topic).collect()),
            Err(code) => OffsetFetchResponse::default().with_error_code(code),
        }
    }

    fn list_groups(&self, request: ListGroupsRequest) -> ListGroupsResponse {
        let mut groups: Vec<(String, String, String)> = self
            .coordinator
            .list()
            .into_iter()
            .map(|(name, state, protocol_type)| (name, state.name().to_string(), protocol_type))
            .collect();
        // Groups known only by their committed offsets (SQL subscriptions among them).
        for name in self.db.kafka_stored_groups() {
            if !groups.iter().any(|(g, _, _)| *g == name) {
                groups.push((
                    name,
                    coordinator::State::Empty.name().to_string(),
                    "consumer".into(),
                ));
            }
        }
        groups.sort();
        let listed = groups
            .into_iter()
            .filter(|(_, state, _)| {
                request.states_filter.is_empty()
                    || request
                        .states_filter
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(state))
            })
            .map(|(name, state, protocol_type)| {
                ListedGroup::default()
                    .with_group_id(GroupId(StrBytes::from_string(name)))
                    .with_protocol_type(StrBytes::from_string(protocol_type))
                    .with_group_state(StrBytes::from_string(state))
            })
            .collect();
        ListGroupsResponse::default().with_groups(listed)
    }

    fn describe_groups(&self, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
        let stored = self.db.kafka_stored_groups();
        let groups = request
            .groups
            .into_iter()
            .map(|id| {
                let described = self.coordinator.describe(&id.0);
                let state = if described.state == coordinator::State::Dead
                    && stored.iter().any(|g| *g == *id.0)
                {
                    coordinator::State::Empty
                } else {
                    described.state
                };
                DescribedGroup::default()
                    .with_group_id(id)
                    .with_group_state(StrBytes::from_static_str(state.name()))
                    .with_protocol_type(StrBytes::from_string(described.protocol_type))
                    .with_protocol_data(StrBytes::from_string(described.protocol))
                    .with_members(
                        described
                            .members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(StrBytes::from_string(m.member_id))
                                    .with_group_instance_id(
                                        m.instance_id.map(StrBytes::from_string),
                                    )
                                    .with_client_id(StrBytes::from_string(m.client_id))
                                    .with_client_host(StrBytes::from_string(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    )
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(groups)
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
                        answer = answer.with_offset(offset).with_timestamp(timestamp);
                        // Leader epochs are version 4's (encoding one earlier is an error).
                        if offset >= 0 && version >= 4 {
                            answer = answer.with_leader_epoch(0);
                        }
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

    async fn metadata(&self, request: &MetadataRequest, version: i16) -> MetadataResponse {
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
        // Unknown topics asked for by name are created, if allowed (always before v4).
        let mut refused: Vec<(String, i16)> = vec![];
        if let Some(names) = &wanted
            && self.auto_create_topics
            && (version < 4 || request.allow_auto_topic_creation)
        {
            let known = self.db.kafka_topics();
            for name in names
                .iter()
                .filter(|n| !known.iter().any(|t| t.name == **n))
            {
                if let Err((code, message)) = self
                    .db
                    .kafka_create_topic(name, self.num_partitions, &[], false)
                    .await
                {
                    tracing::debug!(topic = name, %message, "not auto-creating a topic");
                    refused.push((name.to_string(), code));
                }
            }
        }
        let topics = self.db.kafka_topics();
        let topics = match wanted {
            None => topics.iter().map(|t| topic_metadata(t, version)).collect(),
            Some(names) => names
                .into_iter()
                .map(|name| match topics.iter().find(|t| t.name == name) {
                    Some(topic) => topic_metadata(topic, version),
                    None => MetadataResponseTopic::default()
                        .with_error_code(
                            refused
                                .iter()
                                .find(|(n, _)| n == name)
                                .map_or(UNKNOWN_TOPIC_OR_PARTITION, |(_, code)| *code),
                        )
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

/// The frame of `response` to the request whose header is `header`.
fn encode(
    header: &RequestHeader,
    key: ApiKey,
    version: i16,
    response: &ResponseKind,
) -> Result<Bytes, Closed> {
    codec::encode(header.correlation_id, key, version, response).map_err(|e| {
        // A field set that the version lacks: the server's bug, not the client's.
        tracing::error!(api = ?key, version, error = %e, "a response could not be encoded in its request's version");
        Closed(format!("encoding a {key:?} v{version} response: {e}"))
    })
}

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

/// A topic's committed offsets, as OffsetFetch v8+ answers for each group.
fn group_topic((name, partitions): TopicOffsets) -> OffsetFetchResponseTopics {
    let partitions = partitions.into_iter().map(|(p, offset, metadata)| {
        OffsetFetchResponsePartitions::default()
            .with_partition_index(p)
            .with_committed_offset(offset)
            .with_metadata(Some(StrBytes::from_string(metadata)))
    });
    OffsetFetchResponseTopics::default()
        .with_name(TopicName(StrBytes::from_string(name)))
        .with_partitions(partitions.collect())
}

/// A topic's committed offsets, as OffsetFetch before v8 answers for its one group.
fn single_group_topic((name, partitions): TopicOffsets) -> OffsetFetchResponseTopic {
    let partitions = partitions.into_iter().map(|(p, offset, metadata)| {
        OffsetFetchResponsePartition::default()
            .with_partition_index(p)
            .with_committed_offset(offset)
            .with_metadata(Some(StrBytes::from_string(metadata)))
    });
    OffsetFetchResponseTopic::default()
        .with_name(TopicName(StrBytes::from_string(name)))
        .with_partitions(partitions.collect())
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
