"""Drives Runnel with psycopg 3, SQLAlchemy and pandas, as a Python user would.

Usage: python clients.py <port>. Prints "python ok" when every check passed.
"""

import sys

import pandas as pd
import psycopg
import sqlalchemy as sa

port = int(sys.argv[1])
dsn = f"host=127.0.0.1 port={port} user=runnel dbname=runnel"


def check(ok, what):
    if not ok:
        raise AssertionError(what)


with psycopg.connect(dsn, autocommit=True) as conn:
    conn.execute(
        "CREATE STREAM orders (id BIGINT KEY, customer TEXT, amount BIGINT) "
        "WITH (partitions = 2)"
    )
    with conn.cursor() as cur:
        # psycopg binds parameters server-side ($1, $2, … with the extended protocol).
        cur.executemany(
            "INSERT INTO orders VALUES (%s, %s, %s)",
            [(i, f"c{i % 3}", i * 10) for i in range(30)],
        )
        cur.execute(
            "SELECT id, amount FROM orders WHERE customer = %s AND amount >= %s ORDER BY id",
            ("c1", 100),
        )
        rows = cur.fetchall()
        check(rows == [(i, i * 10) for i in range(10, 30) if i % 3 == 1], f"rows {rows}")
        check(cur.description[0].name == "id", "column names")
    conn.execute(
        "CREATE MATERIALIZED VIEW per_customer AS "
        "SELECT customer, count(*) AS n, sum(amount) AS total FROM orders GROUP BY customer"
    )
    conn.execute("FLUSH")

    # A consumer group: read part, commit, reconnect, and go on after the commit.
    conn.execute("CREATE SUBSCRIPTION billing FROM orders WITH (start = 'earliest')")

seen = []
for attempt in range(2):
    with psycopg.connect(dsn) as conn:  # not autocommit: psycopg opens a transaction
        conn.execute("DECLARE cur SUBSCRIPTION CURSOR FOR billing")
        got = conn.execute("FETCH 12 FROM cur").fetchall()
        check(len(got) == 12, f"twelve records, got {len(got)}")
        seen += [row[0] for row in got]
        if attempt == 0:
            conn.commit()
        else:
            # Leaves without committing (psycopg would commit at the end of the block):
            # these records come again.
            conn.rollback()
with psycopg.connect(dsn) as conn:
    conn.execute("DECLARE cur SUBSCRIPTION CURSOR FOR billing")
    rest = [row[0] for row in conn.execute("FETCH ALL FROM cur").fetchall()]
    conn.commit()
    check(len(rest) == 18, f"the 18 records after the commit, got {len(rest)}")
    check(sorted(seen[:12] + rest) == list(range(30)), "every record once after the commit")
    check(set(seen[12:]) <= set(rest), "the uncommitted read came again")
    lag = conn.execute(
        "SELECT sum(lag) FROM sys.consumer_groups WHERE \"group\" = 'billing'"
    ).fetchone()[0]
    check(lag == 0, f"lag {lag}")

# psycopg's server-side (named) cursors are DECLARE/FETCH: over a query with parameters, and
# over a subscription, read a few rows at a time.
with psycopg.connect(dsn) as conn:
    with conn.cursor(name="big") as cur:
        cur.itersize = 7
        cur.execute("SELECT id FROM orders WHERE amount >= %s ORDER BY id", (150,))
        check([r[0] for r in cur] == list(range(15, 30)), "named cursor rows")
    conn.commit()
    with conn.cursor(name="live") as cur:
        cur.execute("SUBSCRIBE orders WITH (snapshot = true)")
        first = cur.fetchmany(10)
        check(len(first) == 10, f"ten rows of the subscription, got {len(first)}")
    conn.rollback()

# SQLAlchemy's inspector, which BI tools and pandas users lean on.
engine = sa.create_engine(f"postgresql+psycopg://runnel@127.0.0.1:{port}/runnel")
inspector = sa.inspect(engine)
check("public" in inspector.get_schema_names(), "schemas")
check(inspector.get_table_names() == ["orders"], f"tables {inspector.get_table_names()}")
matviews = inspector.get_materialized_view_names()
check(matviews == ["per_customer"], f"materialized views {matviews}")
columns = {c["name"]: c["type"] for c in inspector.get_columns("orders")}
check(isinstance(columns["id"], sa.BigInteger), f"orders columns {columns}")
check(isinstance(columns["customer"], sa.Text), f"orders columns {columns}")
view_columns = [c["name"] for c in inspector.get_columns("per_customer")]
check(view_columns == ["customer", "n", "total"], f"view columns {view_columns}")
check(inspector.get_pk_constraint("orders")["constrained_columns"] == [], "no primary key")

