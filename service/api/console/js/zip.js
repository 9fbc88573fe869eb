// Reading a zip of frames in the browser, entry by entry, with no library: the central directory names
// the entries, stored ones are sliced out of the file, deflated ones go through the browser's own
// DecompressionStream('deflate-raw'). Nothing is unpacked before it is shown.

const EOCD = 0x06054b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;
export const IMAGE_EXTS = ['.jpg', '.jpeg', '.png', '.bmp', '.webp'];

async function bytes(blob, start, end) {
  return new DataView(await blob.slice(start, end).arrayBuffer());
}

/** The entries of a zip File/Blob: [{name, method, compressedSize, size, offset}]. */
export async function listZip(file) {
  const tailStart = Math.max(0, file.size - 65557); // the end record and a comment of at most 64 KiB
  const tail = await bytes(file, tailStart, file.size);
  let at = -1;
  for (let i = tail.byteLength - 22; i >= 0; i -= 1) {
    if (tail.getUint32(i, true) === EOCD) { at = i; break; }
  }
  if (at < 0) throw new Error(`${file.name}: not a readable zip archive (no end of central directory)`);
  const count = tail.getUint16(at + 10, true);
  const cdSize = tail.getUint32(at + 12, true);
  const cdOffset = tail.getUint32(at + 16, true);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    throw new Error(`${file.name}: a ZIP64 archive; the console reads zips under 4 GiB (the API reads both)`);
  }
  const cd = await bytes(file, cdOffset, cdOffset + cdSize);
  const utf8 = new TextDecoder('utf-8');
  const entries = [];
  let p = 0;
  for (let n = 0; n < count; n += 1) {
    if (p + 46 > cd.byteLength || cd.getUint32(p, true) !== CENTRAL) {
      throw new Error(`${file.name}: its central directory is damaged`);
    }
    const method = cd.getUint16(p + 10, true);
    const compressedSize = cd.getUint32(p + 20, true);
    const size = cd.getUint32(p + 24, true);
    const nameLen = cd.getUint16(p + 28, true);
    const extraLen = cd.getUint16(p + 30, true);
    const commentLen = cd.getUint16(p + 32, true);
    const offset = cd.getUint32(p + 42, true);
    const name = utf8.decode(new Uint8Array(cd.buffer, cd.byteOffset + p + 46, nameLen));
    entries.push({ name, method, compressedSize, size, offset });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}

/** One entry's bytes as a Blob. */
export async function entryBlob(file, entry) {
  const local = await bytes(file, entry.offset, entry.offset + 30);
  if (local.getUint32(0, true) !== LOCAL) throw new Error(`zip entry ${entry.name}: damaged local header`);
  const start = entry.offset + 30 + local.getUint16(26, true) + local.getUint16(28, true);
  const raw = file.slice(start, start + entry.compressedSize);
  if (entry.method === 0) return raw;
  if (entry.method !== 8) throw new Error(`zip entry ${entry.name}: compression method ${entry.method} is not read`);
  return new Response(raw.stream().pipeThrough(new DecompressionStream('deflate-raw'))).blob();
}

/** The API's natural order (service/media/archive.py natural_key): "frame2" before "frame10". */
export function naturalKey(name) {
  return name.split(/(\d+)/).map((t, i) => (i % 2 === 1 ? Number(t) : t.toLowerCase()));
}

export function naturalCompare(a, b) {
  const ka = naturalKey(a);
  const kb = naturalKey(b);
  for (let i = 0; i < Math.min(ka.length, kb.length); i += 1) {
    if (ka[i] < kb[i]) return -1;
    if (ka[i] > kb[i]) return 1;
  }
  return ka.length - kb.length;
}

/** The image entries the API would read as frames, in the order it reads them. */
export function frameEntries(entries) {
  const out = entries.filter((e) => {
    const parts = e.name.replaceAll('\\', '/').split('/');
    if (e.name.endsWith('/') || parts.some((q) => q.startsWith('.') || q.startsWith('__MACOSX'))) return false;
    const dot = e.name.lastIndexOf('.');
    return dot > e.name.lastIndexOf('/') && IMAGE_EXTS.includes(e.name.slice(dot).toLowerCase());
  });
  return out.sort((a, b) => naturalCompare(a.name, b.name));
}
