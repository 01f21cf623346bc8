//! What the Kafka front end (`crate::kafka`) asks of the database: the cluster's identity,
//! its topics as Kafka clients see them, produce (with idempotent producers), fetch and
//! offsets by time. The front end knows nothing below this module.
//!
//! A Kafka topic is a Runnel topic: a schemaless one stores each record's key, value,
//! timestamp and headers as they came; a stream's topic decodes values with the stream's
//! `value_format` and keys as its KEY columns ([`crate::ingest::formats`]), and encodes them
//! back on fetch. A producer names the partition, as Kafka's producers do (with Kafka's
//! murmur2 partitioner, the same key lands where SQL's writes put it).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, ListArray, RecordBatch, TimestampMillisecondArray,
};
use base64::Engine as _;

use super::Database;
use crate::catalog::{CatalogData, CleanupPolicy, Principal, Relation, StreamDef, TopicDef};
use crate::groups::Reader;
use crate::ingest::WriteTarget;
use crate::ingest::records::Given;
use crate::ingest::{formats, key};
use crate::producers::{ProducerBatch, Sequence};
use crate::sql::parser::{CreateTopic, Drop, ObjectKind, OptionValue};
use crate::storage::{
    AppendedRange, Offset, PartitionBatch, PartitionId, ReadOptions, StorageError, Topic, TopicId,
    now_ms,
};

/// A topic or stream, as a Kafka topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaTopic {
    pub name: String,
    /// Stable for the topic's life; a topic dropped and created again gets a new one.
    pub id: [u8; 16],
    pub partitions: u32,
}

/// Records as Kafka has them, one row per record in offset order.
#[derive(Debug, Clone, PartialEq)]
pub struct Records {
    /// Milliseconds since the epoch.
    pub timestamps: Vec<i64>,
    pub keys: BinaryArray,
    pub values: BinaryArray,
    /// Of [`crate::storage::headers_type`].
    pub headers: ListArray,
}

impl Records {
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// The first `n` records.
    pub fn prefix(&self, n: usize) -> Records {
        Records {
            timestamps: self.timestamps[..n].to_vec(),
            keys: self.keys.slice(0, n),
            values: self.values.slice(0, n),
            headers: self.headers.slice(0, n),
        }
    }

    /// Bytes of keys, values and headers: about what the records take on the wire.
    pub fn size(&self) -> usize {
        self.keys.value_data().len()
            + self.values.value_data().len()
            + self.headers.get_buffer_memory_size()
            + self.len() * 8
    }
}

/// The most a produced batch may take once decompressed (Kafka's `message.max.bytes`, which
/// Kafka applies to the compressed batch).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The longest metadata string a committed offset may carry (Kafka's
/// `offset.metadata.max.bytes`).
pub const MAX_OFFSET_METADATA_BYTES: usize = 4096;

/// One configuration entry as DescribeConfigs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    pub name: &'static str,
    pub value: String,
    /// Not set for this resource: the default (or fixed) value.
    pub default: bool,
    pub kind: ConfigType,
}

/// Kafka's config types (DescribeConfigs v3+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    List = 7,
}

/// Kafka's error codes, as this module answers them.
pub mod code {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_CONFIG: i16 = 40;
    pub const INVALID_REQUEST: i16 = 42;
    pub const POLICY_VIOLATION: i16 = 44;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const UNKNOWN_PRODUCER_ID: i16 = 59;
    pub const INVALID_RECORD: i16 = 87;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
}

/// One partition's records in a Produce request.
#[derive(Debug)]
pub struct ProduceBatch {
    pub partition: i32,
    pub records: Records,
    /// The producer's id, epoch and sequence, for an idempotent producer.
    pub producer: Option<ProducerBatch>,
    /// The records take the broker's time (a batch flagged LogAppendTime).
    pub log_append_time: bool,
}

/// What became of one partition's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    pub code: i16,
    pub message: Option<String>,
    /// The offset of the first record (-1 on error).
    pub base_offset: i64,
    /// The append time, for LogAppendTime records (-1 otherwise).
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
    /// For INVALID_RECORD: which records (by index in the batch) and why.
    pub record_errors: Vec<(i32, String)>,
}

impl Produced {
    fn failed(code: i16, message: impl Into<String>) -> Produced {
        Produced {
            code,
            message: Some(message.into()),
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
            record_errors: vec![],
        }
    }
}

/// One partition's records for a Fetch response.
#[derive(Debug)]
pub struct Fetched {
    /// The topic read (ids are never reused, unlike names).
    pub topic: TopicId,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Record batches in offset order.
    pub batches: Vec<FetchedBatch>,
}

