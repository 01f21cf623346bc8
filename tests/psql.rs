//! psql itself against the real server: the README's quickstart, `COPY … FROM STDIN` as
//! psql sends it, `COPY … TO STDOUT` and `\copy … TO` as psql reads them, and errors that
//! leave the session usable.

mod common;

use std::process::{Command, Stdio};

use common::psql;

#[test]
fn quickstart_as_the_readme_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let script = "
CREATE STREAM clicks (user_id BIGINT KEY, url TEXT, ts TIMESTAMP) WITH (partitions = 4);
INSERT INTO clicks VALUES (1, '/home', '2026-01-01 10:00:00'), (2, '/cart', now());
SELECT user_id, url FROM clicks ORDER BY user_id;
SELECT url, count(*) AS n FROM clicks GROUP BY url ORDER BY url;
CREATE STREAM cart_clicks AS SELECT user_id, ts FROM clicks WHERE url = '/cart';
CREATE MATERIALIZED VIEW clicks_per_user AS
    SELECT user_id, count(*) AS n, max(ts) AS last_seen FROM clicks GROUP BY user_id;
INSERT INTO clicks VALUES (2, '/cart', now()), (3, '/home', now());
FLUSH;
SELECT count(*) AS cart_rows FROM cart_clicks;
SELECT user_id, n FROM clicks_per_user WHERE user_id = 2;
SHOW QUERIES;
CREATE SUBSCRIPTION billing FROM clicks WITH (start = 'earliest');
DECLARE cur SUBSCRIPTION CURSOR FOR billing;
FETCH 2 FROM cur;
COMMIT;
SELECT sum(committed) AS consumed, sum(lag) AS left_over FROM sys.consumer_groups;
";
    let (ok, out, err) = psql(&server, &["-v", "ON_ERROR_STOP=1"], script);
    assert!(ok, "psql failed: {err}\n{out}");
    assert!(out.contains("CREATE STREAM"), "{out}");
    assert!(out.contains("INSERT 0 2"), "{out}");
    assert!(out.contains("       1 | /home"), "{out}");
    assert!(out.contains("       2 | /cart"), "{out}");
    assert!(out.contains(" /cart | 1"), "{out}");
    // The continuous part: both /cart clicks in the derived stream, user 2 counted twice.
    assert!(out.contains("CREATE MATERIALIZED VIEW"), "{out}");
    assert!(out.contains("FLUSH"), "{out}");
    assert!(
        out.contains(" cart_rows \n-----------\n         2\n"),
        "{out}"
    );
    assert!(out.contains("       2 | 2\n"), "{out}");
    assert!(
        out.contains(" clicks_per_user | view   | clicks | running"),
        "{out}"
    );
    assert!(
        out.contains(" cart_clicks     | stream | clicks | running"),
        "{out}"
    );
    // The consumer group: two of the four clicks consumed and committed.
    assert!(
        out.contains(
            "DECLARE CURSOR
"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "(2 rows)

COMMIT
"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "        2 |         2
"
        ),
        "consumed 2, 2 left:\n{out}"
    );
    server.stop();
}

#[test]
fn copy_from_stdin_through_psql() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let (ok, _, err) = psql(
        &server,
        &[
            "-c",
            "CREATE STREAM clicks (user_id BIGINT KEY, url TEXT, ts TIMESTAMP) WITH (partitions = 4)",
        ],
        "",
    );
    assert!(ok, "{err}");

    // CSV with a header, as \copy and COPY … FROM STDIN send it.
    let mut csv = String::from("user_id,url,ts\n");
    for i in 0..10_000 {
        csv.push_str(&format!(
            "{},/page/{},2026-01-01 00:00:{:02}\n",
            i % 100,
            i % 7,
            i % 60
        ));
    }
    let (ok, out, err) = psql(
        &server,
        &["-c", "COPY clicks FROM STDIN WITH (FORMAT csv, HEADER)"],
        &csv,
    );
    assert!(ok, "{err}");
    assert!(out.contains("COPY 10000"), "{out}");

    // The text format, ended by \. as psql scripts write it.
    let script = "COPY clicks (user_id, url) FROM STDIN;\n500\t/tab\\tbed\n501\t\\N\n\\.\nSELECT count(*) FROM clicks WHERE user_id >= 500;\n";
    let (ok, out, err) = psql(&server, &["-v", "ON_ERROR_STOP=1"], script);
    assert!(ok, "{err}");
    assert!(out.contains("COPY 2"), "{out}");
    assert!(out.contains("     2\n"), "{out}");

    // A malformed line: the error names it, and none of that COPY's rows are visible.
    let bad = "1,/ok,2026-01-01 00:00:00\n2,/ok,2026-01-01 00:00:00\nthree,/bad,2026-01-01 00:00:00\n4,/ok,2026-01-01 00:00:00\n";
    let (ok, _, err) = psql(
        &server,
        &["-c", "COPY clicks FROM STDIN WITH (FORMAT csv)"],
        bad,
    );
    assert!(!ok);
    assert!(err.contains("line 3, column user_id"), "{err}");
    assert!(err.contains("\"three\""), "{err}");
    let (ok, out, err) = psql(&server, &["-c", "SELECT count(*) FROM clicks"], "");
    assert!(ok, "{err}");
    assert!(out.contains("10002"), "{out}");
    server.stop();
}

