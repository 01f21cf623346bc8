//! Runs every `sql-tests/**/*.slt` file against the real server over pgwire, each file on a
//! fresh server and data directory. Values are rendered as the stock
//! `sqllogictest --engine postgres` renders them (simple query protocol, `NULL`, `(empty)`),
//! so the same files pass with that runner against a running server.
//!
//! `RUNNEL_SLT=<substring>` runs only the files whose path contains it.

mod common;

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner};
use tokio_postgres::SimpleQueryMessage;

struct Postgres {
    client: tokio_postgres::Client,
}

#[derive(Debug)]
struct PgError(tokio_postgres::Error);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => write!(f, "db error: {}: {}", db.severity(), db.message()),
            None => write!(f, "{}", self.0),
        }
    }
}

impl std::error::Error for PgError {}

#[async_trait]
impl AsyncDB for Postgres {
    type Error = PgError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, PgError> {
        let messages = self.client.simple_query(sql).await.map_err(PgError)?;
        let mut rows = vec![];
        let mut columns = None;
        let mut count = 0;
        for message in messages {
            match message {
                SimpleQueryMessage::RowDescription(d) => columns = Some(d.len()),
                SimpleQueryMessage::Row(row) => {
                    columns = Some(row.len());
                    rows.push(
                        (0..row.len())
                            .map(|i| match row.get(i) {
                                None => "NULL".to_string(),
                                Some("") => "(empty)".to_string(),
                                Some(v) => v.to_string(),
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(n) => count = n,
                _ => {}
            }
        }
        match columns {
            Some(n) => Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; n],
                rows,
            }),
            None => Ok(DBOutput::StatementComplete(count)),
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "postgres"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }

    fn error_sql_state(err: &PgError) -> Option<String> {
        err.0.code().map(|c| c.code().to_string())
    }
}

fn slt_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            slt_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "slt") {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_logic_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql-tests");
    let mut files = vec![];
    slt_files(&root, &mut files);
    let filter = std::env::var("RUNNEL_SLT").unwrap_or_default();
    files.retain(|f| f.to_string_lossy().contains(&filter));
    assert!(!files.is_empty(), "no .slt files matched");
    let mut failures = vec![];
    for file in &files {
        let name = file
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(file)
            .display()
            .to_string();
        let dir = tempfile::tempdir().unwrap();
        let server = common::start(dir.path());
        let conn = server.connection_string();
        let mut runner = Runner::new(move || {
            let conn = conn.clone();
            async move {
                let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                    .await
                    .map_err(PgError)?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok::<_, PgError>(Postgres { client })
            }
        });
        runner.add_label("runnel");
        // RUNNEL_SLT_UPDATE=1 writes what the server answers into the files (review the
        // diff before keeping it).
        if std::env::var_os("RUNNEL_SLT_UPDATE").is_some() {
            runner
                .update_test_file(
                    file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .unwrap_or_else(|e| panic!("updating {name}: {e}"));
            server.stop();
            continue;
        }
        match runner.run_file_async(file).await {
            Ok(()) => eprintln!("ok   {name}"),
            Err(e) => {
                eprintln!("FAIL {name}");
                failures.push(format!(
                    "{name}:\n{e}\n--- server log ---\n{}",
                    server.log()
                ));
            }
        }
        server.stop();
    }
    assert!(
        failures.is_empty(),
        "{} of {} files failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}
