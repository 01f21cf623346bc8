"""Drives Runnel with asyncpg, psycopg2 and psycopg 3 as their users would, checking each
against what the same driver reads from PostgreSQL: every common type both ways with NULLs,
parameters, errors with their SQLSTATEs, COPY in and out, and a push query read a few rows
at a time through the driver's own cursor API.

Usage: python drivers.py <port>. Prints "drivers ok" when every check passed.
"""

import asyncio
import datetime as dt
import decimal
import io
import sys
import threading
import time

import asyncpg
import psycopg
import psycopg2
import psycopg2.extras

port = int(sys.argv[1])
dsn = f"host=127.0.0.1 port={port} user=runnel dbname=runnel"


def check(ok, what):
    if not ok:
        raise AssertionError(what)


# One row of every common type, as Python has it, and NULLs.
ROW = (
    1,
    True,
    32000,
    2_000_000_000,
    9_000_000_000_000,
    1.5,
    0.1,
    decimal.Decimal("12345678901234.12"),
    "text with ' and \" and \\",
    b"\x00\x01\xff",
    dt.date(2026, 1, 2),
    dt.time(10, 11, 12, 500000),
    dt.datetime(2026, 1, 2, 10, 11, 12, 250000),
    dt.timedelta(days=1, hours=2, minutes=3, seconds=4),
)
COLUMNS = (
    "id BIGINT, b BOOLEAN, i2 SMALLINT, i4 INTEGER, i8 BIGINT, r REAL, d DOUBLE PRECISION, "
    "n NUMERIC(20,2), t TEXT, y BYTEA, day DATE, tod TIME, ts TIMESTAMP, iv INTERVAL"
)
NAMES = ["id", "b", "i2", "i4", "i8", "r", "d", "n", "t", "y", "day", "tod", "ts", "iv"]


def same_row(got, want, what):
    got = tuple(bytes(v) if isinstance(v, memoryview) else v for v in got)
    check(len(got) == len(want), f"{what}: {got}")
    for name, g, w in zip(NAMES, got, want):
        if isinstance(w, float):
            check(g is not None and abs(g - w) < 1e-6, f"{what}: {name} {g!r} != {w!r}")
        else:
            check(g == w, f"{what}: {name} {g!r} != {w!r}")


# --- psycopg2: text results, client-side parameters, COPY both ways, named cursors --------
conn = psycopg2.connect(dsn)
conn.autocommit = True
cur = conn.cursor()
cur.execute(f"CREATE STREAM p2 ({COLUMNS})")
cur.execute(
    "INSERT INTO p2 VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", ROW
)
cur.execute("INSERT INTO p2 (id) VALUES (%s)", (2,))
cur.execute("SELECT * FROM p2 ORDER BY id")
rows = cur.fetchall()
same_row(rows[0], ROW, "psycopg2 row")
check(rows[1] == (2,) + (None,) * 13, f"psycopg2 NULLs {rows[1]}")
check([d.name for d in cur.description] == NAMES, "psycopg2 column names")
cur.execute("SELECT count(*), sum(id), 1.5::float8, 10::float8, 2 + 2 FROM p2")
check([d.name for d in cur.description] == ["count", "sum", "float8", "float8", "?column?"],
      f"names as PostgreSQL gives them: {[d.name for d in cur.description]}")
check(cur.fetchone() == (2, 3, 1.5, 10.0, 4), "aggregates")
for sql, state in [
    ("SELECT * FROM nowhere", "42P01"),
    ("SELEC 1", "42601"),
    ("INSERT INTO p2 (b) VALUES (42)", "42804"),
    ("SET no_such_setting = 1", "42704"),
    ("SELECT 1/0", "22012"),
    ("SELECT '\\x0'::bytea", "22P02"),
]:
    try:
        cur.execute(sql)
        check(False, f"{sql} should fail")
    except psycopg2.Error as e:
        check(e.pgcode == state, f"{sql}: {e.pgcode} {e}")
