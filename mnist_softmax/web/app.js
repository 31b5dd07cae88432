// The page: sends your digit to the server as you draw, and shows each step of the answer.
// Every number shown comes from the server (the same functions as `mnist-softmax predict
// --explain`); this file only asks for them and lays them out.

import { Pad } from "./pad.js";
import { drawDigit, drawDiverging, lineChart, onHover } from "./pictures.js";

const $ = (id) => document.getElementById(id);
const DEBOUNCE_MS = 120; // while drawing, the page asks at most about this often

const state = {
  model: null, // GET /api/model
  session: null, // this page's own weights on the server (section 7)
  source: null, // {kind: "pad"} | {kind: "file", blob} | {kind: "test", index}
  record: null, // the last answer of POST /api/predict
  sent: 0, // requests sent, so an answer overtaken by a newer one is dropped
  timer: null,
};

async function api(path, { method = "GET", body = null, json = null } = {}) {
  const options = { method, headers: {} };
  if (json !== null) {
    options.body = JSON.stringify(json);
    options.headers["Content-Type"] = "application/json";
  } else if (body !== null) {
    options.body = body;
    options.headers["Content-Type"] = "application/octet-stream";
  }
  try {
    const response = await fetch(path, options);
    return { status: response.status, data: await response.json() };
  } catch (error) {
    return { status: 0, data: { error: `the server cannot be reached (${error.message}): is mnist-softmax serve still running?` } };
  }
}

function status(text) {
  $("status").textContent = text;
}

// ------------------------------------------------------------------------------ 1. your digit

let pad;

function forgetTestLabel() {
  // The label a test digit brought is that digit's, not the next one's.
  if (state.labelFromTest) $("label").value = "";
  state.labelFromTest = false;
}

function usePad() {
  forgetTestLabel();
  $("file-preview").hidden = true;
  state.source = { kind: "pad" };
  $("source").textContent = "Reading your drawing.";
}

function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(ask, DEBOUNCE_MS);
}

function showPreview(url, text) {
  const img = $("file-preview");
  img.onerror = () => {
    img.hidden = true;
    $("source").textContent = `${text} (This browser cannot show the file; the model reads it all the same.)`;
  };
  img.src = url;
  img.hidden = false;
  $("source").textContent = text;
  pad.forget(); // the pad starts afresh when you draw on it again
}

function useFile(file) {
  if (!file) return;
  forgetTestLabel();
  state.source = { kind: "file", blob: file };
  showPreview(URL.createObjectURL(file), `Reading ${file.name}. Draw on the pad, or clear it, to draw instead.`);
  ask();
}

function useTestDigit(index, rows, label) {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 28;
  drawDigit(canvas, rows);
  state.source = { kind: "test", index, rows };
  $("file").value = ""; // the file chosen before is no longer what the model reads
  $("label").value = String(label); // a test digit comes with its true label: a step teaches that
  state.labelFromTest = true;
  showPreview(canvas.toDataURL(), `MNIST test digit #${index} (labelled ${label}), as the model sees it.`);
  window.scrollTo({ top: 0, behavior: "smooth" });
  ask();
}

async function sourceBody() {
  const { source } = state;
  if (source.kind === "pad") return pad.png();
  if (source.kind === "file") return source.blob;
  return null;
}

function query(extra = {}) {
  const q = new URLSearchParams({ session: state.session });
  const label = $("label").value;
  if (label !== "") q.set("label", label);
  if (state.source.kind === "test") q.set("test", state.source.index);
  for (const [k, v] of Object.entries(extra)) q.set(k, v);
  return q.toString();
}

async function ask() {
  if (!state.source || (state.source.kind === "pad" && pad.empty)) {
    showEmpty();
    return;
  }
  const mine = ++state.sent;
  status("…");
  const body = await sourceBody();
  const { status: code, data } = await api(`/api/predict?${query()}`, { method: "POST", body });
  if (mine !== state.sent) return; // a newer drawing is on its way
  if (code === 200) {
    render(data);
    status("");
  } else if (code === 422) {
    refused(data.error);
    status("");
  } else if (code === 404 && /session/.test(data.error)) {
    await forgotten();
    ask();
  } else {
    failed(data.error);
    status("");
  }
}

