//! Privileges against the real server with `--auth password`: server files only for the
//! roles that may touch them and never inside the data directory, owners and `GRANT` /
//! `REVOKE` checked on every path a statement can take, continuous queries running with
//! their owner's rights, reserved names, and psql's `\dp`.

mod common;

use std::process::Command;

use common::{rows, sqlstate};

const ADMIN_PASSWORD: &str = "s3cret-admin";

async fn login(server: &common::Server, user: &str, password: &str) -> tokio_postgres::Client {
    common::login(server, user, password)
        .await
        .unwrap_or_else(|e| panic!("{user} logs in: {e}"))
}

/// The SQLSTATE `sql` fails with (panics if it succeeds).
async fn refused(client: &tokio_postgres::Client, sql: &str) -> (String, String) {
    let e = client
        .batch_execute(sql)
        .await
        .err()
        .unwrap_or_else(|| panic!("{sql} should have been refused"));
    let message = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    (sqlstate(&e), message)
}

/// `\dp` through psql, logged in as the superuser.
fn psql_dp(server: &common::Server) -> String {
    let out = Command::new("psql")
        .arg(format!(
            "host={} port={} user=runnel dbname=runnel",
            server.addr.ip(),
            server.addr.port()
        ))
        .args(["-X", "-w", "-c", r"\dp"])
        .env("PGPASSWORD", ADMIN_PASSWORD)
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_files_owners_and_grants() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let outside = dir.path().join("files");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("lines.txt"), "one\ntwo\n").unwrap();
    let server = common::start_with_env(
        &data,
        &["--auth", "password"],
        &[("RUNNEL_PASSWORD", ADMIN_PASSWORD)],
    );
    let admin = login(&server, "runnel", ADMIN_PASSWORD).await;
    admin
        .batch_execute(
            "CREATE USER ann WITH PASSWORD 'ann-pw';
             CREATE STREAM secrets (id BIGINT, body TEXT);
             INSERT INTO secrets VALUES (1, 'the plan'), (2, 'the key')",
        )
        .await
        .unwrap();
    let ann = login(&server, "ann", "ann-pw").await;

    // What pg_dump's statements could reach: not another's stream, nor its ownership.
    for sql in [
        "ALTER TABLE secrets OWNER TO ann",
        "BEGIN; LOCK TABLE secrets IN ACCESS SHARE MODE",
        "PREPARE peek AS SELECT body FROM secrets; EXECUTE peek",
    ] {
        let (code, message) = refused(&ann, sql).await;
        assert_eq!(code, "42501", "{sql}: {message}");
        let _ = ann.batch_execute("ROLLBACK; DEALLOCATE ALL").await;
    }
    // Its owner may hand it over; then it is the new owner's to read.
    admin
        .batch_execute("CREATE STREAM handed (n INT); INSERT INTO handed VALUES (7); ALTER STREAM handed OWNER TO ann")
        .await
        .unwrap();
    assert_eq!(
        rows(&ann, "SELECT n FROM handed").await[0][0].as_deref(),
        Some("7")
    );

    // Server files: not for ann, whatever the path.
    let commit_log = data.join("commit.log").display().to_string();
    for sql in [
        "CREATE EXTERNAL TABLE shadow STORED AS TEXT LOCATION '/etc/shadow'".to_string(),
        format!("CREATE EXTERNAL TABLE cl STORED AS TEXT LOCATION '{commit_log}'"),
        format!(
            "COPY (SELECT 1 AS x) TO '{}' STORED AS CSV",
            outside.join("out.csv").display()
        ),
        format!(
            "COPY (SELECT 1 AS x) TO '{}'",
            outside.join("out.log").display()
        ),
    ] {
        let (code, message) = refused(&ann, &sql).await;
        assert_eq!(code, "42501", "{sql}: {message}");
        assert!(message.contains("server files"), "{message}");
    }
    // The data directory is out of reach even for a superuser: its commit log holds the
    // catalog and every user's verifier, and a write there would erase acknowledged rows.
    for sql in [
        format!("CREATE EXTERNAL TABLE cl STORED AS TEXT LOCATION '{commit_log}'"),
        format!("COPY (SELECT 1 AS x) TO '{commit_log}' STORED AS CSV"),
        // Refused for the path before anything is said about the file's format.
        format!("COPY (SELECT 1 AS x) TO '{commit_log}'"),
        format!(
            "COPY (SELECT 1 AS x) TO '{}/topics/x.csv' STORED AS CSV",
            data.display()
        ),
    ] {
        let (code, message) = refused(&admin, &sql).await;
        assert_eq!(code, "42501", "{sql}: {message}");
        assert!(message.contains("data directory"), "{message}");
    }
    // A granted role opens server files outside the data directory, and only those.
    admin
        .batch_execute(
            "GRANT pg_read_server_files TO ann;
             GRANT CREATE ON SCHEMA public TO ann",
        )
        .await
        .unwrap();
    ann.batch_execute(&format!(
        "CREATE EXTERNAL TABLE lines STORED AS TEXT LOCATION '{}'",
        outside.join("lines.txt").display()
    ))
    .await
    .unwrap();
    assert_eq!(
        rows(&ann, "SELECT count(*) FROM lines").await[0][0].as_deref(),
        Some("2")
    );
    let (code, _) = refused(
        &ann,
        &format!("CREATE EXTERNAL TABLE cl STORED AS TEXT LOCATION '{commit_log}'"),
    )
    .await;
    assert_eq!(code, "42501");
    let (code, _) = refused(
        &ann,
        &format!(
            "COPY (SELECT 1 AS x) TO '{}' STORED AS CSV",
            outside.join("out.csv").display()
        ),
    )
    .await;
    assert_eq!(code, "42501", "reading is not writing");

    // Someone else's stream, on every path a statement takes.
    let reads = [
        "SELECT * FROM secrets",
        "SELECT count(*) FROM (SELECT id FROM secrets) AS s",
        "SELECT 1 WHERE EXISTS (SELECT 1 FROM secrets)",
        "SUBSCRIBE secrets",
        "SELECT id FROM secrets EMIT CHANGES",
        "CREATE MATERIALIZED VIEW leak AS SELECT body, count(*) AS n FROM secrets GROUP BY body",
        "CREATE STREAM leak AS SELECT * FROM secrets",
        "CREATE SUBSCRIPTION leak FROM secrets",
        "SELECT * FROM TUMBLE(secrets, _timestamp, INTERVAL '1 minute')",
        "CREATE MATERIALIZED VIEW leak AS SELECT window_start, count(*) AS n
             FROM HOP(secrets, _timestamp, INTERVAL '1 minute', INTERVAL '2 minutes')
             GROUP BY window_start",
    ];
    for sql in reads {
        let (code, message) = refused(&ann, sql).await;
        assert_eq!(code, "42501", "{sql}: {message}");
    }
    for sql in [
        "INSERT INTO secrets VALUES (3, 'forged')",
        "INSERT INTO secrets SELECT 3, 'forged'",
        "INSERT INTO secrets SELECT 3, line FROM lines",
        "DROP STREAM secrets",
    ] {
        let (code, message) = refused(&ann, sql).await;
        assert_eq!(code, "42501", "{sql}: {message}");
    }
    let copier = login(&server, "ann", "ann-pw").await;
    let copy = copier
        .copy_in::<_, bytes::Bytes>("COPY secrets FROM STDIN")
        .await;
    assert_eq!(sqlstate(&copy.err().expect("COPY refused")), "42501");
    // (tokio-postgres follows a failed COPY with CopyFail and a second Sync, whose extra
    // ReadyForQuery it then misreads, against PostgreSQL too: a fresh connection goes on.)

    // GRANT lets her read, not write; REVOKE takes it back.
    admin
        .batch_execute("GRANT SELECT ON secrets TO ann")
        .await
        .unwrap();
    assert_eq!(
        rows(&ann, "SELECT count(*) FROM secrets").await[0][0].as_deref(),
        Some("2")
    );
    let (code, _) = refused(&ann, "INSERT INTO secrets VALUES (3, 'forged')").await;
    assert_eq!(code, "42501");
    let (code, _) = refused(&ann, "GRANT SELECT ON secrets TO PUBLIC").await;
    assert_eq!(code, "42501", "only the owner grants");

    // Her view runs with her rights: while she may read, it counts; when that is revoked,
    // it fails saying why instead of reading on.
    ann.batch_execute(
        "CREATE MATERIALIZED VIEW per_body AS SELECT body, count(*) AS n FROM secrets GROUP BY body",
    )
    .await
    .unwrap();
    let dp = psql_dp(&server);
    assert!(dp.contains("ann=r/runnel"), "{dp}");
    admin
        .batch_execute("REVOKE SELECT ON secrets FROM ann")
        .await
        .unwrap();
    let (code, _) = refused(&ann, "SELECT * FROM secrets").await;
    assert_eq!(code, "42501");
    admin
        .batch_execute("INSERT INTO secrets VALUES (3, 'later')")
        .await
        .unwrap();
    let error = common::query_failure(&admin, "per_body").await;
    assert!(error.contains("owner ann"), "{error}");
    assert!(!psql_dp(&server).contains("ann=r/runnel"));

    // Her own objects are hers to share; others still see nothing of them.
    admin
        .batch_execute("CREATE USER bob WITH PASSWORD 'bob-pw'")
        .await
        .unwrap();
    ann.batch_execute("CREATE STREAM notes (body TEXT); INSERT INTO notes VALUES ('mine')")
        .await
        .unwrap();
    let bob = login(&server, "bob", "bob-pw").await;
    let (code, _) = refused(&bob, "SELECT * FROM notes").await;
    assert_eq!(code, "42501");
    let (code, _) = refused(&bob, "SELECT * FROM per_body").await;
    assert_eq!(code, "42501");
    ann.batch_execute("GRANT SELECT ON notes TO bob")
        .await
        .unwrap();
    assert_eq!(
        rows(&bob, "SELECT body FROM notes").await[0][0].as_deref(),
        Some("mine")
    );

    // A user who owns objects cannot be dropped out from under them.
    let (code, message) = refused(&admin, "DROP USER ann").await;
    assert_eq!(code, "2BP01", "{message}");
    assert!(message.contains("notes"), "{message}");

    // Grants survive a restart (they are in the catalog).
    server.stop();
    let server = common::start_with_env(&data, &["--auth", "password"], &[]);
    let bob = login(&server, "bob", "bob-pw").await;
    assert_eq!(
        rows(&bob, "SELECT body FROM notes").await[0][0].as_deref(),
        Some("mine")
    );
    let (code, _) = refused(&bob, "SELECT * FROM secrets").await;
    assert_eq!(code, "42501");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    for sql in [
        "CREATE STREAM __state_v_1 (x BIGINT)",
        "CREATE TOPIC __consumer_offsets",
        "CREATE STREAM sys (x BIGINT)",
        "CREATE STREAM \"sys.queries\" (x BIGINT)",
        "CREATE EXTERNAL TABLE __x STORED AS TEXT LOCATION '/usr/share/doc'",
    ] {
        let (code, message) = refused(&client, sql).await;
        assert_eq!(code, "42939", "{sql}: {message}");
    }
    client
        .batch_execute("CREATE STREAM system_log (x BIGINT)")
        .await
        .unwrap();
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_writes_need_their_own_privileges() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with_env(
        dir.path(),
        &["--auth", "password"],
        &[("RUNNEL_PASSWORD", ADMIN_PASSWORD)],
    );
    let admin = login(&server, "runnel", ADMIN_PASSWORD).await;
    admin
        .batch_execute(
            "CREATE USER ann WITH PASSWORD 'ann-pw';
             CREATE TABLE prices (id INT PRIMARY KEY, price INT);
             INSERT INTO prices VALUES (1, 10), (2, 20);
             CREATE STREAM ticks (id INT);
             CREATE STREAM quotes (id INT, bid INT);
             GRANT INSERT ON prices TO ann;
             GRANT SELECT ON ticks TO ann;
             GRANT CREATE ON SCHEMA public TO ann",
        )
        .await
        .unwrap();
    let ann = login(&server, "ann", "ann-pw").await;
    // INSERT alone inserts; it neither rewrites nor deletes what is there.
    ann.batch_execute("INSERT INTO prices VALUES (3, 30)")
        .await
        .unwrap();
    // Looking a table up in a continuous query reads it, as does a view over the table:
    // SELECT on the table too.
    let lookup =
        "CREATE STREAM priced AS SELECT t.id, p.price FROM ticks t JOIN prices p ON t.id = p.id";
    let over_table =
        "CREATE MATERIALIZED VIEW price_sum AS SELECT count(*) AS n, sum(price) AS s FROM prices";
    for sql in [
        "INSERT INTO prices VALUES (1, 0) ON CONFLICT (id) DO UPDATE SET price = excluded.price",
        "UPDATE prices SET price = 0 WHERE id = 1",
        "DELETE FROM prices WHERE id = 2",
        lookup,
        over_table,
    ] {
        let (code, message) = refused(&ann, sql).await;
        assert_eq!(code, "42501", "{sql}: {message}");
    }
    admin
        .batch_execute("GRANT SELECT, UPDATE, DELETE ON prices TO ann")
        .await
        .unwrap();
    ann.batch_execute(
        "INSERT INTO prices VALUES (1, 11) ON CONFLICT (id) DO UPDATE SET price = excluded.price;
         UPDATE prices SET price = 21 WHERE id = 2;
         DELETE FROM prices WHERE id = 3",
    )
    .await
    .unwrap();
    ann.batch_execute(lookup).await.unwrap();
    ann.batch_execute(over_table).await.unwrap();
    // Every stream a join reads needs SELECT, wherever it stands in the join.
    let joins = [
        "CREATE STREAM paired AS SELECT t.id, q.bid FROM ticks t JOIN quotes q ON t.id = q.id",
        "CREATE STREAM paired AS SELECT t.id, q.bid FROM quotes q JOIN ticks t ON t.id = q.id",
        "CREATE MATERIALIZED VIEW best AS SELECT * FROM (
             SELECT t.id, q.bid, row_number() OVER (PARTITION BY t.id ORDER BY q.bid DESC) AS rn
             FROM ticks t JOIN quotes q ON t.id = q.id) x
         WHERE rn <= 2",
    ];
    for sql in joins {
        let (code, message) = refused(&ann, sql).await;
        assert_eq!(code, "42501", "{sql}: {message}");
        assert!(message.contains("quotes"), "{sql}: {message}");
    }
    admin
        .batch_execute("GRANT SELECT ON quotes TO ann")
        .await
        .unwrap();
    ann.batch_execute(joins[0]).await.unwrap();
    ann.batch_execute(joins[2]).await.unwrap();
    ann.batch_execute("FLUSH").await.unwrap();
    assert_eq!(
        rows(&ann, "SELECT n, s FROM price_sum").await,
        [vec![Some("2".to_string()), Some("32".to_string())]]
    );
    assert_eq!(
        rows(&admin, "SELECT id, price FROM prices ORDER BY id").await,
        [
            vec![Some("1".to_string()), Some("11".to_string())],
            vec![Some("2".to_string()), Some("21".to_string())],
        ]
    );
    server.stop();
}

