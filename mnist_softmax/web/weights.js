// W itself: its shape and its rows as pictures on one shared scale (section 4), the change ΔW a
// page's learning made, and the rows as live training moves them (section 9). The numbers are the
// server's (page.weight_numbers); pointing at a row (or focusing it) shows z_k = W_k·x + b_k as the
// sum of W_k ⊙ x for the digit being read, with x beside it.

import { colourBar, drawDiverging, readouts } from "./pictures.js";
import { t } from "./i18n.js";

const SIZE = 112;

/** Draw W's ten rows into `holder`, one card each (data-testid `${prefix}-row-k`), on the one scale
 *  whose colour bar goes into `scale`. onPoint(k) is called when a row is pointed at or focused. */
export function drawRows(holder, scale, weights, prefix, onPoint = null, limit = null) {
  const [H, W] = weights.cells;
  const top = limit ?? weights.limit;
  const cards = weights.rows.map((values, k) => {
    const card = document.createElement("button");
    card.type = "button";
    card.className = "class row-card";
    card.dataset.testid = `${prefix}-row-${k}`;
    card.dataset.link = `class-${k}`;
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = SIZE;
    canvas.className = "pixelated";
    canvas.setAttribute("aria-hidden", "true");
    drawDiverging(canvas, values, H, W, top, weights.rare);
    const label = document.createElement("span");
    label.textContent = t("row-k", { k });
    card.append(label, canvas);
    if (onPoint) {
      card.onmouseenter = card.onfocus = card.onclick = () => onPoint(k);
    }
    card.setAttribute("aria-label", t("row-label", { k }));
    return card;
  });
  holder.replaceChildren(...cards);
  const grey = weights.rare && weights.rare.some(Boolean) ? t("grey-rare") : null;
  colourBar(scale, weights.shown.limit, t(prefix === "delta" ? "delta-scale" : "weights-scale"), grey);
}

/** Section 4 for the model (or the page's session): the shape, the rows, ΔW when there is one. */
export function drawWeights(weights, model, onPoint) {
  const [T, N] = weights.shape;
  const [C, H, W] = model.map_shape;
  document.getElementById("weights-shape").innerHTML = t("weights-shape", { T, N, C, H, W });
  document.getElementById("weights-how").innerHTML = t(C === 1 ? "weights-how-pixels" : "weights-how-maps", { C, H, W });
  drawRows(document.getElementById("weights-rows"), document.getElementById("weights-scale"), weights, "weights", onPoint);
  const delta = document.getElementById("weights-delta");
  delta.hidden = !weights.delta;
  if (weights.delta) {
    const d = { ...weights, rows: weights.delta.rows, shown: weights.delta.shown, limit: weights.delta.limit, rare: null };
    drawRows(document.getElementById("delta-rows"), document.getElementById("delta-scale"), d, "delta");
    document.querySelectorAll("#delta-rows .row-card").forEach((card, k) => {
      card.append(Object.assign(document.createElement("span"), { className: "note", textContent: t("moved", { v: weights.delta.moved[k] }) }));
    });
  }
}

/** The decomposition of one class's score for the digit being read: its contribution picture
 *  (W_k ⊙ x by cell), x, and z_k = Σ(W_k ⊙ x) + b_k with the server's strings. */
export function drawDetail(holder, k, record, model) {
  holder.replaceChildren();
  if (!record) {
    holder.textContent = t("detail-nothing", { k });
    return;
  }
  const page = record.page;
  const [H, W] = page.cells;
  const [C] = model.map_shape;
  const figure = (title, values, limit, describe) => {
    const fig = document.createElement("figure");
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = SIZE;
    canvas.className = "pixelated";
    drawDiverging(canvas, values, H, W, limit);
    const readout = document.createElement("span");
    readout.className = "readout";
    readouts(canvas, H, W, readout, describe, title);
    const caption = document.createElement("figcaption");
    caption.append(title, document.createElement("br"), readout);
    fig.append(canvas, caption);
    return fig;
  };
  const xValues = page.x_cells;
  const contrib = page.contributions[k];
  const row = document.createElement("div");
  row.className = "row";
  row.append(
    figure(t(C === 1 ? "detail-x-pixels" : "detail-x", { C }), xValues, page.x_cells_limit, (r, c) => `x = ${xValues[r * W + c]}`),
    figure(t("detail-contrib", { k: sub(k) }), contrib, page.contributions_limit, (r, c) => `W${sub(k)}⊙x = ${contrib[r * W + c]}`),
  );
  const sum = document.createElement("p");
  sum.className = "formula";
  sum.innerHTML = t("detail-sum", { k, wx: page.shown.wx[k], b: page.shown.bias[k], z: page.shown.logits[k] });
  holder.append(row, sum);
}

export function sub(k) {
  return String(k).replace(/\d/g, (d) => "₀₁₂₃₄₅₆₇₈₉"[d]);
}
