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


# An object whose warped mask would lose more than this share of its mass to `drop_uncovered` keeps it.
# Measured with v2 (docs/TRAINING.md, experiment O): without a cap the fast-motion composites lost 0.10 J&F
# (the flow fails on the objects themselves there), with 0.3 they lost 0.03, with 0.15 they are level, and
# 0.15 gained the most on the other composites.
UNCOVERED_CAP = 0.15


def visible_before(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """backward flow (H,W,2) of the current frame, forward flow (H,W,2) of the previous one -> (H,W)
    float32: 1 where the two agree, 0 where they do not, which is where a pixel of the current frame
    was hidden in the previous one (disoccluded: an object that moved away uncovered it) or where the
    flow failed.

    The usual forward-backward check (Sundaram et al., ECCV 2010), in pixels:
    |b + f(x + b)|^2 <= 0.01 (|b|^2 + |f(x + b)|^2) + 0.5."""
    h, w = backward.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    ahead = cv2.remap(forward, xs + backward[..., 0], ys + backward[..., 1], cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REPLICATE)  # (H,W,2): the forward flow where each pixel came from
    gap = ((backward + ahead) ** 2).sum(-1)
    return (gap <= 0.01 * ((backward ** 2).sum(-1) + (ahead ** 2).sum(-1)) + 0.5).astype(np.float32)


def drop_uncovered(warped: torch.Tensor, seen: torch.Tensor, cap: float = UNCOVERED_CAP) -> torch.Tensor:
    """warped masks (K,H,W), `visible_before` (H,W) -> (K,H,W): each mask without the pixels that were not
    visible in the previous frame, unless that would take more than `cap` of its mass.

    A backward warp gives an uncovered pixel the label of whatever covered it, so an object that moves
    off another leaves its mask on what it uncovers, and the network, which sees the warped mask, then
    follows the wrong object. Where an object would lose much of its mask, the check failed on the
    object itself (fast motion, blur), not on a strip it uncovered, and the mask is kept as warped."""
    if warped.shape[0] == 0:
        return warped
    hidden = warped * (1 - seen)  # (K,H,W)
    small = hidden.flatten(1).sum(1) <= cap * warped.flatten(1).sum(1)  # (K,)
    return torch.where(small[:, None, None], warped - hidden, warped)


def carry(masks: torch.Tensor, backward: np.ndarray, forward: np.ndarray | None = None) -> torch.Tensor:
    """The previous masks (K,H,W) carried to the current frame: warped by the backward flow (H,W,2) and,
    given the forward flow (H,W,2), without what an object uncovered (`drop_uncovered`). The tracker and
    training both carry masks this way, so that a network learns on the inputs it gets."""
    warped = warp_masks(masks, backward)
    if forward is None:
        return warped
    return drop_uncovered(warped, torch.from_numpy(visible_before(backward, forward)).to(warped.device))