/// A stream made with `late_data_topic` naming an existing stream takes that stream as its
/// late-data stream (a restore) only for the stream's owner or a superuser: another user
/// cannot have the late rows of a stream of hers written into someone else's stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_its_owner_takes_an_existing_late_stream() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with_env(
        dir.path(),
        &["--auth", "password"],
        &[("RUNNEL_PASSWORD", ADMIN_PASSWORD)],
    );
    let admin = login(&server, "runnel", ADMIN_PASSWORD).await;
    admin
        .batch_execute(
            "CREATE USER ann WITH PASSWORD 'ann-pw';
             GRANT CREATE ON SCHEMA public TO ann;
             CREATE STREAM clicks (url TEXT, at TIMESTAMP, WATERMARK FOR at AS at)
                 WITH (late_data_topic = 'clicks_late');
             DROP STREAM clicks",
        )
        .await
        .unwrap();
    let ann = login(&server, "ann", "ann-pw").await;
    let create = "CREATE STREAM clicks (url TEXT, at TIMESTAMP, WATERMARK FOR at AS at) \
                  WITH (late_data_topic = 'clicks_late')";
    let (code, message) = refused(&ann, create).await;
    assert_eq!(code, "42P07", "{message}");
    assert!(
        rows(
            &admin,
            "SELECT relname FROM pg_class WHERE relname = 'clicks'"
        )
        .await
        .is_empty(),
        "a refused stream is not made"
    );
    // The late stream's owner takes it.
    admin.batch_execute(create).await.unwrap();
    assert_eq!(
        rows(
            &admin,
            "SELECT reloptions::text LIKE '%late_data_topic=clicks_late%' FROM pg_class \
             WHERE relname = 'clicks'"
        )
        .await,
        [vec![Some("t".to_string())]]
    );
    server.stop();
}
