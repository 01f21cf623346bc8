//! The memory limit, against the real server: queries that need more than `--memory-limit`
//! spill to the data directory's `tmp/` or fail with 53200, alone; the server's resident
//! memory stays within the limit plus the slack `docs/operations.md` states, and every other
//! connection carries on.

mod common;

use common::{eventually, query_failure, rows, sqlstate};

/// The server's peak and current resident memory, in MiB (`VmHWM`, `VmRSS`).
fn resident_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            / 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// What the slack above the limit may be: memory the pool does not count (the server's own
/// structures, batches in flight between operators, allocator slack). `docs/operations.md`.
const SLACK_MIB: u64 = 256;
const LIMIT_MIB: u64 = 128;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_over_the_memory_limit_spill_or_fail_with_53200_alone() {
    let dir = tempfile::tempdir().unwrap();
    let limit = format!("{LIMIT_MIB}MiB");
    let server = common::start_with(dir.path(), &["--memory-limit", &limit]);
    let client = server.connect().await;
    let other = server.connect().await;
    client
        .batch_execute("CREATE STREAM s (n BIGINT); INSERT INTO s VALUES (1), (2), (3)")
        .await
        .unwrap();
    let (_, idle) = resident_mib(server.pid());

    // A grouping with millions of groups: its state is far over the limit, and the grouped
    // aggregation spills (sorted runs under tmp/) and finishes with the right answer.
    let grouped = "SELECT count(*), sum(n) FROM (
         SELECT value % 3000000 AS k, count(*) AS n FROM generate_series(1, 6000000) AS g(value) GROUP BY 1)";
    let answer = rows(&client, grouped).await;
    assert_eq!(
        answer,
        vec![vec![Some("3000000".into()), Some("6000000".into())]]
    );

    // A sort of millions of rows by a text key spills too.
    let sorted = "SELECT max(r) FROM (
         SELECT row_number() OVER (ORDER BY md5(CAST(value AS TEXT))) AS r
         FROM generate_series(1, 2000000) AS g(value))";
    assert_eq!(
        rows(&client, sorted).await,
        vec![vec![Some("2000000".into())]]
    );

    // A hash join's build side (here 200 MB of text keys) cannot spill: over the limit, the
    // query fails with 53200, saying so, and the session and every other one go on.
    let joined = "SELECT count(*)
         FROM (SELECT repeat('x', 100) || CAST(value AS TEXT) AS k FROM generate_series(1, 2000000) AS g(value)) a
         JOIN (SELECT repeat('x', 100) || CAST(value AS TEXT) AS k FROM generate_series(1, 2000000) AS g(value)) b
         ON a.k = b.k";
    let error = client.query(joined, &[]).await.unwrap_err();
    assert_eq!(sqlstate(&error), "53200", "{error:?}");
    let text = format!("{error:?}");
    assert!(text.contains("memory"), "{text}");
    assert_eq!(
        rows(&client, "SELECT count(*) FROM s").await[0][0].as_deref(),
        Some("3")
    );
    assert_eq!(
        rows(&other, "SELECT sum(n) FROM s").await[0][0].as_deref(),
        Some("6")
    );

    let (peak, now) = resident_mib(server.pid());
    println!("resident MiB: idle {idle}, peak {peak}, now {now} (limit {LIMIT_MIB})");
    assert!(
        peak <= idle + LIMIT_MIB + SLACK_MIB,
        "peak {peak} MiB over idle {idle} MiB + limit {LIMIT_MIB} + slack {SLACK_MIB}"
    );
    // Nothing is left in the spill directory once the queries are done (a failed query's
    // operators may still be dropping theirs just after the error reached the client).
    let spill = dir.path().join("tmp");
    eventually("the spill files removed", || async {
        walk(&spill).is_empty().then_some(())
    })
    .await;
    server.stop();
}

/// A server with a 32 MiB memory limit and epochs of at most 20,000 records.
fn small_epochs(dir: &std::path::Path) -> common::Server {
    common::start_with(
        dir,
        &["--memory-limit", "32MiB", "--epoch-max-records", "20000"],
    )
}

/// 250,000 distinct words of 100 bytes, into `words`: some 25 MB of values.
const WORDS: &str = "INSERT INTO words SELECT repeat('w', 94) || CAST(100000 + value AS TEXT) \
     FROM generate_series(1, 250000) AS g(value)";

