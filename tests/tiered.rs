//! Tiered storage against an S3-compatible server the test starts (moto's, from PyPI): a
//! stream's sealed segments go to the bucket and leave the disk; a bounded scan, a view
//! created afterwards, a subscription and a Kafka consumer read every record from there;
//! `sys.partitions` shows what is where. Then the server stops, its data directory is
//! deleted, and a server on an empty one finds every stream, view, record and committed
//! offset in the bucket.

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROWS: i64 = 50_000;

/// moto's S3 server on a free port, with a bucket `runnel`; killed when dropped.
struct S3 {
    child: Child,
    endpoint: String,
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_s3() -> S3 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(common::python())
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto[server] must be installed (tests/python/requirements.txt)");
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto's server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let s3 = S3 { child, endpoint };
    let created = Command::new(common::python())
        .args([
            "-c",
            "import sys, boto3; boto3.client('s3', endpoint_url=sys.argv[1], \
             aws_access_key_id='test', aws_secret_access_key='test', \
             region_name='us-east-1').create_bucket(Bucket='runnel')",
            &s3.endpoint,
        ])
        .status()
        .unwrap();
    assert!(created.success(), "creating the bucket");
    s3
}

fn aws_env(s3: &S3) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", s3.endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
}

fn start(dir: &std::path::Path, s3: &S3) -> common::Server {
    let env = aws_env(s3);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    common::start_with_env(
        dir,
        &[
            "--object-store",
            "s3://runnel/node-a",
            "--local-retention-bytes",
            "0",
            "--upload-interval-ms",
            "100",
            "--checkpoint-interval-ms",
            "2000",
        ],
        &env,
    )
}

async fn one(client: &tokio_postgres::Client, sql: &str) -> String {
    let rows = client.simple_query(sql).await.unwrap();
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("a row from {sql}"))
}

/// Polls `sql`'s first value until `done` holds for it.
async fn until(client: &tokio_postgres::Client, sql: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let value = one(client, sql).await;
        if done(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{sql} stayed at {value}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Fetches what the subscription `billing` has not read yet, and commits: how many rows.
async fn fetch_billing(client: &tokio_postgres::Client) -> usize {
    let fetched = client
        .simple_query(
            "BEGIN; DECLARE cur SUBSCRIPTION CURSOR FOR billing; FETCH ALL FROM cur; COMMIT",
        )
        .await
        .unwrap();
    fetched
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count()
}

/// Records of `topic` a kafka-python consumer reads from the earliest offset.
fn kafka_count(server: &common::Server, topic: &str) -> i64 {
    let script = "import sys\n\
        from kafka import KafkaConsumer\n\
        c = KafkaConsumer(sys.argv[2], bootstrap_servers=sys.argv[1], auto_offset_reset='earliest',\n\
                          enable_auto_commit=False, consumer_timeout_ms=10000)\n\
        print(sum(1 for _ in c))\n";
    let out = Command::new(common::python())
        .args(["-c", script, &server.kafka_bootstrap(), topic])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_live_in_the_bucket_and_a_new_machine_finds_everything() {
    let s3 = start_s3();
    let first = tempfile::tempdir().unwrap();
    let server = start(first.path(), &s3);
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE STREAM clicks (user_id BIGINT KEY, url TEXT)
                 WITH (partitions = 2, segment_bytes = 65536);
             INSERT INTO clicks SELECT i % 100, '/page/' || i FROM generate_series(1, {ROWS}) AS t(i);
             CREATE MATERIALIZED VIEW per_user AS
                 SELECT user_id, count(*) AS n FROM clicks GROUP BY user_id;
             CREATE SUBSCRIPTION billing FROM clicks WITH (start = 'earliest');
             FLUSH"
        ))
        .await
        .unwrap();

    // Sealed segments go to the bucket and (local retention 0) leave the disk.
    let moved = "SELECT sum(remote_segments) > 0 AND sum(local_bytes) < sum(bytes)
                 FROM sys.partitions WHERE topic = 'clicks'";
    until(&client, moved, |v| v == "t").await;
    let remote = one(
        &client,
        "SELECT sum(remote_bytes) FROM sys.partitions WHERE topic = 'clicks'",
    )
    .await;
    assert!(remote.parse::<i64>().unwrap() > 65536, "{remote}");

    // Every reader finds every record.
    let expected_sum: i64 = (1..=ROWS).map(|i| i % 100).sum();
    assert_eq!(
        one(
            &client,
            "SELECT count(*) || ' ' || sum(user_id) FROM clicks"
        )
        .await,
        format!("{ROWS} {expected_sum}")
    );
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW late_view AS SELECT count(*) AS n FROM clicks; FLUSH",
        )
        .await
        .unwrap();
    assert_eq!(
        one(&client, "SELECT n FROM late_view").await,
        ROWS.to_string()
    );
    assert_eq!(
        fetch_billing(&client).await as i64,
        ROWS,
        "the subscription read every record"
    );
    assert_eq!(kafka_count(&server, "clicks"), ROWS);

    // More records after the first checkpoint, then a clean stop: the last checkpoint.
    client
        .batch_execute("INSERT INTO clicks VALUES (7, '/after'); FLUSH")
        .await
        .unwrap();
    drop(client);
    server.stop();

    // A new machine: an empty data directory and the bucket.
    drop(first);
    let second = tempfile::tempdir().unwrap();
    let server = start(second.path(), &s3);
    assert!(
        server
            .log()
            .contains("restoring the data directory from the object store"),
        "{}",
        server.log()
    );
    let client = server.connect().await;
    assert_eq!(
        one(&client, "SELECT count(*) FROM clicks").await,
        (ROWS + 1).to_string()
    );
    client.batch_execute("FLUSH").await.unwrap();
    assert_eq!(
        one(&client, "SELECT sum(n) FROM per_user").await,
        (ROWS + 1).to_string()
    );
    assert_eq!(
        one(&client, "SELECT n FROM late_view").await,
        (ROWS + 1).to_string()
    );
    // The subscription's committed offsets came along: only the record after them is new.
    assert_eq!(
        fetch_billing(&client).await,
        1,
        "only the record after the committed offsets"
    );
    // And it goes on.
    client
        .batch_execute("INSERT INTO clicks VALUES (8, '/on'); FLUSH")
        .await
        .unwrap();
    assert_eq!(
        one(&client, "SELECT count(*) FROM clicks").await,
        (ROWS + 2).to_string()
    );
    server.stop();
}
