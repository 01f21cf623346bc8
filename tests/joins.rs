//! Joins in continuous queries, against their oracles.
//!
//! A lookup join reads its table as it is when an epoch runs. The test makes that moment
//! known: each round changes the table, then appends the round's events, then waits for
//! every query to read them (`FLUSH`), and changes nothing until then. So the events of a
//! round were joined with the table as it is after the round's changes, which is what the
//! same join, run once as a bounded query over the round's events, returns at that point:
//! the oracle. The rounds change the table at random (inserts, upserts, updates, deletes),
//! and some end with `kill -9` before their events are read, so that the epochs reading
//! them run again after the restart, still exactly once.
//!
//! A join of two streams (inner, append-only inputs) has a simpler oracle: whatever the
//! epochs were, its output is the same join run once, as a bounded query, over everything
//! both streams hold. So has a Top-N (`ROW_NUMBER() … <= N`) over a stream or a join, and
//! an aggregate over an aggregate of a join, whose inner groups change as it goes.

mod common;

use std::collections::BTreeSet;

use common::{Rng, rows};

type Rows = Vec<Vec<Option<String>>>;

const KEYS: u64 = 40;

/// The join each query makes, as a bounded query over the events of `round`.
fn oracle(round: u64) -> String {
    format!(
        "SELECT e.round, e.seq, e.k, d.name, d.tier FROM ev e \
         LEFT JOIN dim d ON e.k = d.id WHERE e.round = {round} ORDER BY e.seq"
    )
}

/// The join with the table of composite keys, as a bounded query over `round`'s events.
fn pairs_oracle(round: u64) -> String {
    format!(
        "SELECT e.round, e.seq, p.w FROM ev e JOIN pairs p ON p.a = e.k AND p.b = e.tag \
         WHERE e.round = {round} ORDER BY e.seq"
    )
}

