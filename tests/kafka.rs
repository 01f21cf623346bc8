//! Kafka clients against the real server: framing, headers and versions over a raw socket
//! (kafka-protocol's own client encoders), bad frames, and kafka-python asking for topics.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, MetadataRequest, MetadataResponse,
    ProduceRequest, RequestHeader, RequestKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

fn connect(bootstrap: &str) -> TcpStream {
    let stream = TcpStream::connect(bootstrap).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// One request's frame.
fn request_frame(key: ApiKey, version: i16, correlation_id: i32, body: RequestKind) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("runnel-test")))
        .encode(&mut out, key.request_header_version(version))
        .unwrap();
    body.encode(&mut out, version).unwrap();
    let length = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&length.to_be_bytes());
    out
}

/// Sends one request; the response's body (after its header).
fn call(stream: &mut TcpStream, key: ApiKey, version: i16, body: RequestKind) -> Bytes {
    let out = request_frame(key, version, version as i32 + 100, body);
    stream.write_all(&out).unwrap();
    let mut response = read_frame(stream).expect("a response");
    assert_eq!(
        response.get_i32(),
        version as i32 + 100,
        "the correlation id"
    );
    if key.response_header_version(version) >= 1 {
        assert_eq!(response.get_u8(), 0, "no tagged fields in the header");
    }
    response
}

fn read_frame(stream: &mut TcpStream) -> Option<Bytes> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).ok()?;
    let mut frame = vec![0u8; i32::from_be_bytes(length) as usize];
    stream.read_exact(&mut frame).ok()?;
    Some(Bytes::from(frame))
}

/// The connection was closed by the server (not timed out).
fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0))
        || matches!(stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

fn metadata_request(topics: Option<&[&str]>) -> RequestKind {
    RequestKind::Metadata(MetadataRequest::default().with_topics(topics.map(|names| {
        names
            .iter()
            .map(|n| {
                MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(n.to_string()))))
            })
            .collect()
    })))
}

/// A Produce request of one batch with `values`, to partition 0 of `topic`.
fn produce_request(topic: &str, values: &[String], acks: i16) -> RequestKind {
    let records: Vec<Record> = values
        .iter()
        .map(|value| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from(value.clone())),
            headers: Default::default(),
        })
        .collect();
    let mut batch = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut batch, records.iter(), &options).unwrap();
    let data = PartitionProduceData::default()
        .with_index(0)
        .with_records(Some(batch.freeze()));
    RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partition_data(vec![data]),
            ]),
    )
}

