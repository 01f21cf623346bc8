//! Continuous queries on the real server: the differential test (every continuous result
//! equals the same SQL run once as a bounded query, for random inputs and random epoch
//! boundaries) and the crash test (exactly-once across SIGKILL while writers keep writing).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Rng, rows};

type Rows = Vec<Vec<Option<String>>>;

async fn sorted(client: &tokio_postgres::Client, sql: &str) -> Rows {
    let mut r = rows(client, sql).await;
    r.sort();
    r
}

/// Views of `events`, each compared with its own SQL run as a bounded query.
const VIEWS: [(&str, &str); 6] = [
    (
        "by_group",
        "SELECT g, count(*) AS n, sum(v) AS s, avg(d) AS a, min(ts) AS lo, max(ts) AS hi, \
         count(DISTINCT v) AS dv, count(d) AS nd, approx_distinct(k) AS ak, bool_and(v > 0) AS pos \
         FROM events GROUP BY g",
    ),
    (
        "by_key_having",
        "SELECT k, sum(v) AS s, max(g) AS mg FROM events GROUP BY k HAVING sum(v) > 40",
    ),
    (
        "global",
        "SELECT count(*) AS n, sum(v) AS s, max(d) AS md, min(g) AS mg FROM events",
    ),
    (
        "by_expression",
        "SELECT v % 5 AS bucket, CASE WHEN d > 1 THEN 'hi' ELSE 'lo' END AS band, count(*) AS n \
         FROM events WHERE g IS NOT NULL GROUP BY v % 5, CASE WHEN d > 1 THEN 'hi' ELSE 'lo' END",
    ),
    (
        "distinct_groups",
        "SELECT DISTINCT g, v % 3 AS r FROM events",
    ),
    (
        "rows_kept",
        "SELECT k, v, upper(g) AS ug FROM events WHERE v % 4 = 0",
    ),
];

/// Stateless derived streams: their rows, as a multiset, equal the bounded query's.
const STREAMS: [(&str, &str); 2] = [
    (
        "doubled",
        "SELECT k, v * 2 AS v2, g || '!' AS g2, ts FROM events WHERE d > 0.5 OR d IS NULL",
    ),
    (
        "exploded",
        "SELECT k, unnest(string_to_array(g, '-')) AS part FROM events",
    ),
];

/// A grouped derived stream (upsert records): its latest record per key equals the bounded
/// aggregate.
const UPSERT: (&str, &str) = (
    "totals",
    "SELECT g, sum(v) AS s, count(*) AS n FROM events GROUP BY g",
);

/// A chain: a derived stream read by a view.
const CHAIN: (&str, &str) = (
    "chained",
    "SELECT g2, count(*) AS n, sum(v2) AS s FROM doubled GROUP BY g2",
);
const CHAIN_BOUNDED: &str = "SELECT g || '!' AS g2, count(*) AS n, sum(v * 2) AS s FROM events \
                             WHERE d > 0.5 OR d IS NULL GROUP BY g || '!'";

fn random_row(rng: &mut Rng, id: u64) -> String {
    let k = rng.below(40);
    let groups = ["a", "b-c", "d-e-f", "g", "h-h"];
    let g = match rng.below(12) {
        0 => "NULL".to_string(),
        n => format!("'{}'", groups[(n % 5) as usize]),
    };
    let v = rng.below(30) as i64 - 5;
    // Quarters: sums of them are exact in binary floating point, in any order.
    let d = match rng.below(10) {
        0 => "NULL".to_string(),
        n => format!("{}", (n * rng.below(13)) as f64 / 4.0),
    };
    let ts = match rng.below(15) {
        0 => "NULL".to_string(),
        _ => format!(
            "TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{} seconds'",
            (id * 7 + rng.below(1000)) % 100_000
        ),
    };
    format!("({k}, {g}, {v}, {d}, {ts})")
}

