// Pointing at a number lights its term in the formula and its place in the pictures, and the other
// way round: every element carrying the same data-link (class-3, term-exp, ...) is lit together,
// on hover and on keyboard focus alike.

export function linkHighlights(root = document) {
  const light = (event, on) => {
    const el = event.target.closest && event.target.closest("[data-link]");
    if (!el) return;
    for (const other of root.querySelectorAll(`[data-link="${el.dataset.link}"]`)) other.classList.toggle("lit", on);
  };
  root.addEventListener("mouseover", (e) => light(e, true));
  root.addEventListener("mouseout", (e) => light(e, false));
  root.addEventListener("focusin", (e) => light(e, true));
  root.addEventListener("focusout", (e) => light(e, false));
}
