"""Inputs as single files: a folder of frames or masks is sent as a zip of its files."""

from __future__ import annotations

import zipfile
from pathlib import Path


def as_file(path: Path, tmp: Path) -> Path:
    """A folder becomes a zip of its files (stored, not compressed: frames are compressed already)."""
    if not path.is_dir():
        return path
    out = tmp / f"{path.name or 'frames'}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
            zf.write(f, f.name)
    return out