async fn check_all(client: &tokio_postgres::Client, context: &str) {
    for (name, sql) in VIEWS {
        let view = sorted(client, &format!("SELECT * FROM {name}")).await;
        let bounded = sorted(client, sql).await;
        assert_eq!(view, bounded, "view {name} {context}");
    }
    for (name, sql) in STREAMS {
        let stream = sorted(client, &format!("SELECT * FROM {name}")).await;
        let bounded = sorted(client, sql).await;
        assert_eq!(stream, bounded, "derived stream {name} {context}");
    }
    let (name, sql) = UPSERT;
    let latest = sorted(
        client,
        &format!(
            "SELECT g, last_value(s ORDER BY _offset), last_value(n ORDER BY _offset) FROM {name} GROUP BY g"
        ),
    )
    .await;
    let bounded = sorted(client, sql).await;
    assert_eq!(latest, bounded, "upsert stream {name} {context}");
    let (name, _) = CHAIN;
    let chained = sorted(client, &format!("SELECT * FROM {name}")).await;
    let bounded = sorted(client, CHAIN_BOUNDED).await;
    assert_eq!(chained, bounded, "chained view {name} {context}");
}

async fn create_queries(client: &tokio_postgres::Client) {
    for (name, sql) in VIEWS {
        client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {sql}"))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, sql) in STREAMS.iter().chain([&UPSERT]) {
        client
            .batch_execute(&format!(
                "CREATE STREAM {name} WITH (partitions = 2) AS {sql}"
            ))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let (name, sql) = CHAIN;
    client
        .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {sql}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_results_equal_bounded_queries() {
    let mut rng = Rng::seeded("differential");
    for round in 0..3 {
        // Small epochs and a random pace put epoch boundaries at random places.
        let max_records = (1 + rng.below(60)).to_string();
        let interval = rng.below(15).to_string();
        eprintln!("round {round}: epochs of at most {max_records} records, every {interval} ms");
        let dir = tempfile::tempdir().unwrap();
        let server = common::start_with(
            dir.path(),
            &[
                "--epoch-max-records",
                &max_records,
                "--epoch-interval-ms",
                &interval,
            ],
        );
        let client = server.connect().await;
        client
            .batch_execute(
                "CREATE STREAM events (k BIGINT KEY, g TEXT, v BIGINT, d DOUBLE PRECISION, ts TIMESTAMP) WITH (partitions = 3)",
            )
            .await
            .unwrap();
        // Some input before the queries exist, some after.
        let mut id = 0;
        let mut insert = async |rng: &mut Rng, n: u64| {
            if n == 0 {
                return;
            }
            let values: Vec<String> = (0..n)
                .map(|_| {
                    id += 1;
                    random_row(rng, id)
                })
                .collect();
            client
                .batch_execute(&format!("INSERT INTO events VALUES {}", values.join(", ")))
                .await
                .unwrap();
        };
        let before = rng.below(200);
        insert(&mut rng, before).await;
        create_queries(&client).await;
        for step in 0..25 {
            let n = 1 + rng.below(80);
            insert(&mut rng, n).await;
            if rng.below(4) == 0 {
                client.batch_execute("FLUSH").await.unwrap();
                check_all(&client, &format!("(round {round}, step {step})")).await;
            }
        }
        client.batch_execute("FLUSH").await.unwrap();
        check_all(&client, &format!("(round {round}, end)")).await;
        let epochs = rows(
            &client,
            "SELECT min(epoch), max(epoch), sum(rows_in) FROM sys.queries",
        )
        .await;
        eprintln!("round {round}: {id} rows; epochs per query {:?}", epochs[0]);
        // And after a restart, which restores state from the changelog.
        drop(client);
        server.stop();
        let server = common::start(dir.path());
        let client = server.connect().await;
        check_all(&client, &format!("(round {round}, after restart)")).await;
        let more = 1 + rng.below(100);
        let values: Vec<String> = (0..more)
            .map(|i| random_row(&mut rng, 10_000 + i))
            .collect();
        client
            .batch_execute(&format!(
                "INSERT INTO events VALUES {}; FLUSH",
                values.join(", ")
            ))
            .await
            .unwrap();
        check_all(&client, &format!("(round {round}, restarted and appended)")).await;
        let failed = rows(
            &client,
            "SELECT name, error FROM sys.queries WHERE state <> 'running'",
        )
        .await;
        assert!(failed.is_empty(), "{failed:?}");
        server.stop();
    }
}

/// What the writers know: batches acknowledged, and the one in flight per writer.
#[derive(Default)]
struct Ledger {
    acked: BTreeSet<(i64, i64)>,
    in_flight: BTreeMap<i64, i64>,
}

const ROWS_PER_INSERT: i64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_queries_run_keeps_them_exactly_once() {
    let mut rng = Rng::seeded("continuous crash");
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--epoch-max-records", "50"];
    {
        let server = common::start_with(dir.path(), &flags);
        let client = server.connect().await;
        client
            .batch_execute(
                "CREATE STREAM events (writer INT, seq BIGINT, part INT, k BIGINT KEY, v BIGINT) WITH (partitions = 4);
                 CREATE STREAM copies WITH (partitions = 2) AS
                     SELECT writer, seq, part, v FROM events WHERE part % 2 = 0;
                 CREATE MATERIALIZED VIEW per_key AS
                     SELECT k, count(*) AS n, sum(v) AS s, count(DISTINCT writer) AS w FROM events GROUP BY k;
                 CREATE STREAM key_totals AS SELECT k, sum(v) AS s FROM events GROUP BY k;",
            )
            .await
            .unwrap();
        server.stop();
    }
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut seq_of = [0i64; 3];
    for round in 0..4 {
        let server = common::start_with(dir.path(), &flags);
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = vec![];
        for writer in 0..3i64 {
            let client = server.connect().await;
            let ledger = ledger.clone();
            let stop = stop.clone();
            let mut seq = seq_of[writer as usize];
            writers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    ledger.lock().unwrap().in_flight.insert(writer, seq);
                    let values: Vec<String> = (0..ROWS_PER_INSERT)
                        .map(|part| {
                            format!(
                                "({writer}, {seq}, {part}, {}, {})",
                                (seq * 7 + part) % 13,
                                part + 1
                            )
                        })
                        .collect();
                    let sql = format!("INSERT INTO events VALUES {}", values.join(", "));
                    match client.simple_query(&sql).await {
                        Ok(_) => {
                            let mut l = ledger.lock().unwrap();
                            l.acked.insert((writer, seq));
                            l.in_flight.remove(&writer);
                        }
                        Err(_) => return seq, // the server is gone
                    }
                }
                seq
            }));
        }
        let wait = 200 + rng.below(1500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let observer = server.connect().await;
        let behind = rows(&observer, "SELECT sum(lag) FROM sys.queries").await;
        eprintln!(
            "round {round}: SIGKILL after {wait} ms, queries {} records behind",
            behind[0][0].as_deref().unwrap_or("?")
        );
        server.kill();
        for (writer, handle) in writers.into_iter().enumerate() {
            seq_of[writer] = handle.await.unwrap();
        }
        // Whatever was in flight is decided by what the restarted server has.
        let server = common::start_with(dir.path(), &flags);
        let client = server.connect().await;
        let present: BTreeSet<(i64, i64)> =
            rows(&client, "SELECT DISTINCT writer, seq FROM events")
                .await
                .iter()
                .map(|r| {
                    (
                        r[0].as_ref().unwrap().parse().unwrap(),
                        r[1].as_ref().unwrap().parse().unwrap(),
                    )
                })
                .collect();
        {
            let mut l = ledger.lock().unwrap();
            let lost: Vec<_> = l.acked.difference(&present).collect();
            assert!(lost.is_empty(), "acknowledged inserts lost: {lost:?}");
            let in_flight: Vec<(i64, i64)> = l.in_flight.iter().map(|(w, s)| (*w, *s)).collect();
            for (w, s) in in_flight {
                if present.contains(&(w, s)) {
                    l.acked.insert((w, s));
                }
            }
            l.in_flight.clear();
        }
        client.batch_execute("FLUSH").await.unwrap();
        check_exactly_once(&client, &format!("round {round}")).await;
        drop(client);
        server.stop();
    }
    assert!(
        ledger.lock().unwrap().acked.len() > 20,
        "the writers made progress"
    );
}

