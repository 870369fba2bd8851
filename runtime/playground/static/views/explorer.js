// Explorer: a request as JSON, sent through the real gateway with a token.
import { api, enc } from "../api.js";
import { go, moduleDetail, modules, state } from "../app.js";
import { clear, errorBox, h, jsonView, ms, pill, select, statusPill, toast } from "../ui.js";
import { fieldsTable } from "./catalog.js";

export const explorerView = { enter, submit: () => send && send() };

const TOKEN_KEY = "modrpc.playground.call-token";
let send = null;
const drafts = new Map(); // module/method/version -> edited request text

async function enter(main, [moduleName, methodName, versionId]) {
  send = null;
  const all = await modules();
  const module = moduleName || (all[0] && all[0].name);
  if (!module) { clear(main, h("div", { class: "content" }, h("div", { class: "empty" }, "No module to call yet."))); return; }
  const m = await moduleDetail(module);
  const method = methodName && m.methods.some((x) => x.name === methodName) ? methodName : m.methods[0].name;
  const methodInfo = m.methods.find((x) => x.name === method);
  const version = versionId || m.default || methodInfo.versions[methodInfo.versions.length - 1];
  const key = `${module}/${method}/${version}`;

  const moduleSelect = select(all.map((x) => x.name), module, { id: "explorer-module", "aria-label": "Module" });
  const methodSelect = select(m.methods.map((x) => x.name), method, { id: "explorer-method", "aria-label": "Method" });
  const versionSelect = select(m.versions.map((v) => [v.id, `${v.id}${v.labels.length ? ` (${v.labels.join(", ")})` : ""}${v.methods.includes(method) ? "" : " – no such method"}`]), version, { id: "explorer-version", "aria-label": "Version" });
  moduleSelect.addEventListener("change", () => go(`#/explorer/${enc(moduleSelect.value)}`));
  methodSelect.addEventListener("change", () => go(`#/explorer/${enc(module)}/${enc(methodSelect.value)}/${enc(version)}`));
  versionSelect.addEventListener("change", () => go(`#/explorer/${enc(module)}/${enc(method)}/${enc(versionSelect.value)}`));

  const token = h("input", { type: "password", id: "explorer-token", placeholder: "bearer token (JWT)", autocomplete: "off", "aria-label": "Bearer token", class: "grow", value: sessionStorage.getItem(TOKEN_KEY) || "" });
  token.addEventListener("change", () => sessionStorage.setItem(TOKEN_KEY, token.value.trim()));
  const reveal = h("button", { type: "button", title: "Show or hide the token", onclick: () => { token.type = token.type === "password" ? "text" : "password"; } }, "Show");
  const mint = state.session.can_mint ? h("button", { type: "button", id: "mint-token", onclick: () => mintToken(token, all) }, "Mint dev token") : null;
  const snapshotRoles = state.session.snapshot_roles || [];
  const snapshot = h("input", { type: "checkbox", id: "explorer-snapshot", disabled: !snapshotRoles.length });
  const editor = h("textarea", { id: "request-editor", spellcheck: "false", rows: "8", "aria-label": "Request JSON" });
  const sendButton = h("button", { class: "primary", type: "button", id: "send" }, "Send  ⌃↵");
  const result = h("div", { id: "response", "aria-live": "polite" }, h("div", { class: "empty" }, "Send the request to see the gateway's answer."));
  const rules = h("div", {});
  const schemaNote = h("span", { class: "faint small" });

  let example = {};
  const load = api.get(`modules/${enc(module)}/versions/${enc(version)}`).then((schema) => {
    const entry = schema.methods.find((x) => x.name === method);
    if (!entry) {
      clear(rules, h("p", { class: "error-box" }, `${module} ${version} has no method ${method}: a call at it is answered UNIMPLEMENTED or transformed, as the gateway decides.`));
      return;
    }
    example = entry.example;
    if (!drafts.has(key)) editor.value = JSON.stringify(example, null, 2);
    clear(schemaNote, `${entry.request.message} at ${schema.version}`);
    clear(rules, fieldsTable("Request", entry.request), h("div", { style: "height:12px" }), fieldsTable("Response", entry.response));
  }).catch((error) => clear(rules, errorBox(error)));
  if (drafts.has(key)) editor.value = drafts.get(key);
  editor.addEventListener("input", () => drafts.set(key, editor.value));
  editor.addEventListener("keydown", (event) => {
    if (event.key === "Tab" && !event.shiftKey && !event.ctrlKey) {
      // two spaces, unless the caret is at the very end: then Tab leaves the editor
      if (editor.selectionStart !== editor.value.length) {
        event.preventDefault();
        editor.setRangeText("  ", editor.selectionStart, editor.selectionEnd, "end");
      }
    }
  });

  send = async () => {
    let request;
    try {
      request = JSON.parse(editor.value || "{}");
    } catch (error) {
      clear(result, errorBox({ code: "INVALID_ARGUMENT", message: `the request is not JSON: ${error.message}` }));
      return;
    }
    sendButton.disabled = true;
    sessionStorage.setItem(TOKEN_KEY, token.value.trim());
    try {
      const answer = await api.post("call", {
        module, method, version, request, token: token.value.trim() || null,
        flags: snapshot.checked ? ["snapshot"] : [],
      });
      renderAnswer(result, answer, snapshot.checked);
    } catch (error) {
      clear(result, errorBox(error));
    } finally {
      sendButton.disabled = false;
    }
  };
  sendButton.addEventListener("click", send);

  const left = h("div", {},
    h("h1", {}, "Explorer"),
    h("p", { class: "lead" }, "The request goes through the real gateway: authentication, version resolution, roles, rate limits and transformers all apply."),
    h("div", { class: "panel" },
      h("div", { class: "row" },
        h("label", { class: "field" }, "Module", moduleSelect),
        h("label", { class: "field" }, "Method", methodSelect),
        h("label", { class: "field" }, "x-api-version", versionSelect)),
      h("div", { class: "row", style: "margin-top:12px" }, h("label", { class: "field grow" }, "Token", h("div", { class: "row" }, token, reveal, mint))),
      h("p", { class: "small faint", style: "margin:6px 0 0" }, "Roles this method needs: ", (methodInfo.policy.roles || []).length ? methodInfo.policy.roles.map((r) => pill(r, "outline")) : pill(methodInfo.policy.public ? "public" : "none", "outline"))),
    h("div", { class: "panel" },
      h("div", { class: "editor-head" }, h("div", {}, h("strong", {}, "Request"), " ", schemaNote),
        h("button", { type: "button", onclick: () => { editor.value = JSON.stringify(example, null, 2); drafts.delete(key); } }, "Reset to example")),
      editor,
      h("div", { class: "row spread", style: "margin-top:10px" },
        h("label", { class: "check", title: snapshotRoles.length ? `the gateway honours it for the roles ${snapshotRoles.join(", ")}` : "no role may: set auth.snapshot_roles" },
          snapshot, "Store a snapshot of this call (", h("code", {}, "x-flags: snapshot"), ")",
          snapshotRoles.length ? null : h("span", { class: "faint small" }, " – needs auth.snapshot_roles")),
        sendButton)),
    h("div", { class: "panel" }, h("strong", {}, "Fields and rules at this version"), h("div", { style: "margin-top:8px" }, rules)));
  const right = h("div", {}, h("h1", {}, "Response"), h("div", { class: "panel" }, result));
  clear(main, h("section", { class: "content split", "aria-label": "Explorer" }, left, right));
  await load;
}

