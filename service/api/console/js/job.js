// The job view: open a video or a zip of frames, prompt objects (box, points, paint, mask PNG), submit,
// watch the masks arrive (server-sent events), correct frames not processed yet, download.

import { ApiError, call, callJson, eventsUrl } from './api.js';
import { ScoreChart } from './chart.js';
import { openFrames } from './frames.js';
import { readMaskPng } from './png.js';
import { encodeMask } from './rle.js';
import {
  $, Stage, boxFrom, clearMessage, css, el, paintFrame, saveBlob, showError, showInfo,
} from './ui.js';

const ENDED = new Set(['succeeded', 'failed', 'cancelled']);
// The overlay video needs WebCodecs (frame by frame) or at least MediaRecorder (the real-time fallback).
const CAN_MAKE_VIDEO = typeof VideoEncoder !== 'undefined' || typeof MediaRecorder !== 'undefined';
const VIDEO_BITRATE = 6e6;
const TOOLS = { b: 'box', p: 'pos', n: 'neg', d: 'paint', e: 'erase' };

function uuid() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

export class JobView {
  constructor(root) {
    this.root = root;
    this.stage = new Stage($('#job-stage', root));
    this.chart = new ScoreChart($('#job-chart', root), (i) => this.pick(i));
    this.tool = 'box';
    this.reset();
    this.wire();
  }

  reset() {
    this.es?.close();
    clearInterval(this.poller);
    this.source?.close();
    this.source = null;
    this.file = null;
    this.objects = new Map(); // id -> {id, visible}
    this.selected = null;
    this.prompts = new Map(); // frame -> Map(id -> {box, points, paint, remove, sent})
    this.job = null;
    this.frames = [];
    this.done = 0; // frames received, in order
    this.arrivals = [];
    this.current = 0;
    this.want = 0;
    this.shown = -1;
    this.drag = null;
    this.eventCount = 0;
    $('#job-events', this.root).replaceChildren();
  }

  // -- wiring -------------------------------------------------------------------------------------------
  wire() {
    const r = this.root;
    $('#job-file', r).addEventListener('change', (ev) => {
      const f = ev.target.files[0];
      ev.target.value = '';
      if (f) this.open(f);
    });
    $('#job-mask-file', r).addEventListener('change', (ev) => {
      const f = ev.target.files[0];
      ev.target.value = '';
      if (f) this.loadMask(f);
    });
    $('#job-new-object', r).addEventListener('click', () => this.newObject());
    for (const b of r.querySelectorAll('.tools [data-tool]')) b.addEventListener('click', () => this.setTool(b.dataset.tool));
    $('#job-run', r).addEventListener('click', () => this.submit());
    $('#job-send', r).addEventListener('click', () => this.sendCorrections());
    $('#job-cancel', r).addEventListener('click', () => this.cancel());
    $('#job-clear', r).addEventListener('click', () => this.clearPrompt());
    $('#job-box-form', r).addEventListener('submit', (ev) => { ev.preventDefault(); this.typedBox(); });
    $('#dl-zip', r).addEventListener('click', () => this.downloadZip());
    $('#dl-json', r).addEventListener('click', () => this.downloadJson());
    $('#dl-video', r).addEventListener('click', () => this.downloadVideo());
    $('#p-first', r).addEventListener('click', () => this.pick(0));
    $('#p-prev', r).addEventListener('click', () => this.pick(this.current - 1));
    $('#p-next', r).addEventListener('click', () => this.pick(this.current + 1));
    $('#p-last', r).addEventListener('click', () => this.pick(Math.max(0, this.done - 1)));
    $('#p-play', r).addEventListener('click', () => this.togglePlay());
    $('#p-slider', r).addEventListener('input', (ev) => this.pick(Number(ev.target.value)));
    $('#p-follow', r).addEventListener('change', (ev) => {
      if (ev.target.checked && this.done) this.show(this.done - 1);
    });
    const ui = this.stage.ui;
    ui.addEventListener('pointerdown', (ev) => this.down(ev));
    ui.addEventListener('pointermove', (ev) => this.move(ev));
    ui.addEventListener('pointerup', (ev) => this.up(ev));
    ui.addEventListener('pointercancel', () => { this.drag = null; this.drawUi(); });
    new ResizeObserver(() => this.drawUi()).observe(ui);
    this.renderObjects();
    this.update();
  }

  // -- the video ----------------------------------------------------------------------------------------
  async open(file) {
    clearMessage();
    this.reset();
    this.status('opening', 'opening…');
    $('#job-source', this.root).textContent = file.name;
    try {
      this.source = await openFrames(file);
    } catch (e) {
      this.status('none', 'not submitted');
      $('#job-source', this.root).textContent = 'no video';
      this.stage.resize(0, 0);
      showError(e, 'Opening the video');
      return;
    }
    this.file = file;
    this.stage.resize(this.source.width, this.source.height);
    const kind = this.source.kind === 'zip' ? `${this.source.count} frames` : `about ${this.source.count} frames at ${this.source.fps.toFixed(2)} fps`;
    $('#job-source', this.root).textContent = `${file.name} · ${this.source.width}×${this.source.height} · ${kind}`;
    this.status('none', 'not submitted');
    this.newObject();
    this.show(0);
    this.update();
    this.stage.ui.focus();
  }