async function forgotten() {
  // The server keeps at most 16 pages' learning steps, for an hour idle: this page's were let go.
  const had = state.record ? state.record.page.steps : 0;
  await newSession();
  $("learn-status").textContent = had
    ? `The server let this page's ${had} learning steps go (too many pages open, or an hour idle): back to the checkpoint's weights.`
    : "";
}

// ------------------------------------------------------------------------------ 2-6. the answer

function showEmpty() {
  state.record = null;
  $("answer").textContent = "";
  $("polarity").textContent = "";
  $("sees").hidden = true;
  $("error").hidden = true;
  for (const id of ["s2", "s3", "s4", "s5", "s6", "s7"]) $(id).classList.add("stale");
  $("prediction").textContent = "–";
  $("loss").textContent = "–";
  updateButtons();
}

function refused(message) {
  delete $("error").dataset.kind;
  showEmpty();
  $("error").textContent = message;
  $("error").hidden = false;
  $("s2").classList.remove("stale");
}

function failed(message) {
  // Not a refusal of the image (too large a file, a server gone): the same place, said as it is.
  refused(message);
  $("error").dataset.kind = "failure";
}

function showChanged(note) {
  $("changed").textContent = note || "";
  $("changed").hidden = !note;
}

function render(record) {
  state.record = record;
  const page = record.page;
  showChanged(page.changed);
  $("error").hidden = true;
  $("sees").hidden = false;
  for (const id of ["s2", "s3", "s4", "s5", "s6", "s7"]) $(id).classList.remove("stale");
  renderSees(record, page);
  renderFeatures(page);
  renderLogits(record, page);
  renderSoftmax(record, page.shown);
  renderLoss(record, page);
  $("steps").textContent = `${page.steps} step${page.steps === 1 ? "" : "s"} taken`;
  updateButtons();
}

async function renderSees(record, page) {
  drawDigit($("digit"), page.digit);
  onHover($("digit"), 28, 28, $("digit-readout"), (r, c) => `pixel (${r}, ${c}) = ${page.digit[r][c]}`);
  $("polarity").textContent = record.inverted
    ? "Dark ink on light paper: inverted to light on dark, as MNIST is."
    : "Light ink on a dark background: kept as it is, as MNIST is.";
  const canvas = $("original");
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  let image;
  if (state.source.kind === "pad") image = pad.canvas;
  else if (state.source.kind === "file") {
    try {
      image = await createImageBitmap(state.source.blob, { imageOrientation: "from-image" });
    } catch {
      ctx.fillStyle = "#5d6675";
      ctx.font = "12px sans-serif";
      ctx.fillText("(not shown by this browser)", 6, 70);
      return;
    }
  } else {
    image = document.createElement("canvas");
    image.width = image.height = 28;
    drawDigit(image, state.source.rows);
  }
  const [H, W] = page.size;
  const s = Math.min(canvas.width / W, canvas.height / H);
  const [ox, oy] = [(canvas.width - W * s) / 2, (canvas.height - H * s) / 2];
  ctx.imageSmoothingEnabled = W > 64;
  ctx.drawImage(image, ox, oy, W * s, H * s);
  const [r0, r1, c0, c1] = page.box;
  ctx.strokeStyle = "#e8590c";
  ctx.lineWidth = 2;
  ctx.strokeRect(ox + c0 * s, oy + r0 * s, (c1 - c0) * s, (r1 - r0) * s);
}

function renderFeatures(page) {
  const [C, H, W] = state.model.map_shape;
  const N = C * H * W;
  const holder = $("features");
  const readout = $("features-readout");
  holder.replaceChildren();
  if (C === 1) {
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 168;
    canvas.className = "pixelated";
    drawDiverging(canvas, page.x, H, W);
    onHover(canvas, H, W, readout, (r, c) => `x[${r * W + c}] = ${page.x[r * W + c].toFixed(4)}  (row ${r}, column ${c})`);
    holder.appendChild(canvas);
  } else {
    const grid = document.createElement("div");
    grid.className = "maps";
    for (let c = 0; c < C; c++) {
      const canvas = document.createElement("canvas");
      canvas.width = canvas.height = 42;
      canvas.className = "pixelated";
      const map = page.x.slice(c * H * W, (c + 1) * H * W);
      drawDiverging(canvas, map, H, W);
      onHover(canvas, H, W, readout, (r, q) => {
        const i = c * H * W + r * W + q;
        return `map ${c} at (${r}, ${q}): x[${i}] = x[${c}·${H * W} + ${r}·${W} + ${q}] = ${page.x[i].toFixed(4)}`;
      });
      grid.appendChild(canvas);
    }
    holder.appendChild(grid);
  }
  const strip = $("strip");
  strip.width = N;
  drawDiverging(strip, page.x, 1, N);
  onHover(strip, 1, N, readout, (r, i) => `x[${i}] = ${page.x[i].toFixed(4)}`);
  $("strip-caption").textContent = `x itself, N = ${N} numbers in a row (red above 0, blue below): the input of the layer.`;
}

