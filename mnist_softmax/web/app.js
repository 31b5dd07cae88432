// The page: sends your digit to the server as you draw, and shows each step of the answer.
// Every number shown comes from the server (the same functions as `mnist-softmax predict
// --explain`), as the strings Python printed; this file only asks for them and lays them out.

import { api } from "./api.js";
import { applyTo, chosenLanguage, currentLanguage, errorText, t, useLanguage } from "./i18n.js";
import { startLesson, updateLesson } from "./lesson.js";
import { linkHighlights } from "./link.js";
import { startLive } from "./live.js";
import { Pad } from "./pad.js";
import { colourBar, drawDigit, drawDiverging, readouts } from "./pictures.js";
import { loadRun } from "./run.js";
import { drawDetail, drawWeights, sub } from "./weights.js";

const $ = (id) => document.getElementById(id);
const DEBOUNCE_MS = 120; // while drawing, the page asks at most about this often
const ANNOUNCE_MS = 1000; // a screen reader hears the answer at most once a second while you draw

export const state = {
  model: null, // GET /api/model
  session: null, // this page's own weights on the server (sections 8 and 9)
  source: null, // {kind: "pad"} | {kind: "file", blob} | {kind: "test", index}
  record: null, // the last answer of POST /api/predict
  weights: null, // the last answer of GET /api/weights
  sent: 0, // requests sent, so an answer overtaken by a newer one is dropped
  timer: null,
  announced: 0,
  pointed: null, // the class whose row of W is pointed at
  learned: null, // the last answer of POST /api/learn
  scored: null, // the last answer of GET /api/score
};

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
  $("source").textContent = t("reading-drawing");
}

function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(ask, DEBOUNCE_MS);
}

function showPreview(url, text) {
  const img = $("file-preview");
  img.onerror = () => {
    img.hidden = true;
    $("source").textContent = `${text} ${t("no-preview")}`;
  };
  img.src = url;
  img.alt = text;
  img.hidden = false;
  $("source").textContent = text;
  pad.forget(); // the pad starts afresh when you draw on it again
}

function useFile(file) {
  if (!file) return;
  forgetTestLabel();
  state.source = { kind: "file", blob: file };
  showPreview(URL.createObjectURL(file), t("reading-file", { name: file.name }));
  ask();
}

export function useTestDigit(index, rows, label) {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 28;
  drawDigit(canvas, rows);
  state.source = { kind: "test", index, rows };
  $("file").value = ""; // the file chosen before is no longer what the model reads
  $("label").value = String(label); // a test digit comes with its true label: a step teaches that
  state.labelFromTest = true;
  showPreview(canvas.toDataURL(), t("test-digit", { index, label }));
  window.scrollTo({ top: 0, behavior: "instant" }); // back up at the pad, where the digit now is
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
  status("");
  if (code === 200) render(data);
  else if (code === 422) refused(errorText(data));
  else if (code === 404 && data.code === "expired") {
    await forgotten();
    ask();
  } else failed(errorText(data));
}

function status(text) {
  $("status").textContent = text;
}

export async function forgotten() {
  // The server let this page's session go (too many pages open, or idle for long): start afresh.
  const had = state.record ? state.record.page.steps + state.record.page.live_steps : 0;
  await newSession();
  $("learn-status").textContent = had ? t("forgotten", { n: had }) : "";
  refreshWeights();
}

async function newSession() {
  const { data } = await api("/api/session", { method: "POST" });
  state.session = data.session;
}

// ------------------------------------------------------------------------------ 2-7. the answer

const ANSWER_SECTIONS = ["s2", "s3", "s5", "s6", "s7", "s8"];