  get count() {
    return Math.max(this.source ? this.source.count : 0, this.job ? this.job.frames_total : 0, this.done);
  }

  pick(i) {
    if (!this.source) return;
    $('#p-follow', this.root).checked = false; // the user is looking at a frame: stop jumping to new ones
    this.show(i);
  }

  show(i) {
    if (!this.source) return;
    this.want = Math.max(0, Math.min(this.count - 1, i));
    this.current = this.want;
    this.updatePlayer();
    this.drawUi();
    if (!this.pumping) this.pump();
  }

  /** Decode and draw the wanted frame; coalesces requests (a seek can take longer than frames arrive). */
  async pump() {
    this.pumping = true;
    try {
      while (this.source && this.want !== this.shown) {
        const i = this.want;
        const src = this.source;
        let bmp;
        try {
          bmp = await src.bitmap(i);
        } catch (e) {
          showError(e, `Frame ${i}`);
          this.shown = i;
          break;
        }
        if (src !== this.source) break;
        const ctx = this.stage.frame.getContext('2d');
        ctx.drawImage(bmp, 0, 0, this.stage.w, this.stage.h);
        this.shown = i;
        this.drawMasks();
        this.stage.root.dataset.frame = String(i);
      }
    } finally {
      this.pumping = false;
    }
  }

  drawMasks() {
    const ctx = this.stage.masks.getContext('2d');
    const f = this.frames[this.shown];
    paintFrame(ctx, f, this.stage.w, this.stage.h, (id) => this.objects.get(id)?.visible !== false);
    this.stage.root.dataset.masked = f ? String(this.shown) : '';
  }

  // -- objects and prompts -----------------------------------------------------------------------------
  ids() {
    return [...this.objects.keys()].sort((a, b) => a - b);
  }

  ensureObject(id) {
    if (!this.objects.has(id)) this.objects.set(id, { id, visible: true });
  }

  newObject() {
    const taken = [...this.objects.keys(), ...(this.job ? this.job.objects : [])];
    const id = (taken.length ? Math.max(...taken) : 0) + 1;
    if (id > 254) { showError(new Error('at most 254 objects')); return null; }
    this.ensureObject(id);
    this.select(id);
    return id;
  }

  select(id) {
    if (!this.objects.has(id)) return;
    this.selected = id;
    this.renderObjects();
    this.drawUi();
  }

  setTool(tool) {
    this.tool = tool;
    for (const b of this.root.querySelectorAll('.tools [data-tool]')) b.setAttribute('aria-checked', String(b.dataset.tool === tool));
    this.drawUi();
  }

  promptsAt(frame) {
    if (!this.prompts.has(frame)) this.prompts.set(frame, new Map());
    return this.prompts.get(frame);
  }

  /** The prompt being edited for (frame, id); a sent one is never edited (a new one replaces it). */
  editPrompt(frame, id) {
    const at = this.promptsAt(frame);
    let p = at.get(id);
    if (!p || p.sent) {
      p = { box: null, points: [], paint: null, remove: false, sent: false };
      at.set(id, p);
    }
    return p;
  }

  /** Can prompts go on this frame? Before submitting: any frame. After: frames the job has not reached. */
  editable(frame, say = true) {
    if (!this.source) return false;
    if (!this.job) return true;
    let why = null;
    if (ENDED.has(this.job.status)) why = `The job has ${this.job.status}: it takes no more prompts.`;
    else if (frame <= this.done) {
      why = `Frame ${frame} is already processed (or being processed): corrections go on frames after ${this.done}.`;
    }
    if (why && say) showInfo(why);
    return !why;
  }

  pending() {
    const out = [];
    for (const [frame, at] of this.prompts) for (const [id, p] of at) if (!p.sent) out.push([frame, id, p]);
    return out;
  }

  clearPrompt() {
    if (!this.source || this.selected === null) return;
    const at = this.prompts.get(this.current);
    const p = at?.get(this.selected);
    if (p && !p.sent) at.delete(this.selected);
    this.afterEdit();
  }

  typedBox() {
    const text = $('#job-box-text', this.root).value.trim();
    const v = text.split(/[\s,]+/).map(Number);
    if (v.length !== 4 || v.some((x) => !Number.isFinite(x))) {
      showError(new Error('a box is four numbers: x0 y0 x1 y1 (frame pixels, x1 and y1 exclusive)'));
      return;
    }
    const box = boxFrom([v[0], v[1]], [v[2], v[3]], this.stage.w, this.stage.h);
    if (!box) { showError(new Error('that box is outside the frame or smaller than 4 pixels')); return; }
    this.putBox(box, false);
  }