buf = io.StringIO()
cur.copy_expert("COPY (SELECT id, t, y, ts FROM p2 ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)", buf)
check(
    buf.getvalue()
    == 'id,t,y,ts\n1,"text with \' and "" and \\",\\x0001ff,2026-01-02 10:11:12.25\n2,,,\n',
    f"COPY TO STDOUT csv: {buf.getvalue()!r}",
)
cur.copy_expert("COPY p2 (id, t) FROM STDIN", io.StringIO("3\tcopied\n4\t\\N\n"))
buf = io.StringIO()
cur.copy_expert("COPY p2 (id, t) TO STDOUT", buf)
check(sorted(buf.getvalue().splitlines())[-2:] == ["3\tcopied", "4\t\\N"], buf.getvalue())
conn.autocommit = False
named = conn.cursor(name="stepper")
named.itersize = 2
named.execute("SELECT id FROM p2 ORDER BY id")
check([r[0] for r in named] == [1, 2, 3, 4], "psycopg2 named cursor")
conn.commit()
conn.close()


# --- psycopg 3: binary results and parameters, pipeline mode, COPY both ways ---------------
with psycopg.connect(dsn, autocommit=True) as conn:
    conn.execute(f"CREATE STREAM p3 ({COLUMNS})")
    with conn.cursor(binary=True) as cur:
        cur.execute(
            "INSERT INTO p3 VALUES (%b, %b, %b, %b, %b, %b, %b, %b, %b, %b, %b, %b, %b, %b)",
            ROW,
        )
        cur.execute("INSERT INTO p3 (id) VALUES (%b)", (2,))
        cur.execute("SELECT * FROM p3 ORDER BY id")
        rows = cur.fetchall()
        same_row(rows[0], ROW, "psycopg binary row")
        check(rows[1] == (2,) + (None,) * 13, f"psycopg binary NULLs {rows[1]}")
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM p3 ORDER BY id")
        same_row(cur.fetchone(), ROW, "psycopg text row")
    with conn.pipeline():
        with conn.cursor() as cur:
            for i in range(10, 20):
                cur.execute("INSERT INTO p3 (id, t) VALUES (%s, %s)", (i, f"p{i}"))
            cur.execute("SELECT count(*) FROM p3 WHERE id >= %s", (10,))
    check(conn.execute("SELECT count(*) FROM p3 WHERE id >= 10").fetchone()[0] == 10, "pipeline")
    with conn.cursor().copy("COPY p3 (id, t) FROM STDIN") as copy:
        for i in range(30, 35):
            copy.write_row((i, f"c{i}"))
    with conn.cursor().copy("COPY (SELECT id, t FROM p3 WHERE id >= 30 ORDER BY id) TO STDOUT") as copy:
        got = [tuple(r) for r in copy.rows()]
    check(got == [(str(i), f"c{i}") for i in range(30, 35)], f"psycopg COPY out {got}")
    with conn.cursor(binary=True).copy(
        "COPY (SELECT id, ts, n FROM p3 WHERE id = 1) TO STDOUT (FORMAT binary)"
    ) as copy:
        copy.set_types(["int8", "timestamp", "numeric"])
        got = list(copy.rows())
    check(got == [(1, ROW[12], ROW[7])], f"psycopg binary COPY out {got}")
    # Binary COPY in: every common type as its binary form, and NULLs.
    with conn.cursor().copy("COPY p3 FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "bool", "int2", "int4", "int8", "float4", "float8", "numeric",
                        "text", "bytea", "date", "time", "timestamp", "interval"])
        copy.write_row((40,) + ROW[1:])
        copy.write_row((41,) + (None,) * 13)
    rows = conn.execute("SELECT * FROM p3 WHERE id >= 40 ORDER BY id").fetchall()
    same_row(rows[0], (40,) + ROW[1:], "psycopg binary COPY in")
    check(rows[1] == (41,) + (None,) * 13, f"psycopg binary COPY in NULLs {rows[1]}")
    try:
        with conn.cursor().copy("COPY p3 (id, i4) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "int8"])  # an int4 column sent 8 bytes wide
            copy.write_row((42, 1))
        check(False, "a value of the wrong binary size is refused")
    except psycopg.errors.InvalidBinaryRepresentation:
        pass
    try:
        conn.execute("SELECT id FROM p3 WHERE id = %s EMIT CHANGES", (1,))
        check(False, "a parameter in a push query is refused")
    except psycopg.errors.FeatureNotSupported:
        pass


# --- json and jsonb: each driver reads them as JSON by their type, and sends them as such -----
def with_json():
    from psycopg.types.json import Json, Jsonb

    doc = {"b": 1, "a": [1, 2.5, None, "x"], "nested": {"t": True}}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE STREAM jdocs (id BIGINT, j JSON, b JSONB)")
        conn.execute("INSERT INTO jdocs VALUES (%s, %s, %s)", (1, Json(doc), Jsonb(doc)))
        with conn.cursor(binary=True) as cur:
            cur.execute("INSERT INTO jdocs VALUES (%s, %s, %s)", (2, Json([1]), Jsonb({"k": "v"})))
            cur.execute("INSERT INTO jdocs VALUES (%s, %s, %s)", (3, None, None))
            cur.execute("SELECT j, b, b -> 'nested' FROM jdocs ORDER BY id")
            got = cur.fetchall()
        check(got == [(doc, doc, {"t": True}), ([1], {"k": "v"}, None), (None, None, None)],
              f"psycopg binary json {got}")
        got = conn.execute("SELECT b, b ->> 'b', %s::jsonb @> '{\"k\": \"v\"}' FROM jdocs WHERE id = 2",
                           (Jsonb({"k": "v", "z": 0}),)).fetchone()
        check(got == ({"k": "v"}, None, True), f"psycopg text json {got}")
        text = conn.execute("SELECT b::text FROM jdocs WHERE id = 1").fetchone()[0]
        check(text == '{"a": [1, 2.5, null, "x"], "b": 1, "nested": {"t": true}}', f"jsonb text {text}")
        try:
            conn.execute("SELECT %s::jsonb", ("{nope",))
            check(False, "bad JSON is refused")
        except psycopg.errors.InvalidTextRepresentation:
            pass
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT j, b FROM jdocs WHERE id = 1")
    check(cur.fetchone() == (doc, doc), "psycopg2 reads json and jsonb as JSON")
    cur.execute("INSERT INTO jdocs (id, b) VALUES (4, %s)", (psycopg2.extras.Json({"p2": [True]}),))
    cur.execute("SELECT b FROM jdocs WHERE id = 4")
    check(cur.fetchone() == ({"p2": [True]},), "psycopg2 writes JSON")
    conn.close()


with_json()


# --- uuid: read as uuid.UUID by its type, sent as one in text and binary -------------------
def with_uuid():
    import uuid

    a, b = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), uuid.uuid4()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE STREAM uids (n BIGINT, u UUID)")
        conn.execute("INSERT INTO uids VALUES (%s, %s)", (1, a))
        with conn.cursor(binary=True) as cur:
            cur.execute("INSERT INTO uids VALUES (%s, %s), (%s, %s)", (2, b, 3, None))
            cur.execute("SELECT n, u FROM uids WHERE u = %s OR u IS NULL ORDER BY n", (b,))
            got = cur.fetchall()
        check(got == [(2, b), (3, None)], f"psycopg binary uuid {got}")
        got = conn.execute("SELECT u FROM uids WHERE u = 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'").fetchall()
        check(got == [(a,)], f"psycopg text uuid {got}")
        random = conn.execute("SELECT gen_random_uuid()").fetchone()[0]
        check(isinstance(random, uuid.UUID) and random.version == 4, f"gen_random_uuid {random!r}")

    async def with_asyncpg():
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="runnel", database="runnel")
        check(await conn.fetchval("SELECT u FROM uids WHERE n = $1", 1) == a, "asyncpg reads a uuid")
        check(await conn.fetchval("SELECT n FROM uids WHERE u = $1::uuid", b) == 2, "asyncpg sends a uuid")
        await conn.close()

    asyncio.run(with_asyncpg())


