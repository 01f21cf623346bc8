//! Fuzzing the real server for a bounded time: the `.slt` corpus mutated and spliced, and
//! statements generated to be deep, wide or huge, from several connections at once; broken
//! Postgres wire frames on raw sockets; and broken Kafka requests. Whatever arrives, the
//! server must answer or close that one connection, and keep running for everyone else.
//!
//! `RUNNEL_FUZZ_SECONDS` sets how long each fuzzer runs (default 20); the seed is printed
//! and `RUNNEL_SEED` replays it. For a long run: `RUNNEL_FUZZ_SECONDS=600 cargo test
//! --release --test fuzz -- --nocapture`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::Rng;

fn fuzz_duration() -> Duration {
    Duration::from_secs(
        std::env::var("RUNNEL_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    )
}

/// Every statement of the `.slt` files.
fn corpus() -> Vec<String> {
    let mut files = vec![];
    let mut pending = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("sql-tests")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "slt") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut statements = vec![];
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if !(line.starts_with("statement") || line.starts_with("query")) {
                continue;
            }
            let mut sql = vec![];
            for line in lines.by_ref() {
                if line.trim().is_empty() || line == "----" {
                    break;
                }
                sql.push(line);
            }
            if !sql.is_empty() {
                statements.push(sql.join("\n"));
            }
        }
    }
    assert!(statements.len() > 100, "the corpus is the .slt files");
    statements
}

const VOCABULARY: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "ORDER BY",
    "LIMIT",
    "(",
    ")",
    ",",
    ";",
    "'",
    "\"",
    "NULL",
    "-1",
    "0",
    "9223372036854775807",
    "-9223372036854775808",
    "1e308",
    "''",
    "*",
    "+",
    "||",
    "::",
    "::BIGINT",
    "::TEXT",
    "::INTERVAL",
    "AND",
    "OR",
    "NOT",
    "IN",
    "(SELECT 1)",
    "EMIT CHANGES",
    "WITH",
    "KEY",
    "_offset",
    "_partition",
    "_key",
    "_timestamp",
    "sys.queries",
    "pg_catalog.pg_class",
    "UNION ALL SELECT 1",
    "$1",
    "DISTINCT",
    "OVER ()",
    "CASE WHEN",
    "END",
    "E'\\x'",
    "'\u{1F980}'",
    "ARRAY[1,2]",
    "[1]",
    "CROSS JOIN",
    "LATERAL",
    "unnest(",
    "now()",
    "INTERVAL '1 day'",
    "TIMESTAMP '2026-01-01'",
    "x'ff'",
    "COLLATE \"C\"",
    "\\",
];

