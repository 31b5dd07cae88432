// Pictures of numbers the server computed: grey digits, blue-white-red maps on a stated scale,
// colour bars, line charts, bars. Nothing here computes the lesson's math; it only turns given
// numbers into colours and lengths.

import { t } from "./i18n.js";

const RARE = [217, 217, 217]; // cells the training set almost never inks: neither for nor against

/** Draw a 28×28 digit (rows of 0..255, light ink on black, as MNIST) filling the canvas. */
export function drawDigit(canvas, rows) {
  const h = rows.length, w = rows[0].length;
  const image = new ImageData(w, h);
  rows.forEach((row, r) => row.forEach((v, c) => {
    const i = 4 * (r * w + c);
    image.data[i] = image.data[i + 1] = image.data[i + 2] = v;
    image.data[i + 3] = 255;
  }));
  paint(canvas, image);
}

/** Draw values (flat, h·w of them, row by row) on a blue-white-red scale: 0 white, ±limit full
 *  colour (the figure's shared scale, which a colour bar states); rare cells (flags) grey. */
export function drawDiverging(canvas, values, h, w, limit, rare = null) {
  const top = limit > 0 ? limit : 1;
  const image = new ImageData(w, h);
  values.forEach((v, k) => {
    const [r, g, b] = rare && rare[k] ? RARE : diverging(v / top);
    image.data.set([r, g, b, 255], 4 * k);
  });
  paint(canvas, image);
}

/** The largest |value| of arrays of numbers: a figure's own scale, when the server gives none. */
export function largest(...arrays) {
  let top = 0;
  for (const a of arrays) for (const v of a.flat ? a.flat() : a) top = Math.max(top, Math.abs(v));
  return top || 1;
}

/** t in [−1, 1] -> [r, g, b]: blue for negative, white at 0, red for positive (RdBu). */
export function diverging(t) {
  const s = Math.max(-1, Math.min(1, t));
  const fade = (a) => Math.round(255 - (255 - a) * Math.abs(s));
  return s >= 0 ? [fade(178), fade(24), fade(43)] : [fade(33), fade(102), fade(172)];
}

function paint(canvas, image) {
  const small = document.createElement("canvas");
  small.width = image.width;
  small.height = image.height;
  small.getContext("2d").putImageData(image, 0, 0);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
}

/** A colour bar for a figure whose pictures share one scale: −limit (blue) … 0 … +limit (red),
 *  with the limit as Python printed it, and what the colours mean. Returns the element. */
export function colourBar(holder, limitText, meaning, greyMeaning = null) {
  holder.replaceChildren();
  const bar = document.createElement("div");
  bar.className = "colour-bar";
  bar.dataset.testid = `${holder.id}-bar`;
  const ramp = document.createElement("span");
  ramp.className = "ramp";
  ramp.setAttribute("aria-hidden", "true");
  const low = Object.assign(document.createElement("span"), { textContent: `−${limitText}` });
  const zero = Object.assign(document.createElement("span"), { textContent: "0" });
  const high = Object.assign(document.createElement("span"), { textContent: `+${limitText}` });
  const ticks = document.createElement("span");
  ticks.className = "ticks";
  ticks.append(low, zero, high);
  const say = document.createElement("span");
  say.className = "note";
  say.textContent = meaning;
  bar.append(ramp, ticks, say);
  if (greyMeaning) {
    const grey = document.createElement("span");
    grey.className = "note grey-key";
    grey.textContent = greyMeaning;
    bar.append(grey);
  }
  holder.append(bar);
  return bar;
}

/** Show in `readout` what describe(row, col) says of the cell of an h×w picture under the pointer,
 *  under a finger (tap), or, from the keyboard, at a cursor the arrow keys move (focus starts it in
 *  the middle). The picture says what it shows to a screen reader through its label. */
