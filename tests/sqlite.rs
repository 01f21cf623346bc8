//! SQLite's sqllogictest corpus, `select1.test` … `select5.test`, against the real server:
//! 8,884 queries over small tables (nested and correlated subqueries, CASE, joins of up to
//! nine tables, aggregates) whose expected results SQLite's authors checked against several
//! databases. The scripts come from Maven Central (`tests/sqlite/pom.xml`, which `.ci/run`
//! resolves), unchanged.
//!
//! The harness reads the scripts in SQLite's own format and compares as SQLite's runner
//! does: each value is rendered by the column type the script declares (`I` as an integer,
//! `R` with three decimals, `T` as text, `NULL`, `(empty)` for an empty string), rows or
//! values sorted as the script says, and results with more values than the script's
//! `hash-threshold` compared by their MD5. Scripts run as the `postgresql` engine
//! (`skipif postgresql` / `onlyif postgresql`), as a PostgreSQL server would.
//!
//! It prints each script's pass rate. Queries that do not pass yet are listed, with why, in
//! `tests/sqlite/known_failures.txt`; a script's test fails when any other record fails,
//! and when a listed one passes (so the list only shrinks). `cargo test --test sqlite
//! select5` runs one script; `-- --nocapture` shows the pass rates.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use md5::{Digest, Md5};
use tokio_postgres::SimpleQueryMessage;

const SCRIPTS: [&str; 5] = [
    "select1.test",
    "select2.test",
    "select3.test",
    "select4.test",
    "select5.test",
];

