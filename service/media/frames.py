"""Streaming frame sources: a video file, a folder of images, or a zip of images.

Frames are decoded one at a time while iterating, so memory does not grow with video length.
"""

from __future__ import annotations

import contextlib
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
from PIL import Image

from .archive import is_zip, natural_key, read_entry, zip_members
from .errors import MediaError, UnsupportedFormatError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_EXTS = {".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg"}


@dataclass
class Frame:
    index: int
    name: str  # file stem for image frames, zero-padded index for video frames
    rgb: np.ndarray  # (H,W,3) uint8


def decode_image(data: bytes, what: str) -> np.ndarray:
    """Encoded image bytes -> RGB uint8 (H,W,3)."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if arr is None:
        raise MediaError(f"{what}: cannot decode image")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


class FrameSource:
    """Frames of one video. `count` is exact for image frames and the container's claim for videos.

    The first frame is decoded on open, so a source that opens has at least one good frame and a
    known `size` (H,W).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise MediaError(f"{self.path}: no such file or folder")
        self.names: list[str] | None = None
        self._members: list = []
        if self.path.is_dir():
            self.kind = "folder"
            files = [p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")]
            self._members = sorted(files, key=lambda p: natural_key(p.name))
            self.names = [p.stem for p in self._members]
            self.count = len(self._members)
        elif self.path.suffix.lower() == ".zip" and not is_zip(self.path):
            # The declared container decides: a zip that does not read as one is refused, never decoded
            # some other way (a cut zip of JPEGs reads as motion JPEG).
            raise MediaError(f"{self.path.name}: not a readable zip archive (truncated or corrupt?)")
        elif is_zip(self.path):
            self.kind = "zip"
            self._members = zip_members(self.path, IMAGE_EXTS)
            self.names = [PurePosixPath(i.filename).stem for i in self._members]
            self.count = len(self._members)
        elif self.path.suffix.lower() in IMAGE_EXTS:
            raise UnsupportedFormatError(f"{self.path.name}: a single image is not a video; give a folder or zip "
                                         "of frames")
        else:
            self.kind = "video"
            cap = cv2.VideoCapture(str(self.path))
            ok = cap.isOpened()
            self.count = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0) if ok else 0
            self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0) if ok else 0.0
            cap.release()
            if not ok:
                if self.path.suffix.lower() in VIDEO_EXTS:
                    raise MediaError(f"{self.path.name}: video cannot be decoded (truncated or corrupt?)")
                raise UnsupportedFormatError(f"{self.path.name}: not a video, zip of frames or folder that can be "
                                             "decoded")
        if self.names is not None and not self.names:
            raise MediaError(f"{self.path.name}: contains no image frames ({', '.join(sorted(IMAGE_EXTS))})")
        if self.names is not None and len(set(self.names)) != len(self.names):
            raise MediaError(f"{self.path.name}: two frames share a name")
        first = next(iter(self), None)
        if first is None:
            raise MediaError(f"{self.path.name}: no frame could be decoded")
        self.size: tuple[int, int] = first.rgb.shape[:2]
        self.fps = getattr(self, "fps", 0.0) or 24.0

    def __iter__(self) -> Iterator[Frame]:
        return self.iter_from(0)

    def verify(self) -> int:
        """Check the whole input before any work is done on it; -> the exact frame count.

        A video is decoded to the end: fewer frames than its container claims means it was cut short. Image
        frames are checked by their headers (no decoding): each must be an image of the first frame's size.
        """
        if self.kind == "video":
            n = sum(1 for _ in self)  # also refuses frames of another size
            if self.count and n < self.count:
                raise MediaError(f"{self.path.name}: the container claims {self.count} frames but only {n} decode "
                                 "(truncated?)")
            return n
        h, w = self.size
        with contextlib.ExitStack() as stack:
            zf = stack.enter_context(zipfile.ZipFile(self.path)) if self.kind == "zip" else None
            for i, m in enumerate(self._members):
                try:
                    data = read_entry(zf, m) if zf else m.read_bytes()
                    with Image.open(io.BytesIO(data)) as img:
                        size = img.size
                except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
                    raise MediaError(f"frame {self.names[i]}: not a readable image ({type(e).__name__})") from None
                if size != (w, h):
                    raise MediaError(f"frame {self.names[i]} is {size[0]}x{size[1]}, the first frame is {w}x{h}")
        return self.count

    def iter_from(self, start: int) -> Iterator[Frame]:
        """Frames from index `start` on; earlier image frames are not read, earlier video frames are
        grabbed without being converted."""
        if self.kind == "video":
            yield from self._iter_video(start)
        elif self.kind == "folder":
            for i, p in enumerate(self._members[start:], start):
                try:
                    data = p.read_bytes()
                except OSError as e:
                    raise MediaError(f"{p.name}: cannot read ({e.strerror})") from None
                yield self._checked(Frame(i, self.names[i], decode_image(data, p.name)))
        else:
            with zipfile.ZipFile(self.path) as zf:
                for i, info in enumerate(self._members[start:], start):
                    data = read_entry(zf, info)
                    yield self._checked(Frame(i, self.names[i], decode_image(data, info.filename)))

    def _iter_video(self, start: int = 0) -> Iterator[Frame]:
        cap = cv2.VideoCapture(str(self.path))
        try:
            i = 0
            while i < start:
                if not cap.grab():
                    return
                i += 1
            while True:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    return
                yield self._checked(Frame(i, f"{i:05d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
                i += 1
        finally:
            cap.release()

    def _checked(self, frame: Frame) -> Frame:
        size = getattr(self, "size", None)
        if size is not None and frame.rgb.shape[:2] != size:
            raise MediaError(f"frame {frame.name} is {frame.rgb.shape[1]}x{frame.rgb.shape[0]}, the first frame is "
                             f"{size[1]}x{size[0]}")
        return frame


def open_frames(path: str | Path) -> FrameSource:
    """Open a video file, a folder of frames or a zip of frames (raises MediaError subclasses)."""
    return FrameSource(path)
