// node-postgres against Runnel as its users drive it: types both ways with NULLs,
// parameters, errors with SQLSTATEs, COPY in and out (pg-copy-streams), and a push query
// read as its rows happen through pg-cursor and pg-query-stream.
//
// Usage: node postgres.js <port>. Prints "node-postgres ok" when every check passed.

const { Client } = require('pg');
const Cursor = require('pg-cursor');
const QueryStream = require('pg-query-stream');
const { from: copyFrom, to: copyTo } = require('pg-copy-streams');
const { pipeline } = require('stream/promises');
const { Readable, Writable } = require('stream');
const assert = require('assert');

const port = Number(process.argv[2]);
const connect = async () => {
  const client = new Client({ host: '127.0.0.1', port, user: 'runnel', database: 'runnel' });
  await client.connect();
  return client;
};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const c = await connect();
  await c.query(
    'CREATE STREAM n (id BIGINT, b BOOLEAN, i INTEGER, d DOUBLE PRECISION, t TEXT, ' +
      'y BYTEA, day DATE, ts TIMESTAMP, iv INTERVAL)'
  );
  await c.query('INSERT INTO n VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)', [
    1, true, -7, 2.5, 'tekst ✓', Buffer.from([0, 1, 255]), '2026-01-02', '2026-01-02 10:11:12.25', '1 day 02:00:00',
  ]);
  await c.query('INSERT INTO n (id) VALUES ($1)', [2]);
  const { rows, fields } = await c.query('SELECT * FROM n ORDER BY id');
  assert.deepStrictEqual(fields.map((f) => f.name), ['id', 'b', 'i', 'd', 't', 'y', 'day', 'ts', 'iv']);
  const r = rows[0];
  assert.strictEqual(r.id, '1'); // int8 comes as a string, as from PostgreSQL
  assert.strictEqual(r.b, true);
  assert.strictEqual(r.i, -7);
  assert.strictEqual(r.d, 2.5);
  assert.strictEqual(r.t, 'tekst ✓');
  assert.deepStrictEqual([...r.y], [0, 1, 255]);
  assert.strictEqual(r.ts.getTime(), new Date(2026, 0, 2, 10, 11, 12, 250).getTime()); // local, as pg reads timestamp
  assert.strictEqual(r.iv.days, 1);
  assert.strictEqual(r.iv.hours, 2);
  assert.ok(Object.entries(rows[1]).every(([k, v]) => k === 'id' || v === null), JSON.stringify(rows[1]));

  const agg = await c.query('SELECT count(*), max(d), 10::float8 AS ten FROM n');
  assert.deepStrictEqual(agg.fields.map((f) => f.name), ['count', 'max', 'ten']);
  assert.deepStrictEqual(agg.rows[0], { count: '2', max: 2.5, ten: 10 });

  for (const [sql, code] of [
    ['SELECT * FROM nowhere', '42P01'],
    ['INSERT INTO n (i) VALUES (true)', '42804'],
    ['SELECT 1/0', '22012'],
    ['SET nonsense = 1', '42704'],
  ]) {
    await assert.rejects(c.query(sql), (e) => e.code === code, sql);
  }
  await assert.rejects(c.query('SELECT * FROM n WHERE id = $1 EMIT CHANGES', [1]), (e) => e.code === '0A000');

  // COPY in and out.
  await pipeline(Readable.from(['3\tcopied\n', '4\t\\N\n']), c.query(copyFrom('COPY n (id, t) FROM STDIN')));
  let out = '';
  await pipeline(
    c.query(copyTo('COPY (SELECT id, t FROM n WHERE id >= 3 ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)')),
    new Writable({
      write(chunk, _enc, done) {
        out += chunk;
        done();
      },
    })
  );
  assert.strictEqual(out, 'id,t\n3,copied\n4,\n');

  // A push query through pg-cursor: each read(2) returns the rows that are ready.
  await c.query('CREATE STREAM ticks (id BIGINT)');
  // From the stream's start, so that no row of the writer's can come too early.
  await c.query("SET auto_offset_reset = 'earliest'");
  const w = await connect();
  const cursor = c.query(new Cursor('SELECT id FROM ticks EMIT CHANGES'));
  const writer = (async () => {
    for (let i = 0; i < 4; i++) {
      await sleep(200);
      await w.query(`INSERT INTO ticks VALUES (${i})`);
    }
  })();
  const seen = [];
  while (seen.length < 4) {
    const batch = await cursor.read(2);
    assert.ok(batch.length > 0 && batch.length <= 2, `read ${batch.length}`);
    seen.push(...batch.map((row) => Number(row.id)));
  }
  await writer;
  assert.deepStrictEqual(seen, [0, 1, 2, 3]);
  await cursor.close();

  // And as a stream of rows (pg-query-stream), ended by its LIMIT.
  const c2 = await connect();
  const stream = c2.query(new QueryStream('SELECT id FROM ticks EMIT CHANGES LIMIT 3', [], { batchSize: 1 }));
  const streamed = [];
  // This one starts at the end of the stream (the default): the rows come after it started.
  const more = (async () => {
    await sleep(1000);
    for (let i = 10; i < 13; i++) {
      await sleep(200);
      await w.query(`INSERT INTO ticks VALUES (${i})`);
    }
  })();
  for await (const row of stream) streamed.push(Number(row.id));
  await more;
  assert.deepStrictEqual(streamed, [10, 11, 12]);

  await Promise.all([c.end(), c2.end(), w.end()]);
  console.log('node-postgres ok');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
