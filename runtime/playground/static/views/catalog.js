// Catalog: modules, versions and labels, methods and their policies, schemas, diffs.
import { api, enc } from "../api.js";
import { go, moduleDetail, modules } from "../app.js";
import { clear, errorBox, h, pill, select, walkable } from "../ui.js";

export const catalogView = { enter };

async function enter(main, [name, section, ...rest]) {
  const all = await modules();
  const chosen = name || (all[0] && all[0].name);
  const sidebar = moduleSidebar(all, chosen, (m) => `#/catalog/${enc(m)}`);
  const content = h("section", { class: "content", "aria-label": "Module" });
  clear(main, sidebar, content);
  if (!chosen) {
    clear(content, h("div", { class: "empty" }, "No module is routed by the gateway yet."));
    return;
  }
  const detail = await moduleDetail(chosen);
  renderModule(content, detail, section, rest);
}

export function moduleSidebar(all, chosen, link) {
  const search = h("input", { type: "search", placeholder: "Filter modules  /", "aria-label": "Filter modules", "data-search": "1" });
  const list = walkable(h("nav", { class: "list", "aria-label": "Modules" }));
  const draw = () => {
    const needle = search.value.trim().toLowerCase();
    clear(list, all
      .filter((m) => !needle || m.name.includes(needle) || m.service.toLowerCase().includes(needle) || m.methods.some((x) => x.toLowerCase().includes(needle)))
      .map((m) => h("a", { class: `item${m.name === chosen ? " active" : ""}`, href: link(m.name), "aria-current": m.name === chosen ? "page" : null },
        h("div", { class: "title" }, m.name, m.served.length ? null : pill("no worker", "bad")),
        h("div", { class: "sub mono" }, m.service),
        h("div", { class: "sub" }, `${m.versions.length} version${m.versions.length === 1 ? "" : "s"} · ${m.methods.length} method${m.methods.length === 1 ? "" : "s"} · `, h("span", { class: "mono" }, m.default || "–")))));
  };
  search.addEventListener("input", draw);
  search.addEventListener("keydown", (event) => {
    if (event.key === "Enter") { const first = list.querySelector("a"); if (first) { first.click(); first.focus(); } }
  });
  draw();
  return h("aside", { class: "sidebar" }, h("div", { class: "search" }, search), list);
}

function renderModule(content, m, section, rest) {
  const versions = m.versions;
  const newest = versions[versions.length - 1];
  const previous = versions.length > 1 ? versions[versions.length - 2] : newest;
  const schemaAt = section === "schema" && rest[0] ? rest[0] : (m.default || newest.id);
  const diffFrom = section === "diff" && rest[0] ? rest[0] : previous.id;
  const diffTo = section === "diff" && rest[1] ? rest[1] : newest.id;

  const schemaPanel = h("div", { class: "panel", id: "schema" });
  const diffPanel = h("div", { class: "panel", id: "diff" });
  clear(content,
    h("h1", {}, m.name, h("span", { class: "pill outline mono" }, `${m.methods[0] ? m.methods[0].path.split("/")[1] : ""}`), m.semver ? pill(`v${m.semver}`) : null),
    h("p", { class: "lead" }, m.description || "No description."),
    h("div", { class: "row" },
      h("span", { class: "muted" }, "Default version"), pill(m.default || "none", "accent"),
      h("span", { class: "muted" }, "· served by workers"), ...(m.served.length ? m.served.map((v) => pill(v, "ok")) : [pill("none running", "bad")]),
      capabilities(m.capabilities)),
    h("h2", {}, "Versions", h("span", { class: "faint small" }, "oldest first; a call at any of them is served as shown")),
    versionCards(m, schemaAt),
    h("h2", {}, "Methods"),
    h("div", { class: "panel" }, methodsTable(m)),
    h("h2", { id: "schema-title" }, "Schema"),
    schemaPanel,
    h("h2", { id: "diff-title" }, "Diff between versions"),
    diffPanel);
  Promise.all([renderSchema(schemaPanel, m, schemaAt), renderDiff(diffPanel, m, diffFrom, diffTo)]).then(() => {
    const target = section === "diff" ? diffPanel : section === "schema" ? schemaPanel : null;
    if (target) target.scrollIntoView({ block: "start" });
  });
}

