// Section 10: the run behind the checkpoint. Its curves as train saved them, and its confusion matrix
// on the test set (scored by the server in the background from its start: said until it is ready),
// each cell a button that opens its digits, each digit a button that follows it through the lesson.

import { api } from "./api.js";
import { useTestDigit } from "./app.js";
import { errorText, t } from "./i18n.js";
import { drawDigit, lineChart } from "./pictures.js";

const $ = (id) => document.getElementById(id);
const WAIT_MS = 500;

export async function loadRun() {
  const run = await api("/api/run");
  if (run.status === 200) {
    const h = run.data.history;
    const col = (key) => h.map((r) => r[key]);
    lineChart($("curves"), [
      { name: t("train"), values: col("train_loss"), colour: "#2b59c3" },
      { name: t("validation"), values: col("val_loss"), colour: "#b45309", dashed: true },
    ], t("softmax-loss"));
    lineChart($("curves-acc"), [
      { name: t("train"), values: col("train_acc"), colour: "#2b59c3" },
      { name: t("validation"), values: col("val_acc"), colour: "#b45309", dashed: true },
    ], t("accuracy"));
    const a = run.data.about;
    $("run-note").textContent = a.test_accuracy === null
      ? t("run-interrupted", { n: a.epochs, fe: a.front_end, planned: a.planned })
      : t("run-done", { n: a.epochs, fe: a.front_end, acc: a.test_accuracy });
  } else {
    $("run-note").textContent = errorText(run.data);
  }
  await loadConfusion();
}

async function loadConfusion() {
  const scores = await api("/api/confusion");
  if (scores.status !== 200) {
    $("confusion-caption").textContent = errorText(scores.data);
    return;
  }
  if (!scores.data.ready) {
    $("confusion-caption").textContent = t("scores-coming");
    setTimeout(loadConfusion, WAIT_MS);
    return;
  }
  const cm = scores.data.confusion;
  const table = $("confusion");
  table.replaceChildren();
  const caption = document.createElement("caption");
  caption.className = "sr-only";
  caption.textContent = t("confusion-sr");
  table.append(caption);
  const head = table.insertRow();
  head.append(Object.assign(document.createElement("th"), { textContent: t("true-pred") }));
  cm.forEach((_, k) => head.append(Object.assign(document.createElement("th"), { scope: "col", textContent: k })));
  const top = Math.log1p(Math.max(...cm.flat()));
  cm.forEach((row, tr) => {
    const line = table.insertRow();
    line.append(Object.assign(document.createElement("th"), { scope: "row", textContent: tr }));
    row.forEach((count, p) => {
      const td = line.insertCell();
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = count;
      button.dataset.testid = `cell-${tr}-${p}`;
      button.setAttribute("aria-label", t("cell-label", { n: count, t: tr, p }));
      const shade = Math.log1p(count) / top;
      // Dark text on every shade: the strongest shade stays light enough for 4.5:1 contrast.
      const [r, g, b] = tr === p ? [43, 89, 195] : [179, 38, 30];
      button.style.background = `rgba(${r}, ${g}, ${b}, ${0.06 + 0.42 * shade})`;
      button.onclick = () => showCell(tr, p, td);
      td.append(button);
    });
  });
  $("confusion-caption").textContent = t("confusion-cap", { acc: scores.data.shown.accuracy, loss: scores.data.shown.loss });
}

async function showCell(tr, p, td) {
  document.querySelectorAll(".confusion td.picked").forEach((c) => c.classList.remove("picked"));
  td.classList.add("picked");
  const { status: code, data } = await api(`/api/cell?true=${tr}&predicted=${p}&limit=60`);
  const holder = $("cell");
  holder.replaceChildren();
  if (code !== 200) {
    holder.textContent = errorText(data);
    return;
  }
  const title = document.createElement("p");
  title.textContent = t("cell-title", { n: data.count, t: tr, p, shown: data.digits.length });
  const thumbs = document.createElement("div");
  thumbs.className = "thumbs";
  for (const d of data.digits) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "thumb";
    button.dataset.testid = `test-digit-${d.index}`;
    button.setAttribute("aria-label", t("test-digit-label", { index: d.index, t: tr, p }));
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 28;
    canvas.className = "pixelated";
    drawDigit(canvas, d.digit);
    button.append(canvas);
    button.onclick = () => useTestDigit(d.index, d.digit, tr);
    thumbs.append(button);
  }
  holder.append(title, thumbs);
  if (data.digits.length) thumbs.firstChild.focus();
}
