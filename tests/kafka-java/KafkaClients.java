// Drives Runnel with Apache Kafka's Java client (kafka-clients 4.x, defaults: idempotent,
// acks=all, murmur2): the AdminClient creates, lists, describes and deletes topics; a producer
// sends keyed records with headers; two consumers share a group and commit; a typed stream is
// written with Kafka's LongSerializer key and read back with the rows SQL inserted. Prints
// "java ok".
// Usage: java -cp <kafka-clients jars>:. KafkaClients <bootstrap>
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.*;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.RebalanceInProgressException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.*;

public class KafkaClients {
    static final int RECORDS = 20_000;
    static final String EVENTS = "java_events";

    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static byte[] value(int i) {
        return ("{\"i\":" + i + ",\"body\":\"" + "x".repeat(i % 50) + "\"}").getBytes(StandardCharsets.UTF_8);
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        Properties common = new Properties();
        common.put("bootstrap.servers", bootstrap);

        try (Admin admin = Admin.create(common)) {
            topics(admin);
            produce(bootstrap);
            consumeInAGroup(bootstrap);
            groups(admin, bootstrap);
            typedStream(bootstrap);
        }
        System.out.println("java ok");
    }

    static void topics(Admin admin) throws Exception {
        admin.createTopics(List.of(
                new NewTopic(EVENTS, 4, (short) 1),
                new NewTopic("java_scratch", Optional.empty(), Optional.empty())
                        .configs(Map.of("retention.ms", "3600000"))))
                .all().get(30, TimeUnit.SECONDS);
        try {
            admin.createTopics(List.of(new NewTopic(EVENTS, 1, (short) 1))).all().get(30, TimeUnit.SECONDS);
            check(false, "a topic was created twice");
        } catch (ExecutionException e) {
            check(e.getCause() instanceof TopicExistsException, "second create: " + e.getCause());
        }
        Set<String> names = admin.listTopics().names().get(30, TimeUnit.SECONDS);
        check(names.containsAll(Set.of(EVENTS, "java_scratch", "clicks")), "topics: " + names);

        Map<String, TopicDescription> described =
                admin.describeTopics(List.of(EVENTS, "java_scratch")).allTopicNames().get(30, TimeUnit.SECONDS);
        TopicDescription events = described.get(EVENTS);
        check(events.partitions().size() == 4, "java_events: " + events);
        for (TopicPartitionInfo p : events.partitions()) {
            check(p.leader() != null && p.replicas().size() == 1 && p.isr().size() == 1, "partition: " + p);
        }
        check(described.get("java_scratch").partitions().size() == 1, "java_scratch: " + described);

        DescribeClusterResult cluster = admin.describeCluster();
        Collection<Node> nodes = cluster.nodes().get(30, TimeUnit.SECONDS);
        check(nodes.size() == 1 && cluster.controller().get(30, TimeUnit.SECONDS) != null, "cluster: " + nodes);
        check(cluster.clusterId().get(30, TimeUnit.SECONDS) != null, "no cluster id");

        ConfigResource scratch = new ConfigResource(ConfigResource.Type.TOPIC, "java_scratch");
        Config config = admin.describeConfigs(List.of(scratch)).all().get(30, TimeUnit.SECONDS).get(scratch);
        check("3600000".equals(config.get("retention.ms").value()), "java_scratch configs: " + config);

        admin.deleteTopics(List.of("java_scratch")).all().get(30, TimeUnit.SECONDS);
        names = admin.listTopics().names().get(30, TimeUnit.SECONDS);
        check(!names.contains("java_scratch"), "java_scratch still listed: " + names);
    }

