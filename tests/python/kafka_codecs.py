"""confluent-kafka (librdkafka) with each codec Kafka defines: for none, gzip, snappy, lz4 and
zstd, an idempotent producer sends n records with keys, values and headers to a topic of three
partitions; a consumer group reads them back with manual commits and every record must come
back exactly once, byte for byte, with the watermark offsets and committed offsets adding up to
n. Prints "<codec> ok" per codec.

Usage: python kafka_codecs.py <bootstrap> <n>
"""

import random
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, n = sys.argv[1], int(sys.argv[2])
PARTITIONS = 3


def check(ok, what):
    if not ok:
        raise AssertionError(what)


def record(i):
    """Record i: a key shared by a hundred records, a value that compresses somewhat (and
    is sometimes empty or absent), and headers that include a repeated name and a null."""
    rng = random.Random(i)
    key = f'user-{i % 1000}'.encode() if i % 7 else None
    if i % 101 == 0:
        value = None
    elif i % 103 == 0:
        value = b''
    else:
        value = (f'{{"i": {i}, "payload": "' + 'abc' * rng.randrange(1, 40) + '"}').encode() \
            + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 16)))
    headers = [('i', str(i).encode()), ('trace', bytes([i % 256, 0, 255]))]
    if i % 5 == 0:
        headers += [('trace', b'again'), ('empty', None)]
    return key, value, headers


def produce(topic, codec):
    failed = []

    def delivered(error, message):
        if error is not None:
            failed.append(str(error))

    producer = Producer({
        'bootstrap.servers': bootstrap,
        'enable.idempotence': True,
        'compression.type': codec,
        'linger.ms': 5,
        'partitioner': 'murmur2_random',
    })
    for i in range(n):
        key, value, headers = record(i)
        while True:
            try:
                producer.produce(topic, key=key, value=value, headers=headers,
                                 on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    check(producer.flush(120) == 0, f'{codec}: records never acknowledged')
    check(not failed, f'{codec}: {len(failed)} records failed, first: {failed[:1]}')


def consume(topic, codec):
    consumer = Consumer({
        'bootstrap.servers': bootstrap,
        'group.id': f'codecs-{codec}',
        'auto.offset.reset': 'earliest',
        'enable.auto.commit': False,
        'enable.partition.eof': True,
    })
    consumer.subscribe([topic])
    seen = set()
    at_eof = set()
    idle_since = time.monotonic()
    while len(at_eof) < PARTITIONS or len(seen) < n:
        messages = consumer.consume(num_messages=5000, timeout=0.5)
        if not messages:
            check(time.monotonic() - idle_since < 30,
                  f'{codec}: nothing consumed for 30 s, {len(seen)} of {n} so far')
            continue
        idle_since = time.monotonic()
        read = 0
        for message in messages:
            error = message.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                at_eof.add(message.partition())
                continue
            check(error is None, f'{codec}: {error}')
            at_eof.discard(message.partition())
            i = int(message.headers()[0][1])
            check(i not in seen, f'{codec}: record {i} consumed twice')
            seen.add(i)
            read += 1
            key, value, headers = record(i)
            got = (message.key(), message.value(), message.headers())
            check(got == (key, value, headers), f'{codec}: record {i}: {got} != {(key, value, headers)}')
        if read:  # (committing with nothing read since the last commit is an error)
            consumer.commit(asynchronous=False)
    check(len(seen) == n, f'{codec}: consumed {len(seen)} of {n}')

    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    watermarks = [consumer.get_watermark_offsets(tp, timeout=10) for tp in partitions]
    check(all(low == 0 for low, _ in watermarks), f'{codec}: watermarks {watermarks}')
    check(sum(high for _, high in watermarks) == n, f'{codec}: watermarks {watermarks}')
    check(all(high > 0 for _, high in watermarks), f'{codec}: a partition got nothing: {watermarks}')
    committed = consumer.committed(partitions, timeout=10)
    check([tp.offset for tp in committed] == [high for _, high in watermarks],
          f'{codec}: committed {committed}, watermarks {watermarks}')
    consumer.close()


admin = AdminClient({'bootstrap.servers': bootstrap})
codecs = ['none', 'gzip', 'snappy', 'lz4', 'zstd']
for future in admin.create_topics(
        [NewTopic(f'codec_{codec}', num_partitions=PARTITIONS, replication_factor=1)
         for codec in codecs]).values():
    future.result(10)
for codec in codecs:
    produce(f'codec_{codec}', codec)
    consume(f'codec_{codec}', codec)
    print(f'{codec} ok', flush=True)
