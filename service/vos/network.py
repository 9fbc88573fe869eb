"""The AGSS-VOS network (Lin, Qi, Jia, ICCV 2019), as in DESIGN.md section 2.

Module and parameter names match the official `networks/agssvos.py` (`Encoder.res2`, `Decoder.RF3`,
...) so that the authors' checkpoints load with strict keys. One deliberate difference in how the work
is arranged, not in the numbers: the image stem `conv1(image)` is computed once per frame and shared
by the full pass and every object pass; only the mask branch `conv1_p` runs per object.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import effnet
from .backbone import RESNETS, ResNet
from .options import PRESET_NAMES

EFFNET = "efficientnet_lite0"  # the default model's encoder
EFFNETS = tuple(effnet.VARIANTS)
BACKBONES = (*RESNETS, *EFFNETS)


def encoder_channels(backbone: str) -> tuple[int, int, int, int]:
    """Channels of the 1/4, 1/8, 1/16, 1/32 features."""
    return effnet.VARIANTS[backbone].channels if backbone in EFFNETS else RESNETS[backbone].channels

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROB_EPS = 1e-7
# Objects per batch in the instance-specific branch. On CPU a batch of one is fastest (measured at
# 864x480 with 4 objects: 2.6 s per frame with 1, 3.9 s with 16: large batched activations at 1/4
# resolution thrash the caches); on a GPU batching is what makes the branch nearly free.
OBJECT_CHUNK = {"cpu": 1, "cuda": 16}


@dataclass(frozen=True)
class AGSSConfig:
    """Architecture and inference size. `resnet50` / width 256 is the official network."""

    backbone: str = "resnet50"
    width: int = 256
    long_side: int = 864  # default network input long side, a multiple of 32
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)
    # Each object's branch also sees the other objects' warped masks (`conv1_o`), so that where one
    # object lies is evidence against another being there (hidden behind it, or gone); not in the paper.
    others: bool = False
    # Each object's branch also sees how much each pixel's 1/16 feature looks like the object's pixels in
    # the reference frame, and like the pixels that were not the object (`match_maps`, into the attention
    # through `match_in`): an identity cue by appearance, which the warped masks alone do not give, so that
    # a mask does not pass to another object when they cross; not in the paper.
    match: bool = False

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {sorted(BACKBONES)}")
        if self.width < 1 or self.long_side < 32 or self.long_side % 32:
            raise ValueError("width must be positive and long_side a positive multiple of 32")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AGSSConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        d = dict(d)
        for k in ("mean", "std"):
            if k in d:
                d[k] = tuple(float(v) for v in d[k])
        return cls(**d)


# The options that add an input to the object branch, each through a layer that starts at zero.
OPTIONAL_INPUTS = ("others", "match")

PRESETS: dict[str, AGSSConfig] = {
    "resnet50": AGSSConfig("resnet50", 256, 864),
    "resnet34": AGSSConfig("resnet34", 128, 640),
    "resnet18": AGSSConfig("resnet18", 64, 512),
    # The small default model: ImageNet EfficientNet-Lite0 inputs are scaled to [-1, 1].
    "lite": AGSSConfig(EFFNET, 64, 512, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "lite2": AGSSConfig("efficientnet_lite2", 64, 512, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
assert tuple(PRESETS) == PRESET_NAMES, "service/vos/options.py names the presets for torch-free callers"


@dataclass
class Reference:
    """Encoding of a reference frame with its merged masks: the 1/32 feature `r5` (1,C5,H/32,W/32).
    With `AGSSConfig.match` also the 1/16 feature `feats` (1,C4,H/16,W/16), unit length per pixel, and
    each object's mask at that scale, `masks` (K,H/16,W/16); None otherwise."""

    r5: torch.Tensor
    feats: torch.Tensor | None = None
    masks: torch.Tensor | None = None

    def select(self, rows: list[int]) -> Reference:
        """The reference of some of its objects (rows of `masks`): r5 and feats, encoded with all of
        them, stay as they are, as the instance-agnostic input of an object that leaves a group does."""
        return self if self.masks is None else Reference(self.r5, self.feats, self.masks[rows])


