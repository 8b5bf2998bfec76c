// edgeloop Pipelines page: the list, the 5-step wizard and the spec editor.
// Plain JS, no build. Everything the server sends is shown with textContent, never as HTML.
"use strict";

const ROOT = (document.querySelector('meta[name="airflow-root"]') || {}).content || "";
const STATES = ["success", "failed", "running", "queued", "up_for_retry"];
const $ = (id) => document.getElementById(id);

const state = {
  session: { user: "", can_edit: false },
  templates: [],
  presets: [],
  pipelines: [],
  step: 1,
  mode: "create", // or "edit"
  template: null,
  topics: [],
  proposal: null,
  groups: [], // {name, devices, use}
  preset: "standard",
  text: "",
  valid: false,
  editName: null,
  editVersion: null,
  created: null,
  poller: null,
  deleteArmed: false,
  charts: { name: null, hours: 6 }, // the pipeline whose charts are open
};

// --- helpers -------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

function errorText(body, status) {
  if (body && typeof body.message === "string") return body.message;
  if (body && typeof body.detail === "string") return body.detail;
  return `HTTP ${status}`;
}

async function api(path, options = {}) {
  const init = { credentials: "same-origin", headers: { Accept: "application/json" }, ...options };
  if (options.json !== undefined) {
    init.body = JSON.stringify(options.json);
    init.headers["Content-Type"] = "application/json";
    delete init.json;
  }
  const response = await fetch(path, init);
  let body = null;
  if (response.status !== 204) {
    try { body = await response.json(); } catch (_) { body = null; }
  }
  if (!response.ok) {
    const error = new Error(errorText(body, response.status));
    error.status = response.status;
    error.body = body;
    throw error;
  }
  return body;
}

function notice(message, kind = "info") {
  const box = $("notice");
  box.textContent = message;
  box.className = `notice ${kind}`;
  box.hidden = !message;
}

function airflowUrl(path) {
  return `${ROOT}${path}`;
}

// Open an Airflow UI page in the main window: the page lives in the UI's iframe, whose
// router follows history changes of the top window (same origin).
function openInAirflow(event, path) {
  try {
    if (window.top !== window && window.top.location.origin === window.location.origin) {
      event.preventDefault();
      window.top.history.pushState({}, "", airflowUrl(path));
      window.top.dispatchEvent(new PopStateEvent("popstate", { state: {} }));
    }
  } catch (_) {
    // not allowed: let the link open inside the frame
  }
}

function dagLink(dagId, label, extraClass = "") {
  const path = `/dags/${encodeURIComponent(dagId)}`;
  return el("a", { href: airflowUrl(path), class: extraClass, onclick: (e) => openInAirflow(e, path) }, label);
}

function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return isNaN(date) ? iso : date.toLocaleString();
}

// --- the list ------------------------------------------------------------------------------

async function loadList() {
  let data;
  try {
    data = await api("api/pipelines");
  } catch (error) {
    notice(`Could not load the pipelines: ${error.message}`, "error");
    return;
  }
  state.pipelines = data.pipelines;
  $("list-notes").textContent = data.notes.join(" ");
  renderList();
  loadStatus();
}

function stageChip(stage) {
  if (stage.hidden) return el("span", { class: "stage hidden", title: "no access" }, stage.stage);
  let kind = "missing";
  let title = `${stage.dag_id}: not parsed yet (appears after the next DAG parse)`;
  if (stage.exists) {
    kind = stage.state && STATES.includes(stage.state) ? stage.state : "none";
    title = `${stage.dag_id}: ${stage.state ? `last run ${stage.state} (${when(stage.run_after)})` : "no run yet"}`;
    if (stage.paused) title += ", paused";
  }
  const label = stage.stage.replace("_", " ");
  const chip = stage.exists
    ? dagLink(stage.dag_id, label, `stage ${kind}${stage.paused ? " paused" : ""}`)
    : el("span", { class: `stage ${kind}` }, label);
  chip.title = title;
  return chip;
}

function renderList() {
  const body = clear($("pipelines").tBodies[0]);
  $("empty").hidden = state.pipelines.length > 0;
  if (!state.pipelines.length && state.session.can_edit) {
    $("empty").textContent = "No pipelines yet. Click “New pipeline” to create one from a Kafka topic.";
  }
  for (const p of state.pipelines) {
    const name = el("td", { class: "name" }, el("strong", {}, p.name), el("div", { class: "muted small" }, p.description || ""));
    if (p.valid) {
      const fleet = el("div", { class: "fleet small" });
      name.append(el("button", { type: "button", class: "link small", onclick: (e) => toggleFleet(p, fleet, e.target) }, "Groups and rollout ▸"), fleet);
      name.append(el("button", { type: "button", class: "link small charts-toggle", onclick: (e) => toggleCharts(p.name, e.target) }, "Charts ▸"));
    }
    if (!p.valid) {
      name.append(
        el("div", { class: "error small" }, `${p.file}: not loaded (${p.errors.length} error${p.errors.length === 1 ? "" : "s"})`),
        el("ul", { class: "problems small" }, p.errors.slice(0, 5).map((e) => el("li", {}, el("code", {}, e.location), ` ${e.message}`)))
      );
    }
    const stages = el("td", { class: "stages" }, (p.stages || []).map(stageChip));
    const actions = el("td", { class: "actions" });
    if (state.session.can_edit) {
      actions.append(el("button", { type: "button", onclick: () => openEditor(p.name) }, "Edit"));
      const ingest = (p.stages || []).find((s) => s.stage === "ingest");
      if (ingest && ingest.exists) {
        actions.append(el("button", { type: "button", onclick: (e) => runIngest(p.name, e.target) }, "Run ingestion now"));
      }
    }
    body.append(
      el(
        "tr",
        { "data-pipeline": p.name },
        name,
        stages,
        el("td", { class: "alerts" }, el("span", { class: "muted" }, p.valid ? "…" : "")),
        el("td", { class: "champion" }, el("span", { class: "muted" }, p.valid ? "…" : "")),
        actions
      )
    );
  }
}