async fn setup(server: &common::Server) {
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM clicks (user_id BIGINT KEY, url TEXT) WITH (partitions = 4);
             CREATE TOPIC raw_events WITH (partitions = 2);
             CREATE MATERIALIZED VIEW per_url AS SELECT url, count(*) FROM clicks GROUP BY url",
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_and_metadata_in_old_and_new_versions() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    setup(&server).await;
    let mut kafka = connect(&server.kafka_bootstrap());

    for version in 0..=4 {
        let mut body = call(
            &mut kafka,
            ApiKey::ApiVersions,
            version,
            RequestKind::ApiVersions(
                ApiVersionsRequest::default()
                    .with_client_software_name(StrBytes::from_static_str("runnel-test"))
                    .with_client_software_version(StrBytes::from_static_str("1")),
            ),
        );
        let versions = ApiVersionsResponse::decode(&mut body, version).unwrap();
        assert_eq!(versions.error_code, 0);
        let metadata = versions
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::Metadata as i16)
            .expect("Metadata is served");
        assert_eq!((metadata.min_version, metadata.max_version), (0, 12));
    }
    // A newer ApiVersions than served: version 0's answer, error 35, and what is served.
    let mut out = BytesMut::new();
    out.put_i32(0);
    out.put_i16(ApiKey::ApiVersions as i16);
    out.put_i16(9);
    out.put_i32(77);
    out.put_i16(-1);
    out.put_slice(&[0, 0, 0, 0, 0]);
    let length = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&length.to_be_bytes());
    kafka.write_all(&out).unwrap();
    let mut response = read_frame(&mut kafka).unwrap();
    assert_eq!(response.get_i32(), 77);
    let versions = ApiVersionsResponse::decode(&mut response, 0).unwrap();
    assert_eq!(versions.error_code, 35);
    assert!(!versions.api_keys.is_empty());

    // Every topic and stream, not a view's state topic, each partition led by node 1.
    for version in [0, 1, 4, 9, 12] {
        let mut body = call(
            &mut kafka,
            ApiKey::Metadata,
            version,
            metadata_request(None),
        );
        let metadata = MetadataResponse::decode(&mut body, version).unwrap();
        assert_eq!(metadata.brokers.len(), 1, "v{version}");
        assert_eq!(metadata.brokers[0].node_id.0, 1);
        let mut topics: Vec<(String, usize)> = metadata
            .topics
            .iter()
            .map(|t| (t.name.as_ref().unwrap().0.to_string(), t.partitions.len()))
            .collect();
        topics.sort();
        assert_eq!(
            topics,
            vec![("clicks".to_string(), 4), ("raw_events".to_string(), 2)],
            "v{version}"
        );
        let partition = &metadata.topics[0].partitions[0];
        assert_eq!((partition.leader_id.0, partition.isr_nodes.len()), (1, 1));
        if version >= 2 {
            assert_eq!(metadata.cluster_id.as_ref().unwrap().len(), 22);
        }
    }
    // Named topics: one known, one not, which the client does not want created.
    let RequestKind::Metadata(no_creation) = metadata_request(Some(&["clicks", "nope"])) else {
        unreachable!()
    };
    let mut body = call(
        &mut kafka,
        ApiKey::Metadata,
        12,
        RequestKind::Metadata(no_creation.with_allow_auto_topic_creation(false)),
    );
    let metadata = MetadataResponse::decode(&mut body, 12).unwrap();
    assert_eq!(metadata.topics[0].error_code, 0);
    assert!(!metadata.topics[0].topic_id.is_nil());
    assert_eq!(
        metadata.topics[1].error_code, 3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    // By default an unknown topic is created (schemaless, one partition); a name SQL could
    // not use is refused with INVALID_TOPIC_EXCEPTION.
    let mut body = call(
        &mut kafka,
        ApiKey::Metadata,
        12,
        metadata_request(Some(&["made_by_kafka", "__reserved", "bad/name"])),
    );
    let metadata = MetadataResponse::decode(&mut body, 12).unwrap();
    let codes: Vec<(i16, usize)> = metadata
        .topics
        .iter()
        .map(|t| (t.error_code, t.partitions.len()))
        .collect();
    assert_eq!(codes, [(0, 1), (17, 0), (17, 0)]);
    let client = server.connect().await;
    assert_eq!(
        common::rows(&client, "SELECT count(*) FROM made_by_kafka").await,
        vec![vec![Some("0".to_string())]]
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_frame_closes_its_connection_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    setup(&server).await;
    let bootstrap = server.kafka_bootstrap();
    let mut good = connect(&bootstrap);
    call(&mut good, ApiKey::Metadata, 1, metadata_request(None));

    let garbage: Vec<Vec<u8>> = vec![
        // An API that is not served.
        [&8i32.to_be_bytes()[..], &[0x7f, 0x7f, 0, 0, 0, 0, 0, 1]].concat(),
        // A version that is not served (Metadata v13).
        [
            &12i32.to_be_bytes()[..],
            &[0, 3, 0, 13, 0, 0, 0, 1, 0xff, 0xff, 0, 0],
        ]
        .concat(),
        // 200 MiB announced.
        (200 * 1024 * 1024i32).to_be_bytes().to_vec(),
        // A topic array claiming 2^31 - 1 entries in a 17-byte request.
        [
            &17i32.to_be_bytes()[..],
            &[0, 3, 0, 4, 0, 0, 0, 1, 0xff, 0xff],
            &i32::MAX.to_be_bytes(),
            &[1, 0, 0],
        ]
        .concat(),
        // A negative length.
        (-1i32).to_be_bytes().to_vec(),
    ];
    for bytes in &garbage {
        let mut bad = connect(&bootstrap);
        bad.write_all(bytes).unwrap();
        assert!(closed(&mut bad), "{bytes:?} closes its connection");
    }
    // The good connection, new ones, and SQL carry on.
    call(&mut good, ApiKey::Metadata, 12, metadata_request(None));
    call(
        &mut connect(&bootstrap),
        ApiKey::ApiVersions,
        3,
        RequestKind::ApiVersions(ApiVersionsRequest::default()),
    );
    let client = server.connect().await;
    client
        .batch_execute("INSERT INTO clicks VALUES (1, '/')")
        .await
        .unwrap();
    server.stop();
}

/// Requests sent back to back, without waiting: the Produce requests are queued for the log
/// together and answered in order, with the offsets of their order; a request behind them
/// sees all their records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_produce_requests_are_answered_in_order() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
    use kafka_protocol::messages::{ProduceResponse, ResponseHeader};

    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    setup(&server).await;
    let mut stream = connect(&server.kafka_bootstrap());
    let topic = || TopicName(StrBytes::from_static_str("raw_events"));
    let produce = |i: i32, acks: i16| {
        let request = produce_request("raw_events", &[format!("record {i}")], acks);
        request_frame(ApiKey::Produce, 7, i, request)
    };
    // 100 Produce requests (every tenth with acks=0: no answer), then a ListOffsets.
    const PRODUCES: i32 = 100;
    let mut frames = BytesMut::new();
    for i in 0..PRODUCES {
        frames.extend_from_slice(&produce(i, if i % 10 == 9 { 0 } else { -1 }));
    }
    let latest = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic())
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ]),
        ]);
    frames.extend_from_slice(&request_frame(
        ApiKey::ListOffsets,
        1,
        PRODUCES,
        RequestKind::ListOffsets(latest),
    ));
    stream.write_all(&frames).unwrap();

    for i in (0..PRODUCES).filter(|i| i % 10 != 9) {
        let mut frame = read_frame(&mut stream).expect("a Produce response");
        let header = ResponseHeader::decode(&mut frame, 0).unwrap();
        assert_eq!(header.correlation_id, i, "answers come in request order");
        let response = ProduceResponse::decode(&mut frame, 7).unwrap();
        let partition = &response.responses[0].partition_responses[0];
        assert_eq!(partition.error_code, 0, "{partition:?}");
        assert_eq!(
            partition.base_offset, i as i64,
            "records are appended in request order"
        );
    }
    let mut frame = read_frame(&mut stream).expect("a ListOffsets response");
    let header = ResponseHeader::decode(&mut frame, 0).unwrap();
    assert_eq!(header.correlation_id, PRODUCES);
    let response = ListOffsetsResponse::decode(&mut frame, 1).unwrap();
    assert_eq!(
        response.topics[0].partitions[0].offset, PRODUCES as i64,
        "the request behind the Produce requests sees every record they sent"
    );
    server.stop();
}

