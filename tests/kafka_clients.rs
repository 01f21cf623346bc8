//! Real Kafka clients (kafka-python, confluent-kafka, Apache Kafka's Java client, aiokafka,
//! kafkajs, kcat) producing to and consuming from Runnel's topics and streams, side by side
//! with SQL: the project's seed programs, a typed stream, every codec, the Java client's admin,
//! producer and group, the non-flexible protocol versions, a consumer group that loses a
//! member to SIGKILL, an idempotent producer whose server is killed ten times, and a
//! compacted topic read at its original offsets.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs one of `tests/python`'s scripts with `args`; its output, which must be a success
/// that printed `marker`.
fn run(server: &common::Server, script: &str, args: &[&str], marker: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let mut python = Command::new(common::python());
    python.arg(&path).arg(server.kafka_bootstrap()).args(args);
    common::succeeded(server, &mut python, marker)
}

/// A server on a fresh data directory, after `sql` has run on it.
async fn started_with(sql: &str) -> (tempfile::TempDir, common::Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    server.connect().await.batch_execute(sql).await.unwrap();
    (dir, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_programs_produce_and_consume_through_a_group() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());

    // The producer's topic does not exist: its Metadata request creates it.
    run(&server, "kafka_seed_producer.py", &[], "");
    let consumed = run(&server, "kafka_seed_consumer.py", &["8000"], "");
    let lines: Vec<&str> = consumed.lines().collect();
    assert_eq!(lines.len(), 10, "{consumed}");
    assert!(
        lines
            .iter()
            .all(|l| *l == r#"b'key' b'{"message": "hello world"}'"#),
        "{consumed}"
    );
    assert_eq!(
        common::first_row(&server, "SELECT count(*), min(_key) FROM test_topic").await,
        "10|\\x6b6579"
    );

    // The group committed its offsets: a second run reads nothing, also after a crash.
    // (Each run waits 8 s for records: joining an empty group takes Kafka's initial
    // rebalance delay of 3 s. The last run, which reads only the SQL row, proves that
    // these runs read nothing because of the committed offsets.)
    assert_eq!(run(&server, "kafka_seed_consumer.py", &["8000"], ""), "");
    server.kill();
    let server = common::start(dir.path());
    assert_eq!(run(&server, "kafka_seed_consumer.py", &["8000"], ""), "");

    // A row inserted with SQL is the next record the group reads.
    let client = server.connect().await;
    client
        .batch_execute(
            "INSERT INTO test_topic (_key, _value) VALUES ('k2'::bytea, 'from sql'::bytea)",
        )
        .await
        .unwrap();
    assert_eq!(
        run(&server, "kafka_seed_consumer.py", &["8000"], ""),
        "b'k2' b'from sql'\n"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_stream_decodes_produced_json_and_encodes_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM clicks (user_id BIGINT KEY, url TEXT NOT NULL, ts TIMESTAMP)
                 WITH (value_format = 'json', partitions = 4);
             INSERT INTO clicks VALUES (42, '/sql', '2026-01-01 00:00:00')",
        )
        .await
        .unwrap();
    let out = run(&server, "kafka_typed.py", &[], "typed ok");

    // SQL sees the produced records as typed rows, and nothing of the refused batch.
    let rows = client
        .simple_query("SELECT user_id, url, ts::text FROM clicks ORDER BY user_id")
        .await
        .unwrap();
    let rows: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(format!(
                "{} {} {}",
                r.get(0).unwrap(),
                r.get(1).unwrap(),
                r.get(2).unwrap()
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        rows,
        [
            "7 /k7 2026-01-02T03:04:05",
            "8 /k8 2026-01-02T03:04:05",
            "9 /k9 2026-01-02T03:04:05",
            "42 /sql 2026-01-01T00:00:00"
        ],
        "{out}"
    );

    // The SQL row is fetched as JSON with its key, in the partition it was written to.
    let sql_partition =
        common::first_row(&server, "SELECT _partition FROM clicks WHERE user_id = 42").await;
    assert!(
        out.contains(&format!(
            "fetched {sql_partition} 42 {{\"url\":\"/sql\",\"ts\":\"2026-01-01T00:00:00\"}}"
        )),
        "{out}"
    );

    // The same key lands in the same partition from SQL and from a Kafka producer.
    for user in [7, 8, 9] {
        client
            .batch_execute(&format!(
                "INSERT INTO clicks VALUES ({user}, '/again', NULL)"
            ))
            .await
            .unwrap();
        let from_sql = common::first_row(
            &server,
            &format!("SELECT _partition FROM clicks WHERE user_id = {user} AND url = '/again'"),
        )
        .await;
        assert!(
            out.contains(&format!("sent {user} {from_sql}\n")),
            "{user}: {out}"
        );
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_round_trips_100_000_idempotent_records_with_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let out = run(&server, "kafka_codecs.py", &["100000"], "zstd ok");
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    for codec in codecs {
        assert!(out.contains(&format!("{codec} ok")), "{out}");
        // SQL reads what was produced, headers included.
        assert_eq!(
            common::first_row(
                &server,
                &format!(
                    "SELECT count(*), count(_key), count(_value), sum(cardinality(_headers)) \
                     FROM codec_{codec}"
                )
            )
            .await,
            "100000|85714|99009|240000"
        );
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_java_client_administers_produces_and_consumes_in_a_group() {
    let classpath = common::kafka_java_classpath();
    let (classpath, _classes) =
        common::compile_java_with("tests/kafka-java", "KafkaClients", &classpath);
    let (_dir, server) = started_with(
        "CREATE STREAM clicks (user_id BIGINT KEY, url TEXT, amount DOUBLE PRECISION) \
             WITH (partitions = 4);
         INSERT INTO clicks SELECT v AS user_id, '/sql/' || v AS url, \
             v::double precision AS amount FROM generate_series(0, 19) AS t(v);",
    )
    .await;
    let mut java = Command::new("java");
    java.args(["-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp"])
        .arg(&classpath)
        .arg("KafkaClients")
        .arg(server.kafka_bootstrap());
    common::succeeded(&server, &mut java, "java ok");
    // What the Java client wrote and committed is what SQL sees.
    assert_eq!(
        common::first_row(
            &server,
            "SELECT count(*), count(DISTINCT _key), min(_offset) FROM java_events"
        )
        .await,
        "20000|500|0"
    );
    assert_eq!(
        common::first_row(
            &server,
            "SELECT count(*), count(*) FILTER (WHERE url LIKE '/java/%'), max(amount) FROM clicks"
        )
        .await,
        "40|20|19.5"
    );
    assert_eq!(
        common::first_row(
            &server,
            "SELECT sum(committed), sum(lag) FROM sys.consumer_groups WHERE \"group\" = 'java-group'"
        )
        .await,
        "20000|0"
    );
    assert_eq!(
        common::first_row(
            &server,
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'java_scratch'"
        )
        .await,
        "0"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiokafka_and_kafkajs_produce_and_consume_with_non_flexible_versions() {
    let (_dir, server) = started_with("CREATE TOPIC aio_events WITH (partitions = 3)").await;
    run(
        &server,
        "kafka_aiokafka.py",
        &["aio_events", "2000"],
        "aiokafka ok",
    );

    // kafkajs creates its topic itself.
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node/kafkajs.js");
    let mut node = Command::new("node");
    node.env("NODE_PATH", common::node_modules())
        .arg(&script)
        .arg(server.kafka_bootstrap())
        .args(["kafkajs_events", "2000"]);
    common::succeeded(&server, &mut node, "kafkajs ok");
    for topic in ["aio_events", "kafkajs_events"] {
        assert_eq!(
            common::first_row(
                &server,
                &format!(
                    "SELECT count(*), count(DISTINCT _offset || ':' || _partition) FROM {topic}"
                )
            )
            .await,
            "2000|2000"
        );
    }
    server.stop();
}

/// Runs Debian's kcat (librdkafka 2.0.2) with `args` and `input`; its stdout and stderr.
fn kcat(server: &common::Server, args: &[&str], input: &str) -> (String, String) {
    let mut kcat = Command::new("kcat");
    kcat.arg("-b").arg(server.kafka_bootstrap()).args(args);
    let out = common::output_with_input(&mut kcat, input, "kcat");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "kcat {args:?} failed\n{stdout}\n{stderr}\n--- server ---\n{}",
        server.log()
    );
    (stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_lists_produces_compressed_consumes_and_joins_a_group() {
    let (_dir, server) = started_with("CREATE TOPIC kcat_events WITH (partitions = 2)").await;
    let (listing, _) = kcat(&server, &["-L"], "");
    assert!(
        listing.contains("1 brokers:")
            && listing.contains("topic \"kcat_events\" with 2 partitions:"),
        "{listing}"
    );

    kcat(
        &server,
        &[
            "-P",
            "-t",
            "kcat_events",
            "-p",
            "0",
            "-K:",
            "-H",
            "origin=kcat",
        ],
        "k1:v1\nk2:v2\nk3:v3\n",
    );
    // Compressible records: librdkafka sends records uncompressed when snappy would not
    // make them smaller; its debug output names the codec of each batch it sent.
    let lines: String = (0..200)
        .map(|i| format!("hello hello hello {i}\n"))
        .collect();
    let (_, debug) = kcat(
        &server,
        &[
            "-P",
            "-t",
            "kcat_events",
            "-p",
            "1",
            "-z",
            "snappy",
            "-d",
            "msg",
        ],
        &lines,
    );
    assert!(debug.contains(", snappy)"), "{debug}");

    let (records, _) = kcat(
        &server,
        &["-C", "-t", "kcat_events", "-e", "-f", "%p %o %k=%s %h\n"],
        "",
    );
    let records: Vec<&str> = records.lines().collect();
    assert_eq!(records.len(), 203, "{records:?}");
    assert!(records.contains(&"0 2 k3=v3 origin=kcat"), "{records:?}");
    assert!(
        records.contains(&"1 199 =hello hello hello 199 "),
        "{records:?}"
    );

    // A group reads everything once; its next run reads nothing.
    let group = [
        "-G",
        "kcat-group",
        "-X",
        "auto.offset.reset=earliest",
        "-e",
        "kcat_events",
    ];
    let (first, _) = kcat(&server, &group, "");
    assert_eq!(first.lines().count(), 203, "{first}");
    let (second, _) = kcat(&server, &group, "");
    assert_eq!(second, "");
    assert_eq!(
        common::first_row(
            &server,
            "SELECT sum(committed) FROM sys.consumer_groups WHERE \"group\" = 'kcat-group'"
        )
        .await,
        "203"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_survives_a_member_killed_with_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute("CREATE TOPIC orders WITH (partitions = 6)")
        .await
        .unwrap();
    run(&server, "kafka_groups.py", &[], "groups ok");
    // The group's offsets are where SQL's subscriptions keep theirs.
    assert_eq!(
        common::first_row(
            &server,
            "SELECT sum(committed), sum(lag) FROM sys.consumer_groups WHERE \"group\" = 'order-processors'"
        )
        .await,
        "6000|0"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_appends_each_record_once_across_ten_kill_9s() {
    const RECORDS: u64 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    // The producer keeps one bootstrap address across restarts: a fixed port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kafka_addr = format!("127.0.0.1:{port}");
    let flags = ["--kafka-addr", kafka_addr.as_str()];
    let mut server = common::start_with(dir.path(), &flags);
    server
        .connect()
        .await
        .batch_execute("CREATE TOPIC idempotent WITH (partitions = 3)")
        .await
        .unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/kafka_idempotent.py");
    let producer = Command::new(common::python())
        .arg(&script)
        .arg(&kafka_addr)
        .arg("idempotent")
        .arg(RECORDS.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut appended_at_kills = vec![];
    for _ in 0..10 {
        // Let some records in, then kill the server in the middle of whatever it is doing.
        let before = common::first_row(&server, "SELECT count(*) FROM idempotent").await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while common::first_row(&server, "SELECT count(*) FROM idempotent").await == before
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        appended_at_kills.push(common::first_row(&server, "SELECT count(*) FROM idempotent").await);
        server.kill();
        server = common::start_with(dir.path(), &flags);
    }
    let out = producer.wait_with_output().unwrap();
    // The kills fell in the middle of the producer's work, not after it.
    let first_kill: u64 = appended_at_kills[0].parse().unwrap();
    assert!(first_kill < RECORDS, "killed at {appended_at_kills:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("sent {RECORDS}")),
        "{stdout}\n{}\n--- server ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    assert_eq!(
        common::first_row(
            &server,
            "SELECT count(*), count(DISTINCT _value) FROM idempotent"
        )
        .await,
        format!("{RECORDS}|{RECORDS}"),
        "records appended when the server was killed: {appended_at_kills:?}"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_and_missing_partitions_are_refused_with_kafka_error_codes() {
    let (_dir, server) = started_with("CREATE TOPIC refusals").await;
    run(&server, "kafka_refusals.py", &[], "refusals ok");
    assert_eq!(
        common::first_row(&server, "SELECT count(*) FROM refusals").await,
        "0"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_client_creates_lists_and_deletes_topics_and_sees_every_group() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM clicks (user_id BIGINT KEY, url TEXT);
             INSERT INTO clicks VALUES (1, '/a'), (2, '/b');
             CREATE SUBSCRIPTION billing FROM clicks WITH (start = 'earliest');
             DECLARE cur SUBSCRIPTION CURSOR FOR billing;
             FETCH 1 FROM cur;
             COMMIT;",
        )
        .await
        .unwrap();
    run(&server, "kafka_admin.py", &[], "admin ok");
    // What the admin client created and deleted is what SQL sees.
    let error = client
        .simple_query("SELECT * FROM admin_a")
        .await
        .unwrap_err();
    let error = error.as_db_error().expect("a server error");
    assert_eq!(error.code().code(), "42P01", "{error:?}");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_reads_and_writes_a_table_as_its_changelog() {
    let (_dir, server) = started_with(
        "CREATE TABLE users (id BIGINT PRIMARY KEY, name TEXT, tier TEXT) WITH (partitions = 3);
         INSERT INTO users VALUES (1, 'ann', 'gold'), (2, 'bob', 'basic'), (3, 'cy', 'basic');
         DELETE FROM users WHERE id = 2;
         CREATE MATERIALIZED VIEW tiers AS SELECT tier, count(*) AS n FROM users GROUP BY tier;",
    )
    .await;
    let out = run(&server, "kafka_table.py", &[], "table ok");
    // Each key's records in order: SQL's and the producer's, tombstones as null values.
    let of_key = |key: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.strip_prefix("fetched "))
            .filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        of_key("1"),
        [
            r#"{"name":"ann","tier":"gold"}"#,
            r#"{"name":"ann","tier":"kafka"}"#,
            r#"{"name":"ann","tier":"again"}"#,
        ],
        "{out}"
    );
    assert_eq!(
        of_key("2"),
        [r#"{"name":"bob","tier":"basic"}"#, "None"],
        "{out}"
    );
    assert_eq!(
        of_key("3"),
        [r#"{"name":"cy","tier":"basic"}"#, "None"],
        "{out}"
    );
    // SQL sees the latest row per key: the producer's upsert, and its delete.
    let client = server.connect().await;
    assert_eq!(
        common::rows(&client, "SELECT id, name, tier FROM users ORDER BY id").await,
        [vec![
            Some("1".to_string()),
            Some("ann".to_string()),
            Some("again".to_string())
        ]]
    );
    // The key index follows records produced over Kafka: key 3 is free again, key 1 taken.
    client
        .batch_execute("INSERT INTO users VALUES (3, 'cy', 'back')")
        .await
        .unwrap();
    let taken = client
        .batch_execute("INSERT INTO users VALUES (1, 'ann', 'dup')")
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&taken), "23505");
    // A view over the table follows what producers wrote as it follows SQL's writes: the
    // upserts moved key 1 through two tiers, the tombstone took key 3 out, SQL put it back.
    client.batch_execute("FLUSH").await.unwrap();
    let pairs = |t: &str, n: &str| vec![Some(t.to_string()), Some(n.to_string())];
    assert_eq!(
        common::rows(&client, "SELECT tier, n FROM tiers ORDER BY tier").await,
        [pairs("again", "1"), pairs("back", "1")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_reads_a_compacted_topic_at_its_original_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--retention-check-interval-ms", "100"];
    let server = common::start_with(dir.path(), &flags);
    let out = run(&server, "kafka_compacted.py", &[], "compacted ok");
    let counts: Vec<u64> = out
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [read, produced] = counts[..] else {
        panic!("{out}");
    };
    assert_eq!(produced, 20 * 60 + 4);
    assert!(read < produced, "{out}");
    // SQL reads the same records; after a crash too, with compaction picked up again.
    let count = "SELECT count(*), max(_offset) FROM prices";
    let at_most = |row: String| {
        let (n, max) = row.split_once('|').unwrap();
        assert!(n.parse::<u64>().unwrap() <= read, "{row}");
        assert_eq!(max, (produced - 1).to_string(), "the last record stays");
    };
    at_most(common::first_row(&server, count).await);
    server.kill();
    let server = common::start_with(dir.path(), &flags);
    at_most(common::first_row(&server, count).await);
    // Every key is there, the deleted ones by their tombstones (kept for a day).
    assert_eq!(
        common::first_row(
            &server,
            "SELECT count(DISTINCT _key), count(*) FILTER (WHERE _value IS NULL) FROM prices"
        )
        .await,
        "20|4"
    );
    server.stop();
}