  putBox(box, replace) {
    if (!this.editable(this.current)) return;
    if (this.selected === null) this.newObject();
    const mine = this.prompts.get(this.current)?.get(this.selected);
    // Drawing a second box on a frame where the selected object has one means another object, unless Shift.
    if (mine && mine.box && !replace && !this.job) this.newObject();
    const p = this.editPrompt(this.current, this.selected);
    p.box = box;
    p.paint = null;
    p.remove = false;
    this.afterEdit();
  }

  afterEdit() {
    clearMessage();
    this.drawUi();
    this.renderObjects();
    this.update();
  }

  // -- drawing on the frame ------------------------------------------------------------------------------
  down(ev) {
    if (!this.source || ev.button !== 0) return;
    this.stage.ui.focus();
    if (!this.editable(this.current)) return;
    const pt = this.stage.point(ev);
    this.stage.ui.setPointerCapture(ev.pointerId);
    if (this.tool === 'box') {
      this.drag = { kind: 'box', a: pt, b: pt, shift: ev.shiftKey };
    } else if (this.tool === 'paint' || this.tool === 'erase') {
      if (this.selected === null) this.newObject();
      const p = this.editPrompt(this.current, this.selected);
      if (!p.paint) {
        p.paint = new OffscreenCanvas(this.stage.w, this.stage.h);
        p.box = null;
        p.points = [];
      }
      p.remove = false;
      this.drag = { kind: 'paint', last: pt, prompt: p };
      this.dab(p, pt, pt);
    } else {
      this.drag = { kind: 'point', a: pt };
    }
    this.drawUi();
  }

  move(ev) {
    if (!this.drag) return;
    const pt = this.stage.point(ev);
    if (this.drag.kind === 'box') this.drag.b = pt;
    else if (this.drag.kind === 'paint') {
      this.dab(this.drag.prompt, this.drag.last, pt);
      this.drag.last = pt;
    }
    this.drawUi();
  }

  up(ev) {
    const d = this.drag;
    this.drag = null;
    if (!d) return;
    const pt = this.stage.point(ev);
    if (d.kind === 'box') {
      const box = boxFrom(d.a, pt, this.stage.w, this.stage.h);
      if (box) this.putBox(box, d.shift || ev.shiftKey); else this.drawUi();
    } else if (d.kind === 'point') {
      if (this.selected === null) this.newObject();
      const p = this.editPrompt(this.current, this.selected);
      if (p.paint) {
        showInfo('This object is painted on this frame: points go with a box or alone, not with paint. Clear it first (Delete).');
        return;
      }
      p.points.push([Math.floor(pt[0]), Math.floor(pt[1]), this.tool === 'pos' ? 1 : 0]);
      p.remove = false;
      this.afterEdit();
    } else {
      this.afterEdit();
    }
  }

  dab(p, a, b) {
    const ctx = p.paint.getContext('2d');
    const r = Number($('#job-brush', this.root).value);
    ctx.globalCompositeOperation = this.tool === 'erase' ? 'destination-out' : 'source-over';
    ctx.strokeStyle = '#fff';
    ctx.fillStyle = '#fff';
    ctx.lineWidth = 2 * r;
    ctx.lineCap = 'round';
    ctx.beginPath();
    ctx.moveTo(a[0], a[1]);
    ctx.lineTo(b[0] + 0.01, b[1]);
    ctx.stroke();
  }

  drawUi() {
    const { w, h } = this.stage;
    const ctx = this.stage.ui.getContext('2d');
    ctx.clearRect(0, 0, w, h);
    if (!this.source) return;
    const s = this.stage.scale();
    const at = this.prompts.get(this.current);
    if (at) {
      for (const [id, p] of at) {
        if (this.objects.get(id)?.visible === false) continue;
        ctx.save();
        ctx.strokeStyle = css(id);
        ctx.lineWidth = (id === this.selected ? 3 : 2) * s;
        if (p.sent) ctx.setLineDash([6 * s, 4 * s]);
        if (p.paint) {
          ctx.globalAlpha = 0.55;
          const tint = new OffscreenCanvas(w, h);
          const t = tint.getContext('2d');
          t.drawImage(p.paint, 0, 0);
          t.globalCompositeOperation = 'source-in';
          t.fillStyle = css(id);
          t.fillRect(0, 0, w, h);
          ctx.drawImage(tint, 0, 0);
          ctx.globalAlpha = 1;
        }
        if (p.box) {
          const [x0, y0, x1, y1] = p.box;
          ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
          label(ctx, `${id}`, x0, y0, css(id), s);
        }
        for (const [x, y, l] of p.points) {
          ctx.setLineDash([]);
          ctx.beginPath();
          ctx.arc(x, y, 6 * s, 0, 2 * Math.PI);
          ctx.fillStyle = l ? '#5fd38d' : '#ff6b6b';
          ctx.fill();
          ctx.lineWidth = 2 * s;
          ctx.stroke();
          ctx.fillStyle = '#000';
          ctx.fillRect(x - 3.5 * s, y - 0.75 * s, 7 * s, 1.5 * s);
          if (l) ctx.fillRect(x - 0.75 * s, y - 3.5 * s, 1.5 * s, 7 * s);
        }
        if (p.remove) label(ctx, `${id} removed here`, 4 * s, 4 * s + 18 * s * id, css(id), s);
        ctx.restore();
      }
    }
    if (this.drag && this.drag.kind === 'box') {
      const [a, b] = [this.drag.a, this.drag.b];
      ctx.save();
      ctx.strokeStyle = '#fff';
      ctx.lineWidth = 2 * s;
      ctx.setLineDash([5 * s, 4 * s]);
      ctx.strokeRect(Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.abs(b[0] - a[0]), Math.abs(b[1] - a[1]));
      ctx.restore();
    }
    this.hint();
  }