function showEmpty() {
  state.record = null;
  $("answer").textContent = "";
  $("polarity").textContent = "";
  $("sees").hidden = true;
  $("error").hidden = true;
  for (const id of ANSWER_SECTIONS) $(id).classList.add("stale");
  $("prediction").textContent = "–";
  $("loss").textContent = "–";
  updateButtons();
  updateLesson(state);
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

function showChanged(changed) {
  $("changed").textContent = changed ? t(`changed-${changed.kind}`, { path: changed.path, now: changed.now || "" }) : "";
  $("changed").hidden = !changed;
}

export function render(record) {
  state.record = record;
  const page = record.page;
  showChanged(page.changed);
  $("error").hidden = true;
  $("sees").hidden = false;
  for (const id of ANSWER_SECTIONS) $(id).classList.remove("stale");
  renderSees(record, page);
  renderFeatures(page);
  renderLogits(record, page);
  renderSoftmax(record, page.shown);
  renderLoss(record, page);
  if (state.pointed !== null) drawDetail($("weights-detail"), state.pointed, record, state.model);
  const taken = page.steps;
  $("steps").textContent = t("steps-taken", { n: taken });
  announce(record);
  updateButtons();
  updateLesson(state);
}

function announce(record) {
  // The answer, for a screen reader: at most once a second while drawing, and the last one always.
  clearTimeout(state.announceTimer);
  const say = () => {
    state.announced = Date.now();
    $("announce").textContent = t("announce", { k: record.prediction, p: record.page.shown.probabilities[record.prediction] });
  };
  const wait = ANNOUNCE_MS - (Date.now() - state.announced);
  if (wait <= 0) say();
  else state.announceTimer = setTimeout(say, wait);
}

async function renderSees(record, page) {
  drawDigit($("digit"), page.digit);
  readouts($("digit"), 28, 28, $("digit-readout"), (r, c) => t("pixel-at", { r, c, v: page.digit[r][c] }), t("digit-cap"));
  $("polarity").textContent = t(record.inverted ? "inverted" : "not-inverted");
  $("answer").textContent = t("answer", { k: record.prediction, p: page.shown.probabilities[record.prediction] });
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
      ctx.fillText(t("not-shown"), 6, 70);
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
  ctx.strokeStyle = "#c2410c";
  ctx.lineWidth = 2;
  ctx.strokeRect(ox + c0 * s, oy + r0 * s, (c1 - c0) * s, (r1 - r0) * s);
}

function picture(width, values, h, w, limit, readout, describe, label, className = "pixelated") {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = width;
  canvas.className = className;
  drawDiverging(canvas, values, h, w, limit);
  readouts(canvas, h, w, readout, describe, label);
  return canvas;
}

function renderFeatures(page) {
  const [C, H, W] = state.model.map_shape;
  const N = C * H * W;
  const holder = $("features");
  const readout = $("features-readout");
  holder.replaceChildren();
  const scale = document.createElement("div");
  if (C === 1) {
    const raw = document.createElement("canvas");
    raw.width = raw.height = 168;
    raw.className = "pixelated pic";
    drawDigit(raw, page.digit);
    readouts(raw, 28, 28, readout, (r, c) => t("pixel-at", { r, c, v: page.digit[r][c] }), t("raw-cap"));
    const x = picture(168, page.x, H, W, page.x_limit, readout, (r, c) => `x[${r * W + c}] = ${page.x[r * W + c]}  (${t("row-col", { r, c })})`, t("x-cap"), "pixelated pic");
    holder.append(figure(raw, t("raw-cap")), figure(x, t("x-cap")));
    colourBar(scale, page.shown.x_limit, t("x-scale"));
  } else {
    const grid = document.createElement("div");
    grid.className = "maps";
    for (let c = 0; c < C; c++) {
      const map = page.x.slice(c * H * W, (c + 1) * H * W);
      grid.append(picture(42, map, H, W, page.x_limit, readout, (r, q) => {
        const i = c * H * W + r * W + q;
        return t("map-at", { c, r, q, i, hw: H * W, w: W, v: page.x[i] });
      }, t("map-label", { c })));
    }
    holder.append(grid);
    colourBar(scale, page.shown.x_limit, t("maps-scale", { C }));
  }
  holder.append(scale);
  const strip = $("strip");
  strip.width = N;
  drawDiverging(strip, page.x, 1, N, page.x_limit);
  readouts(strip, 1, N, readout, (r, i) => `x[${i}] = ${page.x[i]}`, t("strip-label", { N }));
  $("strip-caption").textContent = t("strip-cap", { N });
}

function figure(canvas, caption) {
  const fig = document.createElement("figure");
  fig.append(canvas, Object.assign(document.createElement("figcaption"), { textContent: caption }));
  return fig;
}

function renderLogits(record, page) {
  const [H, W] = page.cells;
  const holder = $("logits");
  const readout = $("logits-readout");
  const shown = page.shown;
  holder.replaceChildren(...page.contributions.map((values, k) => {
    const card = document.createElement("div");
    card.className = "class" + (k === record.prediction ? " top" : "");
    card.dataset.testid = `logit-${k}`;
    card.dataset.link = `class-${k}`;
    const where = (r, c) => (H === 28 ? t("pixel-rc", { r, c }) : t("cell-rc", { r, c, C: state.model.map_shape[0] }));
    const canvas = picture(112, values, H, W, page.contributions_limit, readout, (r, c) => t("adds", { k, where: where(r, c), v: values[r * W + c] }), t("contrib-label", { k }));
    const head = Object.assign(document.createElement("div"), { textContent: `${k}` });
    const z = Object.assign(document.createElement("div"), { textContent: `z = ${shown.logits[k]}` });
    const b = Object.assign(document.createElement("div"), { className: "note", textContent: `b = ${shown.bias[k]}` });
    b.dataset.testid = `bias-${k}`;
    card.append(head, canvas, z, b);
    return card;
  }));
  colourBar($("logits-scale"), shown.contributions_limit, t("contrib-scale"));
}

function renderSoftmax(record, shown) {
  const body = $("softmax").tBodies[0];
  body.replaceChildren();
  record.probabilities.forEach((p, k) => {
    const row = body.insertRow();
    row.dataset.link = `class-${k}`;
    if (k === record.prediction) row.className = "top";
    const cells = [[k, null], [shown.logits[k], "term-z"], [shown.shifted[k], "term-shift"], [shown.exp[k], "term-exp"]];
    for (const [text, link] of cells) {
      const cell = row.insertCell();
      cell.textContent = text;
      if (link) cell.dataset.term = link;
    }
    const cell = row.insertCell();
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.setProperty("--p", p.toFixed(4)); // its width: p of the bar's full length (style.css)
    const value = Object.assign(document.createElement("span"), { textContent: shown.probabilities[k] });
    value.dataset.testid = `p-${k}`;
    cell.append(bar, value);
  });
  $("exp-sum").textContent = shown.sum;
  $("p-sum").textContent = shown.probability_sum;
  $("prediction").textContent = `${record.prediction}`;
  // p on a log scale: every class readable, the nine small ones compared (a bar per decade).
  const logs = $("log-bars");
  logs.replaceChildren(...record.probabilities.map((p, k) => {
    const line = document.createElement("div");
    line.className = "log-bar";
    line.dataset.link = `class-${k}`;
    const decades = Math.max(0, Math.min(16, 16 + Math.log10(Math.max(p, 1e-16))));
    const bar = Object.assign(document.createElement("span"), { className: "bar" });
    bar.style.width = `${Math.round(decades * 12)}px`;
    line.append(Object.assign(document.createElement("span"), { className: "k", textContent: k }), bar,
      Object.assign(document.createElement("span"), { textContent: shown.probabilities[k] }));
    return line;
  }));
}

function renderLoss(record, page) {
  const holder = $("gradient");
  holder.replaceChildren();
  if (record.label === undefined) {
    $("loss").textContent = "–";
    $("loss-full").textContent = t("pick-label");
    return;
  }
  const y = record.label;
  const shown = page.shown;
  $("loss").textContent = shown.loss_short;
  const same = Number.isFinite(Number(shown.cross_entropy));
  $("loss-full").textContent = t(same ? "loss-full" : "loss-full-inf", { p: shown.p_label, loss: shown.loss, y, ce: shown.cross_entropy });
  const intro = Object.assign(document.createElement("p"), { innerHTML: t("grad-intro") });
  const scroll = document.createElement("div");
  scroll.className = "scroll";
  scroll.tabIndex = 0;
  scroll.setAttribute("role", "region");
  scroll.setAttribute("aria-label", t("grad-table"));
  const table = document.createElement("table");
  table.className = "softmax gradient-table";
  const head = table.insertRow();
  head.insertCell().textContent = "k";
  const row = table.insertRow();
  row.insertCell().textContent = "dL/dz";
  shown.grad_z.forEach((g, k) => {
    head.insertCell().textContent = k;
    const cell = row.insertCell();
    cell.textContent = g;
    cell.dataset.testid = `grad-z-${k}`;
    cell.dataset.link = `class-${k}`;
  });
  scroll.append(table);
  const [H, W] = page.cells;
  const pictures = document.createElement("div");
  pictures.className = "classes";
  const readout = Object.assign(document.createElement("p"), { className: "readout" });
  page.grad_W.forEach((values, k) => {
    const card = document.createElement("div");
    card.className = "class" + (k === y ? " top" : "");
    card.dataset.link = `class-${k}`;
    const canvas = picture(112, values, H, W, page.grad_limit, readout, (r, c) => t("grad-at", { k, r, c, v: values[r * W + c] }), t("grad-label", { k }));
    const label = Object.assign(document.createElement("div"), { textContent: t("grad-k", { k }) });
    const scale = Object.assign(document.createElement("div"), { className: "note", textContent: t("largest", { v: shown.grad_row_max[k] }) });
    card.append(label, canvas, scale);
    pictures.append(card);
  });
  const scale = document.createElement("div");
  colourBar(scale, shown.grad_limit, t("grad-scale"));
  const note = Object.assign(document.createElement("p"), { className: "note", innerHTML: t("grad-note") });
  holder.append(intro, scroll, note, pictures, scale, readout);
}

// ------------------------------------------------------------------------------ 4. W

export async function refreshWeights() {
  const { status: code, data } = await api(`/api/weights?session=${state.session}`);
  if (code !== 200) return;
  state.weights = data;
  drawWeights(data, state.model, pointAt);
}

function pointAt(k) {
  state.pointed = k;
  drawDetail($("weights-detail"), k, state.record, state.model);
}

// ------------------------------------------------------------------------------ 8. learn

function updateButtons() {
  const ready = state.record !== null && $("label").value !== "";
  $("learn").disabled = !ready;
  $("learn-hint").hidden = ready || state.record === null;
  const changed = state.record ? state.record.page.steps + state.record.page.live_steps : 0;
  $("reset").disabled = changed === 0;
  $("save").disabled = changed === 0;
}

export function pageChanged(liveSteps) {
  // Live training moved the weights: "Save as" and "Reset" have something to act on.
  if (state.record) state.record.page.live_steps = liveSteps;
  $("reset").disabled = $("save").disabled = liveSteps === 0 && !(state.record && state.record.page.steps);
}

async function learn() {
  const lr = $("lr").value.trim();
  if (!lr) {
    $("learn-status").textContent = t("enter-lr");
    return;
  }
  const body = await sourceBody();
  let { status: code, data } = await api(`/api/learn?${query({ lr })}`, { method: "POST", body });
  if (code === 404 && data.code === "expired") {
    await forgotten();
    ({ status: code, data } = await api(`/api/learn?${query({ lr })}`, { method: "POST", body }));
  }
  if (code !== 200) {
    $("learn-status").textContent = errorText(data);
    return;
  }
  $("learn-status").textContent = "";
  state.learned = data;
  render(data.after);
  const y = data.after.label;
  const before = data.before.shown, after = data.after.page.shown;
  const holder = $("learned");
  holder.replaceChildren();
  const line = Object.assign(document.createElement("p"), {
    textContent: t("step-line", { n: data.steps, lr: data.lr, y: sub(y), p0: before.probabilities[y], p1: after.probabilities[y], l0: before.loss, l1: after.loss }),
  });
  const formula = Object.assign(document.createElement("p"), { className: "formula", innerHTML: t("delta-z-formula", { n2: data.delta_z.x_norm2, lr: data.lr, f: data.delta_z.factor }) });
  const scroll = document.createElement("div");
  scroll.className = "scroll";
  scroll.tabIndex = 0;
  scroll.setAttribute("role", "region");
  scroll.setAttribute("aria-label", t("step-table"));
  const table = document.createElement("table");
  table.className = "softmax";
  const rows = [["k", before.probabilities.map((_, k) => k)], [t("p-before"), before.probabilities], [t("p-after"), after.probabilities],
    [t("dz-measured"), data.delta_z.measured], [t("dz-formula"), data.delta_z.formula]];
  rows.forEach(([name, values], r) => {
    const row = table.insertRow();
    row.insertCell().textContent = name;
    values.forEach((v, k) => {
      const cell = row.insertCell();
      cell.textContent = v;
      if (k === y) cell.className = "chosen";
      if (r >= 3) cell.dataset.testid = `${r === 3 ? "dz" : "dz-formula"}-${k}`;
    });
  });
  scroll.append(table);
  holder.append(line, formula, scroll);
  refreshWeights();
}

async function reset() {
  const { status: code, data } = await api(`/api/reset?session=${state.session}`, { method: "POST" });
  if (code === 404) await forgotten();
  else if (code !== 200) {
    $("learn-status").textContent = errorText(data);
    return;
  }
  state.learned = state.scored = null;
  $("learned").textContent = t("reset-done");
  $("learn-status").textContent = "";
  $("test-scored").textContent = "";
  refreshWeights();
  ask();
}

async function save() {
  const name = $("save-name").value.trim();
  const { status: code, data } = await api(`/api/save?session=${state.session}`, { method: "POST", json: name ? { name } : {} });
  $("saved").textContent = code === 200 ? t("saved-as", { path: data.saved, n: data.steps, live: data.live_steps }) : errorText(data);
}

async function testScore() {
  $("test-scored").textContent = t("scoring");
  const { status: code, data } = await api(`/api/score?session=${state.session}`);
  if (code === 200) {
    state.scored = data;
    updateLesson(state);
  }
  $("test-scored").textContent = code === 200 ? t("test-scored", { a: data.shown.accuracy, l: data.shown.loss, a0: data.shown.checkpoint_accuracy, l0: data.shown.checkpoint_loss }) : errorText(data);
}

// ------------------------------------------------------------------------------ start

async function examples() {
  const { status: code, data } = await api("/api/examples");
  const holder = $("examples");
  if (code !== 200) {
    holder.previousElementSibling.hidden = true;
    return;
  }
  holder.replaceChildren(...data.digits.map((d) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "thumb";
    button.dataset.testid = `example-${d.label}`;
    button.setAttribute("aria-label", t("example-label", { k: d.label, index: d.index }));
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 28;
    canvas.className = "pixelated";
    drawDigit(canvas, d.digit);
    button.append(canvas);
    button.onclick = () => useTestDigit(d.index, d.digit, d.label);
    return button;
  }));
}

