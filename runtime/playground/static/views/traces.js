// Traces: the recent requests, and one request's timeline across gateway and workers.
import { api, enc } from "../api.js";
import { go } from "../app.js";
import { clear, clock, errorBox, h, jsonView, ms, pill, short, statusPill, walkable } from "../ui.js";

export const tracesView = { enter, leave };

let retry = 0;

function leave() { clearTimeout(retry); }

async function enter(main, [requestId]) {
  clearTimeout(retry);
  const jump = h("input", { type: "search", placeholder: "Open a request id  /", "aria-label": "Open a request id", "data-search": "1" });
  jump.addEventListener("keydown", (event) => { if (event.key === "Enter" && jump.value.trim()) go(`#/traces/${enc(jump.value.trim())}`); });
  const list = walkable(h("nav", { class: "list", "aria-label": "Recent requests" }, h("p", { class: "muted small", style: "padding:8px" }, "Loading…")));
  const refresh = h("button", { type: "button", class: "small", onclick: () => enter(main, [requestId]) }, "Refresh");
  const content = h("section", { class: "content", "aria-label": "Trace" });
  clear(main, h("aside", { class: "sidebar" }, h("div", { class: "search" }, jump, h("div", { class: "row spread", style: "margin-top:8px" }, h("span", { class: "small muted" }, "Recent requests"), refresh)), list), content);
  const recent = await api.get("traces?limit=150");
  clear(list, recent.traces.length ? recent.traces.map((t) => h("a", {
    class: `item${t.request_id === requestId ? " active" : ""}`, href: `#/traces/${enc(t.request_id)}`,
  },
    h("div", { class: "title" }, statusPill(t.status), h("span", { class: "mono small" }, short(t.method.split("/").pop(), 24))),
    h("div", { class: "sub" }, `${clock(t.at)} · ${ms(t.duration_ms)} · ${t.version || "–"}`),
    h("div", { class: "sub mono" }, t.request_id))) : h("p", { class: "muted small", style: "padding:8px" }, "No request yet. Send one from the Explorer."));
  if (!requestId) {
    clear(content, h("h1", {}, "Traces"),
      h("p", { class: "lead" }, "Pick a request to see its timeline: the gateway's ingress steps, version resolution and transformers, and each worker's lifecycle with its hooks, validation, handler, module calls, publishes and compensations."),
      h("p", { class: "muted small" }, `Worker lifecycles are read from the audit trail (${recent.source}); gateway steps from this process's spans.`));
    return;
  }
  await showTrace(content, requestId, 0);
}

async function showTrace(content, requestId, attempt) {
  let trace;
  try {
    trace = await api.get(`traces/${enc(requestId)}`);
  } catch (error) {
    clear(content, errorBox(error));
    return;
  }
  if ((!trace.found || !trace.complete) && attempt < 6) {
    // The worker's audit record is written just after the call: look again shortly.
    retry = setTimeout(() => showTrace(content, requestId, attempt + 1), 400);
    if (!trace.found) { clear(content, h("p", { class: "muted" }, `Looking for ${requestId}…`)); return; }
  }
  if (!trace.found) {
    clear(content, h("h1", {}, "Trace"), errorBox({ code: "NOT_FOUND", message: `nothing is kept for request id ${requestId}: it is older than the ring buffer, or was never seen here` }));
    return;
  }
  renderTrace(content, trace);
}

function depthOf(rows) {
  const byId = new Map(rows.map((r) => [r.id, r]));
  const depth = new Map();
  const get = (row) => {
    if (depth.has(row.id)) return depth.get(row.id);
    const parent = row.parent && byId.get(row.parent);
    const d = parent ? get(parent) + 1 : 0;
    depth.set(row.id, d);
    return d;
  };
  rows.forEach(get);
  return depth;
}