/// A mutation of a corpus statement, or a statement generated to be deep, wide or huge.
fn next_statement(rng: &mut Rng, corpus: &[String]) -> String {
    let pick = |rng: &mut Rng| corpus[rng.below(corpus.len() as u64) as usize].clone();
    let n = |rng: &mut Rng, max: u64| 1 + rng.below(max) as usize;
    match rng.below(12) {
        0 => {
            let depth = if rng.below(4) == 0 {
                n(rng, 200_000)
            } else {
                n(rng, 700)
            };
            let op = ["+", " AND ", " OR ", "||", "*", "::BIGINT+"][rng.below(6) as usize];
            format!("SELECT {}", vec!["1"; depth].join(op))
        }
        1 => {
            let depth = n(rng, 120);
            let (open, close) = [
                ("(", ")"),
                ("abs(", ")"),
                ("(SELECT ", ")"),
                ("ARRAY[", "]"),
            ][rng.below(4) as usize];
            format!("SELECT {}1{}", open.repeat(depth), close.repeat(depth))
        }
        2 => format!(
            "SELECT {}",
            (0..n(rng, 1000))
                .map(|i| format!("{i} AS c{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        3 => format!(
            "SELECT 1 WHERE 1 IN ({})",
            (0..n(rng, 5000))
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
        4 => format!("SELECT length('{}')", "x".repeat(n(rng, 500_000))),
        5 => "SELECT 1;".repeat(n(rng, 500)),
        6 => {
            // Splice two statements.
            let (a, b) = (pick(rng), pick(rng));
            let cut_a = a
                .char_indices()
                .nth(rng.below(a.chars().count() as u64 + 1) as usize);
            let cut_b = b
                .char_indices()
                .nth(rng.below(b.chars().count() as u64 + 1) as usize);
            format!(
                "{}{}",
                &a[..cut_a.map_or(a.len(), |(i, _)| i)],
                &b[cut_b.map_or(b.len(), |(i, _)| i)..]
            )
        }
        _ => {
            // Token mutations: delete, duplicate, swap, replace.
            let statement = pick(rng);
            let mut tokens: Vec<String> =
                statement.split_whitespace().map(str::to_string).collect();
            for _ in 0..n(rng, 4) {
                if tokens.is_empty() {
                    break;
                }
                let i = rng.below(tokens.len() as u64) as usize;
                let j = rng.below(tokens.len() as u64) as usize;
                match rng.below(5) {
                    0 => {
                        tokens.remove(i);
                    }
                    1 => tokens.insert(i, tokens[j].clone()),
                    2 => tokens.swap(i, j),
                    3 => tokens[i] = VOCABULARY[rng.below(VOCABULARY.len() as u64) as usize].into(),
                    _ => {
                        // A character dropped or doubled inside a token.
                        let chars: Vec<char> = tokens[i].chars().collect();
                        let k = rng.below(chars.len() as u64) as usize;
                        let mut out: String = chars[..k].iter().collect();
                        if rng.below(2) == 0 {
                            out.push(chars[k]);
                        }
                        out.extend(&chars[k..]);
                        tokens[i] = out;
                    }
                }
            }
            tokens.join(" ")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutated_and_generated_sql_never_crashes_the_server() {
    let corpus = Arc::new(corpus());
    let seed = Rng::seeded("sql fuzz").0;
    let dir = tempfile::tempdir().unwrap();
    // Relative paths in the corpus (COPY … TO 'out/…') land in a scratch directory.
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(cwd.path().join("sql-tests")).unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql-tests/data");
    std::os::unix::fs::symlink(&data, cwd.path().join("sql-tests/data")).unwrap();
    let mut server = common::start_in(dir.path(), cwd.path(), &[], &[]);
    let addr = server.connection_string();
    let deadline = Instant::now() + fuzz_duration();
    let outcomes: Arc<Mutex<BTreeMap<String, u64>>> = Default::default();
    let mut tasks = vec![];
    for worker in 0..4u64 {
        let (corpus, outcomes, addr) = (corpus.clone(), outcomes.clone(), addr.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(seed.wrapping_add(worker.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
            let mut client = None;
            while Instant::now() < deadline {
                let (c, cancel) = match &client {
                    Some(c) => c,
                    None => {
                        let (c, connection) = tokio::time::timeout(
                            Duration::from_secs(30),
                            tokio_postgres::connect(&addr, tokio_postgres::NoTls),
                        )
                        .await
                        .expect("the server accepts a connection within 30 s")
                        .unwrap();
                        tokio::spawn(connection);
                        let cancel = c.cancel_token();
                        client = Some((c, cancel));
                        client.as_ref().unwrap()
                    }
                };
                let sql = next_statement(&mut rng, &corpus);
                let outcome = match tokio::time::timeout(
                    Duration::from_secs(5),
                    c.simple_query(&sql),
                )
                .await
                {
                    Ok(Ok(_)) => "ok".to_string(),
                    Ok(Err(e)) if e.is_closed() => {
                        client = None;
                        "connection closed".to_string()
                    }
                    Ok(Err(e)) => {
                        let code = e
                            .code()
                            .map(|c| c.code().to_string())
                            .unwrap_or_else(|| "client error".to_string());
                        if code == "XX000" {
                            // Not a crash, but a bug in Runnel: show it.
                            let shown: String = sql.chars().take(300).collect();
                            let message = e.as_db_error().map(|d| d.message().to_string());
                            eprintln!("sql fuzz: XX000 {message:?} for: {shown}");
                        }
                        code
                    }
                    Err(_) => {
                        // Too slow (or never ending, like EMIT CHANGES): cancel it.
                        let shown: String = sql.chars().take(160).collect();
                        eprintln!("sql fuzz: cancelled after 5 s: {shown}");
                        let _ = cancel.cancel_query(tokio_postgres::NoTls).await;
                        let settled = tokio::time::timeout(
                            Duration::from_secs(10),
                            c.simple_query("SELECT 1"),
                        )
                        .await;
                        if !matches!(settled, Ok(Ok(_))) {
                            client = None;
                        }
                        "timed out, cancelled".to_string()
                    }
                };
                *outcomes.lock().unwrap().entry(outcome).or_default() += 1;
            }
        }));
    }
    // Meanwhile, the server must stay up.
    while Instant::now() < deadline {
        assert!(
            server.is_running(),
            "the server exited; its log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        server.is_running(),
        "the server exited; its log:\n{}",
        server.log()
    );
    let outcomes = outcomes.lock().unwrap().clone();
    let total: u64 = outcomes.values().sum();
    eprintln!("sql fuzz: {total} statements, outcomes {outcomes:?}");
    assert!(total > 30, "the fuzzer ran: {outcomes:?}");
    assert!(outcomes.get("ok").is_some_and(|n| *n > 0), "{outcomes:?}");
    let client = server.connect().await;
    assert_eq!(
        common::rows(&client, "SELECT 41 + 1").await,
        vec![vec![Some("42".to_string())]]
    );
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

/// A Postgres message: type byte, length, body.
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn startup() -> Vec<u8> {
    let mut body = 196_608i32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0runnel\0database\0runnel\0\0");
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

/// A frame that is broken in one way or another, or a valid one in the wrong place.
fn broken_frame(rng: &mut Rng) -> Vec<u8> {
    let random_bytes =
        |rng: &mut Rng, n: usize| (0..n).map(|_| rng.next() as u8).collect::<Vec<u8>>();
    let kinds = b"QPBDESHCdcfFXpx\0\xff";
    let kind = kinds[rng.below(kinds.len() as u64) as usize];
    match rng.below(8) {
        // A length that lies: huge, negative, zero, or shorter than the body.
        0 => {
            let mut out = vec![kind];
            let lengths = [i32::MAX, -1, 0, 3, 1 << 30, 65_536];
            out.extend_from_slice(&lengths[rng.below(lengths.len() as u64) as usize].to_be_bytes());
            let n = rng.below(64) as usize;
            out.extend(random_bytes(rng, n));
            out
        }
        // Random bodies under a correct length.
        1 | 2 => {
            let n = rng.below(300) as usize;
            message(kind, &random_bytes(rng, n))
        }
        // A Bind with parameter counts and formats that do not match the statement.
        3 => {
            let mut body = b"\0\0".to_vec(); // unnamed portal, unnamed statement
            let formats = rng.below(4) as u16;
            body.extend_from_slice(&formats.to_be_bytes());
            for _ in 0..formats {
                body.extend_from_slice(&(rng.below(3) as u16).to_be_bytes());
            }
            let params = [0u16, 1, 7, u16::MAX][rng.below(4) as usize];
            body.extend_from_slice(&params.to_be_bytes());
            for _ in 0..params.min(8) {
                body.extend_from_slice(&(rng.below(10) as i32 - 1).to_be_bytes());
                body.extend(random_bytes(rng, 4));
            }
            body.extend_from_slice(&0u16.to_be_bytes());
            message(b'B', &body)
        }
        // A Parse of a real statement with absurd parameter types.
        4 => {
            let mut body = b"\0SELECT $1, $2\0".to_vec();
            let n = [0u16, 2, 100, u16::MAX][rng.below(4) as usize];
            body.extend_from_slice(&n.to_be_bytes());
            for _ in 0..n.min(100) {
                body.extend_from_slice(&(rng.next() as u32).to_be_bytes());
            }
            message(b'P', &body)
        }
        // A query that is not UTF-8, or has NUL inside.
        5 => message(b'Q', b"SELECT '\xff\xfe'\0"),
        6 => message(b'Q', b"SELECT 1\0; SELECT 2\0"),
        // COPY data outside a COPY, a Sync, an Execute of nothing.
        _ => [
            message(b'd', b"1\t2\n"),
            message(b'S', b""),
            message(b'E', b"\0\0\0\0\0"),
        ][rng.below(3) as usize]
            .clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_wire_frames_never_crash_the_server() {
    let mut rng = Rng::seeded("frame fuzz");
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::start(dir.path());
    let deadline = Instant::now() + fuzz_duration();
    let mut connections = 0u64;
    let mut frames = 0u64;
    while Instant::now() < deadline {
        let mut socket = TcpStream::connect(server.addr).await.unwrap();
        connections += 1;
        // Sometimes garbage instead of a start-up message, sometimes an SSL request first.
        let opening = match rng.below(6) {
            0 => (0..rng.below(200)).map(|_| rng.next() as u8).collect(),
            1 => {
                let mut out = 8i32.to_be_bytes().to_vec();
                out.extend_from_slice(&80_877_103i32.to_be_bytes());
                out
            }
            _ => startup(),
        };
        if socket.write_all(&opening).await.is_err() {
            continue;
        }
        for _ in 0..1 + rng.below(20) {
            let mut frame = broken_frame(&mut rng);
            if rng.below(4) == 0 {
                // Cut it anywhere.
                frame.truncate(rng.below(frame.len() as u64 + 1) as usize);
            }
            frames += 1;
            if socket.write_all(&frame).await.is_err() {
                break;
            }
        }
        // Read whatever comes back for a moment, then hang up.
        let mut buf = vec![0u8; 64 * 1024];
        let _ = tokio::time::timeout(Duration::from_millis(20), socket.read(&mut buf)).await;
        drop(socket);
        assert!(
            server.is_running(),
            "the server exited; its log:\n{}",
            server.log()
        );
    }
    // Every other client is served as before.
    let client = server.connect().await;
    assert_eq!(
        common::rows(&client, "SELECT 41 + 1").await,
        vec![vec![Some("42".to_string())]]
    );
    eprintln!("frame fuzz: {connections} connections, {frames} frames");
    assert!(connections > 50, "the fuzzer ran");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

/// A record batch of a few records, as kafka-protocol's own (client) encoder writes it.
fn kafka_batch(rng: &mut Rng) -> bytes::Bytes {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let records: Vec<Record> = (0..1 + rng.below(4))
        .map(|i| Record {
            transactional: rng.below(8) == 0,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: if rng.below(2) == 0 {
                -1
            } else {
                rng.below(5) as i64
            },
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: rng.below(3) as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: (rng.below(2) == 0).then(|| bytes::Bytes::from(format!("k{i}"))),
            value: Some(bytes::Bytes::from(format!("{{\"v\": {i}}}"))),
            headers: Default::default(),
        })
        .collect();
    let mut out = bytes::BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    match RecordBatchEncoder::encode(&mut out, records.iter(), &options) {
        Ok(()) => out.freeze(),
        Err(_) => bytes::Bytes::new(),
    }
}

/// A valid Kafka request frame of an API the server serves, at any version it defines
/// (served or not): metadata, produce and fetch, offsets, groups.
fn kafka_request(rng: &mut Rng) -> Vec<u8> {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ApiKey, ApiVersionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
        DescribeClusterRequest, DescribeConfigsRequest, DescribeGroupsRequest, FetchRequest,
        FindCoordinatorRequest, GroupId, HeartbeatRequest, InitProducerIdRequest, JoinGroupRequest,
        LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest, MetadataRequest,
        OffsetCommitRequest, OffsetFetchRequest, OffsetForLeaderEpochRequest, ProduceRequest,
        RequestHeader, RequestKind, SyncGroupRequest, TopicName,
    };
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let topic = |rng: &mut Rng| TopicName(StrBytes::from_string(format!("t{}", rng.below(3))));
    let group = |rng: &mut Rng| GroupId(StrBytes::from_string(format!("g{}", rng.below(2))));
    let (key, body) = match rng.below(19) {
        0 => {
            let request = ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("fuzz"))
                .with_client_software_version(StrBytes::from_static_str("1"));
            (ApiKey::ApiVersions, RequestKind::ApiVersions(request))
        }
        1 => {
            let topics = (0..rng.below(4))
                .map(|i| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(format!("t{i}")))))
                })
                .collect();
            let topics = (rng.below(3) > 0).then_some(topics);
            (
                ApiKey::Metadata,
                RequestKind::Metadata(MetadataRequest::default().with_topics(topics)),
            )
        }
        2 | 3 => {
            let data = PartitionProduceData::default()
                .with_index(rng.below(4) as i32)
                .with_records(Some(kafka_batch(rng)));
            let request = ProduceRequest::default()
                .with_acks([-1, 0, 1][rng.below(3) as usize])
                .with_timeout_ms(1000)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(topic(rng))
                        .with_partition_data(vec![data]),
                ]);
            (ApiKey::Produce, RequestKind::Produce(request))
        }
        4 => {
            let partition = FetchPartition::default()
                .with_partition(rng.below(4) as i32)
                .with_fetch_offset(rng.below(20) as i64 - 2)
                .with_partition_max_bytes(1 << rng.below(20));
            let request = FetchRequest::default()
                .with_max_wait_ms(rng.below(50) as i32)
                .with_min_bytes(rng.below(2) as i32)
                .with_max_bytes(1 << rng.below(24))
                .with_topics(vec![
                    FetchTopic::default()
                        .with_topic(topic(rng))
                        .with_partitions(vec![partition]),
                ]);
            (ApiKey::Fetch, RequestKind::Fetch(request))
        }
        5 => {
            let request = ListOffsetsRequest::default().with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(topic(rng))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(rng.below(4) as i32)
                            .with_timestamp(rng.below(5) as i64 - 3),
                    ]),
            ]);
            (ApiKey::ListOffsets, RequestKind::ListOffsets(request))
        }
        6 => {
            let request = JoinGroupRequest::default()
                .with_group_id(group(rng))
                .with_session_timeout_ms(1000 + rng.below(2000) as i32)
                .with_rebalance_timeout_ms(rng.below(1000) as i32)
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![
                    JoinGroupRequestProtocol::default()
                        .with_name(StrBytes::from_static_str("range"))
                        .with_metadata(bytes::Bytes::from_static(b"m")),
                ]);
            (ApiKey::JoinGroup, RequestKind::JoinGroup(request))
        }
        7 => {
            let request = SyncGroupRequest::default()
                .with_group_id(group(rng))
                .with_generation_id(rng.below(3) as i32)
                .with_member_id(StrBytes::from_static_str("fuzz-1"));
            (ApiKey::SyncGroup, RequestKind::SyncGroup(request))
        }
        8 => {
            let request = HeartbeatRequest::default()
                .with_group_id(group(rng))
                .with_member_id(StrBytes::from_static_str("fuzz-1"));
            (ApiKey::Heartbeat, RequestKind::Heartbeat(request))
        }
        9 => {
            let request = OffsetCommitRequest::default()
                .with_group_id(group(rng))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    OffsetCommitRequestTopic::default()
                        .with_name(topic(rng))
                        .with_partitions(vec![
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(rng.below(4) as i32)
                                .with_committed_offset(rng.below(10) as i64 - 1),
                        ]),
                ]);
            if rng.below(2) == 0 {
                (ApiKey::OffsetCommit, RequestKind::OffsetCommit(request))
            } else {
                let fetch = OffsetFetchRequest::default().with_group_id(group(rng));
                (ApiKey::OffsetFetch, RequestKind::OffsetFetch(fetch))
            }
        }
        11 => {
            let request = LeaveGroupRequest::default()
                .with_group_id(group(rng))
                .with_member_id(StrBytes::from_static_str("fuzz-1"))
                .with_members(vec![
                    MemberIdentity::default().with_member_id(StrBytes::from_static_str("fuzz-1")),
                ]);
            (ApiKey::LeaveGroup, RequestKind::LeaveGroup(request))
        }
        12 => {
            let request = DescribeGroupsRequest::default().with_groups(vec![group(rng)]);
            (ApiKey::DescribeGroups, RequestKind::DescribeGroups(request))
        }
        13 => {
            let request = ListGroupsRequest::default();
            (ApiKey::ListGroups, RequestKind::ListGroups(request))
        }
        14 => {
            let request = OffsetForLeaderEpochRequest::default().with_topics(vec![
                OffsetForLeaderTopic::default()
                    .with_topic(topic(rng))
                    .with_partitions(vec![
                        OffsetForLeaderPartition::default()
                            .with_partition(rng.below(4) as i32)
                            .with_leader_epoch(rng.below(3) as i32 - 1),
                    ]),
            ]);
            (
                ApiKey::OffsetForLeaderEpoch,
                RequestKind::OffsetForLeaderEpoch(request),
            )
        }
        15 => {
            let config = CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("retention.ms"))
                .with_value(Some(StrBytes::from_string(rng.below(100_000).to_string())));
            let request = CreateTopicsRequest::default()
                .with_validate_only(rng.below(2) == 0)
                .with_topics(vec![
                    CreatableTopic::default()
                        .with_name(topic(rng))
                        .with_num_partitions(rng.below(5) as i32 - 1)
                        .with_replication_factor(rng.below(3) as i16 - 1)
                        .with_configs(vec![config]),
                ]);
            (ApiKey::CreateTopics, RequestKind::CreateTopics(request))
        }
        16 => {
            // t1 stays: the other requests need a topic with several partitions.
            let name = TopicName(StrBytes::from_static_str(
                ["t0", "t2"][rng.below(2) as usize],
            ));
            let request = DeleteTopicsRequest::default()
                .with_topic_names(vec![name.clone()])
                .with_topics(vec![DeleteTopicState::default().with_name(Some(name))]);
            (ApiKey::DeleteTopics, RequestKind::DeleteTopics(request))
        }
        17 => {
            let resource = DescribeConfigsResource::default()
                .with_resource_type([2, 4][rng.below(2) as usize])
                .with_resource_name(StrBytes::from_string(
                    ["t1", "t9", "1", ""][rng.below(4) as usize].to_string(),
                ));
            let request = DescribeConfigsRequest::default().with_resources(vec![resource]);
            (
                ApiKey::DescribeConfigs,
                RequestKind::DescribeConfigs(request),
            )
        }
        _ => {
            if rng.below(3) == 0 {
                let request = DescribeClusterRequest::default();
                (
                    ApiKey::DescribeCluster,
                    RequestKind::DescribeCluster(request),
                )
            } else if rng.below(2) == 0 {
                let request = FindCoordinatorRequest::default()
                    .with_key(StrBytes::from_static_str("g0"))
                    .with_key_type(rng.below(2) as i8)
                    .with_coordinator_keys(vec![StrBytes::from_static_str("g0")]);
                (
                    ApiKey::FindCoordinator,
                    RequestKind::FindCoordinator(request),
                )
            } else {
                let request = InitProducerIdRequest::default()
                    .with_transaction_timeout_ms(1000)
                    .with_producer_id(kafka_protocol::messages::ProducerId(-1))
                    .with_producer_epoch(-1);
                (ApiKey::InitProducerId, RequestKind::InitProducerId(request))
            }
        }
    };
    let versions = key.valid_versions();
    let version = versions.min + rng.below((versions.max - versions.min + 1) as u64) as i16;
    let mut out = bytes::BytesMut::new();
    out.extend_from_slice(&[0, 0, 0, 0]);
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(rng.next() as i32)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")));
    if header
        .encode(&mut out, key.request_header_version(version))
        .is_err()
        || body.encode(&mut out, version).is_err()
    {
        return vec![0, 0, 0, 0];
    }
    let length = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&length.to_be_bytes());
    out.to_vec()
}