/// Records read for a Kafka consumer.
#[derive(Debug)]
pub struct FetchedBatch {
    /// The first record's offset.
    pub base_offset: i64,
    /// Each record's offset after the first's, when compaction removed records between
    /// them; `None` when they follow one another.
    pub deltas: Option<Vec<u32>>,
    pub records: Records,
}

/// A topic's name and, per partition, its committed offset and that offset's metadata.
pub type TopicOffsets = (String, Vec<(i32, i64, String)>);

/// An offset a Kafka consumer commits.
pub struct OffsetToCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub metadata: Option<String>,
}

/// A staged batch, with the indexes of its topic and of itself in the request.
type Indexed = (usize, usize, Staged);

/// The storage batch a produced batch becomes.
struct Staged {
    batch: PartitionBatch,
    producer: Option<ProducerBatch>,
    now_ms: i64,
    log_append_time: bool,
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

    /// Claims `group` for Kafka consumers while what this returns is held; `None` if a SQL
    /// cursor reads it (a group has one kind of consumer at a time).
    pub fn kafka_claim_group(&self, group: &str) -> Option<Box<dyn std::any::Any + Send>> {
        let reading = self
            .tables
            .groups
            .start_reading(group, Reader::Kafka)
            .ok()?;
        Some(Box::new(reading))
    }

    /// The id of the topic Kafka clients know as `name`, if there is one.
    pub fn kafka_topic_id(&self, name: &str) -> Option<TopicId> {
        let data = self.catalog().snapshot();
        data.topics
            .get(name)
            .filter(|t| t.internal.is_none())
            .map(|t| t.id)
    }