/// One record of a script, with the line it starts on.
#[derive(Debug)]
enum Record {
    Statement {
        line: usize,
        sql: String,
        ok: bool,
    },
    Query {
        line: usize,
        sql: String,
        types: Vec<char>,
        sort: Sort,
        label: Option<String>,
        expected: Vec<String>,
    },
    HashThreshold(usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Sort {
    None,
    Rows,
    Values,
}

/// Parses a script in SQLite's sqllogictest format: records separated by blank lines,
/// conditions (`skipif`/`onlyif <engine>`) in front of the record they guard, `halt`.
fn parse(script: &str, engine: &str) -> Vec<Record> {
    let lines: Vec<&str> = script.lines().collect();
    let mut records = vec![];
    let mut i = 0;
    let mut skip = false;
    while i < lines.len() {
        let line = lines[i].trim_end();
        let words: Vec<&str> = line.split_whitespace().collect();
        let start = i + 1;
        i += 1;
        match words.as_slice() {
            [] => skip = false,
            [first, ..] if first.starts_with('#') => {}
            ["skipif", db, ..] => skip |= *db == engine,
            ["onlyif", db, ..] => skip |= *db != engine,
            ["halt", ..] if !skip => break,
            ["hash-threshold", n] => records.push(Record::HashThreshold(n.parse().unwrap())),
            ["statement", outcome, ..] => {
                let mut sql = vec![];
                while i < lines.len() && !lines[i].trim().is_empty() {
                    sql.push(lines[i]);
                    i += 1;
                }
                if !std::mem::take(&mut skip) {
                    records.push(Record::Statement {
                        line: start,
                        sql: sql.join("\n"),
                        ok: *outcome == "ok",
                    });
                }
            }
            ["query", types, rest @ ..] => {
                let mut sql = vec![];
                while i < lines.len() && !lines[i].trim().is_empty() && lines[i] != "----" {
                    sql.push(lines[i]);
                    i += 1;
                }
                let mut expected = vec![];
                if i < lines.len() && lines[i] == "----" {
                    i += 1;
                    while i < lines.len() && !lines[i].trim().is_empty() {
                        expected.push(lines[i].trim().to_string());
                        i += 1;
                    }
                }
                let sort = match rest.first() {
                    Some(&"rowsort") => Sort::Rows,
                    Some(&"valuesort") => Sort::Values,
                    _ => Sort::None,
                };
                if !std::mem::take(&mut skip) {
                    records.push(Record::Query {
                        line: start,
                        sql: sql.join("\n"),
                        types: types.chars().collect(),
                        sort,
                        label: rest.get(1).map(|l| l.to_string()),
                        expected,
                    });
                }
            }
            _ => panic!("line {start}: unknown record {line:?}"),
        }
    }
    records
}

/// A value as SQLite's runner renders it for the declared column type.
fn render(value: Option<&str>, kind: char) -> String {
    let Some(text) = value else {
        return "NULL".into();
    };
    match kind {
        'I' => match text.parse::<i64>() {
            Ok(n) => n.to_string(),
            // A fractional value in an integer column is truncated, as sqlite3_column_int64
            // does; text that is no number is 0.
            Err(_) => text.parse::<f64>().map_or(0, |f| f as i64).to_string(),
        },
        'R' => format!("{:.3}", text.parse::<f64>().unwrap_or(0.0)),
        _ if text.is_empty() => "(empty)".into(),
        _ => text
            .chars()
            .map(|c| if (' '..='~').contains(&c) { c } else { '@' })
            .collect(),
    }
}

/// The values of a result in the order the script compares them.
fn values(mut rows: Vec<Vec<String>>, sort: Sort) -> Vec<String> {
    match sort {
        Sort::None => rows.concat(),
        Sort::Rows => {
            rows.sort();
            rows.concat()
        }
        Sort::Values => {
            let mut values = rows.concat();
            values.sort();
            values
        }
    }
}

fn md5_of(values: &[String]) -> String {
    let mut md5 = Md5::new();
    for value in values {
        md5.update(value.as_bytes());
        md5.update(b"\n");
    }
    md5.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `actual` is what the script expects: its values, or their count and MD5.
fn matches(actual: &[String], expected: &[String], threshold: usize) -> Result<(), String> {
    let hashed =
        |values: &[String]| format!("{} values hashing to {}", values.len(), md5_of(values));
    match expected {
        [line] if line.contains(" values hashing to ") => {
            let got = hashed(actual);
            if &got == line {
                Ok(())
            } else {
                Err(format!("expected {line}\n     got {got}"))
            }
        }
        _ if actual == expected => Ok(()),
        _ => {
            let show = |values: &[String]| {
                if threshold > 0 && values.len() > threshold {
                    hashed(values)
                } else {
                    values.join(" ")
                }
            };
            Err(format!(
                "expected {}\n     got {}",
                show(expected),
                show(actual)
            ))
        }
    }
}

/// Runs `sql`; the rows of its last result, each value as text (`None` for NULL).
async fn run(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, String> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        })?;
    let mut rows = vec![];
    for message in messages {
        if let SimpleQueryMessage::Row(row) = message {
            rows.push(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            );
        }
    }
    Ok(rows)
}

struct Outcome {
    queries: usize,
    failures: Vec<(usize, String)>,
}

async fn run_script(client: &tokio_postgres::Client, records: &[Record]) -> Outcome {
    let mut threshold = 0;
    let mut labels: HashMap<&str, Vec<String>> = HashMap::new();
    let mut outcome = Outcome {
        queries: 0,
        failures: vec![],
    };
    for record in records {
        match record {
            Record::HashThreshold(n) => threshold = *n,
            Record::Statement { line, sql, ok } => match (run(client, sql).await, ok) {
                (Ok(_), true) | (Err(_), false) => {}
                (Ok(_), false) => outcome
                    .failures
                    .push((*line, "statement succeeded, expected an error".into())),
                (Err(e), true) => outcome.failures.push((*line, e)),
            },
            Record::Query {
                line,
                sql,
                types,
                sort,
                label,
                expected,
            } => {
                outcome.queries += 1;
                let rows = match run(client, sql).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        outcome.failures.push((*line, e));
                        continue;
                    }
                };
                if let Some(row) = rows.first().filter(|row| row.len() != types.len()) {
                    outcome.failures.push((
                        *line,
                        format!("{} columns, expected {}", row.len(), types.len()),
                    ));
                    continue;
                }
                let rendered = rows
                    .iter()
                    .map(|row| {
                        row.iter()
                            .zip(types)
                            .map(|(v, t)| render(v.as_deref(), *t))
                            .collect()
                    })
                    .collect();
                let actual = values(rendered, *sort);
                if let Err(e) = matches(&actual, expected, threshold) {
                    outcome.failures.push((*line, e));
                    continue;
                }
                // Queries with one label must agree with each other, as SQLite's runner checks.
                if let Some(label) = label {
                    match labels.get(label.as_str()) {
                        Some(first) if first != &actual => outcome
                            .failures
                            .push((*line, format!("differs from the first {label}"))),
                        Some(_) => {}
                        None => {
                            labels.insert(label, actual);
                        }
                    }
                }
            }
        }
    }
    outcome
}