function renderLogits(record, page) {
  const [H, W] = page.cells;
  const holder = $("logits");
  holder.replaceChildren();
  const shown = page.shown;
  page.contributions.forEach((values, k) => {
    const card = document.createElement("div");
    card.className = "class" + (k === record.prediction ? " top" : "");
    card.dataset.testid = `logit-${k}`;
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 84;
    canvas.className = "pixelated";
    drawDiverging(canvas, values, H, W);
    onHover(canvas, H, W, $("logits-readout"), (r, c) => {
      const where = H === 28 ? `pixel (${r}, ${c})` : `cell (${r}, ${c}), summed over the ${state.model.map_shape[0]} maps`;
      return `class ${k}, ${where}: W·x adds ${values[r * W + c].toFixed(4)}`;
    });
    const head = document.createElement("div");
    head.textContent = `${k}`;
    const z = document.createElement("div");
    z.textContent = `z = ${shown.logits[k]}`;
    const b = document.createElement("div");
    b.className = "note";
    b.dataset.testid = `bias-${k}`;
    b.textContent = `b = ${shown.bias[k]}`;
    card.append(head, canvas, z, b);
    holder.appendChild(card);
  });
}

function renderSoftmax(record, shown) {
  const body = $("softmax").tBodies[0];
  body.replaceChildren();
  record.probabilities.forEach((p, k) => {
    const row = body.insertRow();
    if (k === record.prediction) row.className = "top";
    for (const text of [k, shown.logits[k], shown.shifted[k], shown.exp[k]]) row.insertCell().textContent = text;
    const cell = row.insertCell();
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.round(p * 120)}px`;
    const value = document.createElement("span");
    value.dataset.testid = `p-${k}`;
    value.textContent = shown.probabilities[k];
    cell.append(bar, value);
  });
  $("exp-sum").textContent = shown.sum;
  $("p-sum").textContent = shown.probability_sum;
  $("prediction").textContent = `${record.prediction}`;
  $("answer").textContent = `The model reads ${record.prediction}, with p = ${shown.probabilities[record.prediction]}.`;
}

function renderLoss(record, page) {
  const holder = $("gradient");
  holder.replaceChildren();
  if (record.label === undefined) {
    $("loss").textContent = "–";
    $("loss-full").textContent = "(pick the true digit)";
    return;
  }
  const y = record.label;
  const shown = page.shown;
  $("loss").textContent = shown.loss_short;
  $("loss-full").textContent = `−log ${shown.p_label} = ${shown.loss}; cross entropy of p against ${y}: ${shown.cross_entropy} ${shown.cross_entropy_note}`;
  const intro = document.createElement("p");
  intro.textContent = "dL/dz = p − onehot(y): each class's score is pushed down by its probability, the true one's pulled up by 1 − p.";
  const table = document.createElement("table");
  table.className = "softmax";
  const head = table.insertRow();
  for (const t of ["k", ...page.grad_z.map((_, k) => k)]) head.insertCell().textContent = t;
  const row = table.insertRow();
  row.insertCell().textContent = "dL/dz";
  shown.grad_z.forEach((g, k) => {
    const cell = row.insertCell();
    cell.textContent = g;
    cell.dataset.testid = `grad-z-${k}`;
  });
  const [H, W] = page.cells;
  const pictures = document.createElement("div");
  pictures.className = "classes";
  const readout = document.createElement("p");
  readout.className = "readout";
  page.grad_W.forEach((values, k) => {
    const card = document.createElement("div");
    card.className = "class" + (k === y ? " top" : "");
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 84;
    canvas.className = "pixelated";
    drawDiverging(canvas, values, H, W);
    onHover(canvas, H, W, readout, (r, c) => `dL/dW for class ${k} at (${r}, ${c}) = ${values[r * W + c].toExponential(3)}`);
    const label = document.createElement("div");
    label.textContent = `dL/dW, class ${k}`;
    const scale = document.createElement("div");
    scale.className = "note";
    scale.textContent = `largest ${Math.max(...values.map(Math.abs)).toExponential(1)}`;
    card.append(label, canvas, scale);
    pictures.appendChild(card);
  });
  const note = document.createElement("p");
  note.className = "note";
  note.textContent = "dL/dW = (p − onehot(y)) xᵀ: a step against it makes this digit's features count more for y, less for the others. " +
    "Each picture has its own colour scale; its largest value is under it.";
  holder.append(intro, table, note, pictures, readout);
}

// ------------------------------------------------------------------------------ 7. learn

function updateButtons() {
  const ready = state.record !== null && $("label").value !== "";
  $("learn").disabled = !ready;
  const steps = state.record ? state.record.page.steps : 0;
  $("reset").disabled = steps === 0;
  $("save").disabled = steps === 0;
}

async function learn() {
  const lr = $("lr").value.trim();
  if (!lr) {
    $("learn-status").textContent = "Enter a learning rate first (for example 0.005).";
    return;
  }
  const body = await sourceBody();
  let { status: code, data } = await api(`/api/learn?${query({ lr })}`, { method: "POST", body });
  if (code === 404 && /session/.test(data.error)) {
    await forgotten();
    ({ status: code, data } = await api(`/api/learn?${query({ lr })}`, { method: "POST", body }));
  }
  if (code !== 200) {
    $("learn-status").textContent = data.error;
    return;
  }
  $("learn-status").textContent = "";
  render(data.after);
  const y = data.after.label;
  const before = data.before.shown.probabilities, after = data.after.page.shown.probabilities;
  const holder = $("learned");
  holder.replaceChildren();
  const line = document.createElement("p");
  line.textContent = `Step ${data.steps} (lr ${data.lr}): p${sub(y)} went from ${before[y]} to ${after[y]}; ` +
    `the loss from ${data.before.shown.loss} to ${data.after.page.shown.loss}.`;
  const table = document.createElement("table");
  table.className = "softmax";
  for (const [name, values] of [["k", before.map((_, k) => k)], ["p before", before], ["p after", after]]) {
    const row = table.insertRow();
    row.insertCell().textContent = name;
    values.forEach((v, k) => {
      const cell = row.insertCell();
      cell.textContent = v;
      if (k === y) cell.className = "chosen";
    });
  }
  holder.append(line, table);
}

function sub(k) {
  return String(k).replace(/\d/g, (d) => "₀₁₂₃₄₅₆₇₈₉"[d]);
}

async function reset() {
  const { status: code, data } = await api(`/api/reset?session=${state.session}`, { method: "POST" });
  if (code === 404) await forgotten();
  else if (code !== 200) {
    $("learn-status").textContent = data.error;
    return;
  }
  $("learned").textContent = "Back to the checkpoint's own weights.";
  $("learn-status").textContent = "";
  ask();
}

async function save() {
  const name = $("save-name").value.trim();
  const { status: code, data } = await api(`/api/save?session=${state.session}`, { method: "POST", json: name ? { name } : {} });
  $("saved").textContent = code === 200 ? `saved as ${data.saved} (${data.steps} steps)` : data.error;
}

async function newSession() {
  const { data } = await api("/api/session", { method: "POST" });
  state.session = data.session;
}

// ------------------------------------------------------------------------------ 8. the run

async function loadRun() {
  const run = await api("/api/run");
  if (run.status === 200) {
    const h = run.data.history;
    const col = (key) => h.map((r) => r[key]);
    const svg = $("curves");
    lineChart(svg, [
      { name: "train", values: col("train_loss"), colour: "#2b59c3" },
      { name: "validation", values: col("val_loss"), colour: "#e8590c", dashed: true },
    ], "softmax loss");
    lineChart($("curves-acc"), [
      { name: "train", values: col("train_acc"), colour: "#2b59c3" },
      { name: "validation", values: col("val_acc"), colour: "#e8590c", dashed: true },
    ], "accuracy");
    $("run-note").textContent = run.data.summary;
  } else {
    $("run-note").textContent = run.data.error;
  }
  const scores = await api("/api/confusion");
  if (scores.status !== 200) {
    $("confusion-caption").textContent = scores.data.error;
    return;
  }
  const cm = scores.data.confusion;
  const table = $("confusion");
  table.replaceChildren();
  const head = table.insertRow();
  head.insertCell().textContent = "";
  cm.forEach((_, k) => { head.appendChild(Object.assign(document.createElement("th"), { textContent: k })); });
  const top = Math.log1p(Math.max(...cm.flat()));
  cm.forEach((row, t) => {
    const tr = table.insertRow();
    tr.appendChild(Object.assign(document.createElement("th"), { textContent: t }));
    row.forEach((count, p) => {
      const td = tr.insertCell();
      td.textContent = count;
      td.dataset.testid = `cell-${t}-${p}`;
      const shade = Math.log1p(count) / top;
      const [r, g, b] = t === p ? [43, 89, 195] : [179, 38, 30];
      td.style.background = `rgba(${r}, ${g}, ${b}, ${0.08 + 0.85 * shade})`;
      td.style.color = shade > 0.6 ? "#fff" : "";
      td.onclick = () => showCell(t, p, td);
    });
  });
  $("confusion-caption").textContent = `test set, ${scores.data.shown}: rows the true digit, columns the prediction; click a cell`;
}

async function showCell(t, p, td) {
  document.querySelectorAll(".confusion td.picked").forEach((c) => c.classList.remove("picked"));
  td.classList.add("picked");
  const { status: code, data } = await api(`/api/cell?true=${t}&predicted=${p}&limit=60`);
  const holder = $("cell");
  holder.replaceChildren();
  if (code !== 200) {
    holder.textContent = data.error;
    return;
  }
  const title = document.createElement("p");
  title.textContent = `${data.count} test digit${data.count === 1 ? "" : "s"} labelled ${t}, read as ${p}` +
    (data.count > data.digits.length ? ` (the first ${data.digits.length})` : "") + ": click one to follow it through sections 2–7.";
  const thumbs = document.createElement("div");
  thumbs.className = "thumbs";
  for (const d of data.digits) {
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 28;
    canvas.className = "pixelated";
    canvas.title = `test digit #${d.index}`;
    canvas.dataset.testid = `test-digit-${d.index}`;
    drawDigit(canvas, d.digit);
    canvas.onclick = () => useTestDigit(d.index, d.digit, t);
    thumbs.appendChild(canvas);
  }
  holder.append(title, thumbs);
}