with_uuid()


# --- arrays: literals and parameters both ways, in text and binary -------------------------
def with_arrays():
    with psycopg.connect(dsn, autocommit=True) as conn:
        for binary in (False, True):
            got = conn.execute(
                "SELECT %s::int[], %s::text[], '{1.5,NULL}'::float8[], ARRAY['a b', NULL]",
                ([1, None, 3], ["x y", 'q"', ""]), binary=binary).fetchone()
            check(got == ([1, None, 3], ["x y", 'q"', ""], [1.5, None], ["a b", None]),
                  f"psycopg arrays (binary {binary}) {got}")

    async def with_asyncpg():
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="runnel", database="runnel")
        # An int4[] parameter makes asyncpg introspect the type in pg_type first.
        got = await conn.fetchrow("SELECT $1::int[] AS i, $2::text[] AS t", [1, None, 3], ["a", "b c"])
        check(tuple(got) == ([1, None, 3], ["a", "b c"]), f"asyncpg arrays {tuple(got)}")
        got = await conn.fetchval("SELECT '{2.5,NaN}'::float8[]")
        check(got[0] == 2.5 and got[1] != got[1], f"asyncpg float8[] {got}")
        await conn.close()

    asyncio.run(with_asyncpg())
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("SELECT %s::int[], '{a,\"b c\"}'::text[]", ([4, 5],))
    got = cur.fetchone()
    check(got == ([4, 5], ["a", "b c"]), f"psycopg2 arrays {got}")
    conn.close()