#[test]
fn copy_to_stdout_and_backslash_copy_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let script = "
CREATE STREAM clicks (user_id BIGINT KEY, url TEXT, ts TIMESTAMP, amount DOUBLE PRECISION);
INSERT INTO clicks VALUES (1, 'a,b', '2026-01-01 10:00:00', 2), (2, NULL, '2026-01-01 10:00:00.5', 0.25);
";
    let (ok, _, err) = psql(&server, &["-v", "ON_ERROR_STOP=1", "-q"], script);
    assert!(ok, "{err}");
    let (ok, out, err) = psql(
        &server,
        &[
            "-c",
            "COPY (SELECT * FROM clicks ORDER BY user_id) TO STDOUT WITH (FORMAT csv, HEADER)",
        ],
        "",
    );
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "user_id,url,ts,amount\n1,\"a,b\",2026-01-01 10:00:00,2\n2,,2026-01-01 10:00:00.5,0.25\n"
    );
    let file = dir.path().join("out.tsv");
    let (ok, out, err) = psql(
        &server,
        &[
            "-c",
            &format!(
                "\\copy (SELECT user_id, url FROM clicks ORDER BY user_id) TO '{}'",
                file.display()
            ),
        ],
        "",
    );
    assert!(ok, "{err}");
    assert!(out.contains("COPY 2"), "{out}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "1\ta,b\n2\t\\N\n");
    server.stop();
}

#[test]
fn errors_in_a_psql_session_leave_it_usable() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let script = "
\\set VERBOSITY verbose
SELECT * FROM no_such_stream;
CREATE STREAM \"../escape\" (a INT);
CREATE STREAM s (a INT);
INSERT INTO s VALUES ('not a number');
INSERT INTO s VALUES (41), (42);
SELECT sum(a) FROM s;
";
    let (_, out, err) = psql(&server, &[], script);
    assert!(err.contains("ERROR:  42P01"), "{err}");
    assert!(err.contains("ERROR:  42602"), "{err}");
    assert!(err.contains("ERROR:  22P02"), "{err}");
    assert!(out.contains("83"), "the session carried on: {out}");
    // Nothing was written outside the data directory.
    assert!(!dir.path().join("..").join("escape").exists());
    server.stop();
}

/// `COPY (SUBSCRIBE …) TO STDOUT` in psql prints rows as they are inserted, and Ctrl-C
/// (SIGINT: psql sends a cancel request) ends it. psql's stdout is made unbuffered with
/// `stdbuf`, as a terminal would have it.
#[test]
fn copy_subscribe_prints_rows_as_they_happen() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let (ok, _, err) = psql(
        &server,
        &[
            "-c",
            "CREATE STREAM s (x BIGINT, t TEXT)",
            "-c",
            "INSERT INTO s VALUES (1, 'before')",
        ],
        "",
    );
    assert!(ok, "{err}");
    let mut child = Command::new("stdbuf")
        .args(["-o0", "psql"])
        .args(["-h", &server.addr.ip().to_string()])
        .args(["-p", &server.addr.port().to_string()])
        .args(["-U", "runnel", "-d", "runnel", "-X", "--no-psqlrc"])
        .args(["-c", "COPY (SUBSCRIBE s WITH (snapshot = true)) TO STDOUT"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("stdbuf (coreutils) and psql");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let next_line = || {
        lines
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("a row while the COPY runs")
    };
    // The snapshot first: the subscription is running.
    assert_eq!(next_line(), "1\tbefore");
    for (x, t) in [(2, "after"), (3, "tab\there")] {
        let (ok, _, err) = psql(
            &server,
            &[
                "-c",
                &format!("INSERT INTO s VALUES ({x}, E'{}')", t.replace('\t', "\\t")),
            ],
            "",
        );
        assert!(ok, "{err}");
        assert_eq!(next_line(), format!("{x}\t{}", t.replace('\t', "\\t")));
    }
    // Ctrl-C.
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );
    server.stop();
}

