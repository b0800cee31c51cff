'use strict';
// The Node.js drivers of the kwire compatibility matrix (compat/): kafkajs and
// @confluentinc/kafka-javascript (through its KafkaJS-compatible API), one scenario per run:
//
//   node compat.js kafkajs|confluent SCENARIO BOOTSTRAP PREFIX
//
// Prints "##step <name>" progress lines and one final JSON line
// {"status": "pass"|"fail"|"na", "detail": "..."}. Every step has a watchdog.

const [flavour, scenario, bootstrap, prefix] = process.argv.slice(2);

// Data conventions: the same as compat/scenarios.py.
const PARTITIONS = 3, N_KEYED = 30, KEYS = 5, N_SPREAD = 30, N_COMMIT = 20, COMMIT_AT = 10,
  N_COMPRESSED = 20, N_OFFSETS = 10, N_IDEMPOTENT = 50, TXN_BATCH = 5;
const RETENTION_MS = '123456789';

// The SASL_SSL run (python -m compat --security) passes its settings in the environment.
const security = process.env.KWIRE_COMPAT_SECURITY_PROTOCOL ? {
  protocol: process.env.KWIRE_COMPAT_SECURITY_PROTOCOL,
  ca: process.env.KWIRE_COMPAT_SSL_CA_LOCATION,
  sasl: { mechanism: process.env.KWIRE_COMPAT_SASL_MECHANISM.toLowerCase(),
    username: process.env.KWIRE_COMPAT_SASL_USERNAME,
    password: process.env.KWIRE_COMPAT_SASL_PASSWORD },
} : null;

const topic = `${prefix}-${scenario}`;
const group = `${topic}-g`;
const name = (suffix) => `${prefix}-${scenario}-${suffix}`;

// --- plumbing -------------------------------------------------------------------

let current = 'start';
let timer = null;
let done = false;
let lastClientError = '';

class Fail extends Error {}
class NotApplicable extends Error {}

function emit(status, detail) {
  if (done) return;
  done = true;
  process.stdout.write(JSON.stringify({ status, detail: detail || '' }) + '\n');
}

function hint() {
  return lastClientError ? ` (client reported: ${lastClientError})` : '';
}

function step(stepName, seconds = 20) {
  current = stepName;
  if (timer) clearTimeout(timer);
  process.stdout.write(`##step ${stepName}\n`);
  timer = setTimeout(() => {
    emit('fail', `timeout in ${stepName} (${seconds}s)${hint()}`);
    process.exit(0);
  }, seconds * 1000);
}

// A new watchdog period for clean-up, without changing the step a failure names.
function rearm(seconds) {
  if (timer) clearTimeout(timer);
  const stepName = current;
  timer = setTimeout(() => {
    emit('fail', `timeout in ${stepName} (clean-up)${hint()}`);
    process.exit(0);
  }, seconds * 1000);
}

function check(cond, msg) {
  if (!cond) throw new Fail(msg);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(fn, seconds, what) {
  const deadline = Date.now() + seconds * 1000;
  let last = null;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Fail(`${what}: ${last ? shortErr(last) : `not reached in ${seconds}s`}`);
    }
    await sleep(200);
  }
}

function shortErr(e) {
  if (e instanceof Fail) return e.message;
  let m = `${e.name || 'Error'}: ${e.message || e}`;
  if (e.type && !m.includes(e.type)) m += ` [${e.type}]`;
  if (e.code !== undefined && typeof e.code !== 'object' && !m.includes(String(e.code))) m += ` (code ${e.code})`;
  if (e.errors && e.errors.length) m += `: ${shortErr(e.errors[0])}`;
  else if (e.originalError && e.originalError !== e) m += `: ${shortErr(e.originalError)}`;
  return m.replace(/\s+/g, ' ').trim();
}

function noteClientError(msg) {
  msg = String(msg).replace(/\s+/g, ' ').trim();
  if (msg) lastClientError = msg.slice(0, 300);
}

function within(promise, ms, what) {
  return Promise.race([promise, sleep(ms).then(() => { throw new Fail(`${what} took over ${ms / 1000}s`); })]);
}

