//! Long work seen while it runs, from another connection: a `COPY … FROM STDIN` in
//! `sys.copies`, a view catching up in `sys.queries` (its backlog, rate and the time it
//! should take).

mod common;

use std::time::{Duration, Instant};

use futures::SinkExt;

/// `sys.copies`' row for the COPY into `relation`, once `ready` holds for it.
async fn copy_row(
    client: &tokio_postgres::Client,
    relation: &str,
    ready: impl Fn(&tokio_postgres::Row) -> bool,
) -> tokio_postgres::Row {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = client
            .query(
                "SELECT session, user_name, relation, command, type, bytes_processed,
                        tuples_processed, tuples_committed
                 FROM sys.copies WHERE relation = $1",
                &[&relation],
            )
            .await
            .unwrap();
        if let Some(row) = rows.into_iter().find(&ready) {
            return row;
        }
        assert!(Instant::now() < deadline, "the COPY never showed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_copy_shows_its_progress() {
    let dir = tempfile::tempdir().unwrap();
    // Chunks of 1 MiB commit as the COPY goes.
    let server = common::start_with(dir.path(), &["--copy-chunk-bytes", "1048576"]);
    let writer = server.connect().await;
    let watcher = server.connect().await;
    writer
        .batch_execute("CREATE STREAM events (id BIGINT, pad TEXT)")
        .await
        .unwrap();
    let sink = writer
        .copy_in::<_, bytes::Bytes>("COPY events FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    let chunk = |from: u32| -> String {
        // About 1.5 MB.
        (from..from + 40_000)
            .map(|i| format!("{i},{}\n", "x".repeat(30)))
            .collect()
    };
    let first = chunk(0);
    sink.send(bytes::Bytes::from(first.clone())).await.unwrap();
    let bytes = first.len() as i64;
    // More than a chunk: what was parsed is committed when the message has been taken.
    let row = copy_row(&watcher, "events", |r| {
        r.get::<_, i64>(5) == bytes && r.get::<_, i64>(6) == 40_000 && r.get::<_, i64>(7) > 0
    })
    .await;
    assert_eq!(row.get::<_, String>(1), "runnel");
    assert_eq!(row.get::<_, String>(3), "COPY FROM");
    assert_eq!(row.get::<_, String>(4), "PIPE");
    assert_eq!(
        row.get::<_, i64>(6),
        40_000,
        "every row of the first message parsed"
    );
    assert!(row.get::<_, i64>(7) <= 40_000);

    let second = chunk(40_000);
    sink.send(bytes::Bytes::from(second.clone())).await.unwrap();
    let total = bytes + second.len() as i64;
    let row = copy_row(&watcher, "events", |r| {
        r.get::<_, i64>(5) == total && r.get::<_, i64>(6) == 80_000
    })
    .await;
    assert!(
        row.get::<_, i64>(7) >= 40_000,
        "the first message's rows committed"
    );
    assert_eq!(sink.finish().await.unwrap(), 80_000);

    let running: i64 = watcher
        .query_one("SELECT count(*) FROM sys.copies", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(running, 0, "a finished COPY leaves sys.copies");

    // A COPY that fails leaves it too.
    let sink = writer
        .copy_in::<_, bytes::Bytes>("COPY events FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from("1,a\nnot a number,b\n"))
        .await
        .unwrap();
    assert!(sink.finish().await.is_err());
    let running: i64 = watcher
        .query_one("SELECT count(*) FROM sys.copies", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(running, 0, "a failed COPY leaves sys.copies");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catching_up_view_shows_its_backlog_rate_and_time_left() {
    let dir = tempfile::tempdir().unwrap();
    // At most 1,000 records per epoch, 5 epochs a second: 20,000 records take 4 s.
    let server = common::start_with(
        dir.path(),
        &["--epoch-max-records", "1000", "--epoch-interval-ms", "200"],
    );
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM clicks (user_id BIGINT, url TEXT);
             INSERT INTO clicks SELECT i % 10, 'u' FROM generate_series(1, 20000) AS t(i);
             CREATE MATERIALIZED VIEW per_user AS
                 SELECT user_id, count(*) AS n FROM clicks GROUP BY user_id",
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let row = client
            .query_one(
                "SELECT lag, rows_per_sec, lag_secs, catch_up_secs FROM sys.queries
                 WHERE name = 'per_user'",
                &[],
            )
            .await
            .unwrap();
        let (lag, rate, behind, left): (i64, f64, f64, Option<f64>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        // (Before its first epoch the query has read nothing and shows no rate.)
        if rate > 0.0 {
            assert!(lag > 0, "caught up before the progress was seen");
            if let Some(left) = left {
                break (lag, rate, behind, left);
            }
        }
        assert!(Instant::now() < deadline, "no estimate while catching up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (lag, rate, behind, left) = seen;
    assert!(lag < 20_000, "some read: {lag}");
    assert!(rate > 0.0 && behind > 0.0, "{seen:?}");
    // The backlog shrinks by about 5,000 a second: what is left takes about lag / 5,000 s.
    assert!(left > 0.0 && left < 60.0, "{seen:?}");

    client.batch_execute("FLUSH").await.unwrap();
    let row = client
        .query_one(
            "SELECT lag, lag_secs, catch_up_secs FROM sys.queries WHERE name = 'per_user'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0);
    assert_eq!(row.get::<_, f64>(1), 0.0);
    assert_eq!(row.get::<_, Option<f64>>(2), Some(0.0));
    server.stop();
}