  hint() {
    const box = $('#job-hint', this.root);
    let text = '';
    if (this.job && !ENDED.has(this.job.status) && this.current <= this.done && this.source) {
      text = `frame ${this.current} is processed: to correct, go to a frame after ${this.done}`;
    } else if (this.job && !ENDED.has(this.job.status) && this.source) {
      text = `frame ${this.current} is not processed yet: a box here corrects object ${this.selected ?? ''} or starts a new one`;
    }
    box.textContent = text;
    box.hidden = !text;
  }

  // -- a mask PNG ---------------------------------------------------------------------------------------
  async loadMask(file) {
    if (!this.source) { showError(new Error('open a video first')); return; }
    if (!this.editable(this.current)) return;
    let got;
    try {
      got = await readMaskPng(file, (k) => (k === 0 && this.selected !== null ? this.selected : this.newObject()));
    } catch (e) {
      showError(e, 'Mask PNG');
      return;
    }
    if (got.width !== this.stage.w || got.height !== this.stage.h) {
      showError(new Error(`${file.name} is ${got.width}x${got.height}, the frame is ${this.stage.w}x${this.stage.h}`), 'Mask PNG');
      return;
    }
    for (const [id, mask] of got.objects) {
      this.ensureObject(id);
      const p = this.editPrompt(this.current, id);
      p.box = null;
      p.points = [];
      p.remove = false;
      p.paint = maskCanvas(mask, this.stage.w, this.stage.h);
    }
    this.select([...got.objects.keys()][0]);
    showInfo(`${file.name}: ${got.objects.size} object(s) on frame ${this.current}`);
    this.afterEdit();
  }

  // -- submitting ---------------------------------------------------------------------------------------
  /** Pending prompts as the API's JSON: {"frames": {"12": {"3": {...}}}}; throws for an incomplete one. */
  promptsJson(list) {
    const frames = {};
    for (const [frame, id, p] of list) {
      let json;
      if (p.remove) json = { remove: true };
      else if (p.paint) {
        const mask = canvasMask(p.paint);
        if (!mask.some((v) => v)) continue; // all erased: no prompt
        json = encodeMask(mask, this.stage.w, this.stage.h);
      } else {
        json = {};
        if (p.box) json.box = p.box;
        if (p.points.length) json.points = p.points;
        if (!p.box && !p.points.length) continue;
      }
      frames[frame] = frames[frame] || {};
      frames[frame][id] = json;
    }
    return { frames };
  }

  async submit() {
    if (!this.source) { showError(new Error('open a video file or a zip of frames first (O)')); return; }
    if (this.job) { showInfo('This job is submitted; open the video again for a new job.'); return; }
    const doc = this.promptsJson(this.pending());
    const given = new Set(Object.values(doc.frames).flatMap((o) => Object.keys(o).map(Number)));
    if (!given.size) { showError(new Error('no object yet: draw a box on each object (B), then run')); return; }
    const bare = this.ids().filter((id) => !given.has(id));
    for (const id of bare) this.objects.delete(id); // "+ New object" pressed but never drawn
    const form = new FormData();
    form.append('video', this.file, this.file.name);
    form.append('masks', new Blob([JSON.stringify(doc)], { type: 'application/json' }), 'prompts.json');
    const opts = {};
    const model = $('#opt-model', this.root).value.trim();
    const flow = $('#opt-flow', this.root).value;
    const long = $('#opt-long', this.root).value;
    if (model) opts.model = model;
    if (flow) opts.flow = flow;
    if (long) opts.long_side = Number(long);
    if (Object.keys(opts).length) form.append('options', JSON.stringify(opts));
    const run = $('#job-run', this.root);
    run.disabled = true;
    this.status('uploading', 'uploading…');
    try {
      this.job = await callJson('v1/jobs', { method: 'POST', body: form, headers: { 'Idempotency-Key': uuid() } });
    } catch (e) {
      run.disabled = false;
      this.status('none', 'not submitted');
      showError(e, 'Submitting the job');
      return;
    }
    for (const [, , p] of this.pending()) p.sent = true;
    clearMessage();
    this.root.dataset.job = this.job.id;
    this.status(this.job.status, this.job.status);
    this.listen(0);
    this.poller = setInterval(() => this.refresh(), 1500);
    this.renderObjects();
    this.update();
  }