const payload = (kind, i) => `z${i}-` + kind.repeat(40);
const indexOf = (v) => parseInt(v.split('-')[0].replace(/[^0-9]/g, ''), 10);

function checkInOrder(recs, total) {
  const vals = recs.map((r) => r[2]);
  check(new Set(vals).size === vals.length, `duplicates among ${vals.length} records`);
  check(vals.length === total, `got ${vals.length} records, expected ${total}`);
  const byP = new Map();
  for (const [p, o, v] of recs) {
    if (!byP.has(p)) byP.set(p, []);
    byP.get(p).push([o, indexOf(v)]);
  }
  for (const [p, lst] of byP) {
    for (let i = 1; i < lst.length; i++) {
      check(lst[i][0] > lst[i - 1][0], `partition ${p}: offsets out of order`);
      check(lst[i][1] > lst[i - 1][1], `partition ${p}: records out of produce order`);
    }
  }
}

// --- the two clients behind one interface ------------------------------------------

const logLine = (level, text) => {
  process.stderr.write(`${level} ${text}\n`);
  if (level === 'ERROR') noteClientError(text);
};

function kafkajsClient() {
  process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
  const K = require('kafkajs');
  const { CompressionCodecs, CompressionTypes } = K;
  CompressionCodecs[CompressionTypes.Snappy] = require('kafkajs-snappy');
  const LZ4 = require('kafkajs-lz4');
  CompressionCodecs[CompressionTypes.LZ4] = new LZ4().codec;
  CompressionCodecs[CompressionTypes.ZSTD] = zstdCodec;
  const kafka = new K.Kafka({
    clientId: 'kwire-compat',
    brokers: bootstrap.split(','),
    connectionTimeout: 5000,
    requestTimeout: 10000,
    retry: { retries: 5, initialRetryTime: 200, maxRetryTime: 2000 },
    // TLS trusting only the test CA; SASL as kafkajs spells the mechanism (scram-sha-512).
    ...(security ? { ssl: { ca: [require('fs').readFileSync(security.ca)] }, sasl: security.sasl } : {}),
    logLevel: K.logLevel.WARN,
    logCreator: () => ({ level, log }) => {
      const { message, error } = log;
      logLine(level <= K.logLevel.ERROR ? 'ERROR' : 'WARN',
        `${message}${error ? `: ${error}` : ''}`);
    },
  });
  const codecs = { gzip: CompressionTypes.GZIP, snappy: CompressionTypes.Snappy,
    lz4: CompressionTypes.LZ4, zstd: CompressionTypes.ZSTD };
  return {
    hasDescribeConfigs: true,
    ConfigResourceTypes: K.ConfigResourceTypes,
    async admin() {
      const a = kafka.admin();
      await a.connect();
      return a;
    },
    async producer({ idempotent = false, transactionalId, compression, lingerMs = 5, acks } = {}) {
      const opts = { idempotent, allowAutoTopicCreation: false,
        createPartitioner: K.Partitioners.DefaultPartitioner };
      if (transactionalId) Object.assign(opts, { transactionalId, maxInFlightRequests: 1, idempotent: true });
      const p = kafka.producer(opts);
      await p.connect();
      const c = compression ? codecs[compression] : undefined;
      void lingerMs;
      return {
        raw: p,
        send: (t, messages) => p.send({ topic: t, messages, compression: c,
          acks: acks === undefined ? (idempotent ? -1 : 1) : acks }),
        async transaction() {
          const txn = await p.transaction();
          return { send: (t, messages) => txn.send({ topic: t, messages }),
            commit: () => txn.commit(), abort: () => txn.abort() };
        },
        disconnect: () => p.disconnect(),
      };
    },
    async consumer({ groupId, autoCommit = false, readUncommitted = false } = {}) {
      const c = kafka.consumer({ groupId, readUncommitted, maxWaitTimeInMs: 500,
        heartbeatInterval: 1000, sessionTimeout: 10000, rebalanceTimeout: 10000 });
      const assigned = { set: new Set() };
      c.on(c.events.GROUP_JOIN, (e) => {
        assigned.set = new Set((e.payload.memberAssignment[topic] || []).map(Number));
      });
      c.on(c.events.CRASH, (e) => noteClientError(`consumer crash: ${e.payload.error}`));
      await c.connect();
      return {
        raw: c,
        subscribe: (t) => c.subscribe({ topic: t, fromBeginning: true }),
        run: (eachMessage) => c.run({ autoCommit, eachMessage }),
        commit: (offsets) => c.commitOffsets(offsets),
        assignment: () => assigned.set,
        disconnect: () => c.disconnect(),
      };
    },
  };
}

