// Live: per method, calls per second, error rate and latency, from the /metrics counters.
import { api } from "../api.js";
import { clear, h, ms, select } from "../ui.js";

export const liveView = { enter, leave };

let timer = 0;
let windowSeconds = "300";

function leave() { clearInterval(timer); }

async function enter(main) {
  clearInterval(timer);
  const picker = select([["60", "last minute"], ["300", "last 5 minutes"], ["900", "last 15 minutes"]], windowSeconds, { "aria-label": "Window" });
  const body = h("div", { class: "panel" }, h("p", { class: "muted" }, "Loading…"));
  const note = h("span", { class: "muted small" });
  clear(main, h("section", { class: "content", "aria-label": "Live" },
    h("h1", {}, "Live"),
    h("p", { class: "lead" }, "Per method through the gateway: calls per second, error rate and p50/p99 latency, computed from the same counters ", h("a", { href: "../metrics" }, "/metrics"), " exports. Refreshed every 2 seconds."),
    h("div", { class: "row", style: "margin-bottom:12px" }, picker, note),
    body));
  const draw = async () => {
    try {
      const live = await api.get(`live?window=${windowSeconds}`);
      clear(note, live.covered_s < Number(windowSeconds) - 5 ? `${Math.round(live.covered_s)} s of samples so far` : "");
      clear(body, live.methods.length ? h("table", { class: "data", id: "live-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Method"), h("th", { class: "num" }, "Calls/s"), h("th", { class: "num" }, "Errors"), h("th", { class: "num" }, "p50"), h("th", { class: "num" }, "p99"), h("th", { class: "num" }, "Calls in window"), h("th", {}, "Calls/s over the window"))),
        h("tbody", {}, live.methods.map((m) => h("tr", {},
          h("td", { class: "mono" }, m.method),
          h("td", { class: "num" }, m.rate.toFixed(2)),
          h("td", { class: `num ${m.error_rate > 0 ? "removed" : ""}` }, `${(m.error_rate * 100).toFixed(1)}%`),
          h("td", { class: "num" }, ms(m.p50_ms)),
          h("td", { class: "num" }, ms(m.p99_ms)),
          h("td", { class: "num" }, String(Math.round(m.calls))),
          h("td", {}, spark(m.series))))))
        : h("p", { class: "muted" }, "No call has gone through the gateway yet."));
    } catch (error) {
      clear(note, `${error.code}: ${error.message}`);
    }
  };
  picker.addEventListener("change", () => { windowSeconds = picker.value; draw(); });
  await draw();
  timer = setInterval(draw, 2000);
}

function spark(values) {
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 160 28");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `calls per second, peak ${Math.max(0, ...values).toFixed(1)}`);
  if (values.length < 2) return svg;
  const peak = Math.max(...values, 0.001);
  const points = values.map((v, i) => [(i / (values.length - 1)) * 160, 26 - (v / peak) * 24]);
  const line = points.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
  const area = document.createElementNS(NS, "path");
  area.setAttribute("class", "area");
  area.setAttribute("d", `${line} L160,28 L0,28 Z`);
  const path = document.createElementNS(NS, "path");
  path.setAttribute("d", line);
  svg.append(area, path);
  return svg;
}