async fn check_exactly_once(client: &tokio_postgres::Client, context: &str) {
    let duplicated = rows(
        client,
        "SELECT writer, seq, part, count(*) FROM copies GROUP BY writer, seq, part HAVING count(*) <> 1",
    )
    .await;
    assert!(
        duplicated.is_empty(),
        "{context}: rows of the derived stream duplicated: {duplicated:?}"
    );
    let copies = sorted(client, "SELECT writer, seq, part, v FROM copies").await;
    let expected = sorted(
        client,
        "SELECT writer, seq, part, v FROM events WHERE part % 2 = 0",
    )
    .await;
    assert_eq!(
        copies.len(),
        expected.len(),
        "{context}: derived stream rows"
    );
    assert!(
        copies == expected,
        "{context}: the derived stream differs from its input"
    );
    let view = sorted(client, "SELECT * FROM per_key").await;
    let bounded = sorted(
        client,
        "SELECT k, count(*) AS n, sum(v) AS s, count(DISTINCT writer) AS w FROM events GROUP BY k",
    )
    .await;
    assert_eq!(
        view, bounded,
        "{context}: the view differs from the bounded query"
    );
    let latest = sorted(
        client,
        "SELECT k, last_value(s ORDER BY _offset) FROM key_totals GROUP BY k",
    )
    .await;
    let bounded = sorted(client, "SELECT k, sum(v) FROM events GROUP BY k").await;
    assert_eq!(
        latest, bounded,
        "{context}: the upsert stream's latest values"
    );
    let failed = rows(
        client,
        "SELECT name, error FROM sys.queries WHERE state <> 'running'",
    )
    .await;
    assert!(failed.is_empty(), "{context}: {failed:?}");
    let total: i64 = rows(client, "SELECT count(*) FROM events").await[0][0]
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("{context}: {total} input rows; derived stream, view and upsert stream exact");
}