// zstd for kafkajs (whose core has gzip only): WebAssembly zstd to compress, a pure-JS
// decoder (which reads frames without a content size, as Java's zstd-jni writes) to
// decompress. Both come from npm packages; nothing is downloaded at run time.
let zstdReady = null;
function zstdCodec() {
  const zstd = require('@bokuweb/zstd-wasm');
  const fzstd = require('fzstd');
  return {
    async compress(encoder) {
      if (!zstdReady) zstdReady = zstd.init();
      await zstdReady;
      return Buffer.from(zstd.compress(encoder.buffer, 3));
    },
    async decompress(buffer) {
      return Buffer.from(fzstd.decompress(buffer));
    },
  };
}

function confluentClient() {
  const { KafkaJS } = require('@confluentinc/kafka-javascript');
  const logger = {
    level: KafkaJS.logLevel.WARN,
    setLogLevel(l) { this.level = l; },
    namespace() { return this; },
    info() {},
    debug(m) {
      // librdkafka's "eos" debug context says why a transaction coordinator is missing.
      if (/fail/i.test(m) && /coordinator|TXN/.test(m)) noteClientError(String(m).split(']: ').pop());
    },
    warn(m) { logLine('WARN', m); },
    error(m) { logLine('ERROR', m); },
  };
  const base = { brokers: bootstrap.split(','), connectionTimeout: 5000, requestTimeout: 10000, logger,
    logLevel: KafkaJS.logLevel.DEBUG };
  // Its KafkaJS block takes only `ssl: true`; the CA goes in librdkafka's own property.
  if (security) Object.assign(base, { ssl: true, sasl: security.sasl });
  const kafka = new KafkaJS.Kafka({ kafkaJS: base, 'broker.address.family': 'v4',
    ...(security ? { 'ssl.ca.location': security.ca } : {}) });
  return {
    hasDescribeConfigs: false,
    async admin() {
      const a = kafka.admin();
      await a.connect();
      return a;
    },
    async producer({ idempotent = false, transactionalId, compression, lingerMs = 5, acks } = {}) {
      const kjs = { idempotent, acks: acks === undefined ? (idempotent || transactionalId ? -1 : 1) : acks };
      if (transactionalId) Object.assign(kjs, { transactionalId, idempotent: true });
      if (compression) kjs.compression = compression;
      const p = kafka.producer({ kafkaJS: kjs, 'linger.ms': lingerMs,
        ...(transactionalId ? { debug: 'eos' } : {}) });
      await p.connect();
      return {
        raw: p,
        send: (t, messages) => p.send({ topic: t, messages }),
        async transaction() {
          const txn = await p.transaction();
          return { send: (t, messages) => txn.send({ topic: t, messages }),
            commit: () => txn.commit(), abort: () => txn.abort() };
        },
        disconnect: () => p.disconnect(),
      };
    },
    async consumer({ groupId, autoCommit = false, readUncommitted = false } = {}) {
      const c = kafka.consumer({ kafkaJS: { groupId, fromBeginning: true, autoCommit, readUncommitted,
        sessionTimeout: 10000, heartbeatInterval: 1000 } });
      await c.connect();
      return {
        raw: c,
        subscribe: (t) => c.subscribe({ topics: [t] }),
        run: (eachMessage) => c.run({ eachMessage }),
        commit: (offsets) => c.commitOffsets(offsets),
        // [{topic, partition}] (or [{topic, partitions}] in other versions)
        assignment: () => new Set(c.assignment().filter((a) => a.topic === topic)
          .flatMap((a) => (a.partitions !== undefined ? a.partitions : [a.partition])).map(Number)),
        disconnect: () => c.disconnect(),
      };
    },
  };
}

