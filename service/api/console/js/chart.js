// Each object's score over the frames, with the frames' events marked: where a person should look.

import { css } from './ui.js';

const PAD = { l: 30, r: 8, t: 8, b: 16 };

export class ScoreChart {
  constructor(canvas, onPick) {
    this.canvas = canvas;
    this.onPick = onPick;
    canvas.addEventListener('click', (ev) => {
      const f = this.frameAt(ev.clientX);
      if (f !== null) onPick(f);
    });
    new ResizeObserver(() => this.draw(this.last)).observe(canvas);
  }

  frameAt(clientX) {
    if (!this.count) return null;
    const r = this.canvas.getBoundingClientRect();
    const x = clientX - r.left;
    const t = (x - PAD.l) / Math.max(1, r.width - PAD.l - PAD.r);
    return Math.max(0, Math.min(this.count - 1, Math.round(t * (this.count - 1))));
  }

  /**
   * state: {count, done, current, frames: [{objects, events}], ids: [id], visible(id), prompts: [[frame, sent]]}
   */
  draw(state) {
    this.last = state;
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(c.clientWidth * dpr));
    const h = Math.max(1, Math.round(c.clientHeight * dpr));
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
    const ctx = c.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const W = c.clientWidth;
    const H = c.clientHeight;
    ctx.clearRect(0, 0, W, H);
    if (!state || !state.count) return;
    const n = state.count;
    this.count = n;
    const iw = W - PAD.l - PAD.r;
    const ih = H - PAD.t - PAD.b;
    const X = (i) => PAD.l + (n > 1 ? (i / (n - 1)) * iw : iw / 2);
    const Y = (s) => PAD.t + (1 - s) * ih;

    ctx.fillStyle = 'rgba(77, 163, 255, 0.08)'; // frames processed
    ctx.fillRect(PAD.l, PAD.t, Math.max(0, X(Math.max(0, state.done - 1)) - PAD.l), ih);
    ctx.strokeStyle = '#343945';
    ctx.fillStyle = '#a3aab8';
    ctx.font = '10px system-ui, sans-serif';
    ctx.lineWidth = 1;
    for (const s of [0, 0.5, 1]) {
      ctx.setLineDash(s === 0.5 ? [3, 3] : []);
      ctx.beginPath();
      ctx.moveTo(PAD.l, Y(s));
      ctx.lineTo(W - PAD.r, Y(s));
      ctx.stroke();
      ctx.fillText(s.toFixed(1), 4, Y(s) + 3);
    }
    ctx.setLineDash([]);
    ctx.fillText('0', PAD.l, H - 3);
    ctx.textAlign = 'right';
    ctx.fillText(String(n - 1), W - PAD.r, H - 3);
    ctx.textAlign = 'left';

    for (const id of state.ids) {
      if (!state.visible(id)) continue;
      ctx.strokeStyle = css(id);
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      let open = false;
      for (let i = 0; i < state.done; i += 1) {
        const f = state.frames[i];
        const o = f && f.objects ? f.objects.find((q) => q.id === id) : null;
        if (!o) { open = false; continue; }
        const y = Y(o.area ? (o.score ?? 0) : 0);
        if (open) ctx.lineTo(X(i), y); else ctx.moveTo(X(i), y);
        open = true;
      }
      ctx.stroke();
    }

    for (let i = 0; i < state.done; i += 1) {
      const f = state.frames[i];
      if (!f || !f.events) continue;
      for (const e of f.events) {
        if (!state.visible(e.id)) continue;
        const o = f.objects.find((q) => q.id === e.id);
        const y = Y(e.score ?? (o && o.area ? o.score ?? 0 : 0));
        marker(ctx, e.type, X(i), y, css(e.id));
      }
    }

    for (const [frame, sent] of state.prompts) { // prompts: ticks on top
      ctx.fillStyle = sent ? '#ffd84d' : 'rgba(255, 216, 77, 0.45)';
      ctx.fillRect(X(frame) - 1, PAD.t - 6, 3, 6);
    }

    ctx.strokeStyle = '#ffffff';
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(X(state.current) + 0.5, PAD.t);
    ctx.lineTo(X(state.current) + 0.5, H - PAD.b);
    ctx.stroke();
  }
}

function marker(ctx, type, x, y, colour) {
  ctx.save();
  ctx.translate(x, y);
  ctx.lineWidth = 1;
  ctx.strokeStyle = '#000';
  if (type === 'lost') {
    ctx.fillStyle = '#ff6b6b';
    tri(ctx, 5, 1);
  } else if (type === 'reappeared') {
    ctx.fillStyle = '#5fd38d';
    tri(ctx, 5, -1);
  } else if (type === 'corrected' || type === 'started') {
    ctx.fillStyle = '#ffd84d';
    ctx.beginPath();
    ctx.moveTo(0, -5); ctx.lineTo(5, 0); ctx.lineTo(0, 5); ctx.lineTo(-5, 0);
    ctx.closePath();
    ctx.fill(); ctx.stroke();
  } else if (type === 'removed') {
    ctx.strokeStyle = colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(-4, -4); ctx.lineTo(4, 4); ctx.moveTo(4, -4); ctx.lineTo(-4, 4);
    ctx.stroke();
  } else {
    ctx.fillStyle = colour;
    ctx.beginPath();
    ctx.arc(0, 0, 3, 0, 2 * Math.PI);
    ctx.fill(); ctx.stroke();
  }
  ctx.restore();
}

function tri(ctx, s, dir) {
  ctx.beginPath();
  ctx.moveTo(-s, -dir * s);
  ctx.lineTo(s, -dir * s);
  ctx.lineTo(0, dir * s);
  ctx.closePath();
  ctx.fill();
  ctx.stroke();
}