  listen(start) {
    this.es?.close();
    const es = new EventSource(eventsUrl(this.job.id, start));
    this.es = es;
    es.addEventListener('frame', (ev) => this.onFrame(JSON.parse(ev.data)));
    es.addEventListener('end', (ev) => { es.close(); this.onEnd(JSON.parse(ev.data)); });
    es.addEventListener('error', (ev) => {
      if (ev.data) { // the server's own `event: error`: the stream cannot go on
        es.close();
        const { code, message } = JSON.parse(ev.data).error;
        showError(new ApiError(0, code, message), 'Receiving frames');
      } else if (es.readyState === EventSource.CLOSED) {
        // Refused (401, 404): the job's own answer says why. Otherwise try again from where we are.
        this.refresh(true).then(() => {
          this.retries = (this.retries || 0) + 1;
          if (this.es === es && this.job && !ENDED.has(this.job.status) && this.retries <= 5) {
            setTimeout(() => { if (this.es === es) this.listen(this.done); }, 2000);
          }
        });
      }
    });
  }

  onFrame(f) {
    // A frame published means a worker runs the job; the next poll would say so up to 1.5 s later.
    if (this.job && this.job.status === 'queued') {
      this.job.status = 'running';
      this.status('running', 'running');
    }
    this.frames[f.index] = f;
    while (this.frames[this.done]) this.done += 1;
    const now = performance.now();
    this.arrivals.push(now);
    if (this.arrivals.length > 12) this.arrivals.shift();
    for (const o of f.objects) this.ensureObject(o.id);
    for (const e of f.events || []) this.addEvent(f.index, e);
    if (this.shown === f.index) this.drawMasks();
    if (!this.frameQueued) {
      this.frameQueued = true;
      requestAnimationFrame(() => {
        this.frameQueued = false;
        if ($('#p-follow', this.root).checked) this.show(this.done - 1);
        this.renderObjects();
        this.update();
      });
    }
  }

  async onEnd(data) {
    await this.refresh();
    if (data.status === 'succeeded') {
      showInfo(`Job ${data.status}: ${data.frames_done} frames. Download the masks below.`);
    } else if (data.error) {
      showError(new ApiError(0, data.error.code, data.error.message), `Job ${data.status}`);
    }
    this.update();
  }

  async refresh(explain = false) {
    if (!this.job) return;
    try {
      this.job = await callJson(`v1/jobs/${this.job.id}`);
    } catch (e) {
      if (explain || !(e instanceof ApiError) || e.status !== 0) showError(e, 'The job');
      return;
    }
    if (this.job.frames_total && this.source) this.source.setCount(this.job.frames_total);
    for (const id of this.job.objects) this.ensureObject(id);
    this.status(this.job.status, this.job.status);
    if (ENDED.has(this.job.status)) clearInterval(this.poller);
    this.update();
  }

  async sendCorrections() {
    if (!this.job) return;
    const list = this.pending();
    if (!list.length) { showInfo('no new prompt: go to a frame not processed yet and draw on it'); return; }
    const doc = this.promptsJson(list);
    if (!Object.keys(doc.frames).length) { showInfo('the prompts are empty'); return; }
    try {
      this.job = await callJson(`v1/jobs/${this.job.id}/prompts`, { method: 'POST', json: doc });
    } catch (e) {
      showError(e, 'Sending corrections');
      return;
    }
    for (const [, , p] of list) p.sent = true;
    showInfo(`Prompts taken for frame${Object.keys(doc.frames).length > 1 ? 's' : ''} ${Object.keys(doc.frames).join(', ')}.`);
    this.drawUi();
    this.renderObjects();
    this.update();
  }

  async cancel() {
    if (!this.job) return;
    try {
      this.job = await callJson(`v1/jobs/${this.job.id}`, { method: 'DELETE' });
    } catch (e) {
      showError(e, 'Cancelling');
      return;
    }
    this.update();
  }

  removeObject(id) {
    if (!this.job) {
      this.objects.delete(id);
      for (const at of this.prompts.values()) at.delete(id);
      if (this.selected === id) this.selected = this.ids()[0] ?? null;
    } else {
      if (!this.editable(this.current)) return;
      const p = this.editPrompt(this.current, id);
      Object.assign(p, { box: null, points: [], paint: null, remove: true });
    }
    this.afterEdit();
  }

