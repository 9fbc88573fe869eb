"""Optical flow estimators and backward warping of soft masks.

Flow is *backward*: for each pixel of the current frame, where it was in the previous frame. A
previous soft mask is then pulled forward with bilinear sampling; pixels that come from outside the
frame become background. The paper used FlowNet2-C; any estimator with this interface plugs in.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .options import FLOW_NAMES


class FlowEstimator(Protocol):
    name: str

    def __call__(self, cur_gray: np.ndarray, prev_gray: np.ndarray) -> np.ndarray:
        """cur, prev (H,W) uint8 -> backward flow (H,W,2) float32 as (dx, dy)."""
        ...


class DISFlow:
    name = "dis"

    def __init__(self, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM):
        self._dis = cv2.DISOpticalFlow_create(preset)  # stateful: one per tracker

    def __call__(self, cur_gray: np.ndarray, prev_gray: np.ndarray) -> np.ndarray:
        return self._dis.calc(cur_gray, prev_gray, None)


class FarnebackFlow:
    name = "farneback"

    def __call__(self, cur_gray: np.ndarray, prev_gray: np.ndarray) -> np.ndarray:
        return cv2.calcOpticalFlowFarneback(cur_gray, prev_gray, None, 0.5, 4, 21, 3, 5, 1.1, 0)


class NoFlow:
    """Identity warp: the previous masks are used where they were."""

    name = "none"

    def __call__(self, cur_gray: np.ndarray, prev_gray: np.ndarray) -> np.ndarray:
        return np.zeros((*cur_gray.shape, 2), np.float32)


def make_flow(name: str) -> FlowEstimator:
    if name == "dis":
        return DISFlow()
    if name == "farneback":
        return FarnebackFlow()
    if name == "none":
        return NoFlow()
    raise ValueError(f"unknown flow {name!r}; choose one of {', '.join(FLOW_NAMES)}")


def warp_masks(masks: torch.Tensor, flow: np.ndarray) -> torch.Tensor:
    """Backward-warp masks (K,H,W) with flow (H,W,2) -> (K,H,W); out-of-frame samples are 0."""
    k, h, w = masks.shape
    if k == 0:
        return masks
    f = torch.from_numpy(flow).to(masks.device, torch.float32)
    ys, xs = torch.meshgrid(torch.arange(h, device=masks.device, dtype=torch.float32),
                            torch.arange(w, device=masks.device, dtype=torch.float32), indexing="ij")
    gx = (xs + f[..., 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + f[..., 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1).unsqueeze(0).expand(k, h, w, 2)
    out = F.grid_sample(masks.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.squeeze(1)
