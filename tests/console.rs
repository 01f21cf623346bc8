//! The web console against the real server: in Debian's headless Chromium (driven by
//! playwright-core, tests/node/console.js) it shows a stream created over psql, whose plot
//! moves when rows are inserted, runs a SELECT from its SQL box and logs no errors; and its
//! API, read as a browser calls it, keeps to read-only statements and, under
//! `--auth password`, to the caller's credentials and privileges.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[test]
fn the_console_shows_a_stream_and_its_plot_moves_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let (created, _, stderr) = common::psql(
        &server,
        &[],
        "CREATE STREAM clicks (user_id BIGINT KEY, url TEXT) WITH (partitions = 2);",
    );
    assert!(created, "{stderr}");

    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    let _ = std::fs::remove_file(&screenshot);
    let url = format!("http://{}/", server.http_addr());
    let mut browser = Command::new("node")
        .env("NODE_PATH", common::node_modules())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node/console.js"))
        .args([url.as_str(), "clicks"])
        .arg(&screenshot)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node must be installed (.ci/run installs it)");
    let mut to_browser = browser.stdin.take().unwrap();
    let mut from_browser = BufReader::new(browser.stdout.take().unwrap()).lines();
    let mut said = vec![];
    let mut next_line = |said: &mut Vec<String>| {
        let line = from_browser.next().and_then(Result::ok);
        said.extend(line.clone());
        line
    };
    let shown = next_line(&mut said);
    assert!(
        shown.as_deref().is_some_and(|l| l.starts_with("shown ")),
        "the console did not show the stream: {said:?}\n{}",
        server.log()
    );

    let (inserted, _, stderr) = common::psql(
        &server,
        &[],
        "INSERT INTO clicks SELECT i % 7, '/p' || i FROM generate_series(1, 1000) AS t(i);",
    );
    assert!(inserted, "{stderr}");
    writeln!(to_browser, "inserted").unwrap();
    while next_line(&mut said).is_some() {}
    let status = browser.wait().unwrap();
    assert!(
        status.success() && said.iter().any(|l| l == "console ok"),
        "the console in Chromium: {said:?}\n{}",
        server.log()
    );
    assert!(said.iter().any(|l| l.starts_with("moved ")), "{said:?}");
    assert!(said.iter().any(|l| l == "sql 1000"), "{said:?}");
    let png = std::fs::read(&screenshot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a screenshot of the page"
    );
    server.stop();
}

/// `POST /api/sql` with `sql`, as `credentials` (`user:password`) if any.
fn sql(addr: &str, credentials: Option<&str>, sql: &str) -> (u16, serde_json::Value) {
    let (status, body) = common::http_as(addr, "POST", "/api/sql", credentials, sql);
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, json)
}

#[test]
fn the_console_reads_only_and_as_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with_password(
        dir.path(),
        "CREATE USER ann WITH PASSWORD 'ann-pw';
         CREATE STREAM secrets (id BIGINT, body TEXT);
         INSERT INTO secrets VALUES (1, 'the plan');
         CREATE STREAM notes (id BIGINT);
         INSERT INTO notes VALUES (7);
         GRANT SELECT ON notes TO ann;",
    );
    let addr = server.http_addr();

    // The page and its calls ask for credentials.
    let (status, _) = common::http(&addr, "GET", "/", &[], "");
    assert_eq!(status, 401);
    let (status, body) = sql(&addr, None, "SELECT 1");
    assert_eq!((status, body["code"].as_str()), (401, Some("28P01")));
    let (status, _) = sql(&addr, Some("ann:wrong"), "SELECT 1");
    assert_eq!(status, 401);
    let (status, _) = sql(&addr, Some("nobody:ann-pw"), "SELECT 1");
    assert_eq!(status, 401);

    // With them, SQL runs with the caller's privileges.
    let (status, body) = sql(&addr, Some("ann:ann-pw"), "SELECT id FROM notes");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], serde_json::json!([["7"]]));
    let (status, body) = sql(&addr, Some("ann:ann-pw"), "SELECT * FROM secrets");
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("42501")),
        "{body}"
    );
    let (status, body) = sql(&addr, Some("runnel:admin-pw"), "SELECT body FROM secrets");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], serde_json::json!([["the plan"]]));

    // Only statements that read, one at a time, with bounded results.
    for (statement, code) in [
        ("INSERT INTO notes VALUES (8)", "25006"),
        // EXPLAIN ANALYZE runs what it explains.
        ("EXPLAIN ANALYZE INSERT INTO notes VALUES (8)", "25006"),
        ("EXPLAIN INSERT INTO notes VALUES (8)", "25006"),
        ("DROP STREAM notes", "25006"),
        ("SET default_transaction_read_only = off", "25006"),
        ("SELECT 1; SELECT 2", "42601"),
        ("SELECT * FROM notes EMIT CHANGES", "0A000"),
        ("SELEC 1", "42601"),
    ] {
        let (status, body) = sql(&addr, Some("runnel:admin-pw"), statement);
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some(code)),
            "{statement}: {body}"
        );
    }
    let (status, body) = sql(
        &addr,
        Some("runnel:admin-pw"),
        "SELECT i FROM generate_series(1, 5000) AS t(i)",
    );
    assert_eq!(status, 200);
    assert_eq!(body["rows"].as_array().map(Vec::len), Some(1000));
    assert_eq!(body["truncated"], serde_json::json!(true));
    let (status, body) = sql(
        &addr,
        Some("runnel:admin-pw"),
        "EXPLAIN ANALYZE SELECT count(*) FROM notes",
    );
    assert_eq!(status, 200, "a query may be explained: {body}");
    let (_, body) = sql(&addr, Some("runnel:admin-pw"), "SELECT count(*) FROM notes");
    assert_eq!(
        body["rows"],
        serde_json::json!([["1"]]),
        "nothing was written"
    );

    // The history of the plots, with the same credentials.
    let (status, _) = common::http(&addr, "GET", "/api/history", &[], "");
    assert_eq!(status, 401);
    server.stop();
}