  // -- downloads ----------------------------------------------------------------------------------------
  async downloadZip() {
    try {
      const blob = await (await call(`v1/jobs/${this.job.id}/result.zip`)).blob();
      saveBlob(blob, `${this.job.id}-davis.zip`);
    } catch (e) {
      showError(e, 'Downloading the PNG zip');
    }
  }

  downloadJson() {
    const doc = {
      job: this.job.id, width: this.stage.w, height: this.stage.h, frames_total: this.job.frames_total,
      frames: this.frames.slice(0, this.done),
    };
    saveBlob(new Blob([JSON.stringify(doc)], { type: 'application/json' }), `${this.job.id}-rle.json`);
  }

  /** The overlay video, rendered here as WebM: the service deletes the video once a job ends. Encoded frame by
   * frame with WebCodecs (muxed by Mediabunny, js/vendor), so every frame is in it however busy the machine is.
   * A browser without a VP9/VP8 encoder falls back to MediaRecorder, which records in real time and drops
   * frames when the CPU cannot keep up; the note says how many frames that file should have. */
  async downloadVideo() {
    const n = this.done;
    if (!n || !CAN_MAKE_VIDEO) return;
    const note = $('#dl-note', this.root);
    const btn = $('#dl-video', this.root);
    btn.disabled = true;
    const k = Math.min(1, 1280 / this.stage.w);
    const w = 2 * Math.round((this.stage.w * k) / 2);
    const h = 2 * Math.round((this.stage.h * k) / 2);
    const canvas = el('canvas', { width: w, height: h });
    const ctx = canvas.getContext('2d');
    const masks = new OffscreenCanvas(this.stage.w, this.stage.h);
    const draw = async (i) => {
      ctx.drawImage(await this.source.bitmap(i), 0, 0, w, h);
      paintFrame(masks.getContext('2d'), this.frames[i], this.stage.w, this.stage.h, (id) => this.objects.get(id)?.visible !== false);
      ctx.drawImage(masks, 0, 0, w, h);
      ctx.font = `${Math.round(14 * Math.max(1, w / 854))}px system-ui, sans-serif`;
      ctx.fillStyle = 'rgba(0, 0, 0, 0.6)';
      ctx.fillRect(6, 6, 90, 22);
      ctx.fillStyle = '#fff';
      ctx.fillText(`frame ${i}`, 12, 22);
      note.textContent = `rendering the overlay video: frame ${i + 1} of ${n}`;
    };
    let blob = null;
    let exact = true;
    let failed = false;
    try {
      blob = await encodeFrames(canvas, draw, n, this.source.fps);
      if (!blob && typeof MediaRecorder !== 'undefined') {
        exact = false;
        blob = await recordFrames(canvas, draw, n, this.source.fps);
      }
    } catch (e) {
      failed = true;
      showError(e, 'Overlay video');
    } finally {
      btn.disabled = false;
    }
    if (!blob) {
      note.textContent = failed ? '' : 'this browser cannot encode video (no VP9 or VP8 encoder)';
      return;
    }
    note.textContent = `overlay video: ${n} frames, ${(blob.size / 1e6).toFixed(1)} MB (WebM, rendered in this browser)`
      + (exact ? '' : '; recorded in real time, so frames may be missing where the browser was busy');
    saveBlob(blob, `${this.job.id}-overlay.webm`);
  }

  // -- playing ------------------------------------------------------------------------------------------
  togglePlay() {
    if (!this.source) return;
    const btn = $('#p-play', this.root);
    if (this.playing) {
      clearInterval(this.playing);
      this.playing = null;
      btn.setAttribute('aria-label', 'Play');
      btn.textContent = '▶';
      return;
    }
    $('#p-follow', this.root).checked = false;
    btn.setAttribute('aria-label', 'Pause');
    btn.textContent = '❚❚';
    const end = () => Math.max(this.done, 1) - 1;
    if (this.current >= end()) this.show(0);
    this.playing = setInterval(() => {
      if (this.pumping) return; // a slow seek: wait for it rather than pile up
      if (this.current >= (this.done ? end() : this.count - 1)) { this.togglePlay(); return; }
      this.show(this.current + 1);
    }, 1000 / Math.min(this.source.fps, 30));
  }

  // -- what is shown around the frame -----------------------------------------------------------------
  status(kind, text) {
    const s = $('#job-status', this.root);
    s.dataset.status = kind;
    s.textContent = text;
  }

  updatePlayer() {
    const r = this.root;
    const slider = $('#p-slider', r);
    slider.max = String(Math.max(0, this.count - 1));
    slider.value = String(this.current);
    const state = this.frames[this.current] ? 'processed' : (this.job ? 'not processed yet' : '');
    $('#p-label', r).textContent = this.source ? `frame ${this.current} / ${this.count - 1}${state ? ` · ${state}` : ''}` : 'frame –';
    this.renderObjectStats();
    this.drawChart();
  }

