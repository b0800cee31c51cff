// kwire web console: reads /api/* every few seconds and draws the tables and the lag
// charts (inline SVG). Hand-written, no dependencies, no build step.
"use strict";

const REFRESH_MS = 3000;
const SVG_NS = "http://www.w3.org/2000/svg";
const CHART = { width: 260, height: 56, pad: 4 };

let selectedTopic = null;

async function api(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) {
    throw new Error(body.error || `${path}: HTTP ${response.status}`);
  }
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

function formatBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

function formatDuration(ms) {
  const seconds = Math.round(ms / 1000);
  if (seconds < 120) return `${seconds} s`;
  return `${Math.round(seconds / 60)} min`;
}

function unique(values) {
  return [...new Set(values)].sort((a, b) => a - b);
}

// ---- cluster ---------------------------------------------------------------------------

function renderCluster(cluster) {
  const node = document.getElementById("cluster");
  node.textContent =
    `cluster ${cluster.cluster_id} · broker ${cluster.broker_id} · ` +
    `controller ${cluster.controller_id} · ${cluster.brokers.length} broker(s)`;
  node.dataset.clusterId = cluster.cluster_id;
}

// ---- topics ----------------------------------------------------------------------------

function renderTopics(topics) {
  const body = document.querySelector("#topics tbody");
  // Internal topics (__consumer_offsets, ...) after the users' own.
  const sorted = [...topics].sort((a, b) => a.internal - b.internal || a.name.localeCompare(b.name));
  const rows = sorted.map((topic) => {
    const leaders = unique(topic.partitions.map((p) => p.leader));
    // A partition is under-replicated when its ISR is smaller than its replica set.
    const under = topic.partitions.filter((p) => p.isr.length < p.replicas.length);
    const inSync = topic.partitions.length - under.length;
    const isrText =
      `${inSync}/${topic.partitions.length} in sync` +
      (under.length ? `; under-replicated: ${under.map((p) => `${p.partition} [${p.isr.join(",")}]`).join(" ")}` : "");
    const isrDetail = topic.partitions.map((p) => `${p.partition}: replicas [${p.replicas}] isr [${p.isr}]`);
    const row = el(
      "tr",
      { "data-topic": topic.name, class: topic.internal ? "internal" : "" },
      el("td", { "data-field": "name" }, topic.name),
      el("td", { class: "num", "data-field": "partitions" }, topic.partitions.length),
      el("td", { class: "num", "data-field": "messages" }, topic.messages),
      el("td", { class: "num", "data-field": "size", "data-bytes": topic.size_bytes }, formatBytes(topic.size_bytes)),
      el("td", { "data-field": "leaders" }, leaders.join(", ")),
      el("td", { "data-field": "isr", "data-under-replicated": under.length, title: isrDetail.join("\n") }, isrText),
    );
    if (topic.name === selectedTopic) row.classList.add("selected");
    row.addEventListener("click", () => {
      location.hash = `topic=${encodeURIComponent(topic.name)}`;
    });
    return row;
  });
  body.replaceChildren(...rows);
}

// ---- messages --------------------------------------------------------------------------

function encodedCell(field, text, encoding) {
  if (text === null) return el("td", { "data-field": field, class: "encoded" }, "null");
  const cell = el("td", { "data-field": field, "data-encoding": encoding }, text);
  if (encoding !== "utf-8") {
    cell.classList.add("encoded");
    cell.title = encoding;
  }
  return cell;
}

async function loadMessages() {
  const section = document.getElementById("messages-section");
  if (selectedTopic === null) {
    section.hidden = true;
    return;
  }
  const answer = await api(`/api/topics/${encodeURIComponent(selectedTopic)}/messages?limit=20`);
  document.getElementById("messages-topic").textContent = answer.topic;
  section.dataset.messagesTopic = answer.topic;
  const rows = answer.messages.map((m) =>
    el(
      "tr",
      { "data-partition": m.partition, "data-offset": m.offset },
      el("td", { class: "num" }, m.partition),
      el("td", { class: "num" }, m.offset),
      el("td", {}, new Date(m.timestamp).toISOString()),
      encodedCell("key", m.key, m.key_encoding),
      encodedCell("value", m.value, m.value_encoding),
      el("td", {}, m.headers.map((h) => `${h.key}=${h.value}`).join(" ")),
    ),
  );
  document.querySelector("#messages tbody").replaceChildren(...rows);
  section.hidden = false;
}