    /// Appends the records of a Produce request, topic by topic and partition by partition;
    /// each partition's batch is appended whole or refused whole. An idempotent producer's
    /// batch is checked against what it sent before and appended with its new state in one
    /// commit; a batch it sent before is answered with the offset it got.
    ///
    /// Returns once the appends are queued, behind those of every request before it: the
    /// future returned resolves to the answers once they are durable. Batches of idempotent
    /// producers are appended before it returns (their sequences are checked against the
    /// state the previous batch left).
    pub async fn kafka_produce(
        &self,
        topics: Vec<(String, Vec<ProduceBatch>)>,
    ) -> impl Future<Output = Vec<Vec<Produced>>> + '_ {
        let data = self.catalog().snapshot();
        let mut answers: Vec<Vec<Produced>> = vec![];
        let mut staged: Vec<Indexed> = vec![];
        for (t, (name, batches)) in topics.into_iter().enumerate() {
            let mut answered = vec![];
            for (b, batch) in batches.into_iter().enumerate() {
                match stage(&data, &name, batch) {
                    Ok(stage) => {
                        staged.push((t, b, stage));
                        answered.push(Produced::failed(code::NONE, ""));
                    }
                    Err(failed) => answered.push(failed),
                }
            }
            answers.push(answered);
        }
        // Batches without a producer in one append; each producer's in one commit.
        let (plain, idempotent): (Vec<_>, Vec<_>) = staged
            .into_iter()
            .partition(|(_, _, s)| s.producer.is_none());
        let batches: Vec<PartitionBatch> = plain.iter().map(|(_, _, s)| s.batch.clone()).collect();
        let appended = self.log().queue_append(batches.clone()).await;
        let mut by_producer: Vec<(i64, Vec<Indexed>)> = vec![];
        for item in idempotent {
            let id = item.2.producer.expect("idempotent").id;
            match by_producer.iter_mut().find(|(p, _)| *p == id) {
                Some((_, items)) => items.push(item),
                None => by_producer.push((id, vec![item])),
            }
        }
        for (id, items) in by_producer {
            for ((t, b), answer) in self.produce_idempotent(id, items).await {
                answers[t][b] = answer;
            }
        }
        async move {
            if !plain.is_empty() {
                let outcome = appended.await;
                let offsets = outcome
                    .as_ref()
                    .map(|ranges| base_offsets(&batches, ranges));
                for (i, (t, b, stage)) in plain.iter().enumerate() {
                    answers[*t][*b] = self.appended(&offsets, i, stage);
                }
            }
            answers
        }
    }

    /// Appends one producer's batches: each checked against its sequences, those that come
    /// next appended with the producer's new state in one commit.
    async fn produce_idempotent(
        &self,
        id: i64,
        items: Vec<Indexed>,
    ) -> Vec<((usize, usize), Produced)> {
        let mut answers = vec![];
        let mut locked = match self.producers.lock(id).await {
            Ok(locked) => locked,
            Err(e) => {
                return items
                    .iter()
                    .map(|(t, b, _)| {
                        (
                            (*t, *b),
                            Produced::failed(code::UNKNOWN_SERVER_ERROR, e.to_string()),
                        )
                    })
                    .collect();
            }
        };
        let mut next = vec![];
        for (t, b, stage) in items {
            let producer = stage.producer.expect("idempotent");
            let (topic, partition) = (stage.batch.topic, stage.batch.partition);
            let verdict =
                crate::producers::check(locked.state.as_ref(), topic, partition, &producer);
            let answer = match verdict {
                Sequence::Next => {
                    let state = locked.state.as_mut().expect("a known producer");
                    if producer.epoch > state.epoch {
                        state.epoch = producer.epoch;
                        state.partitions.clear();
                    }
                    next.push((t, b, stage));
                    continue;
                }
                Sequence::Duplicate(offset) => Produced {
                    code: code::NONE,
                    message: None,
                    base_offset: offset.0 as i64,
                    log_append_time_ms: -1,
                    log_start_offset: self.log().log_start(topic, partition).0 as i64,
                    record_errors: vec![],
                },
                Sequence::OutOfOrder { expected } => Produced::failed(
                    code::OUT_OF_ORDER_SEQUENCE_NUMBER,
                    format!(
                        "producer {id} sent sequence {} where {expected} comes next",
                        producer.first_sequence
                    ),
                ),
                Sequence::Fenced { current } => Produced::failed(
                    code::INVALID_PRODUCER_EPOCH,
                    format!(
                        "producer {id} epoch {} is fenced by epoch {current}",
                        producer.epoch
                    ),
                ),
                Sequence::Unknown => Produced::failed(
                    code::UNKNOWN_PRODUCER_ID,
                    format!("producer id {id} is unknown (never issued, or expired)"),
                ),
            };
            answers.push(((t, b), answer));
        }
        if next.is_empty() {
            return answers;
        }
        let batches: Vec<PartitionBatch> = next.iter().map(|(_, _, s)| s.batch.clone()).collect();
        let sequences = next
            .iter()
            .map(|(_, _, s)| {
                let producer = s.producer.expect("idempotent");
                (
                    s.batch.topic,
                    s.batch.partition,
                    producer.first_sequence,
                    producer.last_sequence(),
                )
            })
            .collect();
        let outcome = self
            .log()
            .commit_after(batches.clone(), locked.after_append(sequences))
            .await;
        drop(locked);
        let offsets = outcome
            .as_ref()
            .map(|ranges| base_offsets(&batches, ranges));
        for (i, (t, b, stage)) in next.iter().enumerate() {
            answers.push(((*t, *b), self.appended(&offsets, i, stage)));
        }
        answers
    }

    /// What an append's outcome means for the `i`th staged batch.
    fn appended(
        &self,
        offsets: &Result<Vec<Offset>, &StorageError>,
        i: usize,
        stage: &Staged,
    ) -> Produced {
        let (topic, partition) = (stage.batch.topic, stage.batch.partition);
        match offsets {
            Ok(offsets) => Produced {
                code: code::NONE,
                message: None,
                base_offset: offsets[i].0 as i64,
                log_append_time_ms: if stage.log_append_time {
                    stage.now_ms
                } else {
                    -1
                },
                log_start_offset: self.log().log_start(topic, partition).0 as i64,
                record_errors: vec![],
            },
            Err(StorageError::TooLarge(why)) => {
                Produced::failed(code::MESSAGE_TOO_LARGE, why.clone())
            }
            Err(e) => Produced::failed(code::KAFKA_STORAGE_ERROR, e.to_string()),
        }
    }

    /// Gives a producer its id and epoch (InitProducerId); `current` is the id and epoch
    /// it has, if it asks for its next epoch.
    pub async fn kafka_init_producer(
        &self,
        current: Option<(i64, i16)>,
    ) -> crate::error::Result<(i64, i16)> {
        self.producers.init(current).await
    }

    /// Records of `topic`'s `partition` from `offset`, about `max_bytes` of them (at least
    /// one batch if there is one, however large, so a consumer always progresses).
    pub async fn kafka_fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Fetched, (i16, String)> {
        let data = self.catalog().snapshot();
        let (def, stored) = self.kafka_partition(&data, topic, partition)?;
        let partition_id = PartitionId(partition as u32);
        let stream = data.stream_of_topic(def).cloned();
        let log_start = self.log().log_start(def.id, partition_id);
        let end = self.log().snapshot().high_watermark(def.id, partition_id);
        let mut fetched = Fetched {
            topic: def.id,
            high_watermark: end.0 as i64,
            log_start_offset: log_start.0 as i64,
            batches: vec![],
        };
        if offset < log_start.0 as i64 || offset > end.0 as i64 {
            return Err((
                code::OFFSET_OUT_OF_RANGE,
                format!("offset {offset} is outside {log_start}..={end}"),
            ));
        }
        if offset == end.0 as i64 || max_bytes == 0 {
            return Ok(fetched);
        }
        let partition = stored
            .partition(partition_id)
            .map_err(|e| (code::UNKNOWN_TOPIC_OR_PARTITION, e.to_string()))?
            .clone();
        let options = ReadOptions {
            schema: stored.spec.schema.clone(),
            projection: None,
            min_timestamp_ms: None,
            max_timestamp_ms: None,
        };
        let from = Offset(offset as u64);
        let read = tokio::task::spawn_blocking(move || {
            let mut batches = vec![];
            let mut bytes = 0;
            for read in partition.reader(from..end, options) {
                let read = read?;
                bytes += read.batch.get_array_memory_size();
                batches.push(read);
                if bytes >= max_bytes {
                    break;
                }
            }
            Ok::<_, StorageError>(batches)
        })
        .await
        .map_err(|e| (code::UNKNOWN_SERVER_ERROR, e.to_string()))?
        .map_err(|e| (code::KAFKA_STORAGE_ERROR, e.to_string()))?;
        let mut size = 0;
        for batch in read {
            let records = to_records(stream.as_ref(), &batch.batch)
                .map_err(|e| (code::UNKNOWN_SERVER_ERROR, e))?;
            size += records.size();
            let base = batch.base_offset.0;
            let deltas = batch
                .offsets
                .as_ref()
                .map(|offsets| offsets.iter().map(|o| (o - base) as u32).collect());
            fetched.batches.push(FetchedBatch {
                base_offset: base as i64,
                deltas,
                records,
            });
            if size >= max_bytes {
                break;
            }
        }
        Ok(fetched)
    }

    /// Kafka's ListOffsets for one partition: the offset of the first record whose
    /// timestamp is at least `timestamp` (-1: the end; -2: the start; -3: the record with
    /// the largest timestamp), and that record's timestamp; (-1, -1) if there is none.
    pub async fn kafka_list_offset(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<(i64, i64), (i16, String)> {
        let data = self.catalog().snapshot();
        let (def, stored) = self.kafka_partition(&data, topic, partition)?;
        let partition_id = PartitionId(partition as u32);
        let log_start = self.log().log_start(def.id, partition_id);
        let end = self.log().snapshot().high_watermark(def.id, partition_id);
        match timestamp {
            -1 => return Ok((end.0 as i64, -1)),
            -2 => return Ok((log_start.0 as i64, -1)),
            _ => {}
        }
        let partition = stored
            .partition(partition_id)
            .map_err(|e| (code::UNKNOWN_TOPIC_OR_PARTITION, e.to_string()))?
            .clone();
        let column = stored.spec.schema.fields().len() - 3;
        let options = ReadOptions {
            schema: stored.spec.schema.clone(),
            projection: Some(vec![column]),
            min_timestamp_ms: (timestamp >= 0).then_some(timestamp),
            max_timestamp_ms: None,
        };
        tokio::task::spawn_blocking(move || {
            // (offset, timestamp) of the answer so far.
            let mut found: Option<(i64, i64)> = None;
            for read in partition.reader(log_start..end, options) {
                let read = read?;
                let times = read
                    .batch
                    .column(0)
                    .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
                for (i, time) in times.values().iter().enumerate() {
                    let at = read.offset(i).0 as i64;
                    if timestamp >= 0 && *time >= timestamp {
                        return Ok((at, *time));
                    }
                    if timestamp == -3 && found.is_none_or(|(_, t)| *time > t) {
                        found = Some((at, *time));
                    }
                }
            }
            Ok(found.unwrap_or((-1, -1)))
        })
        .await
        .map_err(|e| (code::UNKNOWN_SERVER_ERROR, e.to_string()))?
        .map_err(|e: StorageError| (code::KAFKA_STORAGE_ERROR, e.to_string()))
    }

    /// Creates a schemaless topic for a Kafka client (auto-creation or CreateTopics) with
    /// `partitions` and Kafka's topic `configs` that Runnel has (`retention.ms`,
    /// `retention.bytes`, `segment.bytes`, `compression.type`, `cleanup.policy=delete`);
    /// others are refused. With `validate_only`, checks and does
    /// nothing. An error is a Kafka error code and message.
    pub async fn kafka_create_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: &[(String, Option<String>)],
        validate_only: bool,
    ) -> Result<(), (i16, String)> {
        let mut options = vec![(
            "partitions".to_string(),
            OptionValue::Number(partitions.to_string()),
        )];
        for (config, value) in configs {
            let value = value.as_deref().unwrap_or_default();
            let option = match (config.as_str(), value) {
                ("cleanup.policy", policy @ ("delete" | "compact")) => {
                    Some(("cleanup_policy", OptionValue::String(policy.into())))
                }
                ("delete.retention.ms", ms) => {
                    Some(("delete_retention_ms", OptionValue::Number(ms.into())))
                }
                ("retention.ms" | "retention.bytes", "-1") => None,
                ("retention.ms", ms) => Some(("retention_ms", OptionValue::Number(ms.into()))),
                ("retention.bytes", b) => Some(("retention_bytes", OptionValue::Number(b.into()))),
                ("segment.bytes", b) => Some(("segment_bytes", OptionValue::Number(b.into()))),
                ("compression.type", "producer" | "uncompressed") => None,
                ("compression.type", codec @ ("lz4" | "zstd")) => {
                    Some(("compression", OptionValue::String(codec.into())))
                }
                _ => {
                    return Err((
                        code::INVALID_CONFIG,
                        format!(
                            "topic config {config}={value} is not supported (retention.ms, retention.bytes, segment.bytes, compression.type lz4/zstd/producer, cleanup.policy delete/compact and delete.retention.ms are)"
                        ),
                    ));
                }
            };
            if let Some((option, value)) = option {
                options.push((option.to_string(), value));
            }
        }
        if validate_only {
            crate::catalog::validate_name("topic", name)
                .map_err(|e| (code::INVALID_TOPIC_EXCEPTION, e.to_string()))?;
            if self.catalog().snapshot().topics.contains_key(name) {
                return Err((
                    code::TOPIC_ALREADY_EXISTS,
                    format!("topic \"{name}\" already exists"),
                ));
            }
            return Ok(());
        }
        let create = CreateTopic {
            name: name.to_string(),
            if_not_exists: false,
            options,
        };
        let mut notices = vec![];
        self.create_topic(create, &Principal::superuser(), &mut notices)
            .await
            .map(|_| ())
            .map_err(|e| (kafka_code(&e, code::INVALID_CONFIG), e.to_string()))
    }

    /// Deletes a topic for a Kafka client (DeleteTopics): a schemaless topic as `DROP
    /// TOPIC` would, a stream's topic as `DROP STREAM` would (refused while views or
    /// queries read it).
    pub async fn kafka_delete_topic(&self, name: &str) -> Result<(), (i16, String)> {
        let data = self.catalog().snapshot();
        let Some(topic) = data.topics.get(name).filter(|t| t.internal.is_none()) else {
            return Err((
                code::UNKNOWN_TOPIC_OR_PARTITION,
                format!("topic \"{name}\" does not exist"),
            ));
        };
        let (kind, object) = match &topic.stream {
            Some(stream) => (ObjectKind::Stream, stream.clone()),
            None => (ObjectKind::Topic, name.to_string()),
        };
        let drop = Drop {
            kind,
            if_exists: false,
            names: vec![object],
        };
        let mut notices = vec![];
        self.drop_objects(drop, &Principal::superuser(), &mut notices)
            .await
            .map(|_| ())
            .map_err(|e| (kafka_code(&e, code::POLICY_VIOLATION), e.to_string()))
    }

    /// A topic's configuration as Kafka's DescribeConfigs shows it: Kafka's topic configs,
    /// with Runnel's values for those it has and the fixed ones a single node implies.
    pub fn kafka_topic_configs(&self, name: &str) -> Result<Vec<KafkaConfig>, (i16, String)> {
        let data = self.catalog().snapshot();
        let topic = data
            .topics
            .get(name)
            .filter(|t| t.internal.is_none())
            .ok_or_else(|| {
                (
                    code::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("topic \"{name}\" does not exist"),
                )
            })?;
        let set = |name, value: Option<String>, kind| KafkaConfig {
            name,
            default: value.is_none(),
            value: value.unwrap_or_else(|| "-1".to_string()),
            kind,
        };
        let fixed = |name, value: &str, kind| KafkaConfig {
            name,
            value: value.to_string(),
            default: true,
            kind,
        };
        let limit = |v: Option<u64>| v.map(|v| v.to_string());
        let compact = topic.cleanup_policy == CleanupPolicy::Compact;
        Ok(vec![
            KafkaConfig {
                name: "cleanup.policy",
                default: !compact,
                value: topic.cleanup_policy.name().to_string(),
                kind: ConfigType::List,
            },
            KafkaConfig {
                name: "delete.retention.ms",
                default: topic.delete_retention_ms.is_none(),
                value: topic
                    .delete_retention_ms
                    .unwrap_or(crate::catalog::DEFAULT_DELETE_RETENTION_MS)
                    .to_string(),
                kind: ConfigType::Long,
            },
            match topic.compression {
                crate::storage::Compression::None => {
                    fixed("compression.type", "producer", ConfigType::String)
                }
                other => set(
                    "compression.type",
                    Some(other.name().to_string()),
                    ConfigType::String,
                ),
            },
            fixed(
                "max.message.bytes",
                &MAX_MESSAGE_BYTES.to_string(),
                ConfigType::Int,
            ),
            fixed("message.timestamp.type", "CreateTime", ConfigType::String),
            fixed("min.insync.replicas", "1", ConfigType::Int),
            set(
                "retention.bytes",
                limit(topic.retention_bytes),
                ConfigType::Long,
            ),
            set("retention.ms", limit(topic.retention_ms), ConfigType::Long),
            set(
                "segment.bytes",
                Some(topic.segment_bytes.to_string()),
                ConfigType::Int,
            ),
            fixed(
                "unclean.leader.election.enable",
                "false",
                ConfigType::Boolean,
            ),
        ])
    }

    /// The node's configuration as Kafka's DescribeConfigs shows a broker's: the settings a
    /// client or tool asks about, with Runnel's values.
    pub fn kafka_broker_configs(
        &self,
        auto_create_topics: bool,
        num_partitions: u32,
    ) -> Vec<KafkaConfig> {
        let fixed = |name, value: String, kind| KafkaConfig {
            name,
            value,
            default: true,
            kind,
        };
        vec![
            fixed(
                "auto.create.topics.enable",
                auto_create_topics.to_string(),
                ConfigType::Boolean,
            ),
            fixed("default.replication.factor", "1".into(), ConfigType::Int),
            fixed(
                "group.initial.rebalance.delay.ms",
                "3000".into(),
                ConfigType::Int,
            ),
            fixed("log.retention.ms", "-1".into(), ConfigType::Long),
            fixed(
                "message.max.bytes",
                MAX_MESSAGE_BYTES.to_string(),
                ConfigType::Int,
            ),
            fixed("min.insync.replicas", "1".into(), ConfigType::Int),
            fixed(
                "num.partitions",
                num_partitions.to_string(),
                ConfigType::Int,
            ),
            fixed(
                "offsets.topic.replication.factor",
                "1".into(),
                ConfigType::Short,
            ),
            fixed(
                "transaction.state.log.replication.factor",
                "1".into(),
                ConfigType::Short,
            ),
        ]
    }

    /// Commits a consumer group's offsets (the next record to read, per partition), in the
    /// store SQL subscriptions use; one commit record for all of them. The answer has a
    /// Kafka error code per partition, in order.
    pub async fn kafka_commit_offsets(&self, group: &str, offsets: &[OffsetToCommit]) -> Vec<i16> {
        let data = self.catalog().snapshot();
        let mut codes = vec![code::NONE; offsets.len()];
        let mut valid = vec![];
        for (i, wanted) in offsets.iter().enumerate() {
            let metadata = wanted.metadata.clone().unwrap_or_default();
            let (partition, offset) = (wanted.partition, wanted.offset);
            match data
                .topics
                .get(&wanted.topic)
                .filter(|t| t.internal.is_none())
            {
                _ if metadata.len() > MAX_OFFSET_METADATA_BYTES => {
                    codes[i] = code::OFFSET_METADATA_TOO_LARGE
                }
                Some(def)
                    if partition >= 0 && (partition as u32) < def.partitions && offset >= 0 =>
                {
                    let at = (def.id, PartitionId(partition as u32), Offset(offset as u64));
                    valid.push((at, metadata));
                }
                Some(_) if offset < 0 => codes[i] = code::OFFSET_OUT_OF_RANGE,
                _ => codes[i] = code::UNKNOWN_TOPIC_OR_PARTITION,
            }
        }
        if !valid.is_empty()
            && let Err(e) = self.tables.groups.commit_with_metadata(group, valid).await
        {
            tracing::warn!(group, error = %e, "committing a Kafka consumer group's offsets");
            let failed = match e {
                crate::error::Error::Plan { .. } => code::INVALID_GROUP_ID,
                _ => code::KAFKA_STORAGE_ERROR,
            };
            for c in codes.iter_mut().filter(|c| **c == code::NONE) {
                *c = failed;
            }
        }
        codes
    }

    /// A consumer group's committed offsets: of the partitions named, or (`None`) of every
    /// partition it has committed. -1 for a partition without one.
    pub fn kafka_committed(
        &self,
        group: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<TopicOffsets>, i16> {
        let data = self.catalog().snapshot();
        let committed = self.tables.groups.committed(group).map_err(|e| {
            tracing::warn!(group, error = %e, "reading a consumer group's offsets");
            code::INVALID_GROUP_ID
        })?;
        let offset_of = |topic: &TopicDef, partition: i32| -> (i32, i64, String) {
            let at = (topic.id, PartitionId(partition as u32));
            let committed = committed.as_ref();
            let offset = committed.and_then(|c| c.offsets.get(&at));
            let metadata = committed.and_then(|c| c.metadata.get(&at));
            (
                partition,
                offset.map_or(-1, |o| o.0 as i64),
                metadata.cloned().unwrap_or_default(),
            )
        };
        Ok(match wanted {
            Some(topics) => topics
                .into_iter()
                .map(|(name, partitions)| {
                    let offsets = partitions
                        .into_iter()
                        .map(|p| match data.topics.get(&name) {
                            Some(topic) if p >= 0 => offset_of(topic, p),
                            _ => (p, -1, String::new()),
                        })
                        .collect();
                    (name, offsets)
                })
                .collect(),
            None => data
                .topics
                .values()
                .filter(|t| t.internal.is_none())
                .filter_map(|topic| {
                    let offsets: Vec<(i32, i64, String)> = committed
                        .as_ref()?
                        .of_topic(topic.id)
                        .map(|(p, _)| offset_of(topic, p.0 as i32))
                        .collect();
                    (!offsets.is_empty()).then(|| (topic.name.clone(), offsets))
                })
                .collect(),
        })
    }

    /// The consumer groups with committed offsets (SQL subscriptions among them).
    pub fn kafka_stored_groups(&self) -> Vec<String> {
        self.tables
            .groups
            .all()
            .into_iter()
            .map(|g| g.group)
            .collect()
    }

    /// The catalog's topic `name` and the log's, if `partition` is one of its partitions.
    fn kafka_partition<'a>(
        &self,
        data: &'a CatalogData,
        name: &str,
        partition: i32,
    ) -> Result<(&'a TopicDef, Arc<Topic>), (i16, String)> {
        let unknown = || {
            (
                code::UNKNOWN_TOPIC_OR_PARTITION,
                format!("this server does not host partition {partition} of topic \"{name}\""),
            )
        };
        let def = data
            .topics
            .get(name)
            .filter(|t| t.internal.is_none())
            .ok_or_else(unknown)?;
        if partition < 0 || partition as u32 >= def.partitions {
            return Err(unknown());
        }
        let stored = self.log().topic(def.id).ok_or_else(unknown)?;
        Ok((def, stored))
    }
}

