//! Connection slots against the real server: over the limit a client gets SQLSTATE 53300 as
//! an ErrorResponse, superusers keep reserved slots, sockets that never finish start-up are
//! closed after the start-up timeout and cannot lock logins out, and shutdown tells every
//! client 57P01.

mod common;

use std::time::{Duration, Instant};

use common::{login, sqlstate};
use tokio::io::AsyncReadExt;

fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_reserved_for_superusers_and_a_start_up_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with_env(
        dir.path(),
        &[
            "--auth",
            "password",
            "--max-connections",
            "3",
            "--superuser-reserved-connections",
            "1",
            "--startup-timeout-ms",
            "3000",
        ],
        &[("RUNNEL_PASSWORD", "admin-pw")],
    );
    let admin = login(&server, "runnel", "admin-pw").await.unwrap();
    admin
        .batch_execute("CREATE USER ann WITH PASSWORD 'ann-pw'")
        .await
        .unwrap();
    let _ann = login(&server, "ann", "ann-pw").await.unwrap();

    // Two sessions are taken; the last slot is the superusers'.
    let e = login(&server, "ann", "ann-pw")
        .await
        .map(|_| ())
        .expect_err("refused");
    assert_eq!(sqlstate(&e), "53300", "{e}");
    assert!(message(&e).contains("reserved"), "{}", message(&e));
    let _admin2 = login(&server, "runnel", "admin-pw").await.unwrap();
    let e = login(&server, "runnel", "admin-pw")
        .await
        .map(|_| ())
        .expect_err("refused");
    assert_eq!(sqlstate(&e), "53300");
    assert!(message(&e).contains("too many clients"), "{}", message(&e));
    drop(_admin2);

    // Sockets that connect and say nothing hold start-up slots, not sessions; over their
    // limit a client is told so; after the timeout they are closed.
    // A refused login's start-up may still hold its slot when an idle socket arrives, which
    // is then refused instead, and a login may reach the server before an idle socket does:
    // sockets are added, a login tried after each, until a login is refused.
    let mut idle = vec![];
    let mut refused = None;
    for _ in 0..20 {
        idle.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
        if idle.len() < 3 {
            continue;
        }
        if let Err(e) = login(&server, "runnel", "admin-pw").await {
            refused = Some(e);
            break;
        }
    }
    let e = refused.expect("a login refused while the idle sockets start up");
    assert_eq!(sqlstate(&e), "53300", "{e}");
    let started = Instant::now();
    let mut closed = 0;
    for socket in &mut idle {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf))
            .await
            .expect("closed by the start-up timeout")
            .unwrap_or(0);
        // Closed unanswered, or (one that came while all slots were taken) refused at once
        // with an ErrorResponse.
        assert!(
            n == 0 || buf[0] == b'E',
            "an idle socket got {:?}",
            &buf[..n]
        );
        closed += usize::from(n == 0);
    }
    assert!(closed >= 3, "{closed} idle sockets closed by the timeout");
    assert!(started.elapsed() < Duration::from_secs(10));
    login(&server, "runnel", "admin-pw")
        .await
        .expect("in again once the idle sockets are gone");
    // The sessions logged in all along still work.
    admin.batch_execute("SELECT 1").await.unwrap();
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_clients_57p01() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let (client, connection) =
        tokio_postgres::connect(&server.connection_string(), tokio_postgres::NoTls)
            .await
            .unwrap();
    let ended = tokio::spawn(connection);
    client.batch_execute("SELECT 1").await.unwrap();
    server.stop();
    let outcome = tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("the connection ends")
        .unwrap();
    let e = outcome.expect_err("ended by the server");
    assert_eq!(sqlstate(&e), "57P01", "{e}");
}
