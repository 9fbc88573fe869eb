// The live view: a webcam (or a video file played in real time) streamed to a live session over the
// WebSocket; each answered frame's masks drawn on the live view with the delay measured here.

import { ApiError, callJson, getKey, wsUrl } from './api.js';
import { labelsOf } from './rle.js';
import {
  $, Stage, boxFrom, clearMessage, css, el, paintLabels, showError, showInfo,
} from './ui.js';

// Errors with no index that answer a frame (it got no index), as opposed to a prompt or message.
const FRAME_REFUSALS = new Set(['too_large', 'unsupported_format', 'backlog_full']);

export class LiveView {
  constructor(root) {
    this.root = root;
    this.stage = new Stage($('#live-stage', root));
    this.video = $('#live-video', root);
    this.capture = document.createElement('canvas');
    this.objects = new Map();
    this.selected = null;
    this.running = false;
    this.wire();
    this.renderObjects();
  }

  wire() {
    const r = this.root;
    $('#live-camera', r).addEventListener('click', () => this.startCamera());
    $('#live-file', r).addEventListener('change', (ev) => {
      const f = ev.target.files[0];
      ev.target.value = '';
      if (f) this.startFile(f);
    });
    $('#live-stop', r).addEventListener('click', () => this.stop());
    $('#live-new-object', r).addEventListener('click', () => this.newObject());
    const ui = this.stage.ui;
    ui.addEventListener('pointerdown', (ev) => {
      if (!this.running || ev.button !== 0) return;
      ui.setPointerCapture(ev.pointerId);
      const p = this.stage.point(ev);
      this.drag = { a: p, b: p };
    });
    ui.addEventListener('pointermove', (ev) => { if (this.drag) { this.drag.b = this.stage.point(ev); this.drawUi(); } });
    ui.addEventListener('pointerup', (ev) => {
      const d = this.drag;
      this.drag = null;
      if (!d) return;
      const box = boxFrom(d.a, this.stage.point(ev), this.stage.w, this.stage.h);
      if (box) this.sendBox(box); else this.drawUi();
    });
  }

