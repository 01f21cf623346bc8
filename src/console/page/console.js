// The Runnel console: reads the server through /api/sql (sys.* and information_schema)
// and /api/history (the last hour of the plotted series), every two seconds.
"use strict";

const REFRESH_MS = 2000;
const HOUR_MS = 3600 * 1000;
/** The plots' span, as the selector in the header sets it. */
let spanMs = HOUR_MS;
const COLORS = ["#2563eb", "#d97706", "#059669", "#9333ea"];

const $ = (id) => document.getElementById(id);

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

/** Runs one read-only statement; its rows as objects keyed by column. */
async function sql(text) {
  const response = await fetch("api/sql", { method: "POST", body: text });
  const body = await response.json();
  if (!response.ok) {
    throw new Error(`${body.error} (SQLSTATE ${body.code})`);
  }
  return body;
}

function records(result) {
  return (result.rows || []).map((row) =>
    Object.fromEntries(result.columns.map((c, i) => [c, row[i]])));
}

/** 1234567 → "1.2 M", for facts and axes. */
function short(value, unit = "") {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const v = Number(value);
  const abs = Math.abs(v);
  const [div, suffix] = abs >= 1e9 ? [1e9, " G"] : abs >= 1e6 ? [1e6, " M"] : abs >= 1e4 ? [1e3, " k"] : [1, ""];
  const digits = div === 1 && abs < 10 && v % 1 !== 0 ? 2 : div === 1 ? 0 : 1;
  return (v / div).toFixed(digits) + suffix + unit;
}

function bytes(value) {
  if (value === null || value === undefined) return "–";
  const v = Number(value);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let n = v;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/**
 * Draws `series` ({label, values}) against `times` (ms) over the last `spanMs` on `canvas`,
 * from 0 to a little above the greatest value. The canvas keeps what it shows in data
 * attributes: how many points, and the latest value of the first series.
 */
function plot(canvas, times, series, unit) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 360;
  const height = canvas.clientHeight || 120;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const left = 52, right = 8, top = 8, bottom = 18;
  const now = times.length ? Math.max(Date.now(), times[times.length - 1]) : Date.now();
  const from = now - spanMs;
  let max = 0;
  for (const s of series) {
    s.values.forEach((v, j) => { if (v !== null && times[j] >= from && v > max) max = v; });
  }
  max = max > 0 ? max * 1.15 : 1;
  const x = (t) => left + ((t - from) / spanMs) * (width - left - right);
  const y = (v) => top + (1 - v / max) * (height - top - bottom);
  g.strokeStyle = "#e3e6ec";
  g.fillStyle = "#667085";
  g.font = "10px system-ui, sans-serif";
  g.lineWidth = 1;
  for (const f of [0, 0.5, 1]) {
    const v = max * f;
    g.beginPath();
    g.moveTo(left, y(v) + 0.5);
    g.lineTo(width - right, y(v) + 0.5);
    g.stroke();
    g.textAlign = "right";
    g.fillText(short(v, unit), left - 4, y(v) + 3);
  }
  g.textAlign = "center";
  const spanMinutes = spanMs / 60000;
  for (const minutes of [1, 0.75, 0.5, 0.25, 0].map((f) => f * spanMinutes)) {
    const t = now - minutes * 60000;
    g.fillText(minutes === 0 ? "now" : `-${minutes} min`, Math.min(Math.max(x(t), left + 16), width - right - 12), height - 4);
  }
  let points = 0;
  series.forEach((s, i) => {
    g.strokeStyle = COLORS[i % COLORS.length];
    g.lineWidth = 1.5;
    g.beginPath();
    let drawing = false;
    s.values.forEach((v, j) => {
      if (v === null || times[j] < from) { drawing = false; return; }
      if (i === 0) points += 1;
      if (drawing) g.lineTo(x(times[j]), y(v)); else g.moveTo(x(times[j]), y(v));
      drawing = true;
    });
    g.stroke();
  });
  const first = series.length ? series[0].values.filter((v, j) => v !== null && times[j] >= from) : [];
  canvas.dataset.points = String(points);
  canvas.dataset.last = first.length ? String(first[first.length - 1]) : "";
  canvas.dataset.max = String(first.length ? Math.max(...first) : 0);
}

