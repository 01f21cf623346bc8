"""kafka-python against a table: users (id BIGINT PRIMARY KEY, name TEXT, tier TEXT)
WITH (partitions = 3), already holding rows written by SQL (ids 1, 2 and 3, id 2 deleted).

Produces an upsert of id 1 and a tombstone (a null value) of id 3 with the default
partitioner, checks that a record sent to another partition than its key's is refused with
INVALID_RECORD, and prints what a consumer reads of the changelog, for the test to compare.
Prints "table ok".
"""

import json
import struct
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import InvalidRecordError

bootstrap = sys.argv[1]


def check(ok, what):
    if not ok:
        raise AssertionError(what)


producer = KafkaProducer(
    bootstrap_servers=bootstrap,
    key_serializer=lambda k: struct.pack('>q', k),
    value_serializer=lambda v: None if v is None else json.dumps(v).encode(),
)
producer.send('users', key=1, value={'name': 'ann', 'tier': 'kafka'}).get(timeout=10)
producer.send('users', key=3, value=None).get(timeout=10)

# Key 1's partition is where SQL put it; any other partition is refused.
home = producer.send('users', key=1, value={'name': 'ann', 'tier': 'again'}).get(timeout=10).partition
elsewhere = (home + 1) % 3
try:
    producer.send('users', key=1, value={'name': 'x', 'tier': 'misplaced'}, partition=elsewhere).get(timeout=10)
    check(False, 'a record in the wrong partition was accepted')
except InvalidRecordError as e:
    check('partition' in str(e), f'the error says why: {e}')

consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset='earliest', consumer_timeout_ms=3000)
consumer.assign([TopicPartition('users', p) for p in range(3)])
records = []
for m in consumer:
    key = struct.unpack('>q', m.key)[0]
    records.append((m.partition, m.offset, key, None if m.value is None else m.value.decode()))
consumer.close()
for partition, offset, key, value in sorted(records):
    print('fetched', key, value)
print('table ok')
