"""Mask files: indexed (palette) PNGs, {0,255} grayscale PNGs, folders and zips of them.

Object ids are 1..254 as stored; 0 is background; 255 is DAVIS "void" and is ignored (read as 0),
except in a grayscale mask whose only values are 0 and 255 (DAVIS 2016), where 255 is object 1.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..vos.labels import MAX_OBJECTS, VOID
from .archive import is_zip, read_entry, zip_members
from .errors import MediaError, UnsupportedFormatError

MASK_EXTS = {".png"}


def davis_palette() -> bytes:
    """The DAVIS / PASCAL VOC colour map: 256 RGB triples, index 1 is (128, 0, 0)."""
    pal = bytearray()
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += bytes((r, g, b))
    return bytes(pal)


def read_label_png(data: bytes, what: str = "mask", keep_void: bool = False) -> tuple[np.ndarray, bytes | None]:
    """PNG bytes -> (labels (H,W) uint8, palette of 768 bytes or None for grayscale).

    With `keep_void`, void pixels keep the value 255 (for evaluation) instead of becoming background.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        raise MediaError(f"{what}: not a readable PNG ({type(e).__name__})") from None
    if img.format != "PNG":
        raise UnsupportedFormatError(f"{what}: masks must be PNG files, got {img.format}")
    palette = None
    if img.mode == "P":
        labels = np.array(img, np.uint8)
        raw = img.getpalette() or []
        palette = bytes(raw[:768]).ljust(768, b"\0")
        if not keep_void:
            labels[labels == VOID] = 0
    elif img.mode in ("L", "LA", "1"):
        labels = np.array(img.getchannel(0) if img.mode == "LA" else img.convert("L"), np.uint8)
        if np.isin(labels, (0, 255)).all():
            labels = (labels == 255).astype(np.uint8)  # DAVIS 2016: one object
        elif not keep_void:
            labels[labels == VOID] = 0
    elif img.mode in ("I", "I;16", "I;16B"):
        # 16-bit label images can name more objects than we track; say so instead of wrapping ids.
        wide = np.array(img, np.int64)
        ids = np.unique(wide[wide > 0])
        if len(ids) > MAX_OBJECTS or (len(ids) and ids.max() > MAX_OBJECTS):
            raise MediaError(f"{what}: {len(ids)} objects with ids up to {int(ids.max())}; at most "
                             f"{MAX_OBJECTS} objects with ids 1..{MAX_OBJECTS} are supported")
        labels = wide.astype(np.uint8)
    else:
        raise UnsupportedFormatError(f"{what}: mask must be an indexed (palette) or grayscale PNG, got mode "
                                     f"{img.mode}")
    return labels, palette


def encode_label_png(labels: np.ndarray, palette: bytes | None = None) -> bytes:
    """labels (H,W) uint8 -> indexed PNG bytes with `palette` (DAVIS palette by default)."""
    img = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8))
    img.putpalette(palette or davis_palette())
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def write_label_png(path: str | Path, labels: np.ndarray, palette: bytes | None = None) -> None:
    Path(path).write_bytes(encode_label_png(labels, palette))


@dataclass
class MaskSet:
    """Masks keyed by file stem; read lazily, one at a time."""

    path: Path
    keys: list[str]
    single: bool  # one PNG: the first frame's masks, whatever its name
    _entries: dict = field(default_factory=dict, repr=False)

    def load(self, key: str) -> tuple[np.ndarray, bytes | None]:
        entry = self._entries[key]
        if isinstance(entry, Path):
            try:
                data = entry.read_bytes()
            except OSError as e:
                raise MediaError(f"{entry.name}: cannot read ({e.strerror})") from None
            return read_label_png(data, entry.name)
        with zipfile.ZipFile(self.path) as zf:
            data = read_entry(zf, entry)
        return read_label_png(data, entry.filename)

    def assign(self, frame_names: list[str] | None, frame_count: int | None) -> dict[int, str]:
        """Map frame index -> mask key. Keys name frames by file stem, or by index for video files."""
        if self.single:
            return {0: self.keys[0]}
        out: dict[int, str] = {}
        index = {n: i for i, n in enumerate(frame_names)} if frame_names is not None else None
        for key in self.keys:
            if index is not None:
                if key not in index:
                    raise MediaError(f"mask {key}.png names no frame of the video")
                out[index[key]] = key
            else:
                if not key.isdigit():
                    raise MediaError(f"mask {key}.png: masks for a video file must be named by frame index "
                                     "(00000.png, 00012.png, ...)")
                i = int(key)
                if frame_count and i >= frame_count:
                    raise MediaError(f"mask {key}.png: the video has {frame_count} frames")
                out[i] = key
        return out

    def palette(self) -> bytes | None:
        """Palette of the first mask, or None when it is grayscale."""
        return self.load(self.keys[0])[1]

    def frame_prompts(self, key: str) -> dict:
        """The objects of one label PNG as prompts: {id: Prompt} for every id present in it."""
        from .prompts import Prompt

        labels, _ = self.load(key)
        return {int(i): Prompt(label_mask=labels == i) for i in np.unique(labels) if i}


def read_masks(path: str | Path) -> MaskSet:
    """A PNG (first frame), or a folder or zip of PNGs named after frames."""
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{p}: no such file or folder")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in MASK_EXTS and not f.name.startswith("."))
        entries = {f.stem: f for f in files}
        single = False
    elif is_zip(p):
        members = zip_members(p, MASK_EXTS)
        entries = {}
        for info in members:
            stem = PurePosixPath(info.filename).stem
            if stem in entries:
                raise MediaError(f"{p.name}: two masks are named {stem}.png")
            entries[stem] = info
        single = False
    else:
        entries = {p.stem: p}
        single = True
    if not entries:
        raise MediaError(f"{p.name}: contains no PNG masks")
    return MaskSet(p, sorted(entries), single, entries)