/// A random change of the dimension table.
async fn change_table(client: &tokio_postgres::Client, rng: &mut Rng) {
    let id = rng.below(KEYS);
    let tier = rng.below(3);
    let name = format!("n{}", rng.below(1000));
    let sql = match rng.below(4) {
        0 => format!(
            "INSERT INTO dim VALUES ({id}, '{name}', {tier}) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, tier = excluded.tier"
        ),
        1 => format!(
            "UPDATE dim SET tier = {tier}, name = '{name}' WHERE id % 7 = {}",
            id % 7
        ),
        2 => format!("DELETE FROM dim WHERE id = {id}"),
        _ => format!("INSERT INTO dim VALUES ({id}, '{name}', {tier}) ON CONFLICT DO NOTHING"),
    };
    client.batch_execute(&sql).await.unwrap();
    let tag = format!("t{}", rng.below(3));
    let sql = match rng.below(3) {
        0 => format!("DELETE FROM pairs WHERE a = {id} AND b = '{tag}'"),
        _ => format!(
            "INSERT INTO pairs VALUES ({id}, '{tag}', {}) ON CONFLICT (a, b) DO UPDATE SET w = excluded.w",
            rng.below(1000)
        ),
    };
    client.batch_execute(&sql).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_joins_read_the_table_as_of_each_epoch_exactly_once_across_kill_9() {
    let mut rng = Rng::seeded("lookup joins");
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE dim (id BIGINT PRIMARY KEY, name TEXT NOT NULL, tier INT NOT NULL) WITH (partitions = 2);
             CREATE TABLE pairs (a INT, b TEXT, w BIGINT, PRIMARY KEY (a, b)) WITH (partitions = 3);
             CREATE STREAM ev (k BIGINT, tag TEXT, round BIGINT, seq BIGINT) WITH (partitions = 3);
             CREATE STREAM enriched AS
                 SELECT e.round, e.seq, e.k, d.name, d.tier
                 FROM ev e LEFT JOIN dim FOR SYSTEM_TIME AS OF PROCTIME() d ON e.k = d.id;
             CREATE STREAM top_tier AS
                 SELECT e.round, e.seq FROM ev e JOIN dim d ON e.k = d.id WHERE d.tier = 2;
             CREATE MATERIALIZED VIEW per_tier AS
                 SELECT d.tier, count(*) AS n, sum(e.k) AS keys
                 FROM ev e JOIN dim d ON e.k = d.id GROUP BY d.tier;
             CREATE STREAM paired AS
                 SELECT e.round, e.seq, p.w FROM ev e JOIN pairs p ON p.a = e.k AND p.b = e.tag;",
        )
        .await
        .unwrap();
    let mut expected: Rows = vec![];
    let mut expected_pairs: Rows = vec![];
    let mut seq = 0u64;
    for round in 0..10u64 {
        let mut client = server.connect().await;
        for _ in 0..1 + rng.below(12) {
            change_table(&client, &mut rng).await;
        }
        let events: Vec<String> = (0..1 + rng.below(30))
            .map(|_| {
                seq += 1;
                format!(
                    "({}, 't{}', {round}, {seq})",
                    rng.below(KEYS + 5),
                    rng.below(4)
                )
            })
            .collect();
        client
            .batch_execute(&format!("INSERT INTO ev VALUES {}", events.join(", ")))
            .await
            .unwrap();
        if round % 3 == 1 {
            // The events are acknowledged, perhaps not read: the epochs that read them run
            // after the restart, over the table as it still is.
            drop(client);
            server.kill();
            server = common::start(dir.path());
            client = server.connect().await;
        }
        client.batch_execute("FLUSH").await.unwrap();
        expected.extend(rows(&client, &oracle(round)).await);
        expected_pairs.extend(rows(&client, &pairs_oracle(round)).await);
    }
    let client = server.connect().await;
    let got = rows(
        &client,
        "SELECT round, seq, k, name, tier FROM enriched ORDER BY round, seq",
    )
    .await;
    assert_eq!(got, expected, "the left join, each row once");

    let tier: Rows = expected
        .iter()
        .filter(|r| r[4].as_deref() == Some("2"))
        .map(|r| r[..2].to_vec())
        .collect();
    let got = rows(
        &client,
        "SELECT round, seq FROM top_tier ORDER BY round, seq",
    )
    .await;
    assert_eq!(got, tier, "the inner join, filtered on the table's column");

    let got = rows(
        &client,
        "SELECT round, seq, w FROM paired ORDER BY round, seq",
    )
    .await;
    assert_eq!(
        got, expected_pairs,
        "the join on a composite key, INT against BIGINT"
    );
    assert!(!expected_pairs.is_empty(), "some events found their pair");

    // The view aggregates the joined rows as they were joined.
    let got = rows(&client, "SELECT tier, n, keys FROM per_tier ORDER BY tier").await;
    let want = rows(
        &client,
        "SELECT tier, count(*), sum(k) FROM enriched WHERE tier IS NOT NULL GROUP BY tier ORDER BY tier",
    )
    .await;
    assert_eq!(got, want, "the view over the join");
    let matched: BTreeSet<&Option<String>> = expected.iter().map(|r| &r[4]).collect();
    assert!(
        matched.len() > 1,
        "the rounds joined rows both with and without a match: {matched:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_joins_refuse_what_an_epoch_cannot_finish() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE dim (id BIGINT PRIMARY KEY, name TEXT);
             CREATE STREAM ev (k BIGINT);
             CREATE STREAM other (k BIGINT);",
        )
        .await
        .unwrap();
    let refused = [
        (
            "CREATE STREAM a AS SELECT * FROM ev e RIGHT JOIN dim d ON e.k = d.id",
            "RIGHT join of the stream",
        ),
        (
            "CREATE STREAM a AS SELECT * FROM ev e FULL JOIN dim d ON e.k = d.id",
            "FULL join of the stream",
        ),
        (
            "CREATE STREAM a AS SELECT * FROM dim d WHERE d.id IN (SELECT k FROM ev)",
            "keeps the table's rows",
        ),
        (
            "CREATE STREAM a AS SELECT * FROM ev e JOIN dim FOR SYSTEM_TIME AS OF now() d ON e.k = d.id",
            "PROCTIME() only",
        ),
        (
            "CREATE STREAM a AS SELECT e.k FROM ev e LEFT JOIN other o ON e.k = o.k",
            "LEFT join of two streams",
        ),
        (
            "CREATE STREAM a AS SELECT e.k FROM ev e JOIN other o ON e.k < o.k",
            "needs an equality",
        ),
        (
            "CREATE STREAM a AS SELECT k FROM ev UNION ALL SELECT k FROM other",
            "UNION of streams",
        ),
        (
            "CREATE STREAM a AS SELECT * FROM dim",
            "derived stream over table \"dim\"",
        ),
    ];
    for (sql, why) in refused {
        let e = client.batch_execute(sql).await.unwrap_err();
        let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
        assert_eq!(db.code().code(), "0A000", "{sql}: {}", db.message());
        assert!(db.message().contains(why), "{sql}: {}", db.message());
    }
    // The connection carries on, and nothing was created.
    let names = rows(&client, "SELECT name FROM sys.queries").await;
    assert!(names.is_empty(), "{names:?}");
}

