"""Per-video inference: one network pass per frame for all objects, O(1) memory in video length."""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .errors import TrackerInputError
from .flow import FlowEstimator, make_flow, warp_masks
from .network import AGSSVOS, Reference, normalize_objects

MAX_OBJECTS = 255


def network_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """Input (H,W) -> network (h,w): long side scaled to `long_side`, both multiples of 32."""
    if long_side < 32 or long_side % 32:
        raise TrackerInputError(f"long side must be a positive multiple of 32, got {long_side}")
    scale = long_side / max(height, width)
    return (max(32, int(round(height * scale / 32)) * 32), max(32, int(round(width * scale / 32)) * 32))


def resize_masks(labels: np.ndarray, ids: list[int], size: tuple[int, int]) -> np.ndarray:
    """Label map (H,W) -> soft masks (K,h,w) float32 for the given ids (area-averaged)."""
    h, w = size
    out = np.empty((len(ids), h, w), np.float32)
    for i, obj in enumerate(ids):
        out[i] = cv2.resize((labels == obj).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    return out


@dataclass
class _Group:
    """Objects whose first mask was given on the same frame share one reference encoding."""

    ref: Reference
    start: int  # index of the group's first object in the tracker's object list
    stop: int


class Tracker:
    """Follows any number of objects through one video, frame by frame.

        tracker = Tracker(model, flow="dis")
        labels = tracker.step(frame_rgb_uint8, new_masks=first_labels)   # (H,W) uint8 object ids
        labels = tracker.step(next_frame)

    `new_masks` is a label map (H,W) of objects that start on this frame (0 is background). Ids are
    kept as given; an id that is already tracked is ignored there (its first mask is the one used).
    Only the previous frame's small greyscale image and soft masks are kept between steps.
    """

    def __init__(self, model: AGSSVOS, flow: str | FlowEstimator = "dis", long_side: int | None = None):
        self.model = model
        self.flow = make_flow(flow) if isinstance(flow, str) else flow
        self.long_side = long_side or model.config.long_side
        network_size(32, 32, self.long_side)  # validates long_side early
        self.ids: list[int] = []
        self._groups: list[_Group] = []
        self._prev_probs: torch.Tensor | None = None  # (K,h,w) normalised soft masks
        self._prev_gray: np.ndarray | None = None
        self.input_size: tuple[int, int] | None = None
        self.net_size: tuple[int, int] | None = None
        self.frames_seen = 0
        self.timings: dict[str, float] = {"flow": 0.0, "network": 0.0}  # seconds, last step

    @property
    def num_objects(self) -> int:
        return len(self.ids)

    def _check_frame(self, frame: np.ndarray) -> None:
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise TrackerInputError("frame must be an RGB uint8 array of shape (H,W,3)")
        if self.input_size is None:
            self.input_size = frame.shape[:2]
            self.net_size = network_size(*self.input_size, self.long_side)
        elif frame.shape[:2] != self.input_size:
            raise TrackerInputError(f"frame {self.frames_seen} is {frame.shape[1]}x{frame.shape[0]}, earlier frames "
                                    f"were {self.input_size[1]}x{self.input_size[0]}")

    def _new_ids(self, new_masks: np.ndarray | None) -> list[int]:
        if new_masks is None:
            return []
        if new_masks.shape != self.input_size:
            raise TrackerInputError(f"mask is {new_masks.shape[1]}x{new_masks.shape[0]}, frame is "
                                    f"{self.input_size[1]}x{self.input_size[0]}")
        ids = [int(i) for i in np.unique(new_masks) if i != 0 and int(i) not in self.ids]
        if len(self.ids) + len(ids) > MAX_OBJECTS:
            raise TrackerInputError(f"at most {MAX_OBJECTS} objects can be tracked")
        if any(i > MAX_OBJECTS for i in ids):
            raise TrackerInputError(f"object ids must be 1..{MAX_OBJECTS}")
        return ids

    @torch.no_grad()
    def step(self, frame: np.ndarray, new_masks: np.ndarray | None = None) -> np.ndarray:
        """frame (H,W,3) uint8 RGB, new_masks (H,W) int ids or None -> labels (H,W) uint8."""
        self._check_frame(frame)
        new_ids = self._new_ids(new_masks)
        h, w = self.net_size
        small = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        image = None

        probs = self._prev_probs
        t_flow = t0 = time.perf_counter()
        if probs is not None and probs.shape[0]:
            image = self.model.preprocess(small)
            flow = self.flow(gray, self._prev_gray)
            t_flow = time.perf_counter()
            warped = warp_masks(probs, flow)
            raw = torch.cat([self.model.object_probs(image, warped[g.start:g.stop], g.ref) for g in self._groups])
            probs = normalize_objects(raw)

        labels = self._labels(probs)
        if new_ids:
            image = self.model.preprocess(small) if image is None else image
            new = torch.from_numpy(resize_masks(new_masks, new_ids, (h, w))).to(self.model.device)
            self._groups.append(_Group(self.model.encode_reference(image, new), len(self.ids),
                                       len(self.ids) + len(new_ids)))
            if probs is not None and probs.shape[0]:
                # Given masks win over predictions where they overlap.
                probs = torch.cat([probs * (1 - new.max(dim=0).values), new])
            else:
                probs = new
            self.ids += new_ids
            given = np.isin(new_masks, new_ids)
            labels[given] = new_masks[given]

        self._prev_probs, self._prev_gray = probs, gray
        self.frames_seen += 1
        self.timings = {"flow": t_flow - t0, "network": time.perf_counter() - t_flow}
        return labels

    def _labels(self, probs: torch.Tensor | None) -> np.ndarray:
        """Soft masks (K,h,w) -> label map (H,W) at input size: argmax over background and objects."""
        H, W = self.input_size
        if probs is None or probs.shape[0] == 0:
            return np.zeros((H, W), np.uint8)
        full = F.interpolate(probs.unsqueeze(0), size=(H, W), mode="bilinear", align_corners=False)[0]
        bg = 1 - full.sum(dim=0, keepdim=True)
        idx = torch.cat([bg, full]).argmax(dim=0).cpu().numpy()
        lut = np.array([0] + self.ids, np.uint8)
        return lut[idx]