with_arrays()


async def json_with_asyncpg():
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="runnel", database="runnel")
    # asyncpg reads both in binary, as their text (jsonb's behind its version byte).
    row = await conn.fetchrow("SELECT j, b FROM jdocs WHERE id = 2")
    check(tuple(row) == ("[1]", '{"k": "v"}'), f"asyncpg json {tuple(row)}")
    types = [a.type.name for a in (await conn.prepare("SELECT j, b FROM jdocs")).get_attributes()]
    check(types == ["json", "jsonb"], f"asyncpg json types {types}")
    check(await conn.fetchval("SELECT $1::jsonb ->> 'a'", '{"a": "x"}') == "x", "asyncpg jsonb parameter")
    await conn.close()


asyncio.run(json_with_asyncpg())


# --- asyncpg: binary everything, prepared statements, COPY, a cursor over a push query -----
async def with_asyncpg():
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="runnel", database="runnel")
    await conn.execute(f"CREATE STREAM pa ({COLUMNS})")
    await conn.execute(
        "INSERT INTO pa VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        *ROW,
    )
    await conn.execute("INSERT INTO pa (id) VALUES ($1)", 2)
    rows = await conn.fetch("SELECT * FROM pa ORDER BY id")
    same_row(tuple(rows[0].values()), ROW, "asyncpg row")
    check(tuple(rows[1].values()) == (2,) + (None,) * 13, f"asyncpg NULLs {rows[1]}")
    check(list(rows[0].keys()) == NAMES, "asyncpg column names")
    try:
        await conn.execute("INSERT INTO pa (ts) VALUES (true)")
        check(False, "a boolean is not a timestamp")
    except asyncpg.PostgresError as e:
        check(e.sqlstate == "42804", f"asyncpg {e.sqlstate} {e}")
    # Parameter types come from the casts around them, as PostgreSQL infers them.
    statement = await conn.prepare("SELECT $1::int2, $2::bytea, $3::timestamp, $4::float8")
    check(
        [t.name for t in statement.get_parameters()] == ["int2", "bytea", "timestamp", "float8"],
        f"parameter types {[t.name for t in statement.get_parameters()]}",
    )
    check(
        tuple(await statement.fetchrow(7, b"\x01", ROW[12], 0.5)) == (7, b"\x01", ROW[12], 0.5),
        "cast parameters",
    )
    await conn.copy_to_table("pa", source=io.BytesIO(b"5\ta\n6\t\\N\n"), columns=["id", "t"])
    out = io.BytesIO()
    await conn.copy_from_query("SELECT id, t FROM pa WHERE id >= 5 ORDER BY id", output=out)
    check(out.getvalue() == b"5\ta\n6\t\\N\n", f"asyncpg COPY out {out.getvalue()!r}")
    # copy_records_to_table sends the binary format, each value as its column's type.
    await conn.copy_records_to_table("pa", records=[(7,) + ROW[1:], (8,) + (None,) * 13])
    rows = await conn.fetch("SELECT * FROM pa WHERE id IN (7, 8) ORDER BY id")
    same_row(tuple(rows[0]), (7,) + ROW[1:], "asyncpg copy_records_to_table")
    check(tuple(rows[1]) == (8,) + (None,) * 13, f"asyncpg copy_records_to_table NULLs {tuple(rows[1])}")

    # A push query read through a cursor as its rows happen: each fetch returns what is
    # ready (prefetch asks for 2 at a time), long before the query would end.
    await conn.execute("CREATE STREAM events (id BIGINT, what TEXT)")
    writer = await asyncpg.connect(host="127.0.0.1", port=port, user="runnel", database="runnel")
    got = []
    # From the stream's start, so that no row of the writer's can come too early.
    await conn.execute("SET auto_offset_reset = 'earliest'")
    async with conn.transaction():
        cursor = conn.cursor("SELECT id, what FROM events EMIT CHANGES", prefetch=2)
        rows = cursor.__aiter__()

        async def write():
            for i in range(5):
                await asyncio.sleep(0.2)
                await writer.execute(f"INSERT INTO events VALUES ({i}, 'e{i}')")

        task = asyncio.create_task(write())
        for _ in range(5):
            row = await asyncio.wait_for(rows.__anext__(), 30)
            got.append(row["id"])
        await task
    check(got == [0, 1, 2, 3, 4], f"asyncpg push rows {got}")
    await writer.close()
    await conn.close()