/// The rows of `continuous` (reading a query's output) and of `bounded` (its oracle), which
/// must be the same.
async fn same(
    client: &tokio_postgres::Client,
    continuous: &str,
    bounded: &str,
    what: &str,
) -> Rows {
    let got = rows(client, continuous).await;
    let want = rows(client, bounded).await;
    assert_eq!(got, want, "{what}");
    got
}

/// Random rows for the order, payment and shipment streams of `round`; some keys match
/// nothing, some match several rows, some are NULL.
fn commerce_round(rng: &mut Rng, round: u64, seq: &mut u64) -> [String; 3] {
    let mut next = || {
        *seq += 1;
        *seq
    };
    let key = |rng: &mut Rng| match rng.below(12) {
        0 => "NULL".to_string(),
        _ => (rng.below(60)).to_string(),
    };
    let orders: Vec<String> = (0..rng.below(15))
        .map(|_| {
            let (id, customer, amount) = (key(rng), rng.below(5), rng.below(100));
            format!("({id}, 'c{customer}', {amount}, {round}, {})", next())
        })
        .collect();
    let payments: Vec<String> = (0..rng.below(20))
        .map(|_| format!("({}, {}, {round}, {})", key(rng), rng.below(120), next()))
        .collect();
    let shipments: Vec<String> = (0..rng.below(8))
        .map(|_| format!("({}, 'k{}', {round}, {})", key(rng), rng.below(3), next()))
        .collect();
    [orders, payments, shipments].map(|rows| rows.join(", "))
}

