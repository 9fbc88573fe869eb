"""Decoding of videos and frames, mask files, palettes and overlays. Knows nothing of Redis/HTTP."""

from .errors import MediaError, UnsafeArchiveError, UnsupportedFormatError
from .frames import Frame, FrameSource, open_frames
from .masks import MaskSet, davis_palette, encode_label_png, read_label_png, read_masks, write_label_png

__all__ = [
    "Frame", "FrameSource", "MaskSet", "MediaError", "UnsafeArchiveError", "UnsupportedFormatError",
    "davis_palette", "encode_label_png", "open_frames", "read_label_png", "read_masks", "write_label_png",
]