/// Waits for the view `few` (of the lengths of `words`) to hold the [`WORDS`]: a query
/// that did not fail goes on.
async fn few_holds_the_words(client: &tokio_postgres::Client) {
    let expected = vec![vec![Some("100".to_string()), Some("250000".to_string())]];
    eventually("the other view catching up", || async {
        (rows(client, "SELECT len, n FROM few").await == expected).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_whose_state_outgrows_the_limit_fails_with_53200_alone() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with(dir.path(), &["--memory-limit", "32MiB"]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM words (w TEXT);
             CREATE MATERIALIZED VIEW few AS SELECT length(w) AS len, count(*) AS n FROM words GROUP BY 1;
             CREATE MATERIALIZED VIEW every AS SELECT w, count(*) AS n FROM words GROUP BY w",
        )
        .await
        .unwrap();
    // 250,000 distinct 100-byte words: the view keyed by word holds well over 32 MiB.
    client.batch_execute(WORDS).await.unwrap();
    let error = query_failure(&client, "every").await;
    assert!(
        error.contains("out of memory") && error.contains("every"),
        "{error}"
    );
    // A push query grouping the same words holds as much, and its client is told so.
    client
        .batch_execute("SET auto_offset_reset = 'earliest'")
        .await
        .unwrap();
    let push = client
        .batch_execute("SELECT w, count(*) FROM words GROUP BY w EMIT CHANGES LIMIT 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&push), "53200", "{push:?}");
    // The other view, bounded queries and writes go on.
    client
        .batch_execute("INSERT INTO words VALUES ('x')")
        .await
        .unwrap();
    // (FLUSH would fail naming the failed view, so wait for the other one's answer.)
    let expected = vec![
        vec![Some("1".to_string()), Some("1".to_string())],
        vec![Some("100".to_string()), Some("250000".to_string())],
    ];
    eventually("the other view catching up", || async {
        (rows(&client, "SELECT len, n FROM few ORDER BY len").await == expected).then_some(())
    })
    .await;
    let flush = client.batch_execute("FLUSH").await.unwrap_err();
    assert_eq!(sqlstate(&flush), "55000", "{flush:?}");
    assert_eq!(
        rows(&client, "SELECT count(*) FROM words").await[0][0].as_deref(),
        Some("250001")
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_views_groups_are_held_once_and_counted_in_sys_queries() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM words (w TEXT);
             CREATE MATERIALIZED VIEW every AS SELECT w, count(*) AS n FROM words GROUP BY w;
             INSERT INTO words SELECT repeat('w', 94) || CAST(100000 + value % 50000 AS TEXT)
             FROM generate_series(1, 100000) AS g(value);
             FLUSH",
        )
        .await
        .unwrap();
    // One row per group: its 100-byte key once (not again in an index, not again for the
    // view's final values), its partial count and its final count, and its index slot.
    let size = "SELECT groups, state_bytes FROM sys.queries WHERE name = 'every'";
    let held = |r: Vec<Vec<Option<String>>>| -> (u64, u64) {
        let number = |i: usize| r[0][i].as_deref().unwrap().parse::<u64>().unwrap();
        (number(0), number(1))
    };
    let (groups, bytes) = held(rows(&client, size).await);
    assert_eq!(groups, 50_000);
    assert!(bytes / groups < 250, "{} bytes per group", bytes / groups);
    let counts = "SELECT count(*), min(n), max(n) FROM every";
    let expected = vec![vec![
        Some("50000".to_string()),
        Some("2".to_string()),
        Some("2".to_string()),
    ]];
    assert_eq!(rows(&client, counts).await, expected);
    // Restored from its changelog, the view is held the same way and reads the same.
    server.stop();
    let server = common::start(dir.path());
    let client = server.connect().await;
    let (groups, bytes) = held(rows(&client, size).await);
    assert_eq!(groups, 50_000);
    assert!(bytes / groups < 250, "{} bytes per group", bytes / groups);
    assert_eq!(rows(&client, counts).await, expected);
    assert_eq!(
        rows(
            &client,
            "SELECT n FROM every WHERE w = repeat('w', 94) || '100007'"
        )
        .await,
        vec![vec![Some("2".to_string())]]
    );
    server.stop();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// A join of streams keeps the rows of a side nothing bounds: they count against the
/// limit, epoch by epoch, and the query fails alone once they outgrow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_whose_kept_rows_outgrow_the_limit_fails_with_53200_alone() {
    let dir = tempfile::tempdir().unwrap();
    // Small epochs: no epoch's own join comes near the limit, only the rows kept do.
    let server = small_epochs(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM words (w TEXT);
             CREATE STREAM echoes (w TEXT);
             CREATE MATERIALIZED VIEW few AS SELECT length(w) AS len, count(*) AS n FROM words GROUP BY 1;
             CREATE STREAM echoed AS SELECT a.w FROM words a JOIN echoes b ON a.w = b.w",
        )
        .await
        .unwrap();
    // 250,000 distinct 100-byte words on one side, which nothing bounds: the join keeps
    // every one of them for echoes yet to come, well over 32 MiB.
    client.batch_execute(WORDS).await.unwrap();
    client
        .batch_execute("INSERT INTO echoes VALUES ('x')")
        .await
        .unwrap();
    let error = query_failure(&client, "echoed").await;
    assert!(
        error.contains("out of memory") && error.contains(r#"continuous query "echoed""#),
        "{error}"
    );
    // The other query, bounded queries and writes go on.
    few_holds_the_words(&client).await;
    client
        .batch_execute("INSERT INTO echoes VALUES ('y')")
        .await
        .unwrap();
    assert_eq!(
        rows(&client, "SELECT count(*) FROM echoes").await[0][0].as_deref(),
        Some("2")
    );
    server.stop();
}

/// A view over a table keeps each key's row (what an update or delete takes back): those
/// rows count against the limit, epoch by epoch, and the view fails alone once they outgrow
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_over_a_table_whose_kept_rows_outgrow_the_limit_fails_with_53200_alone() {
    let dir = tempfile::tempdir().unwrap();
    // Small epochs: no epoch's own aggregate comes near the limit, only the rows kept do.
    let server = small_epochs(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM words (w TEXT);
             CREATE TABLE docs (id BIGINT PRIMARY KEY, w TEXT);
             CREATE MATERIALIZED VIEW few AS SELECT length(w) AS len, count(*) AS n FROM words GROUP BY 1;
             CREATE MATERIALIZED VIEW lengths AS SELECT length(w) AS len, count(*) AS n FROM docs GROUP BY 1",
        )
        .await
        .unwrap();
    // 250,000 rows of 100-byte values in one group: the view keeps every row, well over
    // 32 MiB.
    client
        .batch_execute(
            "INSERT INTO docs SELECT value, repeat('w', 94) || CAST(100000 + value AS TEXT) \
             FROM generate_series(1, 250000) AS g(value)",
        )
        .await
        .unwrap();
    let error = query_failure(&client, "lengths").await;
    assert!(
        error.contains("out of memory")
            && error.contains(r#"rows of table "docs" kept by continuous query "lengths""#),
        "{error}"
    );
    // The other view, bounded queries and writes go on.
    client.batch_execute(WORDS).await.unwrap();
    few_holds_the_words(&client).await;
    client
        .batch_execute("DELETE FROM docs WHERE id <= 10")
        .await
        .unwrap();
    assert_eq!(
        rows(&client, "SELECT count(*) FROM docs").await[0][0].as_deref(),
        Some("249990")
    );
    server.stop();
}

/// A view of few groups whose `count(DISTINCT …)` keeps every value it counted holds as
/// much as those values: its sets count against the limit, epoch by epoch, and the view
/// fails alone once they outgrow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_values_a_view_keeps_count_against_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    // Small epochs: no epoch's own aggregate comes near the limit, only the sets do.
    let server = small_epochs(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM words (w TEXT);
             CREATE MATERIALIZED VIEW few AS SELECT length(w) AS len, count(*) AS n FROM words GROUP BY 1;
             CREATE MATERIALIZED VIEW spread AS
                 SELECT length(w) AS len, count(DISTINCT w) AS n FROM words GROUP BY 1",
        )
        .await
        .unwrap();
    // 250,000 distinct 100-byte words in one group.
    client.batch_execute(WORDS).await.unwrap();
    // (Without the sets counted, two groups and epochs of 20,000 words fit easily.) The
    // error is the state's own or, when an epoch asks for memory the sets hold, the
    // epoch's naming the state as the largest consumer.
    let error = query_failure(&client, "spread").await;
    assert!(
        error.contains("out of memory") && error.contains(r#"continuous query "spread""#),
        "{error}"
    );
    few_holds_the_words(&client).await;
    server.stop();
}
