// The lesson's path: its six steps in its order, each on the lesson's own worked examples (numbers the
// server computed with the project's functions: GET /api/lesson, GET /api/softmax) and on the
// learner's own digit (the last answer, step and test score of this page). Guided mode tells each step
// in words; plain mode keeps only the formulas and the numbers.

import { api } from "./api.js";
import { errorText, t } from "./i18n.js";
import { sub } from "./weights.js";

const $ = (id) => document.getElementById(id);
const STEPS = ["layer", "softmax", "loss", "ce", "gradient", "step"];
const SECTION = { layer: "s5", softmax: "s6", loss: "s7", ce: "s7", gradient: "s7", step: "s8" };
const DEMO = "1000, 1001, 1002";
const FIRST = "1, 2, 3";
const TYPING_MS = 250;

let lesson = null; // GET /api/lesson
let asked = 0;

/** Build the path (again, in the current language, when `again`), then fill in the numbers. */
export async function startLesson(state, again = false) {
  const holder = $("path-steps");
  holder.replaceChildren(...STEPS.map((name, i) => card(name, i)));
  const input = $("lesson-logits");
  input.value = again && state.lessonLogits ? state.lessonLogits : FIRST;
  let typing = null;
  input.oninput = () => {
    state.lessonLogits = input.value;
    clearTimeout(typing);
    typing = setTimeout(() => editSoftmax(input.value), TYPING_MS); // "1000," on the way to "1000, 1001" is not asked
  };
  $("lesson-first").onclick = () => { input.value = state.lessonLogits = FIRST; editSoftmax(FIRST); };
  $("lesson-demo").onclick = () => { input.value = state.lessonLogits = DEMO; editSoftmax(DEMO); };
  if (!lesson) {
    const { status, data } = await api("/api/lesson");
    if (status !== 200) {
      $("path-error").textContent = errorText(data);
      return;
    }
    lesson = data;
  }
  workedExamples();
  editSoftmax(input.value);
  updateLesson(state);
}

function card(name, i) {
  const li = document.createElement("li");
  li.className = "step-card";
  li.id = `step-${name}`;
  const head = document.createElement("h3");
  head.innerHTML = `<span class="n">${i + 1}</span> ${t(`step-${name}-h`)}`;
  const formula = Object.assign(document.createElement("p"), { className: "formula", innerHTML: t(`step-${name}-formula`) });
  const guide = Object.assign(document.createElement("p"), { className: "guide", innerHTML: t(`step-${name}-guide`) });
  const worked = Object.assign(document.createElement("div"), { className: "worked", id: `worked-${name}` });
  const own = Object.assign(document.createElement("div"), { className: "own", id: `own-${name}` });
  const go = Object.assign(document.createElement("a"), { href: `#${SECTION[name]}`, textContent: t("see-section", { n: SECTION[name].slice(1) }) });
  li.append(head, formula, guide, worked, own, go);
  if (name === "softmax") worked.append(softmaxEditor());
  if (i === 0) li.prepend(Object.assign(document.createElement("p"), { className: "error-line", id: "path-error" }));
  return li;
}

function softmaxEditor() {
  const box = document.createElement("div");
  box.innerHTML = `
    <p class="controls"><label>${t("logits-input")} <input id="lesson-logits" data-testid="lesson-logits" type="text"
      inputmode="decimal" spellcheck="false" autocomplete="off"></label>
      <button type="button" id="lesson-first">z = [1, 2, 3]</button>
      <button type="button" id="lesson-demo">z = [1000, 1001, 1002]</button></p>
    <p class="error-line" id="lesson-error" role="status" aria-live="polite"></p>
    <div class="scroll" tabindex="0" role="region" aria-label="${t("lesson-table")}"><table class="softmax" id="lesson-table"></table></div>
    <p>${t("lesson-p-is")} <output id="lesson-p" data-testid="lesson-p" data-link="term-p"></output></p>
    <p class="note" id="lesson-naive"></p>`;
  return box;
}

async function editSoftmax(text) {
  const mine = ++asked;
  const { status, data } = await api(`/api/softmax?z=${encodeURIComponent(text)}`);
  if (mine !== asked) return; // a newer edit is on its way
  if (status !== 200) {
    $("lesson-error").textContent = errorText(data);
    return;
  }
  $("lesson-error").textContent = "";
  const rows = [
    ["z", data.z, "term-z"], ["z − max z", data.shifted, "term-shift"], ["exp(z − max z)", data.exp, "term-exp"],
    ["p", data.p, "term-p"], [t("without-max"), data.naive.exp, null], [t("p-without-max"), data.naive.p, null],
  ];
  table($("lesson-table"), data.z.map((_, k) => `${k}`), rows);
  $("lesson-p").textContent = data.p.join(", ");
  const broke = data.naive.p.some((v) => !Number.isFinite(Number(v)));
  $("lesson-naive").innerHTML = t(broke ? "naive-broke" : "naive-same", { sum: data.naive.sum, s: data.sum, max: data.max });
}

