"""The network's per-frame parts as standalone modules, and their export to ONNX.

`AGSSVOS.encode_reference` and `AGSSVOS.object_probs` take Python objects (a `Reference`) and loop
over object chunks; the modules here compose the same submodules (Encoder.stem, Encoder.full,
Decoder.agnostic, Encoder.objects batched over K, Decoder.specific, normalize_objects) into plain
tensor-in, tensor-out graphs with the object count K and the size H, W free, so that a compiled
runtime (service/vos/backends.py) or someone else's code can run them:

    reference.onnx   image (1,3,H,W), masks (K,H,W)              -> ref_r5 (1,C5,H/32,W/32)
    step.onnx        image (1,3,H,W), warped (K,H,W), ref_r5     -> object_probs (K,H,W), probs (K,H,W)

`export.json` beside them says what the inputs are and how to make them (DESIGN.md section 2.6).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import BackendError
from .network import AGSSVOS, PROB_EPS, encoder_channels, match_maps, normalize_objects, object_inputs

OPSET = 17
EXPORT_FORMAT = "agss-vos-onnx"
EXPORT_VERSION = 1
REFERENCE_FILE = "reference.onnx"
STEP_FILE = "step.onnx"
DESCRIPTION_FILE = "export.json"
# The size traced: any multiple of 32 works afterwards (H and W are dynamic axes).
SAMPLE_SIZE = (288, 512)
__all__ = ["ReferenceNet", "StepNet", "FrameNet", "ObjectNet", "export_onnx", "onnx_bytes", "verify_onnx"]


def _merged(masks: torch.Tensor) -> torch.Tensor:
    """masks (K,H,W) -> their maximum (1,1,H,W): the instance-agnostic input (DESIGN.md 2.1)."""
    return masks.amax(dim=0, keepdim=True).unsqueeze(1)


class ReferenceNet(nn.Module):
    """image (1,3,H,W) normalised, masks (K,H,W) in [0,1], K >= 1 -> ref_r5 (1,C5,H/32,W/32), and for a
    `match` model also ref_feats (1,C4,H/16,W/16).

    The same as `AGSSVOS.encode_reference(image, masks)`'s r5 and feats (its `masks` are
    `network.reference_masks`, computed by the caller). K = 0 (no mask) is the same as one all-zero
    mask, which is what callers pass in its place.
    """

    def __init__(self, model: AGSSVOS):
        super().__init__()
        self.Encoder = model.Encoder
        self.match = model.config.match

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        r5, r4 = self.Encoder.full(self.Encoder.stem(image), _merged(masks))[:2]
        return (r5, F.normalize(r4, dim=1)) if self.match else r5


class FrameNet(nn.Module):
    """The work done once per frame: image (1,3,H,W), merged (1,1,H,W) (the maximum of the warped
    masks), ref_r5 -> stem (1,Cs,H/2,W/2), m3 (1,width,H/8,W/8), r4 (1,C4,H/16,W/16). Its shapes do
    not depend on K."""

    def __init__(self, model: AGSSVOS):
        super().__init__()
        self.Encoder, self.Decoder = model.Encoder, model.Decoder

    def forward(self, image: torch.Tensor, merged: torch.Tensor,
                ref_r5: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        stem = self.Encoder.stem(image)
        r5, r4, r3, _ = self.Encoder.full(stem, merged)
        return stem, self.Decoder.agnostic(r5, ref_r5, r4, r3), r4


class ObjectNet(nn.Module):
    """The work done per object, batched over K: stem, m3, warped (K,H,W), and for a `match` model r4
    with ref_feats and ref_masks (K,H/16,W/16) -> object_probs (K,H,W)."""

    def __init__(self, model: AGSSVOS):
        super().__init__()
        self.Encoder, self.Decoder = model.Encoder, model.Decoder
        self.others, self.match = model.config.others, model.config.match

    def forward(self, stem: torch.Tensor, m3: torch.Tensor, warped: torch.Tensor, r4: torch.Tensor | None = None,
                ref_feats: torch.Tensor | None = None, ref_masks: torch.Tensor | None = None) -> torch.Tensor:
        match = match_maps(r4, ref_feats, ref_masks) if self.match else None
        r2, atn = self.Encoder.objects(stem, object_inputs(warped, self.others), match)
        return _specific(self.Decoder, m3, atn, r2)


def _specific(dec: nn.Module, m3: torch.Tensor, atn: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """`Decoder.specific` with the same numbers, arranged for speed: channel 1 of a softmax over two
    logits is sigmoid(l1 - l0), and bilinear upsampling is linear, so one difference map is predicted
    at 1/4 and upsampled instead of two, and no softmax runs at full size (a fifth of the object
    branch in ONNX Runtime). m3 (1,w,H/8,W/8), atn (K,w,H/8,W/8), r2 (K,C2,H/4,W/4) -> (K,H,W)."""
    m2 = dec.RF2(r2, m3 * atn)
    w, b = dec.pred2.weight, dec.pred2.bias
    diff = F.conv2d(F.relu(m2), w[1:2] - w[0:1], b[1:2] - b[0:1], padding=dec.pred2.padding)
    diff = F.interpolate(diff, scale_factor=4, mode="bilinear", align_corners=False)
    return torch.sigmoid(diff)[:, 0]


class StepNet(nn.Module):
    """One frame for K objects: image (1,3,H,W), warped (K,H,W), ref_r5 (1,C5,H/32,W/32), and for a
    `match` model ref_feats (1,C4,H/16,W/16) and ref_masks (K,H/16,W/16) -> object_probs (K,H,W) (what
    `AGSSVOS.object_probs` returns) and, with `normalized`, also probs (K,H,W) (what `AGSSVOS.forward`
    returns: normalised across the K objects)."""

    def __init__(self, model: AGSSVOS, normalized: bool = True):
        super().__init__()
        self.frame, self.objects = FrameNet(model), ObjectNet(model)
        self.normalized = normalized

    def forward(self, image: torch.Tensor, warped: torch.Tensor, ref_r5: torch.Tensor,
                ref_feats: torch.Tensor | None = None,
                ref_masks: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        stem, m3, r4 = self.frame(image, _merged(warped), ref_r5)
        probs = self.objects(stem, m3, warped, r4, ref_feats, ref_masks)
        return (probs, normalize_objects(probs)) if self.normalized else probs


def sample_inputs(model: AGSSVOS, objects: int = 2,
                  size: tuple[int, int] = SAMPLE_SIZE) -> dict[str, torch.Tensor]:
    """Inputs of the right shapes for tracing: image (1,3,H,W), masks = warped (K,H,W), ref_r5."""
    h, w = size
    g = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, h, w, generator=g)
    masks = torch.rand(objects, h, w, generator=g)
    with torch.no_grad():
        ref = model.encode_reference(image, masks)
    return {"image": image, "masks": masks, "warped": masks, "ref_r5": ref.r5, "ref_feats": ref.feats,
            "ref_masks": ref.masks}


# name -> (module factory, input names, output names, dynamic axes)
def _graphs(model: AGSSVOS, normalized: bool) -> dict[str, tuple[nn.Module, tuple[str, ...], tuple[str, ...],
                                                                 dict[str, dict[int, str]]]]:
    img = {2: "H", 3: "W"}
    kmask = {0: "K", 1: "H", 2: "W"}
    ref = {2: "H32", 3: "W32"}
    step_out = ("object_probs", "probs") if normalized else ("object_probs",)
    # A `match` model's reference also gives its 1/16 features, and its step takes them with each
    # object's reference mask at that scale (`network.reference_masks`, computed outside the graphs).
    feats = {"ref_feats": {2: "H16", 3: "W16"}} if model.config.match else {}
    matched = {**feats, "ref_masks": {0: "K", 1: "H16", 2: "W16"}} if feats else {}
    return {
        "reference": (ReferenceNet(model), ("image", "masks"), ("ref_r5", *feats),
                      {"image": img, "masks": kmask, "ref_r5": ref, **feats}),
        "step": (StepNet(model, normalized), ("image", "warped", "ref_r5", *matched), step_out,
                 {"image": img, "warped": kmask, "ref_r5": ref, **matched, **{o: kmask for o in step_out}}),
    }


def onnx_bytes(model: AGSSVOS, part: str, normalized: bool = False, opset: int = OPSET) -> bytes:
    """One part of the network ("reference" or "step") as an ONNX model in memory."""
    import io

    buf = io.BytesIO()
    _export(model, part, buf, normalized, opset)
    return buf.getvalue()


def _export(model: AGSSVOS, part: str, f, normalized: bool, opset: int) -> None:
    if not isinstance(model, AGSSVOS):
        raise BackendError(f"only the AGSS-VOS network can be exported or compiled, not {type(model).__name__}")
    module, inputs, outputs, axes = _graphs(model, normalized)[part]
    sample = sample_inputs(model)
    args = tuple(sample[n] for n in inputs)
    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is the one that takes dynamic axes by name without onnxscript;
        # its deprecation notice and tracer notes about shape arithmetic are expected here.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, f, dynamo=False, input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True)


def describe(model: AGSSVOS, opset: int = OPSET) -> dict:
    """The JSON description of an export: files, inputs, outputs, shapes and pre-processing."""
    cfg = model.config
    c5 = encoder_channels(cfg.backbone)[3]
    mask = {"shape": ["K", "H", "W"], "dtype": "float32", "range": [0, 1]}
    image = {"shape": [1, 3, "H", "W"], "dtype": "float32",
             "how": "RGB, scaled to [0,1], then (x - mean) / std per channel"}
    ref = {"shape": [1, c5, "H/32", "W/32"], "dtype": "float32"}  # dims named H32, W32 in the graphs
    feats = {"shape": [1, encoder_channels(cfg.backbone)[2], "H/16", "W/16"], "dtype": "float32"}
    matched = {"ref_feats": {**feats, "note": "the output of reference for these objects"},
               "ref_masks": {"shape": ["K", "H/16", "W/16"], "dtype": "float32", "range": [0, 1],
                             "note": "each object's mask on its reference frame, averaged over 16x16 cells"}
               } if cfg.match else {}
    return {
        "format": EXPORT_FORMAT, "format_version": EXPORT_VERSION, "opset": opset,
        "config": cfg.to_dict(),
        "preprocessing": {
            "color": "RGB", "scale": 1 / 255, "mean": list(cfg.mean), "std": list(cfg.std), "layout": "NCHW",
            "size": {"long_side": cfg.long_side, "multiple_of": 32,
                     "rule": "scale the frame so that its long side is long_side, round each side to a multiple "
                             "of 32; resize with area interpolation"},
            "masks": "one soft mask per object at the network size, area-averaged from the label map",
        },
        "files": {
            "reference": {
                "file": REFERENCE_FILE, "when": "once per group of objects, on the frame of their first masks",
                "inputs": {"image": image, "masks": {**mask, "note": "K >= 1; the merged mask is their maximum"}},
                "outputs": {"ref_r5": ref, **({"ref_feats": {**feats, "note": "unit length per pixel"}}
                                              if cfg.match else {})},
            },
            "step": {
                "file": STEP_FILE, "when": "every later frame",
                "inputs": {"image": image,
                           "warped": {**mask, "note": "the previous frame's probs, warped to this frame by "
                                                      "backward optical flow (bilinear)"},
                           "ref_r5": {**ref, "note": "the output of reference for these objects"}, **matched},
                "outputs": {
                    "object_probs": {**mask, "note": "foreground probability per object, before normalisation"},
                    "probs": {**mask, "note": "normalised across objects: background b = 1 - max_k p_k; all "
                                              f"clamped to [{PROB_EPS}, 1-{PROB_EPS}]; odds p/(1-p); divided "
                                              "by their sum over background and objects; background dropped"},
                },
            },
        },
        "postprocessing": "label per pixel: argmax over (1 - sum_k probs_k, probs_1..probs_K), upsampled "
                          "bilinearly to the frame size first; 0 is background",
        "dynamic_axes": {"K": "objects (>= 1)", "H": "height, a multiple of 32", "W": "width, a multiple of 32"},
    }


def export_onnx(model: AGSSVOS, out_dir: str | os.PathLike, opset: int = OPSET) -> Path:
    """Write reference.onnx, step.onnx and export.json to `out_dir`; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _export(model, "reference", str(out / REFERENCE_FILE), False, opset)
    _export(model, "step", str(out / STEP_FILE), True, opset)
    (out / DESCRIPTION_FILE).write_text(json.dumps(describe(model, opset), indent=2) + "\n")
    return out