/// The Kafka error code for a DDL error; `otherwise` for refusals without a closer one.
fn kafka_code(error: &crate::error::Error, otherwise: i16) -> i16 {
    match error {
        crate::error::Error::AlreadyExists(_) => code::TOPIC_ALREADY_EXISTS,
        e if matches!(e.sqlstate(), "42602" | "42939") => code::INVALID_TOPIC_EXCEPTION,
        e if e.sqlstate() == "22023" => code::INVALID_PARTITIONS,
        e if e.sqlstate() == "42P01" => code::UNKNOWN_TOPIC_OR_PARTITION,
        e if e.sqlstate().starts_with("XX") || e.sqlstate().starts_with("58") => {
            code::KAFKA_STORAGE_ERROR
        }
        _ => otherwise,
    }
}

/// The offset each batch got, from an append's ranges (a partition's ranges are in the
/// order of its batches).
fn base_offsets(batches: &[PartitionBatch], ranges: &[AppendedRange]) -> Vec<Offset> {
    let mut used = vec![false; ranges.len()];
    batches
        .iter()
        .map(|b| {
            let i = (0..ranges.len()).find(|i| {
                !used[*i] && ranges[*i].topic == b.topic && ranges[*i].partition == b.partition
            });
            i.map_or(Offset(0), |i| {
                used[i] = true;
                ranges[i].base_offset
            })
        })
        .collect()
}