function capabilities(caps) {
  if (!caps) return null;
  const chips = [];
  for (const [kind, values] of Object.entries(caps)) {
    for (const value of values || []) chips.push(pill(`${kind}: ${value}`, "info"));
  }
  return chips.length ? h("span", { class: "row" }, h("span", { class: "muted" }, "· capabilities"), chips) : null;
}

function versionCards(m, selected) {
  const row = h("div", { class: "versions", role: "list" });
  m.versions.forEach((v, i) => {
    if (i > 0) row.append(h("span", { class: "arrow", "aria-hidden": "true" }, v.breaking ? "⇢" : "→"));
    const route = v.route
      ? (v.route.target === v.id ? "served as is" : `→ ${v.route.target} via ${v.route.hops.length} hop${v.route.hops.length === 1 ? "" : "s"}`)
      : "not routable";
    row.append(h("button", {
      class: `version${v.id === selected ? " selected" : ""}`, type: "button", role: "listitem",
      title: `Show the schema at ${v.id}`,
      onclick: () => go(`#/catalog/${enc(m.name)}/schema/${enc(v.id)}`),
    },
      h("div", { class: "id" }, v.id),
      h("div", { class: "meta" },
        v.labels.map((l) => pill(l, "accent")),
        v.breaking ? pill("breaking", "bad") : (v.parent ? pill("compatible", "ok") : pill("first", "outline")),
        v.transformer ? pill("transformer", "warn") : null,
        v.served ? pill("served", "ok") : null,
        v.retired ? pill("retired", "bad") : null,
        v.cold ? pill("cold", "info") : null),
      h("div", { class: "sub small muted", style: "margin-top:6px" },
        v.changes ? `${v.changes.total} change${v.changes.total === 1 ? "" : "s"}, ${v.changes.breaking} breaking · ` : "",
        route)));
  });
  return row;
}