const SPREAD: &str = "SELECT g, count(*) AS n, count(DISTINCT v) AS vs, \
     count(DISTINCT v % 5) FILTER (WHERE v > 1) AS low, count(DISTINCT t) AS ts FROM spread_in GROUP BY g";

/// A view's changelog starts over with a snapshot of its state once replaying it would read
/// more than twice what the state holds. The snapshot holds every value its groups'
/// `count(DISTINCT …)` counted: restarted from it, the view counts none of them twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_keep_the_values_distinct_counts_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with(dir.path(), &["--log", "info,runnel::engine=debug"]);
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE STREAM spread_in (g BIGINT, v BIGINT, t TEXT) WITH (partitions = 2);
             CREATE MATERIALIZED VIEW spread AS {SPREAD}"
        ))
        .await
        .unwrap();
    // 3,000 groups of 3 values each, again and again: each round's epoch rewrites every
    // group and adds no value, until replaying the changelog reads more than twice the
    // state.
    let round = "INSERT INTO spread_in SELECT i % 3000, i % 9, 'v' || (i % 4) \
                 FROM generate_series(0, 8999) AS s(i); FLUSH";
    for _ in 0..14 {
        client.batch_execute(round).await.unwrap();
    }
    server.wait_for_log("state snapshot");
    let same = async |client: &tokio_postgres::Client, context: &str| {
        let view = sorted(client, "SELECT * FROM spread").await;
        let bounded = sorted(client, SPREAD).await;
        let wrong: Vec<_> = view.iter().zip(&bounded).filter(|(a, b)| a != b).collect();
        assert!(
            view.len() == bounded.len() && wrong.is_empty(),
            "{context}: {} rows, {} expected; {} differ, as {:?}",
            view.len(),
            bounded.len(),
            wrong.len(),
            &wrong[..wrong.len().min(3)]
        );
        assert_eq!(view.len(), 3000, "{context}");
    };
    same(&client, "before the restart").await;
    drop(client);
    server.stop();
    let server = common::start(dir.path());
    let client = server.connect().await;
    same(&client, "restored from the snapshot").await;
    // Values the groups counted before the snapshot, and new ones.
    client
        .batch_execute(
            "INSERT INTO spread_in SELECT i % 3000, i % 11, 'w' || (i % 2) \
             FROM generate_series(0, 5999) AS s(i); FLUSH",
        )
        .await
        .unwrap();
    same(&client, "after new rows").await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_statements_describe_queries_and_views() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM clicks (user_id BIGINT, url TEXT);
             CREATE MATERIALIZED VIEW per_user AS SELECT user_id, count(*) AS n FROM clicks GROUP BY user_id;
             INSERT INTO clicks VALUES (1, '/a');
             FLUSH;",
        )
        .await
        .unwrap();
    let columns = |sql: &'static str| {
        let client = &client;
        async move {
            let statement = client.prepare(sql).await.unwrap();
            statement
                .columns()
                .iter()
                .map(|c| c.name().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        columns("SHOW QUERIES").await,
        [
            "name",
            "kind",
            "input",
            "state",
            "epoch",
            "lag",
            "rows_per_sec",
            "last_checkpoint",
            "error"
        ]
    );
    assert_eq!(
        columns("SHOW MATERIALIZED VIEWS").await,
        [
            "name",
            "state",
            "epoch",
            "lag",
            "last_checkpoint",
            "definition"
        ]
    );
    let views = rows(&client, "SHOW MATERIALIZED VIEWS").await;
    assert_eq!(views.len(), 1);
    assert_eq!(views[0][0].as_deref(), Some("per_user"));
    assert_eq!(views[0][1].as_deref(), Some("running"));
    assert!(views[0][4].is_some(), "a checkpoint was committed");
    let queries = rows(&client, "SHOW QUERIES").await;
    assert_eq!(queries[0][0].as_deref(), Some("per_user"));
    assert_eq!(queries[0][5].as_deref(), Some("0"), "no lag after FLUSH");
    // Through the extended protocol too, with a parameter.
    let n: i64 = client
        .query_one("SELECT n FROM per_user WHERE user_id = $1", &[&1i64])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    server.stop();
}

