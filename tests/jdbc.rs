//! pgjdbc against the real server: tests/jdbc/JdbcSmoke.java, compiled with the machine's
//! javac against the Debian package's driver (`libpostgresql-jdbc-java`, installed by
//! `.ci/run`; `RUNNEL_PGJDBC_JAR` points elsewhere).

mod common;

use std::process::Command;

#[test]
fn pgjdbc_prepared_statements_and_types() {
    jdbc_smoke("");
}

/// The same with server-prepared statements from the first execution, whose results pgjdbc
/// asks for in the binary format.
#[test]
fn pgjdbc_in_binary_transfer() {
    jdbc_smoke("prepareThreshold=1&binaryTransfer=true");
}

fn jdbc_smoke(parameters: &str) {
    let (classpath, _classes) = common::compile_java("JdbcSmoke");
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let out = Command::new("java")
        .args([
            "-cp",
            &classpath,
            "JdbcSmoke",
            &server.addr.port().to_string(),
            parameters,
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