class SegmentationModel(Protocol):
    """What the Tracker needs of a model: the AGSS-VOS network and the flow-only baseline both are one."""

    @property
    def config(self) -> AGSSConfig | object:  # has at least `long_side` and `backbone`
        ...

    @property
    def device(self) -> torch.device:
        ...

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """(H,W,3) uint8 RGB -> (1,3,H,W) network input on the model's device."""
        ...

    def encode_reference(self, image0: torch.Tensor, masks0: torch.Tensor) -> Reference:
        """(1,3,H,W), (K,H,W) in [0,1] -> the reference encoding of those objects."""
        ...

    def object_probs(self, image: torch.Tensor, warped_prev: torch.Tensor, ref: Reference) -> torch.Tensor:
        """(1,3,H,W), (K,H,W) -> per-object foreground probabilities (K,H,W), not yet normalised."""
        ...


def _conv(cin: int, cout: int, k: int | tuple[int, int] = 3, stride: int = 1) -> nn.Conv2d:
    kh, kw = (k, k) if isinstance(k, int) else k
    return nn.Conv2d(cin, cout, (kh, kw), stride, (kh // 2, kw // 2), bias=True)


def _attention(c2: int, width: int) -> nn.Sequential:
    return nn.Sequential(_conv(c2 + 1, width, 1), nn.ReLU(), _conv(width, width, 3), nn.ReLU(),
                         _conv(width, width, 3, stride=2))


class _EncoderBase(nn.Module):
    """What both encoders share: the object pass and the full pass built on `_res2` and `_deep`."""

    def full(self, stem: torch.Tensor, merged: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """stem (N,C,H/2,W/2), merged mask (N,1,H,W) -> r5, r4, r3, r2 (1/32, 1/16, 1/8, 1/4)."""
        r2 = self._res2(stem, merged)
        r3, r4, r5 = self._deep(r2)
        return r5, r4, r3, r2

    def _add_inputs(self, cfg: AGSSConfig) -> None:
        """The optional inputs of the object branch, each starting at zero so that a model trained
        without it starts from the same outputs: with `cfg.others`, `conv1_o` (the other objects' mask
        into the stem, shaped as `conv1_p`); with `cfg.match`, `match_in` (the two `match_maps` into the
        attention's first layer)."""
        self.conv1_o = self.match_in = None
        if cfg.others:
            p = self.conv1_p
            self.conv1_o = nn.Conv2d(1, p.out_channels, p.kernel_size, p.stride, p.padding, bias=False)
            nn.init.zeros_(self.conv1_o.weight)
        if cfg.match:
            self.match_in = nn.Conv2d(2, cfg.width, 1, bias=False)
            nn.init.zeros_(self.match_in.weight)

    def objects(self, stem: torch.Tensor, masks: torch.Tensor,
                match: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """stem (1,C,H/2,W/2), masks (K,1,H,W) -> r2 (K,C2,H/4,W/4), attention (K,width,H/8,W/8).
        With `conv1_o`, masks is (K,2,H,W): each object's mask, then the other objects' (`other_objects`).
        With `match_in`, match (K,2,H/16,W/16) are the object's `match_maps`."""
        if self.conv1_o is not None:
            stem = stem + self.conv1_o(masks[:, 1:2])  # (K,C,H/2,W/2)
            masks = masks[:, :1]
        r2 = self._res2(stem, masks)  # stem broadcasts over the K objects
        m = F.interpolate(masks, size=r2.shape[-2:], mode="bilinear", align_corners=True)
        a = self.atn[0](torch.cat([r2, m], dim=1))  # (K,width,H/4,W/4)
        if self.match_in is not None:
            a = a + self.match_in(F.interpolate(match, size=r2.shape[-2:], mode="bilinear", align_corners=False))
        return r2, self.atn[1:](a)


class Encoder(_EncoderBase):
    """Siamese ResNet encoder with the mask branch `conv1_p` and the attention generator `atn`."""

    def __init__(self, cfg: AGSSConfig):
        super().__init__()
        resnet = ResNet(cfg.backbone)
        self.conv1_p = nn.Conv2d(1, 64, 7, 2, 3, bias=True)
        self.conv1, self.bn1 = resnet.conv1, resnet.bn1
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.res2, self.res3, self.res4, self.res5 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        self.atn = _attention(resnet.spec.channels[0], cfg.width)
        self._add_inputs(cfg)

    def stem(self, image: torch.Tensor) -> torch.Tensor:
        """image (N,3,H,W) -> conv1(image) (N,64,H/2,W/2), shared by the full and object passes."""
        return self.conv1(image)

    def _res2(self, stem: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = stem + self.conv1_p(mask)
        return self.res2(self.maxpool(self.relu(self.bn1(h))))

    def _deep(self, r2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r3 = self.res3(r2)
        r4 = self.res4(r3)
        return r3, r4, self.res5(r4)


class EffEncoder(_EncoderBase):
    """The same AGSS encoder on EfficientNet-Lite0 or -Lite2 (the small models); the mask branch
    `conv1_p` (3x3/2, 1 -> 32) is added to the stem convolution before its batch norm."""

    def __init__(self, cfg: AGSSConfig):
        super().__init__()
        net = effnet.EfficientNetLite(cfg.backbone)
        self.taps = net.variant.taps
        self.conv1_p = nn.Conv2d(1, effnet.STEM_CHANNELS, 3, 2, 1, bias=True)
        self.conv_stem, self.bn0, self.blocks = net._conv_stem, net._bn0, net._blocks
        self.atn = _attention(net.variant.channels[0], cfg.width)
        self._add_inputs(cfg)

    def stem(self, image: torch.Tensor) -> torch.Tensor:
        return self.conv_stem(image)

    def _res2(self, stem: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self.bn0(stem + self.conv1_p(mask)))
        for b in self.blocks[: self.taps[0] + 1]:
            h = b(h)
        return h

    def _deep(self, r2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outs, h = [], r2
        for start, stop in zip(self.taps[:-1], self.taps[1:], strict=True):
            for b in self.blocks[start + 1: stop + 1]:
                h = b(h)
            outs.append(h)
        return outs[0], outs[1], outs[2]


class GlobalConv(nn.Module):
    """GC block: (kx1 then 1xk) + (1xk then kx1)."""

    def __init__(self, cin: int, cout: int, k: int = 7):
        super().__init__()
        self.conv_l1 = _conv(cin, cout, (k, 1))
        self.conv_l2 = _conv(cout, cout, (1, k))
        self.conv_r1 = _conv(cin, cout, (1, k))
        self.conv_r2 = _conv(cout, cout, (k, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_l2(self.conv_l1(x)) + self.conv_r2(self.conv_r1(x))


class Refine(nn.Module):
    """Refinement block: fuse a skip feature `f` with the coarser map `pm` (upsampled x2)."""

    def __init__(self, cin: int, width: int):
        super().__init__()
        self.convFS1 = _conv(cin, width)
        self.convFS2 = _conv(width, width)
        self.convFS3 = _conv(width, width)
        self.convMM1 = _conv(width, width)
        self.convMM2 = _conv(width, width)

    def forward(self, f: torch.Tensor, pm: torch.Tensor) -> torch.Tensor:
        s = self.convFS1(f)
        s = s + self.convFS3(F.relu(self.convFS2(F.relu(s))))
        if pm.shape[-2:] != s.shape[-2:]:
            pm = F.interpolate(pm, size=s.shape[-2:], mode="bilinear", align_corners=False)
        m = s + pm
        return m + self.convMM2(F.relu(self.convMM1(F.relu(m))))


class Decoder(nn.Module):
    def __init__(self, cfg: AGSSConfig):
        super().__init__()
        c2, c3, c4, c5 = encoder_channels(cfg.backbone)
        w = cfg.width
        self.GC = GlobalConv(2 * c5, w)
        self.convG1 = _conv(w, w)
        self.convG2 = _conv(w, w)
        self.RF4 = Refine(c4, w)
        self.RF3 = Refine(c3, w)
        self.RF2 = Refine(c2, w)
        self.pred2 = _conv(w, 2)

    def agnostic(self, r5: torch.Tensor, ref_r5: torch.Tensor, r4: torch.Tensor, r3: torch.Tensor) -> torch.Tensor:
        """Instance-agnostic map m3 (N,width,H/8,W/8), computed once per frame."""
        x = self.GC(torch.cat([r5, ref_r5.expand(r5.shape[0], -1, -1, -1)], dim=1))
        m5 = x + self.convG2(F.relu(self.convG1(F.relu(x))))
        return self.RF3(r3, self.RF4(r4, m5))

    def specific(self, m3: torch.Tensor, atn: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
        """m3 (1,w,H/8,W/8), atn (K,w,H/8,W/8), r2 (K,C2,H/4,W/4) -> foreground probability (K,H,W)."""
        m2 = self.RF2(r2, m3 * atn)
        logits = self.pred2(F.relu(m2))
        logits = F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)
        # In float32 whatever the autocast: CPU autocast leaves softmax in bfloat16, whose 1 - 2^-9 rounds
        # saturated pixels to exactly 1, and normalize_objects' odds p / (1 - p) then divide by zero (NaN).
        return F.softmax(logits, dim=1, dtype=torch.float32)[:, 1]


def other_objects(masks: torch.Tensor) -> torch.Tensor:
    """masks (K,H,W) -> (K,H,W): at each pixel, the largest of the other objects' masks (0 for K=1).

    From the two largest values per pixel (a zero row stands in for a missing second object), so it is
    one TopK in ONNX and ties come out right: an object tied with the maximum sees the maximum."""
    k = masks.shape[0]
    padded = torch.cat([masks, masks.new_zeros(1, *masks.shape[1:])])  # (K+1,H,W)
    top, idx = padded.topk(2, dim=0)  # (2,H,W) each
    own = torch.arange(k, device=masks.device).view(k, 1, 1)
    return torch.where(idx[0:1] == own, top[1:2], top[0:1])


def reference_masks(masks0: torch.Tensor) -> torch.Tensor:
    """masks0 (K,H,W) -> each object's share of every 1/16 cell (K,H/16,W/16): the `Reference.masks`."""
    return F.avg_pool2d(masks0[None], 16)[0]


def match_maps(feats: torch.Tensor, ref_feats: torch.Tensor, ref_masks: torch.Tensor) -> torch.Tensor:
    """feats (1,C4,h,w) of the frame, the reference's `feats` (1,C4,hr,wr) and `masks` (K,hr,wr) -> (K,2,h,w):
    for each object and pixel, the largest cosine similarity to the object's pixels in the reference
    frame, then to the pixels that were not the object (the background and the other objects).

    A reference pixel is the object's to the degree of its mask scaled so that the object's largest value
    is 1 (an object smaller than one cell still has one); the others are pushed out of the maximum by
    2 per unit of mask, which is more than any difference of cosines."""
    k = ref_masks.shape[0]
    f = F.normalize(feats, dim=1).flatten(2)[0]  # (C4,h*w)
    sim = ref_feats.flatten(2)[0].transpose(0, 1) @ f  # (hr*wr,h*w)
    m = ref_masks.flatten(1)  # (K,hr*wr)
    own = m / m.amax(dim=1, keepdim=True).clamp_min(1e-6)
    fg = (sim[None] + 2 * (own[:, :, None] - 1)).amax(dim=1)  # (K,h*w)
    bg = (sim[None] - 2 * m[:, :, None]).amax(dim=1)
    return torch.stack([fg, bg], dim=1).view(k, 2, *feats.shape[-2:])


def object_inputs(warped: torch.Tensor, others: bool) -> torch.Tensor:
    """warped (K,H,W) -> the object branch's masks: (K,1,H,W), or (K,2,H,W) with `others`
    (`AGSSConfig.others`: each object's mask, then `other_objects`)."""
    masks = warped.unsqueeze(1)
    return torch.cat([masks, other_objects(warped).unsqueeze(1)], dim=1) if others else masks


def normalize_objects(probs: torch.Tensor, differentiable: bool = False) -> torch.Tensor:
    """Soft aggregation across objects: probs (K,H,W) -> (K,H,W), each pixel summing to at most 1.

    Background is 1 - max_k p_k; every map is turned into odds and divided by the sum of odds.
    The official clamp to [1e-7, 1-1e-7] has no gradient outside that range, so a training run that
    pushes a probability below 1e-7 could never bring it back; with `differentiable` the same squeeze
    into the range is affine (values differ by at most 1e-7).
    """
    if probs.shape[0] == 0:
        return probs
    bg = 1 - probs.max(dim=0, keepdim=True).values
    allp = torch.cat([bg, probs], dim=0)
    allp = allp * (1 - 2 * PROB_EPS) + PROB_EPS if differentiable else allp.clamp(PROB_EPS, 1 - PROB_EPS)
    odds = allp / (1 - allp)
    return (odds / odds.sum(dim=0, keepdim=True))[1:]


class AGSSVOS(nn.Module):
    """The whole network. Public API (DESIGN.md section 3):

        ref = model.encode_reference(image0 (1,3,H,W), masks0 (K,H,W))
        probs = model(image_t (1,3,H,W), warped_prev (K,H,W), ref)   # (K,H,W), normalised
    """

    def __init__(self, cfg: AGSSConfig | None = None):
        super().__init__()
        self.config = cfg or AGSSConfig()
        self.Encoder = EffEncoder(self.config) if self.config.backbone in EFFNETS else Encoder(self.config)
        self.Decoder = Decoder(self.config)

    @property
    def device(self) -> torch.device:
        return self.Encoder.conv1_p.weight.device

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """rgb uint8 (H,W,3) -> normalised float tensor (1,3,H,W) on the model's device."""
        x = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device)
        x = x.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        mean = torch.tensor(self.config.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.config.std, device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def encode_reference(self, image0: torch.Tensor, masks0: torch.Tensor) -> Reference:
        """image0 (1,3,H,W) normalised, masks0 (K,H,W) in [0,1] -> Reference (r5 of the merged masks)."""
        _check_sizes(image0, masks0)
        merged = masks0.max(dim=0).values[None, None] if masks0.shape[0] else image0.new_zeros(
            1, 1, *image0.shape[-2:])
        r5, r4 = self.Encoder.full(self.Encoder.stem(image0), merged)[:2]
        if not self.config.match:
            return Reference(r5)
        return Reference(r5, F.normalize(r4, dim=1), reference_masks(masks0))

    def object_probs(self, image: torch.Tensor, warped_prev: torch.Tensor, ref: Reference) -> torch.Tensor:
        """Per-object foreground probabilities before the normalisation across objects: (K,H,W)."""
        _check_sizes(image, warped_prev)
        k = warped_prev.shape[0]
        if k == 0:
            return warped_prev
        stem = self.Encoder.stem(image)
        masks = object_inputs(warped_prev, self.config.others)  # (K,1,H,W) or (K,2,H,W)
        r5, r4, r3, _ = self.Encoder.full(stem, warped_prev.max(dim=0, keepdim=True).values[None])
        m3 = self.Decoder.agnostic(r5, ref.r5, r4, r3)
        # The per-object branch runs in chunks so that memory stays bounded with hundreds of objects.
        chunk = OBJECT_CHUNK.get(image.device.type, 16)
        out = []
        for s in range(0, k, chunk):
            match = None
            if self.config.match:
                match = match_maps(r4, ref.feats, ref.masks[s:s + chunk])  # (chunk,2,H/16,W/16)
            r2_obj, atn = self.Encoder.objects(stem, masks[s:s + chunk], match)
            out.append(self.Decoder.specific(m3, atn, r2_obj))
        return torch.cat(out)

    def forward(self, image: torch.Tensor, warped_prev: torch.Tensor, ref: Reference) -> torch.Tensor:
        return normalize_objects(self.object_probs(image, warped_prev, ref), differentiable=self.training)

    # Encoder parts that come from an ImageNet classifier (the rest, including conv1_p, is new).
    _PRETRAINED = ("Encoder.conv_stem", "Encoder.bn0", "Encoder.blocks", "Encoder.conv1.", "Encoder.bn1",
                   "Encoder.res")

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
        """(pretrained encoder trunk, new parts, the optional inputs' layers): training gives the trunk a
        lower learning rate, and the optional inputs, which start at zero, may get a higher one."""
        pretrained, new, inputs = [], [], []
        optional = ("Encoder.conv1_o.", "Encoder.match_in.")
        for name, p in self.named_parameters():
            group = inputs if name.startswith(optional) else pretrained if name.startswith(self._PRETRAINED) else new
            group.append(p)
        return pretrained, new, inputs


def _check_sizes(image: torch.Tensor, masks: torch.Tensor) -> None:
    if image.dim() != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"image must be (1,3,H,W), got {tuple(image.shape)}")
    if masks.dim() != 3 or masks.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"masks must be (K,H,W) with H,W of the image, got {tuple(masks.shape)}")
    h, w = image.shape[-2:]
    if h % 32 or w % 32:
        raise ValueError(f"image height and width must be multiples of 32, got {h}x{w}")


def build_model(cfg: AGSSConfig | str | None = None) -> AGSSVOS:
    """A randomly initialised network; `cfg` may be a preset name (resnet50, resnet34, resnet18)."""
    if isinstance(cfg, str):
        if cfg not in PRESETS:
            raise ValueError(f"unknown config {cfg!r}; choose one of {sorted(PRESETS)}")
        cfg = PRESETS[cfg]
    return AGSSVOS(cfg).eval()