/** A table: a header row of names, then one row per [label, values, link]. */
function table(el, names, rows) {
  el.replaceChildren();
  const head = el.createTHead().insertRow();
  head.append(Object.assign(document.createElement("th"), { scope: "col", textContent: "k" }));
  for (const n of names) head.append(Object.assign(document.createElement("th"), { scope: "col", textContent: n }));
  const body = el.createTBody();
  for (const [label, values, link] of rows) {
    const row = body.insertRow();
    const th = Object.assign(document.createElement("th"), { scope: "row", textContent: label });
    if (link) th.dataset.link = link;
    row.append(th);
    values.forEach((v) => {
      const cell = row.insertCell();
      cell.textContent = v;
      if (link) cell.dataset.link = link;
    });
  }
}

function vector(values) {
  return `[${values.join(", ")}]`;
}

function workedExamples() {
  const s = lesson.softmax;
  $("worked-layer").innerHTML = t("worked-layer", { z: vector(s.z) });
  const loss = $("worked-loss");
  const y = lesson.label;
  loss.innerHTML = `<p>${t("worked-loss-intro", { k: y + 1, i: y, n: lesson.losses.right.p.length })}</p>`;
  const grid = document.createElement("div");
  grid.className = "three";
  for (const name of ["right", "close", "absurd"]) {
    const l = lesson.losses[name];
    const box = document.createElement("div");
    box.className = "example";
    box.dataset.testid = `lesson-loss-${name}`;
    box.innerHTML = `<p><strong>${t(`loss-${name}`)}</strong></p><p>p = ${vector(l.p)}</p>
      <p>−log p${sub(y)} = −log ${l.p_true} = <strong data-link="term-loss">${l.loss}</strong></p>`;
    grid.append(box);
  }
  loss.append(grid, Object.assign(document.createElement("p"), { className: "guide", innerHTML: t("loss-order", {
    a: lesson.losses.right.loss, b: lesson.losses.close.loss, c: lesson.losses.absurd.loss }) }));
  const ce = lesson.cross_entropy;
  $("worked-ce").innerHTML = t("worked-ce", { z: vector(ce.z), y: ce.label, sl: ce.softmax_loss, ce: ce.cross_entropy, ys: sub(ce.label) });
  const g = lesson.gradient;
  $("worked-gradient").innerHTML = t("worked-gradient", { p: vector(g.p), y: vector(g.onehot), g: vector(g.grad), k: g.label });
  $("worked-step").innerHTML = t("worked-step");
}

/** The learner's own numbers in each step: called whenever the page has a new answer, step or score. */
export function updateLesson(state) {
  if (!lesson) return;
  const record = state.record;
  const model = state.model;
  if (!record || !model) {
    for (const name of STEPS) $(`own-${name}`).innerHTML = `<p class="note">${t("own-none")}</p>`;
    return;
  }
  const shown = record.page.shown;
  const [C, H, W] = model.map_shape;
  const T = model.classes, N = model.n_features;
  const maps = C > 1 ? t("own-maps", { C, H, W, N }) : "";
  $("own-layer").innerHTML = `${maps}${t("own-layer", { T, N, z: vector(shown.logits), k: record.prediction })}`;
  $("own-softmax").innerHTML = t("own-softmax", { p: vector(shown.probabilities), s: shown.probability_sum, k: record.prediction });
  if (record.label === undefined) {
    for (const name of ["loss", "ce", "gradient"]) $(`own-${name}`).innerHTML = `<p class="note">${t("own-no-label")}</p>`;
  } else {
    const y = record.label;
    $("own-loss").innerHTML = t("own-loss", { y, ys: sub(y), p: shown.p_label, loss: shown.loss });
    $("own-ce").innerHTML = t("own-ce", { sl: shown.loss, ce: shown.cross_entropy });
    $("own-gradient").innerHTML = t("own-gradient", { y, g: vector(shown.grad_z) });
  }
  ownStep(state);
}

function ownStep(state) {
  const own = $("own-step");
  own.replaceChildren();
  const learned = state.learned;
  if (!learned) {
    own.innerHTML = `<p class="note">${t("own-no-step")}</p>`;
  } else {
    const y = learned.after.label;
    const d = learned.delta_z;
    own.innerHTML = t("own-step", { lr: learned.lr, n2: d.x_norm2, f: d.factor, y, ys: sub(y),
      dz: vector(d.measured), formula: vector(d.formula) });
  }
  const scored = state.scored;
  if (scored) {
    own.append(Object.assign(document.createElement("p"), { textContent: t("own-test", {
      a0: scored.shown.checkpoint_accuracy, a1: scored.shown.accuracy, n: scored.steps }) }));
  }
}