let C;

// --- helpers on top ---------------------------------------------------------------

function topicPartitions(md, t) {
  const topics = Array.isArray(md) ? md : md.topics;
  const found = topics.find((x) => x.name === t || x.topic === t);
  return found ? found.partitions.length : 0;
}

async function ensureTopic(t, partitions = PARTITIONS, configEntries = []) {
  const a = await C.admin();
  try {
    try {
      await a.createTopics({ topics: [{ topic: t, numPartitions: partitions, replicationFactor: -1,
        configEntries }], timeout: 10000 });
    } catch (e) {
      const s = shortErr(e);
      if (!/already exists|TOPIC_ALREADY_EXISTS/i.test(s)) throw e;
    }
    await waitUntil(async () => topicPartitions(await a.fetchTopicMetadata({ topics: [t] }), t)
      === partitions, 10, `topic ${t} with ${partitions} partitions in metadata`);
  } finally {
    await within(a.disconnect(), 10000, 'admin disconnect').catch(() => {});
  }
}

async function produce(t, messages, opts = {}) {
  // Clients may turn values into Buffers in place: send copies.
  messages = messages.map((m) => ({ ...m, headers: m.headers && { ...m.headers } }));
  const p = await C.producer(opts);
  try {
    return await p.send(t, messages);
  } finally {
    await within(p.disconnect(), 10000, 'producer disconnect').catch(() => {});
  }
}

// Read n records with a fresh group from the beginning (neither client has a
// group-less consumer in this API).
async function collect(consumer, n, seconds, extraMs = 0) {
  const got = [];
  await consumer.run(async ({ partition, message }) => { got.push({ partition, ...message }); });
  const deadline = Date.now() + seconds * 1000;
  while (got.length < n && Date.now() < deadline) await sleep(100);
  if (extraMs) await sleep(extraMs);
  check(got.length >= n, `read ${got.length} of ${n} records in ${seconds}s`);
  return got;
}

async function readAll(t, n, { extraMs = 300, readUncommitted = false, seconds = 20 } = {}) {
  const c = await C.consumer({ groupId: name(`reader-${Date.now()}`), readUncommitted });
  try {
    await c.subscribe(t);
    return await collect(c, n, seconds, extraMs);
  } finally {
    await within(c.disconnect(), 10000, 'consumer disconnect').catch(() => {});
  }
}

const str = (b) => (b === null || b === undefined ? b : b.toString());

// --- scenarios ----------------------------------------------------------------------