/// What cannot run continuously is refused at `CREATE` with `0A000` and a message naming the
/// part and why; a query that fails while running names itself and its error in `FLUSH`,
/// `sys.queries` and the server log. (The `.slt` files assert these by SQLSTATE, so that the
/// stock runner, which does not show messages, runs them too.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_failures_say_what_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM clicks (user_id BIGINT KEY, url TEXT, amount DOUBLE PRECISION);
             CREATE STREAM other (user_id BIGINT KEY);
             INSERT INTO clicks VALUES (1, '/a', 1), (42, '/b', 2);",
        )
        .await
        .unwrap();
    let refused = [
        ("SELECT * FROM clicks ORDER BY amount", "ORDER BY"),
        ("SELECT * FROM clicks LIMIT 3", "LIMIT/OFFSET"),
        (
            "SELECT user_id, row_number() OVER (ORDER BY amount) FROM clicks",
            "window functions",
        ),
        (
            "SELECT n, max(user_id) FROM (SELECT user_id, count(*) AS n FROM clicks GROUP BY user_id) GROUP BY n",
            "max(…) over an inner aggregate's groups cannot be maintained",
        ),
        (
            "SELECT n, count(*) FROM (SELECT user_id, count(*) AS n FROM clicks GROUP BY user_id) GROUP BY n EMIT ON WINDOW CLOSE",
            "no window closes",
        ),
        (
            "SELECT c.user_id FROM clicks c LEFT JOIN other o ON c.user_id = o.user_id",
            "LEFT join of two streams",
        ),
        (
            "SELECT user_id FROM clicks UNION ALL SELECT user_id FROM clicks",
            "UNION",
        ),
    ];
    for (query, part) in refused {
        let e = client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW v AS {query}"))
            .await
            .expect_err(query);
        assert_eq!(common::sqlstate(&e), "0A000", "{query}: {e:?}");
        let message = e.as_db_error().unwrap().message();
        assert!(message.contains(part), "{query}: {message}");
    }
    let e = client
        .batch_execute(
            "CREATE STREAM s AS SELECT user_id, sum(amount) AS t FROM clicks GROUP BY user_id HAVING sum(amount) > 1",
        )
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "0A000");
    let message = e.as_db_error().unwrap().message();
    assert!(
        message.contains("HAVING") && message.contains("retracted"),
        "{message}"
    );

    client
        .batch_execute(
            "CREATE STREAM ratios AS SELECT user_id, 100 / (user_id - 42) AS r FROM clicks",
        )
        .await
        .unwrap();
    let e = client.batch_execute("FLUSH").await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "55000");
    let message = e.as_db_error().unwrap().message();
    assert!(
        message.contains("\"ratios\"") && message.contains("division by zero"),
        "{message}"
    );
    let status = rows(
        &client,
        "SELECT state, error FROM sys.queries WHERE name = 'ratios'",
    )
    .await;
    assert_eq!(status[0][0].as_deref(), Some("failed"));
    assert!(
        status[0][1]
            .as_deref()
            .unwrap()
            .contains("division by zero")
    );
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("ratios") && l.contains("division by zero")),
        "{log}"
    );
    server.stop();
}