/// A Fetch v11 for partition 0 of `topic` from `offset`, at most `max_bytes` of records.
fn fetch_request(topic: &str, offset: i64, max_bytes: i32) -> RequestKind {
    use kafka_protocol::messages::FetchRequest;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let partition = FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(offset)
        .with_partition_max_bytes(max_bytes);
    RequestKind::Fetch(
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![partition]),
            ]),
    )
}

/// The values a Fetch v11 answer holds for its one partition, in order, with their offsets.
fn fetched(stream: &mut TcpStream, topic: &str, offset: i64, max_bytes: i32) -> Vec<(i64, String)> {
    use kafka_protocol::messages::FetchResponse;
    let mut body = call(
        stream,
        ApiKey::Fetch,
        11,
        fetch_request(topic, offset, max_bytes),
    );
    let response = FetchResponse::decode(&mut body, 11).unwrap();
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0, "{partition:?}");
    let mut records = partition.records.clone().unwrap_or_default();
    assert!(
        records.len() <= max_bytes as usize,
        "{} bytes",
        records.len()
    );
    RecordBatchDecoder::decode_all(&mut records)
        .unwrap()
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| {
            (
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_read_ahead_answer_exactly_what_was_asked() {
    // A Fetch that leaves records behind has the next ones read ahead; the next Fetch takes
    // them only if it asks for them, of the same topic, within its limit.
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let sql = server.connect().await;
    sql.batch_execute("CREATE TOPIC events WITH (partitions = 1)")
        .await
        .unwrap();
    let mut stream = connect(&server.kafka_bootstrap());
    let produce = |stream: &mut TcpStream, prefix: &str| {
        for i in 0..50 {
            let request = produce_request("events", &[format!("{prefix} {i}")], -1);
            call(stream, ApiKey::Produce, 7, request);
        }
    };
    produce(&mut stream, "old");
    let expected = |prefix: &str, offsets: std::ops::Range<i64>| -> Vec<(i64, String)> {
        offsets.map(|i| (i, format!("{prefix} {i}"))).collect()
    };

    // Read through in small answers: every record once, in order.
    let mut offset = 0;
    let mut all = vec![];
    while offset < 50 {
        let got = fetched(&mut stream, "events", offset, 300);
        assert!(!got.is_empty() && got[0].0 == offset, "{got:?}");
        offset = got.last().unwrap().0 + 1;
        all.extend(got);
    }
    assert_eq!(all, expected("old", 0..50));

    // A consumer that seeks back, or asks for less room, than was read ahead for.
    let first = fetched(&mut stream, "events", 0, 300);
    let next = first.last().unwrap().0 + 1;
    let back = fetched(&mut stream, "events", 2, 300);
    assert_eq!(back[0], (2, "old 2".to_string()));
    let first = fetched(&mut stream, "events", 0, 300);
    assert_eq!(first.last().unwrap().0 + 1, next);
    let smaller = fetched(&mut stream, "events", next, 150);
    assert_eq!(smaller, expected("old", next..next + smaller.len() as i64));

    // The topic dropped and made again under the same name while a read ahead waits: the
    // next Fetch sees the new topic's records, not the old one's.
    let first = fetched(&mut stream, "events", 0, 300);
    let next = first.last().unwrap().0 + 1;
    sql.batch_execute("DROP TOPIC events; CREATE TOPIC events WITH (partitions = 1)")
        .await
        .unwrap();
    produce(&mut stream, "new");
    let after = fetched(&mut stream, "events", next, 300);
    assert_eq!(after, expected("new", next..next + after.len() as i64));
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_read_by_kafka_consumers_or_by_a_sql_cursor_not_both() {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::{GroupId, JoinGroupRequest, JoinGroupResponse};
    use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let sql = server.connect().await;
    sql.batch_execute("CREATE TOPIC events; CREATE SUBSCRIPTION billing FROM events")
        .await
        .unwrap();
    let mut kafka = connect(&server.kafka_bootstrap());
    let join = |stream: &mut TcpStream| {
        let request = JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("billing")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))
                    .with_metadata(Bytes::from_static(b"\0\0\0\0\0\0")),
            ]);
        let mut body = call(
            stream,
            ApiKey::JoinGroup,
            3,
            RequestKind::JoinGroup(request),
        );
        JoinGroupResponse::decode(&mut body, 3).unwrap()
    };
    let declare = "BEGIN; DECLARE cur SUBSCRIPTION CURSOR FOR billing";

    // A SQL cursor reads the group: a Kafka consumer joining it is refused at once.
    sql.batch_execute(declare).await.unwrap();
    assert_eq!(
        join(&mut kafka).error_code,
        23,
        "INCONSISTENT_GROUP_PROTOCOL"
    );
    sql.batch_execute("COMMIT").await.unwrap();

    // A Kafka consumer is in the group: SQL can neither read nor drop it.
    let joined = join(&mut kafka);
    assert_eq!(joined.error_code, 0, "{joined:?}");
    for statement in [declare, "DROP SUBSCRIPTION billing"] {
        let error = sql.batch_execute(statement).await.unwrap_err();
        let error = error.as_db_error().expect("a server error");
        assert_eq!(error.code().code(), "55006", "{statement}: {error:?}");
        assert!(error.message().contains("Kafka consumers"), "{error:?}");
        sql.batch_execute("ROLLBACK").await.unwrap();
    }

    // Once it has left, the group is SQL's again.
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("billing")))
        .with_member_id(joined.member_id.clone());
    let mut body = call(
        &mut kafka,
        ApiKey::LeaveGroup,
        0,
        RequestKind::LeaveGroup(leave),
    );
    assert_eq!(
        LeaveGroupResponse::decode(&mut body, 0).unwrap().error_code,
        0
    );
    sql.batch_execute(declare).await.unwrap();
    sql.batch_execute("COMMIT").await.unwrap();
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_sees_topics_and_partitions() {
    let python = common::python();
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    setup(&server).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/kafka_metadata.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(server.kafka_bootstrap())
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("kafka metadata ok"),
        "{stdout}\n{stderr}\n--- server ---\n{}",
        server.log()
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_passwords_kafka_clients_are_not_served_without_one() {
    // Kafka clients have no password to give until SASL is served: they would reach every
    // topic, so the server does not listen for them at all, and says so.
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with_env(
        dir.path(),
        &["--auth", "password"],
        &[("RUNNEL_PASSWORD", "secret")],
    );
    server.wait_for_log("not serving Kafka clients");
    assert!(
        !server.log().contains("listening for Kafka clients"),
        "{}",
        server.log()
    );
    server.stop();
}
