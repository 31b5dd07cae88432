// Pictures of numbers the server computed: grey digits, blue-white-red maps, line charts.
// Nothing here computes the lesson's math; it only turns given numbers into colours.

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
 *  colour (limit: the largest |value|, unless given). */
export function drawDiverging(canvas, values, h, w, limit) {
  const top = limit || Math.max(1e-12, ...values.map(Math.abs));
  const image = new ImageData(w, h);
  values.forEach((v, k) => {
    const [r, g, b] = diverging(v / top);
    image.data.set([r, g, b, 255], 4 * k);
  });
  paint(canvas, image);
}

/** t in [−1, 1] -> [r, g, b]: blue for negative, white at 0, red for positive. */
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

/** Show in `readout` what describe(row, col) says of the cell of an h×w picture under the pointer. */
export function onHover(canvas, h, w, readout, describe) {
  canvas.onpointermove = (event) => {
    const box = canvas.getBoundingClientRect();
    const c = Math.min(w - 1, Math.floor(((event.clientX - box.left) / box.width) * w));
    const r = Math.min(h - 1, Math.floor(((event.clientY - box.top) / box.height) * h));
    readout.textContent = describe(r, c);
  };
  canvas.onpointerleave = () => { readout.textContent = ""; };
}

/** A line chart in an <svg>: series [{name, values, colour, dashed}] against 1..n, with its axis range. */
export function lineChart(svg, series, yLabel) {
  const ns = "http://www.w3.org/2000/svg";
  const width = +svg.getAttribute("width"), height = +svg.getAttribute("height");
  const pad = { left: 44, right: 10, top: 24, bottom: 26 };
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
  add("line", { x1: pad.left, x2: pad.left, y1: pad.top, y2: height - pad.bottom, stroke: "#999" });
  add("line", { x1: pad.left, x2: width - pad.right, y1: height - pad.bottom, y2: height - pad.bottom, stroke: "#999" });
  add("text", { x: 2, y: pad.top + 8 }, hi.toPrecision(3));
  add("text", { x: 2, y: height - pad.bottom }, lo.toPrecision(3));
  add("text", { x: pad.left, y: height - 6 }, "epoch 1");
  add("text", { x: width - pad.right - 52, y: height - 6 }, `epoch ${n}`);
  add("text", { x: pad.left, y: 12 }, yLabel);
  series.forEach((s, k) => {
    const points = s.values.map((v, i) => (v === null || !Number.isFinite(v) ? null : `${x(i)},${y(v)}`)).filter(Boolean);
    add("polyline", { points: points.join(" "), fill: "none", stroke: s.colour, "stroke-width": 2, "stroke-dasharray": s.dashed ? "5 3" : "none" });
    add("text", { x: width - pad.right - 150 + 75 * k, y: 12 }, `— ${s.name}`, s.colour); // above the plot
  });
}
