"""`inspect report`: everything about one text in one self-contained HTML page.

The page has no external resource (no CDN, no font, no image file): the data is one JSON object
in a <script> tag, the drawing is inline JavaScript and SVG. The attention weights are the only
large part (L x NH x T x T), so they travel as bytes: round(weight * 255), base64-encoded.

Opened with ``#selftest`` after its address, the page hovers a token by itself and writes what
the attention view showed into <pre id="selftest"> (tests read it with headless Chromium's
--dump-dom); window errors are written into <pre id="errors">.
"""

import base64
import html
import json

import numpy as np


def build_report(meta, tokens, attention, next_tok, lens, attribution, surprise):
    """The page as a str. ``attention`` is (L, NH, T, T); the rest are analysis.py's dicts."""
    L, NH, T, _ = attention.shape
    quantised = np.clip(np.rint(attention * 255), 0, 255).astype(np.uint8)
    data = {
        "meta": meta, "tokens": tokens, "n_layer": L, "n_head": NH,
        "attention_b64": base64.b64encode(quantised.tobytes()).decode("ascii"),
        "next": next_tok,
        "lens": [[[c["top_token"], round(c["top_prob"], 4), c.get("next_rank")] for c in row]
                 for row in lens["layers"]],
        "attribution": attribution, "surprise": surprise,
    }
    # subtle: "</" inside a <script> would end it early, so it is escaped in the JSON text
    blob = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    title = html.escape(f"tinyroots inspect: {meta.get('checkpoint', '')}")
    return PAGE.replace("__TITLE__", title).replace("__DATA__", blob)


PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 72em; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.note { color: #666; font-size: 0.9em; }
.tok { display: inline-block; font-family: ui-monospace, monospace; white-space: pre;
       padding: 1px 2px; margin: 1px; border-radius: 3px; cursor: default;
       border: 1px solid #e4e4e4; }
.tok.focus { outline: 2px solid #d0584a; }
.heads { display: grid; grid-template-columns: repeat(auto-fill, minmax(22em, 1fr)); gap: .6em; }
.head { border: 1px solid #eee; padding: .3em; }
.head b { font-size: .85em; color: #555; }
.bars div.row { display: flex; align-items: center; gap: .5em;
               font-family: ui-monospace, monospace; }
.bars .bar { background: #4a7bd0; height: .9em; }
.bars .lab { width: 12em; white-space: pre; overflow: hidden; }
table.lens { border-collapse: collapse; font-family: ui-monospace, monospace; font-size: .8em; }
table.lens td, table.lens th { border: 1px solid #eee; padding: 1px 4px; white-space: pre; }
.scroll { overflow-x: auto; }
svg text { font: 10px ui-monospace, monospace; }
</style></head>
<body>
<h1 id="title"></h1>
<p class="note" id="meta"></p>
<pre id="errors"></pre>

<h2>Attention: hover a token</h2>
<p class="note">Layer <select id="layer"></select> &nbsp; head for the heat map
<select id="head"></select>. Hovering a token shows, for every head of the layer, how much that
token attends to each earlier token (darker = more, relative to that row's largest weight; the
exact weight is in each token's tooltip). Below: the chosen head as a full map, shaded the same way
(row = the token looking, column = the token looked at).</p>
<div id="text"></div>
<div class="heads" id="heads"></div>
<div class="scroll"><svg id="heatmap"></svg></div>

<h2>The next token</h2>
<p class="note" id="formula"></p>
<div class="bars" id="bars"></div>

<h2>Logit lens</h2>
<p class="note">What each layer would predict if the model stopped there: ln_f and the tied head
applied to the layer's hidden state. Cell: top token, its probability, and (r) the rank of the
token that really comes next. Green = confident.</p>
<div class="scroll"><table class="lens" id="lens"></table></div>

<h2>Attribution</h2>
<p class="note" id="attr-note"></p>
<div id="attr-ig"></div><div id="attr-gxi"></div>

<h2>Surprise</h2>
<p class="note" id="surprise-note"></p>
<div id="surprise"></div>

<pre id="selftest"></pre>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const errors = [];
window.addEventListener("error", e => {
  errors.push(String(e.message));
  document.getElementById("errors").textContent = "ERROR: " + errors.join("\n");
});
const D = JSON.parse(document.getElementById("data").textContent);
const T = D.tokens.length, L = D.n_layer, NH = D.n_head;
const bytes = Uint8Array.from(atob(D.attention_b64), c => c.charCodeAt(0));
function att(l, h, t, s) { return bytes[((l * NH + h) * T + t) * T + s] / 255; }
function rowMax(l, h, t) {
  let m = 1e-6;
  for (let s = 0; s <= t; s++) m = Math.max(m, att(l, h, t, s));
  return m;
}
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function tokSpan(i, text) { return el("span", {"class": "tok", "data-i": i}, text); }
function show(t) { return t.replace(/\n/g, "\\n"); }

document.getElementById("title").textContent = "tinyroots inspect: " + D.meta.checkpoint;
document.getElementById("meta").textContent = D.meta.n_params + " parameters, " + L +
  " layers x " + NH + " heads, " + T + " tokens";

// -- attention --------------------------------------------------------------------------
const layerSel = document.getElementById("layer"), headSel = document.getElementById("head");
for (let l = 0; l < L; l++) layerSel.appendChild(el("option", {value: l}, l));
for (let h = 0; h < NH; h++) headSel.appendChild(el("option", {value: h}, h));
const textDiv = document.getElementById("text"), headsDiv = document.getElementById("heads");
D.tokens.forEach((t, i) => textDiv.appendChild(tokSpan(i, t)));
const headRows = [];
for (let h = 0; h < NH; h++) {
  const box = el("div", {"class": "head"});
  box.appendChild(el("b", {}, "head " + h + " "));
  const spans = D.tokens.map((t, i) => { const s = tokSpan(i, t); box.appendChild(s); return s; });
  headsDiv.appendChild(box);
  headRows.push(spans);
}
let focus = T - 1;
function hover(t) {
  focus = t;
  const l = +layerSel.value;
  textDiv.querySelectorAll(".tok").forEach((s, i) => s.classList.toggle("focus", i === t));
  for (let h = 0; h < NH; h++) {
    const m = rowMax(l, h, t);
    headRows[h].forEach((s, i) => {
      const w = i <= t ? att(l, h, t, i) : 0;
      s.style.background = "rgba(74,123,208," + (w / m).toFixed(3) + ")";
      s.title = "weight " + w.toFixed(3);
      s.dataset.w = w.toFixed(3);
    });
  }
}
textDiv.addEventListener("mouseover", e => {
  if (e.target.dataset && e.target.dataset.i !== undefined) hover(+e.target.dataset.i);
});
function heatmap() {
  const l = +layerSel.value, h = +headSel.value, cell = Math.max(4, Math.min(18, 640 / T));
  const pad = 90, top = 6, svg = document.getElementById("heatmap"), ns = "http://www.w3.org/2000/svg";
  svg.innerHTML = "";
  svg.setAttribute("width", pad + cell * T + 10);
  svg.setAttribute("height", top + cell * T + 10);
  for (let t = 0; t < T; t++) {
    const m = rowMax(l, h, t);
    for (let s = 0; s <= t; s++) {
      const r = document.createElementNS(ns, "rect");
      r.setAttribute("x", pad + s * cell); r.setAttribute("y", top + t * cell);
      r.setAttribute("width", cell); r.setAttribute("height", cell);
      r.setAttribute("fill", "rgba(74,123,208," + (att(l, h, t, s) / m).toFixed(3) + ")");
      svg.appendChild(r);
    }
    if (cell >= 8) {
      const y = document.createElementNS(ns, "text");
      y.setAttribute("x", pad - 4); y.setAttribute("y", top + t * cell + cell * 0.8);
      y.setAttribute("text-anchor", "end"); y.textContent = show(D.tokens[t]).slice(0, 12);
      svg.appendChild(y);
    }
  }
  svg.dataset.cells = svg.querySelectorAll("rect").length;
}
layerSel.addEventListener("change", () => { hover(focus); heatmap(); });
headSel.addEventListener("change", heatmap);
hover(T - 1); heatmap();

// -- next token ---------------------------------------------------------------------------
const N = D.next, best = N.top[0];
document.getElementById("formula").textContent =
  "P(x_t = y | x_<t) = exp(f(x_<t, y)) / sum_y' exp(f(x_<t, y')); here log sum = " +
  N.log_Z.toFixed(3) + ", so P(" + JSON.stringify(best.token) + ") = exp(" +
  best.logit.toFixed(3) + " - " + N.log_Z.toFixed(3) + ") = " + best.prob.toFixed(4);
const bars = document.getElementById("bars");
for (const t of N.top) {
  const row = el("div", {"class": "row"});
  row.appendChild(el("span", {"class": "lab"}, '"' + t.token + '"'));
  const b = el("span", {"class": "bar"}); b.style.width = (t.prob * 30).toFixed(2) + "em";
  row.appendChild(b);
  row.appendChild(el("span", {}, (100 * t.prob).toFixed(2) + "%  (cum " +
    (100 * t.cum_prob).toFixed(1) + "%)"));
  bars.appendChild(row);
}

// -- lens ---------------------------------------------------------------------------------
const lens = document.getElementById("lens");
const head = el("tr"); head.appendChild(el("th", {}, "layer"));
D.tokens.forEach(t => head.appendChild(el("th", {}, show(t))));
lens.appendChild(head);
D.lens.forEach((row, i) => {
  const tr = el("tr");
  tr.appendChild(el("th", {}, i === 0 ? "emb" : (i === D.lens.length - 1 ? "final" : i)));
  for (const [tok, p, rank] of row) {
    const td = el("td", {}, show(tok) + " " + p.toFixed(2) + (rank ? " r" + rank : ""));
    td.style.background = "rgba(60,160,80," + (0.6 * p).toFixed(3) + ")";
    tr.appendChild(td);
  }
  lens.appendChild(tr);
});

// -- attribution and surprise -------------------------------------------------------------
const A = D.attribution;
document.getElementById("attr-note").textContent = "Which input tokens drove the " + A.score +
  " of " + JSON.stringify(A.target) + " as the next token (red: for, blue: against). " +
  "Integrated gradients, " + A.steps + " steps from the baseline (" + A.baseline +
  "): completeness error " + (100 * A.completeness_error).toFixed(3) + "%.";
function colourTokens(div, label, values) {
  div.appendChild(el("b", {}, label + ": "));
  const m = Math.max(1e-12, ...values.map(Math.abs));
  values.forEach((v, i) => {
    const s = tokSpan(i, A.tokens[i]), a = (Math.abs(v) / m).toFixed(3);
    s.style.background = v >= 0 ? "rgba(208,88,74," + a + ")" : "rgba(74,123,208," + a + ")";
    s.title = v.toFixed(4);
    div.appendChild(s);
  });
}
colourTokens(document.getElementById("attr-ig"), "integrated gradients", A.integrated_gradients);
colourTokens(document.getElementById("attr-gxi"), "gradient x input", A.gradient_x_input);
const S = D.surprise;
document.getElementById("surprise-note").textContent = "Perplexity " +
  S.perplexity.toFixed(2) + ". Darker = more surprising (-log2 P); outlined: more than " +
  S.threshold_bits.toFixed(2) + " bits.";
const sdiv = document.getElementById("surprise");
S.tokens.forEach((r, i) => {
  const s = tokSpan(i, r.token), bits = r.surprisal_bits || 0;
  s.style.background = "rgba(208,88,74," + Math.min(1, bits / 16).toFixed(3) + ")";
  if (r.surprising) s.style.outline = "2px solid #d0584a";
  s.title = r.logprob === null ? "first token" : "log P " + r.logprob.toFixed(3) +
    ", rank " + r.rank;
  sdiv.appendChild(s);
});

// -- self test (address ending in #selftest) ----------------------------------------------
if (location.hash === "#selftest") {
  const before = headRows.map(r => r.map(s => s.dataset.w));
  const t = Math.max(0, T - 2);
  textDiv.querySelectorAll(".tok")[t].dispatchEvent(new MouseEvent("mouseover", {bubbles: true}));
  const after = headRows.map(r => r.map(s => +s.dataset.w));
  document.getElementById("selftest").textContent = JSON.stringify({
    hovered: t, focus: focus,
    changed: JSON.stringify(before) !== JSON.stringify(after.map(r => r.map(w => w.toFixed(3)))),
    weights: after, heatmap_cells: +document.getElementById("heatmap").dataset.cells,
    lens_rows: lens.querySelectorAll("tr").length, bars: bars.children.length,
    errors: errors,
  });
}
</script>
</body></html>
"""