  update() {
    const r = this.root;
    const total = this.job ? this.job.frames_total : (this.source ? this.source.count : 0);
    const prog = $('#job-progress', r);
    prog.max = Math.max(1, total);
    prog.value = this.done;
    $('#job-count', r).textContent = `${this.done} / ${total}`;
    const a = this.arrivals;
    const running = this.job && !ENDED.has(this.job.status);
    $('#job-fps', r).textContent = a.length > 1 ? `${((a.length - 1) / ((a[a.length - 1] - a[0]) / 1000)).toFixed(1)} frames/s` : '– frames/s';
    $('#job-run', r).disabled = !this.source || Boolean(this.job);
    $('#job-send', r).disabled = !running || !this.pending().length;
    $('#job-cancel', r).disabled = !running;
    const hasFrames = this.done > 0;
    $('#dl-zip', r).disabled = !(this.job && this.job.status === 'succeeded');
    $('#dl-json', r).disabled = !hasFrames;
    $('#dl-video', r).disabled = !hasFrames || !CAN_MAKE_VIDEO;
    const n = this.pending().length;
    $('#job-pending', r).textContent = n ? `${n} prompt${n > 1 ? 's' : ''} not sent yet` : '';
    this.updatePlayer();
  }

  drawChart() {
    const prompts = [];
    for (const [frame, at] of this.prompts) for (const p of at.values()) prompts.push([frame, p.sent]);
    this.chart.draw({
      count: this.source ? this.count : 0, done: this.done, current: this.current, frames: this.frames,
      ids: this.ids(), visible: (id) => this.objects.get(id)?.visible !== false, prompts,
    });
  }

  renderObjects() {
    const list = $('#job-objects', this.root);
    const ids = this.ids();
    if (!ids.length) {
      list.replaceChildren(el('li', { class: 'empty-list', text: 'none yet: draw a box on an object' }));
      return;
    }
    list.replaceChildren(...ids.map((id, n) => {
      const o = this.objects.get(id);
      const swatch = el('span', { class: 'swatch', 'aria-hidden': 'true' });
      swatch.style.background = css(id);
      const pick = el('button', {
        type: 'button', class: 'pick', 'aria-pressed': String(id === this.selected),
        'aria-label': `Select object ${id}${n < 9 ? ` (${n + 1})` : ''}`, text: `Object ${id}`,
        onclick: () => this.select(id),
      });
      const shown = el('input', { type: 'checkbox', 'aria-label': `Show object ${id}`, title: 'shown (H)' });
      shown.checked = o.visible !== false;
      shown.addEventListener('change', () => { o.visible = shown.checked; this.drawMasks(); this.drawUi(); this.drawChart(); });
      const remove = el('button', {
        type: 'button', class: 'small', text: this.job ? 'Remove here' : '×',
        'aria-label': this.job ? `Remove object ${id} from this frame on` : `Delete object ${id}`,
        onclick: () => this.removeObject(id),
      });
      return el('li', { class: id === this.selected ? 'selected' : '', 'data-id': id },
        swatch, pick, el('span', { class: 'meta', 'data-stat': id }), shown, remove);
    }));
    this.renderObjectStats();
  }

  renderObjectStats() {
    const f = this.frames[this.current];
    for (const span of this.root.querySelectorAll('#job-objects [data-stat]')) {
      const id = Number(span.dataset.stat);
      const o = f?.objects.find((q) => q.id === id);
      const p = this.prompts.get(this.current)?.get(id);
      let text = '';
      if (o) text = o.area ? `${o.area} px · ${(o.score ?? 0).toFixed(2)}` : 'not visible';
      else if (p) text = p.remove ? 'remove' : p.paint ? 'painted' : p.box ? 'box' : `${p.points.length} pt`;
      span.textContent = text;
    }
  }

  addEvent(index, e) {
    const list = $('#job-events', this.root);
    if (this.eventCount >= 1000) return;
    this.eventCount += 1;
    const extra = e.score !== undefined && e.score !== null ? ` (score ${e.score.toFixed(2)})`
      : e.ratio ? ` (×${e.ratio.toFixed(1)})` : '';
    const text = `frame ${index}: object ${e.id} ${e.type.replace('_', ' ')}${extra}`;
    list.append(el('li', { class: `t-${e.type}`, 'data-frame': index },
      el('button', { type: 'button', text, onclick: () => this.pick(index) })));
  }

