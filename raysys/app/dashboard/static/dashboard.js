// The raysys dashboard: reads the JSON routes, draws tables and the drift chart, runs admin actions.
"use strict";
const BASE = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
const KEY = "raysys.dashboard.key";
const $ = (id) => document.getElementById(id);

async function call(path, body) {
  const headers = {"accept": "application/json"};
  const key = sessionStorage.getItem(KEY);
  if (key) headers["authorization"] = "Bearer " + key;
  const init = body === undefined ? {headers} : {method: "POST", body: JSON.stringify(body),
    headers: {...headers, "content-type": "application/json"}};
  const response = await fetch(BASE + path, init);
  const data = await response.json().catch(() => ({error: response.statusText}));
  return {ok: response.ok, status: response.status, data};
}

function cell(row, value) {
  const td = row.insertCell();
  td.textContent = value === null || value === undefined ? "–" : String(value);
  return td;
}

function fill(id, rows, columns) {
  const body = $(id).tBodies[0];
  body.replaceChildren();
  for (const item of rows) {
    const row = body.insertRow();
    for (const column of columns) cell(row, column(item));
  }
}

const num = (v, digits = 3) => (typeof v === "number" ? v.toFixed(digits) : v);
const pairs = (obj) => Object.entries(obj || {}).map(([k, v]) => `${k} ${num(v)}`).join(", ");

function showSummary(s) {
  $("app").textContent = `${s.app} · model ${s.model}`;
  $("champion").textContent = s.plan ? `v${s.plan.champion}` : "nothing deployed";
  fill("traffic", s.traffic, [(t) => `v${t.version}`, (t) => t.role,
    (t) => (t.percent === null ? "copy of all requests" : `${t.percent}%${t.sticky ? " sticky" : ""}`)]);
  fill("versions", s.versions, [(v) => `v${v.version}`, (v) => v.aliases.join(", "), (v) => v.serving,
    (v) => v.lineage.dataset_version, (v) => v.lineage.run_id, (v) => pairs(v.metrics),
    (v) => v.deployments.map((d) => `${d.at.slice(0, 19)} ${d.action} (${d.role}, ${d.actor})`).join("; ")]);
  fill("live", s.live, [(l) => `v${l.version}`, (l) => l.window, (l) => l.records, (l) => l.labelled,
    (l) => pairs(l.quality), (l) => `${num(l.latency_ms.p50, 1)} / ${num(l.latency_ms.p99, 1)}`]);
  fill("incidents", s.open_incidents, [(i) => i.id, (i) => i.rule, (i) => i.severity, (i) => i.first_seen,
    (i) => i.last_seen]);
}

function showAudit(a) {
  fill("audit", a.events, [(e) => e.at.slice(0, 19), (e) => e.action, (e) => e.actor, (e) => e.reason]);
}

// The drift chart: one line per feature, p-value (log scale, 1 … 1e-6) against the window number.
const SVG = "http://www.w3.org/2000/svg";
function svg(parent, tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  parent.appendChild(node);
  return node;
}

function showDrift(d) {
  const chart = $("drift-chart"), legend = $("drift-legend");
  chart.replaceChildren();
  legend.replaceChildren();
  const W = 720, H = 260, L = 48, R = 10, T = 10, B = 28, FLOOR = -6;
  const names = Object.keys(d.features);
  const seqs = names.flatMap((n) => d.features[n].map((p) => p.seq));
  if (!seqs.length) {
    svg(chart, "text", {x: L, y: H / 2}, "no drift tests yet (the monitor writes one per window)");
    return;
  }
  const lo = Math.min(...seqs), hi = Math.max(...seqs);
  const x = (seq) => L + (hi === lo ? 0.5 : (seq - lo) / (hi - lo)) * (W - L - R);
  const y = (p) => T + (-Math.max(Math.log10(Math.max(p, 1e-12)), FLOOR) / -FLOOR) * (H - T - B);
  svg(chart, "line", {x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis"});
  svg(chart, "line", {x1: L, y1: T, x2: L, y2: H - B, class: "axis"});
  for (let e = 0; e >= FLOOR; e -= 2) svg(chart, "text", {x: 4, y: y(10 ** e) + 3}, `1e${e}`);
  svg(chart, "text", {x: L, y: H - 8}, `window ${lo}`);
  svg(chart, "text", {x: W - R - 70, y: H - 8}, `window ${hi}`);
  if (typeof d.threshold === "number") {
    svg(chart, "line", {x1: L, y1: y(d.threshold), x2: W - R, y2: y(d.threshold), class: "threshold"});
  }
  names.forEach((name, i) => {
    const color = `hsl(${Math.round((i * 360) / names.length)}, 65%, 42%)`;
    const points = d.features[name];
    svg(chart, "polyline", {points: points.map((p) => `${x(p.seq)},${y(p.p_value)}`).join(" "),
      fill: "none", stroke: color, "stroke-width": 1.2, "data-feature": name});
    for (const p of points) {
      const dot = svg(chart, "circle", {cx: x(p.seq), cy: y(p.p_value), r: p.drifted ? 3.5 : 2, fill: color,
        class: "point"});
      svg(dot, "title", {}, `${name}, window ${p.seq}: p = ${p.p_value.toPrecision(3)}`);
    }
    const item = document.createElement("li");
    item.style.color = color;
    item.textContent = name;
    legend.appendChild(item);
  });
}

function setStatus(id, text, ok) {
  const node = $(id);
  node.textContent = text;
  node.className = ok ? "ok" : "error";
}

async function load() {
  const [summary, drift, audit] = await Promise.all(
    [call("v1/dashboard/summary"), call("v1/dashboard/drift"), call("v1/dashboard/audit")]);
  const failed = [summary, drift, audit].find((r) => !r.ok);
  if (failed) {
    setStatus("status", `${failed.status}: ${failed.data.error}`, false);
    return;
  }
  showSummary(summary.data);
  showDrift(drift.data);
  showAudit(audit.data);
  setStatus("status", `updated ${new Date().toLocaleTimeString()}`, true);
}

async function act(name) {
  const body = {};
  const version = $("version").value.trim(), reason = $("reason").value.trim();
  if (version && name !== "retrain") body[name === "rollback" ? "to" : "version"] = version;
  if (reason) body.reason = reason;
  setStatus("action-result", `${name}…`, true);
  const result = await call(`v1/admin/${name}`, body);
  if (!result.ok) {
    setStatus("action-result", `${name} refused: ${result.status} ${result.data.error}`, false);
    return;
  }
  const plan = result.data.plan;
  setStatus("action-result", `${name} done: ${result.status}` + (plan ? `, champion v${plan.champion}` : ""), true);
  await load();
}

$("key").value = sessionStorage.getItem(KEY) || "";
$("key").addEventListener("change", () => {
  const key = $("key").value.trim();
  if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
  load();
});
$("refresh").addEventListener("click", load);
for (const button of document.querySelectorAll("[data-action]")) {
  button.addEventListener("click", () => act(button.dataset.action));
}
load();
