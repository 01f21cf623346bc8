//! Retention never silently skips a reader, against the real server: continuous queries and
//! subscriptions hold the records they have not read (`sys.partitions` shows it), and past
//! the maximum hold a consumer group whose committed offsets retention deleted, and a
//! continuous query that fell behind it, both fail loudly, naming the lost offsets, instead of
//! reading on from what is left; a reset subscription reads again from the first record kept.

mod common;

use common::{eventually, query_failure, rows, sqlstate};

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

/// The log start offset of `stream`'s (only) partition.
async fn log_start(client: &tokio_postgres::Client, stream: &str) -> i64 {
    rows(
        client,
        &format!("SELECT log_start_offset FROM sys.partitions WHERE stream = '{stream}'"),
    )
    .await[0][0]
        .as_deref()
        .expect("a log start")
        .parse()
        .expect("a number")
}

/// Waits until retention has moved the start of `stream`'s partition past 0; returns it.
async fn log_start_moves(client: &tokio_postgres::Client, stream: &str) -> i64 {
    eventually(&format!("retention deleting from {stream}"), || async {
        let start = log_start(client, stream).await;
        (start > 0).then_some(start)
    })
    .await
}

/// Waits until view `name` shows `n` in its one row.
async fn view_counts(client: &tokio_postgres::Client, name: &str, n: &str) {
    eventually(&format!("{name} counting {n}"), || async {
        let shown = rows(client, &format!("SELECT n FROM {name}")).await;
        (shown.first().and_then(|r| r[0].as_deref()) == Some(n)).then_some(())
    })
    .await
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
    // The view's first epoch runs at once (its next waits 2 s): it holds from offset 1 on,
    // the subscription from 0.
    view_counts(&client, "order_count", "1").await;
    // A stream like it that no one reads: once retention has deleted from it, retention has
    // run over both.
    client
        .batch_execute(
            "CREATE STREAM unread (n BIGINT, pad TEXT) WITH (segment_bytes = 4096, retention_bytes = 4096)",
        )
        .await
        .unwrap();
    fill(&client, "orders", 30).await;
    fill(&client, "unread", 30).await;
    log_start_moves(&client, "unread").await;
    // The subscription has read nothing, so orders keeps it all.
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
    view_counts(&client, "order_count", "601").await;
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
    // Retention deletes as it goes; a pass after the last INSERT (seen on a stream filled
    // later) leaves orders as it stays.
    client
        .batch_execute(&format!("CREATE STREAM later (n BIGINT, pad TEXT) {small}"))
        .await
        .unwrap();
    fill(&client, "later", 30).await;
    log_start_moves(&client, "later").await;
    let start = log_start(&client, "orders").await;
    assert!(
        start > 0,
        "retention deleted from orders past the maximum hold"
    );
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
    view_counts(&client, "click_count", "1").await;
    fill(&client, "clicks", 30).await;
    log_start_moves(&client, "clicks").await;
    let error = query_failure(&client, "click_count").await;
    assert!(
        error.contains("offsets 1..") && error.contains("deleted by retention"),
        "{error}"
    );
    server.wait_for_log("held more than the maximum");
    server.stop();
}
