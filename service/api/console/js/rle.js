// COCO run-length encoding, as pycocotools writes it (the API's masks): runs counted column-major
// (down each column, then the next column), starting with a run of zeros; the counts written as text,
// 5 bits per character offset by 48, bit 0x20 meaning "more characters follow", the last character's
// bit 0x10 the sign, and every count from the fourth on stored as a difference to the one two before.

/** The run lengths of a compressed counts string (pycocotools' rleFrString). */
export function decodeCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0;
    let k = 0;
    let c = 0;
    let more = true;
    while (more) {
      if (p >= s.length) throw new Error('RLE counts end inside a number');
      c = s.charCodeAt(p) - 48;
      if (c < 0 || c >= 64) throw new Error(`RLE counts hold a character outside the alphabet: ${s[p]}`);
      x += (c & 0x1f) * 2 ** (5 * k); // multiplication, not <<: counts pass 2^31 bits of shift
      more = (c & 0x20) !== 0;
      p += 1;
      k += 1;
    }
    if (c & 0x10) x -= 2 ** (5 * k);
    if (counts.length > 2) x += counts[counts.length - 2];
    if (x < 0) throw new Error('RLE counts must not be negative');
    counts.push(x);
  }
  return counts;
}

/** Run lengths -> compressed counts string (pycocotools' rleToString). */
export function encodeCounts(counts) {
  let s = '';
  for (let i = 0; i < counts.length; i += 1) {
    let x = counts[i];
    if (i > 2) x -= counts[i - 2];
    let more = true;
    while (more) {
      let c = x & 0x1f;
      x >>= 5; // arithmetic shift: negative differences end in -1
      more = (c & 0x10) ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      s += String.fromCharCode(c + 48);
    }
  }
  return s;
}

/** A row-major mask (Uint8Array, nonzero = inside) of width w and height h -> {size: [h, w], counts}. */
export function encodeMask(mask, w, h) {
  const counts = [];
  let run = 0;
  let value = 0;
  for (let x = 0; x < w; x += 1) {
    for (let y = 0; y < h; y += 1) {
      const v = mask[y * w + x] ? 1 : 0;
      if (v !== value) {
        counts.push(run);
        run = 0;
        value = v;
      }
      run += 1;
    }
  }
  counts.push(run);
  return { size: [h, w], counts: encodeCounts(counts) };
}

/** {size: [h, w], counts} -> {w, h, mask} with mask a row-major Uint8Array of 0/1; throws when malformed. */
export function decodeRle(rle) {
  const [h, w] = rle.size;
  const counts = decodeCounts(rle.counts);
  let total = 0;
  for (const c of counts) total += c;
  if (total !== h * w) throw new Error(`RLE counts add up to ${total}, the mask has ${h * w} pixels`);
  const mask = new Uint8Array(w * h);
  let j = 0; // column-major position
  for (let r = 0; r < counts.length; r += 1) {
    const n = counts[r];
    if (r % 2 === 1) {
      for (let t = j; t < j + n; t += 1) mask[(t % h) * w + Math.floor(t / h)] = 1;
    }
    j += n;
  }
  return { w, h, mask };
}

/** A frame's objects [{id, rle}] -> a row-major label map (Uint8Array of object ids, 0 background). */
export function labelsOf(objects, w, h) {
  const labels = new Uint8Array(w * h);
  for (const obj of objects) {
    if (!obj.rle || !obj.area) continue;
    const { mask } = decodeRle(obj.rle);
    if (mask.length !== labels.length) continue; // another size: not this frame's (never from the API)
    for (let i = 0; i < mask.length; i += 1) if (mask[i]) labels[i] = obj.id;
  }
  return labels;
}
