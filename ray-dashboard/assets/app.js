// The dashboard's script: asks for the cluster's token once (or takes it from the URL's
// #token= fragment), keeps it in this tab's session storage, and polls the JSON routes every
// two seconds for the view on show. Everything shown is built as text nodes: no row's text is
// ever read as HTML.
"use strict";

const TOKEN_KEY = "rayrs-token";
const POLL_MS = 2000;
// A request the cluster has not answered in this long is given up (the next poll retries).
const REQUEST_MS = 8000;
const STATES = ["PENDING_ARGS_AVAIL", "PENDING_NODE_ASSIGNMENT", "SUBMITTED_TO_WORKER",
  "RUNNING", "FINISHED", "FAILED"];

let view = "overview";
let taskFilter = "";
let selectedTask = null;
let timer = null;
// Bumped by every refresh: an older refresh still in flight neither draws nor reschedules.
let generation = 0;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) {
    e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  }
  return e;
}

function short(id) { return id ? id.slice(0, 8) : ""; }

// A task id's tail: its head is the job's and the submitter's, the same for many tasks.
function tail(id) { return id ? id.slice(-8) : ""; }

function time(us) { return us ? new Date(us / 1000).toLocaleTimeString() : ""; }

function duration(t) {
  if (!t.started_at_us) return "";
  const end = t.ended_at_us || Date.now() * 1000;
  const ms = (end - t.started_at_us) / 1000;
  return ms < 1000 ? ms.toFixed(1) + " ms" : (ms / 1000).toFixed(2) + " s";
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function bar(fraction) {
  const outer = el("div", { class: "bar" });
  const inner = el("div", { class: "fill" });
  inner.style.width = Math.max(0, Math.min(1, fraction)) * 100 + "%";
  outer.append(inner);
  return outer;
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

class Refused extends Error {}

// A route's JSON, as it comes (the timeline is a bare array).
async function raw(path) {
  const r = await fetch(path, {
    headers: { Authorization: "Bearer " + token() },
    signal: AbortSignal.timeout(REQUEST_MS),
  });
  if (r.status === 401 || r.status === 403) throw new Refused(r.status === 401
    ? "the cluster asks for its token" : "the cluster refused this token");
  const body = await r.json();
  if (!r.ok) throw new Error(body.msg || ("HTTP " + r.status));
  return body;
}

// A route's data, out of Ray's envelope.
async function api(path) {
  const body = await raw(path);
  if (!body.result) throw new Error(body.msg || "the cluster said no");
  return body.data;
}

function showLogin(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(timer);
  generation++;
  $("views").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

function showViews() {
  $("login").hidden = true;
  $("views").hidden = false;
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + view;
  for (const b of document.querySelectorAll("#tabs button")) {
    b.classList.toggle("active", b.dataset.view === view);
  }
}

function fillBody(table, rows) {
  const body = document.querySelector(table + " tbody");
  body.replaceChildren(...rows);
}

function cell(...children) { return el("td", {}, ...children); }

// Each view's render takes `current`: false once a newer refresh started (draw nothing then).
async function renderOverview(current) {
  const o = await api("/api/v0/cluster");
  if (!current()) return;
  $("ov-nodes").replaceChildren(
    el("span", { "data-count": "nodes-alive" }, o.nodes_alive), " alive",
    o.nodes_dead ? el("small", {}, ", " + o.nodes_dead + " dead") : "");
  $("ov-resources").replaceChildren(...Object.keys(o.resources_total).sort().map((name) => {
    const total = o.resources_total[name];
    const used = total - (o.resources_available[name] || 0);
    return el("div", { class: "row", "data-resource": name },
      el("span", { class: "label" }, name),
      bar(total ? used / total : 0),
      el("span", { class: "value" }, `${+used.toFixed(2)} / ${+total.toFixed(2)}`));
  }));
  const tasks = STATES.filter((s) => o.tasks_by_state[s]).map((s) =>
    el("div", { class: "row" }, el("span", { class: "label state " + s }, s),
      el("span", { class: "value", "data-state": s }, o.tasks_by_state[s])));
  $("ov-tasks").replaceChildren(...(tasks.length ? tasks : [el("span", {}, "none yet")]));
  const actors = Object.entries(o.actors_by_state).map(([s, n]) =>
    el("div", { class: "row" }, el("span", { class: "label" }, s),
      el("span", { class: "value", "data-actor-state": s }, n)));
  $("ov-actors").replaceChildren(...(actors.length ? actors : [el("span", {}, "none")]));
  $("ov-store").replaceChildren(...o.nodes.map((n) => el("div", { class: "row" },
    el("span", { class: "label" }, short(n.node_id) + (n.is_head ? " (head)" : "")),
    bar(n.store_capacity ? n.store_used / n.store_capacity : 0),
    el("span", { class: "value", "data-store-used": n.node_id },
      `${bytes(n.store_used)} / ${bytes(n.store_capacity)}, ${n.num_workers} workers, ` +
      `CPU ${Math.round(n.cpu_percent || 0)}%`))));
  $("ov-warnings").textContent = o.unreachable.length
    ? "Not answering: " + o.unreachable.join("; ") : "";
}

function filterQuery() {
  return taskFilter.split(",").map((f) => f.trim()).filter((f) => f)
    .map((f) => "filter=" + encodeURIComponent(f)).join("&");
}

async function renderTasks(current) {
  const summary = await api("/api/v0/tasks/summarize");
  if (!current()) return;
  fillBody("#summary-table", summary.result.map((s) => {
    const n = (state) => s.by_state[state] || 0;
    const pending = n("PENDING_ARGS_AVAIL") + n("PENDING_NODE_ASSIGNMENT") + n("SUBMITTED_TO_WORKER");
    return el("tr", { "data-function": s.name }, cell(s.name), cell(s.total), cell(pending),
      cell(n("RUNNING")), cell(n("FINISHED")), cell(n("FAILED")));
  }));
  let listing;
  try {
    listing = (await api("/api/v0/tasks?limit=200&" + filterQuery())).result;
    if (!current()) return;
    $("task-error").textContent = "";
  } catch (e) {
    if (e instanceof Refused || !current()) throw e;
    $("task-error").textContent = e.message;
    fillBody("#tasks-table", []);
    return;
  }
  $("task-count").textContent = `${listing.num_after_truncation} of ${listing.total}` +
    (listing.dropped ? ` (${listing.dropped} events dropped)` : "");
  fillBody("#tasks-table", listing.result.map((t) => {
    const row = el("tr", { "data-task-id": t.task_id, class: t.task_id === selectedTask ? "selected" : "" },
      cell(tail(t.task_id)), cell(t.name),
      cell(el("span", { class: "state " + (t.state || "") }, t.state || "")),
      cell(short(t.node_id)), cell(t.worker_pid), cell(duration(t)), cell(t.error_type));
    row.addEventListener("click", () => { selectedTask = t.task_id; showTask(t); });
    return row;
  }));
  const chosen = listing.result.find((t) => t.task_id === selectedTask);
  if (chosen) showTask(chosen);
}

function showTask(t) {
  for (const r of document.querySelectorAll("#tasks-table tbody tr")) {
    r.classList.toggle("selected", r.dataset.taskId === t.task_id);
  }
  const fields = [["Task", t.task_id], ["Attempt", t.attempt], ["Function", t.func_or_class_name],
    ["State", t.state], ["Job", t.job_id], ["Actor", t.actor_id], ["Parent", t.parent_task_id],
    ["Node", t.node_id], ["Worker", t.worker_id], ["Pid", t.worker_pid],
    ["Submitted", time(t.submitted_at_us)], ["Started", time(t.started_at_us)],
    ["Ended", time(t.ended_at_us)], ["Duration", duration(t)], ["Error", t.error_type]];
  const detail = $("task-detail");
  detail.replaceChildren(el("h3", {}, t.name),
    el("dl", {}, ...fields.filter(([, v]) => v !== null && v !== undefined && v !== "")
      .flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-field": k }, v)])),
    t.error_message ? el("pre", { class: "error", "data-field": "error_message" }, t.error_message) : "");
  detail.hidden = false;
  if (t.state && (t.state.startsWith("PENDING") || t.state === "SUBMITTED_TO_WORKER")) {
    // Why it has not run: asked of its owner and the nodes, shown once known.
    api("/api/v0/explain/" + t.task_id).then((why) => {
      if (selectedTask !== t.task_id) return;
      const old = detail.querySelector("[data-field=why]");
      const shown = el("div", { class: "why" }, el("h4", {}, "Why pending"),
        el("pre", { "data-field": "why" }, why.result.text));
      if (old) old.parentElement.replaceWith(shown); else detail.append(shown);
    }).catch(() => {});
  }
}

async function renderActors(current) {
  const rows = (await api("/api/v0/actors?limit=1000")).result.result;
  if (!current()) return;
  fillBody("#actors-table", rows.map((a) => el("tr", { "data-actor-id": a.actor_id },
    cell(short(a.actor_id)), cell(a.class_name), cell(a.name), cell(a.state),
    cell(a.num_restarts), cell(short(a.node_id)), cell(a.pid),
    cell(a.death_cause || a.pending_reason))));
}

let selectedSubmission = null;

async function renderJobs(current) {
  const rows = (await api("/api/v0/jobs?limit=1000")).result.result;
  if (!current()) return;
  fillBody("#jobs-table", rows.map((j) => el("tr", { "data-job-id": j.job_id },
    cell(j.job_id), cell(j.status), cell(j.entrypoint), cell(j.namespace), cell(j.driver_pid),
    cell(time(j.start_time_us)), cell(time(j.end_time_us)))));
  // Submitted jobs (a cluster's head only: elsewhere the job API says it runs none).
  let submitted;
  try {
    submitted = await raw("/api/jobs/");
  } catch (e) {
    if (e instanceof Refused) throw e;
    $("submitted").hidden = true;
    return;
  }
  if (!current()) return;
  $("submitted").hidden = false;
  fillBody("#submitted-table", submitted.map((j) => {
    const row = el("tr", { "data-submission-id": j.submission_id,
      class: j.submission_id === selectedSubmission ? "selected" : "" },
      cell(j.submission_id), cell(j.status), cell(j.entrypoint), cell(j.driver_pid), cell(j.message));
    row.addEventListener("click", () => { selectedSubmission = j.submission_id; showJobLogs(); });
    return row;
  }));
  if (selectedSubmission) await showJobLogs(current);
}

// The selected submitted job's driver output.
async function showJobLogs(current) {
  const id = selectedSubmission;
  const body = await raw("/api/jobs/" + encodeURIComponent(id) + "/logs");
  if ((current && !current()) || id !== selectedSubmission) return;
  $("job-logs-title").textContent = "Logs of " + id;
  $("job-logs-text").textContent = body.logs;
  $("job-logs").hidden = false;
}

function unreachableNote(id, listing) {
  const missing = listing.partial_failure_warning || [];
  $(id).textContent = missing.length ? "Not answering (rows missing): " + missing.join("; ") : "";
}

async function renderObjects(current) {
  const listing = (await api("/api/v0/objects?limit=1000")).result;
  if (!current()) return;
  unreachableNote("objects-note", listing);
  fillBody("#objects-table", listing.result.map((o) => el("tr", { "data-object-id": o.object_id },
    cell(tail(o.object_id)), cell(bytes(o.object_size)), cell(o.reference_type), cell(o.location),
    cell(o.worker_type), cell(o.pid), cell(short(o.node_id)), cell(o.owner_address || "(itself)"))));
}

async function renderWorkers(current) {
  const listing = (await api("/api/v0/workers?limit=1000")).result;
  if (!current()) return;
  unreachableNote("workers-note", listing);
  fillBody("#workers-table", listing.result.map((w) => el("tr", { "data-pid": w.pid },
    cell(short(w.worker_id)), cell(w.worker_type), cell(w.state), cell(w.job_id), cell(w.pid),
    cell(short(w.node_id)), cell(w.hosted_actors || ""))));
}

async function renderNodes(current) {
  const rows = (await api("/api/v0/nodes?limit=1000")).result.result;
  if (!current()) return;
  fillBody("#nodes-table", rows.map((n) => el("tr", { "data-node-id": n.node_id },
    cell(short(n.node_id)), cell(n.state), cell(n.address), cell(n.is_head ? "yes" : ""),
    cell(Object.keys(n.resources_total).sort().map((k) =>
      `${k} ${+(n.resources_available[k] || 0).toFixed(2)} / ${+n.resources_total[k].toFixed(2)}`).join(", ")),
    cell(n.death_reason))));
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}

// Rows per (node, worker), a bar per task; the newest 2,000 slices.
async function renderTimeline(current) {
  const events = await raw("/api/v0/timeline?limit=2000");
  if (current()) drawTimeline(events);
}

async function downloadTimeline() {
  const r = await fetch("/api/v0/timeline", { headers: { Authorization: "Bearer " + token() } });
  if (r.status === 401 || r.status === 403) throw new Refused("the cluster refused this token");
  if (!r.ok) throw new Error("the timeline: HTTP " + r.status);
  const link = el("a", { download: "trace.json" });
  link.href = URL.createObjectURL(await r.blob());
  document.body.append(link);
  link.click();
  link.remove();
  // Some browsers start the download after the click returns.
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
}

function drawTimeline(events) {
  const slices = events.filter((e) => e.ph === "X").slice(-2000);
  const box = $("timeline");
  if (!slices.length) { box.replaceChildren(el("p", {}, "No task has run yet.")); return; }
  const rows = [...new Set(slices.map((s) => s.pid + ":" + s.tid))].sort();
  const t0 = Math.min(...slices.map((s) => s.ts));
  const t1 = Math.max(...slices.map((s) => s.ts + s.dur));
  const width = Math.max(600, box.clientWidth - 20), label = 130, rowH = 18;
  const scale = (width - label) / Math.max(1, t1 - t0);
  const out = svg("svg", { width, height: rows.length * rowH + 24, "data-slices": slices.length });
  rows.forEach((r, i) => out.append(svg("text", { x: 0, y: i * rowH + 13, class: "lane" },
    "worker pid " + r.split(":")[1])));
  for (const s of slices) {
    const rect = svg("rect", { x: label + (s.ts - t0) * scale, y: rows.indexOf(s.pid + ":" + s.tid) * rowH + 2,
      width: Math.max(1, s.dur * scale), height: rowH - 4,
      class: "slice " + (s.args.state || ""), "data-task-id": s.args.task_id });
    rect.append(svg("title", {}, `${s.name} (${(s.dur / 1000).toFixed(2)} ms) ${s.args.task_id}`));
    out.append(rect);
  }
  out.append(svg("text", { x: label, y: rows.length * rowH + 18, class: "lane" },
    `${((t1 - t0) / 1e6).toFixed(3)} s from ${new Date(t0 / 1000).toLocaleTimeString()}`));
  box.replaceChildren(out);
}

const RENDER = { overview: renderOverview, tasks: renderTasks, actors: renderActors,
  jobs: renderJobs, objects: renderObjects, workers: renderWorkers, nodes: renderNodes,
  timeline: renderTimeline };

async function refresh() {
  clearTimeout(timer);
  const mine = ++generation;
  try {
    await RENDER[view](() => mine === generation);
    if (mine !== generation) return;
    $("status").textContent = "updated " + new Date().toLocaleTimeString();
    $("status").className = "";
  } catch (e) {
    if (mine !== generation) return;
    if (e instanceof Refused) { showLogin(e.message); return; }
    $("status").textContent = "cannot reach the cluster: " + e.message;
    $("status").className = "error";
  }
  timer = setTimeout(refresh, POLL_MS);
}

function start() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    sessionStorage.setItem(TOKEN_KEY, fragment.get("token"));
    history.replaceState(null, "", location.pathname + location.search);
  }
  for (const b of document.querySelectorAll("#tabs button")) {
    b.addEventListener("click", () => { view = b.dataset.view; showViews(); refresh(); });
  }
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    showViews();
    refresh();
  });
  $("timeline-download").addEventListener("click", () => downloadTimeline().catch((e) => {
    if (e instanceof Refused) showLogin(e.message); else $("status").textContent = e.message;
  }));
  $("task-filter-form").addEventListener("submit", (e) => {
    e.preventDefault();
    taskFilter = $("task-filter").value;
    refresh();
  });
  if (token()) { showViews(); refresh(); } else showLogin();
}

start();
