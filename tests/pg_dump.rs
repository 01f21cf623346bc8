//! pg_dump round trip: a database's streams (one with a late-data stream), tables,
//! schemaless topics, materialized views and grants dumped with pg_dump 16
//! (`--schema-only`, then `--data-only`, restored with psql; and the custom format,
//! restored with pg_restore) into an empty Runnel come back as they were — the same
//! definitions, options, grants and rows, and a dump of the copy identical to the dump of
//! the original.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Server, psql};

/// pg_dump 16 from the Python venv's `pgserver` (tests/python/requirements.txt), and the
/// directory of the libraries it links against.
fn pg_dump() -> (PathBuf, PathBuf) {
    let out = Command::new(common::python())
        .args([
            "-c",
            "import importlib.util; print(importlib.util.find_spec('pgserver').submodule_search_locations[0])",
        ])
        .output()
        .expect("the test venv's python runs");
    assert!(
        out.status.success(),
        "pgserver is not installed in the test venv (.ci/run installs tests/python/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let package = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let binary = package.join("pginstall/bin/pg_dump");
    let libraries = package
        .parent()
        .expect("site-packages")
        .join("pgserver.libs");
    assert!(binary.exists(), "no pg_dump at {}", binary.display());
    (binary, libraries)
}

/// `tool` (`pg_dump`, `pg_restore`) of the pgserver install, connecting to `server`, run
/// with `args`; its output, once it has succeeded.
fn run_tool(tool: &str, server: &Server, args: &[&str]) -> Vec<u8> {
    let (pg_dump, libraries) = pg_dump();
    let out = Command::new(pg_dump.with_file_name(tool))
        .env("LD_LIBRARY_PATH", libraries)
        .env("PGCONNECT_TIMEOUT", "10")
        .args([
            "-h",
            &server.addr.ip().to_string(),
            "-p",
            &server.addr.port().to_string(),
            "-U",
            "runnel",
        ])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} runs: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn dump(server: &Server, args: &[&str]) -> String {
    let args: Vec<&str> = args.iter().copied().chain(["runnel"]).collect();
    String::from_utf8(run_tool("pg_dump", server, &args)).expect("a dump is text")
}

/// An archive of pg_dump's (`format` and `jobs` as pg_dump's `-F` and `-j` take them)
/// written to `file`, then read back into `into` by pg_restore with as many jobs.
fn dump_and_restore_archive(
    from: &Server,
    into: &Server,
    file: &std::path::Path,
    format: &str,
    jobs: &str,
) {
    let file = file.to_str().expect("a UTF-8 path");
    let (format, jobs) = (format!("-F{format}"), format!("-j{jobs}"));
    let mut dump_args = vec![format.as_str(), "-f", file, "runnel"];
    if jobs != "-j1" {
        // Only the directory format dumps in parallel.
        dump_args.insert(0, &jobs);
    }
    run_tool("pg_dump", from, &dump_args);
    run_tool(
        "pg_restore",
        into,
        &["--exit-on-error", &jobs, "-d", "runnel", file],
    );
}

/// A dump without its comments (which carry versions and times).
fn statements(dump: &str) -> String {
    dump.lines()
        .filter(|l| !l.starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn restore(server: &Server, script: &str) {
    let (ok, out, err) = psql(server, &["-v", "ON_ERROR_STOP=1", "-q"], script);
    assert!(ok, "restoring failed: {err}\n{out}\n--- script:\n{script}");
}

/// What each relation is and holds, as psql prints it.
fn contents(server: &Server) -> String {
    let script = "
FLUSH;
DESCRIBE clicks;
DESCRIBE users;
DESCRIBE notes;
DESCRIBE per_user;
DESCRIBE cart_clicks;
DESCRIBE raw;
DESCRIBE orders;
DESCRIBE z_orders_late;
SELECT _key, _value FROM raw ORDER BY _value;
SELECT * FROM z_orders_late;
SELECT user_id, url, ts FROM clicks ORDER BY user_id, url;
SELECT * FROM users ORDER BY id;
SELECT * FROM notes ORDER BY body;
SELECT * FROM per_user ORDER BY user_id;
SELECT * FROM cart_clicks ORDER BY user_id, ts;
SELECT name, kind, state FROM sys.queries ORDER BY name;
";
    let (ok, out, err) = psql(server, &["-v", "ON_ERROR_STOP=1"], script);
    assert!(ok, "reading failed: {err}\n{out}");
    out
}

#[test]
fn streams_tables_and_views_survive_a_pg_dump_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let original = common::start(&dir.path().join("original"));
    let (ok, out, err) = psql(
        &original,
        &["-v", "ON_ERROR_STOP=1"],
        "
CREATE STREAM clicks (
    user_id BIGINT KEY,
    url TEXT NOT NULL,
    ts TIMESTAMP,
    WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
) WITH (partitions = 3, retention = '7 days', compression = 'lz4', timestamp = 'ts');
CREATE TABLE users (id BIGINT PRIMARY KEY, name TEXT NOT NULL, tier TEXT) WITH (partitions = 2);
CREATE TABLE notes (body TEXT, stars INT);
CREATE MATERIALIZED VIEW per_user AS
    SELECT user_id, count(*) AS clicks, max(ts) AS last_seen FROM clicks GROUP BY user_id;
CREATE STREAM cart_clicks WITH (partitions = 2, retention = '2 days') AS
    SELECT user_id, ts FROM clicks WHERE url = '/cart';
INSERT INTO clicks VALUES
    (1, '/home', '2026-01-01 10:00:00'),
    (1, '/cart', '2026-01-01 10:00:05'),
    (2, 'it''s \"quoted\"', '2026-01-01 10:00:07'),
    (3, E'tab\\there', NULL);
INSERT INTO users VALUES (1, 'ann', 'gold'), (2, 'bob', NULL);
UPDATE users SET tier = 'basic' WHERE id = 2;
INSERT INTO notes VALUES ('twice', 1), ('twice', 1), (NULL, NULL);
CREATE TOPIC raw WITH (partitions = 2, retention = '1 day');
INSERT INTO raw (_key, _value) VALUES ('k1', '\\x00ff'), (NULL, 'v2'), ('k3', NULL);
-- Its late-data stream sorts after it: pg_depend has pg_dump create that one first.
CREATE STREAM orders (id BIGINT, at TIMESTAMP, WATERMARK FOR at AS at)
    WITH (late_data_topic = 'z_orders_late');
INSERT INTO z_orders_late VALUES (9, '2026-01-01 09:00:00', 'q', 0, 4);
CREATE USER ann;
GRANT SELECT ON clicks TO ann;
",
    );
    assert!(ok, "{err}\n{out}");
    let schema = dump(&original, &["--schema-only"]);
    let data = dump(&original, &["--data-only"]);
    // The stream comes back as a stream: its options travel as storage parameters.
    assert!(
        schema.contains("CREATE TABLE public.clicks (")
            && schema.contains("stream='true'")
            && schema.contains("key=user_id")
            && schema.contains("watermark='ts AS ts - INTERVAL ''5 seconds'''"),
        "{schema}"
    );
    assert!(schema.contains("primary_key=id"), "{schema}");
    assert!(
        schema.contains("CREATE TABLE public.raw (\n    _key bytea,\n    _value bytea\n)")
            && schema.contains("topic='true'"),
        "{schema}"
    );
    let late = schema
        .find("CREATE TABLE public.z_orders_late")
        .expect("late stream");
    let orders = schema.find("CREATE TABLE public.orders").expect("orders");
    assert!(late < orders, "{schema}");
    assert!(schema.contains("late_data_topic=z_orders_late"), "{schema}");
    assert!(
        schema.contains("GRANT SELECT ON TABLE public.clicks TO ann;"),
        "{schema}"
    );
    assert!(
        schema.contains("CREATE MATERIALIZED VIEW public.per_user AS"),
        "{schema}"
    );
    // A derived stream is a materialized view to pg_dump, its options as storage
    // parameters, which make a derived stream again.
    assert!(
        schema.contains(
            "CREATE MATERIALIZED VIEW public.cart_clicks\nWITH (stream='true', \
             topic=cart_clicks, partitions='2'"
        ) && schema.contains("retention='2 days'"),
        "{schema}"
    );
    // Runnel's own schema `sys` is part of its built-in extension, which pg_dump leaves out.
    assert!(!schema.contains("sys."), "{schema}");
    // The view's rows are its query's, not data to load.
    assert!(
        data.contains("COPY public.clicks (user_id, url, ts) FROM stdin;"),
        "{data}"
    );
    assert!(!data.contains("COPY public.per_user"), "{data}");
    assert!(!data.contains("COPY public.cart_clicks"), "{data}");

    let copy = common::start(&dir.path().join("copy"));
    // pg_dump leaves roles to pg_dumpall: the grantee is made first, as it would be.
    restore(&copy, "CREATE USER ann;");
    restore(&copy, &schema);
    restore(&copy, &data);
    let before = contents(&original);
    assert!(before.contains(" /cart "), "{before}");
    // The derived stream's query runs again, and fills it as it filled the original.
    assert!(
        before.contains(" cart_clicks | stream | running")
            && before.contains("       1 | 2026-01-01 10:00:05"),
        "{before}"
    );
    assert!(before.contains("it's \"quoted\""), "{before}");
    assert_eq!(contents(&copy), before);
    assert_eq!(
        statements(&dump(&copy, &["--schema-only"])),
        statements(&schema)
    );
    // A stream's partitions are read side by side: its rows come in another order.
    let sorted = |dump: &str| {
        let mut lines: Vec<String> = statements(dump).lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(&dump(&copy, &["--data-only"])), sorted(&data));

    // The archive formats, through pg_restore (which sends the dump's leading comments as a
    // query of their own: an empty one): custom, tar, and directory dumped and restored by
    // two jobs each (pg_dump's workers import its snapshot, and pg_restore's truncate each
    // table they made before loading it).
    for (format, jobs) in [("c", "1"), ("t", "1"), ("d", "2")] {
        let archived = common::start(&dir.path().join(format!("archived-{format}")));
        restore(&archived, "CREATE USER ann;");
        let file = dir.path().join(format!("runnel.{format}"));
        dump_and_restore_archive(&original, &archived, &file, format, jobs);
        assert_eq!(contents(&archived), before, "-F{format}");
        assert_eq!(
            statements(&dump(&archived, &["--schema-only"])),
            statements(&schema),
            "-F{format}"
        );
    }
}