function topicFromHash() {
  const match = /^#topic=(.+)$/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}

// ---- groups and their lag charts --------------------------------------------------------

function lagChart(groupId, history) {
  const { width, height, pad } = CHART;
  const chart = svg("svg", {
    class: "lag-chart",
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    "data-lag-chart": groupId,
    "data-points": history.samples.length,
  });
  chart.append(svg("line", { class: "axis", x1: pad, y1: height - pad, x2: width - pad, y2: height - pad }));
  const samples = history.samples;
  if (samples.length === 0) return chart;
  const end = samples[samples.length - 1].time_ms;
  // The last hour, or less while the broker has sampled for less than an hour.
  const start = Math.max(end - history.window_ms, samples[0].time_ms);
  const span = Math.max(end - start, 1);
  const maxLag = Math.max(1, ...samples.map((s) => s.total_lag));
  const x = (t) => pad + ((t - start) / span) * (width - 2 * pad);
  const y = (lag) => height - pad - (lag / maxLag) * (height - 2 * pad - 10);
  const points = samples.map((s) => `${x(s.time_ms).toFixed(1)},${y(s.total_lag).toFixed(1)}`);
  chart.append(svg("polyline", { class: "line", points: points.join(" ") }));
  for (const s of samples) {
    const point = svg("circle", { class: "point", cx: x(s.time_ms).toFixed(1), cy: y(s.total_lag).toFixed(1), r: 1.8 });
    point.dataset.lag = s.total_lag;
    point.append(svg("title"));
    point.lastChild.textContent = `${new Date(s.time_ms).toLocaleTimeString()}: lag ${s.total_lag}`;
    chart.append(point);
  }
  const label = svg("text", { x: pad, y: 10 });
  label.textContent = `max ${maxLag}`;
  const since = svg("text", { x: width - pad, y: 10, "text-anchor": "end" });
  since.textContent = `last ${formatDuration(end - start)}`;
  chart.append(label, since);
  return chart;
}

async function renderGroups(groups) {
  const histories = await Promise.all(
    groups.map((g) =>
      api(`/api/groups/${encodeURIComponent(g.group_id)}/lag-history`).catch(() => ({ samples: [], window_ms: 3600000 })),
    ),
  );
  const body = document.querySelector("#groups tbody");
  const rows = groups.map((group, i) => {
    const members = group.members.map((m) => {
      const assigned = m.assignment.map((a) => `${a.topic} [${a.partitions.join(",")}]`).join(" ");
      return `${m.client_id} ${m.client_host}${assigned ? ": " + assigned : ""}`;
    });
    return el(
      "tr",
      { "data-group": group.group_id, "data-state": group.state, "data-lag": group.total_lag },
      el("td", { "data-field": "group" }, group.group_id),
      el("td", { "data-field": "state" }, group.state),
      el("td", { class: "num", "data-field": "members", "data-count": group.members.length }, group.members.length),
      el("td", { "data-field": "clients" }, ...members.map((m) => el("div", {}, m))),
      el("td", { class: "num", "data-field": "partitions" }, group.offsets.length),
      el("td", { class: group.total_lag > 0 ? "num lag-positive" : "num", "data-field": "lag" }, group.total_lag),
      el("td", {}, lagChart(group.group_id, histories[i])),
    );
  });
  body.replaceChildren(...rows);
}

// ---- the refresh loop ------------------------------------------------------------------

async function refresh() {
  const status = document.getElementById("status");
  try {
    const [cluster, topics, groups] = await Promise.all([api("/api/cluster"), api("/api/topics"), api("/api/groups")]);
    renderCluster(cluster);
    renderTopics(topics.topics);
    await renderGroups(groups.groups);
    await loadMessages();
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    status.classList.remove("error");
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  } catch (error) {
    status.textContent = `error: ${error.message}`;
    status.classList.add("error");
  }
}

window.addEventListener("hashchange", () => {
  selectedTopic = topicFromHash();
  refresh();
});
document.getElementById("messages-close").addEventListener("click", () => {
  history.replaceState(null, "", location.pathname);
  selectedTopic = null;
  refresh();
});

selectedTopic = topicFromHash();
refresh();
setInterval(refresh, REFRESH_MS);
