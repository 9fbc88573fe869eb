"""The flow-only baseline: propagate the given masks with optical flow alone, no network.

It has the network's interface, so the Tracker runs it unchanged: each frame's masks are the previous
soft masks warped by the flow, normalised across objects. Every quality figure is set against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .network import Reference
from .options import FLOW_ONLY


@dataclass(frozen=True)
class FlowOnlyConfig:
    long_side: int = 864
    backbone: str = FLOW_ONLY


class FlowOnlyModel(nn.Module):
    def __init__(self, long_side: int = 864):
        super().__init__()
        self.config = FlowOnlyConfig(long_side)
        self._anchor = nn.Parameter(torch.zeros(0), requires_grad=False)  # carries the device

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """Nothing of the image is used; an empty (1,3,H,W) placeholder keeps the interface."""
        return torch.empty(1, 3, *rgb.shape[:2], device=self.device)

    def encode_reference(self, image0: torch.Tensor, masks0: torch.Tensor) -> Reference:
        return Reference(masks0.new_zeros(1, 0, 1, 1))

    def object_probs(self, image: torch.Tensor, warped_prev: torch.Tensor, ref: Reference) -> torch.Tensor:
        return warped_prev.clamp(0, 1)