const scenarios = {
  async metadata() {
    step('list topics');
    const a = await C.admin();
    await a.listTopics();
    await a.disconnect();
  },

  async admin_topics() {
    step('create topic');
    const a = await C.admin();
    const created = await a.createTopics({ topics: [{ topic, numPartitions: 3, replicationFactor: -1 }],
      timeout: 10000 });
    check(created !== false, 'createTopics returned false (topic exists?)');
    step('topic in metadata');
    await waitUntil(async () => topicPartitions(await a.fetchTopicMetadata({ topics: [topic] }), topic) === 3,
      10, 'created topic listed with 3 partitions');
    step('delete topic');
    await a.deleteTopics({ topics: [topic], timeout: 10000 });
    step('topic gone from metadata');
    await waitUntil(async () => !(await a.listTopics()).includes(topic), 10, 'deleted topic gone from metadata');
    await a.disconnect();
  },

  async produce_keyed() {
    step('create topic');
    await ensureTopic(topic);
    step('produce');
    const msgs = [];
    for (let i = 0; i < N_KEYED; i++) {
      msgs.push({ key: `k${i % KEYS}`, value: `v${i}`, headers: { h1: `x${i}`, seq: `${i}` } });
    }
    await produce(topic, msgs);
    step('read back', 30);
    const parts = {};
    for (const m of await readAll(topic, N_KEYED)) {
      const i = parseInt(str(m.value).slice(1), 10);
      check(str(m.key) === `k${i % KEYS}`, `record ${i}: key ${str(m.key)}`);
      const hs = Object.entries(m.headers || {}).map(([k, v]) => `${k}=${str(v)}`);
      check(JSON.stringify(hs) === JSON.stringify([`h1=x${i}`, `seq=${i}`]), `record ${i}: headers ${hs}`);
      (parts[str(m.key)] = parts[str(m.key)] || new Set()).add(m.partition);
    }
    for (const [k, ps] of Object.entries(parts)) {
      check(ps.size === 1, `key ${k} went to partitions ${[...ps]}`);
    }
  },

  async consume_earliest() {
    step('create topic');
    await ensureTopic(topic);
    step('produce');
    const msgs = [];
    for (let i = 0; i < N_SPREAD; i++) msgs.push({ value: `m${i}`, partition: i % 3 });
    await produce(topic, msgs);
    step('group consume from earliest', 40);
    const c = await C.consumer({ groupId: group });
    await c.subscribe(topic);
    const got = await collect(c, N_SPREAD, 30, 500);
    await within(c.disconnect(), 10000, 'consumer disconnect');
    checkInOrder(got.map((m) => [m.partition, Number(m.offset), str(m.value)]), N_SPREAD);
  },

  async commit_resume() {
    step('create topic');
    await ensureTopic(topic);
    step('produce');
    const msgs = [];
    for (let i = 0; i < N_COMMIT; i++) msgs.push({ value: `c${i}`, partition: 0 });
    await produce(topic, msgs);
    step('consumer 1 reads', 40);
    let c = await C.consumer({ groupId: group });
    await c.subscribe(topic);
    const first = await collect(c, COMMIT_AT, 30);
    const vals = first.slice(0, COMMIT_AT).map((m) => str(m.value));
    check(JSON.stringify(vals) === JSON.stringify([...Array(COMMIT_AT).keys()].map((i) => `c${i}`)),
      `consumer 1 read ${vals}`);
    step('commit');
    await c.commit([{ topic, partition: 0, offset: String(COMMIT_AT) }]);
    step('close consumer 1');
    await within(c.disconnect(), 15000, 'consumer 1 disconnect');
    step('consumer 2 resumes', 40);
    c = await C.consumer({ groupId: group });
    await c.subscribe(topic);
    const m = (await collect(c, 1, 30))[0];
    check(Number(m.offset) === COMMIT_AT && str(m.value) === `c${COMMIT_AT}`,
      `resumed at offset ${m.offset} (${str(m.value)}), expected ${COMMIT_AT}`);
    await within(c.disconnect(), 10000, 'consumer 2 disconnect');
    step('fetch committed offsets');
    const a = await C.admin();
    const offs = await a.fetchOffsets({ groupId: group, topics: [topic] });
    const p0 = offs[0].partitions.find((p) => p.partition === 0);
    check(p0 && Number(p0.offset) === COMMIT_AT, `committed offset ${p0 && p0.offset}`);
    await a.disconnect();
  },

  async group_split() {
    step('create topic');
    await ensureTopic(topic);
    step('two members join', 45);
    const cs = [await C.consumer({ groupId: group }), await C.consumer({ groupId: group })];
    const got = [[], []];
    try {
      for (let i = 0; i < 2; i++) {
        await cs[i].subscribe(topic);
        await cs[i].run(async ({ partition, message }) => {
          got[i].push([partition, Number(message.offset), str(message.value)]);
        });
      }
      const assign = await waitUntil(() => {
        const a = cs.map((c) => c.assignment());
        const union = new Set([...a[0], ...a[1]]);
        const disjoint = [...a[0]].every((p) => !a[1].has(p));
        return a[0].size && a[1].size && disjoint && union.size === 3 ? a : null;
      }, 40, 'disjoint assignments covering partitions 0-2');
      step('produce');
      const msgs = [];
      for (let i = 0; i < N_SPREAD; i++) msgs.push({ value: `m${i}`, partition: i % 3 });
      await produce(topic, msgs);
      step('both members read', 30);
      await waitUntil(() => got[0].length + got[1].length >= N_SPREAD, 25, '30 records read by the two members');
      await sleep(500);
      for (let i = 0; i < 2; i++) {
        const ps = new Set(got[i].map((r) => r[0]));
        check([...ps].every((p) => assign[i].has(p)),
          `member ${i} read partitions ${[...ps]}, assigned ${[...assign[i]]}`);
      }
      checkInOrder([...got[0], ...got[1]], N_SPREAD);
    } finally {
      rearm(15);
      await Promise.all(cs.map((c) => within(c.disconnect(), 10000, 'disconnect').catch(() => {})));
    }
  },

  async list_offsets() {
    step('create topic');
    await ensureTopic(topic);
    const t0 = Math.floor(Date.now() / 1000) * 1000 - 60000;
    step('produce with timestamps');
    const msgs = [];
    for (let i = 0; i < N_OFFSETS; i++) msgs.push({ value: `o${i}`, partition: 0, timestamp: String(t0 + i * 1000) });
    // acks=all: the high watermark (what "latest" is) has passed the records when they
    // are acknowledged, also in a replicated cluster (acks=1 answers before followers copy).
    await produce(topic, msgs, { acks: -1 });
    const a = await C.admin();
    step('list offsets earliest, latest');
    const offs = (await a.fetchTopicOffsets(topic)).find((p) => p.partition === 0);
    check(Number(offs.low) === 0, `earliest: offset ${offs.low}, expected 0`);
    check(Number(offs.high) === N_OFFSETS, `latest: offset ${offs.high}, expected ${N_OFFSETS}`);
    for (const [dt, want] of [[5000, 5], [5500, 6]]) {
      step(`list offsets timestamp T0+${dt}`);
      const r = (await a.fetchTopicOffsetsByTimestamp(topic, t0 + dt)).find((p) => p.partition === 0);
      check(Number(r.offset) === want, `timestamp T0+${dt}: offset ${r.offset}, expected ${want}`);
    }
    await a.disconnect();
  },

  async idempotent() {
    step('create topic');
    await ensureTopic(topic);
    step('produce idempotent');
    const msgs = [];
    for (let i = 0; i < N_IDEMPOTENT; i++) msgs.push({ value: `i${i}`, partition: 0 });
    await produce(topic, msgs, { idempotent: true });
    step('read back', 30);
    const got = (await readAll(topic, N_IDEMPOTENT, { extraMs: 1000 })).filter((m) => m.partition === 0);
    check(JSON.stringify(got.map((m) => Number(m.offset))) === JSON.stringify([...Array(N_IDEMPOTENT).keys()]),
      `offsets ${got.slice(0, 5).map((m) => m.offset)}...`);
    check(JSON.stringify(got.map((m) => str(m.value))) === JSON.stringify(msgs.map((m) => m.value)),
      'records differ from those produced');
  },

  async transactions() {
    step('create topic');
    await ensureTopic(topic);
    step('init transactions');
    const p = await C.producer({ transactionalId: name('txn') });
    try {
      for (const [n, commit] of [['a', true], ['x', false], ['b', true]]) {
        step(`transaction ${n} (${commit ? 'commit' : 'abort'})`);
        const txn = await p.transaction();
        const msgs = [];
        for (let i = 0; i < TXN_BATCH; i++) msgs.push({ value: `${n}${i}`, partition: 0 });
        await txn.send(topic, msgs.map((m) => ({ ...m })));
        if (commit) await txn.commit();
        else await txn.abort();
      }
    } finally {
      await within(p.disconnect(), 10000, 'producer disconnect').catch(() => {});
    }
    step('read_committed consumer', 30);
    const want = [];
    for (let i = 0; i < TXN_BATCH; i++) want.push(`a${i}`);
    for (let i = 0; i < TXN_BATCH; i++) want.push(`b${i}`);
    const got = (await readAll(topic, want.length, { extraMs: 1000 }))
      .filter((m) => m.partition === 0).map((m) => str(m.value));
    check(JSON.stringify(got) === JSON.stringify(want), `read_committed saw ${got}`);
  },

  async describe_configs() {
    if (!C.hasDescribeConfigs) {
      throw new NotApplicable('no describeConfigs in its admin API (KafkaJS-compatible or node-rdkafka style)');
    }
    step('create topic with retention.ms');
    await ensureTopic(topic, PARTITIONS, [{ name: 'retention.ms', value: RETENTION_MS }]);
    const a = await C.admin();
    step('describe topic config');
    let r = await a.describeConfigs({ resources: [{ type: C.ConfigResourceTypes.TOPIC, name: topic }],
      includeSynonyms: false });
    const entries = r.resources[0].configEntries;
    check(!r.resources[0].errorCode, `error ${r.resources[0].errorCode} ${r.resources[0].errorMessage}`);
    const e = entries.find((x) => x.configName === 'retention.ms');
    check(e, `retention.ms missing from ${entries.length} entries`);
    check(e.configValue === RETENTION_MS, `retention.ms = ${e.configValue}`);
    step('describe broker config');
    const bid = String((await a.describeCluster()).brokers[0].nodeId);
    r = await a.describeConfigs({ resources: [{ type: C.ConfigResourceTypes.BROKER, name: bid }],
      includeSynonyms: false });
    check(r.resources[0].configEntries.length >= 1, 'broker config is empty');
    await a.disconnect();
  },

  async groups() {
    step('create topic');
    await ensureTopic(topic);
    await produce(topic, [{ value: 'g0', partition: 0 }]);
    step('member joins and reads', 40);
    const c = await C.consumer({ groupId: group });
    try {
      await c.subscribe(topic);
      const m = (await collect(c, 1, 30))[0];
      await c.commit([{ topic, partition: 0, offset: String(Number(m.offset) + 1) }]);
      const a = await C.admin();
      step('list groups');
      await waitUntil(async () => (await a.listGroups()).groups.some((g) => g.groupId === group), 10,
        'group in ListGroups');
      step('describe group');
      const d = (await a.describeGroups([group])).groups.find((g) => g.groupId === group);
      check(d, 'group missing from DescribeGroups');
      const stable = d.state === 'Stable' || (flavour === 'confluent' && d.state === 3);
      check(stable, `state ${d.state}`);
      check(d.members.length === 1, `${d.members.length} members`);
      await a.disconnect();
    } finally {
      await within(c.disconnect(), 10000, 'consumer disconnect').catch(() => {});
    }
  },
};