/// The directory holding `select1.test` … from the corpus jar, extracted once.
fn corpus() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(extract).clone()
}

fn extract() -> PathBuf {
    let jar_dir = common::installed("sqlite-corpus", &["tests/sqlite/pom.xml"], |dir| {
        let mut mvn = Command::new("mvn");
        mvn.args(["-q", "-B", "-f", "tests/sqlite/pom.xml"])
            .arg("dependency:copy-dependencies")
            .arg("-DexcludeTransitive=true")
            .arg(format!("-DoutputDirectory={}", dir.display()));
        mvn
    });
    let scripts = jar_dir.join("scripts");
    if !scripts.exists() {
        // Extracted beside, then moved in place: a half-done extraction is never used.
        let partial = jar_dir.join("scripts.partial");
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial).unwrap();
        let jar = jar_dir.join("sql-logic-test-0.3.jar");
        let status = Command::new("jar")
            .arg("xf")
            .arg(&jar)
            .args(SCRIPTS.map(|s| format!("test/{s}")))
            .current_dir(&partial)
            .status()
            .expect("the JDK's jar must be installed (.ci/run installs it)");
        assert!(
            status.success(),
            "could not extract the scripts from {}",
            jar.display()
        );
        std::fs::rename(partial.join("test"), &scripts).unwrap();
    }
    scripts
}

/// `tests/sqlite/known_failures.txt`: `script:line` of each query that fails today.
fn known_failures() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sqlite/known_failures.txt");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split('#').next())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Runs `script`, prints its pass rate and checks its failures against the known ones.
async fn check(script: &str) {
    let text = std::fs::read_to_string(corpus().join(script)).unwrap();
    let records = parse(&text, "postgresql");
    let data = tempfile::tempdir().unwrap();
    let server = common::start(data.path());
    let (client, connection) =
        tokio_postgres::connect(&server.connection_string(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    let outcome = run_script(&client, &records).await;
    drop(client);
    server.stop();

    let query_lines: BTreeSet<usize> = records
        .iter()
        .filter_map(|r| match r {
            Record::Query { line, .. } => Some(*line),
            _ => None,
        })
        .collect();
    let failed: BTreeSet<usize> = outcome.failures.iter().map(|(l, _)| *l).collect();
    let passed = outcome.queries - failed.intersection(&query_lines).count();
    eprintln!(
        "SQLite {script}: {passed} of {} queries pass ({:.1} %); {} statements fail",
        outcome.queries,
        100.0 * passed as f64 / outcome.queries.max(1) as f64,
        failed.difference(&query_lines).count(),
    );
    let known: BTreeSet<usize> = known_failures()
        .iter()
        .filter_map(|k| k.strip_prefix(&format!("{script}:")))
        .map(|line| line.parse().unwrap())
        .collect();
    let unexpected: Vec<String> = outcome
        .failures
        .iter()
        .filter(|(line, _)| !known.contains(line))
        .map(|(line, why)| format!("{script}:{line}: {why}"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} records failed that tests/sqlite/known_failures.txt does not list:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    let fixed: Vec<String> = known
        .difference(&failed)
        .map(|line| format!("{script}:{line}"))
        .collect();
    assert!(
        fixed.is_empty(),
        "these pass now; take them out of tests/sqlite/known_failures.txt:\n{}",
        fixed.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select1() {
    check(SCRIPTS[0]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select2() {
    check(SCRIPTS[1]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select3() {
    check(SCRIPTS[2]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select4() {
    check(SCRIPTS[3]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select5() {
    check(SCRIPTS[4]).await
}