asyncio.run(with_asyncpg())


# --- numerics of more than 28 digits, and declared parameter types -----------------------
def with_numerics():
    big = decimal.Decimal("123456789012345678901234567890.1234567")
    # A quotient of over 28 digits in all (Runnel keeps 16 after the point, where
    # PostgreSQL's scale shrinks as a quotient grows: 4 here).
    quotient = decimal.Decimal("33333333333333.3333333333333333")
    sql = "SELECT 123456789012345678901234567890.1234567, -0.0001::numeric(5,4), 100000000000000.0 / 3"
    with psycopg.connect(dsn, autocommit=True) as conn:
        for binary in (False, True):
            got = conn.execute(sql, binary=binary).fetchone()
            check(got == (big, decimal.Decimal("-0.0001"), quotient),
                  f"psycopg numerics (binary {binary}) {got}")
        # psycopg names its parameters' types: a big int is int8, so `1 + %s` is int8.
        got = conn.execute("SELECT 1 + %s", [2**40], binary=True).fetchone()
        check(got == (2**40 + 1,), f"a declared int8 parameter {got}")

    async def with_asyncpg():
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="runnel", database="runnel")
        got = tuple(await conn.fetchrow(sql))
        check(got == (big, decimal.Decimal("-0.0001"), quotient), f"asyncpg numerics {got}")
        await conn.close()

    asyncio.run(with_asyncpg())


with_numerics()
print("drivers ok")
