// Section 9: watch W learn. The layer is trained in the server, a frame at a time (live.py: train's
// own loop and update), from zeros or from the checkpoint; while it plays, the page asks for the next
// frame as soon as one is drawn, and stops asking when paused or gone. Each frame brings the curves,
// the validation accuracy and W's rows, which the page draws on one scale.

import { api } from "./api.js";
import { forgotten, pageChanged, refreshWeights } from "./app.js";
import { errorText, t } from "./i18n.js";
import { lineChart } from "./pictures.js";
import { drawRows } from "./weights.js";

const $ = (id) => document.getElementById(id);
let playing = false;
let started = false;
let last = null;
let curves = []; // the rows of the curves so far: each frame's answer brings the new ones
let have = 0; // frames whose rows are in curves

export function startLive(state) {
  $("train-play").onclick = () => play(state);
  $("train-pause").onclick = () => pause();
  $("train-step").onclick = () => frame(state, 1);
  $("live-from").onchange = () => { started = false; };
  if (last) paint(); // again, in the page's new language
}

async function ensureStarted(state) {
  if (started) return true;
  const q = new URLSearchParams({ session: state.session, action: "start", from: $("live-from").value });
  $("live-status").textContent = t("live-preparing");
  const { status: code, data } = await api(`/api/live?${q}`, { method: "POST" });
  if (code === 404 && data.code === "expired") {
    await forgotten();
    return ensureStarted(state);
  }
  if (code !== 200) {
    $("live-status").textContent = errorText(data);
    return false;
  }
  $("live-status").textContent = "";
  started = true;
  draw(data);
  return true;
}

async function frame(state, steps = null) {
  if (!(await ensureStarted(state))) return false;
  const q = new URLSearchParams({ session: state.session, action: "frame", lr: $("live-lr").value.trim(), batch: $("live-batch").value.trim(), since: have });
  q.set("steps", steps || $("live-speed").value.trim() || "5");
  const { status: code, data } = await api(`/api/live?${q}`, { method: "POST" });
  if (code !== 200) {
    $("live-status").textContent = errorText(data);
    if (code === 404 && data.code === "expired") started = false;
    return false;
  }
  $("live-status").textContent = "";
  draw(data);
  pageChanged(data.steps);
  return true;
}

async function play(state) {
  if (playing) return;
  playing = true;
  $("train-play").disabled = true;
  $("train-pause").disabled = false;
  $("train-pause").focus();
  while (playing && document.visibilityState !== "hidden") {
    if (!(await frame(state))) break;
  }
  pause();
  refreshWeights();
}

function pause() {
  playing = false;
  $("train-play").disabled = false;
  $("train-pause").disabled = true;
}

function draw(data) {
  last = data;
  if (data.frames < have || data.frames === 0) curves = []; // started afresh
  curves = curves.concat(data.history).slice(-2000);
  have = data.frames;
  paint();
}

function paint() {
  const data = last;
  const h = curves;
  $("train-val-acc").textContent = data.shown.val_accuracy || "–";
  $("live-progress").textContent = t("live-progress", { steps: data.steps, epoch: data.epoch, seen: data.seen, rows: data.rows, val: data.val_rows });
  const xs = h.map((r) => r.steps);
  lineChart($("live-loss"), [{ name: t("train"), values: h.map((r) => r.loss), colour: "#2b59c3" }], t("softmax-loss"), t("step-x"), xs);
  lineChart($("live-acc"), [
    { name: t("train"), values: h.map((r) => r.accuracy), colour: "#2b59c3" },
    { name: t("validation"), values: h.map((r) => r.val_accuracy), colour: "#b45309", dashed: true },
  ], t("accuracy"), t("step-x"), xs);
  drawRows($("live-rows"), $("live-scale"), data.weights, "live");
}