function ordered(rows) {
  // Depth-first: each row followed by its children, children in start order.
  const children = new Map();
  const roots = [];
  const ids = new Set(rows.map((r) => r.id));
  for (const row of rows) {
    if (row.parent && ids.has(row.parent)) {
      if (!children.has(row.parent)) children.set(row.parent, []);
      children.get(row.parent).push(row);
    } else roots.push(row);
  }
  const out = [];
  const visit = (row) => { out.push(row); (children.get(row.id) || []).forEach(visit); };
  roots.forEach(visit);
  return out;
}

function renderTrace(content, trace) {
  const rows = ordered(trace.rows);
  const depth = depthOf(trace.rows);
  const total = Math.max(...rows.map((r) => r.start_ms + r.duration_ms), 0.001);
  const top = rows.find((r) => r.kind === "gateway") || rows[0];
  const detail = h("div", { class: "panel", id: "trace-detail" }, h("p", { class: "muted" }, "Select a row for its details."));
  const select = (row, el) => {
    for (const other of content.querySelectorAll(".wf-row.selected")) other.classList.remove("selected");
    el.classList.add("selected");
    clear(detail, h("div", { class: "row" }, h("strong", {}, row.label), statusPill(row.status), pill(row.kind, "outline")),
      h("dl", { class: "kv", style: "margin-top:10px" },
        h("dt", {}, "starts at"), h("dd", {}, `+${ms(row.start_ms)}`),
        h("dt", {}, "takes"), h("dd", {}, ms(row.duration_ms)),
        row.error ? [h("dt", {}, "error"), h("dd", {}, row.error)] : null),
      row.target ? h("p", {}, h("a", { href: "#", onclick: (e) => { e.preventDefault(); follow(row); } }, `Follow the call into ${row.target.handler} →`)) : null,
      Object.keys(row.detail || {}).length ? jsonView(row.detail) : null);
  };
  const follow = (row) => {
    const child = rows.find((r) => r.parent === row.id && r.kind === "lifecycle");
    const el = child && content.querySelector(`[data-row="${CSS.escape(child.id)}"]`);
    if (el) { el.scrollIntoView({ block: "center" }); el.focus(); select(child, el); }
  };
  const waterfall = h("div", { class: "waterfall", role: "list", id: "waterfall" }, rows.map((row) => {
    const left = (row.start_ms / total) * 100;
    const width = Math.max((row.duration_ms / total) * 100, 0.3);
    const el = h("div", {
      class: "wf-row", role: "listitem", tabindex: "0", "data-row": row.id, "data-kind": row.kind,
      onkeydown: (event) => { if (event.key === "Enter") { select(row, el); if (row.target) follow(row); } },
    },
      h("div", { class: "wf-label", style: `padding-left:${depth.get(row.id) * 16}px`, title: row.label },
        h("span", { class: `dot k-${row.kind}` }), row.label, row.status !== "OK" ? pill(row.status, "bad") : null,
        row.target ? h("span", { class: "faint small" }, "↳") : null),
      h("div", { class: "wf-track" }, h("div", { class: `wf-bar k-${row.kind}${row.status !== "OK" ? " error" : ""}`, style: `left:${left}%;width:${width}%` })),
      h("div", { class: "wf-dur" }, ms(row.duration_ms)));
    el.addEventListener("click", () => select(row, el));
    return el;
  }));
  clear(content,
    h("h1", {}, "Trace", h("code", { class: "small" }, trace.request_id), top ? statusPill(top.status) : null, h("span", { class: "muted small" }, `${ms(total)} end to end`)),
    !trace.complete ? h("p", { class: "note" }, "The worker's lifecycle is not in the audit trail yet; it usually is within a second. Reopen to refresh.") : null,
    h("div", { class: "legend" }, [["gateway", "gateway"], ["step", "ingress step"], ["transform", "transformer"], ["call", "call to worker"], ["lifecycle", "worker lifecycle"], ["hook", "hook"], ["handler", "handler"], ["module_call", "module call"], ["publish", "publish"], ["compensation", "compensation"]]
      .map(([k, label]) => h("span", {}, h("span", { class: `dot k-${k}` }), label))),
    h("div", { class: "panel" }, waterfall),
    h("h2", {}, "Details"),
    detail);
}
