//! Spark Structured Streaming (pyspark with Spark's own `spark-sql-kafka-0-10` source and
//! sink, from Maven Central) reading a Runnel stream that SQL writes, keeping a per-key running
//! sum, and writing it back to another Runnel stream that SQL reads.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// One run of the Spark job over what the topic holds now; how many records it read.
fn run_job(server: &common::Server, checkpoint: &std::path::Path, jars: &str) -> u64 {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/spark_running_sum.py");
    let mut job = Command::new(common::python());
    job.env("SPARK_LOCAL_IP", "127.0.0.1")
        .arg(&script)
        .arg(server.kafka_bootstrap())
        .arg(checkpoint)
        .arg(jars);
    let stdout = common::succeeded(server, &mut job, "spark ok ");
    let read = stdout.lines().find_map(|l| l.strip_prefix("spark ok "));
    read.expect("the number of records read").parse().unwrap()
}

/// Users whose latest running sum from Spark differs from SQL's sum of their payments (the
/// sums only grow, so the latest is the largest).
const MISMATCHES: &str = "SELECT count(*) FROM \
     (SELECT user_id, max(total) AS total FROM totals GROUP BY user_id) AS spark \
     FULL JOIN (SELECT user_id, sum(amount) AS total FROM payments GROUP BY user_id) AS runnel \
     ON spark.user_id = runnel.user_id \
     WHERE spark.total IS DISTINCT FROM runnel.total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spark_keeps_a_running_sum_from_one_runnel_stream_to_another() {
    let jars = common::spark_kafka_jars();
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM payments (user_id TEXT KEY, amount BIGINT) WITH (partitions = 3);
             CREATE STREAM totals (user_id TEXT KEY, total BIGINT);",
        )
        .await
        .unwrap();
    // Payments from ten users; then more, one of them from a new user: the job's second run
    // reads only those and carries its sums on from its checkpoint.
    let runs = [
        (
            "SELECT 'u' || (v % 10) AS user_id, v AS amount FROM generate_series(1, 300) AS t(v)",
            300,
            "10|10",
        ),
        (
            "SELECT 'u' || (v % 11) AS user_id, v AS amount FROM generate_series(1, 100) AS t(v)",
            100,
            "11|21",
        ),
    ];
    for (payments, read, totals) in runs {
        client
            .batch_execute(&format!("INSERT INTO payments {payments}"))
            .await
            .unwrap();
        assert_eq!(run_job(&server, checkpoint.path(), &jars), read);
        assert_eq!(common::first_row(&server, MISMATCHES).await, "0");
        assert_eq!(
            common::first_row(
                &server,
                "SELECT count(DISTINCT user_id), count(*) FROM totals"
            )
            .await,
            totals
        );
    }
    server.stop();
}