// ------------------------------------------------------------------------------ start

async function start() {
  pad = new Pad($("canvas"), () => {
    if (state.source && state.source.kind !== "pad") usePad();
    if (!state.source) usePad();
    if (pad.empty) showEmpty();
    else schedule();
  });
  $("undo").onclick = () => pad.undo();
  $("clear").onclick = () => { usePad(); pad.clear(); };
  $("file").onchange = (e) => {
    useFile(e.target.files[0]);
    e.target.value = ""; // so that choosing the same file again, after drawing, reads it again
  };
  const zone = $("pad");
  zone.ondragover = (e) => { e.preventDefault(); zone.classList.add("dropping"); };
  zone.ondragleave = () => zone.classList.remove("dropping");
  zone.ondrop = (e) => {
    e.preventDefault();
    zone.classList.remove("dropping");
    useFile(e.dataTransfer.files[0]);
  };
  $("label").onchange = () => { state.labelFromTest = false; updateButtons(); if (state.source) ask(); };
  $("learn").onclick = learn;
  $("reset").onclick = reset;
  $("save").onclick = save;
  showEmpty();
  const info = await api("/api/model");
  if (info.status !== 200) {
    status(info.data.error);
    return;
  }
  state.model = info.data;
  showChanged(state.model.changed);
  const [C, H, W] = state.model.map_shape;
  $("model-info").textContent = `Model: ${state.model.checkpoint} (${state.model.front_end}, N = ${state.model.n_features}).`;
  $("features-how").textContent = C === 1
    ? `For the pixels front end, x is the 28×28 image itself, each pixel standardised: (pixel − mean) / scale, with the training set's mean and scale for that pixel; N = ${H * W}. Hover to read a value.`
    : `The ${state.model.front_end} front end turns the image into ${C} maps of ${H}×${W}; they are flattened in C order (map by map, row by row) into N = ${C}·${H}·${W} = ${C * H * W}: x[c·${H * W} + h·${W} + w] is map c at (h, w). Hover to read a value.`;
  await newSession();
  usePad();
  loadRun();
}

start();
