// The Java kafka-clients driver of the kwire compatibility matrix (compat/).
// One scenario per run:  java -cp <classes>:<jars> Compat SCENARIO BOOTSTRAP PREFIX
// Prints "##step <name>" progress lines and one final JSON line
// {"status": "pass"|"fail"|"na", "detail": "..."}. Every step has a watchdog that prints
// "fail: timeout in <step>" and halts the JVM, whatever the client is blocked in.

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
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class Compat {
    // Data conventions: the same as compat/scenarios.py.
    static final int PARTITIONS = 3, N_KEYED = 30, KEYS = 5, N_SPREAD = 30, N_COMMIT = 20,
            COMMIT_AT = 10, N_COMPRESSED = 20, N_OFFSETS = 10, N_IDEMPOTENT = 50, TXN_BATCH = 5;
    static final String RETENTION_MS = "123456789";

    static String bootstrap, prefix, scenario, topic, group;
    static volatile String current = "start";
    static final ScheduledExecutorService watchdog = Executors.newSingleThreadScheduledExecutor(r -> {
        Thread t = new Thread(r, "watchdog");
        t.setDaemon(true);
        return t;
    });
    static ScheduledFuture<?> timer;
    static final Object outLock = new Object();
    static boolean done = false;

    static class Fail extends RuntimeException {
        Fail(String m) { super(m); }
    }

    static class NotApplicable extends RuntimeException {
        NotApplicable(String m) { super(m); }
    }

    // --- plumbing ------------------------------------------------------------------

    static void emit(String status, String detail) {
        synchronized (outLock) {
            if (done) return;
            done = true;
            System.out.println("{\"status\": \"" + status + "\", \"detail\": \"" + json(detail) + "\"}");
            System.out.flush();
        }
    }

    static String json(String s) {
        StringBuilder b = new StringBuilder();
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20) b.append(' ');
            else b.append(c);
        }
        return b.toString();
    }

    static void step(String name) { step(name, 20); }

    static synchronized void step(String name, int seconds) {
        current = name;
        if (timer != null) timer.cancel(false);
        System.out.println("##step " + name);
        System.out.flush();
        timer = watchdog.schedule(() -> {
            emit("fail", "timeout in " + name + " (" + seconds + "s)");
            Runtime.getRuntime().halt(0);
        }, seconds, TimeUnit.SECONDS);
    }

    static void check(boolean cond, String msg) {
        if (!cond) throw new Fail(msg);
    }

    static String shortExc(Throwable e) {
        while ((e instanceof ExecutionException || e instanceof CompletionException
                || (e instanceof KafkaException && e.getCause() != null
                    && e.getMessage() != null && e.getMessage().startsWith("org.apache")))
                && e.getCause() != null) e = e.getCause();
        if (e instanceof Fail) return e.getMessage();
        String m = e.getMessage() == null ? "" : e.getMessage();
        return (e.getClass().getSimpleName() + ": " + m).replaceAll("\\s+", " ").trim();
    }

    interface Cond { boolean get() throws Exception; }

    static void waitUntil(Cond c, double seconds, String what) throws Exception {
        long deadline = System.nanoTime() + (long) (seconds * 1e9);
        Exception last = null;
        while (true) {
            try {
                if (c.get()) return;
            } catch (Exception e) {
                last = e;
            }
            if (System.nanoTime() > deadline)
                throw new Fail(what + ": " + (last != null ? shortExc(last) : "not reached in " + seconds + "s"));
            Thread.sleep(200);
        }
    }

    static byte[] b(String s) { return s.getBytes(StandardCharsets.UTF_8); }

    static String s(byte[] b) { return b == null ? null : new String(b, StandardCharsets.UTF_8); }

    static String name(String suffix) { return prefix + "-" + scenario + "-" + suffix; }

    static String payload(String kind, int i) { return "z" + i + "-" + kind.repeat(40); }

    static int indexOf(String v) {
        String head = v.split("-")[0].replaceAll("[^0-9]", "");
        return head.isEmpty() ? -1 : Integer.parseInt(head);
    }

    // --- clients -------------------------------------------------------------------

    static Properties common() {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("request.timeout.ms", "10000");
        p.put("default.api.timeout.ms", "15000");
        p.put("client.dns.lookup", "use_all_dns_ips");
        addSecurity(p);
        return p;
    }

    // The SASL_SSL run (python -m compat --security) passes its settings in the environment:
    // TLS trusting the test CA's PEM file, SCRAM with the harness's user.
    static void addSecurity(Properties p) {
        String protocol = System.getenv("KWIRE_COMPAT_SECURITY_PROTOCOL");
        if (protocol == null || protocol.isEmpty()) return;
        p.put("security.protocol", protocol);
        p.put("ssl.truststore.type", "PEM");
        p.put("ssl.truststore.location", System.getenv("KWIRE_COMPAT_SSL_CA_LOCATION"));
        p.put("sasl.mechanism", System.getenv("KWIRE_COMPAT_SASL_MECHANISM"));
        p.put("sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required"
                + " username=\"" + jaasQuote(System.getenv("KWIRE_COMPAT_SASL_USERNAME")) + "\""
                + " password=\"" + jaasQuote(System.getenv("KWIRE_COMPAT_SASL_PASSWORD")) + "\";");
    }

    static String jaasQuote(String s) {
        return s.replace("\\", "\\\\").replace("\"", "\\\"");
    }

    static Admin admin() {
        return Admin.create(common());
    }

    static KafkaProducer<byte[], byte[]> producer(Map<String, String> extra) {
        Properties p = common();
        p.remove("default.api.timeout.ms");
        p.put("key.serializer", ByteArraySerializer.class.getName());
        p.put("value.serializer", ByteArraySerializer.class.getName());
        p.put("linger.ms", "5");
        p.put("max.block.ms", "15000");
        p.put("delivery.timeout.ms", "20000");
        // Plain rows test plain produce; the idempotent and transactions rows turn it on.
        p.put("enable.idempotence", "false");
        p.putAll(extra);
        return new KafkaProducer<>(p);
    }

    static KafkaConsumer<byte[], byte[]> consumer(String groupId, Map<String, String> extra) {
        Properties p = common();
        p.put("key.deserializer", ByteArrayDeserializer.class.getName());
        p.put("value.deserializer", ByteArrayDeserializer.class.getName());
        p.put("enable.auto.commit", "false");
        p.put("auto.offset.reset", "earliest");
        if (groupId != null) p.put("group.id", groupId);
        p.putAll(extra);
        return new KafkaConsumer<>(p);
    }

    static void ensureTopic(String t, int partitions, Map<String, String> configs) throws Exception {
        try (Admin a = admin()) {
            try {
                a.createTopics(List.of(new NewTopic(t, Optional.of(partitions), Optional.empty()).configs(configs)))
                        .all().get(15, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof TopicExistsException)) throw e;
            }
            waitUntil(() -> a.describeTopics(List.of(t)).allTopicNames().get(5, TimeUnit.SECONDS)
                    .get(t).partitions().size() == partitions, 10,
                    "topic " + t + " with " + partitions + " partitions in metadata");
        }
    }

    static void ensureTopic(String t) throws Exception { ensureTopic(t, PARTITIONS, Map.of()); }

    static class Rec {
        String key, value;
        Integer partition;
        Long timestamp;
        List<String[]> headers = new ArrayList<>();

        Rec(String key, String value, Integer partition) {
            this.key = key;
            this.value = value;
            this.partition = partition;
        }
    }

    static List<RecordMetadata> produce(String t, List<Rec> recs, Map<String, String> extra) throws Exception {
        List<RecordMetadata> out = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> p = producer(extra)) {
            List<Future<RecordMetadata>> fs = new ArrayList<>();
            for (Rec r : recs) {
                ProducerRecord<byte[], byte[]> pr = new ProducerRecord<>(t, r.partition, r.timestamp,
                        r.key == null ? null : b(r.key), b(r.value));
                for (String[] h : r.headers) pr.headers().add(h[0], b(h[1]));
                fs.add(p.send(pr));
            }
            p.flush();
            for (Future<RecordMetadata> f : fs) out.add(f.get(15, TimeUnit.SECONDS));
        }
        return out;
    }

    static List<ConsumerRecord<byte[], byte[]>> pollN(KafkaConsumer<byte[], byte[]> c, int n,
            double seconds, double extraWait) {
        List<ConsumerRecord<byte[], byte[]>> out = new ArrayList<>();
        long deadline = System.nanoTime() + (long) (seconds * 1e9);
        while (out.size() < n && System.nanoTime() < deadline)
            for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) out.add(r);
        long end = System.nanoTime() + (long) (extraWait * 1e9);
        while (System.nanoTime() < end)
            for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(100))) out.add(r);
        check(out.size() >= n, "read " + out.size() + " of " + n + " records in " + seconds + "s");
        return out;
    }

    static List<ConsumerRecord<byte[], byte[]>> readAssigned(String t, int n, int partitions,
            double extraWait, Map<String, String> extra) {
        try (KafkaConsumer<byte[], byte[]> c = consumer(null, extra)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < partitions; p++) tps.add(new TopicPartition(t, p));
            c.assign(tps);
            c.seekToBeginning(tps);
            return pollN(c, n, 15, extraWait);
        }
    }

    static void checkInOrder(List<Object[]> recs, int total) {
        Set<String> vals = new HashSet<>();
        for (Object[] r : recs) vals.add((String) r[2]);
        check(vals.size() == recs.size(), "duplicates among " + recs.size() + " records");
        check(recs.size() == total, "got " + recs.size() + " records, expected " + total);
        Map<Integer, List<Object[]>> byP = new TreeMap<>();
        for (Object[] r : recs) byP.computeIfAbsent((Integer) r[0], k -> new ArrayList<>()).add(r);
        for (Map.Entry<Integer, List<Object[]>> e : byP.entrySet()) {
            long lastO = -1;
            int lastI = -1;
            for (Object[] r : e.getValue()) {
                long o = (Long) r[1];
                int i = indexOf((String) r[2]);
                check(o > lastO, "partition " + e.getKey() + ": offsets out of order");
                check(i > lastI, "partition " + e.getKey() + ": records out of produce order");
                lastO = o;
                lastI = i;
            }
        }
    }

    // --- scenarios -----------------------------------------------------------------

    static void metadata() throws Exception {
        step("list topics");
        try (Admin a = admin()) {
            a.listTopics().names().get(10, TimeUnit.SECONDS);
            check(a.describeCluster().nodes().get(10, TimeUnit.SECONDS).size() >= 1, "no broker");
        }
    }

    static void adminTopics() throws Exception {
        step("create topic");
        try (Admin a = admin()) {
            a.createTopics(List.of(new NewTopic(topic, Optional.of(3), Optional.empty()))).all().get(15, TimeUnit.SECONDS);
            step("topic in metadata");
            waitUntil(() -> a.describeTopics(List.of(topic)).allTopicNames().get(5, TimeUnit.SECONDS)
                    .get(topic).partitions().size() == 3, 10, "created topic listed with 3 partitions");
            step("delete topic");
            a.deleteTopics(List.of(topic)).all().get(15, TimeUnit.SECONDS);
            step("topic gone from metadata");
            waitUntil(() -> !a.listTopics().names().get(5, TimeUnit.SECONDS).contains(topic), 10,
                    "deleted topic gone from metadata");
        }
    }

    static void produceKeyed() throws Exception {
        step("create topic");
        ensureTopic(topic);
        step("produce");
        List<Rec> recs = new ArrayList<>();
        for (int i = 0; i < N_KEYED; i++) {
            Rec r = new Rec("k" + (i % KEYS), "v" + i, null);
            r.headers.add(new String[] {"h1", "x" + i});
            r.headers.add(new String[] {"seq", "" + i});
            recs.add(r);
        }
        List<RecordMetadata> md = produce(topic, recs, Map.of());
        Map<String, Set<Integer>> parts = new TreeMap<>();
        for (int i = 0; i < recs.size(); i++)
            parts.computeIfAbsent(recs.get(i).key, k -> new TreeSet<>()).add(md.get(i).partition());
        for (Set<Integer> ps : parts.values())
            check(ps.size() == 1, "a key went to several partitions: " + parts);
        step("read back");
        for (ConsumerRecord<byte[], byte[]> m : readAssigned(topic, N_KEYED, PARTITIONS, 0.3, Map.of())) {
            int i = Integer.parseInt(s(m.value()).substring(1));
            check(("k" + (i % KEYS)).equals(s(m.key())), "record " + i + ": key " + s(m.key()));
            List<String> hs = new ArrayList<>();
            for (Header h : m.headers()) {
                hs.add(h.key());
                hs.add(s(h.value()));
            }
            check(hs.equals(List.of("h1", "x" + i, "seq", "" + i)), "record " + i + ": headers " + hs);
            check(parts.get(s(m.key())).contains(m.partition()), "record " + i + ": partition " + m.partition());
        }
    }

    static List<Rec> spread(String fmt, int n) {
        List<Rec> recs = new ArrayList<>();
        for (int i = 0; i < n; i++) recs.add(new Rec(null, String.format(fmt, i), i % 3));
        return recs;
    }

    static void consumeEarliest() throws Exception {
        step("create topic");
        ensureTopic(topic);
        step("produce");
        produce(topic, spread("m%d", N_SPREAD), Map.of());
        step("group consume from earliest", 40);
        List<Object[]> got = new ArrayList<>();
        try (KafkaConsumer<byte[], byte[]> c = consumer(group, Map.of())) {
            c.subscribe(List.of(topic));
            for (ConsumerRecord<byte[], byte[]> m : pollN(c, N_SPREAD, 30, 0.5))
                got.add(new Object[] {m.partition(), m.offset(), s(m.value())});
        }
        checkInOrder(got, N_SPREAD);
    }

    static void commitResume() throws Exception {
        step("create topic");
        ensureTopic(topic);
        step("produce");
        List<Rec> recs = new ArrayList<>();
        for (int i = 0; i < N_COMMIT; i++) recs.add(new Rec(null, "c" + i, 0));
        produce(topic, recs, Map.of());
        TopicPartition tp = new TopicPartition(topic, 0);
        step("consumer 1 reads", 40);
        try (KafkaConsumer<byte[], byte[]> c = consumer(group, Map.of())) {
            c.subscribe(List.of(topic));
            List<ConsumerRecord<byte[], byte[]>> ms = pollN(c, COMMIT_AT, 30, 0);
            for (int i = 0; i < COMMIT_AT; i++)
                check(("c" + i).equals(s(ms.get(i).value())), "consumer 1 did not read c0..c9 first");
            step("commit");
            c.commitSync(Map.of(tp, new OffsetAndMetadata(COMMIT_AT)), Duration.ofSeconds(15));
            step("close consumer 1");
        }
        step("consumer 2 resumes", 40);
        try (KafkaConsumer<byte[], byte[]> c = consumer(group, Map.of())) {
            c.subscribe(List.of(topic));
            ConsumerRecord<byte[], byte[]> m = pollN(c, 1, 30, 0).get(0);
            check(m.offset() == COMMIT_AT && ("c" + COMMIT_AT).equals(s(m.value())),
                    "resumed at offset " + m.offset() + " (" + s(m.value()) + "), expected " + COMMIT_AT);
            step("committed()");
            OffsetAndMetadata om = c.committed(Set.of(tp), Duration.ofSeconds(10)).get(tp);
            check(om != null && om.offset() == COMMIT_AT, "committed() = " + om);
        }
    }

    static void groupSplit() throws Exception {
        step("create topic");
        ensureTopic(topic);
        step("two members join", 45);
        List<List<Object[]>> got = List.of(Collections.synchronizedList(new ArrayList<>()),
                Collections.synchronizedList(new ArrayList<>()));
        List<AtomicReference<Set<Integer>>> assigned = List.of(new AtomicReference<>(Set.of()),
                new AtomicReference<>(Set.of()));
        AtomicReference<Throwable> err = new AtomicReference<>();
        volatileStop = false;
        List<Thread> ts = new ArrayList<>();
        for (int i = 0; i < 2; i++) {
            final int me = i;
            Thread t = new Thread(() -> {
                try (KafkaConsumer<byte[], byte[]> c = consumer(group, Map.of())) {
                    c.subscribe(List.of(topic));
                    while (!volatileStop) {
                        for (ConsumerRecord<byte[], byte[]> m : c.poll(Duration.ofMillis(200)))
                            got.get(me).add(new Object[] {m.partition(), m.offset(), s(m.value())});
                        Set<Integer> a = new TreeSet<>();
                        for (TopicPartition tp : c.assignment()) a.add(tp.partition());
                        assigned.get(me).set(a);
                    }
                } catch (Throwable e) {
                    err.set(e);
                }
            });
            t.setDaemon(true);
            t.start();
            ts.add(t);
        }
        try {
            waitUntil(() -> {
                if (err.get() != null) throw new Fail("consumer error: " + shortExc(err.get()));
                Set<Integer> a0 = assigned.get(0).get(), a1 = assigned.get(1).get();
                Set<Integer> u = new TreeSet<>(a0);
                u.addAll(a1);
                return !a0.isEmpty() && !a1.isEmpty() && Collections.disjoint(a0, a1) && u.equals(Set.of(0, 1, 2));
            }, 40, "disjoint assignments covering partitions 0-2");
            step("produce");
            produce(topic, spread("m%d", N_SPREAD), Map.of());
            step("both members read", 30);
            waitUntil(() -> got.get(0).size() + got.get(1).size() >= N_SPREAD, 25,
                    "30 records read by the two members");
            Thread.sleep(500);
        } finally {
            volatileStop = true;
            for (Thread t : ts) t.join(10000);
        }
        List<Object[]> all = new ArrayList<>();
        for (int i = 0; i < 2; i++) {
            for (Object[] r : got.get(i))
                check(assigned.get(i).get().contains((Integer) r[0]),
                        "member " + i + " read partition " + r[0] + ", assigned " + assigned.get(i).get());
            all.addAll(got.get(i));
        }
        checkInOrder(all, N_SPREAD);
    }

    static volatile boolean volatileStop = false;

    static void compression(String codec) throws Exception {
        step("create topic");
        ensureTopic(topic);
        step("produce " + codec);
        List<Rec> recs = new ArrayList<>();
        for (int i = 0; i < N_COMPRESSED; i++) recs.add(new Rec(null, payload(codec, i), i % 3));
        produce(topic, recs, Map.of("compression.type", codec, "linger.ms", "50"));
        step("read back");
        List<String> vals = new ArrayList<>(), want = new ArrayList<>();
        for (ConsumerRecord<byte[], byte[]> m : readAssigned(topic, N_COMPRESSED, PARTITIONS, 0.3, Map.of()))
            vals.add(s(m.value()));
        for (Rec r : recs) want.add(r.value);
        Collections.sort(vals);
        Collections.sort(want);
        check(vals.equals(want), "values read back differ");
    }

    static void listOffsets() throws Exception {
        step("create topic");
        ensureTopic(topic);
        long t0 = (System.currentTimeMillis() / 1000) * 1000 - 60_000;
        step("produce with timestamps");
        List<Rec> recs = new ArrayList<>();
        for (int i = 0; i < N_OFFSETS; i++) {
            Rec r = new Rec(null, "o" + i, 0);
            r.timestamp = t0 + i * 1000L;
            recs.add(r);
        }
        produce(topic, recs, Map.of());
        TopicPartition tp = new TopicPartition(topic, 0);
        try (Admin a = admin()) {
            Object[][] cases = {
                {"earliest", OffsetSpec.earliest(), 0L},
                {"latest", OffsetSpec.latest(), (long) N_OFFSETS},
                {"timestamp T0+5000", OffsetSpec.forTimestamp(t0 + 5000), 5L},
                {"timestamp T0+5500", OffsetSpec.forTimestamp(t0 + 5500), 6L},
            };
            for (Object[] c : cases) {
                step("list offsets " + c[0]);
                long got = a.listOffsets(Map.of(tp, (OffsetSpec) c[1])).partitionResult(tp)
                        .get(10, TimeUnit.SECONDS).offset();
                check(got == (Long) c[2], c[0] + ": offset " + got + ", expected " + c[2]);
            }
        }
    }

    static void idempotent() throws Exception {
        step("create topic");
        ensureTopic(topic);
        step("produce idempotent");
        List<Rec> recs = new ArrayList<>();
        for (int i = 0; i < N_IDEMPOTENT; i++) recs.add(new Rec(null, "i" + i, 0));
        List<RecordMetadata> md = produce(topic, recs, Map.of("enable.idempotence", "true", "acks", "all"));
        for (int i = 0; i < md.size(); i++)
            check(md.get(i).offset() == i, "record " + i + " got offset " + md.get(i).offset());
        step("read back");
        List<String> got = new ArrayList<>();
        for (ConsumerRecord<byte[], byte[]> m : readAssigned(topic, N_IDEMPOTENT, PARTITIONS, 1.0, Map.of()))
            if (m.partition() == 0) got.add(s(m.value()));
        List<String> want = new ArrayList<>();
        for (Rec r : recs) want.add(r.value);
        check(got.equals(want), "records differ from those produced");
    }

    static void transactions() throws Exception {
        step("create topic");
        ensureTopic(topic);
        step("init_transactions");
        try (KafkaProducer<byte[], byte[]> p = producer(Map.of("transactional.id", name("txn"),
                "enable.idempotence", "true"))) {
            p.initTransactions();
            String[][] txns = {{"a", "commit"}, {"x", "abort"}, {"b", "commit"}};
            for (String[] t : txns) {
                step("transaction " + t[0] + " (" + t[1] + ")");
                p.beginTransaction();
                List<Future<RecordMetadata>> fs = new ArrayList<>();
                for (int i = 0; i < TXN_BATCH; i++)
                    fs.add(p.send(new ProducerRecord<>(topic, 0, null, b(t[0] + i))));
                p.flush();
                for (Future<RecordMetadata> f : fs) f.get(10, TimeUnit.SECONDS);
                if (t[1].equals("commit")) p.commitTransaction();
                else p.abortTransaction();
            }
        }
        step("read_committed consumer");
        List<String> want = new ArrayList<>();
        for (int i = 0; i < TXN_BATCH; i++) want.add("a" + i);
        for (int i = 0; i < TXN_BATCH; i++) want.add("b" + i);
        List<String> got = new ArrayList<>();
        for (ConsumerRecord<byte[], byte[]> m : readAssigned(topic, want.size(), 1, 1.0,
                Map.of("isolation.level", "read_committed")))
            got.add(s(m.value()));
        check(got.equals(want), "read_committed saw " + got);
    }

    static void describeConfigs() throws Exception {
        step("create topic with retention.ms");
        ensureTopic(topic, PARTITIONS, Map.of("retention.ms", RETENTION_MS));
        try (Admin a = admin()) {
            step("describe topic config");
            ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            Config c = a.describeConfigs(List.of(r)).all().get(10, TimeUnit.SECONDS).get(r);
            ConfigEntry e = c.get("retention.ms");
            check(e != null, "retention.ms missing from " + c.entries().size() + " entries");
            check(RETENTION_MS.equals(e.value()), "retention.ms = " + e.value());
            step("describe broker config");
            String bid = a.describeCluster().nodes().get(10, TimeUnit.SECONDS).iterator().next().idString();
            ConfigResource br = new ConfigResource(ConfigResource.Type.BROKER, bid);
            Config bc = a.describeConfigs(List.of(br)).all().get(10, TimeUnit.SECONDS).get(br);
            check(bc.entries().size() >= 1, "broker config is empty");
        }
    }

    static void groups() throws Exception {
        step("create topic");
        ensureTopic(topic);
        produce(topic, List.of(new Rec(null, "g0", 0)), Map.of());
        step("member joins and reads", 40);
        volatileStop = false;
        AtomicReference<Throwable> err = new AtomicReference<>();
        CountDownLatch joined = new CountDownLatch(1);
        Thread t = new Thread(() -> {
            try (KafkaConsumer<byte[], byte[]> c = consumer(group, Map.of())) {
                c.subscribe(List.of(topic));
                pollN(c, 1, 30, 0);
                c.commitSync(Duration.ofSeconds(10));
                joined.countDown();
                while (!volatileStop) c.poll(Duration.ofMillis(100));
            } catch (Throwable e) {
                err.set(e);
                joined.countDown();
            }
        });
        t.setDaemon(true);
        t.start();
        joined.await(35, TimeUnit.SECONDS);
        if (err.get() != null) throw new Fail(shortExc(err.get()));
        try (Admin a = admin()) {
            step("list groups");
            waitUntil(() -> {
                for (ConsumerGroupListing g : a.listConsumerGroups().all().get(10, TimeUnit.SECONDS))
                    if (g.groupId().equals(group)) return true;
                return false;
            }, 10, "group in ListGroups");
            step("describe group");
            ConsumerGroupDescription d = a.describeConsumerGroups(List.of(group)).describedGroups()
                    .get(group).get(10, TimeUnit.SECONDS);
            check(d.state() == ConsumerGroupState.STABLE, "state " + d.state());
            check(d.members().size() == 1, d.members().size() + " members");
        } finally {
            volatileStop = true;
            t.join(10000);
        }
    }

    public static void main(String[] args) {
        if (args.length != 3) {
            System.err.println("usage: Compat SCENARIO BOOTSTRAP PREFIX");
            System.exit(2);
        }
        scenario = args[0];
        bootstrap = args[1];
        prefix = args[2];
        topic = prefix + "-" + scenario;
        group = topic + "-g";
        try {
            switch (scenario) {
                case "metadata" -> metadata();
                case "admin_topics" -> adminTopics();
                case "produce_keyed" -> produceKeyed();
                case "consume_earliest" -> consumeEarliest();
                case "commit_resume" -> commitResume();
                case "group_split" -> groupSplit();
                case "compression_gzip" -> compression("gzip");
                case "compression_snappy" -> compression("snappy");
                case "compression_lz4" -> compression("lz4");
                case "compression_zstd" -> compression("zstd");
                case "list_offsets" -> listOffsets();
                case "idempotent" -> idempotent();
                case "transactions" -> transactions();
                case "describe_configs" -> describeConfigs();
                case "groups" -> groups();
                default -> throw new Fail("unknown scenario " + scenario);
            }
            if (timer != null) timer.cancel(false);
            emit("pass", "");
        } catch (NotApplicable e) {
            emit("na", e.getMessage());
        } catch (Throwable e) {
            e.printStackTrace();
            emit("fail", current + ": " + shortExc(e));
        }
        System.out.flush();
        // Client threads must not keep the JVM (and the harness) waiting.
        Runtime.getRuntime().halt(0);
    }
}
