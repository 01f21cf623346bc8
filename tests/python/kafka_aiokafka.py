"""aiokafka (hand-written, non-flexible request versions only): an idempotent gzip producer
sends n keyed records with headers; a consumer group reads them with manual commits, every
record once and byte for byte; a second member of the group then reads nothing. Prints
"aiokafka ok".

Usage: python kafka_aiokafka.py <bootstrap> <topic> <n>
"""

import asyncio
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

bootstrap, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])


def check(ok, what):
    if not ok:
        raise AssertionError(what)


def record(i):
    return f'k{i % 17}'.encode(), f'value {i} '.encode() * (i % 4 + 1), [('i', str(i).encode())]


async def produce():
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                                compression_type='gzip', linger_ms=5)
    await producer.start()
    try:
        sent = []
        for i in range(n):
            key, value, headers = record(i)
            sent.append(await producer.send(topic, value, key=key, headers=headers))
        offsets = [await future for future in sent]
        check(len({(m.partition, m.offset) for m in offsets}) == n, 'offsets repeat')
    finally:
        await producer.stop()


def consumer():
    return AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id='aiokafka-group',
                            auto_offset_reset='earliest', enable_auto_commit=False)


async def consume():
    member = consumer()
    await member.start()
    seen = set()
    try:
        while len(seen) < n:
            batches = await asyncio.wait_for(member.getmany(timeout_ms=1000), 30)
            for messages in batches.values():
                for message in messages:
                    i = int(message.headers[0][1])
                    check(i not in seen, f'record {i} consumed twice')
                    seen.add(i)
                    key, value, headers = record(i)
                    got = (message.key, message.value, list(message.headers))
                    check(got == (key, value, headers), f'record {i}: {got}')
            if batches:
                await member.commit()
        partitions = member.assignment()
        ends = await member.end_offsets(list(partitions))
        check(sum(ends.values()) == n, f'end offsets {ends}')
        for tp in partitions:
            check(await member.committed(tp) == ends[tp], f'committed {tp}')
    finally:
        await member.stop()

    # The offsets were committed: a new member starts at the end.
    member = consumer()
    await member.start()
    try:
        again = await member.getmany(timeout_ms=4000)
        check(not any(again.values()), f'read again: {again}')
        check(member.assignment(), 'the new member got no partitions')
    finally:
        await member.stop()


async def main():
    await produce()
    await consume()
    print('aiokafka ok')


asyncio.run(main())
