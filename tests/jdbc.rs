//! pgjdbc against the real server: tests/jdbc/JdbcSmoke.java, compiled with the machine's
//! javac against the Debian package's driver (`libpostgresql-jdbc-java`, installed by
//! `.ci/run`; `RUNNEL_PGJDBC_JAR` points elsewhere).

mod common;

use std::path::PathBuf;
use std::process::Command;

#[test]
fn pgjdbc_prepared_statements_and_types() {
    let jar = std::env::var("RUNNEL_PGJDBC_JAR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/share/java/postgresql.jar"));
    assert!(
        jar.exists(),
        "pgjdbc not found at {} (apt-get install libpostgresql-jdbc-java)",
        jar.display()
    );
    let classes = tempfile::tempdir().unwrap();
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/jdbc/JdbcSmoke.java");
    let status = Command::new("javac")
        .arg("-d")
        .arg(classes.path())
        .arg("-cp")
        .arg(&jar)
        .arg(&source)
        .status()
        .expect("javac must be installed (apt-get install default-jdk-headless)");
    assert!(status.success(), "javac failed");

    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let classpath = format!("{}:{}", jar.display(), classes.path().display());
    let out = Command::new("java")
        .args([
            "-cp",
            &classpath,
            "JdbcSmoke",
            &server.addr.port().to_string(),
        ])
        .output()
        .expect("java");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("jdbc ok"),
        "{stdout}\n{stderr}\n--- server ---\n{}",
        server.log()
    );
    server.stop();
}