with engine.connect() as conn:
    total = conn.execute(
        sa.text("SELECT sum(amount) FROM orders WHERE customer = :c"), {"c": "c2"}
    ).scalar_one()
    check(total == sum(i * 10 for i in range(30) if i % 3 == 2), f"sum {total}")

frame = pd.read_sql("SELECT * FROM per_customer ORDER BY customer", engine)
check(list(frame["customer"]) == ["c0", "c1", "c2"], f"view through pandas: {frame}")
check(list(frame["n"]) == [10, 10, 10], f"view through pandas: {frame}")
# read_sql_table reflects the stream's columns: the declared ones, as a PostgreSQL table's
# (hidden columns are numbered below zero in pg_attribute, as system columns are).
frame = pd.read_sql_table("orders", engine)
check(list(frame.columns) == ["id", "customer", "amount"], f"read_sql_table columns {list(frame.columns)}")
check(len(frame) == 30, f"read_sql_table rows {len(frame)}")
engine.dispose()

# pandas writes a new table (no primary key: a table as PostgreSQL's heap tables are) and
# appends to it; SQLAlchemy updates and deletes rows; pandas reads them back. psycopg
# prepares repeated statements on the server and DEALLOCATEs them.
plain = sa.create_engine(f"postgresql+psycopg://runnel@127.0.0.1:{port}/runnel")
scores = pd.DataFrame({"name": ["a", "b", "c"], "score": [1.5, 2.5, 3.0]})
scores.to_sql("scores", plain, index=False)
scores.to_sql("scores", plain, index=False, if_exists="append")
with plain.begin() as conn:
    updated = conn.execute(sa.text("UPDATE scores SET score = score * 2 WHERE name = 'a'"))
    check(updated.rowcount == 2, f"UPDATE of two rows: {updated.rowcount}")
    deleted = conn.execute(sa.text("DELETE FROM scores WHERE name = :n"), {"n": "c"})
    check(deleted.rowcount == 2, f"DELETE of two rows: {deleted.rowcount}")
back = pd.read_sql("SELECT name, score FROM scores ORDER BY name, score", plain)
check(list(back["name"]) == ["a", "a", "b", "b"], f"the table through pandas: {back}")
check(list(back["score"]) == [3.0, 3.0, 2.5, 2.5], f"the table through pandas: {back}")
plain.dispose()
# pgcli as it starts: its completion refresher runs every catalog query pgcli sends on
# connect (schemas, tables, views, columns, functions with their argument types, types,
# databases, search path), then its special commands and a query.
from pgcli.completion_refresher import CompletionRefresher
from pgcli.pgexecute import PGExecute
from pgspecial.main import PGSpecial

special = PGSpecial()
executor = PGExecute("runnel", "runnel", None, "127.0.0.1", port, None)
completers = []
CompletionRefresher()._bg_refresh(executor, special, completers.append)
completer = completers[0]
tables = completer.dbmetadata["tables"]["public"]
check("orders" in tables and list(tables["orders"])[:3] == ["id", "customer", "amount"],
      f"pgcli tables {tables}")
check("per_customer" in completer.dbmetadata["views"]["public"], "pgcli views")
functions = completer.dbmetadata["functions"]["pg_catalog"]
# (pgcli quotes names of functions it knows as SQL's, as it does against PostgreSQL.)
num_nulls = functions.get('"num_nulls"')
check(num_nulls and num_nulls[0].arg_types == ('"any"',), f"pgcli functions {num_nulls}")
check(executor.get_timezone() == "UTC", "pgcli SHOW TIME ZONE")
# Its casing file's query (`generate_casing_file`) reads pg_proc's argument names as an
# array; the built-in functions have no SQL source, so no word has a casing.
check(list(executor.casing()) == [], "pgcli casing")
results = {sql: list(executor.run(sql, pgspecial=special)) for sql in ["\\dt", "\\d orders", "SELECT 1 AS one"]}
dt = [tuple(r) for r in results["\\dt"][0][1]]
check(dt == [("public", "orders", "table", "runnel"), ("public", "scores", "table", "runnel")], f"pgcli \\dt {dt}")
d = [r[:2] for r in results["\\d orders"][0][1]]
check(d == [["id", "bigint"], ["customer", "text"], ["amount", "bigint"]], f"pgcli \\d {d}")
check(list(results["SELECT 1 AS one"][0][1]) == [(1,)], "pgcli query")
print("python ok")
