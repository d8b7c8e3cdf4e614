/* tpusim HTML report: draws every view from the JSON embedded in the page (no network, no
   libraries). Each render* function owns one <section>. */
"use strict";
const T0 = performance.now();
const D = JSON.parse(document.getElementById("report-data").textContent);
const NS = "http://www.w3.org/2000/svg";
const BOUND_COLORS = { compute: "#4c78a8", memory: "#f58518", vector: "#54a24b", overhead: "#9d9d9d", communication: "#b279a2" };
const KIND_COLORS = ["#4c78a8", "#72b7b2", "#9d755d", "#bab0ac", "#f58518", "#e45756", "#54a24b", "#b279a2", "#eeca3b"];
const FOLD_COLORS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d"];

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid);
  return e;
}
function s(tag, attrs, parent) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  if (parent) parent.append(e);
  return e;
}
function tip(e, text) { s("title", { text }, e); return e; }
function body(id) { const sec = document.getElementById(id); return sec.querySelector(".content"); }
function fmtUs(us) {
  if (us === null || us === undefined) return "-";
  const a = Math.abs(us);
  if (a >= 1e6) return (us / 1e6).toFixed(3) + " s";
  if (a >= 1e3) return (us / 1e3).toFixed(3) + " ms";
  if (a >= 1) return us.toFixed(1) + " us";
  return (us * 1e3).toFixed(0) + " ns";
}
function si(x, unit) {
  if (x === null || x === undefined) return "-";
  const a = Math.abs(x);
  const steps = [[1e15, "P"], [1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [f, p] of steps) if (a >= f) return (x / f).toFixed(a / f >= 100 ? 0 : 2) + " " + p + (unit || "");
  return (Number.isInteger(x) ? x : x.toFixed(2)) + " " + (unit || "");
}
function bytes(b) {
  if (b === null || b === undefined) return "-";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0; while (Math.abs(b) >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return b.toFixed(i ? 2 : 0) + " " + u[i];
}
function pct(x) { return (100 * x).toFixed(1) + "%"; }
function width(el) { return Math.max(480, Math.min(1240, el.clientWidth || 1000)); }
function legend(items) {
  const d = h("div", { class: "legend" });
  for (const [name, color] of items) d.append(h("span", {}, h("span", { class: "swatch", style: "background:" + color }), name));
  return d;
}
function logTicks(lo, hi) { const t = []; for (let e = Math.ceil(Math.log10(lo)); e <= Math.floor(Math.log10(hi)); e++) t.push(10 ** e); return t; }

/* ---- overview ------------------------------------------------------------------------- */
function renderOverview() {
  const o = D.overview, m = D.meta, c = body("overview");
  const card = (k, v, cls) => h("div", { class: "card " + (cls || "") }, h("div", { class: "v", text: v }), h("div", { class: "k", text: k }));
  const fit = o.capacity === null ? "no capacity stated" : (o.fits ? "fits" : "does NOT fit");
  c.append(h("div", { class: "cards" },
    card("step time (estimate)", fmtUs(o.step_us)),
    card("achieved TFLOP/s", o.tflops.toFixed(1)),
    card(m.matrix_unit + " utilization (MFU)", pct(o.mxu_utilization)),
    card("HBM bandwidth used", pct(o.hbm_utilization)),
    card("peak HBM / capacity: " + fit, bytes(o.peak_hbm_bytes) + " / " + bytes(o.capacity), o.fits ? "good" : "bad"),
    card("energy per step", o.energy_j === null ? "-" : si(o.energy_j, "J")),
    card("cost per step" + (o.devices > 1 ? " (" + o.devices + " devices)" : ""), o.usd_per_step === null ? "-" : "US$" + o.usd_per_step.toExponential(2))));
  c.append(h("p", { text: "What bounds it: " + o.verdict + ". " + o.kernel_count + " kernels; " + si(o.flops, "FLOP") +
    " counted, " + bytes(o.hbm_bytes) + " of HBM traffic" + (o.communication_us ? "; collectives " + fmtUs(o.communication_us) +
    " of which " + fmtUs(o.exposed_communication_us) + " exposed" : "") + "." }));
  const bar = h("div", { class: "bar" });
  const total = Object.values(o.by_bound_us).reduce((a, b) => a + b, 0) || 1;
  for (const [b, us] of Object.entries(o.by_bound_us).sort((x, y) => y[1] - x[1])) {
    bar.append(tip(h("div", { style: `width:${100 * us / total}%;background:${BOUND_COLORS[b] || "#ccc"}`, title: `${b}: ${fmtUs(us)}` }), b));
  }
  c.append(h("div", { class: "k", text: "time by what bounds each kernel" }), bar, legend(Object.keys(o.by_bound_us).map(b => [b + " " + fmtUs(o.by_bound_us[b]), BOUND_COLORS[b] || "#ccc"])));
  const top = [...D.kernels].sort((a, b) => b.time_us - a.time_us).slice(0, 10);
  const t = h("table", {}, h("tr", {}, h("th", { class: "l", text: "top kernels" }), h("th", { text: "time" }), h("th", { text: "% step" }), h("th", { class: "l", text: "bound" })));
  for (const k of top) t.append(h("tr", {}, h("td", { class: "l name", text: k.name }), h("td", { text: fmtUs(k.time_us) }), h("td", { text: pct(k.time_us / o.step_us) }), h("td", { class: "l", text: k.bound })));
  c.append(h("div", { style: "margin-top:10px" }, t));
  if (o.price) c.append(h("p", { class: "note", text: "price: " + o.price }));
}

/* ---- op profile ----------------------------------------------------------------------- */
function renderOps() {
  const c = body("ops");
  const cols = [["#", "i"], ["kernel", "name", "l"], ["kind", "kind", "l"], ["time", "time_us"], ["% step", "time_us"],
    ["wasted", "wasted_us"], ["bound", "bound", "l"], ["TFLOP/s", "tflops"], ["GB/s", "gbps"], ["FLOPs", "flops"], ["HBM bytes", "bytes"], ["source", "source", "l"]];
  const rows = D.kernels.map(k => Object.assign({}, k, { tflops: k.time_us ? k.flops / k.time_us / 1e6 : 0, gbps: k.time_us ? k.bytes / k.time_us / 1e3 : 0 }));
  let key = "time_us", desc = true;
  const table = h("table", { id: "op-table" });
  const draw = () => {
    rows.sort((a, b) => { const x = a[key], y = b[key]; const r = typeof x === "string" ? x.localeCompare(y) : x - y; return desc ? -r : r; });
    table.replaceChildren(h("tr", {}, ...cols.map(([label, k, cls]) => h("th", { class: cls || "", "data-key": k, onclick: () => { desc = key === k ? !desc : true; key = k; draw(); } }, label + (key === k && label !== "% step" ? (desc ? " \u25bc" : " \u25b2") : "")))));
    for (const r of rows) {
      table.append(h("tr", {}, h("td", { text: r.i }), h("td", { class: "l name", text: r.name, title: r.name }), h("td", { class: "l", text: r.kind }),
        h("td", { text: fmtUs(r.time_us) }), h("td", { text: pct(r.time_us / D.overview.step_us) }), h("td", { text: fmtUs(r.wasted_us) }),
        h("td", { class: "l" }, h("span", { class: "swatch", style: "background:" + (BOUND_COLORS[r.bound] || "#ccc") }), r.bound),
        h("td", { text: r.tflops.toFixed(1) }), h("td", { text: r.gbps.toFixed(0) }), h("td", { text: si(r.flops) }), h("td", { text: bytes(r.bytes) }),
        h("td", { class: "l name", text: r.source, title: r.where })));
    }
  };
  c.append(h("div", {}, h("button", { id: "sort-time", onclick: () => { key = "time_us"; desc = true; draw(); } }, "sort by time"),
    h("button", { id: "sort-wasted", onclick: () => { key = "wasted_us"; desc = true; draw(); } }, "sort by wasted time")));
  c.append(h("div", { class: "scroll" }, table));
  draw();
}

/* ---- timeline ------------------------------------------------------------------------- */
function renderTimeline() {
  const c = body("timeline"), tl = D.timeline;
  const W = width(c), labelW = 130, rowH = 22, H = 24 + rowH * tl.tracks.length;
  const svgEl = s("svg", { width: W, height: H, id: "timeline-svg" });
  c.append(svgEl, legend(Object.entries(BOUND_COLORS)), h("p", { class: "note", text: "wheel: zoom, drag: pan, double-click: whole step" }));
  let v0 = 0, v1 = Math.max(tl.step_us, 1e-3);
  const draw = () => {
    svgEl.replaceChildren();
    const plotW = W - labelW - 8, x = us => labelW + (us - v0) / (v1 - v0) * plotW;
    tl.tracks.forEach((name, i) => {
      s("rect", { x: 0, y: 22 + i * rowH, width: W, height: rowH - 1, fill: i % 2 ? "#fafbfc" : "#f1f3f6" }, svgEl);
      s("text", { x: 6, y: 22 + i * rowH + 15, text: name }, svgEl);
    });
    const span = v1 - v0;
    const step = 10 ** Math.floor(Math.log10(span / 5));
    const tick = [1, 2, 5].map(f => f * step).find(t => span / t <= 10) || step * 10;
    for (let t = Math.ceil(v0 / tick) * tick; t <= v1; t += tick) {
      s("line", { x1: x(t), x2: x(t), y1: 14, y2: H, stroke: "#dde1e8" }, svgEl);
      s("text", { x: x(t) + 2, y: 12, text: fmtUs(t) }, svgEl);
    }
    for (const [track, k, start, dur, depth, name] of tl.segments) {
      if (start > v1 || start + dur < v0) continue;
      const x0 = Math.max(labelW, x(start)), x1 = Math.min(W - 8, x(start + dur));
      const kern = D.kernels[k];
      const y = 22 + track * rowH + (depth ? 10 : 2), hh = depth ? 9 : rowH - 5;
      const r = s("rect", { x: x0, y, width: Math.max(0.6, x1 - x0), height: hh, fill: BOUND_COLORS[kern.bound] || "#999", opacity: depth ? 0.7 : 0.9 }, svgEl);
      tip(r, `${name || kern.name}\n${tl.tracks[track]}: ${fmtUs(dur)} from ${fmtUs(start)}\nkernel bound: ${kern.bound}`);
    }
  };
  svgEl.addEventListener("wheel", ev => {
    ev.preventDefault();
    const plotW = W - labelW - 8, at = v0 + (ev.offsetX - labelW) / plotW * (v1 - v0), f = ev.deltaY > 0 ? 1.25 : 0.8;
    v0 = Math.max(0, at - (at - v0) * f); v1 = Math.min(tl.step_us, at + (v1 - at) * f); draw();
  }, { passive: false });
  let drag = null;
  svgEl.addEventListener("mousedown", ev => { drag = [ev.clientX, v0, v1]; });
  window.addEventListener("mouseup", () => { drag = null; });
  svgEl.addEventListener("mousemove", ev => {
    if (!drag) return;
    const d = (ev.clientX - drag[0]) / (W - labelW - 8) * (drag[2] - drag[1]);
    const len = drag[2] - drag[1];
    v0 = Math.min(Math.max(0, drag[1] - d), tl.step_us - len); v1 = v0 + len; draw();
  });
  svgEl.addEventListener("dblclick", () => { v0 = 0; v1 = tl.step_us; draw(); });
  draw();
}

/* ---- roofline ------------------------------------------------------------------------- */
function renderRoofline() {
  const c = body("roofline"), R = D.roofline;
  const pts = D.kernels.filter(k => k.flops > 0 && k.bytes > 0 && k.time_us > 0).map(k => [k.flops / k.bytes, k.flops / (k.time_us * 1e-6), k]);
  const ridge = R.peak_flops / R.hbm_bandwidth;
  const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
  const xlo = Math.min(ridge / 100, ...xs) / 2, xhi = Math.max(ridge * 100, ...xs) * 2;
  const ylo = Math.min(xlo * R.hbm_bandwidth, ...ys) / 2, yhi = R.peak_flops * 2;
  const W = Math.min(900, width(c)), H = 420, L = 70, B = 40;
  const X = v => L + (Math.log10(v) - Math.log10(xlo)) / (Math.log10(xhi) - Math.log10(xlo)) * (W - L - 10);
  const Y = v => H - B - (Math.log10(v) - Math.log10(ylo)) / (Math.log10(yhi) - Math.log10(ylo)) * (H - B - 10);
  const g = s("svg", { width: W, height: H, id: "roofline-svg" });
  for (const t of logTicks(xlo, xhi)) { s("line", { x1: X(t), x2: X(t), y1: 10, y2: H - B, stroke: "#eceff3" }, g); s("text", { x: X(t) - 8, y: H - B + 14, text: si(t) }, g); }
  for (const t of logTicks(ylo, yhi)) { s("line", { x1: L, x2: W - 10, y1: Y(t), y2: Y(t), stroke: "#eceff3" }, g); s("text", { x: 4, y: Y(t) + 4, text: si(t, "FLOP/s") }, g); }
  s("path", { d: `M${X(xlo)},${Y(xlo * R.hbm_bandwidth)} L${X(ridge)},${Y(R.peak_flops)} L${X(xhi)},${Y(R.peak_flops)}`, stroke: "#222", "stroke-width": 2, fill: "none" }, g);
  s("text", { x: X(ridge) + 6, y: Y(R.peak_flops) - 6, text: `peak ${si(R.peak_flops, "FLOP/s")}, HBM ${si(R.hbm_bandwidth, "B/s")}, ridge ${ridge.toFixed(0)} FLOP/B` }, g);
  s("text", { x: W / 2 - 110, y: H - 6, text: "arithmetic intensity (FLOP per HBM byte)" }, g);
  for (const [x, y, k] of pts) {
    const r = 2.5 + 14 * Math.sqrt(k.time_us / D.overview.step_us);
    tip(s("circle", { cx: X(x), cy: Y(y), r, fill: BOUND_COLORS[k.bound] || "#999", "fill-opacity": 0.55, stroke: "#333", "stroke-width": 0.4 }, g),
      `${k.name}\n${x.toFixed(1)} FLOP/B, ${si(y, "FLOP/s")}, ${fmtUs(k.time_us)} (${k.bound})`);
  }
  c.append(g, legend(Object.entries(BOUND_COLORS)), h("p", { class: "note", text: `${pts.length} kernels with FLOPs and HBM traffic; circle area ~ share of the step.` }));
}

/* ---- memory --------------------------------------------------------------------------- */
function renderMemory() {
  const c = body("memory"), M = D.memory;
  const n = M.total.length, peak = Math.max(...M.total, 1);
  const capShown = M.capacity && M.capacity < 2 * peak;
  const top = (capShown ? Math.max(peak, M.capacity) : peak) * 1.1;
  const W = width(c), H = 300, L = 70, B = 30;
  const X = i => L + (n > 1 ? i / (n - 1) : 0.5) * (W - L - 10), Y = b => H - B - b / top * (H - B - 10);
  const g = s("svg", { width: W, height: H, id: "memory-svg" });
  for (let f = 0; f <= 4; f++) { const b = top * f / 4; s("line", { x1: L, x2: W - 10, y1: Y(b), y2: Y(b), stroke: "#eceff3" }, g); s("text", { x: 4, y: Y(b) + 4, text: bytes(b) }, g); }
  const kinds = Object.keys(M.by_kind), base = new Array(n).fill(0);
  kinds.forEach((kind, j) => {
    const row = M.by_kind[kind], upper = base.map((b, i) => b + row[i]);
    let d = `M${X(0)},${Y(upper[0])}`;
    for (let i = 1; i < n; i++) d += ` L${X(i)},${Y(upper[i])}`;
    for (let i = n - 1; i >= 0; i--) d += ` L${X(i)},${Y(base[i])}`;
    tip(s("path", { d: d + " Z", fill: KIND_COLORS[j % KIND_COLORS.length], "fill-opacity": 0.85, stroke: "none" }, g), kind);
    for (let i = 0; i < n; i++) base[i] = upper[i];
  });
  s("line", { x1: X(M.peak_index), x2: X(M.peak_index), y1: 10, y2: H - B, stroke: "#d62728", "stroke-dasharray": "4 3" }, g);
  s("text", { x: Math.min(X(M.peak_index) + 4, W - 260), y: 22, text: `peak ${bytes(M.total[M.peak_index])} at ${M.peak_kernel}` }, g);
  if (capShown) { s("line", { x1: L, x2: W - 10, y1: Y(M.capacity), y2: Y(M.capacity), stroke: "#000" }, g); s("text", { x: L + 4, y: Y(M.capacity) - 4, text: "HBM capacity " + bytes(M.capacity) }, g); }
  s("text", { x: W / 2 - 60, y: H - 8, text: "program order (kernels)" }, g);
  c.append(g, legend(kinds.map((k, j) => [k, KIND_COLORS[j % KIND_COLORS.length]])));
  c.append(h("p", { class: "note", text: `heap (peak HBM with fragmentation) ${bytes(M.heap_bytes)}; largest sum of live buffers ${bytes(M.peak_live_bytes)}` + (M.capacity ? `; capacity ${bytes(M.capacity)}` : "") + "." }));
  const t = h("table", {}, h("tr", {}, h("th", { class: "l", text: "buffer live at the peak" }), h("th", { class: "l", text: "kind" }), h("th", { text: "size" }), h("th", { class: "l", text: "written by" }), h("th", { class: "l", text: "last read by" })));
  for (const b of M.peak_buffers) t.append(h("tr", {}, h("td", { class: "l name", text: b.label, title: b.label }), h("td", { class: "l", text: b.kind }), h("td", { text: bytes(b.bytes) }), h("td", { class: "l", text: b.from }), h("td", { class: "l", text: b.to })));
  const byKind = h("table", {}, h("tr", {}, h("th", { class: "l", text: "kind at the peak" }), h("th", { text: "bytes" })));
  for (const [k, b] of Object.entries(M.peak_by_kind).sort((a, b2) => b2[1] - a[1])) byKind.append(h("tr", {}, h("td", { class: "l", text: k }), h("td", { text: bytes(b) })));
  c.append(h("div", { class: "row" }, byKind, h("div", { class: "scroll" }, t)));
  if (M.peak_buffers_total > M.peak_buffers.length) c.append(h("p", { class: "note", text: `${M.peak_buffers.length} largest of ${M.peak_buffers_total} buffers shown.` }));
}

/* ---- compiled stages and source ------------------------------------------------------- */
function renderStages() {
  const c = body("stages"), S = D.stages;
  const box = h("div", { class: "stagebox", id: "stage-box" });
  const show = stage => {
    for (const b of c.querySelectorAll("button.stage")) b.classList.toggle("on", b.dataset.stage === stage);
    box.replaceChildren();
    if (stage === "program") {
      for (const k of S.program) box.append(h("pre", { class: "kernel", id: "kernel-" + k.i }, h("span", { class: "note", text: "source: " + k.source + "\n" }), k.text));
      if (S.program_truncated) box.append(h("p", { class: "note", text: "(program text truncated: the report keeps the first kernels)" }));
    } else {
      box.append(h("pre", { text: S[stage] + (S[stage + "_truncated"] ? "\n... (truncated)" : "") }));
    }
  };
  c.append(h("div", {}, ...[["jaxpr", "jaxpr (traced)"], ["fused", "fused graph"], ["program", "program (kernels)"]].map(([k, label]) =>
    h("button", { class: "stage", "data-stage": k, onclick: () => show(k) }, label))), box);
  show("program");
  const t = h("table", {}, h("tr", {}, h("th", { class: "l", text: "source (layer or file:line)" }), h("th", { class: "l", text: "code" }), h("th", { text: "time" }), h("th", { class: "l", text: "kernels" })));
  for (const src of D.sources.slice(0, 200)) {
    const links = h("td", { class: "l" });
    for (const i of src.kernels.slice(0, 12)) links.append(h("a", { href: "#kernel-" + i, onclick: ev => { ev.preventDefault(); show("program"); const e = document.getElementById("kernel-" + i); if (e) { e.scrollIntoView({ block: "nearest" }); e.classList.add("hl"); } } }, D.kernels[i].name), " ");
    if (src.kernels.length > 12) links.append(`(+${src.kernels.length - 12} more)`);
    t.append(h("tr", {}, h("td", { class: "l name", text: src.key, title: src.key }), h("td", { class: "l name" }, h("code", { text: src.text })), h("td", { text: fmtUs(src.time_us) }), links));
  }
  c.append(h("h3", { text: "where the time comes from in your code" }), h("div", { class: "scroll" }, t));
}

/* ---- collectives ---------------------------------------------------------------------- */
function renderCollectives() {
  const c = body("collectives"), C = D.collectives;
  if (!C) { c.append(h("p", { text: "One device: no collectives. Compile with a slice (device=\"v5e-8\", mesh=...) to see communication per mesh axis." })); return; }
  c.append(h("p", { text: `mesh ${Object.entries(C.mesh).map(([k, v]) => k + "=" + v).join(", ")} on ${C.system}: collectives ${fmtUs(C.communication_us)} per step, ${fmtUs(C.exposed_us)} exposed (not hidden behind compute).` }));
  const t = h("table", {}, h("tr", {}, ...["mesh axes", "collectives", "bytes", "time", "hidden", "exposed"].map((x, i) => h("th", { class: i ? "" : "l", text: x }))));
  const maxT = Math.max(...Object.values(C.by_axis).map(a => a.time_us), 1e-9);
  for (const [ax, a] of Object.entries(C.by_axis)) t.append(h("tr", {}, h("td", { class: "l", text: ax }), h("td", { text: a.count }), h("td", { text: bytes(a.bytes) }), h("td", { text: fmtUs(a.time_us) }), h("td", { text: fmtUs(a.hidden_us) }), h("td", {}, fmtUs(a.exposed_us), h("span", { class: "swatch", style: `width:${Math.round(80 * a.exposed_us / maxT) + 2}px;background:#b279a2;margin-left:6px` }))));
  c.append(t);
}

/* ---- learner: the systolic array ------------------------------------------------------ */
function renderSystolic() {
  const c = body("systolic"), S = D.learner.systolic;
  if (!S) { c.append(h("p", { text: "This model has no matmul or convolution on the " + D.meta.matrix_unit + "." })); return; }
  const A = S.array, cell = 62, ox = 120, oy = 70, accW = 52;
  c.append(h("p", { class: "hint", text: `A ${S.array}x${S.array} weight-stationary array (the real ${D.meta.kind === "tpu" ? D.meta.matrix_unit : "TPU MXU"} is ${S.mxu_shape.join("x")}) running a corner of ${S.kernel} ` +
    `(${S.prim}, ${S.full.M}x${S.full.K} by ${S.full.K}x${S.full.N} as a matmul): ${S.rows.length} of its ${S.full.M} rows${S.prim === "conv_general_dilated" ? " (output pixels of its first image)" : ""}, the first ${S.k} of ${S.full.K} contraction terms and ${S.n} of ${S.full.N} outputs, ` +
    `with ${S.source}. Each fold's weights load into a bank one row per cycle; activation rows enter skewed, one array row per cycle; partial sums flow down and leave into the accumulators. ` +
    `Cycle-accurate (sim/systolic.py): ${S.cycles} cycles for ${S.folds} folds here; the whole op on one ${S.mxu_shape.join("x")} array: ${S.full_cycles.toLocaleString()} cycles.` }));
  const busiest = S.frames.reduce((b, f, i) => (f.fold.filter(x => x >= 0).length > S.frames[b].fold.filter(x => x >= 0).length ? i : b), 0);
  let idx = busiest, timer = null;
  const W = ox + Math.max(A * cell, S.n * accW) + 40, H = oy + A * cell + 40 + S.rows.length * 18 + 30;
  const g = s("svg", { width: Math.max(W, 700), height: H, id: "systolic-svg" });
  const counter = h("span", { id: "cycle-counter", style: "font-weight:600;margin-left:10px" });
  const draw = () => {
    const f = S.frames[idx];
    g.replaceChildren();
    s("text", { x: 4, y: 16, text: `folds: ${S.folds} (${Math.ceil(S.k / A)} along K x ${Math.ceil(S.n / A)} along N); active PEs this cycle: ${f.fold.filter(x => x >= 0).length} of ${A * A}` }, g);
    f.banks.forEach(([fold, ready], b) => s("text", { x: 4 + 250 * b, y: 36, fill: fold >= 0 ? FOLD_COLORS[fold % FOLD_COLORS.length] : "#999",
      text: `weight bank ${b}: ${fold >= 0 ? "fold " + fold + (ready > f.t ? " loading (in at cycle " + ready + ")" : " loaded") : "empty"}` }, g));
    s("text", { x: 4, y: oy - 8, text: "activations enter \u2192" }, g);
    s("text", { x: ox, y: oy - 8, text: "partial sums flow \u2193" }, g);
    for (let r = 0; r < A; r++) for (let col = 0; col < A; col++) {
      const i = r * A + col, fold = f.fold[i];
      const x = ox + col * cell, y = oy + r * cell;
      const rect = s("rect", { x, y, width: cell - 3, height: cell - 3, rx: 3, fill: fold >= 0 ? FOLD_COLORS[fold % FOLD_COLORS.length] : "#eef0f3", "fill-opacity": fold >= 0 ? 0.8 : 1, stroke: "#c5cad3" }, g);
      if (fold >= 0) {
        tip(rect, `PE (${r},${col}) fold ${fold}, row ${S.rows[f.row[i]] ?? f.row[i]}: a=${f.act[i]}, partial sum ${f.psum[i]}`);
        const wv = S.w[(Math.floor(fold % Math.ceil(S.k / A))) * A + r]?.[Math.floor(fold / Math.ceil(S.k / A)) * A + col];
        s("text", { x: x + 3, y: y + 14, text: "w " + (wv === undefined ? 0 : wv).toPrecision(2), fill: "#fff" }, g);
        s("text", { x: x + 3, y: y + 32, text: "a " + f.act[i].toPrecision(2), fill: "#fff" }, g);
        s("text", { x: x + 3, y: y + 50, text: "\u03a3 " + f.psum[i].toPrecision(3), fill: "#fff" }, g);
      }
    }
    const oy2 = oy + A * cell + 26;
    s("text", { x: 4, y: oy2 - 6, text: "accumulators (rows x outputs)" }, g);
    f.out.forEach((row, m) => row.forEach((v, n) => {
      const x = ox + n * accW, y = oy2 + m * 18;
      const done = f.written[m][n];
      s("rect", { x, y, width: accW - 2, height: 16, fill: done ? "#dbe8fb" : "#f6f7f9", stroke: "#d9dde5" }, g);
      if (done) s("text", { x: x + 2, y: y + 12, text: v.toPrecision(3) }, g);
    }));
    counter.textContent = `cycle ${f.t} / ${S.cycles}`;
  };
  const stop = () => { if (timer) { clearInterval(timer); timer = null; } };
  c.append(h("div", {},
    h("button", { id: "systolic-play", onclick: () => { if (timer) { stop(); return; } timer = setInterval(() => { idx = (idx + 1) % S.frames.length; draw(); if (idx === S.frames.length - 1) stop(); }, 180); } }, "play / pause"),
    h("button", { onclick: () => { stop(); idx = Math.max(0, idx - 1); draw(); } }, "\u25c0 cycle"),
    h("button", { id: "systolic-step", onclick: () => { stop(); idx = Math.min(S.frames.length - 1, idx + 1); draw(); } }, "cycle \u25b6"),
    h("button", { onclick: () => { stop(); idx = 0; draw(); } }, "reset"), counter), g);
  c.append(h("p", { class: "note", text: `The array's result equals the bf16-input product computed directly to within ${S.max_abs_diff.toExponential(1)} (f32 accumulation order).` }));
  draw();
}

/* ---- learner: folds and VMEM blocks --------------------------------------------------- */
function renderBlocks() {
  const c = body("blocks"), P = D.learner.blocks;
  if (!P.length) { c.append(h("p", { text: "No matmul or convolution kernels in this program." })); return; }
  const sel = h("select", { id: "block-select" });
  P.forEach((p, i) => sel.append(h("option", { value: i, text: `${p.kernel} (${fmtUs(p.time_s * 1e6)})` })));
  const out = h("div");
  const draw = () => {
    const p = P[+sel.value];
    out.replaceChildren();
    const box = 360, sx = box / p.Np, sy = box / p.Mp, w = box, hgt = box;
    const g = s("svg", { width: box + 80, height: box + 130, id: "blocks-svg" });
    s("rect", { x: 60, y: 20, width: w, height: hgt, fill: "#f3c7c7" }, g);
    s("rect", { x: 60, y: 20, width: p.N * sx, height: p.M * sy, fill: "#c9dcf5" }, g);
    const stepN = Math.max(1, Math.ceil(p.Np / p.tn / 40)), stepM = Math.max(1, Math.ceil(p.Mp / p.tm / 40));
    for (let n = 0; n <= p.Np; n += p.tn * stepN) s("line", { x1: 60 + n * sx, x2: 60 + n * sx, y1: 20, y2: 20 + hgt, stroke: "#2f6fde" }, g);
    for (let m = 0; m <= p.Mp; m += p.tm * stepM) s("line", { x1: 60, x2: 60 + w, y1: 20 + m * sy, y2: 20 + m * sy, stroke: "#2f6fde" }, g);
    s("text", { x: 60, y: 14, text: `output: N = ${p.N} \u2192 ${p.Np}` + (Math.abs(Math.log(sx / sy)) > 0.4 ? " (axes not to the same scale)" : "") }, g);
    s("text", { x: 4, y: 34, text: `M = ${p.M}` }, g);
    s("text", { x: 4, y: 48, text: `\u2192 ${p.Mp}` }, g);
    const ky = 50 + hgt, kx = box / p.Kp, rows = D.learner.mxu_rows;
    s("text", { x: 60, y: ky - 8, text: `contraction: K = ${p.K} \u2192 ${p.Kp}, walked in blocks of ${p.tk}` + (rows ? ` = ${Math.ceil(p.tk / rows)} folds of ${rows} array rows` : "") }, g);
    s("rect", { x: 60, y: ky, width: box, height: 18, fill: "#f3c7c7" }, g);
    s("rect", { x: 60, y: ky, width: p.K * kx, height: 18, fill: "#c9dcf5" }, g);
    if (rows && p.Kp / rows <= 64) for (let k = 0; k <= p.Kp; k += rows) s("line", { x1: 60 + k * kx, x2: 60 + k * kx, y1: ky, y2: ky + 18, stroke: "#8a94a6", "stroke-dasharray": "2 2" }, g);
    for (let k = 0; k <= p.Kp; k += p.tk * Math.max(1, Math.ceil(p.Kp / p.tk / 40))) s("line", { x1: 60 + k * kx, x2: 60 + k * kx, y1: ky - 3, y2: ky + 21, stroke: "#2f6fde", "stroke-width": 2 }, g);
    s("text", { x: 60, y: ky + 40, text: `grid ${p.grid.join(" x ")} (M blocks x N blocks x K steps)` }, g);
    out.append(h("div", { class: "row" }, g, h("div", {},
      h("p", { text: `${p.kernel}: ${p.batch > 1 ? p.batch + " matmuls of " : ""}${p.M} x ${p.K} by ${p.K} x ${p.N}${p.taps > 1 ? " over " + p.taps + " filter taps" : ""}, ${p.precision}${p.passes > 1 ? " in " + p.passes + " passes" : ""}, on the ${p.engine === "mxu" ? D.meta.matrix_unit : D.meta.vector_unit}.` }),
      h("p", { text: `Padded to ${p.Mp} x ${p.Kp} x ${p.Np}; each grid step holds a ${p.tm} x ${p.tk} activation block and a ${p.tk} x ${p.tn} weight block in VMEM (${bytes(p.vmem_bytes)} with double buffering).` }),
      h("p", { text: `Issued work ${si(p.issued_flops, "FLOP")} for ${si(p.useful_flops, "FLOP")} useful: ${pct(p.waste)} of the matrix unit's work is padding or extra passes.` }),
      legend([["useful (M x N)", "#c9dcf5"], ["padding the array computes anyway", "#f3c7c7"], ["VMEM block edges", "#2f6fde"]]))));
  };
  sel.addEventListener("change", draw);
  c.append(h("div", {}, "kernel: ", sel), out);
  draw();
}

/* ---- learner: bf16 -------------------------------------------------------------------- */
function renderBf16() {
  const c = body("bf16"), B = D.learner.bf16;
  if (!B) { c.append(h("p", { text: "No matmul operands to show." })); return; }
  c.append(h("p", { class: "hint", text: "The MXU multiplies bf16 numbers: f32's 8 exponent bits but only 7 mantissa bits (about 3 significant digits); products are exact and sums stay f32. Values from the operands of the array above:" }));
  const row = h("div", { class: "row" });
  for (const [name, d] of Object.entries(B)) {
    const t = h("table", {}, h("tr", {}, h("th", { text: "f32 value" }), h("th", { text: "as bf16" }), h("th", { class: "l", text: "bf16 bits (sign exponent mantissa)" }), h("th", { text: "relative error" })));
    for (const x of d.samples) {
      const [sg, ex, ma] = x.bits.split(" ");
      t.append(h("tr", {}, h("td", { text: x.f32.toPrecision(8) }), h("td", { text: x.bf16.toPrecision(8) }),
        h("td", { class: "l bits" }, h("span", { class: "s", text: sg }), " ", h("span", { class: "e", text: ex }), " ", h("span", { class: "m", text: ma })),
        h("td", { text: x.rel_error.toExponential(2) })));
    }
    row.append(h("div", {}, h("h3", { text: name }), t, h("p", { class: "note", text: `over ${d.count.toLocaleString()} values: ${pct(d.changed)} change when rounded, mean relative error ${d.mean_rel_error.toExponential(2)}, max ${d.max_rel_error.toExponential(2)}` })));
  }
  c.append(row);
}

/* ---- compare -------------------------------------------------------------------------- */
function renderCompare() {
  const sec = document.getElementById("compare"), C = D.compare;
  if (!C) { sec.remove(); document.querySelector('a[href="#compare"]').remove(); return; }
  const c = body("compare");
  const cols = ["device", "step_s", "throughput", "mfu", "peak_hbm_gib", "fits", "usd_per_million", "kwh_per_million"].filter(k => k in C.rows[0]);
  const t = h("table", {}, h("tr", {}, ...cols.map((k, i) => h("th", { class: i ? "" : "l", text: k }))));
  const fmt = (k, v) => v === null || v === undefined ? "-" : k === "step_s" ? fmtUs(v * 1e6) : k === "mfu" ? pct(v) : typeof v === "number" ? (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3)) : String(v);
  for (const r of C.rows) t.append(h("tr", {}, ...cols.map((k, i) => h("td", { class: i ? "" : "l", text: fmt(k, r[k]) }))));
  c.append(h("p", { text: `one step, ${C.items_per_step.toLocaleString()} ${C.unit}, on each device (estimates)` }), t);
}

for (const render of [renderOverview, renderOps, renderTimeline, renderRoofline, renderMemory, renderStages, renderCollectives,
  renderSystolic, renderBlocks, renderBf16, renderCompare]) render();
document.body.dataset.renderMs = (performance.now() - T0).toFixed(1);
document.body.dataset.ready = "1";