/// The join of orders and payments each query makes, as a bounded query over what both
/// streams hold (`since`: only rows of that round on).
fn paid_oracle(since: u64) -> String {
    format!(
        "SELECT o.id, o.customer, p.paid, o.seq, p.seq FROM orders o \
         JOIN payments p ON o.id = p.order_id AND p.paid <= o.amount \
         WHERE o.round >= {since} AND p.round >= {since} ORDER BY 4, 5"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_of_streams_equal_the_bounded_join_exactly_once_across_kill_9() {
    let mut rng = Rng::seeded("stream joins");
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM orders (id BIGINT, customer TEXT, amount BIGINT, round BIGINT, seq BIGINT)
                 WITH (partitions = 3);
             CREATE STREAM payments (order_id INT, paid BIGINT, round BIGINT, seq BIGINT)
                 WITH (partitions = 2);
             CREATE STREAM shipments (order_id BIGINT, carrier TEXT, round BIGINT, seq BIGINT);
             CREATE STREAM paid AS
                 SELECT o.id, o.customer, p.paid, o.seq AS o_seq, p.seq AS p_seq
                 FROM orders o JOIN payments p ON o.id = p.order_id AND p.paid <= o.amount;
             CREATE MATERIALIZED VIEW paid_per_customer AS
                 SELECT o.customer, count(*) AS n, sum(p.paid) AS total
                 FROM orders o JOIN payments p ON o.id = p.order_id AND p.paid <= o.amount
                 GROUP BY o.customer;
             CREATE STREAM shipped AS
                 SELECT o.id, s.carrier, p.seq AS p_seq, s.seq AS s_seq
                 FROM orders o JOIN payments p ON o.id = p.order_id
                 JOIN shipments s ON s.order_id = o.id
                 WHERE s.carrier <> 'k0';
             CREATE STREAM repaid AS
                 SELECT a.order_id, a.seq AS first_seq, b.seq AS second_seq
                 FROM payments a JOIN payments b ON a.order_id = b.order_id AND a.seq < b.seq;
             CREATE MATERIALIZED VIEW top_payments AS
                 SELECT order_id, paid, seq, rn FROM (
                     SELECT *, row_number() OVER (PARTITION BY order_id ORDER BY paid DESC, seq) AS rn
                     FROM payments) t
                 WHERE rn <= 3;
             CREATE MATERIALIZED VIEW best_paid AS
                 SELECT customer, id, paid, p_seq, rn FROM (
                     SELECT o.customer, o.id, p.paid, p.seq AS p_seq,
                            row_number() OVER (PARTITION BY o.customer ORDER BY p.paid DESC, p.seq) AS rn
                     FROM orders o JOIN payments p ON o.id = p.order_id) t
                 WHERE rn <= 2;
             CREATE MATERIALIZED VIEW customers_by_best AS
                 SELECT best % 3 AS tier, count(*) AS customers, sum(best) AS total,
                        avg(best) AS mean
                 FROM (SELECT o.customer, max(p.paid) AS best
                       FROM orders o JOIN payments p ON o.id = p.order_id
                       GROUP BY o.customer) b
                 GROUP BY best % 3;",
        )
        .await
        .unwrap();
    let mut seq = 0u64;
    for round in 0..12u64 {
        let mut client = server.connect().await;
        if round == 4 {
            // Started late: it joins only what comes after it, and rebuilds only that.
            client
                .batch_execute(
                    "CREATE STREAM paid_late WITH (start = 'latest') AS
                         SELECT o.id, o.customer, p.paid, o.seq AS o_seq, p.seq AS p_seq
                         FROM orders o JOIN payments p ON o.id = p.order_id AND p.paid <= o.amount",
                )
                .await
                .unwrap();
        }
        let [orders, payments, shipments] = commerce_round(&mut rng, round, &mut seq);
        for (stream, rows) in [
            ("orders", orders),
            ("payments", payments),
            ("shipments", shipments),
        ] {
            if !rows.is_empty() {
                client
                    .batch_execute(&format!("INSERT INTO {stream} VALUES {rows}"))
                    .await
                    .unwrap();
            }
        }
        if round % 3 == 1 {
            // Acknowledged, perhaps not read: the restarted queries rebuild what their
            // joins keep from their inputs, then read these.
            drop(client);
            server.kill();
            server = common::start(dir.path());
            client = server.connect().await;
        }
        if round % 2 == 0 {
            client.batch_execute("FLUSH").await.unwrap();
        }
    }
    let client = server.connect().await;
    client.batch_execute("FLUSH").await.unwrap();

    let paid = same(
        &client,
        "SELECT id, customer, paid, o_seq, p_seq FROM paid ORDER BY 4, 5",
        &paid_oracle(0),
        "the join, each row once",
    )
    .await;
    // Not vacuous: the random rounds matched orders with payments (32 to 96 rows over
    // twelve seeds; 16 at the fewest seen).
    assert!(paid.len() >= 10, "the rounds paid orders: {paid:?}");
    same(
        &client,
        "SELECT id, customer, paid, o_seq, p_seq FROM paid_late ORDER BY 4, 5",
        &paid_oracle(4),
        "the join started late",
    )
    .await;
    same(
        &client,
        "SELECT customer, n, total FROM paid_per_customer ORDER BY customer",
        "SELECT o.customer, count(*), sum(p.paid) FROM orders o \
         JOIN payments p ON o.id = p.order_id AND p.paid <= o.amount \
         GROUP BY o.customer ORDER BY o.customer",
        "the view over the join",
    )
    .await;
    let shipped = same(
        &client,
        "SELECT id, carrier, p_seq, s_seq FROM shipped ORDER BY 3, 4",
        "SELECT o.id, s.carrier, p.seq, s.seq FROM orders o \
         JOIN payments p ON o.id = p.order_id JOIN shipments s ON s.order_id = o.id \
         WHERE s.carrier <> 'k0' ORDER BY 3, 4",
        "the join of three streams",
    )
    .await;
    assert!(!shipped.is_empty(), "some paid orders shipped");
    let repaid = same(
        &client,
        "SELECT order_id, first_seq, second_seq FROM repaid ORDER BY 2, 3",
        "SELECT a.order_id, a.seq, b.seq FROM payments a \
         JOIN payments b ON a.order_id = b.order_id AND a.seq < b.seq ORDER BY 2, 3",
        "the join of a stream with itself",
    )
    .await;
    assert!(!repaid.is_empty(), "some orders were paid twice");
    let top = same(
        &client,
        "SELECT order_id, paid, seq, rn FROM top_payments ORDER BY 1, 4",
        "SELECT order_id, paid, seq, rn FROM (
             SELECT *, row_number() OVER (PARTITION BY order_id ORDER BY paid DESC, seq) AS rn
             FROM payments) t
         WHERE rn <= 3 ORDER BY 1, 4",
        "the top 3 payments of each order",
    )
    .await;
    assert!(
        top.iter().any(|r| r[3].as_deref() == Some("3")),
        "some orders were paid three times: {top:?}"
    );
    same(
        &client,
        "SELECT customer, id, paid, p_seq, rn FROM best_paid ORDER BY 1, 5",
        "SELECT customer, id, paid, p_seq, rn FROM (
             SELECT o.customer, o.id, p.paid, p.seq AS p_seq,
                    row_number() OVER (PARTITION BY o.customer ORDER BY p.paid DESC, p.seq) AS rn
             FROM orders o JOIN payments p ON o.id = p.order_id) t
         WHERE rn <= 2 ORDER BY 1, 5",
        "the top 2 payments of each customer, over the join",
    )
    .await;

    // Customers move between tiers as their best payment rises: each move is taken back
    // from one tier and given to another.
    let tiers = same(
        &client,
        "SELECT tier, customers, total, mean FROM customers_by_best ORDER BY 1",
        "SELECT best % 3, count(*), sum(best), avg(best) FROM (
             SELECT o.customer, max(p.paid) AS best
             FROM orders o JOIN payments p ON o.id = p.order_id GROUP BY o.customer) b
         GROUP BY best % 3 ORDER BY 1",
        "an aggregate over the join's changing aggregate",
    )
    .await;
    assert!(!tiers.is_empty());

    // What the joins keep is in sys.queries, and retention keeps their inputs.
    let kept = rows(
        &client,
        "SELECT name, state_bytes > 0 FROM sys.queries WHERE name = 'paid'",
    )
    .await;
    assert_eq!(kept, vec![vec![Some("paid".into()), Some("t".into())]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_joins_let_rows_go_as_the_watermarks_pass_across_kill_9() {
    let mut rng = Rng::seeded("interval joins");
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::start(dir.path());
    let client = server.connect().await;
    // Each round is 10 s of event time, and the watermarks stay 30 s behind: no row is late.
    client
        .batch_execute(
            "CREATE STREAM orders (id BIGINT, ts TIMESTAMP, deadline TIMESTAMP,
                 WATERMARK FOR ts AS ts - INTERVAL '30 seconds') WITH (partitions = 2);
             CREATE STREAM payments (order_id BIGINT, ts TIMESTAMP, amount BIGINT,
                 WATERMARK FOR ts AS ts - INTERVAL '30 seconds') WITH (partitions = 3);
             CREATE STREAM on_time AS
                 SELECT o.id, p.amount, p.ts AS paid_at FROM orders o JOIN payments p
                 ON o.id = p.order_id AND p.ts BETWEEN o.ts AND o.deadline;
             CREATE STREAM soon AS
                 SELECT o.id, p.amount, p.ts AS paid_at FROM orders o JOIN payments p
                 ON o.id = p.order_id
                 AND p.ts BETWEEN o.ts - INTERVAL '5 seconds' AND o.ts + INTERVAL '20 seconds';
             CREATE STREAM any_time AS
                 SELECT o.id, p.amount, p.ts AS paid_at FROM orders o JOIN payments p
                 ON o.id = p.order_id;
             CREATE STREAM ordered AS
                 SELECT id, window_start AS w FROM TUMBLE(orders, ts, INTERVAL '10 seconds')
                 GROUP BY id, window_start EMIT ON WINDOW CLOSE;
             CREATE STREAM paid AS
                 SELECT order_id, window_start AS w, sum(amount) AS total
                 FROM TUMBLE(payments, ts, INTERVAL '10 seconds')
                 GROUP BY order_id, window_start EMIT ON WINDOW CLOSE;
             CREATE STREAM paid_in_window AS
                 SELECT o.id, o.w, p.total FROM ordered o JOIN paid p
                 ON o.id = p.order_id AND o.w = p.w;
             CREATE STREAM paid_in_window_kept AS
                 SELECT o.id, o.w, p.total FROM ordered o JOIN paid p
                 ON o.id = p.order_id AND o.w + INTERVAL '0 seconds' = p.w;",
        )
        .await
        .unwrap();
    let time =
        |seconds: u64| format!("TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{seconds} seconds'");
    let mut next_id = 0u64;
    const ROUNDS: u64 = 40;
    for round in 0..ROUNDS {
        let mut client = server.connect().await;
        let base = round * 10;
        let orders: Vec<String> = (0..5 + rng.below(10))
            .map(|_| {
                next_id += 1;
                let at = base + rng.below(10);
                format!("({next_id}, {}, {})", time(at), time(at + rng.below(25)))
            })
            .collect();
        // Payments of orders of the last rounds (and some of orders still to come).
        let payments: Vec<String> = (0..10 + rng.below(20))
            .map(|_| {
                let id = (next_id + 5).saturating_sub(rng.below(40));
                format!("({id}, {}, {})", time(base + rng.below(10)), rng.below(100))
            })
            .collect();
        for (stream, rows) in [("orders", orders), ("payments", payments)] {
            client
                .batch_execute(&format!("INSERT INTO {stream} VALUES {}", rows.join(", ")))
                .await
                .unwrap();
        }
        if round % 7 == 3 {
            drop(client);
            server.kill();
            server = common::start(dir.path());
            client = server.connect().await;
        }
        client.batch_execute("FLUSH").await.unwrap();
    }
    let client = server.connect().await;
    let on_time = same(
        &client,
        "SELECT id, amount, paid_at FROM on_time ORDER BY 1, 2, 3",
        "SELECT o.id, p.amount, p.ts FROM orders o JOIN payments p \
         ON o.id = p.order_id AND p.ts BETWEEN o.ts AND o.deadline ORDER BY 1, 2, 3",
        "the interval join, each row once",
    )
    .await;
    assert!(on_time.len() > 20, "orders were paid on time: {on_time:?}");
    let soon = same(
        &client,
        "SELECT id, amount, paid_at FROM soon ORDER BY 1, 2, 3",
        "SELECT o.id, p.amount, p.ts FROM orders o JOIN payments p ON o.id = p.order_id \
         AND p.ts BETWEEN o.ts - INTERVAL '5 seconds' AND o.ts + INTERVAL '20 seconds' \
         ORDER BY 1, 2, 3",
        "the interval join by intervals, each row once",
    )
    .await;
    assert!(soon.len() > 20, "orders were paid soon: {soon:?}");
    same(
        &client,
        "SELECT count(*) FROM any_time",
        "SELECT count(*) FROM orders o JOIN payments p ON o.id = p.order_id",
        "the unbounded join",
    )
    .await;

    let windows = same(
        &client,
        "SELECT id, w, total FROM paid_in_window ORDER BY 1, 2",
        "SELECT o.id, o.w, p.total FROM ordered o JOIN paid p \
         ON o.id = p.order_id AND o.w = p.w ORDER BY 1, 2",
        "the window join of two streams of closed windows, each row once",
    )
    .await;
    assert!(
        windows.len() > 20,
        "orders were paid in their window: {windows:?}"
    );

    // The interval joins keep the last rounds' rows; the other keeps every row. So does
    // the window join: a window's rows, until the other stream has closed it.
    let kept = rows(
        &client,
        "SELECT name, state_bytes FROM sys.queries ORDER BY name",
    )
    .await;
    let bytes = |name: &str| -> u64 {
        kept.iter()
            .find(|r| r[0].as_deref() == Some(name))
            .and_then(|r| r[1].as_deref())
            .and_then(|b| b.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {kept:?}"))
    };
    for bounded in ["on_time", "soon"] {
        assert!(
            bytes(bounded) * 2 < bytes("any_time"),
            "{bounded} lets rows go: {kept:?}"
        );
    }
    assert!(
        bytes("paid_in_window") * 2 < bytes("paid_in_window_kept"),
        "the window join lets rows go: {kept:?}"
    );

    // Without the unbounded join, nothing needs the inputs' first records for a restart:
    // the bounded joins hold them only from the oldest rows they keep.
    client.batch_execute("DROP STREAM any_time").await.unwrap();
    let held = rows(
        &client,
        "SELECT min(held_from) FROM sys.partitions WHERE topic IN ('orders', 'payments')",
    )
    .await;
    let held: u64 = held[0][0]
        .as_deref()
        .and_then(|h| h.parse().ok())
        .unwrap_or(0);
    assert!(held > 0, "the joins let go of their inputs' first records");
    // Rebuilt from there after a restart, they carry on as before.
    drop(client);
    server.kill();
    let server = common::start(dir.path());
    let client = server.connect().await;
    let base = ROUNDS * 10;
    client
        .batch_execute(&format!(
            "INSERT INTO orders VALUES ({}, {}, {});
             INSERT INTO payments VALUES ({}, {}, 1), ({}, {}, 2);
             FLUSH",
            next_id + 1,
            time(base),
            time(base + 20),
            next_id + 1,
            time(base + 3),
            next_id,
            time(base + 1),
        ))
        .await
        .unwrap();
    for (query, bounds) in [
        ("on_time", "p.ts BETWEEN o.ts AND o.deadline"),
        (
            "soon",
            "p.ts BETWEEN o.ts - INTERVAL '5 seconds' AND o.ts + INTERVAL '20 seconds'",
        ),
    ] {
        same(
            &client,
            &format!("SELECT id, amount, paid_at FROM {query} ORDER BY 1, 2, 3"),
            &format!(
                "SELECT o.id, p.amount, p.ts FROM orders o JOIN payments p \
                 ON o.id = p.order_id AND {bounds} ORDER BY 1, 2, 3"
            ),
            "the interval join after a restart from where it had let go",
        )
        .await;
    }
}
