//! What a hostile or careless client can send, against the real server: statements nested
//! too deep for any stack, and (in `fuzz`) mutated SQL and broken wire frames. Each is
//! answered with an error; the server and every other connection carry on.

mod common;

use common::{psql, rows, sqlstate};
use runnel::sql::depth::MAX_EXPR_DEPTH;

/// `SELECT 1 + 1 + …` with `terms` terms.
fn chain(terms: usize) -> String {
    vec!["1"; terms].join("+")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_nested_too_deep_get_54001_and_the_server_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let watcher = server.connect().await;
    watcher
        .batch_execute("CREATE STREAM s (a BIGINT, b TEXT); INSERT INTO s VALUES (1, 'x')")
        .await
        .unwrap();

    // Through psql, as a user would paste them: each refused, none fatal.
    let refused = [
        // Just over the limit: parsed, measured, refused.
        format!("SELECT {};", chain(MAX_EXPR_DEPTH + 10)),
        // Megabytes of it: refused from its tokens, never parsed.
        format!("SELECT {};", chain(1_000_000)),
        format!(
            "SELECT count(*) FROM s WHERE true {};",
            " AND true".repeat(5000)
        ),
        format!("SELECT {}1{};", "(".repeat(10_000), ")".repeat(10_000)),
        format!("SELECT {}1{};", "abs(".repeat(1000), ")".repeat(1000)),
        format!(
            "CREATE MATERIALIZED VIEW deep AS SELECT b, sum({}) AS t FROM s GROUP BY b;",
            vec!["a"; 1900].join(" + ")
        ),
        format!("INSERT INTO s VALUES ({}, 'y');", chain(3000)),
        format!("EXPLAIN SELECT {};", chain(3000)),
        format!("DECLARE c CURSOR FOR SELECT {};", chain(3000)),
        format!("SELECT * FROM s WHERE a = {} EMIT CHANGES;", chain(3000)),
    ];
    let script = format!(
        "\\set VERBOSITY verbose\n{}\nSELECT 'still here' AS alive;\n",
        refused.join("\n")
    );
    let (_, out, err) = psql(&server, &[], &script);
    assert_eq!(
        err.matches("ERROR:  54001: statement too complex").count(),
        refused.len(),
        "every statement refused with 54001:\n{}",
        &err[..err.len().min(4000)]
    );
    assert!(out.contains("still here"), "the session carries on: {out}");

    // At the limit, a statement plans and runs within the server's stacks. (Planning time
    // grows with the square of the depth in DataFusion, so the other paths below are
    // checked with deep but cheaper statements.)
    assert_eq!(
        rows(&watcher, &format!("SELECT {}", chain(MAX_EXPR_DEPTH - 2))).await,
        vec![vec![Some((MAX_EXPR_DEPTH - 2).to_string())]]
    );
    // A literal INSERT, a prepared statement and a continuous query, deep.
    let deep = chain(300);
    watcher
        .batch_execute(&format!("INSERT INTO s VALUES ({deep}, 'z')"))
        .await
        .unwrap();
    let prepared = watcher
        .prepare_typed(
            &format!("SELECT {deep} + $1"),
            &[tokio_postgres::types::Type::INT8],
        )
        .await
        .unwrap();
    let row = watcher.query_one(&prepared, &[&1i64]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 301);
    let e = watcher
        .prepare(&format!("SELECT {} + $1", chain(3000)))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "54001");
    watcher
        .batch_execute(&format!(
            "CREATE MATERIALIZED VIEW shallow AS SELECT b, sum({}) AS t FROM s GROUP BY b; FLUSH;",
            vec!["a"; 100].join(" + ")
        ))
        .await
        .unwrap();
    assert_eq!(
        rows(&watcher, "SELECT t FROM shallow WHERE b = 'z'").await,
        vec![vec![Some("30000".to_string())]]
    );
    assert_eq!(
        rows(&watcher, "SELECT count(*) FROM s").await,
        vec![vec![Some("2".to_string())]]
    );
    let log = server.log();
    assert!(!log.contains("overflow"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_text_is_22021_and_overflow_is_22003() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM notes (n INT, body TEXT);
             CREATE STREAM nums (n BIGINT); INSERT INTO nums VALUES (5)",
        )
        .await
        .unwrap();
    // NUL through a bound parameter, a function, and COPY: refused, nothing written.
    let e = client
        .execute(
            "INSERT INTO notes VALUES (1, $1)",
            &[&"before\0after".to_string()],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22021", "{e}");
    let e = client
        .batch_execute("INSERT INTO notes SELECT 2, 'a' || chr(0) || 'b'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22021", "{e}");
    // Values out of range of their type, and arithmetic past it.
    for sql in [
        "INSERT INTO notes VALUES (99999999999, 'x')",
        "INSERT INTO notes SELECT 99999999999, 'x'",
        "SELECT abs(-9223372036854775808)",
        "SELECT 100000::smallint",
        "SELECT 9223372036854775807 + 1",
        "SELECT -9223372036854775807 - 2",
        "SELECT 4611686018427387904 * 2",
        "SELECT 1 WHERE 9223372036854775807 + 1 > 0",
        "SELECT n * 9223372036854775807 FROM nums",
        "SELECT count(*) FROM nums WHERE n * 9223372036854775807 > 0",
    ] {
        let e = client.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "22003", "{sql}: {e}");
    }
    assert_eq!(
        rows(&client, "SELECT count(*) FROM notes").await[0][0].as_deref(),
        Some("0")
    );
    // A result the wire encoding cannot represent (arrays of arrays) is refused as
    // unsupported, through both protocols, not reported as an internal error.
    let nested = "SELECT ARRAY[ARRAY[1, 2], ARRAY[3, 4]]";
    let e = client.batch_execute(nested).await.unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    let e = client.query(nested, &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    assert_eq!(
        rows(&client, "SELECT 1").await,
        vec![vec![Some("1".into())]]
    );
    server.stop();
}
