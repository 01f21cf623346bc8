//! Passwords (`--auth password`, SCRAM-SHA-256) against the real server: the superuser from
//! `RUNNEL_PASSWORD`, right and wrong passwords, unknown users answered like wrong passwords,
//! no way in without a password, users created and dropped by the superuser only, and
//! nothing of a password kept on disk.

mod common;

use std::process::Command;

use common::{login, rows, sqlstate};

const PASSWORD: [&str; 2] = ["--auth", "password"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_passwords_and_users() {
    let dir = tempfile::tempdir().unwrap();

    // The first start in password mode needs the superuser's password.
    let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--pg-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0"])
        .args(["--http-addr", "127.0.0.1:0"])
        .args(PASSWORD)
        .env_remove("RUNNEL_PASSWORD")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("RUNNEL_PASSWORD"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let server =
        common::start_with_env(dir.path(), &PASSWORD, &[("RUNNEL_PASSWORD", "Tr0ub4dor&3")]);
    let admin = login(&server, "runnel", "Tr0ub4dor&3")
        .await
        .expect("the right password");
    let me = rows(&admin, "SELECT current_user AS me").await;
    assert_eq!(me[0][0].as_deref(), Some("runnel"));

    let wrong = login(&server, "runnel", "tr0ub4dor&3")
        .await
        .expect_err("a wrong password");
    assert_eq!(sqlstate(&wrong), "28P01");
    let unknown = login(&server, "mallory", "anything")
        .await
        .expect_err("an unknown user");
    assert_eq!(sqlstate(&unknown), "28P01");
    assert_eq!(
        wrong
            .as_db_error()
            .unwrap()
            .message()
            .replace("runnel", "?"),
        unknown
            .as_db_error()
            .unwrap()
            .message()
            .replace("mallory", "?"),
        "an unknown user is answered as a wrong password"
    );
    // The log tells them apart; a made-up name is not counted (a client sending names
    // must not grow the server's table of failures).
    server.wait_for_log("no such user");
    assert!(
        server
            .log()
            .lines()
            .filter(|l| l.contains("mallory"))
            .all(|l| l.contains("no such user") && !l.contains("in_a_row")),
        "{}",
        server.log()
    );
    let _ = login(&server, "runnel", "again-wrong")
        .await
        .expect_err("wrong");
    server.wait_for_log("in_a_row=2");

    // No password, no entry (what trust would have let in).
    let conninfo = format!(
        "host={} port={} user=runnel dbname=runnel",
        server.addr.ip(),
        server.addr.port()
    );
    assert!(
        tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
            .await
            .is_err()
    );
    let psql = |user: &str, password: Option<&str>| {
        let mut command = Command::new("psql");
        command.args([
            &format!("{conninfo} user={user}"),
            "-X",
            "-w",
            "-A",
            "-t",
            "-c",
            "SELECT current_user",
        ]);
        match password {
            Some(p) => command.env("PGPASSWORD", p),
            None => command.env_remove("PGPASSWORD"),
        };
        command.output().expect("psql")
    };
    let out = psql("runnel", None);
    assert!(!out.status.success(), "psql got in without a password");
    let out = psql("runnel", Some("Tr0ub4dor&3"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "runnel");

    // Users: the superuser creates them; they log in; they cannot manage users.
    admin
        .batch_execute("CREATE USER ann WITH PASSWORD 'correct horse'")
        .await
        .unwrap();
    let e = admin
        .batch_execute("CREATE USER ann WITH PASSWORD 'x'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42710");
    let ann = login(&server, "ann", "correct horse").await.expect("ann");
    let e = ann
        .batch_execute("CREATE USER eve WITH PASSWORD 'x'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let e = ann
        .batch_execute("CREATE STREAM notes (body TEXT)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "creating needs CREATE on the schema");
    admin
        .batch_execute("GRANT CREATE ON SCHEMA public TO ann")
        .await
        .unwrap();
    ann.batch_execute("CREATE STREAM notes (body TEXT); INSERT INTO notes VALUES ('hi')")
        .await
        .unwrap();
    admin
        .batch_execute("ALTER USER ann WITH PASSWORD 'battery staple'")
        .await
        .unwrap();
    assert!(login(&server, "ann", "correct horse").await.is_err());
    login(&server, "ann", "battery staple")
        .await
        .expect("the new password");
    let e = admin.batch_execute("DROP USER runnel").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");

    // Nothing of a password on disk (the catalog is in the commit log).
    for (path, _, _) in common::files(dir.path()) {
        let bytes = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).to_string();
        for secret in ["Tr0ub4dor&3", "correct horse", "battery staple"] {
            assert!(!bytes.contains(secret), "{secret} is in {}", path.display());
        }
    }

    // Users survive a restart; RUNNEL_PASSWORD is needed only the first time.
    server.stop();
    let server = common::start_with_env(dir.path(), &PASSWORD, &[]);
    let admin = login(&server, "runnel", "Tr0ub4dor&3")
        .await
        .expect("after a restart");
    login(&server, "ann", "battery staple")
        .await
        .expect("ann after a restart");
    let notes = rows(&admin, "SELECT body FROM notes").await;
    assert_eq!(notes[0][0].as_deref(), Some("hi"));
    let e = admin.batch_execute("DROP USER ann").await.unwrap_err();
    assert_eq!(sqlstate(&e), "2BP01", "ann owns notes");
    admin
        .batch_execute("DROP STREAM notes; DROP USER ann")
        .await
        .unwrap();
    assert_eq!(
        sqlstate(&login(&server, "ann", "battery staple").await.err().unwrap()),
        "28P01"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_lets_every_name_in() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let anyone = login(&server, "whoever", "").await.expect("trust");
    let me = rows(&anyone, "SELECT current_user AS me").await;
    assert_eq!(me[0][0].as_deref(), Some("whoever"));
    server.stop();
}
