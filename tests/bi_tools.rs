//! The catalog queries BI and SQL tools send when they connect (DBeaver and Metabase through
//! pgjdbc, Grafana through lib/pq), run over pgwire: each must succeed, and the relation
//! listings must name Runnel's streams and views.

mod common;

use common::rows;

/// What the tools ask on connect, in the shapes they send it.
const STARTUP_QUERIES: &[&str] = &[
    // pgjdbc and DBeaver
    "SET extra_float_digits = 3",
    "SET application_name = 'DBeaver - Main <runnel>'",
    "SELECT current_schema(), session_user",
    "SHOW search_path",
    "SELECT version()",
    "SELECT n.oid, n.*, d.description FROM pg_catalog.pg_namespace n \
     LEFT OUTER JOIN pg_catalog.pg_description d \
       ON d.objoid = n.oid AND d.objsubid = 0 AND d.classoid = 'pg_namespace'::regclass \
     ORDER BY nspname",
    "SELECT n.nspname = ANY(current_schemas(true)), n.nspname, t.typname \
     FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON t.typnamespace = n.oid \
     WHERE t.oid = 1034",
    "SELECT typinput = 'pg_catalog.array_in'::regproc AS is_array, typtype, typname, oid \
     FROM pg_catalog.pg_type WHERE oid = 1034",
    "SELECT db.oid, db.* FROM pg_catalog.pg_database db WHERE datname = 'runnel'",
    "SELECT * FROM pg_catalog.pg_settings WHERE name = 'standard_conforming_strings'",
    "SELECT * FROM pg_catalog.pg_enum WHERE 1 <> 1 LIMIT 1",
    "SELECT reltype FROM pg_catalog.pg_class WHERE 1 <> 1 LIMIT 1",
    "SELECT c.oid, c.*, d.description FROM pg_catalog.pg_class c \
     LEFT OUTER JOIN pg_catalog.pg_description d \
       ON d.objoid = c.oid AND d.objsubid = 0 AND d.classoid = 'pg_class'::regclass \
     WHERE c.relkind NOT IN ('i', 'I', 'c')",
    "SELECT c.oid, pg_catalog.pg_total_relation_size(c.oid) AS total_rel_size, \
            pg_catalog.pg_relation_size(c.oid) AS rel_size FROM pg_catalog.pg_class c",
    // Metabase
    "SHOW TRANSACTION ISOLATION LEVEL",
    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ UNCOMMITTED",
    "SELECT nspname AS \"TABLE_SCHEM\", current_database() AS \"TABLE_CATALOG\" \
     FROM pg_catalog.pg_namespace WHERE nspname <> 'pg_toast' \
       AND (nspname !~ '^pg_temp_' OR nspname = (pg_catalog.current_schemas(true))[1]) \
     ORDER BY \"TABLE_SCHEM\"",
    "SELECT t.schemaname, t.objectname, \
            pg_catalog.has_table_privilege(current_user, \
              '\"' || t.schemaname || '\".\"' || t.objectname || '\"', 'select') AS can_select \
     FROM (SELECT schemaname, tablename AS objectname FROM pg_catalog.pg_tables \
           UNION SELECT schemaname, viewname AS objectname FROM pg_catalog.pg_views \
           UNION SELECT schemaname, matviewname AS objectname FROM pg_catalog.pg_matviews) t \
     WHERE t.schemaname !~ '^pg_' AND t.schemaname <> 'information_schema'",
    "show timezone",
    // Grafana
    "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) AS \"table\" \
     FROM information_schema.tables \
     WHERE quote_ident(table_schema) NOT IN ('information_schema', 'pg_catalog') \
     ORDER BY 1",
    "SELECT column_name, data_type FROM information_schema.columns \
     WHERE table_schema = 'public' AND table_name = 'clicks' ORDER BY ordinal_position",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_queries_of_bi_tools_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM clicks (user_id BIGINT KEY, url TEXT) WITH (partitions = 2);
             CREATE MATERIALIZED VIEW per_url AS SELECT url, count(*) AS n FROM clicks GROUP BY url",
        )
        .await
        .unwrap();
    for query in STARTUP_QUERIES {
        if let Err(e) = client.simple_query(query).await {
            panic!("{query}\n=> {e:?}\n--- server ---\n{}", server.log());
        }
    }

    // The listing Metabase builds its table list from.
    let listed = rows(
        &client,
        "SELECT c.relname, CASE c.relkind WHEN 'r' THEN 'TABLE' WHEN 'v' THEN 'VIEW' \
                WHEN 'm' THEN 'MATERIALIZED VIEW' END AS type \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON c.relnamespace = n.oid \
         WHERE n.nspname IN ('public') AND c.relkind IN ('r', 'p', 'v', 'f', 'm') \
         ORDER BY c.relname",
    )
    .await;
    let listed: Vec<(String, String)> = listed
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("clicks".into(), "TABLE".into()),
            ("per_url".into(), "MATERIALIZED VIEW".into())
        ]
    );
    let who = rows(&client, "SELECT current_database(), current_schema()").await;
    assert_eq!(who[0], vec![Some("runnel".into()), Some("public".into())]);
    let version = rows(&client, "SELECT version()").await;
    let version = version[0][0].clone().unwrap();
    assert!(
        version.starts_with("PostgreSQL 16.0 ") && version.contains("Runnel"),
        "{version}"
    );
    server.stop();
}
