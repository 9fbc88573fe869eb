// What the job and live views share: messages, object colours, the stage (frame, masks, drawing layers)
// and mask overlays.

import { labelsOf } from './rle.js';

/** Bright, distinct colours that read over video; object id N takes COLORS[(N - 1) % length]. */
export const COLORS = [
  [230, 25, 75], [60, 180, 75], [255, 225, 25], [67, 99, 216], [245, 130, 49], [145, 30, 180],
  [66, 212, 244], [240, 50, 230], [191, 239, 69], [250, 190, 212], [70, 153, 144], [220, 190, 255],
  [154, 99, 36], [255, 250, 200], [128, 0, 0], [170, 255, 195], [128, 128, 0], [255, 216, 177],
];

export function colorOf(id) {
  return COLORS[(id - 1) % COLORS.length];
}

export function css(id, alpha = 1) {
  const [r, g, b] = colorOf(id);
  return alpha === 1 ? `rgb(${r}, ${g}, ${b})` : `rgba(${r}, ${g}, ${b}, ${alpha})`;
}

export function $(sel, root = document) {
  return root.querySelector(sel);
}

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

/** An error, in the API's words when it comes from the API (ApiError.message is its error.message). */
export function showError(err, where = null) {
  const box = $('#alert');
  const message = err && err.message ? err.message : String(err);
  box.replaceChildren(el('strong', { text: where ? `${where}: ` : 'Error: ' }), message,
    err && err.code ? el('code', { class: 'code', text: ` (${err.code}${err.status ? `, HTTP ${err.status}` : ''})` }) : '',
    el('button', { class: 'close', type: 'button', 'aria-label': 'Dismiss the message', text: '×',
      onclick: () => { box.hidden = true; } }));
  box.className = 'alert error';
  box.hidden = false;
  if (err && !(err.code)) console.error(err); // eslint-disable-line no-console
}

export function showInfo(text) {
  const box = $('#alert');
  box.replaceChildren(text, el('button', { class: 'close', type: 'button', 'aria-label': 'Dismiss the message',
    text: '×', onclick: () => { box.hidden = true; } }));
  box.className = 'alert info';
  box.hidden = false;
}

export function clearMessage() {
  $('#alert').hidden = true;
}

export function saveBlob(blob, name) {
  const a = el('a', { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60000);
}

/**
 * Paint masks into `ctx` (a W x H canvas): each visible object's pixels in its colour, half see-through
 * inside and solid on its outline, so the frame stays visible and the edges read.
 */
export function paintLabels(ctx, labels, w, h, visible = () => true, alpha = 110) {
  const img = ctx.createImageData(w, h);
  const d = img.data;
  const show = new Uint8Array(256);
  for (let id = 1; id < 256; id += 1) show[id] = visible(id) ? 1 : 0;
  for (let y = 0; y < h; y += 1) {
    for (let x = 0; x < w; x += 1) {
      const i = y * w + x;
      const id = labels[i];
      if (!id || !show[id]) continue;
      const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 || labels[i - 1] !== id ||
        labels[i + 1] !== id || labels[i - w] !== id || labels[i + w] !== id;
      const [r, g, b] = colorOf(id);
      d[4 * i] = r;
      d[4 * i + 1] = g;
      d[4 * i + 2] = b;
      d[4 * i + 3] = edge ? 255 : alpha;
    }
  }
  ctx.putImageData(img, 0, 0);
}

/** The masks of a frame from the API ({objects: [{id, rle, ...}]}) painted into `ctx`. */
export function paintFrame(ctx, frame, w, h, visible) {
  ctx.clearRect(0, 0, w, h);
  if (!frame || !frame.objects) return null;
  const labels = labelsOf(frame.objects, w, h);
  paintLabels(ctx, labels, w, h, visible);
  return labels;
}

/**
 * Three stacked canvases of the frame's own size: the frame, its masks, and what the user draws (boxes,
 * points, paint). CSS scales them together; pointer positions map back to frame pixels.
 */
export class Stage {
  constructor(root) {
    this.root = root;
    this.frame = $('canvas.frame', root);
    this.masks = $('canvas.masks', root);
    this.ui = $('canvas.ui', root);
    this.w = 0;
    this.h = 0;
  }

  resize(w, h) {
    if (w === this.w && h === this.h) return;
    this.w = w;
    this.h = h;
    for (const c of [this.frame, this.masks, this.ui]) { c.width = w; c.height = h; }
    this.root.style.setProperty('--aspect', `${w} / ${h}`);
    this.root.classList.toggle('empty', !w);
  }

  /** Where the frame is drawn inside the canvas box (object-fit: contain letterboxes it). */
  fitted() {
    const r = this.ui.getBoundingClientRect();
    const k = Math.min(r.width / (this.w || 1), r.height / (this.h || 1)) || 1;
    const width = this.w * k;
    const height = this.h * k;
    return { left: r.left + (r.width - width) / 2, top: r.top + (r.height - height) / 2, width, height, k };
  }

  /** A pointer event's position in frame pixels (clamped to the frame). */
  point(ev) {
    const f = this.fitted();
    const x = (ev.clientX - f.left) / f.k;
    const y = (ev.clientY - f.top) / f.k;
    return [Math.max(0, Math.min(this.w, x)), Math.max(0, Math.min(this.h, y))];
  }

  /** Frame pixels per CSS pixel (line widths and handles stay the same size on screen). */
  scale() {
    return 1 / this.fitted().k;
  }

  /** A frame position in page (client) coordinates: for tests and for placing labels. */
  client(x, y) {
    const f = this.fitted();
    return [f.left + x * f.k, f.top + y * f.k];
  }
}

/** Box from two corners, in whole pixels, x1/y1 exclusive (docs/PROMPTS.md); null when too small to mean one. */
export function boxFrom(a, b, w, h) {
  const x0 = Math.max(0, Math.floor(Math.min(a[0], b[0])));
  const y0 = Math.max(0, Math.floor(Math.min(a[1], b[1])));
  const x1 = Math.min(w, Math.ceil(Math.max(a[0], b[0])));
  const y1 = Math.min(h, Math.ceil(Math.max(a[1], b[1])));
  return x1 - x0 >= 4 && y1 - y0 >= 4 ? [x0, y0, x1, y1] : null;
}

/** Is the key press meant for a text field rather than a shortcut? */
export function typing(ev) {
  const t = ev.target;
  if (!t || !t.tagName) return false;
  if (t.isContentEditable || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT') return true;
  return t.tagName === 'INPUT' && !['checkbox', 'radio', 'button', 'range', 'file'].includes(t.type);
}
