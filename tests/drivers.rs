//! PostgreSQL drivers against the real server, each used as its users use it: asyncpg,
//! psycopg2 and psycopg 3 (tests/python/drivers.py), node-postgres with pg-cursor,
//! pg-query-stream and pg-copy-streams (tests/node/postgres.js). Each covers every common
//! type both ways with NULLs, parameters, errors and their SQLSTATEs, COPY in and out, and a
//! push query read a few rows at a time through the driver's own cursor or stream API.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn script(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn asyncpg_psycopg2_and_psycopg3() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let mut python = Command::new(common::python());
    python
        .arg(script("tests/python/drivers.py"))
        .arg(server.addr.port().to_string());
    common::succeeded(&server, &mut python, "drivers ok");
    server.stop();
}

#[test]
fn node_postgres_with_cursors_streams_and_copy() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let mut node = Command::new("node");
    node.env("NODE_PATH", common::node_modules())
        .arg(script("tests/node/postgres.js"))
        .arg(server.addr.port().to_string());
    common::succeeded(&server, &mut node, "node-postgres ok");
    server.stop();
}