    static void produce(String bootstrap) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("compression.type", "lz4");
        props.put("linger.ms", "5");
        AtomicReference<Exception> failed = new AtomicReference<>();
        try (Producer<String, byte[]> producer =
                new KafkaProducer<>(props, new StringSerializer(), new ByteArraySerializer())) {
            RecordMetadata first = null;
            for (int i = 0; i < RECORDS; i++) {
                ProducerRecord<String, byte[]> record =
                        new ProducerRecord<>(EVENTS, null, 1_700_000_000_000L + i, "k" + (i % 500), value(i));
                record.headers().add("i", Integer.toString(i).getBytes(StandardCharsets.UTF_8));
                Future<RecordMetadata> sent = producer.send(record, (m, e) -> {
                    if (e != null) failed.compareAndSet(null, e);
                });
                if (i == 0) first = sent.get(30, TimeUnit.SECONDS);
            }
            producer.flush();
            check(failed.get() == null, "send failed: " + failed.get());
            check(first.offset() == 0 && first.timestamp() == 1_700_000_000_000L, "first record: " + first);
        }
    }

    /**
     * Two consumers in one group read every record, committing after each poll. A record may be
     * read twice only if the commit after its first read failed (a commit racing the rebalance
     * that the second member's join starts is refused, as Kafka refuses it).
     */
    static void consumeInAGroup(String bootstrap) throws Exception {
        ConcurrentHashMap<Integer, Integer> seen = new ConcurrentHashMap<>();
        Set<Integer> uncommitted = ConcurrentHashMap.newKeySet();
        ConcurrentHashMap<String, Set<Integer>> assigned = new ConcurrentHashMap<>();
        AtomicReference<Throwable> failed = new AtomicReference<>();
        CountDownLatch done = new CountDownLatch(1);
        ExecutorService pool = Executors.newFixedThreadPool(2);
        for (String member : List.of("a", "b")) {
            pool.submit(() -> {
                try (Consumer<String, byte[]> consumer = groupConsumer(bootstrap)) {
                    consumer.subscribe(List.of(EVENTS));
                    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
                    while (done.getCount() > 0 && System.nanoTime() < deadline) {
                        List<Integer> read = new ArrayList<>();
                        for (ConsumerRecord<String, byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                            Header header = r.headers().lastHeader("i");
                            int i = Integer.parseInt(new String(header.value(), StandardCharsets.UTF_8));
                            check(r.key().equals("k" + (i % 500)), "key of " + i + ": " + r.key());
                            check(Arrays.equals(r.value(), value(i)), "value of " + i);
                            check(r.timestamp() == 1_700_000_000_000L + i, "timestamp of " + i);
                            check(seen.put(i, r.partition()) == null || uncommitted.remove(i),
                                    "record " + i + " consumed again after its offset was committed");
                            read.add(i);
                        }
                        try {
                            consumer.commitSync();
                        } catch (RebalanceInProgressException e) {
                            uncommitted.addAll(read);
                        }
                        Set<Integer> mine = new HashSet<>();
                        consumer.assignment().forEach(tp -> mine.add(tp.partition()));
                        assigned.put(member, mine);
                        if (seen.size() == RECORDS && uncommitted.isEmpty()) done.countDown();
                    }
                } catch (Throwable t) {
                    failed.compareAndSet(null, t);
                    done.countDown();
                }
            });
        }
        done.await(150, TimeUnit.SECONDS);
        pool.shutdown();
        check(pool.awaitTermination(60, TimeUnit.SECONDS), "consumers did not stop");
        if (failed.get() != null) throw new AssertionError("consumer failed", failed.get());
        check(seen.size() == RECORDS, "consumed " + seen.size() + " of " + RECORDS);
        // The same key went to the same partition every time.
        Map<Integer, Integer> partitionOfKey = new HashMap<>();
        seen.forEach((i, p) -> check(partitionOfKey.merge(i % 500, p, (a, b) -> a.equals(b) ? a : -1) >= 0,
                "key k" + (i % 500) + " in two partitions"));
        check(assigned.size() == 2 && assigned.values().stream().allMatch(s -> s.size() == 2),
                "assignment: " + assigned);
    }

    static Consumer<String, byte[]> groupConsumer(String bootstrap) {
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("group.id", "java-group");
        props.put("auto.offset.reset", "earliest");
        props.put("enable.auto.commit", "false");
        return new KafkaConsumer<>(props, new StringDeserializer(), new ByteArrayDeserializer());
    }

    /** The group as the admin client sees it, and a new member that reads nothing. */
    static void groups(Admin admin, String bootstrap) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> offsets =
                admin.listConsumerGroupOffsets("java-group").partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
        long committed = offsets.values().stream().mapToLong(OffsetAndMetadata::offset).sum();
        check(offsets.size() == 4 && committed == RECORDS, "committed: " + offsets);
        Collection<GroupListing> groups = admin.listGroups().all().get(30, TimeUnit.SECONDS);
        check(groups.stream().anyMatch(g -> g.groupId().equals("java-group")), "groups: " + groups);

        try (Consumer<String, byte[]> consumer = groupConsumer(bootstrap)) {
            consumer.subscribe(List.of(EVENTS));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (consumer.assignment().isEmpty() && System.nanoTime() < deadline) {
                check(consumer.poll(Duration.ofMillis(200)).isEmpty(), "a committed record was read again");
            }
            check(consumer.assignment().size() == 4, "assignment: " + consumer.assignment());
            for (int i = 0; i < 10; i++) {
                check(consumer.poll(Duration.ofMillis(200)).isEmpty(), "a committed record was read again");
            }
        }
    }

    /** `clicks (user_id BIGINT KEY, url TEXT, amount DOUBLE PRECISION)`, 20 rows from SQL. */
    static void typedStream(String bootstrap) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        try (Producer<Long, String> producer =
                new KafkaProducer<>(props, new LongSerializer(), new StringSerializer())) {
            for (long id = 0; id < 20; id++) {
                producer.send(new ProducerRecord<>("clicks", id, "{\"url\":\"/java/" + id + "\",\"amount\":" + id + ".5}"))
                        .get(30, TimeUnit.SECONDS);
            }
        }
        try (Consumer<Long, String> consumer =
                new KafkaConsumer<>(props, new LongDeserializer(), new StringDeserializer())) {
            List<TopicPartition> partitions = new ArrayList<>();
            consumer.partitionsFor("clicks").forEach(p -> partitions.add(new TopicPartition("clicks", p.partition())));
            consumer.assign(partitions);
            consumer.seekToBeginning(partitions);
            Map<Long, Set<Integer>> partitionsOfKey = new HashMap<>();
            int read = 0;
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (read < 40 && System.nanoTime() < deadline) {
                for (ConsumerRecord<Long, String> r : consumer.poll(Duration.ofMillis(200))) {
                    read++;
                    partitionsOfKey.computeIfAbsent(r.key(), k -> new HashSet<>()).add(r.partition());
                    boolean fromSql = r.value().equals("{\"url\":\"/sql/" + r.key() + "\",\"amount\":" + r.key() + ".0}");
                    boolean fromJava = r.value().equals("{\"url\":\"/java/" + r.key() + "\",\"amount\":" + r.key() + ".5}");
                    check(fromSql || fromJava, "clicks record: " + r.key() + " " + r.value());
                }
            }
            check(read == 40, "read " + read + " of 40 clicks");
            // SQL's INSERT and Java's murmur2 partitioner put each key in the same partition.
            check(partitionsOfKey.size() == 20 && partitionsOfKey.values().stream().allMatch(s -> s.size() == 1),
                    "partitions of keys: " + partitionsOfKey);
        }
    }
}
