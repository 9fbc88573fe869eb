// The video's own frames, kept in the browser (the service deletes its inputs once a job ends).
// A zip of frames: each frame is unpacked from the file when it is shown (a few kept decoded).
// A video file: a <video> element seeked to the middle of frame i, at i + 0.5 frame durations. The frame
// rate is measured from the frames the browser presents, then taken as frames_total / duration once
// the service has counted the frames. Exact for constant-frame-rate files; a variable-frame-rate file
// can show a neighbouring frame under the masks (the masks themselves are the service's, per frame).

import { entryBlob, frameEntries, listZip } from './zip.js';

const KEEP = 48; // decoded frames kept (ImageBitmaps, ~1.6 MB each at 854x480)

class Cache {
  constructor(n) { this.n = n; this.map = new Map(); }
  get(k) {
    const v = this.map.get(k);
    if (v !== undefined) { this.map.delete(k); this.map.set(k, v); }
    return v;
  }
  set(k, v) {
    this.map.set(k, v);
    while (this.map.size > this.n) {
      const [old, bmp] = this.map.entries().next().value;
      this.map.delete(old);
      bmp.close?.();
    }
  }
  clear() { for (const b of this.map.values()) b.close?.(); this.map.clear(); }
}

export class ZipFrames {
  static async open(file) {
    const entries = frameEntries(await listZip(file));
    if (!entries.length) throw new Error(`${file.name}: holds no image frames (.jpg, .jpeg, .png, .bmp, .webp)`);
    const src = new ZipFrames(file, entries);
    const first = await src.bitmap(0);
    src.width = first.width;
    src.height = first.height;
    return src;
  }

  constructor(file, entries) {
    this.kind = 'zip';
    this.file = file;
    this.entries = entries;
    this.count = entries.length;
    this.exact = true; // the count is the service's count
    this.fps = 24; // a zip has no frame rate: playback and the overlay video use this one
    this.cache = new Cache(KEEP);
    this.loading = new Map();
  }

  name(i) { return this.entries[i].name.split('/').pop(); }

  /** The service counted `n` frames: a zip's entries were exact already. */
  setCount(_n) {}

  async bitmap(i) {
    const hit = this.cache.get(i);
    if (hit) return hit;
    if (!this.loading.has(i)) {
      const p = (async () => {
        const blob = await entryBlob(this.file, this.entries[i]);
        try {
          return await createImageBitmap(blob);
        } catch {
          throw new Error(`frame ${this.name(i)}: not an image the browser can decode`);
        }
      })();
      this.loading.set(i, p);
      p.then((b) => this.cache.set(i, b), () => {}).finally(() => this.loading.delete(i));
    }
    return this.loading.get(i);
  }

  close() { this.cache.clear(); }
}

function once(target, event, timeoutMs) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { target.removeEventListener(event, ok); reject(new Error(`no ${event}`)); }, timeoutMs);
    function ok() { clearTimeout(t); resolve(); }
    target.addEventListener(event, ok, { once: true });
  });
}

/** Frames per second of a playing video, from the media times of the frames it presents; null if unknown. */
async function measureFps(video) {
  if (!('requestVideoFrameCallback' in video)) return null;
  const seen = [];
  await new Promise((resolve) => {
    const stop = setTimeout(resolve, 2000);
    const onFrame = (_now, meta) => {
      seen.push([meta.mediaTime, meta.presentedFrames]);
      if (seen.length >= 8) { clearTimeout(stop); resolve(); } else video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
    video.play().catch(() => { clearTimeout(stop); resolve(); });
  });
  video.pause();
  const steps = [];
  for (let i = 1; i < seen.length; i += 1) {
    const dt = seen[i][0] - seen[i - 1][0];
    const df = seen[i][1] - seen[i - 1][1];
    if (dt > 0 && df > 0) steps.push(dt / df);
  }
  if (!steps.length) return null;
  steps.sort((a, b) => a - b);
  return 1 / steps[Math.floor(steps.length / 2)];
}

export class VideoFrames {
  static async open(file) {
    const video = document.createElement('video');
    video.muted = true;
    video.playsInline = true;
    video.preload = 'auto';
    const url = URL.createObjectURL(file);
    video.src = url;
    try {
      await Promise.race([once(video, 'loadeddata', 20000), new Promise((_, reject) => {
        video.addEventListener('error', () => reject(new Error('error')), { once: true });
      })]);
    } catch {
      URL.revokeObjectURL(url);
      throw new Error(`${file.name}: this browser cannot play this video; the service may still read it, ` +
        'but the console needs to show its frames: convert it to MP4 (H.264) or WebM, or give a zip of frames');
    }
    const src = new VideoFrames(file, video, url);
    const fps = await measureFps(video);
    src.fps = fps && fps > 1 && fps < 240 ? fps : 25;
    src.count = Math.max(1, Math.round(video.duration * src.fps));
    src.width = video.videoWidth;
    src.height = video.videoHeight;
    await src.bitmap(0);
    return src;
  }

  constructor(file, video, url) {
    this.kind = 'video';
    this.file = file;
    this.video = video;
    this.url = url;
    this.exact = false; // until the service has counted the frames
    this.cache = new Cache(KEEP);
    this.queue = Promise.resolve();
  }

  name(i) { return String(i).padStart(5, '0'); }

  /** The service counted `n` frames: the frame rate follows from the duration. */
  setCount(n) {
    if (!n || this.exact) return;
    this.count = n;
    this.exact = true;
    if (Number.isFinite(this.video.duration) && this.video.duration > 0) {
      const fps = n / this.video.duration;
      if (Math.abs(fps - this.fps) > 0.01) { this.fps = fps; this.cache.clear(); }
    }
  }

  bitmap(i) {
    const hit = this.cache.get(i);
    if (hit) return Promise.resolve(hit);
    // One seek at a time: the element shows one frame.
    const p = this.queue.then(async () => {
      const again = this.cache.get(i);
      if (again) return again;
      const t = Math.min((i + 0.5) / this.fps, Math.max(0, this.video.duration - 1e-3));
      if (Math.abs(this.video.currentTime - t) > 1e-4) {
        const seeked = once(this.video, 'seeked', 10000);
        this.video.currentTime = t;
        await seeked;
      }
      const bmp = await createImageBitmap(this.video);
      this.cache.set(i, bmp);
      return bmp;
    });
    this.queue = p.catch(() => {});
    return p;
  }

  close() { this.cache.clear(); URL.revokeObjectURL(this.url); this.video.removeAttribute('src'); }
}

/** A zip of frames or a video file. */
export async function openFrames(file) {
  const isZip = /\.zip$/i.test(file.name) || file.type === 'application/zip';
  return isZip ? ZipFrames.open(file) : VideoFrames.open(file);
}
