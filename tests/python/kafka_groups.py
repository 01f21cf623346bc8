"""Three kafka-python consumers in one group on a six-partition topic; one is killed with
SIGKILL in the middle. Its partitions must move to the others within the session timeout,
every record must be consumed, and none consumed again once its offset was committed.

Usage: python kafka_groups.py <bootstrap> (the driver; it starts the consumers as
`python kafka_groups.py <bootstrap> consume <name>`). The topic `orders` must exist with six
partitions. Prints "groups ok" when every check passed.
"""

import os
import signal
import subprocess
import sys
import threading
import time

bootstrap = sys.argv[1]
TOPIC = 'orders'
GROUP = 'order-processors'
SESSION_MS = 6000


def consume(name):
    from kafka import ConsumerRebalanceListener, KafkaConsumer
    from kafka.errors import CommitFailedError

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def say(*words):
        print(time.monotonic(), *words, flush=True)

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            say('REVOKED', ' '.join(str(tp.partition) for tp in revoked))

        def on_partitions_assigned(self, assigned):
            say('ASSIGNED', ' '.join(str(tp.partition) for tp in assigned))

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=GROUP,
        client_id=name,
        enable_auto_commit=False,
        auto_offset_reset='earliest',
        session_timeout_ms=SESSION_MS,
        heartbeat_interval_ms=1000,
    )
    consumer.subscribe([TOPIC], listener=Listener())
    while not stop.is_set():
        batches = consumer.poll(timeout_ms=200)
        if not batches:
            continue
        for tp, records in batches.items():
            for r in records:
                say('R', tp.partition, r.offset, r.value.decode())
        try:
            consumer.commit()
        except CommitFailedError as e:
            # Between a rebalance's JoinGroup and SyncGroup (as with Kafka): these records
            # stay uncommitted, and whoever owns their partitions next reads them again.
            say('COMMIT FAILED', e)
            continue
        for tp, records in batches.items():
            say('C', tp.partition, records[-1].offset + 1)
    consumer.close()
    say('CLOSED')


def check(ok, what):
    if not ok:
        raise AssertionError(what)


class Consumer:
    def __init__(self, name):
        self.name = name
        self.lines = []
        self.process = subprocess.Popen(
            [sys.executable, __file__, bootstrap, 'consume', name],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        for line in self.process.stdout:
            if not line.endswith('\n'):
                break  # the unfinished last line of a consumer killed while it printed
            at, kind, *rest = line.split()
            self.lines.append((float(at), kind, rest))

    def assigned(self):
        """Its partitions now, from its last assignment."""
        current = set()
        for _, kind, rest in list(self.lines):
            if kind == 'ASSIGNED':
                current = {int(p) for p in rest}
            elif kind == 'REVOKED':
                current -= {int(p) for p in rest}
        return current

    def records(self):
        return [(at, int(p), int(o), v) for at, kind, (p, o, v) in
                ((at, kind, rest) for at, kind, rest in list(self.lines) if kind == 'R')]

    def commits(self):
        return [(at, int(p), int(o)) for at, kind, rest in list(self.lines) if kind == 'C'
                for p, o in [rest]]


def wait_for(what, condition, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(0.1)
    raise AssertionError(f'timed out waiting for {what}')


def driver():
    consumers = [Consumer(f'c{i}') for i in range(3)]
    try:
        run(consumers)
    finally:
        for c in consumers:
            if c.process.poll() is None:
                c.process.kill()


def run(consumers):
    from kafka import KafkaProducer

    wait_for('three consumers sharing six partitions',
             lambda: sorted(p for c in consumers for p in c.assigned()) == list(range(6))
             and all(len(c.assigned()) == 2 for c in consumers), 60)

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    total = 0

    def produce(n):
        nonlocal total
        for _ in range(n):
            producer.send(TOPIC, key=str(total).encode(), value=str(total).encode())
            total += 1
        producer.flush()

    def consumed():
        return {int(v) for c in consumers for _, _, _, v in c.records()}

    produce(3000)
    wait_for('the first records consumed', lambda: len(consumed()) >= 1500, 60)
    victim = consumers[0]
    orphaned = victim.assigned()
    os.kill(victim.process.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    victim.process.wait()
    survivors = consumers[1:]
    moved_at = wait_for('the killed consumer\'s partitions to move',
                        lambda: sorted(p for c in survivors for p in c.assigned()) == list(range(6)), 60)
    check(moved_at - killed_at <= SESSION_MS / 1000 + 5,
          f'partitions {orphaned} moved after {moved_at - killed_at:.1f} s')
    produce(3000)
    wait_for('every record consumed', lambda: consumed() >= set(range(total)), 60)

    # None consumed twice once its offset was committed: a record read again must have
    # been read first by the killed consumer, after its last commit of that partition.
    reads = {}
    for c in consumers:
        for at, p, o, _ in c.records():
            reads.setdefault((p, o), []).append((at, c.name))
    commits = [(at, p, o) for c in consumers for at, p, o in c.commits()]
    for (p, o), seen in reads.items():
        if len(seen) == 1:
            continue
        seen.sort()
        later = seen[-1][0]
        committed = [c for c in commits if c[1] == p and c[2] > o and c[0] < later]
        if committed:
            raise AssertionError(f'partition {p} offset {o} read again after offset {committed[0][2]} was committed')
        check(all(name == victim.name for _, name in seen[:-1]),
              f'partition {p} offset {o} read twice by live consumers: {seen}')

    for c in survivors:
        c.process.send_signal(signal.SIGTERM)
    for c in survivors:
        c.process.wait(timeout=30)
        c.reader.join(timeout=5)
        check(any(kind == 'CLOSED' for _, kind, _ in c.lines), f'{c.name} closed')
    again = sum(1 for seen in reads.values() if len(seen) > 1)
    print(f'{total} records, {again} read again after the kill, '
          f'partitions moved in {moved_at - killed_at:.1f} s')
    print('groups ok')


if len(sys.argv) > 2 and sys.argv[2] == 'consume':
    consume(sys.argv[3])
else:
    driver()