async function toggleFleet(p, box, button) {
  if (box.childNodes.length) {
    clear(box);
    button.textContent = "Groups and rollout ▸";
    return;
  }
  button.textContent = "Groups and rollout ▾";
  const canary = new Set(p.canary_groups || []);
  const rows = p.groups.map((g) =>
    el("tr", { "data-group": g.name }, el("td", {}, g.name, canary.has(g.name) ? " (canary)" : ""), el("td", {}, `wave ${g.wave}`), el("td", {}, `${g.devices} devices planned`), el("td", { class: "sync muted" }, "…"))
  );
  box.append(el("table", { class: "grid compact" }, el("tbody", {}, rows)));
  const pause = el("div", { class: "rollout-pause" }, el("span", { class: "muted" }, "rollouts: …"));
  box.append(pause);
  loadPause(p.name, pause);
  try {
    const fleet = await api(`api/pipelines/${encodeURIComponent(p.name)}/fleet`);
    for (const row of box.querySelectorAll("tr[data-group]")) {
      const g = fleet.groups[row.dataset.group];
      const versions = g ? Object.entries(g.reported).map(([v, n]) => `${n}× ${v === "none" ? "no model" : `v${v}`}`).join(", ") : "";
      row.querySelector(".sync").textContent = g && g.devices
        ? `${g.in_sync} of ${g.devices} devices run the model they are asked to run${versions ? ` (${versions})` : ""}`
        : "no device state yet";
    }
  } catch (error) {
    for (const cell of box.querySelectorAll(".sync")) cell.textContent = `fleet state unavailable: ${error.message}`;
  }
}

// The pipeline's rollout pause flag: shown to every reader, changed by users who may edit its DAGs.
async function loadPause(name, box) {
  const path = `api/pipelines/${encodeURIComponent(name)}/rollout-pause`;
  let info;
  try {
    info = await api(path);
  } catch (error) {
    clear(box).append(el("span", { class: "muted" }, `rollout pause state unavailable: ${error.message}`));
    return;
  }
  clear(box);
  const flag = info.flag || {};
  box.append(
    info.paused
      ? el("span", { class: "paused" }, `Rollouts paused by ${flag.by || "?"} (${when(flag.at)}): ${flag.reason || ""}`)
      : el("span", {}, "Rollouts are not paused.")
  );
  if (info.running_rollouts.length) box.append(el("span", { class: "muted" }, ` Running: ${info.running_rollouts.join(", ")}.`));
  if (!info.can_change) return;
  const reason = el("input", { type: "text", maxlength: 500, placeholder: info.paused ? "why resume (optional)" : "why pause (required)", "aria-label": "reason" });
  const button = el("button", { type: "button" }, info.paused ? "Resume rollouts" : "Pause rollouts");
  button.addEventListener("click", async () => {
    if (!info.paused && !reason.value.trim()) {
      notice("Say why the rollouts are paused.", "error");
      return;
    }
    button.disabled = true;
    try {
      await api(path, { method: "POST", json: { paused: !info.paused, reason: reason.value } });
      notice(info.paused ? `Rollouts of ${name} resumed.` : `Rollouts of ${name} paused.`, "ok");
    } catch (error) {
      notice(`Could not ${info.paused ? "resume" : "pause"} the rollouts of ${name}: ${error.message}`, "error");
    }
    loadPause(name, box);
  });
  box.append(" ", reason, " ", button);
}

async function loadStatus() {
  let data;
  try {
    data = await api("api/status");
  } catch (error) {
    for (const cell of document.querySelectorAll("td.alerts, td.champion")) cell.textContent = "?";
    return;
  }
  const problems = Object.values(data.sources).filter((s) => s !== "ok");
  if (problems.length) $("list-notes").textContent = problems.join(" · ");
  for (const row of document.querySelectorAll("#pipelines tbody tr[data-pipeline]")) {
    const info = data.pipelines[row.dataset.pipeline];
    if (!info) continue;
    const alerts = row.querySelector("td.alerts");
    clear(alerts);
    if (!info.alerts) alerts.append(el("span", { class: "muted", title: data.sources.kafka || "" }, "?"));
    else if (!info.alerts.total) alerts.append(el("span", { class: "muted" }, "none"));
    else {
      const kinds = Object.entries(info.alerts.counts).map(([k, n]) => `${n} ${k}`).join(", ");
      const latest = info.alerts.latest;
      alerts.append(el("span", { class: "alert-count", title: latest ? `latest: ${latest.kind} ${latest.group || ""} ${latest.message || ""}` : "" }, kinds));
    }
    const champion = row.querySelector("td.champion");
    clear(champion);
    if (info.champion) champion.append(el("span", { class: "version" }, `v${info.champion}`));
    else champion.append(el("span", { class: "muted", title: data.sources.mlflow || "" }, data.sources.mlflow === "ok" ? "none yet" : "?"));
  }
}