/// A produced batch as records of its topic, or why it is refused.
fn stage(data: &CatalogData, name: &str, batch: ProduceBatch) -> Result<Staged, Produced> {
    let unknown = || {
        Produced::failed(
            code::UNKNOWN_TOPIC_OR_PARTITION,
            format!(
                "this server does not host partition {} of topic \"{name}\"",
                batch.partition
            ),
        )
    };
    let topic = data
        .topics
        .get(name)
        .filter(|t| t.internal.is_none())
        .ok_or_else(unknown)?;
    if batch.partition < 0 || batch.partition as u32 >= topic.partitions {
        return Err(unknown());
    }
    let relation = match data.stream_of_topic(topic) {
        Some(stream) => Relation::Stream(stream, topic),
        None => Relation::Topic(topic),
    };
    let target = WriteTarget::of(data, &relation).ok_or_else(unknown)?;
    let records = batch.records;
    if topic.cleanup_policy == CleanupPolicy::Compact
        && data.stream_of_topic(topic).is_none_or(|s| !s.is_table())
        && let Some(i) = (0..records.len()).find(|i| records.keys.is_null(*i))
    {
        // As Kafka: compaction keeps the latest record of each key, so a record needs one.
        return Err(Produced::failed(
            code::INVALID_RECORD,
            format!(
                "record {i} has no key: topic \"{name}\" is compacted, and a record of a compacted topic needs a key"
            ),
        ));
    }
    let rows = match &relation {
        Relation::Stream(stream, _) => formats::decode(stream, &records.keys, &records.values)
            .map_err(|errors| invalid_records(stream, errors))?,
        _ => RecordBatch::try_new(
            target.row_schema.clone(),
            vec![
                Arc::new(records.keys.clone()) as ArrayRef,
                Arc::new(records.values.clone()),
            ],
        )
        .map_err(|e| Produced::failed(code::UNKNOWN_SERVER_ERROR, e.to_string()))?,
    };
    let now_ms = now_ms();
    let timestamps: ArrayRef =
        Arc::new(TimestampMillisecondArray::from(if batch.log_append_time {
            vec![now_ms; records.len()]
        } else {
            records
                .timestamps
                .iter()
                .map(|t| if *t < 0 { now_ms } else { *t })
                .collect()
        }));
    let table = match &relation {
        Relation::Stream(stream, _) if stream.is_table() => Some(stream),
        _ => None,
    };
    if let Some(stream) = table {
        // A table's key lives in one partition, the one SQL writes it to, or the latest
        // row per key would depend on which partition is read.
        let keys = &records.keys;
        if let Some(i) = (0..records.len()).find(|i| keys.is_null(*i)) {
            return Err(Produced::failed(
                code::INVALID_RECORD,
                format!(
                    "record {i} has no key: a record of table \"{}\" is keyed by its primary key (or its row id)",
                    stream.name
                ),
            ));
        }
        if let Some(i) = (0..records.len()).find(|i| {
            keys.is_valid(*i)
                && key::partition_for_key(keys.value(*i), topic.partitions)
                    != batch.partition as u32
        }) {
            return Err(Produced::failed(
                code::INVALID_RECORD,
                format!(
                    "record {i} belongs to partition {} of table \"{}\": a table's records go to the partition of their key (the default partitioner's)",
                    key::partition_for_key(keys.value(i), topic.partitions),
                    stream.name
                ),
            ));
        }
    }
    let given = Given {
        now_ms,
        timestamps: Some(timestamps),
        headers: Some(Arc::new(records.headers.clone())),
        // A table's record with a null value is a tombstone, as in a compacted topic.
        deleted: table.map(|_| {
            (0..records.len())
                .map(|i| Some(records.values.is_null(i)))
                .collect()
        }),
        // A table without a primary key keeps the producer's key as the row's id.
        keys: table
            .filter(|t| t.key_columns.is_empty())
            .map(|_| records.keys.clone()),
    };
    crate::ingest::writer::refuse_nul(&target, &rows)
        .and_then(|()| target.records(&rows, &given))
        .map(|records| Staged {
            batch: PartitionBatch {
                topic: topic.id,
                partition: PartitionId(batch.partition as u32),
                records,
            },
            producer: batch.producer,
            now_ms,
            log_append_time: batch.log_append_time,
        })
        .map_err(|e| Produced::failed(code::INVALID_RECORD, e.to_string()))
}

