"""A kafka-python client asks Runnel what topics and partitions it has.

Usage: python kafka_metadata.py <bootstrap host:port>. Prints "kafka metadata ok" when every
check passed. Produce, fetch and groups come with the rest of the Kafka front end.
"""

import sys

from kafka import KafkaConsumer

bootstrap = sys.argv[1]


def check(ok, what):
    if not ok:
        raise AssertionError(what)


consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=10000)
topics = consumer.topics()
check({"clicks", "raw_events"} <= topics, f"topics: {topics}")
check(not any(t.startswith("__state_") for t in topics), f"internal topics shown: {topics}")
check(
    consumer.partitions_for_topic("clicks") == {0, 1, 2, 3},
    f"clicks: {consumer.partitions_for_topic('clicks')}",
)
check(
    consumer.partitions_for_topic("raw_events") == {0, 1},
    f"raw_events: {consumer.partitions_for_topic('raw_events')}",
)
consumer.close()
print("kafka metadata ok")