function compression(codec) {
  return async () => {
    step('create topic');
    await ensureTopic(topic);
    step(`produce ${codec}`);
    const msgs = [];
    for (let i = 0; i < N_COMPRESSED; i++) msgs.push({ value: payload(codec, i), partition: i % 3 });
    await produce(topic, msgs, { compression: codec, lingerMs: 50 });
    step('read back', 30);
    const vals = (await readAll(topic, N_COMPRESSED)).map((m) => str(m.value)).sort();
    check(JSON.stringify(vals) === JSON.stringify(msgs.map((m) => m.value).sort()), 'values read back differ');
  };
}
for (const codec of ['gzip', 'snappy', 'lz4', 'zstd']) scenarios[`compression_${codec}`] = compression(codec);

async function main() {
  if (!scenario || !bootstrap || !prefix || !['kafkajs', 'confluent'].includes(flavour)) {
    process.stderr.write('usage: node compat.js kafkajs|confluent SCENARIO BOOTSTRAP PREFIX\n');
    process.exit(2);
  }
  const fn = scenarios[scenario];
  try {
    if (!fn) throw new Fail(`unknown scenario ${scenario}`);
    C = flavour === 'kafkajs' ? kafkajsClient() : confluentClient();
    await fn();
    emit('pass', '');
  } catch (e) {
    if (e instanceof NotApplicable) emit('na', e.message);
    else {
      process.stderr.write(`${e && e.stack}\n`);
      const msg = shortErr(e);
      emit('fail', `${current}: ${msg}${lastClientError && !msg.includes(lastClientError) ? hint() : ''}`);
    }
  }
  process.exit(0);
}

process.on('unhandledRejection', (e) => noteClientError(`unhandled rejection: ${shortErr(e)}`));
main();