/// INVALID_RECORD for a batch with records that do not fit `stream`.
fn invalid_records(stream: &StreamDef, errors: Vec<formats::RecordError>) -> Produced {
    let first = errors
        .first()
        .map_or(String::new(), |(i, why)| format!(": record {i}: {why}"));
    Produced {
        record_errors: errors.into_iter().map(|(i, why)| (i as i32, why)).collect(),
        ..Produced::failed(
            code::INVALID_RECORD,
            format!(
                "records do not fit stream \"{}\"{first}; nothing was appended",
                stream.name
            ),
        )
    }
}

/// Stored records as Kafka records: a topic's values as they are, a stream's encoded in
/// its value format.
fn to_records(stream: Option<&StreamDef>, batch: &RecordBatch) -> Result<Records, String> {
    let n = batch.num_columns();
    let (timestamps, keys, headers) = (
        batch.column(n - 3),
        batch.column(n - 2),
        batch.column(n - 1),
    );
    let values = match stream {
        Some(stream) => {
            let rows = batch
                .project(&(0..n - 3).collect::<Vec<_>>())
                .map_err(|e| e.to_string())?;
            let values = formats::encode_values(stream, &rows)?;
            if stream.is_table() {
                // A tombstone's value is null.
                let deleted = rows.column(stream.columns.len()).as_boolean();
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v.filter(|_| !(deleted.is_valid(i) && deleted.value(i))))
                    .collect()
            } else {
                values
            }
        }
        None => batch.column(0).as_binary::<i32>().clone(),
    };
    Ok(Records {
        timestamps: timestamps
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>()
            .values()
            .to_vec(),
        keys: keys.as_binary::<i32>().clone(),
        values,
        headers: headers.as_list::<i32>().clone(),
    })
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
