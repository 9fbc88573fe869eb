"""Overlay video: frames with each object's mask tinted in its palette colour and outlined."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import MediaError
from .masks import davis_palette


class OverlayWriter:
    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], palette: bytes | None = None,
                 alpha: float = 0.5):
        h, w = size
        self.path = Path(path)
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), fps or 24.0, (w, h))
        if not self._writer.isOpened():
            raise MediaError(f"{self.path}: cannot write a video here")
        self._colors = np.frombuffer(palette or davis_palette(), np.uint8).reshape(256, 3)[:, ::-1]  # BGR
        self.alpha = alpha

    def write(self, rgb: np.ndarray, labels: np.ndarray) -> None:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        fg = labels > 0
        tint = self._colors[labels]
        bgr[fg] = (bgr[fg] * (1 - self.alpha) + tint[fg] * self.alpha).astype(np.uint8)
        edges = cv2.morphologyEx(labels, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        bgr[edges & fg] = tint[edges & fg]
        self._writer.write(bgr)

    def close(self) -> None:
        self._writer.release()