function legend(labels) {
  return `<div class="legend">${labels.map((l, i) =>
    `<span><i style="background:${COLORS[i % COLORS.length]}"></i>${escape(l)}</span>`).join("")}</div>`;
}

function facts(pairs) {
  return `<div class="facts">${pairs.map(([k, v]) => `<span>${escape(k)} <b>${escape(v)}</b></span>`).join("")}</div>`;
}

/** Fills `container` with one card per item, each from `card(item)`, then plots them. */
function cards(container, items, card, empty) {
  if (!items.length) {
    container.innerHTML = `<p class="empty">${escape(empty)}</p>`;
    return;
  }
  const plots = [];
  container.innerHTML = items.map((item) => {
    const c = card(item);
    plots.push(...c.plots);
    return `<div class="card" data-name="${escape(c.name)}">${c.html}</div>`;
  }).join("");
  for (const p of plots) {
    const canvas = container.querySelector(`canvas[data-plot="${CSS.escape(p.id)}"]`);
    if (canvas) plot(canvas, p.times, p.series, p.unit);
  }
}

function canvasFor(id, labels) {
  return `${legend(labels)}<canvas class="plot" data-plot="${escape(id)}"></canvas>`;
}

function renderStreams(topics, columns, history) {
  const streams = topics.filter((t) => t.stream !== null);
  cards($("stream-cards"), streams, (t) => {
    const schema = columns.filter((c) => c.table_name === t.stream)
      .map((c) => `${c.column_name} ${c.data_type}`).join(", ");
    const series = (history.topics[t.topic] || {}).records_in_per_sec || [];
    const id = `stream:${t.stream}`;
    return {
      name: t.stream,
      html: `<h3>${escape(t.stream)} <span class="tag">${t.cleanup_policy === "compact" ? "table" : "stream"}</span></h3>`
        + `<div class="schema">${escape(schema)}</div>`
        + facts([["partitions", t.partitions], ["records", short(t.records)], ["size", bytes(t.bytes)],
          ["retention", t.retention_ms ? `${short(t.retention_ms / 1000)} s` : t.retention_bytes ? bytes(t.retention_bytes) : "forever"]])
        + canvasFor(id, ["records in / s"]),
      plots: [{ id, times: history.times, series: [{ values: series }], unit: "/s" }],
    };
  }, "No streams yet: CREATE STREAM over psql, or produce to a topic with a Kafka client.");
}

function renderQueries(queries, history) {
  cards($("query-cards"), queries, (q) => {
    const h = history.queries[q.name] || {};
    const through = `query:${q.name}:throughput`;
    const latency = `query:${q.name}:latency`;
    return {
      name: q.name,
      html: `<h3>${escape(q.name)} <span class="tag">${escape(q.kind)} → ${escape(q.target)}</span></h3>`
        + facts([["state", q.state], ["epoch", q.epoch], ["lag", `${short(q.lag)} records`],
          ["behind", `${Number(q.lag_secs).toFixed(1)} s`], ["rate", `${short(q.rows_per_sec)} rows/s`],
          ["catch-up", q.catch_up_secs === null ? "–" : `${Number(q.catch_up_secs).toFixed(0)} s`],
          ["watermark", q.watermark || "–"], ["state", bytes(q.state_bytes)]])
        + (q.error ? `<div class="error">${escape(q.error)}</div>` : "")
        + canvasFor(through, ["rows in / s", "rows out / s"])
        + canvasFor(latency, ["behind (s)", "mean epoch (s)"]),
      plots: [
        { id: through, times: history.times, unit: "/s",
          series: [{ values: h.rows_in_per_sec || [] }, { values: h.rows_out_per_sec || [] }] },
        { id: latency, times: history.times, unit: " s",
          series: [{ values: h.lag_secs || [] }, { values: (h.epoch_ms || []).map((v) => v === null ? null : v / 1000) }] },
      ],
    };
  }, "No continuous queries yet: CREATE MATERIALIZED VIEW or CREATE STREAM … AS SELECT.");
}

