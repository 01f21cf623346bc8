"""kafka-python against a typed stream:
clicks (user_id BIGINT KEY, url TEXT NOT NULL, ts TIMESTAMP) WITH (value_format = 'json').

Produces JSON values with 8-byte big-endian keys (Kafka's LongSerializer), checks that a batch
with a record that does not fit is refused whole with INVALID_RECORD, and prints what a
consumer reads from every partition, for the test to compare with SQL. Prints "typed ok".
"""

import json
import struct
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import InvalidRecordError, KafkaError

bootstrap = sys.argv[1]


def check(ok, what):
    if not ok:
        raise AssertionError(what)


producer = KafkaProducer(
    bootstrap_servers=bootstrap,
    key_serializer=lambda k: struct.pack('>q', k),
    value_serializer=lambda v: json.dumps(v).encode(),
)
for user in (7, 8, 9):
    sent = producer.send('clicks', key=user, value={'url': f'/k{user}', 'ts': '2026-01-02T03:04:05'})
    print('sent', user, sent.get(timeout=10).partition)

# Two records in one batch (linger holds them together); the second has no url.
batching = KafkaProducer(
    bootstrap_servers=bootstrap,
    key_serializer=lambda k: struct.pack('>q', k),
    value_serializer=lambda v: json.dumps(v).encode(),
    linger_ms=500,
)
good = batching.send('clicks', key=10, value={'url': '/fine'}, partition=0)
bad = batching.send('clicks', key=11, value={'url': None}, partition=0)
batching.flush()
# The whole batch is refused: the bad record with its reason (KIP-467's record errors),
# the good one because its batch was.
try:
    bad.get(timeout=10)
    check(False, 'a record with a NULL url was accepted')
except InvalidRecordError as e:
    check('url' in str(e), f'the error names the column: {e}')
try:
    good.get(timeout=10)
    check(False, 'a record in a refused batch was accepted')
except KafkaError as e:
    check('invalid records' in str(e), f'the good record fails with its batch: {e}')

consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset='earliest', consumer_timeout_ms=3000)
partitions = consumer.partitions_for_topic('clicks')
consumer.assign([TopicPartition('clicks', p) for p in partitions])
for m in consumer:
    key = struct.unpack('>q', m.key)[0] if m.key is not None else None
    print('fetched', m.partition, key, m.value.decode())
consumer.close()
print('typed ok')