@torch.no_grad()
def verify_onnx(model: AGSSVOS, out_dir: str | os.PathLike, objects: int = 3,
                size: tuple[int, int] = SAMPLE_SIZE) -> dict[str, float]:
    """Run an export in ONNX Runtime on random inputs of `size` and compare it with the PyTorch
    network: the largest absolute difference of each output. Needs the onnxruntime package."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendError("checking an export needs the onnxruntime package") from None
    out = Path(out_dir)
    g = torch.Generator().manual_seed(1)
    image, masks = torch.randn(1, 3, *size, generator=g), torch.rand(objects, *size, generator=g)
    ref = model.encode_reference(image, masks)
    want = model.object_probs(image, masks, ref)

    def session(name: str):
        return ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])

    refs = session(REFERENCE_FILE).run(None, {"image": image.numpy(), "masks": masks.numpy()})
    feeds = {"image": image.numpy(), "warped": masks.numpy(), "ref_r5": refs[0]}
    diffs = {"ref_r5": float((torch.from_numpy(refs[0]) - ref.r5).abs().max())}
    if model.config.match:
        feeds.update(ref_feats=refs[1], ref_masks=ref.masks.numpy())
        diffs["ref_feats"] = float((torch.from_numpy(refs[1]) - ref.feats).abs().max())
    raw, probs = session(STEP_FILE).run(None, feeds)
    return {**diffs, "object_probs": float((torch.from_numpy(raw) - want).abs().max()),
            "probs": float((torch.from_numpy(probs) - normalize_objects(want)).abs().max())}