export function readouts(canvas, h, w, readout, describe, label) {
  let at = [Math.floor(h / 2), Math.floor(w / 2)];
  const show = (r, c) => {
    at = [Math.max(0, Math.min(h - 1, r)), Math.max(0, Math.min(w - 1, c))];
    readout.textContent = describe(at[0], at[1]);
  };
  const fromEvent = (event) => {
    const box = canvas.getBoundingClientRect();
    return [Math.floor(((event.clientY - box.top) / box.height) * h), Math.floor(((event.clientX - box.left) / box.width) * w)];
  };
  canvas.tabIndex = 0;
  if (label) canvas.setAttribute("aria-label", label);
  canvas.setAttribute("role", "img");
  canvas.onpointermove = (event) => show(...fromEvent(event));
  canvas.onpointerdown = (event) => { if (event.pointerType !== "mouse") show(...fromEvent(event)); };
  canvas.onfocus = () => show(...at);
  canvas.onkeydown = (event) => {
    const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    const move = moves[event.key];
    if (!move) return;
    event.preventDefault();
    show(at[0] + move[0], at[1] + move[1]);
  };
  canvas.onpointerleave = canvas.onblur = () => { readout.textContent = ""; };
}

/** A line chart in an <svg>: series [{name, values, colour, dashed}] against 1..n, with its axis range. */
export function lineChart(svg, series, yLabel, xLabel = null, xs = null) {
  const ns = "http://www.w3.org/2000/svg";
  const width = +svg.getAttribute("width"), height = +svg.getAttribute("height");
  const pad = { left: 52, right: 12, top: 30, bottom: 30 };
  const all = series.flatMap((s) => s.values).filter((v) => v !== null && Number.isFinite(v));
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`); // shrinks whole on a narrow screen, never cut
  svg.replaceChildren();
  if (!all.length) return;
  let lo = Math.min(...all), hi = Math.max(...all);
  if (hi === lo) { hi += 0.5; lo -= 0.5; }
  const n = Math.max(...series.map((s) => s.values.length));
  const x = (i) => pad.left + (n === 1 ? 0.5 : i / (n - 1)) * (width - pad.left - pad.right);
  const y = (v) => pad.top + (1 - (v - lo) / (hi - lo)) * (height - pad.top - pad.bottom);
  const add = (tag, attrs, text, colour) => {
    const el = document.createElementNS(ns, tag);
    Object.entries(attrs).forEach(([k, v]) => el.setAttribute(k, v));
    if (text !== undefined) el.textContent = text;
    if (colour) el.style.fill = colour;
    svg.appendChild(el);
    return el;
  };
  add("line", { x1: pad.left, x2: pad.left, y1: pad.top, y2: height - pad.bottom, stroke: "#767676" });
  add("line", { x1: pad.left, x2: width - pad.right, y1: height - pad.bottom, y2: height - pad.bottom, stroke: "#767676" });
  add("text", { x: 2, y: pad.top + 8 }, hi.toPrecision(3));
  add("text", { x: 2, y: height - pad.bottom }, lo.toPrecision(3));
  const first = xs ? xs[0] : 1, last = xs ? xs[xs.length - 1] : n;
  add("text", { x: pad.left, y: height - 8 }, `${xLabel || t("epoch")} ${first}`);
  add("text", { x: width - pad.right - 90, y: height - 8 }, `${xLabel || t("epoch")} ${last}`);
  add("text", { x: pad.left, y: 14 }, yLabel);
  series.forEach((s, k) => {
    const points = s.values.map((v, i) => (v === null || !Number.isFinite(v) ? null : `${x(i)},${y(v)}`)).filter(Boolean);
    add("polyline", { points: points.join(" "), fill: "none", stroke: s.colour, "stroke-width": 2, "stroke-dasharray": s.dashed ? "5 3" : "none" });
    add("text", { x: width - pad.right - 170 + 90 * k, y: 14 }, `— ${s.name}`, s.colour); // above the plot
  });
}
