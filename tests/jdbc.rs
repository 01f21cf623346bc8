//! pgjdbc against the real server: tests/jdbc/JdbcSmoke.java, compiled with the machine's
//! javac against the Debian package's driver (`libpostgresql-jdbc-java`, installed by
//! `.ci/run`; `RUNNEL_PGJDBC_JAR` points elsewhere).

mod common;

use std::process::Command;

#[test]
fn pgjdbc_prepared_statements_and_types() {
    let (classpath, _classes) = common::compile_java("JdbcSmoke");
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
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
