//! TLS against the real server with a self-signed certificate made for the test: psql with
//! `sslmode=require` and `verify-full`, pgjdbc with `ssl=true`, and `--tls-required`
//! refusing a client without TLS.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes a certificate for `localhost` and its key into `dir`.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// A server with a fresh certificate, and `extra` flags; also returns what must outlive it.
fn tls_server(extra: &[&str]) -> (common::Server, PathBuf, [tempfile::TempDir; 2]) {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(certs.path());
    let dir = tempfile::tempdir().unwrap();
    let mut flags = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    flags.extend(extra);
    let server = common::start_with(dir.path(), &flags);
    (server, cert, [certs, dir])
}

/// psql with a connection string; (success, stdout, stderr).
fn psql(conninfo: &str, sql: &str) -> (bool, String, String) {
    let out = Command::new("psql")
        .args([conninfo, "-X", "-A", "-t", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql must be installed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn clients_connect_over_tls_and_tls_required_refuses_plaintext() {
    let (server, cert, _dirs) = tls_server(&["--tls-required"]);
    let port = server.addr.port();
    let base = format!("host=localhost port={port} user=runnel dbname=runnel");

    let (ok, out, err) = psql(&format!("{base} sslmode=require"), "SELECT 40 + 2");
    assert!(ok && out == "42", "sslmode=require: {out} {err}");
    let (ok, out, err) = psql(
        &format!("{base} sslmode=verify-full sslrootcert={}", cert.display()),
        "SELECT ssl FROM (SELECT true AS ssl)",
    );
    assert!(ok && out == "t", "sslmode=verify-full: {out} {err}");

    let (ok, _, err) = psql(&format!("{base} sslmode=disable"), "SELECT 1");
    assert!(!ok, "a client without TLS got in");
    assert!(err.contains("requires TLS"), "{err}");
    server.wait_for_log("refused a client without TLS");

    // pgjdbc with ssl=true verifies the certificate against the root it is given.
    let (classpath, _classes) = common::compile_java("JdbcTls");
    let url = format!(
        "jdbc:postgresql://localhost:{port}/runnel?ssl=true&sslmode=verify-full&sslrootcert={}",
        cert.display()
    );
    let out = Command::new("java")
        .args(["-cp", &classpath, "JdbcTls", &url])
        .output()
        .expect("java");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("jdbc tls ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop();
}

#[test]
fn tls_is_optional_unless_required() {
    let (server, _cert, _dirs) = tls_server(&[]);
    let base = format!(
        "host=localhost port={} user=runnel dbname=runnel",
        server.addr.port()
    );
    for mode in ["require", "disable", "prefer"] {
        let (ok, out, err) = psql(&format!("{base} sslmode={mode}"), "SELECT 1");
        assert!(ok && out == "1", "sslmode={mode}: {out} {err}");
    }
    server.stop();
}

#[test]
fn a_bad_certificate_stops_the_server_with_a_clear_error() {
    let certs = tempfile::tempdir().unwrap();
    let cert = certs.path().join("server.crt");
    std::fs::write(&cert, "not a certificate").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["--data-dir"])
        .arg(certs.path().join("data"))
        .args(["--pg-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0"])
        .args(["--http-addr", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.crt"), "{err}");
}
