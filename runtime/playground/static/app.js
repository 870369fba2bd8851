// The playground's shell: session, routing by location hash, keyboard shortcuts.
import { api, ApiError, setAccessToken, accessToken } from "./api.js";
import { clear, h, pill, toast } from "./ui.js";
import { catalogView } from "./views/catalog.js";
import { explorerView } from "./views/explorer.js";
import { tracesView } from "./views/traces.js";
import { snapshotsView } from "./views/snapshots.js";
import { liveView } from "./views/live.js";

const VIEWS = { catalog: catalogView, explorer: explorerView, traces: tracesView, snapshots: snapshotsView, live: liveView };
const ORDER = ["catalog", "explorer", "traces", "snapshots", "live"];

export const state = { session: null, modules: null, details: new Map(), token: "" };

export async function modules() {
  if (!state.modules) state.modules = (await api.get("modules")).modules;
  return state.modules;
}

export async function moduleDetail(name) {
  if (!state.details.has(name)) state.details.set(name, await api.get(`modules/${encodeURIComponent(name)}`));
  return state.details.get(name);
}

export function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

let current = null;

async function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const name = VIEWS[parts[0]] ? parts[0] : "catalog";
  for (const tab of document.querySelectorAll(".tabs a")) {
    const active = tab.dataset.view === name;
    tab.classList.toggle("active", active);
    if (active) tab.setAttribute("aria-current", "page"); else tab.removeAttribute("aria-current");
  }
  if (current && current.leave) current.leave();
  const main = document.getElementById("main");
  current = VIEWS[name];
  document.title = `${name[0].toUpperCase()}${name.slice(1)} · modrpc playground`;
  try {
    await current.enter(main, parts.slice(1));
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403) && state.session && state.session.mode === "token") {
      showLogin();
    }
    clear(main, h("div", { class: "content" }, h("div", { class: "error-box", role: "alert" }, `${error.code || "Error"}: ${error.message}`)));
  }
}

function showLogin() {
  const login = document.getElementById("login");
  document.getElementById("login-role").textContent = state.session.role;
  login.hidden = false;
  document.getElementById("login-token").focus();
}

async function boot() {
  state.session = await api.get("session");
  const status = document.getElementById("session");
  clear(status,
    pill(state.session.mode === "open" ? "loopback · no token needed" : `token with ${state.session.role}`, "outline"),
    h("span", {}, "gateway ", h("code", {}, state.session.gateway)));
  if (state.session.mode === "token" && !accessToken()) showLogin();
  document.getElementById("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setAccessToken(document.getElementById("login-token").value.trim());
    document.getElementById("login").hidden = true;
    state.modules = null;
    route();
  });
  const help = document.getElementById("help");
  document.getElementById("help-button").addEventListener("click", () => help.showModal());
  document.getElementById("help-close").addEventListener("click", () => help.close());
  window.addEventListener("hashchange", route);
  document.addEventListener("keydown", onKey);
  await route();
}

function typing(target) {
  return target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}

function onKey(event) {
  if (event.defaultPrevented) return;
  const help = document.getElementById("help");
  if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
    if (current && current.submit) { event.preventDefault(); current.submit(); }
    return;
  }
  if (typing(event.target) || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key >= "1" && event.key <= "5") {
    event.preventDefault();
    go(`#/${ORDER[Number(event.key) - 1]}`);
  } else if (event.key === "?") {
    event.preventDefault();
    help.open ? help.close() : help.showModal();
  } else if (event.key === "/") {
    const search = document.querySelector("[data-search]");
    if (search) { event.preventDefault(); search.focus(); search.select && search.select(); }
  } else if (event.key === "j" || event.key === "k") {
    walk(event.key === "j" ? 1 : -1) && event.preventDefault();
  }
}

function walk(step) {
  const list = document.querySelector("[data-walk]");
  if (!list) return false;
  const items = [...list.querySelectorAll("a, button, tr[tabindex]")];
  if (!items.length) return false;
  const at = items.indexOf(document.activeElement);
  const next = items[Math.min(items.length - 1, Math.max(0, at < 0 ? (step > 0 ? 0 : items.length - 1) : at + step))];
  next.focus();
  next.scrollIntoView({ block: "nearest" });
  return true;
}

boot().catch((error) => {
  toast(`the playground could not start: ${error.message}`, true);
});