  // -- keyboard -----------------------------------------------------------------------------------------
  key(ev) {
    const k = ev.key;
    const lower = k.length === 1 ? k.toLowerCase() : k;
    if (lower === 'o') { $('#job-file', this.root).click(); return true; }
    if (!this.source) return false;
    if (TOOLS[lower]) { this.setTool(TOOLS[lower]); return true; }
    if (lower === 'm') { $('#job-mask-file', this.root).click(); return true; }
    if (lower === 'a') { this.newObject(); this.update(); return true; }
    if (/^[1-9]$/.test(k)) { const id = this.ids()[Number(k) - 1]; if (id !== undefined) this.select(id); return true; }
    if (lower === 'h' && this.selected !== null) {
      const o = this.objects.get(this.selected);
      o.visible = o.visible === false;
      this.renderObjects(); this.drawMasks(); this.drawUi(); this.drawChart();
      return true;
    }
    if (lower === 'r') { this.submit(); return true; }
    if (lower === 's') { this.sendCorrections(); return true; }
    if (lower === 'f') {
      const f = $('#p-follow', this.root);
      f.checked = !f.checked;
      if (f.checked && this.done) this.show(this.done - 1);
      return true;
    }
    if (k === 'Delete' || k === 'Backspace') { this.clearPrompt(); return true; }
    if (k === 'Escape' && this.drag) { this.drag = null; this.drawUi(); return true; }
    if (k === ' ') { this.togglePlay(); return true; }
    const step = ev.shiftKey ? 10 : 1;
    if (k === 'ArrowLeft') { this.pick(this.current - step); return true; }
    if (k === 'ArrowRight') { this.pick(this.current + step); return true; }
    if (k === 'Home') { this.pick(0); return true; }
    if (k === 'End') { this.pick(Math.max(0, this.done - 1)); return true; }
    return false;
  }
}

function label(ctx, text, x, y, colour, s) {
  ctx.save();
  ctx.setLineDash([]);
  ctx.font = `bold ${Math.round(13 * s)}px system-ui, sans-serif`;
  const tw = ctx.measureText(text).width;
  ctx.fillStyle = colour;
  ctx.fillRect(x, Math.max(0, y - 18 * s), tw + 8 * s, 18 * s);
  ctx.fillStyle = '#000';
  ctx.fillText(text, x + 4 * s, Math.max(0, y - 18 * s) + 13.5 * s);
  ctx.restore();
}

/** A painted canvas -> row-major 0/1 mask (alpha over one half). */
function canvasMask(canvas) {
  const d = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const m = new Uint8Array(canvas.width * canvas.height);
  for (let i = 0; i < m.length; i += 1) m[i] = d[4 * i + 3] > 127 ? 1 : 0;
  return m;
}

function maskCanvas(mask, w, h) {
  const c = new OffscreenCanvas(w, h);
  const ctx = c.getContext('2d');
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < mask.length; i += 1) {
    if (!mask[i]) continue;
    img.data[4 * i] = 255; img.data[4 * i + 1] = 255; img.data[4 * i + 2] = 255; img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return c;
}

/** n frames drawn by `draw(i)` on `canvas`, encoded one by one with WebCodecs into a WebM Blob; null when the
 * browser has no VP9 or VP8 encoder for this size. The muxer is loaded only here (it is most of the page's weight). */
async function encodeFrames(canvas, draw, n, fps) {
  if (typeof VideoEncoder === 'undefined') return null;
  const mb = await import('./vendor/mediabunny.min.mjs');
  const bitrate = VIDEO_BITRATE;
  let codec = null;
  for (const c of ['vp9', 'vp8']) {
    if (await mb.canEncodeVideo(c, { width: canvas.width, height: canvas.height, bitrate })) { codec = c; break; }
  }
  if (!codec) return null;
  const output = new mb.Output({ format: new mb.WebMOutputFormat(), target: new mb.BufferTarget() });
  const source = new mb.CanvasSource(canvas, { codec, bitrate });
  output.addVideoTrack(source, { frameRate: fps });
  await output.start();
  try {
    for (let i = 0; i < n; i += 1) {
      await draw(i);
      await source.add(i / fps, 1 / fps); // waits while the encoder is behind: no frame is dropped
    }
    await output.finalize();
  } catch (e) {
    await output.cancel();
    throw e;
  }
  return new Blob([output.target.buffer], { type: 'video/webm' });
}

/** The fallback: n frames drawn by `draw(i)`, recorded in real time with MediaRecorder (it stamps frames as they
 * come, so they are paced at fps, and it drops those it cannot encode in time). */
async function recordFrames(canvas, draw, n, fps) {
  const stream = canvas.captureStream(0);
  const track = stream.getVideoTracks()[0];
  const mime = ['video/webm;codecs=vp8', 'video/webm;codecs=vp9', 'video/webm'].find((m) => MediaRecorder.isTypeSupported(m));
  const rec = new MediaRecorder(stream, { mimeType: mime, videoBitsPerSecond: VIDEO_BITRATE });
  const chunks = [];
  rec.ondataavailable = (ev) => { if (ev.data.size) chunks.push(ev.data); };
  const stopped = new Promise((resolve) => { rec.onstop = resolve; });
  rec.start(1000);
  const t0 = performance.now();
  try {
    for (let i = 0; i < n; i += 1) {
      await draw(i);
      track.requestFrame();
      const wait = t0 + ((i + 1) * 1000) / fps - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  } finally {
    rec.stop();
    await stopped;
    track.stop();
  }
  return new Blob(chunks, { type: 'video/webm' });
}