async function mintToken(input, all) {
  const roles = new Set(state.session.snapshot_roles || []);
  for (const m of all) {
    const detail = await moduleDetail(m.name);
    for (const method of detail.methods) for (const role of method.policy.roles || []) roles.add(role);
  }
  try {
    const answer = await api.post("token", { subject: "playground", roles: [...roles].sort() });
    input.value = answer.token;
    sessionStorage.setItem(TOKEN_KEY, answer.token);
    toast(`Minted a development token with ${answer.roles.length} roles, valid ${Math.round(answer.expires_in / 3600)} h.`);
  } catch (error) {
    toast(`${error.code}: ${error.message}`, true);
  }
}

function renderAnswer(out, a, snapshotted) {
  const violations = [];
  for (const detail of a.details) {
    if (detail.type === "google.rpc.BadRequest") for (const v of detail.field_violations || []) violations.push(v);
  }
  const others = a.details.filter((d) => d.type !== "google.rpc.BadRequest");
  clear(out,
    h("div", { class: "response-head" },
      statusPill(a.code),
      h("span", { class: "mono", id: "response-time" }, ms(a.elapsed_ms)),
      h("span", { class: "muted" }, "request id"),
      h("code", { id: "response-request-id" }, a.request_id),
      h("a", { href: `#/traces/${enc(a.request_id)}`, id: "open-trace", class: "pill accent" }, "Open trace →"),
      snapshotted ? h("a", { href: "#/snapshots", class: "pill info" }, "Snapshot stored →") : null),
    a.message ? h("div", { class: a.code === "OK" ? "note" : "error-box", id: "response-message" }, a.message) : null,
    violations.length ? h("div", { style: "margin-top:12px" },
      h("strong", {}, "Field violations"), h("span", { class: "faint small" }, " google.rpc.BadRequest"),
      h("table", { class: "data", id: "violations" }, h("thead", {}, h("tr", {}, h("th", {}, "Field"), h("th", {}, "Problem"))),
        h("tbody", {}, violations.map((v) => h("tr", {}, h("td", { class: "mono" }, v.field), h("td", {}, v.description)))))) : null,
    others.map((d) => h("div", { style: "margin-top:12px" }, h("strong", {}, d.type), jsonView(Object.fromEntries(Object.entries(d).filter(([k]) => k !== "type"))))),
    a.response !== null ? h("div", { style: "margin-top:12px" }, h("strong", {}, "Response body"), h("div", { id: "response-body", style: "margin-top:6px" }, jsonView(a.response))) : null,
    h("div", { class: "two", style: "margin-top:14px" },
      h("div", {}, h("strong", {}, "Trailers"), h("dl", { class: "kv", id: "trailers" }, a.trailers.length ? a.trailers.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]) : [h("dt", {}, "none")])),
      h("div", {}, h("strong", {}, "Sent"), h("dl", { class: "kv" },
        h("dt", {}, ":path"), h("dd", {}, a.path),
        a.metadata.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])))));
}