function setUrl(name, value) {
  const url = new URL(location.href);
  if (value === null) url.searchParams.delete(name);
  else url.searchParams.set(name, value);
  history.replaceState(null, "", url);
}

function switches() {
  const params = new URLSearchParams(location.search);
  const large = params.get("view") === "large";
  const plain = params.get("mode") === "plain";
  document.body.classList.toggle("large", large);
  document.documentElement.classList.toggle("large", large); // rem follows the root's size
  document.body.classList.toggle("plain", plain);
  $("large").setAttribute("aria-pressed", String(large));
  $("mode").setAttribute("aria-pressed", String(!plain));
  $("mode").innerHTML = t(plain ? "mode-plain" : "mode-guided");
  $("lang").innerHTML = t("lang-other");
  $("lang").lang = currentLanguage() === "zh" ? "en" : "zh";
}

async function start() {
  linkHighlights();
  await useLanguage(chosenLanguage());
  switches();
  $("lang").onclick = async () => {
    const next = currentLanguage() === "zh" ? "en" : "zh";
    setUrl("lang", next);
    await useLanguage(next);
    switches();
    applyTo(document);
    rerender();
  };
  $("large").onclick = () => {
    setUrl("view", document.body.classList.contains("large") ? null : "large");
    switches();
  };
  $("mode").onclick = () => {
    setUrl("mode", document.body.classList.contains("plain") ? null : "plain");
    switches();
  };
  pad = new Pad($("canvas"), () => {
    if (!state.source || state.source.kind !== "pad") usePad();
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
  $("test-score").onclick = testScore;
  showEmpty();
  const info = await api("/api/model");
  if (info.status !== 200) {
    status(errorText(info.data));
    return;
  }
  state.model = info.data;
  showChanged(state.model.changed);
  describeModel();
  await newSession();
  usePad();
  refreshWeights();
  examples();
  startLesson(state);
  startLive(state);
  loadRun();
}

function describeModel() {
  const [C, H, W] = state.model.map_shape;
  const N = state.model.n_features;
  $("model-info").textContent = t("model-info", { path: state.model.checkpoint, fe: state.model.front_end, N });
  $("features-how").innerHTML = t(C === 1 ? "features-how-pixels" : "features-how-maps", { fe: state.model.front_end, C, H, W, N, hw: H * W });
}

function rerender() {
  // The language changed: every text the page made is made again, in the new language.
  describeModel();
  if (state.record) render(state.record);
  if (state.weights) drawWeights(state.weights, state.model, pointAt);
  if (state.source && state.source.kind === "pad") $("source").textContent = t("reading-drawing");
  examples();
  startLesson(state, true);
  loadRun();
}

start();