function methodsTable(m) {
  const rows = m.methods.map((method) => {
    const p = method.policy || {};
    return h("tr", {},
      h("td", {}, h("strong", {}, method.name), h("div", { class: "faint small mono", title: method.path }, method.handler)),
      h("td", {}, p.public ? pill("public", "warn") : (p.roles || []).map((r) => pill(r, "outline"))),
      h("td", { class: "small nowrap" }, h("div", { class: "mono" }, p.rate_limit || "no rate limit"),
        h("div", { class: "faint" }, p.timeout !== undefined ? `timeout ${p.timeout}s` : "")),
      h("td", {}, p.idempotent ? pill("idempotent", "ok") : pill("no", "outline"),
        p.retry && p.idempotent ? h("div", { class: "faint small" }, `retries ${p.retry.attempts}×`) : null),
      h("td", {}, p.snapshot ? pill("every call", "info") : h("span", { class: "faint small" }, "on flag")),
      h("td", { class: "small" }, method.hooks.length ? method.hooks.map((x) => pill(`${x.phase} ${x.id}`, "info")) : h("span", { class: "faint" }, "–")),
      h("td", { class: "small mono nowrap" }, method.versions.map((v) => h("div", {}, v))),
      h("td", {}, h("a", { href: `#/explorer/${enc(m.name)}/${enc(method.name)}/${enc(m.default || method.versions[method.versions.length - 1])}`, class: "nowrap" }, "Try it →")));
  });
  return h("table", { class: "data" },
    h("thead", {}, h("tr", {}, ["Method", "Roles", "Limits", "Idempotent", "Snapshots", "Hooks", "Versions", ""].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows));
}

async function renderSchema(panel, m, version) {
  const picker = select(m.versions.map((v) => [v.id, `${v.id}${v.labels.length ? ` (${v.labels.join(", ")})` : ""}`]), version, { "aria-label": "Schema version" });
  picker.addEventListener("change", () => go(`#/catalog/${enc(m.name)}/schema/${enc(picker.value)}`));
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  clear(panel, h("div", { class: "row spread" }, h("div", { class: "row" }, h("span", { class: "muted" }, "At version"), picker)), body);
  try {
    const schema = await api.get(`modules/${enc(m.name)}/versions/${enc(version)}`);
    clear(body, schema.methods.map((method) => h("div", {},
      h("h3", {}, h("span", { class: "mono" }, method.name), " ", h("span", { class: "faint" }, `${method.request.message} → ${method.response.message}`)),
      h("div", { class: "two" },
        fieldsTable("Request", method.request),
        fieldsTable("Response", method.response)))));
  } catch (error) {
    clear(body, errorBox(error));
  }
}

export function fieldsTable(title, message) {
  return h("div", {},
    h("div", { class: "small muted", style: "margin-bottom:4px" }, `${title} · ${message.type}`),
    h("table", { class: "data" },
      h("thead", {}, h("tr", {}, h("th", {}, "Field"), h("th", { class: "num" }, "#"), h("th", {}, "Type"), h("th", {}, "Rules"))),
      h("tbody", {}, message.fields.length ? message.fields.map((f) => h("tr", {},
        h("td", { class: "mono" }, h("span", { class: "indent", style: `width:${f.depth * 14}px` }), f.name),
        h("td", { class: "num faint" }, f.number ?? ""),
        h("td", { class: "mono small" }, f.type),
        h("td", {}, h("div", { class: "constraints" },
          f.required ? pill("required", "warn") : pill(f.default !== null && f.default !== undefined ? `default ${JSON.stringify(f.default)}` : "optional", "outline"),
          f.constraints.map((c) => pill(c, "info")))))) : h("tr", {}, h("td", { colspan: "4", class: "faint" }, "no fields")))));
}

async function renderDiff(panel, m, from, to) {
  const ids = m.versions.map((v) => v.id);
  const a = select(ids, from, { "aria-label": "Diff from version", id: "diff-from" });
  const b = select(ids, to, { "aria-label": "Diff to version", id: "diff-to" });
  const change = () => go(`#/catalog/${enc(m.name)}/diff/${enc(a.value)}/${enc(b.value)}`);
  a.addEventListener("change", change);
  b.addEventListener("change", change);
  const body = h("div", { id: "diff-body" }, h("p", { class: "muted" }, "Loading…"));
  clear(panel, h("div", { class: "row" }, h("span", { class: "muted" }, "From"), a, h("span", { class: "muted" }, "to"), b), body);
  if (from === to) { clear(body, h("p", { class: "muted" }, "Pick two different versions.")); return; }
  try {
    const d = await api.get(`modules/${enc(m.name)}/diff?from=${enc(from)}&to=${enc(to)}`);
    const summary = h("div", { class: "row", style: "margin:12px 0" },
      d.breaking ? pill("breaking", "bad") : pill("compatible", "ok"),
      h("span", { class: "muted" }, `${d.changes.length} change${d.changes.length === 1 ? "" : "s"}, ${d.changes.filter((c) => c.breaking).length} breaking for a caller pinned to ${d.direction === "forward" ? d.from : d.to}`));
    const changes = h("div", { role: "list", "aria-label": "Changes" }, d.changes.map((c) => h("div", { class: "change", role: "listitem" },
      h("span", {}, c.breaking ? pill("BREAKING", "bad") : pill("compatible", "ok")),
      h("span", { class: `small ${c.kind.endsWith("removed") ? "removed" : c.kind.endsWith("added") ? "added" : ""}` }, c.kind.replaceAll("_", " ")),
      h("span", {}, h("span", { class: "path" }, c.path), c.detail ? h("span", { class: "muted small" }, ` — ${c.detail}`) : null))));
    const bridge = h("div", {},
      h("h3", {}, "Transformers between them"),
      !d.bridged ? h("p", { class: "error-box" }, "No transformer chain joins these versions: callers are routed to each side by x-api-version.")
        : d.steps.length === 0 ? h("p", { class: "muted" }, "Nothing to transform.")
          : d.steps.map((s) => h("div", { class: "panel" },
            h("div", { class: "row" }, h("strong", { class: "mono" }, `${s.from} → ${s.to}`), s.breaking ? pill("breaking step", "bad") : pill("compatible step", "ok")),
            h("div", { class: "small", style: "margin-top:6px" },
              h("span", { class: "muted" }, "forward requests: "), s.forward.length ? s.forward.join(", ") : "none",
              h("span", { class: "muted" }, " · backward responses: "), s.backward.length ? s.backward.join(", ") : "none"),
            s.source ? h("details", { class: "source" }, h("summary", {}, "Transformer source"), h("pre", { class: "code" }, s.source))
              : h("p", { class: "faint small" }, "Identity step: field numbers are never reused, so the bytes carry over."))));
    clear(body, summary, changes, bridge);
  } catch (error) {
    clear(body, errorBox(error));
  }
}
