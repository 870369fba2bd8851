// Snapshots: stored requests, replayed at any version in a sandbox, two replays diffed,
// hooks from the manifest played back.
import { api, enc } from "../api.js";
import { moduleDetail } from "../app.js";
import { clear, errorBox, h, jsonView, ms, pill, select, short, statusPill, walkable, when } from "../ui.js";

export const snapshotsView = { enter, submit: () => replayNow && replayNow() };

let replayNow = null;

async function enter(main, [snapshotId]) {
  replayNow = null;
  const filter = h("input", { type: "search", placeholder: "Filter by handler or id  /", "aria-label": "Filter snapshots", "data-search": "1" });
  const list = walkable(h("nav", { class: "list", "aria-label": "Stored snapshots" }));
  const content = h("section", { class: "content", "aria-label": "Snapshot" });
  clear(main, h("aside", { class: "sidebar" }, h("div", { class: "search" }, filter), list), content);
  const { snapshots } = await api.get("snapshots?limit=300");
  const draw = () => {
    const needle = filter.value.trim().toLowerCase();
    const shown = snapshots.filter((s) => !needle || `${s.handler} ${s.id} ${s.request_id}`.toLowerCase().includes(needle));
    clear(list, shown.length ? shown.map((s) => h("a", { class: `item${s.id === snapshotId ? " active" : ""}`, href: `#/snapshots/${enc(s.id)}` },
      h("div", { class: "title" }, h("span", { class: "mono" }, `#${s.id}`), s.handler, s.status ? statusPill(s.status) : null),
      h("div", { class: "sub" }, `${when(s.at)} · at ${s.version} · ${s.effects} effect${s.effects === 1 ? "" : "s"}`),
      h("div", { class: "sub mono" }, s.request_id))) : h("p", { class: "muted small", style: "padding:8px" }, "No snapshot stored yet. Tick “Store a snapshot” in the Explorer, or set snapshot = true in a method's policy."));
  };
  filter.addEventListener("input", draw);
  draw();
  if (!snapshotId) {
    const first = snapshots[0];
    clear(content, h("h1", {}, "Snapshots"),
      h("p", { class: "lead" }, "A snapshot is a request's lifecycle state: the request, lctx state, tasks, the hooks run, the version, the lifecycle events, and every module call and publish it made. Replay one at any version of its module and compare the two replays."),
      first ? h("p", {}, h("a", { href: `#/snapshots/${enc(first.id)}` }, `Open the newest, #${first.id} (${first.handler}) →`)) : null);
    return;
  }
  await renderSnapshot(content, snapshotId);
}

async function renderSnapshot(content, id) {
  const snap = await api.get(`snapshots/${enc(id)}`);
  const handler = snap.meta.handler;
  const [module, method] = handler.split(".");
  const detail = await moduleDetail(module);
  const ids = detail.versions.map((v) => v.id);
  const other = ids.filter((v) => v !== snap.version);
  const first = select(ids, snap.version, { id: "replay-a", "aria-label": "First version" });
  const second = select(ids, other.length ? other[other.length - 1] : snap.version, { id: "replay-b", "aria-label": "Second version" });
  const live = h("input", { type: "checkbox", id: "replay-live" });
  const button = h("button", { class: "primary", type: "button", id: "replay" }, "Replay both and diff  ⌃↵");
  const out = h("div", { id: "replay-result", "aria-live": "polite" });
  replayNow = async () => {
    button.disabled = true;
    clear(out, h("p", { class: "muted" }, "Replaying in the worker's sandbox…"));
    try {
      const versions = first.value === second.value ? [first.value] : [first.value, second.value];
      renderReplays(out, await api.post(`snapshots/${enc(id)}/replay`, { versions, live: live.checked }));
    } catch (error) {
      clear(out, errorBox(error));
    } finally {
      button.disabled = false;
    }
  };
  button.addEventListener("click", replayNow);

  const hooks = (detail.methods.find((m) => m.name === method) || { hooks: [] }).hooks;
  const hookOut = h("div", { id: "hook-result" });
  const effects = snap.effects || [];
  const end = [...snap.events].reverse().find((e) => e.kind === "lifecycle_end");
  clear(content,
    h("h1", {}, `Snapshot #${id}`, h("span", { class: "mono" }, handler), pill(`at ${snap.version}`, "accent"), end ? statusPill(end.error ? "ERROR" : "OK") : null),
    h("p", { class: "lead" }, "Request id ", h("a", { href: `#/traces/${enc(snap.meta.request_id)}`, class: "mono" }, snap.meta.request_id),
      ` · caller ${snap.meta.principal ? snap.meta.principal.subject : "–"} · ${snap.events.length} lifecycle events`, end && end.error ? ` · failed: ${end.error}` : ""),
    h("div", { class: "panel" },
      h("h2", {}, "Replay"),
      h("p", { class: "muted small" }, "Runs the stored request again through the module's real lifecycle in a sandbox: module calls are answered from the recorded results and nothing is published, unless live calls are allowed. The response is transformed to each version's shape, as a caller pinned to it would get it."),
      h("div", { class: "row" }, h("label", { class: "field" }, "First version", first), h("label", { class: "field" }, "Second version", second),
        h("label", { class: "check", style: "align-self:end;margin-bottom:8px" }, live, "Allow live calls and publishes"), h("span", { class: "grow" }), button),
      out),
    h("div", { class: "two", style: "margin-top:16px" },
      h("div", { class: "panel" }, h("h2", {}, "Request"), jsonView(snap.request), h("h2", {}, "lctx state"), jsonView(snap.state)),
      h("div", { class: "panel" },
        h("h2", {}, "Recorded effects"),
        effects.length ? h("table", { class: "data" }, h("thead", {}, h("tr", {}, h("th", {}, "Kind"), h("th", {}, "Target"), h("th", {}, "Status"), h("th", { class: "num" }, "Took"))),
          h("tbody", {}, effects.map((e) => h("tr", {}, h("td", {}, e.kind === "module_call" ? "module call" : "publish"), h("td", { class: "mono" }, e.target), h("td", {}, statusPill(e.status)), h("td", { class: "num" }, ms(e.duration_ms))))))
          : h("p", { class: "muted" }, "No module call or publish."),
        h("h2", {}, "Lifecycle events"),
        h("ol", { class: "trace-list" }, snap.events.map((e) => h("li", {}, `${e.kind} ${e.name}`, e.duration_ms !== null ? h("span", { class: "faint" }, ` ${ms(e.duration_ms)}`) : null, e.error ? h("span", { class: "removed" }, ` ${e.error}`) : null))))),
    h("div", { class: "panel", style: "margin-top:16px", id: "hooks" },
      h("h2", {}, "Hooks in the manifest"),
      hooks.length ? h("table", { class: "data" }, h("thead", {}, h("tr", {}, ["Hook", "Phase", "Level", "Timeout", "Retries", "Source", ""].map((t) => h("th", {}, t)))),
        h("tbody", {}, hooks.map((hook) => h("tr", {},
          h("td", { class: "mono" }, hook.id), h("td", {}, hook.phase), h("td", {}, hook.level),
          h("td", {}, hook.timeout ?? "–"), h("td", {}, hook.retries ?? 0), h("td", { class: "mono small" }, short(hook.source || "", 48)),
          h("td", {}, h("button", { type: "button", onclick: () => playHook(hookOut, id, hook.id) }, "Play back")))))) : h("p", { class: "muted" }, `${handler} declares no hook.`),
      hookOut));
}

