// Eddy dashboard: polls /api every 2 s and draws each pipeline's last hour on canvases (no libraries, no CDN).
"use strict";

const token = new URLSearchParams(location.search).get("token");
const COLORS = ["#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#4e342e", "#827717",
                "#283593", "#00695c", "#bf360c", "#37474f"];

async function api(path) {
  const url = token ? `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : path;
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

// Positions (in labelled predictions) where drift alarms fell, mapped to the times of the points that saw them.
function alarmTimes(points) {
  const times = [];
  for (let i = 1; i < points.length; i++) {
    if (points[i].drifts > points[i - 1].drifts) times.push(points[i].t);
  }
  if (points.length && points[0].drifts > 0 && points.length === 1) times.push(points[0].t);
  return times;
}

function draw(canvas, points, series, alarms) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  const values = series.flatMap((s) => points.map(s.value).filter((v) => v !== null && isFinite(v)));
  if (points.length < 2 || !values.length) {  // say so rather than leave a blank chart
    ctx.fillStyle = "#99a";
    ctx.font = "12px system-ui";
    ctx.fillText("no data yet", width / 2 - 30, height / 2);
    return;
  }
  const t0 = points[0].t, t1 = points[points.length - 1].t;
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi === lo) { hi += 1; lo -= lo > 0 ? Math.min(1, lo) : 1; }
  const x = (t) => 30 + ((t - t0) / Math.max(1e-9, t1 - t0)) * (width - 36);
  const y = (v) => height - 14 - ((v - lo) / (hi - lo)) * (height - 24);
  ctx.fillStyle = "#778";
  ctx.font = "10px system-ui";
  ctx.fillText(hi.toPrecision(3), 2, 10);
  ctx.fillText(lo.toPrecision(3), 2, height - 4);
  ctx.strokeStyle = "#c62828";
  ctx.setLineDash([4, 3]);
  for (const t of alarms) { ctx.beginPath(); ctx.moveTo(x(t), 0); ctx.lineTo(x(t), height); ctx.stroke(); }
  ctx.setLineDash([]);
  series.forEach((s, k) => {
    ctx.strokeStyle = s.color || COLORS[k % COLORS.length];
    ctx.beginPath();
    let started = false;
    for (const p of points) {
      const v = s.value(p);
      if (v === null || !isFinite(v)) continue;
      if (started) ctx.lineTo(x(p.t), y(v)); else { ctx.moveTo(x(p.t), y(v)); started = true; }
    }
    ctx.stroke();
  });
}

function section(name) {
  let node = document.getElementById(`pipeline-${name}`);
  if (node) return node;
  node = document.createElement("section");
  node.className = "pipeline";
  node.id = `pipeline-${name}`;
  node.innerHTML = `<h2>${name}</h2><div class="facts"></div><div class="charts"><div class="families"></div>
    <figure><canvas data-chart="rate"></canvas><figcaption>events/s</figcaption></figure>
    <figure><canvas data-chart="lag"></canvas><figcaption>consumer lag</figcaption></figure>
    <figure><canvas data-chart="p99"></canvas><figcaption>p99 event-to-output latency (ms)</figcaption></figure>
  </div>`;
  document.getElementById("pipelines").appendChild(node);
  return node;
}

// Scores grouped by the first word of their names, one chart each (first in the grid): "session_live_seconds" and
// "session_app_floor_seconds" share the "session" chart, "auc" has its own.
function families(scores) {
  const groups = {};
  for (const key of Object.keys(scores)) (groups[key.split("_")[0]] ||= []).push(key);
  return groups;
}

function familyCharts(node, groups) {
  const holder = node.querySelector(".families");
  for (const [family, keys] of Object.entries(groups)) {
    let canvas = holder.querySelector(`canvas[data-family="${family}"]`);
    if (!canvas) {
      const figure = document.createElement("figure");
      figure.innerHTML = `<canvas data-family="${family}"></canvas><figcaption></figcaption>`;
      holder.appendChild(figure);
      canvas = figure.querySelector("canvas");
    }
    canvas.nextElementSibling.innerHTML = keys
      .map((key, k) => `<span style="color:${COLORS[k % COLORS.length]}">${key.replaceAll("_", " ")}</span>`)
      .join(" · ");
  }
}

function render(name, points) {
  const node = section(name);
  const last = points[points.length - 1] || {};
  const scores = last.scores || {};
  const metric = Object.keys(scores)[0];
  const alarms = alarmTimes(points);
  const versions = [...new Set(points.map((p) => p.model_version).filter((v) => v))];
  // where the last alarms fell, counted in labelled predictions (the monitor's positions)
  const positions = (last.alarms || []).slice(-5);
  const where = positions.length ? ` at #${positions.map((n) => n.toLocaleString()).join(", #")}` : "";
  node.querySelector(".facts").innerHTML =
    `<b>${(last.events_in || 0).toLocaleString()}</b> events · ${metric ? `${metric} <b>${scores[metric].toFixed(3)}</b> · ` : ""}` +
    `<span class="${last.drifts ? "alarm" : ""}" data-drift-alarms="${last.drifts || 0}" ` +
    `data-alarm-positions="${positions.join(",")}">${last.drifts || 0} drift alarms${where}</span> · ` +
    `lag <b>${last.lag ?? 0}</b> · model versions <b data-versions>${versions.join(", ") || "none"}</b> · ` +
    `dead letters <b>${last.dead_letters || 0}</b> · <span class="legend">dashed red lines: drift alarms</span>`;
  const chart = (kind) => node.querySelector(`canvas[data-chart="${kind}"]`);
  const experts = Object.keys(last.expert_shares || {});
  if (experts.length && !chart("shares")) {  // mixtures of experts only
    const figure = document.createElement("figure");
    figure.innerHTML = `<canvas data-chart="shares"></canvas><figcaption>expert shares</figcaption>`;
    node.querySelector(".families").after(figure);
  }
  if (experts.length) {
    draw(chart("shares"), points, experts.map((e) => ({ value: (p) => (p.expert_shares || {})[e] ?? null })), alarms);
  }
  draw(chart("rate"), points, [{ value: (p) => p.rate }], alarms);
  draw(chart("lag"), points, [{ value: (p) => p.lag }], alarms);
  draw(chart("p99"), points, [{ value: (p) => p.p99_ms }], alarms);
  const groups = families(scores);
  familyCharts(node, groups);
  for (const [family, keys] of Object.entries(groups)) {
    const canvas = node.querySelector(`canvas[data-family="${family}"]`);
    draw(canvas, points, keys.map((key) => ({ value: (p) => (p.scores || {})[key] ?? null })), alarms);
  }
}

async function refresh() {
  try {
    const { pipelines } = await api("api/pipelines");
    if (pipelines.length) document.querySelector(".empty")?.remove();
    for (const name of pipelines) {
      const { points } = await api(`api/series/${encodeURIComponent(name)}`);
      render(name, points);
    }
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    document.getElementById("updated").textContent = `cannot reach the dashboard API (${error.message}); retrying`;
  }
}

refresh();
setInterval(refresh, 2000);