async function runIngest(name, button) {
  const dagId = `${name}__ingest`;
  const out = button && button.nextElementSibling && button.nextElementSibling.classList.contains("run-result")
    ? button.nextElementSibling
    : null;
  if (button) button.disabled = true;
  try {
    // Trigger first, then unpause: the user's run goes first (one active run per DAG), and
    // unpausing does not add a scheduled run in front of it.
    const run = await api(airflowUrl(`/api/v2/dags/${encodeURIComponent(dagId)}/dagRuns`), {
      method: "POST",
      json: { logical_date: null, note: "started from the edgeloop Pipelines page" },
    });
    await api(airflowUrl(`/api/v2/dags/${encodeURIComponent(dagId)}`), { method: "PATCH", json: { is_paused: false } });
    const message = `Ingestion started: ${run.dag_run_id}`;
    if (out) out.textContent = message;
    notice(message, "ok");
    return run;
  } catch (error) {
    notice(`Could not start ${dagId}: ${error.message}`, "error");
    return null;
  } finally {
    if (button) button.disabled = false;
  }
}

// --- charts: Prometheus series of one pipeline, drawn as inline SVG ---------------------------

const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#1a73e8", "#e8710a", "#1e8e3e", "#d01884", "#12b5cb", "#b06000", "#c5221f", "#5f6368"];
const FIXED_COLORS = { _all: "#9334e6", champion: "#80868b" }; // the whole fleet and the registry's champion
const CHART = { width: 560, height: 210, left: 48, right: 14, top: 14, bottom: 26 };
const RANGES = [1, 6, 24, 168];

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) if (child) node.append(child);
  return node;
}

function rangeLabel(hours) {
  return hours % 24 === 0 ? `${hours / 24} d` : `${hours} h`;
}

function stepLabel(seconds) {
  return seconds < 60 ? `${seconds} s` : seconds < 3600 ? `${Math.round(seconds / 60)} min` : `${Math.round(seconds / 3600)} h`;
}

function formatValue(value, unit) {
  if (value === null || value === undefined) return "–";
  if (unit === "ratio") return `${Math.round(value * 1000) / 10}%`;
  if (unit === "version") return `v${Math.round(value)}`;
  return Math.abs(value) >= 100 ? value.toFixed(0) : String(Number(value.toPrecision(3)));
}

