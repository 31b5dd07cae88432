// The drawing pad: strokes with a mouse, a pen or a finger (pointer events), undo and clear.
// It keeps the strokes and redraws from them, so undo takes back exactly the last one.

const BRUSH = 22; // px on the 280-px pad: MNIST's strokes are about 2-3 of its 28 px

export class Pad {
  /** canvas: the pad; onChange(): called while a stroke is drawn and when the drawing changes. */
  constructor(canvas, onChange) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.strokes = [];
    this.current = null;
    this.onChange = onChange;
    canvas.addEventListener("pointerdown", (e) => this.start(e));
    canvas.addEventListener("pointermove", (e) => this.move(e));
    canvas.addEventListener("pointerup", (e) => this.end(e));
    canvas.addEventListener("pointercancel", (e) => this.end(e));
    this.redraw();
  }

  get empty() {
    return this.strokes.length === 0 && !this.current;
  }

  point(e) {
    const box = this.canvas.getBoundingClientRect();
    return [((e.clientX - box.left) / box.width) * this.canvas.width, ((e.clientY - box.top) / box.height) * this.canvas.height];
  }

  start(e) {
    e.preventDefault();
    try {
      this.canvas.setPointerCapture(e.pointerId); // the stroke goes on if the pointer leaves the pad
    } catch {
      // not a pointer the browser tracks (an event a script made): draw without the capture
    }
    this.current = [this.point(e)];
    this.redraw();
    this.onChange();
  }

  move(e) {
    if (!this.current) return;
    e.preventDefault();
    // Coalesced events: a fast pen or finger sends several points per frame.
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    for (const one of events.length ? events : [e]) this.current.push(this.point(one));
    this.redraw();
    this.onChange();
  }

  end(e) {
    if (!this.current) return;
    this.strokes.push(this.current);
    this.current = null;
    if (this.canvas.hasPointerCapture(e.pointerId)) this.canvas.releasePointerCapture(e.pointerId);
    this.redraw();
    this.onChange();
  }

  undo() {
    this.strokes.pop();
    this.redraw();
    this.onChange();
  }

  /** Drop the strokes without a word: the pad is under a chosen file, and starts afresh. */
  forget() {
    this.strokes = [];
    this.current = null;
    this.redraw();
  }

  clear() {
    this.strokes = [];
    this.current = null;
    this.redraw();
    this.onChange();
  }

  redraw() {
    const { ctx, canvas } = this;
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.strokeStyle = "#000";
    ctx.fillStyle = "#000";
    ctx.lineWidth = BRUSH;
    ctx.lineCap = ctx.lineJoin = "round";
    for (const stroke of this.current ? [...this.strokes, this.current] : this.strokes) {
      if (stroke.length === 1) {
        ctx.beginPath();
        ctx.arc(stroke[0][0], stroke[0][1], BRUSH / 2, 0, 2 * Math.PI);
        ctx.fill();
        continue;
      }
      ctx.beginPath();
      ctx.moveTo(...stroke[0]);
      for (const p of stroke.slice(1)) ctx.lineTo(...p);
      ctx.stroke();
    }
  }

  /** The drawing as a PNG file's bytes (a Blob). */
  png() {
    return new Promise((resolve) => this.canvas.toBlob(resolve, "image/png"));
  }
}