function renderGroups(groups, history) {
  const byName = new Map();
  for (const g of groups) {
    if (!byName.has(g.group)) byName.set(g.group, []);
    byName.get(g.group).push(g);
  }
  cards($("group-cards"), [...byName.entries()], ([name, partitions]) => {
    const id = `group:${name}`;
    const lag = partitions.reduce((sum, p) => sum + Number(p.lag || 0), 0);
    const streams = [...new Set(partitions.map((p) => p.stream))].join(", ");
    return {
      name,
      html: `<h3>${escape(name)} <span class="tag">${escape(streams)}</span></h3>`
        + facts([["partitions", partitions.length], ["lag", `${short(lag)} records`],
          ["reading", partitions.some((p) => p.reading === "true") ? "yes" : "no"]])
        + canvasFor(id, ["records behind"]),
      plots: [{ id, times: history.times, unit: "", series: [{ values: (history.groups[name] || {}).lag_records || [] }] }],
    };
  }, "No consumer groups yet: CREATE SUBSCRIPTION, or a Kafka consumer with a group.id.");
}

function table(result, numeric = () => false) {
  if (!result.columns.length) return `<p class="sql-note">${escape(result.command || "done")}</p>`;
  const head = result.columns.map((c) => `<th>${escape(c)}</th>`).join("");
  const body = result.rows.map((row) => `<tr>${row.map((v, i) => v === null
    ? '<td class="null">NULL</td>'
    : `<td class="${numeric(result.columns[i], v) ? "num" : ""}">${escape(v)}</td>`).join("")}</tr>`).join("");
  return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

const isNumber = (_, v) => /^-?\d+(\.\d+)?(e[+-]?\d+)?$/i.test(v);

async function refresh() {
  try {
    const [topics, columns, queries, groups, partitions, copies, history] = await Promise.all([
      sql("SELECT * FROM sys.topics ORDER BY topic"),
      sql("SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"),
      sql("SELECT * FROM sys.queries ORDER BY name"),
      sql("SELECT * FROM sys.consumer_groups ORDER BY \"group\", stream, partition"),
      sql("SELECT topic, partition, log_start_offset, high_watermark, records, bytes, segments, held_from, held_by FROM sys.partitions ORDER BY topic, partition"),
      sql("SELECT * FROM sys.copies"),
      fetch("api/history").then((r) => {
        if (!r.ok) throw new Error(`history: HTTP ${r.status}`);
        return r.json();
      }),
    ]);
    renderStreams(records(topics), records(columns), history);
    renderQueries(records(queries), history);
    renderGroups(records(groups), history);
    $("topic-table").innerHTML = table(partitions, isNumber);
    $("copies").innerHTML = copies.rows.length
      ? `<h3>COPY in progress</h3><div class="scroll">${table(copies, isNumber)}</div>` : "";
    const status = $("status");
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    status.className = "status";
  } catch (e) {
    const status = $("status");
    status.textContent = `not updated: ${e.message}`;
    status.className = "status bad";
  }
}

async function runSql(event) {
  event.preventDefault();
  const out = $("sql-result");
  out.innerHTML = '<p class="sql-note">running…</p>';
  try {
    const result = await sql($("sql-text").value);
    out.innerHTML = table(result, isNumber)
      + (result.truncated ? '<p class="sql-note">The first 1,000 rows.</p>' : "");
  } catch (e) {
    out.innerHTML = `<div class="sql-error">${escape(e.message)}</div>`;
  }
}

$("span").addEventListener("change", (e) => {
  spanMs = Number(e.target.value) * 60000;
  refresh();
});
$("sql-form").addEventListener("submit", runSql);
$("sql-text").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) runSql(e);
});
refresh();
setInterval(refresh, REFRESH_MS);
