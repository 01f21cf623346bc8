// kafkajs (non-flexible request versions only): the admin client creates a topic, an
// idempotent gzip producer sends n keyed records with headers, a consumer group reads each
// once byte for byte committing as it goes, and the admin client sees the committed offsets;
// a new member of the group then reads nothing. Prints "kafkajs ok".
// Usage: node kafkajs.js <bootstrap> <topic> <n>
'use strict';
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
const { Kafka, CompressionTypes, logLevel } = require('kafkajs');

const [bootstrap, topic, count] = process.argv.slice(2);
const n = Number(count);
const kafka = new Kafka({ clientId: 'runnel-test', brokers: [bootstrap], logLevel: logLevel.ERROR });

function check(ok, what) {
  if (!ok) throw new Error(what);
}

const record = (i) => ({
  key: `k${i % 13}`,
  value: `value ${i} `.repeat((i % 3) + 1),
  headers: { i: String(i) },
});

async function consumeAll(groupId, expected) {
  const consumer = kafka.consumer({ groupId });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = new Set();
  let failure = null;
  let joined = false;
  consumer.on(consumer.events.GROUP_JOIN, () => { joined = true; });
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ partition, message }) => {
      try {
        const i = Number(message.headers.i.toString());
        const want = record(i);
        check(!seen.has(i), `record ${i} consumed twice`);
        check(message.key.toString() === want.key && message.value.toString() === want.value,
          `record ${i}: ${message.key} ${message.value}`);
        seen.add(i);
        const next = (BigInt(message.offset) + 1n).toString();
        await consumer.commitOffsets([{ topic, partition, offset: next }]);
      } catch (e) {
        failure = failure || e;
      }
    },
  });
  const deadline = Date.now() + 60_000;
  // With nothing to read, wait a while after joining to be sure nothing comes.
  const settled = () => (expected === 0 ? joined && Date.now() > joinedAt + 3000 : seen.size >= expected);
  let joinedAt = Infinity;
  while (!settled() && !failure && Date.now() < deadline) {
    if (joined && joinedAt === Infinity) joinedAt = Date.now();
    await new Promise((r) => setTimeout(r, 100));
  }
  await consumer.disconnect();
  if (failure) throw failure;
  check(seen.size === expected, `consumed ${seen.size} of ${expected}`);
}

async function main() {
  const admin = kafka.admin();
  await admin.connect();
  check(await admin.createTopics({ topics: [{ topic, numPartitions: 3 }] }), 'topic not created');
  const metadata = await admin.fetchTopicMetadata({ topics: [topic] });
  check(metadata.topics[0].partitions.length === 3, `metadata: ${JSON.stringify(metadata)}`);

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  for (let start = 0; start < n; start += 100) {
    const messages = [];
    for (let i = start; i < Math.min(n, start + 100); i++) messages.push(record(i));
    await producer.send({ topic, acks: -1, compression: CompressionTypes.GZIP, messages });
  }
  await producer.disconnect();

  const offsets = await admin.fetchTopicOffsets(topic);
  const total = offsets.reduce((sum, p) => sum + Number(p.high) - Number(p.low), 0);
  check(total === n, `topic offsets: ${JSON.stringify(offsets)}`);

  await consumeAll('kafkajs-group', n);
  const committed = await admin.fetchOffsets({ groupId: 'kafkajs-group', topics: [topic] });
  const sum = committed[0].partitions.reduce((s, p) => s + Number(p.offset), 0);
  check(sum === n, `committed: ${JSON.stringify(committed)}`);
  await consumeAll('kafkajs-group', 0);
  await admin.disconnect();
  console.log('kafkajs ok');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
