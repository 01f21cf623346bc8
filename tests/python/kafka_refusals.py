"""What Runnel refuses Kafka clients, and how they hear it: transactions (confluent-kafka and
kafka-python), and a Produce to a partition that does not exist. Prints "refusals ok".

Usage: python kafka_refusals.py <bootstrap>
"""

import sys
import time

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException

bootstrap = sys.argv[1]


def check(ok, what):
    if not ok:
        raise AssertionError(what)


# librdkafka: init_transactions() fails fast with the authorization error.
producer = confluent_kafka.Producer({'bootstrap.servers': bootstrap, 'transactional.id': 'tx-1'})
started = time.monotonic()
try:
    producer.init_transactions(10)
    check(False, 'init_transactions succeeded')
except KafkaException as e:
    error = e.args[0]
    check(error.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, f'librdkafka: {error}')
check(time.monotonic() - started < 5, f'refused after {time.monotonic() - started:.1f} s')

# kafka-python: the same error from its transaction manager.
from kafka import KafkaProducer
from kafka.errors import TransactionalIdAuthorizationFailedError

try:
    tx = KafkaProducer(bootstrap_servers=bootstrap, transactional_id='tx-2', max_block_ms=5000)
    tx.init_transactions()
    check(False, 'kafka-python init_transactions succeeded')
except TransactionalIdAuthorizationFailedError:
    pass

# A partition the topic does not have: UNKNOWN_TOPIC_OR_PARTITION, after the client's own
# metadata check or from the server.
plain = confluent_kafka.Producer({'bootstrap.servers': bootstrap, 'message.timeout.ms': 3000})
errors = []
plain.produce('refusals', value=b'x', partition=7, on_delivery=lambda e, m: errors.append(e))
plain.flush(10)
check(errors and errors[0] is not None and errors[0].code() in (
    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION), f'partition 7: {errors}')
print('refusals ok')
