"""The report page's stylesheet and script, as strings (the page inlines them: no CDN, no network).

The script reads the JSON in ``<script id="report-data">`` and builds, with plain DOM calls: per-prompt
ranked grids (the rank-by metric is a select), the sortable table (click a header; ``#sort=METRIC:desc`` in
the URL sorts on load), one histogram per metric, a metric-vs-metric scatter with the rows where the two
disagree most, and the error rows. Text from the data is only ever set with ``textContent``.
"""

STYLE = """
body{font:14px system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f2937;color:#fff;padding:12px 20px}header h1{margin:0;font-size:20px}
nav a{color:#cbd5e1;margin-right:14px}section{padding:8px 20px}h2{border-bottom:1px solid #ddd;padding-bottom:4px}
.grid{display:flex;flex-wrap:wrap;gap:8px}.card{width:150px;background:#fff;border:1px solid #ddd;border-radius:4px;padding:4px}
.card img,.thumb{width:100%;height:140px;object-fit:contain;background:#eee;display:block}
.card .m{font:12px ui-monospace,monospace;display:flex;justify-content:space-between}
.card .m.rb{font-weight:bold}.rank{font-weight:bold;color:#2563eb}
table{border-collapse:collapse;background:#fff}th,td{border:1px solid #ddd;padding:2px 6px;text-align:left}
th{cursor:pointer;background:#f1f5f9;position:sticky;top:0}th.asc:after{content:" \\25B2"}th.desc:after{content:" \\25BC"}
td.n{text-align:right;font-family:ui-monospace,monospace}td img{width:48px;height:48px;object-fit:cover}
.tablewrap{max-height:600px;overflow:auto}.plots{display:flex;flex-wrap:wrap;gap:16px}
svg{background:#fff;border:1px solid #ddd}svg text{font:11px sans-serif}.bar{fill:#60a5fa}.dot{fill:#2563eb;opacity:.45}
.dot.hi{fill:#dc2626;opacity:.9}.err{color:#b91c1c}.prompt{font-weight:600;margin:14px 0 6px}
button.more{margin:6px 0}
"""

