"""The project's seed consumer: a consumer group reading test_topic from the beginning.

Verbatim but for the bootstrap address (argv) and consumer_timeout_ms, which ends the loop
once no record has come for that long (the seed's loop runs forever).
"""

import sys

from kafka import KafkaConsumer

consumer = KafkaConsumer(
    'test_topic',
    bootstrap_servers=sys.argv[1],
    group_id='test_group',
    auto_offset_reset='earliest',
    consumer_timeout_ms=int(sys.argv[2]),
)

for message in consumer:
    print(message.key, message.value)

consumer.close()
