"""The project's seed producer, as its users wrote it for Kafka.

Verbatim but for two things: the bootstrap address comes from argv (tests pick a free port),
and the key is b'key' rather than 'key' — kafka-python 3.0.12 refuses a str key without a
key_serializer (TypeError: Unsupported type for serialized key) inside send(), before any
byte reaches a broker, whatever the broker; kafka-python 2.x fails the same way with an
AssertionError.
"""

import json
import sys

from kafka import KafkaProducer

producer = KafkaProducer(bootstrap_servers=sys.argv[1])

for _ in range(10):
    producer.send('test_topic', key=b'key', value=json.dumps({'message': 'hello world'}).encode('utf-8'))

producer.flush()