  // -- sources ------------------------------------------------------------------------------------------
  async startCamera() {
    if (this.running) return;
    clearMessage();
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 1280 }, height: { ideal: 720 } }, audio: false });
    } catch (e) {
      showError(new Error(`the camera cannot be opened (${e.name}: ${e.message})`), 'Camera');
      return;
    }
    this.stream = stream;
    this.video.srcObject = stream;
    await this.begin('camera');
  }

  async startFile(file) {
    if (this.running) return;
    clearMessage();
    this.fileUrl = URL.createObjectURL(file);
    this.video.srcObject = null;
    this.video.src = this.fileUrl;
    this.video.onended = () => this.stop();
    await this.begin(file.name);
  }

  async begin(label) {
    try {
      await this.video.play();
    } catch (e) {
      showError(new Error(`the video cannot be played (${e.message})`), 'Live');
      this.release();
      return;
    }
    const vw = this.video.videoWidth;
    const vh = this.video.videoHeight;
    const long = Math.max(64, Number($('#live-size', this.root).value) || 640);
    const k = Math.min(1, long / Math.max(vw, vh));
    const w = 2 * Math.round((vw * k) / 2);
    const h = 2 * Math.round((vh * k) / 2);
    this.stage.resize(w, h);
    this.capture.width = w;
    this.capture.height = h;
    this.reset();
    this.status('connecting', 'connecting…');
    const policy = $('#live-policy', this.root).value;
    let session;
    try {
      session = await callJson('v1/sessions', { method: 'POST', json: { policy } });
    } catch (e) {
      showError(e, 'Starting a live session');
      this.status('none', 'idle');
      this.release();
      return;
    }
    this.sessionId = session.id;
    this.root.dataset.session = session.id;
    const ws = new WebSocket(wsUrl(session.id));
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onopen = () => {
      const key = getKey();
      if (key) ws.send(JSON.stringify({ type: 'auth', key })); // a browser cannot set the header
      this.running = true;
      this.status('live', `live · ${label}`);
      $('#live-stop', this.root).disabled = false;
      $('#live-camera', this.root).disabled = true;
      const rate = Math.min(30, Math.max(1, Number($('#live-rate', this.root).value) || 8));
      this.sender = setInterval(() => this.sendFrame(), 1000 / rate);
      this.loop();
      this.stage.ui.focus();
    };
    ws.onmessage = (m) => this.onMessage(JSON.parse(m.data));
    ws.onclose = (ev) => {
      if (this.running && !this.ending && !this.serverError) { // the server's own words, when it sent some, stay
        showError(new Error(`the connection closed (code ${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`), 'Live');
      }
      this.finish();
    };
  }

  reset() {
    this.fifo = []; // frames sent, not acknowledged yet: {t, bmp}
    this.inflight = new Map(); // index -> {t, bmp}
    this.delays = [];
    this.answered = [];
    this.sentCount = 0;
    this.answeredCount = 0;
    this.droppedCount = 0;
    this.labels = null;
    this.ending = false;
    this.flash = null;
    this.serverError = false;
    $('#live-events', this.root).replaceChildren();
    $('#live-delay', this.root).hidden = true;
    this.stats({});
  }

  loop() {
    if (!this.running) return;
    const synced = $('#live-synced', this.root).checked;
    const ctx = this.stage.frame.getContext('2d');
    if (!synced || !this.syncedFrame) ctx.drawImage(this.video, 0, 0, this.stage.w, this.stage.h);
    requestAnimationFrame(() => this.loop());
  }

  async sendFrame() {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || this.encoding || this.ending) return;
    if (ws.bufferedAmount > 4 << 20) return; // the network is behind: do not queue more here
    this.encoding = true;
    try {
      const t = performance.now();
      const ctx = this.capture.getContext('2d');
      ctx.drawImage(this.video, 0, 0, this.capture.width, this.capture.height);
      const blob = await new Promise((resolve) => this.capture.toBlob(resolve, 'image/jpeg', 0.85));
      const bmp = $('#live-synced', this.root).checked ? await createImageBitmap(this.capture) : null;
      const buf = await blob.arrayBuffer();
      if (ws.readyState !== WebSocket.OPEN) { bmp?.close(); return; }
      this.fifo.push({ t, bmp });
      ws.send(buf);
      this.sentCount += 1;
    } finally {
      this.encoding = false;
    }
  }

  onMessage(m) {
    const now = performance.now();
    if (m.type === 'ack') {
      const sent = this.fifo.shift();
      if (sent) this.inflight.set(m.index, sent);
    } else if (m.type === 'frame') {
      const sent = this.inflight.get(m.index);
      this.forget(m.index);
      this.answeredCount += 1;
      this.answered.push(now);
      if (this.answered.length > 20) this.answered.shift();
      if (sent) {
        this.delays.push(now - sent.t);
        if (this.delays.length > 20) this.delays.shift();
      }
      for (const o of m.objects) if (!this.objects.has(o.id)) this.objects.set(o.id, { id: o.id, visible: true });
      this.lastObjects = m.objects;
      this.labels = labelsOf(m.objects, this.stage.w, this.stage.h);
      if ($('#live-synced', this.root).checked && sent?.bmp) {
        this.syncedFrame = true;
        this.stage.frame.getContext('2d').drawImage(sent.bmp, 0, 0, this.stage.w, this.stage.h);
      }
      sent?.bmp?.close();
      this.drawMasks();
      this.stage.root.dataset.answered = String(m.index);
      for (const e of m.events || []) this.addEvent(m.index, `object ${e.id} ${e.type.replace('_', ' ')}`, e.type);
      this.stats(m.timings || {});
      this.renderObjects();
    } else if (m.type === 'dropped') {
      this.forget(m.index);
      this.droppedCount += 1;
      this.stats({});
    } else if (m.type === 'error') {
      if (m.index !== null && m.index !== undefined) this.forget(m.index);
      else if (FRAME_REFUSALS.has(m.code)) this.fifo.shift()?.bmp?.close();
      this.serverError = true;
      showError(new ApiError(0, m.code, m.message), m.index !== null && m.index !== undefined ? `Frame ${m.index}` : 'Live');
    } else if (m.type === 'prompts') {
      this.addEvent(m.frames[0], 'prompt taken', 'corrected');
    } else if (m.type === 'end') {
      this.ending = true;
      showInfo(`Session ended (${m.ended_by || m.status}): ${m.frames_done} frames answered.`);
      this.ws?.close();
    }
  }

  forget(index) {
    const s = this.inflight.get(index);
    if (!s) return;
    this.inflight.delete(index);
    if (s.bmp && !$('#live-synced', this.root).checked) s.bmp.close();
  }

  drawMasks() {
    const ctx = this.stage.masks.getContext('2d');
    ctx.clearRect(0, 0, this.stage.w, this.stage.h);
    if (this.labels) paintLabels(ctx, this.labels, this.stage.w, this.stage.h, (id) => this.objects.get(id)?.visible !== false);
  }

  drawUi() {
    const ctx = this.stage.ui.getContext('2d');
    const s = this.stage.scale();
    ctx.clearRect(0, 0, this.stage.w, this.stage.h);
    const box = this.drag ? [this.drag.a, this.drag.b] : this.flash;
    if (!box) return;
    const [a, b] = box;
    ctx.strokeStyle = this.drag ? '#fff' : css(this.flashId || 1);
    ctx.lineWidth = 2 * s;
    ctx.setLineDash([5 * s, 4 * s]);
    ctx.strokeRect(Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.abs(b[0] - a[0]), Math.abs(b[1] - a[1]));
  }

  // -- objects --------------------------------------------------------------------------------------------
  newObject() {
    const id = (this.objects.size ? Math.max(...this.objects.keys()) : 0) + 1;
    this.objects.set(id, { id, visible: true });
    this.selected = id;
    this.renderObjects();
    return id;
  }

  sendBox(box) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    const id = this.selected ?? this.newObject();
    this.ws.send(JSON.stringify({ type: 'prompts', frames: { next: { [id]: { box } } } }));
    this.flash = [[box[0], box[1]], [box[2], box[3]]];
    this.flashId = id;
    this.drawUi();
    clearTimeout(this.flashTimer);
    this.flashTimer = setTimeout(() => { this.flash = null; this.drawUi(); }, 1500);
  }

  renderObjects() {
    const list = $('#live-objects', this.root);
    const ids = [...this.objects.keys()].sort((a, b) => a - b);
    if (!ids.length) {
      list.replaceChildren(el('li', { class: 'empty-list', text: 'none yet: draw a box on the live view' }));
      return;
    }
    list.replaceChildren(...ids.map((id) => {
      const o = this.objects.get(id);
      const swatch = el('span', { class: 'swatch', 'aria-hidden': 'true' });
      swatch.style.background = css(id);
      const now = this.lastObjects?.find((q) => q.id === id);
      const shown = el('input', { type: 'checkbox', 'aria-label': `Show object ${id}` });
      shown.checked = o.visible !== false;
      shown.addEventListener('change', () => { o.visible = shown.checked; this.drawMasks(); });
      return el('li', { class: id === this.selected ? 'selected' : '' }, swatch,
        el('button', { type: 'button', class: 'pick', 'aria-pressed': String(id === this.selected), text: `Object ${id}`,
          onclick: () => { this.selected = id; this.renderObjects(); } }),
        el('span', { class: 'meta', text: now ? (now.area ? `${now.area} px · ${(now.score ?? 0).toFixed(2)}` : 'not visible') : '' }),
        shown, el('span'));
    }));
  }

  // -- measures -----------------------------------------------------------------------------------------
  stats(timings) {
    const r = this.root;
    const ms = (v) => `${Math.round(v)} ms`;
    const d = this.delays || [];
    const last = d.length ? d[d.length - 1] : null;
    const median = d.length ? [...d].sort((a, b) => a - b)[Math.floor(d.length / 2)] : null;
    $('#m-delay', r).textContent = last !== null ? ms(last) : '–';
    $('#m-median', r).textContent = median !== null ? ms(median) : '–';
    if (timings.step_s !== undefined) $('#m-step', r).textContent = ms(timings.step_s * 1000);
    if (timings.queued_s !== undefined) $('#m-queued', r).textContent = ms(timings.queued_s * 1000);
    $('#m-count', r).textContent = `${this.sentCount || 0} / ${this.answeredCount || 0}`;
    $('#m-dropped', r).textContent = String(this.droppedCount || 0);
    const a = this.answered || [];
    $('#m-fps', r).textContent = a.length > 1 ? ((a.length - 1) / ((a[a.length - 1] - a[0]) / 1000)).toFixed(1) : '–';
    const badge = $('#live-delay', r);
    if (last !== null) {
      badge.hidden = false;
      badge.textContent = `delay ${Math.round(last)} ms · median ${Math.round(median)} ms`;
    }
  }

  addEvent(index, text, type) {
    const list = $('#live-events', this.root);
    list.prepend(el('li', { class: `t-${type}` }, `frame ${index}: ${text}`));
    while (list.children.length > 200) list.lastChild.remove();
  }

  status(kind, text) {
    const s = $('#live-status', this.root);
    s.dataset.status = kind;
    s.textContent = text;
  }

  // -- stopping -------------------------------------------------------------------------------------------
  stop() {
    if (!this.ws) { this.release(); return; }
    clearInterval(this.sender);
    this.sender = null;
    if (this.ws.readyState === WebSocket.OPEN && !this.ending) {
      this.ending = true;
      this.status('ending', 'ending…');
      this.ws.send(JSON.stringify({ type: 'end' })); // the server answers what it has, then says end
      const ws = this.ws;
      setTimeout(() => { if (ws.readyState !== WebSocket.CLOSED) ws.close(); }, 15000);
    } else {
      this.ws.close();
    }
    this.release();
  }

  finish() {
    clearInterval(this.sender);
    this.sender = null;
    this.running = false;
    this.ws = null;
    this.status('none', 'idle');
    $('#live-stop', this.root).disabled = true;
    $('#live-camera', this.root).disabled = false;
    this.release();
  }

  release() {
    for (const t of this.stream?.getTracks() || []) t.stop();
    this.stream = null;
    this.video.pause();
    this.video.srcObject = null;
    if (this.fileUrl) { URL.revokeObjectURL(this.fileUrl); this.fileUrl = null; this.video.removeAttribute('src'); }
  }

  key(ev) {
    const k = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
    if (k === 'c') { this.startCamera(); return true; }
    if (k === 'x') { this.stop(); return true; }
    if (k === 'a') { this.newObject(); return true; }
    if (/^[1-9]$/.test(k)) {
      const id = [...this.objects.keys()].sort((a, b) => a - b)[Number(k) - 1];
      if (id !== undefined) { this.selected = id; this.renderObjects(); }
      return true;
    }
    if (k === 'Escape' && this.drag) { this.drag = null; this.drawUi(); return true; }
    return false;
  }
}
