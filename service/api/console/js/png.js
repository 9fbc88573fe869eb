// A mask PNG -> one mask per object id. An indexed (palette) PNG names its ids by palette index (the
// DAVIS format the API reads and writes: 0 background, 255 void); a grey or colour PNG is one object per
// distinct colour that is not black (a {0, 255} PNG is one object).

const SIG = [137, 80, 78, 71, 13, 10, 26, 10];

/** IHDR and PLTE of a PNG: {width, height, colorType, palette: [[r, g, b], ...] | null}. */
export function pngHeader(buf) {
  const v = new DataView(buf);
  if (buf.byteLength < 33 || SIG.some((b, i) => v.getUint8(i) !== b)) throw new Error('not a PNG file');
  const out = { width: v.getUint32(16), height: v.getUint32(20), colorType: v.getUint8(25), palette: null };
  let p = 8;
  while (p + 8 <= buf.byteLength) {
    const len = v.getUint32(p);
    const type = String.fromCharCode(v.getUint8(p + 4), v.getUint8(p + 5), v.getUint8(p + 6), v.getUint8(p + 7));
    if (type === 'PLTE') {
      out.palette = [];
      for (let i = 0; i + 2 < len; i += 3) out.palette.push([v.getUint8(p + 8 + i), v.getUint8(p + 9 + i), v.getUint8(p + 10 + i)]);
    }
    if (type === 'IDAT' || type === 'IEND') break;
    p += 12 + len;
  }
  return out;
}

/**
 * Decode a mask PNG file: -> {width, height, objects: Map(id -> Uint8Array row-major 0/1), indexed}.
 * `nextId()` gives ids to the objects of a PNG without a palette.
 */
export async function readMaskPng(file, nextId) {
  const buf = await file.arrayBuffer();
  const head = pngHeader(buf);
  const bmp = await createImageBitmap(new Blob([buf], { type: 'image/png' }),
    { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const canvas = new OffscreenCanvas(bmp.width, bmp.height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bmp, 0, 0);
  const px = ctx.getImageData(0, 0, bmp.width, bmp.height).data;
  const n = bmp.width * bmp.height;
  const objects = new Map();
  const indexed = head.colorType === 3 && head.palette;
  const lookup = new Map();
  if (indexed) {
    head.palette.forEach(([r, g, b], i) => { const k = (r << 16) | (g << 8) | b; if (!lookup.has(k)) lookup.set(k, i); });
  }
  const byColour = new Map();
  for (let i = 0; i < n; i += 1) {
    const k = (px[4 * i] << 16) | (px[4 * i + 1] << 8) | px[4 * i + 2];
    if (k === 0 || px[4 * i + 3] === 0) continue;
    let id;
    if (indexed) {
      id = lookup.get(k);
      if (id === undefined || id === 0 || id === 255) continue; // background and void
    } else {
      id = byColour.get(k);
      if (id === undefined) {
        if (byColour.size >= 20) throw new Error(`${file.name}: more than 20 colours; give an indexed (palette) PNG`);
        id = nextId(byColour.size);
        byColour.set(k, id);
      }
    }
    let m = objects.get(id);
    if (!m) { m = new Uint8Array(n); objects.set(id, m); }
    m[i] = 1;
  }
  bmp.close();
  if (!objects.size) throw new Error(`${file.name}: holds no object (every pixel is background)`);
  return { width: head.width, height: head.height, objects, indexed: Boolean(indexed) };
}
