// Small DOM helpers shared by the views: element building, JSON rendering, formatting.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    // CSSOM, not the style attribute: the page's CSP allows no inline style attributes.
    else if (key === "style") el.style.cssText = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "html") throw new Error("no raw HTML");
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function pill(text, kind = "") {
  return h("span", { class: `pill ${kind}` }, text);
}

export function statusPill(code) {
  if (!code) return pill("…");
  return pill(code, code === "OK" ? "ok" : "bad");
}

// JSON, pretty-printed with a class per token kind (no innerHTML anywhere).
export function jsonView(value) {
  const pre = h("pre", { class: "json", tabindex: "0" });
  render(pre, value, 0);
  return pre;
}

function render(out, value, depth) {
  const pad = "  ".repeat(depth);
  if (value === null || value === undefined) {
    out.append(h("span", { class: "z" }, "null"));
  } else if (Array.isArray(value)) {
    if (!value.length) { out.append("[]"); return; }
    out.append("[\n");
    value.forEach((item, i) => {
      out.append(pad + "  ");
      render(out, item, depth + 1);
      out.append(i < value.length - 1 ? ",\n" : "\n");
    });
    out.append(pad + "]");
  } else if (typeof value === "object") {
    const keys = Object.keys(value);
    if (!keys.length) { out.append("{}"); return; }
    out.append("{\n");
    keys.forEach((key, i) => {
      out.append(pad + "  ", h("span", { class: "k" }, JSON.stringify(key)), ": ");
      render(out, value[key], depth + 1);
      out.append(i < keys.length - 1 ? ",\n" : "\n");
    });
    out.append(pad + "}");
  } else if (typeof value === "string") {
    out.append(h("span", { class: "s" }, JSON.stringify(value)));
  } else if (typeof value === "number") {
    out.append(h("span", { class: "n" }, String(value)));
  } else {
    out.append(h("span", { class: "b" }, String(value)));
  }
}

export function ms(value) {
  if (value === null || value === undefined) return "–";
  if (value >= 1000) return `${(value / 1000).toFixed(2)} s`;
  if (value >= 100) return `${value.toFixed(0)} ms`;
  if (value >= 10) return `${value.toFixed(1)} ms`;
  return `${value.toFixed(2)} ms`;
}

export function when(seconds) {
  if (!seconds) return "–";
  const date = new Date(seconds * 1000);
  const age = (Date.now() - date.getTime()) / 1000;
  if (age < 60) return `${Math.max(0, Math.round(age))}s ago`;
  if (age < 3600) return `${Math.round(age / 60)}m ago`;
  return date.toLocaleString();
}

export function clock(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "–";
}

export function short(text, length = 14) {
  return text && text.length > length ? `${text.slice(0, length)}…` : text || "";
}

let toastTimer = 0;
export function toast(message, bad = false) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = bad ? "toast bad" : "toast";
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, bad ? 6000 : 2500);
}

export function errorBox(error) {
  return h("div", { class: "error-box", role: "alert" }, error.code ? `${error.code}: ` : "", error.message || String(error));
}

// A list the keyboard can walk with j/k: items are buttons or links inside `container`.
export function walkable(container) {
  container.dataset.walk = "1";
  return container;
}

export function select(options, value, attrs = {}) {
  const el = h("select", attrs);
  for (const option of options) {
    const [val, label] = Array.isArray(option) ? option : [option, option];
    el.append(h("option", { value: val, selected: val === value }, label));
  }
  return el;
}