// 3-6 round numbers between lo and hi (1, 2 or 5 times a power of ten apart)
function niceTicks(lo, hi, count = 4) {
  const raw = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function timeTicks(start, end) {
  const spans = [300, 900, 1800, 3600, 2 * 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400];
  const span = spans.find((s) => (end - start) / s <= 6) || 86400 * Math.ceil((end - start) / 86400 / 6);
  const offset = new Date(start * 1000).getTimezoneOffset() * 60; // ticks on round local times
  const ticks = [];
  for (let t = Math.ceil((start - offset) / span) * span + offset; t <= end; t += span) ticks.push(t);
  return ticks;
}

function timeLabel(t, rangeSeconds) {
  const date = new Date(t * 1000);
  if (rangeSeconds > 2 * 86400) return date.toLocaleDateString([], { month: "short", day: "numeric" });
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// A group keeps its color on every chart: its place in the spec picks it.
function seriesColor(series, groups, index) {
  const group = (series.labels || {}).group;
  if (group in FIXED_COLORS) return FIXED_COLORS[group];
  const at = groups.indexOf(group);
  return PALETTE[(at >= 0 ? at : index) % PALETTE.length];
}

function yRange(chart) {
  const values = chart.series.flatMap((s) => s.points.map((p) => p[1]));
  if (chart.threshold) values.push(chart.threshold.value);
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (chart.unit === "version") return [Math.floor(lo) - 0.5, Math.ceil(hi) + 0.5];
  if (chart.y_min !== null) lo = Math.min(lo, chart.y_min);
  if (chart.y_max !== null) hi = Math.max(hi, chart.y_max);
  else hi = hi > 0 ? hi * 1.1 : hi + 1;
  if (hi <= lo) hi = lo + 1;
  return [lo, hi];
}

// One SVG line chart; `legend` is the list whose values follow the pointer.
function drawChart(chart, data, legend, groups) {
  const { width, height, left, right, top, bottom } = CHART;
  const [lo, hi] = yRange(chart);
  const x = (t) => left + ((t - data.start) / (data.end - data.start)) * (width - left - right);
  const y = (v) => height - bottom - ((v - lo) / (hi - lo)) * (height - top - bottom);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart-svg", role: "img", "aria-label": chart.title });
  root.append(svg("title", { text: chart.title }));
  const yTicks = chart.unit === "version"
    ? Array.from({ length: Math.round(hi - lo) }, (_, i) => Math.ceil(lo) + i).filter((v, i, all) => all.length <= 6 || i % Math.ceil(all.length / 6) === 0)
    : niceTicks(lo, hi);
  for (const v of yTicks) {
    root.append(svg("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "grid-line" }));
    root.append(svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis-label", text: formatValue(v, chart.unit) }));
  }
  for (const t of timeTicks(data.start, data.end)) {
    root.append(svg("line", { x1: x(t), x2: x(t), y1: height - bottom, y2: height - bottom + 4, class: "axis-line" }));
    root.append(svg("text", { x: x(t), y: height - 8, "text-anchor": "middle", class: "axis-label", text: timeLabel(t, data.end - data.start) }));
  }
  root.append(svg("line", { x1: left, x2: width - right, y1: height - bottom, y2: height - bottom, class: "axis-line" }));
  if (chart.threshold) {
    const ty = y(chart.threshold.value);
    root.append(svg("line", { x1: left, x2: width - right, y1: ty, y2: ty, class: "threshold" }));
    root.append(svg("text", { x: width - right - 2, y: ty - 4, "text-anchor": "end", class: "threshold-label", text: chart.threshold.label }));
  }
  const gap = data.step * 2.5;
  chart.series.forEach((series, i) => {
    const color = seriesColor(series, groups, i);
    let d = "";
    let previous = null;
    for (const [t, v] of series.points) {
      const px = x(t).toFixed(1);
      const py = y(v).toFixed(1);
      if (!previous || t - previous[0] > gap) d += `M${px} ${py}`;
      else if (chart.steps) d += `H${px}V${py}`;
      else d += `L${px} ${py}`;
      previous = [t, v];
    }
    const champion = (series.labels || {}).group === "champion";
    const path = svg("path", { d, class: champion ? "series champion" : "series", stroke: color, "data-series": series.name });
    path.append(svg("title", { text: series.name }));
    root.append(path);
    const [lastT, lastV] = series.points[series.points.length - 1];
    root.append(svg("circle", { cx: x(lastT), cy: y(lastV), r: 3, fill: color }));
  });
  const cursor = svg("line", { x1: 0, x2: 0, y1: top, y2: height - bottom, class: "cursor", visibility: "hidden" });
  const overlay = svg("rect", { x: left, y: top, width: width - left - right, height: height - top - bottom, class: "overlay" });
  root.append(cursor, overlay);
  const showAt = (t) => {
    for (const [i, series] of chart.series.entries()) {
      let best = null;
      for (const point of series.points) if (point[0] <= t + data.step / 2) best = point;
      const value = best && t - best[0] <= gap ? best[1] : null;
      legend.children[i].querySelector(".value").textContent = formatValue(value, chart.unit);
    }
  };
  const showLast = () => {
    chart.series.forEach((series, i) => {
      legend.children[i].querySelector(".value").textContent = formatValue(series.points[series.points.length - 1][1], chart.unit);
    });
  };
  overlay.addEventListener("pointermove", (event) => {
    const box = root.getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * width;
    const t = data.start + ((px - left) / (width - left - right)) * (data.end - data.start);
    cursor.setAttribute("x1", px);
    cursor.setAttribute("x2", px);
    cursor.setAttribute("visibility", "visible");
    showAt(t);
  });
  overlay.addEventListener("pointerleave", () => {
    cursor.setAttribute("visibility", "hidden");
    showLast();
  });
  chart.series.forEach((series, i) => {
    const swatch = svg("svg", { width: 12, height: 12, viewBox: "0 0 12 12", "aria-hidden": "true" }, svg("rect", { x: 0, y: 4, width: 12, height: 4, rx: 1, fill: seriesColor(series, groups, i) }));
    legend.append(el("li", { "data-series": series.name }, swatch, ` ${series.name} `, el("span", { class: "value" }, "")));
  });
  showLast();
  return root;
}

function chartCard(chart, data, groups) {
  const card = el(
    "figure",
    { class: "chart", "data-chart": chart.id },
    el("figcaption", {}, el("strong", {}, chart.title), el("div", { class: "muted small" }, chart.description))
  );
  if (chart.error) {
    card.append(el("p", { class: "error small" }, `Not available: ${chart.error}`));
  } else if (!chart.series.length) {
    card.append(el("p", { class: "muted small empty-chart" }, `No data in the last ${rangeLabel(data.hours)} yet.`));
  } else {
    const legend = el("ul", { class: "chart-legend small" });
    card.append(drawChart(chart, data, legend, groups), legend);
  }
  return card;
}

async function loadCharts(name, box) {
  const status = el("span", { class: "muted small charts-status" }, "Loading charts…");
  const ranges = el(
    "span",
    { class: "ranges" },
    RANGES.map((hours) =>
      el("button", { type: "button", class: `small${hours === state.charts.hours ? " chosen" : ""}`, "aria-pressed": String(hours === state.charts.hours), onclick: () => { state.charts.hours = hours; loadCharts(name, box); } }, rangeLabel(hours))
    )
  );
  clear(box).append(el("div", { class: "charts-head" }, el("strong", {}, `${name} over the last`), ranges, status));
  let data;
  try {
    data = await api(`api/pipelines/${encodeURIComponent(name)}/charts?hours=${state.charts.hours}`);
  } catch (error) {
    status.textContent = `Charts unavailable: ${error.message}`;
    return;
  }
  if (state.charts.name !== name) return; // closed or switched while loading
  if (!data.available) {
    status.textContent = data.message;
    status.classList.add("charts-unavailable");
    return;
  }
  status.textContent = `from Prometheus, one point every ${stepLabel(data.step)}`;
  const pipeline = state.pipelines.find((p) => p.name === name);
  const groups = pipeline && pipeline.groups ? pipeline.groups.map((g) => g.name) : [];
  box.append(el("div", { class: "charts-grid" }, data.charts.map((chart) => chartCard(chart, data, groups))));
}

function toggleCharts(name, button) {
  const open = document.querySelector("tr.charts-row");
  const wasOpen = open && open.dataset.chartsFor === name;
  if (open) open.remove();
  for (const other of document.querySelectorAll("button.charts-toggle")) other.textContent = "Charts ▸";
  state.charts.name = wasOpen ? null : name;
  if (wasOpen) return;
  const row = button.closest("tr");
  const cell = el("td", { colspan: row.cells.length, class: "charts" });
  row.after(el("tr", { class: "charts-row", "data-charts-for": name }, cell));
  button.textContent = "Charts ▾";
  loadCharts(name, cell);
}

// --- the wizard ----------------------------------------------------------------------------

function show(view) {
  $("list-view").hidden = view !== "list";
  $("wizard").hidden = view !== "wizard";
  $("new-pipeline").hidden = view !== "list" || !state.session.can_edit;
}

function setStep(step) {
  state.step = step;
  for (const node of document.querySelectorAll(".step")) node.hidden = Number(node.dataset.step) !== step;
  for (const item of document.querySelectorAll("#steps li")) {
    const n = Number(item.dataset.step);
    item.className = n === step ? "current" : n < step ? "done" : "";
  }
  const editing = state.mode === "edit";
  $("steps").hidden = editing;
  $("back").hidden = editing || step === 1 || step === 5;
  $("next").hidden = editing || !(step === 2 || step === 3);
  $("create").hidden = editing || step !== 4;
  $("save").hidden = !editing;
  $("show-diff").hidden = !editing;
  $("delete").hidden = !editing;
  $("next").disabled = step === 2 && !state.proposal;
  updateCreateButton();
}

function updateCreateButton() {
  $("create").disabled = !state.valid;
  $("save").disabled = !state.valid;
}

async function openWizard() {
  state.mode = "create";
  state.template = null;
  state.proposal = null;
  state.created = null;
  state.valid = false;
  stopPolling();
  $("schema-panel").hidden = true;
  $("diff-view").hidden = true;
  notice("");
  show("wizard");
  renderTemplates();
  setStep(1);
}

function renderTemplates() {
  const box = clear($("template-cards"));
  for (const t of state.templates) {
    const example = el("details", {}, el("summary", {}, "Example record"), el("pre", {}, JSON.stringify(t.example, null, 2)));
    box.append(
      el(
        "div",
        { class: "card", role: "button", tabindex: "0", "data-template": t.id, onclick: (e) => { if (!e.target.closest("details")) pickTemplate(t.id); }, onkeydown: (e) => { if (e.key === "Enter") pickTemplate(t.id); } },
        el("h3", {}, t.title),
        el("p", {}, t.summary),
        el("p", { class: "muted small" }, `Needs: ${t.expects}. Labels: ${t.labels.join(", ")}.`),
        example
      )
    );
  }
}

async function pickTemplate(id) {
  state.template = id;
  state.proposal = null;
  $("schema-panel").hidden = true;
  setStep(2);
  await loadTopics();
}

async function loadTopics() {
  const box = clear($("topic-list"));
  box.append(el("p", { class: "muted" }, "Asking Kafka…"));
  try {
    const data = await api("api/topics");
    state.topics = data.topics;
  } catch (error) {
    clear(box).append(el("p", { class: "error" }, `Kafka topics unavailable: ${error.message}`));
    return;
  }
  renderTopics();
}

function renderTopics() {
  const filter = $("topic-filter").value.trim().toLowerCase();
  const box = clear($("topic-list"));
  const topics = state.topics
    .filter((t) => !filter || t.name.toLowerCase().includes(filter))
    .sort((a, b) => (b.kind === "telemetry") - (a.kind === "telemetry") || a.name.localeCompare(b.name));
  if (!topics.length) box.append(el("p", { class: "muted" }, "No topics match."));
  for (const t of topics) {
    const usable = t.kind === "telemetry";
    const used = t.used_by && t.used_by.length ? ` · used by ${t.used_by.join(", ")}` : "";
    const count = t.messages === null ? "" : `${t.messages} messages`;
    box.append(
      el(
        "button",
        {
          type: "button",
          class: `topic${usable ? "" : " unusable"}${state.proposal && state.proposal.topic === t.name ? " chosen" : ""}`,
          disabled: !usable,
          "data-topic": t.name,
          title: usable ? "" : "Not a <prefix>.telemetry topic",
          onclick: () => pickTopic(t.name),
        },
        el("span", { class: "topic-name" }, t.name),
        el("span", { class: "muted small" }, `${count} · ${t.partitions} partition${t.partitions === 1 ? "" : "s"}${used}`)
      )
    );
  }
}

async function pickTopic(topic) {
  $("next").disabled = true;
  notice(`Sampling ${topic}…`);
  try {
    const params = new URLSearchParams({ topic, template: state.template });
    state.proposal = await api(`api/topics/sample?${params}`);
  } catch (error) {
    notice(`Could not sample ${topic}: ${error.message}`, "error");
    return;
  }
  notice("");
  renderTopics();
  renderSchema();
  state.groups = state.proposal.draft.groups.map((g) => ({ ...g, use: true }));
  $("next").disabled = false;
}

const TYPES = ["float", "int", "string", "bool", "timestamp"];
const ROLES = ["feature", "prediction", "confidence", "device_id", "group_id", "timestamp", "record_id", "model_version", "config_version", "image_ref", "meta"];

function select(options, value, attrs) {
  return el("select", attrs, options.map((o) => el("option", { value: o, selected: o === value }, o)));
}

function renderSchema() {
  const p = state.proposal;
  const inf = p.inference;
  const draft = p.draft;
  $("schema-panel").hidden = false;
  $("schema-title").textContent = `${p.topic}: ${inf.decoded} of ${inf.sampled} sampled messages read, ${inf.fields.length} fields`;
  $("pipeline-name").value = draft.name;
  $("pipeline-description").value = draft.description || "";
  $("pipeline-labels").value = (draft.labels || []).join(", ");
  const kinds = clear($("ingest-kinds"));
  kinds.append(el("label", {}, el("input", { type: "checkbox", checked: true, disabled: true, "data-kind": "telemetry" }), " telemetry"));
  for (const kind of p.siblings) {
    kinds.append(el("label", { title: `also ingest ${p.prefix}.${kind} (validated against the same schema)` }, el("input", { type: "checkbox", "data-kind": kind }), ` ${kind}`));
  }
  const problems = clear($("sample-problems"));
  for (const text of [...p.notes, ...inf.problems, ...inf.skipped_fields]) problems.append(el("li", {}, text));
  if (inf.missing_roles.length) {
    problems.append(el("li", { class: "error" }, `No field found for: ${inf.missing_roles.join(", ")}. Pick the field for each role below.`));
  }
  const body = clear($("fields").tBodies[0]);
  inf.fields.forEach((f, i) => {
    const draftField = draft.schema[i];
    body.append(
      el(
        "tr",
        { "data-field": f.name },
        el("td", {}, el("code", {}, f.name)),
        el("td", { class: "small" }, f.examples.join(" · ")),
        el("td", {}, select(TYPES, draftField.type, { "data-part": "type", "aria-label": `type of ${f.name}` })),
        el("td", {}, select(ROLES, draftField.role, { "data-part": "role", "aria-label": `role of ${f.name}` })),
        el("td", {}, el("input", { type: "checkbox", "data-part": "nullable", checked: draftField.nullable, "aria-label": `${f.name} may be missing` })),
        el("td", { class: "small muted" }, [f.role_reason, ...f.notes].filter(Boolean).join(". "))
      )
    );
  });
}

function collectDraft() {
  const p = state.proposal;
  const schema = [];
  for (const row of $("fields").tBodies[0].rows) {
    schema.push({
      name: row.dataset.field,
      type: row.querySelector('[data-part="type"]').value,
      role: row.querySelector('[data-part="role"]').value,
      nullable: row.querySelector('[data-part="nullable"]').checked,
    });
  }
  const ingest = [...$("ingest-kinds").querySelectorAll("input:checked")].map((i) => i.dataset.kind);
  const labels = $("pipeline-labels").value.split(",").map((s) => s.trim()).filter(Boolean);
  const groups = state.groups.filter((g) => g.use).map((g) => ({ name: g.name, devices: Number(g.devices) || 0 }));
  const canary = $("canary").value || null;
  return {
    ...p.draft,
    name: $("pipeline-name").value.trim(),
    description: $("pipeline-description").value.trim(),
    ingest,
    labels: labels.length ? labels : null,
    schema,
    groups,
    preset: state.preset,
    canary: groups.some((g) => g.name === canary) ? canary : null,
    telemetry: $("telemetry-mode").value === "profiles" ? "profiles" : "raw",
  };
}

function renderGroups() {
  const p = state.proposal;
  const sources = { "device-state": `from the fleet state topic ${p.prefix}.device-state`, samples: "seen in the sampled records", none: "none found: add the groups your devices use" };
  $("groups-source").textContent = `Edge groups ${sources[p.groups_source] || ""}.`;
  const body = clear($("groups").tBodies[0]);
  state.groups.forEach((g, i) => {
    body.append(
      el(
        "tr",
        {},
        el("td", {}, el("input", { type: "checkbox", checked: g.use, "aria-label": `use group ${g.name}`, onchange: (e) => { g.use = e.target.checked; renderCanary(); } })),
        el("td", {}, el("input", { value: g.name, "aria-label": `name of group ${i + 1}`, onchange: (e) => { g.name = e.target.value.trim(); renderCanary(); } })),
        el("td", {}, el("input", { type: "number", min: "0", value: g.devices, "aria-label": `devices in ${g.name}`, onchange: (e) => { g.devices = Number(e.target.value) || 0; } }))
      )
    );
  });
  renderCanary();
  const presets = clear($("presets"));
  for (const preset of state.presets) {
    presets.append(
      el(
        "label",
        { class: `card preset${state.preset === preset.id ? " chosen" : ""}` },
        el("input", { type: "radio", name: "preset", value: preset.id, checked: state.preset === preset.id, onchange: () => { state.preset = preset.id; renderGroups(); } }),
        el("h3", {}, preset.title),
        el("p", { class: "small" }, preset.explanation)
      )
    );
  }
}

function renderCanary() {
  const used = state.groups.filter((g) => g.use);
  const current = $("canary").value || (state.proposal && state.proposal.draft.canary) || "";
  const box = clear($("canary"));
  box.append(el("option", { value: "" }, used.length > 1 ? "(none)" : "(needs two groups)"));
  for (const g of used) box.append(el("option", { value: g.name, selected: g.name === current }, g.name));
}

async function renderReview(draft) {
  notice("");
  let data;
  try {
    data = await api("api/render", { method: "POST", json: draft });
  } catch (error) {
    showErrors(error.body && error.body.errors ? error.body.errors : [{ location: "", message: error.message }]);
    state.valid = false;
    return false;
  }
  state.text = data.text;
  $("yaml").value = data.text;
  $("review-title").textContent = `Review the spec of ${data.name}`;
  showValidation(data);
  if (data.exists) showErrors([{ location: "name", message: `a pipeline '${data.name}' already exists: pick another name` }]);
  return true;
}

function showErrors(errors) {
  const list = clear($("review-errors"));
  for (const e of errors) list.append(el("li", { class: "error" }, e.location ? el("code", {}, e.location) : "", ` ${e.message}`));
}

function showValidation(result) {
  state.valid = result.valid;
  showErrors(result.errors);
  const list = clear($("dag-preview"));
  for (const id of result.dag_ids) list.append(el("li", {}, el("code", {}, id)));
  $("review-note").textContent = result.valid
    ? "Valid. The DAGs appear in Airflow after the next parse of the DAG folder."
    : "Fix the errors above (in the YAML, or go back a step).";
  updateCreateButton();
}

let validateTimer = null;
function onYamlInput() {
  state.valid = false;
  updateCreateButton();
  clearTimeout(validateTimer);
  validateTimer = setTimeout(async () => {
    const json = { text: $("yaml").value };
    if (state.mode === "edit") json.name = state.editName;
    try {
      showValidation(await api("api/validate", { method: "POST", json }));
    } catch (error) {
      showErrors([{ location: "", message: error.message }]);
    }
  }, 400);
}

async function next() {
  if (state.step === 2) {
    if (!state.proposal) return;
    renderGroups();
    setStep(3);
  } else if (state.step === 3) {
    state.valid = false;
    setStep(4);
    await renderReview(collectDraft());
  }
}

function back() {
  if (state.step > 1) setStep(state.step - 1);
}

async function create() {
  $("create").disabled = true;
  let result;
  try {
    result = await api("api/pipelines", { method: "POST", json: { text: $("yaml").value } });
  } catch (error) {
    showErrors(error.body && error.body.errors ? error.body.errors : [{ location: "", message: error.message }]);
    updateCreateButton();
    return;
  }
  state.created = result;
  $("created-title").textContent = `Pipeline ${result.name} created`;
  const notes = [`Saved as ${result.file} (version ${result.version}).`, "Its DAGs appear after the next parse of the DAG folder, usually within a minute."];
  if (result.topics_created.length) notes.push(`Kafka topics created: ${result.topics_created.join(", ")}.`);
  notes.push(...result.warnings);
  $("created-note").textContent = notes.join(" ");
  renderCreatedDags({});
  setStep(5);
  pollCreated();
}

function renderCreatedDags(byId) {
  const list = clear($("created-dags"));
  for (const id of state.created.dag_ids) {
    const stage = byId[id];
    list.append(
      el(
        "li",
        { "data-dag": id, class: stage && stage.exists ? "parsed" : "waiting" },
        stage && stage.exists ? dagLink(id, id) : el("code", {}, id),
        el("span", { class: "muted small" }, stage && stage.exists ? (stage.paused ? " parsed, paused" : " parsed") : " waiting for the DAG processor…")
      )
    );
  }
  const ingest = byId[`${state.created.name}__ingest`];
  $("run-ingest").disabled = !(ingest && ingest.exists);
}

function stopPolling() {
  if (state.poller) clearTimeout(state.poller);
  state.poller = null;
}

async function pollCreated(started = Date.now()) {
  stopPolling();
  if (!state.created || state.step !== 5) return;
  try {
    const data = await api("api/pipelines");
    const row = data.pipelines.find((p) => p.name === state.created.name);
    const byId = Object.fromEntries(((row && row.stages) || []).map((s) => [s.dag_id, s]));
    renderCreatedDags(byId);
    if (Object.values(byId).length && Object.values(byId).every((s) => s.exists)) return;
  } catch (_) {
    // keep polling
  }
  if (Date.now() - started < 5 * 60 * 1000) state.poller = setTimeout(() => pollCreated(started), 3000);
}

// --- editing an existing pipeline ------------------------------------------------------------

async function openEditor(name) {
  let data;
  try {
    data = await api(`api/pipelines/${encodeURIComponent(name)}`);
  } catch (error) {
    notice(`Could not open ${name}: ${error.message}`, "error");
    return;
  }
  state.mode = "edit";
  state.editName = name;
  state.editVersion = data.version;
  state.text = data.text;
  state.deleteArmed = false;
  $("delete").textContent = "Delete pipeline";
  $("yaml").value = data.text;
  $("review-title").textContent = `Edit ${data.file} (version ${data.version})`;
  $("diff-view").hidden = true;
  notice("");
  show("wizard");
  setStep(4);
  showValidation({ valid: data.valid, errors: data.errors, dag_ids: data.dag_ids });
}

async function showDiff() {
  try {
    const data = await api(`api/pipelines/${encodeURIComponent(state.editName)}/diff`, { method: "POST", json: { text: $("yaml").value } });
    renderDiff(data.diff);
    showValidation({ valid: data.valid, errors: data.errors, dag_ids: data.dag_ids });
    if (data.version !== state.editVersion) {
      notice(`Someone saved ${state.editName} since you opened it (now version ${data.version}); saving will be refused. Copy your change, reload and re-apply it.`, "error");
    }
  } catch (error) {
    notice(error.message, "error");
  }
}

function renderDiff(diff) {
  const box = clear($("diff-view"));
  box.hidden = false;
  if (!diff) {
    box.append(el("span", { class: "muted" }, "No changes."));
    return;
  }
  for (const line of diff.split("\n")) {
    const kind = line.startsWith("+") && !line.startsWith("+++") ? "add" : line.startsWith("-") && !line.startsWith("---") ? "del" : line.startsWith("@@") ? "hunk" : "";
    box.append(el("span", { class: kind }, line), "\n");
  }
}

async function save() {
  $("save").disabled = true;
  try {
    const result = await api(`api/pipelines/${encodeURIComponent(state.editName)}`, {
      method: "PUT",
      json: { text: $("yaml").value, version: state.editVersion },
    });
    renderDiff(result.diff);
    state.editVersion = result.version;
    notice(`Saved ${result.name} (version ${result.version}). The DAGs change after the next parse.`, "ok");
    show("list");
    await loadList();
  } catch (error) {
    if (error.status === 409) {
      notice(`${error.message}`, "error");
      const reload = el("button", { type: "button", onclick: () => openEditor(state.editName) }, "Reload the latest version");
      $("notice").append(" ", reload);
    } else {
      showErrors(error.body && error.body.errors ? error.body.errors : [{ location: "", message: error.message }]);
    }
  } finally {
    updateCreateButton();
  }
}

async function deletePipeline() {
  if (!state.deleteArmed) {
    state.deleteArmed = true;
    $("delete").textContent = `Really delete ${state.editName}?`;
    return;
  }
  try {
    const params = new URLSearchParams({ version: state.editVersion });
    await api(`api/pipelines/${encodeURIComponent(state.editName)}?${params}`, { method: "DELETE" });
    notice(`Deleted ${state.editName}. Its DAGs disappear after the next parse; its data and topics are kept.`, "ok");
    show("list");
    await loadList();
  } catch (error) {
    notice(error.message, "error");
  }
}

// --- start ---------------------------------------------------------------------------------

async function start() {
  $("new-pipeline").addEventListener("click", openWizard);
  $("cancel").addEventListener("click", () => { stopPolling(); show("list"); loadList(); });
  $("next").addEventListener("click", next);
  $("back").addEventListener("click", back);
  $("create").addEventListener("click", create);
  $("save").addEventListener("click", save);
  $("show-diff").addEventListener("click", showDiff);
  $("delete").addEventListener("click", deletePipeline);
  $("yaml").addEventListener("input", onYamlInput);
  $("topic-filter").addEventListener("input", renderTopics);
  $("run-ingest").addEventListener("click", async (e) => {
    const run = await runIngest(state.created.name, e.target);
    if (run) $("run-result").textContent = ` ${run.dag_run_id} (${run.state})`;
  });
  $("add-group").addEventListener("click", () => {
    const name = $("new-group").value.trim();
    if (!name) return;
    state.groups.push({ name, devices: 0, use: true });
    $("new-group").value = "";
    renderGroups();
  });
  try {
    const [session, templates] = await Promise.all([api("api/session"), api("api/templates")]);
    state.session = session;
    state.templates = templates.templates;
    state.presets = templates.presets;
  } catch (error) {
    notice(`Not available: ${error.message}`, "error");
    return;
  }
  $("who").textContent = state.session.can_edit ? `${state.session.user}` : `${state.session.user} (read only)`;
  show("list");
  await loadList();
}

document.addEventListener("DOMContentLoaded", start);
