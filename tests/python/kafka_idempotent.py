"""An idempotent producer (confluent-kafka, i.e. librdkafka) sending records 0..n-1 (values
"0", "1", …) to a topic, across however many server crashes happen meanwhile; it exits 0 once
every record was acknowledged, having printed "sent n".

Usage: python kafka_idempotent.py <bootstrap> <topic> <n>
"""

import sys
import time

from confluent_kafka import KafkaException, Producer

bootstrap, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
failed = []


def delivered(error, message):
    if error is not None:
        failed.append((message.value(), str(error)))


producer = Producer({
    'bootstrap.servers': bootstrap,
    'enable.idempotence': True,
    'linger.ms': 5,
    'message.timeout.ms': 300_000,
    'reconnect.backoff.max.ms': 500,
})
started = time.monotonic()
for i in range(n):
    while True:
        try:
            producer.produce(topic, value=str(i).encode(), on_delivery=delivered)
            break
        except BufferError:
            producer.poll(0.05)
    if i % 10_000 == 0:
        producer.poll(0)
producer.flush(600)
if failed:
    raise SystemExit(f'{len(failed)} records failed, first: {failed[0]}')
if len(producer) != 0:
    raise SystemExit(f'{len(producer)} records never acknowledged')
print(f'sent {n} in {time.monotonic() - started:.1f} s')
