"""Safe reading of zip archives of frames or masks: no path tricks, no zip bombs."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path, PurePosixPath

from .errors import MediaError, UnsafeArchiveError

MAX_ENTRY_BYTES = 256 << 20  # one frame or mask, unpacked
MAX_RATIO = 200  # unpacked / packed; real images compress far less than this


def natural_key(name: str) -> list:
    """Sort key that puts frame2 before frame10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def zip_members(path: str | Path, exts: set[str]) -> list[zipfile.ZipInfo]:
    """Entries of a zip with one of `exts`, in natural name order; rejects unsafe archives."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise MediaError(f"{Path(path).name}: not a readable zip archive ({e})") from None
    with zf:
        out = []
        for info in zf.infolist():
            name = info.filename
            parts = PurePosixPath(name.replace("\\", "/")).parts
            if name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name):
                raise UnsafeArchiveError(f"zip entry {name!r} has an unsafe path")
            if info.is_dir() or any(p.startswith((".", "__MACOSX")) for p in parts):
                continue
            if PurePosixPath(name).suffix.lower() not in exts:
                continue
            if info.file_size > MAX_ENTRY_BYTES or info.file_size > MAX_RATIO * max(info.compress_size, 1) + 4096:
                raise UnsafeArchiveError(f"zip entry {name!r} unpacks to {info.file_size} bytes, over the limit")
            out.append(info)
    return sorted(out, key=lambda i: natural_key(i.filename))


def read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """One entry's bytes, refusing an entry that unpacks to more than it declared."""
    with zf.open(info) as f:
        data = f.read(MAX_ENTRY_BYTES + 1)
    if len(data) > MAX_ENTRY_BYTES:
        raise UnsafeArchiveError(f"zip entry {info.filename!r} is larger than it claims")
    return data


def is_zip(path: str | Path) -> bool:
    p = Path(path)
    return p.is_file() and zipfile.is_zipfile(p)