SCRIPT = r"""
(function(){
"use strict";
const D = JSON.parse(document.getElementById("report-data").textContent);
const M = D.metrics, NM = M.length, FIRST = 5;
const rows = D.rows.map((r, i) => ({i: i, image: r[0], src: r[1] === null ? r[0] : r[1], prompt: D.prompts[r[2]],
  rank: r[3], error: r[4], v: r.slice(FIRST)}));
const ok = rows.filter(r => !r.error && r.v.every(x => x !== null));
const el = (tag, attrs, text) => { const e = document.createElement(tag);
  for (const k in (attrs || {})) e.setAttribute(k, attrs[k]); if (text !== undefined) e.textContent = text; return e; };
const fmt = x => x === null || x === undefined ? "" : (Math.abs(x) >= 100 ? x.toFixed(2) : x.toFixed(4));
const img = (r, cls) => el("img", {src: r.src, loading: "lazy", alt: r.image, title: r.image, class: cls || ""});
const byId = id => document.getElementById(id);

// -- per-prompt ranked grids ------------------------------------------------------------------------
const rankSel = byId("rank-by");
M.forEach(m => rankSel.appendChild(el("option", {value: m}, m)));
rankSel.value = D.rankBy;
function drawGrids(){
  const k = M.indexOf(rankSel.value), box = byId("grids"); box.textContent = "";
  const groups = new Map();
  ok.forEach(r => { if (!groups.has(r.prompt)) groups.set(r.prompt, []); groups.get(r.prompt).push(r); });
  groups.forEach((g, prompt) => {
    g.sort((a, b) => b.v[k] - a.v[k] || a.i - b.i);
    box.appendChild(el("div", {class: "prompt"}, prompt + " (" + g.length + " images)"));
    const grid = el("div", {class: "grid"}); box.appendChild(grid);
    const show = n => { grid.textContent = ""; g.slice(0, n).forEach((r, pos) => {
      const c = el("div", {class: "card"}); c.appendChild(img(r));
      c.appendChild(el("div", {class: "rank"}, "#" + (pos + 1)));
      M.forEach((m, j) => { const line = el("div", {class: "m" + (j === k ? " rb" : "")});
        line.appendChild(el("span", {}, m)); line.appendChild(el("span", {}, fmt(r.v[j]))); c.appendChild(line); });
      grid.appendChild(c); }); };
    show(24);
    if (g.length > 24) { const b = el("button", {class: "more"}, "show all " + g.length);
      b.onclick = () => { show(g.length); b.remove(); }; box.appendChild(b); }
  });
}
rankSel.onchange = drawGrids;

// -- sortable table ------------------------------------------------------------------------------------
const table = byId("rows"), body = table.tBodies[0], head = table.tHead.rows[0];
const cols = [{key: "image", label: "image"}, {key: "prompt", label: "prompt"}, {key: "rank", label: "rank"}]
  .concat(M.map((m, j) => ({key: m, label: m, j: j}))).concat([{key: "error", label: "error"}]);
cols.forEach(c => { const th = el("th", {"data-key": c.key}, c.label); th.onclick = () => sortBy(c.key); head.appendChild(th); });
let order = rows.slice(), sortKey = null, sortDir = 1;
function value(r, c){ if (c.j !== undefined) return r.v[c.j]; if (c.key === "image") return r.image;
  if (c.key === "prompt") return r.prompt; return r[c.key]; }
function sortBy(key, dir){
  const c = cols.find(x => x.key === key); if (!c) return;
  sortDir = dir || (sortKey === key ? -sortDir : (c.j !== undefined ? -1 : 1)); sortKey = key;
  order.sort((a, b) => { const x = value(a, c), y = value(b, c);
    if (x === y) return a.i - b.i; if (x === null || x === undefined || x === "") return 1;
    if (y === null || y === undefined || y === "") return -1; return (x < y ? -1 : 1) * sortDir; });
  Array.from(head.cells).forEach(th => th.className = th.dataset.key === key ? (sortDir > 0 ? "asc" : "desc") : "");
  drawTable();
}
function drawTable(){
  const frag = document.createDocumentFragment();
  order.forEach(r => { const tr = el("tr", {"data-row": r.i});
    cols.forEach(c => { const v = value(r, c), td = el("td", {class: c.j !== undefined || c.key === "rank" ? "n" : ""});
      if (c.key === "image") { if (!r.error) td.appendChild(img(r)); td.appendChild(el("span", {}, " " + r.image)); }
      else td.textContent = c.j !== undefined ? fmt(v) : (v === null ? "" : String(v));
      tr.appendChild(td); });
    frag.appendChild(tr); });
  body.textContent = ""; body.appendChild(frag);
}

// -- histograms and scatter (SVG) ----------------------------------------------------------------------
const NS = "http://www.w3.org/2000/svg";
const svgEl = (tag, attrs, text) => { const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]); if (text !== undefined) e.textContent = text; return e; };
function extent(xs){ let lo = Infinity, hi = -Infinity; xs.forEach(x => { if (x < lo) lo = x; if (x > hi) hi = x; });
  return lo === hi ? [lo - 0.5, hi + 0.5] : [lo, hi]; }
function histogram(j){
  const xs = ok.map(r => r.v[j]), W = 320, H = 180, P = 28, bins = 30, s = svgEl("svg", {width: W, height: H});
  s.appendChild(svgEl("text", {x: P, y: 14}, M[j] + " (" + xs.length + " images)"));
  if (!xs.length) return s;
  const [lo, hi] = extent(xs), counts = new Array(bins).fill(0);
  xs.forEach(x => counts[Math.min(bins - 1, Math.floor((x - lo) / (hi - lo) * bins))]++);
  const top = Math.max.apply(null, counts), bw = (W - 2 * P) / bins;
  counts.forEach((n, b) => { const h = n / top * (H - 2 * P);
    s.appendChild(svgEl("rect", {class: "bar", x: P + b * bw, y: H - P - h, width: Math.max(bw - 1, 1), height: h})); });
  s.appendChild(svgEl("text", {x: P, y: H - 8}, fmt(lo))); s.appendChild(svgEl("text", {x: W - P - 40, y: H - 8}, fmt(hi)));
  return s;
}
M.forEach((m, j) => byId("histograms").appendChild(histogram(j)));
const xs = byId("scatter-x"), ys = byId("scatter-y");
M.forEach(m => { xs.appendChild(el("option", {value: m}, m)); ys.appendChild(el("option", {value: m}, m)); });
xs.value = M[0]; ys.value = M[Math.min(1, NM - 1)];
function zscores(j){ const v = ok.map(r => r.v[j]), n = v.length || 1, mu = v.reduce((a, b) => a + b, 0) / n;
  const sd = Math.sqrt(v.reduce((a, b) => a + (b - mu) * (b - mu), 0) / n) || 1; return v.map(x => (x - mu) / sd); }
function drawScatter(){
  const a = M.indexOf(xs.value), b = M.indexOf(ys.value), W = 460, H = 360, P = 36, box = byId("scatter");
  box.textContent = ""; const s = svgEl("svg", {width: W, height: H, id: "scatter-svg"}); box.appendChild(s);
  const [x0, x1] = extent(ok.map(r => r.v[a])), [y0, y1] = extent(ok.map(r => r.v[b]));
  const za = zscores(a), zb = zscores(b), gap = ok.map((r, n) => ({r: r, d: Math.abs(za[n] - zb[n])}));
  const worst = new Set(gap.slice().sort((p, q) => q.d - p.d).slice(0, 12).map(p => p.r.i));
  ok.forEach(r => { const c = svgEl("circle", {class: "dot" + (worst.has(r.i) ? " hi" : ""), r: worst.has(r.i) ? 4 : 2.5,
      cx: P + (r.v[a] - x0) / (x1 - x0) * (W - 2 * P), cy: H - P - (r.v[b] - y0) / (y1 - y0) * (H - 2 * P)});
    c.appendChild(svgEl("title", {}, r.image + "  " + M[a] + "=" + fmt(r.v[a]) + "  " + M[b] + "=" + fmt(r.v[b])));
    s.appendChild(c); });
  s.appendChild(svgEl("text", {x: W / 2 - 20, y: H - 6}, M[a])); s.appendChild(svgEl("text", {x: 4, y: 14}, M[b]));
  const list = byId("disagree"); list.textContent = "";
  gap.sort((p, q) => q.d - p.d).slice(0, 12).forEach(p => { const c = el("div", {class: "card"}); c.appendChild(img(p.r));
    [a, b].forEach(j => { const line = el("div", {class: "m"}); line.appendChild(el("span", {}, M[j]));
      line.appendChild(el("span", {}, fmt(p.r.v[j]))); c.appendChild(line); }); list.appendChild(c); });
}
xs.onchange = drawScatter; ys.onchange = drawScatter;

// -- error rows ------------------------------------------------------------------------------------------
const bad = rows.filter(r => r.error || r.v.some(x => x === null)), errs = byId("errors");
byId("error-count").textContent = String(bad.length);
bad.forEach(r => { const tr = el("tr"); tr.appendChild(el("td", {}, r.image)); tr.appendChild(el("td", {}, r.prompt));
  tr.appendChild(el("td", {class: "err"}, r.error || "missing metric values")); errs.appendChild(tr); });

byId("summary").textContent = rows.length + " rows, " + D.prompts.length + " prompts, " + bad.length +
  " failed; metrics: " + M.join(", ") + "; ranked by " + D.rankBy;
drawGrids(); drawScatter();
function sortFromHash(){ const m = /sort=([^:&]+)(?::(asc|desc))?/.exec(decodeURIComponent(location.hash));
  if (m) sortBy(m[1], m[2] === "asc" ? 1 : -1); return !!m; }
if (!sortFromHash()) drawTable();
window.addEventListener("hashchange", sortFromHash);
document.body.dataset.ready = "1";
})();
"""