/// psql's describe commands read pg_catalog: streams are tables, materialized views are
/// materialized views, `sys` is a schema of its own.
#[test]
fn psql_describe_commands_list_streams_and_views() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let setup = "
CREATE STREAM clicks (user_id BIGINT KEY, url TEXT, ts TIMESTAMP, props JSONB, visit UUID) WITH (partitions = 2);
CREATE MATERIALIZED VIEW clicks_per_user AS SELECT user_id, count(*) AS n FROM clicks GROUP BY user_id;
";
    let (ok, out, err) = psql(&server, &["-v", "ON_ERROR_STOP=1"], setup);
    assert!(ok, "psql failed: {err}\n{out}");
    let describe = |command: &str| {
        let (ok, out, err) = psql(&server, &["-v", "ON_ERROR_STOP=1", "-c", command], "");
        assert!(ok, "{command} failed: {err}\n{out}");
        assert!(!err.contains("ERROR"), "{command}: {err}");
        out + &err
    };
    let row = |out: &str, cells: &[&str]| {
        out.lines().any(|line| {
            let fields: Vec<&str> = line.split('|').map(str::trim).collect();
            fields.len() >= cells.len() && fields[..cells.len()] == *cells
        })
    };

    let all = describe("\\d");
    assert!(row(&all, &["public", "clicks", "table"]), "\\d:\n{all}");
    assert!(
        row(&all, &["public", "clicks_per_user", "materialized view"]),
        "\\d:\n{all}"
    );
    assert!(
        !all.contains("sys "),
        "sys is not on the search path:\n{all}"
    );

    let tables = describe("\\dt");
    assert!(
        row(&tables, &["public", "clicks", "table"]),
        "\\dt:\n{tables}"
    );
    assert!(!tables.contains("clicks_per_user"), "\\dt:\n{tables}");
    let views = describe("\\dm");
    assert!(
        row(&views, &["public", "clicks_per_user", "materialized view"]),
        "\\dm:\n{views}"
    );
    let plain_views = describe("\\dv");
    assert!(
        !plain_views.contains("clicks_per_user"),
        "\\dv:\n{plain_views}"
    );
    let system = describe("\\dt sys.*");
    assert!(
        row(&system, &["sys", "queries", "table"]),
        "\\dt sys.*:\n{system}"
    );

    let columns = describe("\\d clicks");
    assert!(
        columns.contains("Table \"public.clicks\""),
        "\\d clicks:\n{columns}"
    );
    assert!(
        row(&columns, &["user_id", "bigint"]),
        "\\d clicks:\n{columns}"
    );
    assert!(row(&columns, &["url", "text"]), "\\d clicks:\n{columns}");
    assert!(
        row(&columns, &["ts", "timestamp without time zone"]),
        "\\d clicks:\n{columns}"
    );
    assert!(row(&columns, &["props", "jsonb"]), "\\d clicks:\n{columns}");
    assert!(row(&columns, &["visit", "uuid"]), "\\d clicks:\n{columns}");
    let view = describe("\\d clicks_per_user");
    assert!(
        view.contains("Materialized view \"public.clicks_per_user\""),
        "\\d clicks_per_user:\n{view}"
    );
    assert!(row(&view, &["n", "bigint"]), "\\d clicks_per_user:\n{view}");

    let schemas = describe("\\dn");
    assert!(
        row(&schemas, &["public"]) && row(&schemas, &["sys"]),
        "\\dn:\n{schemas}"
    );
    let databases = describe("\\l");
    assert!(row(&databases, &["runnel"]), "\\l:\n{databases}");

    // The `+` forms and the other listings psql users reach for.
    let verbose = describe("\\d+");
    assert!(
        verbose.contains("Size") && verbose.contains("Description"),
        "\\d+:\n{verbose}"
    );
    assert!(
        row(&verbose, &["public", "clicks", "table"]),
        "\\d+:\n{verbose}"
    );
    let tables = describe("\\dt+");
    assert!(
        row(&tables, &["public", "clicks", "table"]),
        "\\dt+:\n{tables}"
    );
    let databases = describe("\\l+");
    assert!(row(&databases, &["runnel"]), "\\l+:\n{databases}");
    let schemas = describe("\\dn+");
    assert!(row(&schemas, &["public"]), "\\dn+:\n{schemas}");
    let (ok, out, err) = psql(
        &server,
        &["-v", "ON_ERROR_STOP=1"],
        "CREATE USER ann WITH PASSWORD 'secret';",
    );
    assert!(ok, "CREATE USER: {err}\n{out}");
    for command in ["\\du", "\\dg"] {
        let roles = describe(command);
        assert!(
            row(&roles, &["runnel", "Superuser, Create role, Create DB"]),
            "{command}:\n{roles}"
        );
        assert!(row(&roles, &["ann", ""]), "{command}:\n{roles}");
    }
    // As in PostgreSQL without patterns: functions and types of users' own, none here.
    let functions = describe("\\df");
    assert!(
        functions.contains("List of functions") && functions.contains("(0 rows)"),
        "\\df:\n{functions}"
    );
    // A built-in function's definition and signature, as PostgreSQL 16 prints them.
    let now = describe("\\sf now");
    assert_eq!(
        now,
        "CREATE OR REPLACE FUNCTION pg_catalog.now()\n RETURNS timestamp with time zone\n \
         LANGUAGE internal\n STABLE PARALLEL SAFE STRICT\nAS $function$now$function$\n",
        "\\sf now"
    );
    let length = describe("\\sf length(text)");
    assert!(
        length
            .starts_with("CREATE OR REPLACE FUNCTION pg_catalog.length(text)\n RETURNS integer\n")
            && length.contains("AS $function$textlen$function$"),
        "\\sf length(text):\n{length}"
    );
    // Arguments with defaults show them, as PostgreSQL deparses them.
    let interval = describe("\\sf make_interval");
    assert!(
        interval.starts_with(
            "CREATE OR REPLACE FUNCTION pg_catalog.make_interval(years integer DEFAULT 0, \
             months integer DEFAULT 0, weeks integer DEFAULT 0, days integer DEFAULT 0, \
             hours integer DEFAULT 0, mins integer DEFAULT 0, secs double precision DEFAULT \
             0.0)\n"
        ),
        "\\sf make_interval:\n{interval}"
    );
    let set = describe("\\df jsonb_set");
    assert!(
        set.contains(
            "jsonb_in jsonb, path text[], replacement jsonb, create_if_missing boolean \
             DEFAULT true"
        ),
        "\\df jsonb_set:\n{set}"
    );
    let series = describe("\\df+ generate_series");
    assert!(
        row(
            &series,
            &[
                "pg_catalog",
                "generate_series",
                "SETOF integer",
                "integer, integer",
                "func"
            ]
        ),
        "\\df+ generate_series:\n{series}"
    );
    let types = describe("\\dT");
    assert!(
        types.contains("List of data types") && types.contains("(0 rows)"),
        "\\dT:\n{types}"
    );
    // \dconfig lists what the session changed, through pg_settings and current_setting().
    let (ok, out, err) = psql(
        &server,
        &[
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "SET extra_float_digits = 3",
            "-c",
            "\\dconfig",
        ],
        "",
    );
    assert!(ok && !err.contains("ERROR"), "\\dconfig: {err}\n{out}");
    assert!(row(&out, &["extra_float_digits", "3"]), "\\dconfig:\n{out}");
    // \d+ of one relation: a stream's options, a view's definition.
    let stream = describe("\\d+ clicks");
    assert!(
        stream.contains("Options: stream=true, key=user_id, topic=clicks, partitions=2"),
        "\\d+ clicks:\n{stream}"
    );
    let view = describe("\\d+ clicks_per_user");
    assert!(
        view.contains("View definition:")
            && view.contains("SELECT user_id, count(*) AS n FROM clicks GROUP BY user_id;"),
        "\\d+ clicks_per_user:\n{view}"
    );
    // Runnel's system schema is its built-in extension's.
    let extensions = describe("\\dx");
    assert!(row(&extensions, &["runnel"]), "\\dx:\n{extensions}");
    assert!(!row(&out, &["search_path", "public"]), "\\dconfig:\n{out}");
    let tablespaces = describe("\\db");
    assert!(row(&tablespaces, &["pg_default"]), "\\db:\n{tablespaces}");
    server.stop();
}
