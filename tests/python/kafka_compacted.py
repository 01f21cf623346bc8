"""kafka-python and a compacted topic: creates topic "prices" with cleanup.policy=compact
and small segments through the admin client, checks that DescribeConfigs shows the policy,
produces 20 keys updated 60 times each and a tombstone of keys k0..k3 (and sees a record
without a key refused with INVALID_RECORD, as Kafka refuses it), then consumes the
topic from its start until compaction has removed records, checking what Kafka promises of
a compacted topic:

- every record read is exactly the record produced at its offset (offsets are preserved);
- each key's last record read is its last produced (its value, or its tombstone);
- a record is missing only if a later record of its key was produced.

Prints "compacted ok <records read> of <records produced>".
"""

import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import InvalidRecordError

bootstrap = sys.argv[1]


def check(ok, what):
    if not ok:
        raise AssertionError(what)


admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic('prices', num_partitions=1, replication_factor=1,
                              topic_configs={'cleanup.policy': 'compact', 'segment.bytes': '4096'})])
configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, 'prices')], config_filter='all')
described = configs['topic']['prices']
check(described['cleanup.policy']['value'] == 'compact', f'prices configs: {described}')
check(described['delete.retention.ms']['value'] == '86400000', f'prices configs: {described}')
admin.close()

producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
produced = {}  # offset -> (key, value)
for round in range(60):
    sent = [(f'k{k}'.encode(), f'{k}:{round}'.encode()) for k in range(20)]
    futures = [(key, value, producer.send('prices', key=key, value=value)) for key, value in sent]
    for key, value, future in futures:
        produced[future.get(timeout=10).offset] = (key, value)
for k in range(4):
    key = f'k{k}'.encode()
    produced[producer.send('prices', key=key, value=None).get(timeout=10).offset] = (key, None)
# As Kafka, a compacted topic refuses a record without a key.
try:
    producer.send('prices', key=None, value=b'no key').get(timeout=10)
    check(False, 'a record without a key was accepted')
except InvalidRecordError as e:
    check('key' in str(e), f'the error says why: {e}')
producer.close()
total = len(produced)
last = {}
for offset in sorted(produced):
    key, value = produced[offset]
    last[key] = offset


def read_all():
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset='earliest',
                             consumer_timeout_ms=2000, enable_auto_commit=False)
    consumer.assign([TopicPartition('prices', 0)])
    got = [(m.offset, m.key, m.value) for m in consumer]
    consumer.close()
    return got


deadline = time.time() + 60
while True:
    records = read_all()
    if len(records) < total or time.time() > deadline:
        break
    time.sleep(0.5)
check(len(records) < total, f'nothing was compacted away: {len(records)} of {total}')

offsets = [r[0] for r in records]
check(offsets == sorted(set(offsets)), 'offsets ascend')
for offset, key, value in records:
    check(produced.get(offset) == (key, value),
          f'offset {offset} holds {key!r}={value!r}, produced {produced.get(offset)!r}')
seen_last = {}
for offset, key, value in records:
    seen_last[key] = offset
check(seen_last == last, f'each key ends with its last record: {seen_last} != {last}')
read = set(offsets)
for offset, (key, value) in produced.items():
    if offset not in read:
        check(last[key] > offset, f'offset {offset} ({key!r}) was removed, but it was its key\'s last')
print('compacted ok', len(records), 'of', total)