async function playHook(out, id, hook) {
  clear(out, h("p", { class: "muted" }, `Playing back ${hook}…`));
  try {
    const r = await api.post(`snapshots/${enc(id)}/hooks/${enc(hook)}`, {});
    clear(out, h("div", { class: "row", style: "margin-top:12px" }, h("strong", {}, `${r.hook.phase} hook ${r.hook.id}`), statusPill(r.status), h("span", { class: "muted" }, ms(r.duration_ms)), r.message ? h("span", { class: "removed" }, r.message) : null),
      h("div", { class: "two", style: "margin-top:8px" }, h("div", {}, h("h3", {}, "State before"), jsonView(r.state_before)), h("div", {}, h("h3", {}, "State after"), jsonView(r.state_after))));
  } catch (error) {
    clear(out, errorBox(error));
  }
}

function renderReplays(out, answer) {
  const [a, b] = answer.replays;
  const column = (r) => h("div", { class: "replay" },
    h("div", { class: "row" }, h("strong", { class: "mono" }, r.version), statusPill(r.status), r.live ? pill("live", "warn") : pill("sandboxed", "ok")),
    r.message ? h("div", { class: "error-box", style: "margin-top:6px" }, r.message) : null,
    r.response !== null ? h("div", { style: "margin-top:8px" }, jsonView(r.response)) : null,
    h("h3", {}, "Trace"),
    h("ol", { class: "trace-list" }, r.trace.map(([kind, name]) => h("li", {}, `${kind} ${name}`))));
  if (!b) { clear(out, h("div", { style: "margin-top:14px" }, column(a))); return; }
  const d = answer.diff;
  const changes = d.identical ? h("p", { class: "note" }, "The two replays are identical: same status, same response, same trace.")
    : h("div", {},
      d.status ? h("p", {}, "Status ", statusPill(d.status[0]), " → ", statusPill(d.status[1])) : null,
      d.response.length ? h("table", { class: "data", id: "replay-diff" },
        h("thead", {}, h("tr", {}, h("th", {}, "Response path"), h("th", {}, "Change"), h("th", {}, `At ${a.version}`), h("th", {}, `At ${b.version}`))),
        h("tbody", {}, d.response.map((c) => h("tr", {},
          h("td", { class: "mono" }, c.path || "(root)"),
          h("td", {}, pill(c.kind, c.kind === "removed" ? "bad" : c.kind === "added" ? "ok" : "warn")),
          h("td", { class: "mono small removed" }, c.before === null ? "–" : JSON.stringify(c.before)),
          h("td", { class: "mono small added" }, c.after === null ? "–" : JSON.stringify(c.after)))))) : h("p", { class: "muted" }, "Same response."),
      d.trace.length ? h("div", {}, h("h3", {}, "Trace differences"), h("table", { class: "data", id: "trace-diff" },
        h("thead", {}, h("tr", {}, h("th", {}, "Step"), h("th", {}, `At ${a.version}`), h("th", {}, `At ${b.version}`))),
        h("tbody", {}, d.trace.map((c) => h("tr", {}, h("td", {}, `${c.op} at ${c.at}`),
          h("td", { class: "mono small removed" }, c.before.map(([k, n]) => `${k} ${n}`).join("\n") || "–"),
          h("td", { class: "mono small added" }, c.after.map(([k, n]) => `${k} ${n}`).join("\n") || "–")))))) : h("p", { class: "muted" }, "Same lifecycle trace."));
  clear(out, h("h3", {}, "Diff"), changes, h("div", { class: "two", style: "margin-top:14px" }, column(a), column(b)));
}