/// A Kafka request broken in one way or another: bytes flipped or set to extremes (lengths
/// and counts become huge or negative), cut short, or under a length that lies.
fn broken_kafka_frame(rng: &mut Rng) -> Vec<u8> {
    let mut frame = kafka_request(rng);
    match rng.below(5) {
        0 => {}
        1 | 2 => {
            for _ in 0..1 + rng.below(4) {
                let at = 4 + rng.below(frame.len().saturating_sub(4).max(1) as u64) as usize;
                if at < frame.len() {
                    frame[at] = [0xff, 0x7f, 0x80, 0, rng.next() as u8][rng.below(5) as usize];
                }
            }
        }
        3 => frame.truncate(rng.below(frame.len() as u64 + 1) as usize),
        _ => {
            let lengths = [i32::MAX, -1, 0, 3, 1 << 30, 200 << 20];
            let length = lengths[rng.below(lengths.len() as u64) as usize];
            frame[..4].copy_from_slice(&length.to_be_bytes());
        }
    }
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_kafka_requests_never_crash_the_server() {
    let mut rng = Rng::seeded("kafka fuzz");
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::start(dir.path());
    server
        .connect()
        .await
        .batch_execute("CREATE TOPIC t1 WITH (partitions = 3)")
        .await
        .unwrap();
    let bootstrap = server.kafka_bootstrap();
    let deadline = Instant::now() + fuzz_duration();
    let (mut connections, mut frames) = (0u64, 0u64);
    while Instant::now() < deadline {
        let mut socket = TcpStream::connect(&bootstrap).await.unwrap();
        connections += 1;
        for _ in 0..1 + rng.below(10) {
            let frame = broken_kafka_frame(&mut rng);
            frames += 1;
            if socket.write_all(&frame).await.is_err() {
                break;
            }
        }
        let mut buf = vec![0u8; 64 * 1024];
        let _ = tokio::time::timeout(Duration::from_millis(10), socket.read(&mut buf)).await;
        drop(socket);
        assert!(
            server.is_running(),
            "the server exited; its log:\n{}",
            server.log()
        );
    }
    // A well-formed request is answered (ApiVersions v0: key 18, version 0, correlation
    // id 1, no client id), and SQL goes on.
    let mut socket = TcpStream::connect(&bootstrap).await.unwrap();
    let request = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
    socket.write_all(&request).await.unwrap();
    let mut answer = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(10), socket.read_exact(&mut answer))
        .await
        .expect("an answer within 10 s")
        .expect("an answer");
    assert_eq!(&answer[4..], &[0, 0, 0, 1], "the correlation id");
    let client = server.connect().await;
    assert_eq!(
        common::rows(&client, "SELECT 41 + 1").await,
        vec![vec![Some("42".to_string())]]
    );
    eprintln!("kafka fuzz: {connections} connections, {frames} frames");
    assert!(connections > 50, "the fuzzer ran");
    assert!(!server.log().contains("panicked"), "{}", server.log());
    // Whatever the request, the answer must be encodable in its version: a field set that
    // the version lacks is the server's bug, not the client's.
    assert!(
        !server
            .log()
            .contains("a response could not be encoded in its request's version"),
        "{}",
        server.log()
    );
}
