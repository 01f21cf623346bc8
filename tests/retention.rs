//! Retention never silently skips a reader, against the real server: continuous queries and
//! subscriptions hold the records they have not read (`sys.partitions` shows it), and past
//! the maximum hold a consumer group whose committed offsets retention deleted, and a
//! continuous query that fell behind it, both fail loudly, naming the lost offsets, instead of
//! reading on from what is left; a reset subscription reads again from the first record kept.

mod common;

use std::time::{Duration, Instant};

use common::{rows, sqlstate};

/// Inserts `statements` INSERTs of 20 rows of about 200 bytes each.
async fn fill(client: &tokio_postgres::Client, stream: &str, statements: usize) {
    for i in 0..statements {
        let values: Vec<String> = (0..20)
            .map(|j| format!("({}, '{}')", i * 20 + j, "x".repeat(200)))
            .collect();
        client
            .batch_execute(&format!(
                "INSERT INTO {stream} VALUES {}",
                values.join(", ")
            ))
            .await
            .unwrap();
    }
}

/// Waits until retention has moved the start of `stream`'s partition past 0; returns it.
async fn log_start_moves(client: &tokio_postgres::Client, stream: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let start: i64 = rows(
            client,
            &format!("SELECT log_start_offset FROM sys.partitions WHERE stream = '{stream}'"),
        )
        .await[0][0]
            .as_deref()
            .unwrap()
            .parse()
            .unwrap();
        if start > 0 {
            return start;
        }
        assert!(Instant::now() < deadline, "retention never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_readers_hold_what_they_have_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with(
        dir.path(),
        &[
            "--retention-check-interval-ms",
            "100",
            "--epoch-interval-ms",
            "2000",
        ],
    );
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM orders (n BIGINT, pad TEXT) WITH (segment_bytes = 4096, retention_bytes = 4096);
             CREATE SUBSCRIPTION billing FROM orders WITH (start = 'earliest');
             CREATE MATERIALIZED VIEW order_count AS SELECT count(*) AS n FROM orders;
             INSERT INTO orders VALUES (0, 'first')",
        )
        .await
        .unwrap();
    fill(&client, "orders", 30).await;
    // Retention runs every 100 ms; the subscription has read nothing, so it keeps it all.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let held = rows(
        &client,
        "SELECT log_start_offset, held_from, held_by, segments FROM sys.partitions WHERE stream = 'orders'",
    )
    .await;
    assert_eq!(held[0][0].as_deref(), Some("0"), "{held:?}");
    assert_eq!(held[0][1].as_deref(), Some("0"), "{held:?}");
    assert_eq!(
        held[0][2].as_deref(),
        Some("subscription billing"),
        "{held:?}"
    );
    assert!(held[0][3].as_deref().unwrap().parse::<i64>().unwrap() > 2);
    client
        .batch_execute("BEGIN; DECLARE c SUBSCRIPTION CURSOR FOR billing")
        .await
        .unwrap();
    assert_eq!(rows(&client, "FETCH 100000 FROM c").await.len(), 601);
    client.batch_execute("COMMIT").await.unwrap();
    // The view, which runs an epoch at most every 2 s, counts every row all the same.
    let deadline = Instant::now() + Duration::from_secs(30);
    while rows(&client, "SELECT n FROM order_count").await[0][0].as_deref() != Some("601") {
        assert!(
            Instant::now() < deadline,
            "the view never counted every row"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Once both have read, retention goes ahead.
    log_start_moves(&client, "orders").await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_past_the_maximum_hold_fail_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with(
        dir.path(),
        &[
            "--retention-check-interval-ms",
            "100",
            "--epoch-interval-ms",
            "8000",
            "--max-retention-hold-bytes",
            "4096",
        ],
    );
    let client = server.connect().await;
    let small = "WITH (segment_bytes = 4096, retention_bytes = 4096)";

    // A consumer group that has read nothing while retention deleted its start.
    client
        .batch_execute(&format!(
            "CREATE STREAM orders (n BIGINT, pad TEXT) {small};
             CREATE SUBSCRIPTION billing FROM orders WITH (start = 'earliest')"
        ))
        .await
        .unwrap();
    fill(&client, "orders", 30).await;
    let start = log_start_moves(&client, "orders").await;
    let e = client
        .batch_execute("BEGIN; DECLARE c SUBSCRIPTION CURSOR FOR billing; FETCH 10 FROM c")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "55000", "{e}");
    let message = e.as_db_error().unwrap().message().to_string();
    assert!(
        message.contains("offsets 0..") && message.contains("deleted by retention"),
        "{message}"
    );
    client.batch_execute("ROLLBACK").await.unwrap();
    // Reset, it reads again from the first record kept, and only that far back.
    client
        .batch_execute("ALTER SUBSCRIPTION billing RESET TO EARLIEST")
        .await
        .unwrap();
    client
        .batch_execute("BEGIN; DECLARE c SUBSCRIPTION CURSOR FOR billing")
        .await
        .unwrap();
    let fetched = rows(&client, "FETCH 100000 FROM c").await;
    // Counted before the COMMIT, which releases the group's hold (and lets retention go on).
    let kept: i64 = rows(&client, "SELECT count(*) FROM orders").await[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(fetched.len() as i64, kept);
    assert!(kept <= 600 - start, "{kept} rows kept, log start {start}");

    // A view whose next epoch would start at offsets retention deleted meanwhile.
    client
        .batch_execute(&format!(
            "CREATE STREAM clicks (n BIGINT, pad TEXT) {small};
             CREATE MATERIALIZED VIEW click_count AS SELECT count(*) AS n FROM clicks;
             INSERT INTO clicks VALUES (0, 'first')"
        ))
        .await
        .unwrap();
    // Its first epoch runs at once; the next waits for --epoch-interval-ms.
    let deadline = Instant::now() + Duration::from_secs(30);
    while rows(&client, "SELECT n FROM click_count")
        .await
        .first()
        .and_then(|r| r[0].clone())
        .as_deref()
        != Some("1")
    {
        assert!(
            Instant::now() < deadline,
            "the view never counted its first row"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fill(&client, "clicks", 30).await;
    log_start_moves(&client, "clicks").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let error = loop {
        let status = rows(
            &client,
            "SELECT state, error FROM sys.queries WHERE name = 'click_count'",
        )
        .await;
        if status[0][0].as_deref() == Some("failed") {
            break status[0][1].clone().unwrap_or_default();
        }
        let shown = rows(&client, "SELECT n FROM click_count").await;
        assert!(
            Instant::now() < deadline,
            "the view read on past the deleted records: {status:?}, count {shown:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        error.contains("offsets 1..") && error.contains("deleted by retention"),
        "{error}"
    );
    assert!(server.log().contains("held more than the maximum"));
    server.stop();
}
