"""`agss-vos export MODEL --format onnx`: the files run in ONNX Runtime, from their JSON description alone,
and give PyTorch's numbers within 1e-3 on a real frame."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from service.vos.checkpoint import load_model
from service.vos.network import normalize_objects
from service.vos.tracker import network_size

from ..conftest import REAL, require
from .test_cli import agss

TOL = 1e-3
SEQ = REAL / "blackswan"


@pytest.fixture(scope="module", params=["small", "agss-lite"])
def exported(request, small_model_dir, tmp_path_factory) -> tuple[str, Path, str]:
    model = str(small_model_dir) if request.param == "small" else request.param
    out = tmp_path_factory.mktemp("onnx") / request.param
    p = agss("export", model, "--format", "onnx", "--out", out)
    return model, out, p.stdout


def _preprocess(rgb: np.ndarray, pre: dict, size: tuple[int, int]) -> np.ndarray:
    """What export.json says to do, written from it alone: RGB, scale, (x - mean) / std, NCHW."""
    h, w = size
    x = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) * np.float32(pre["scale"])
    x = (x - np.array(pre["mean"], np.float32)) / np.array(pre["std"], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def test_export_writes_graphs_and_description(exported):
    model, out, stdout = exported
    desc = json.loads((out / "export.json").read_text())
    assert desc["format"] == "agss-vos-onnx"
    cfg = load_model(model).config
    pre = desc["preprocessing"]
    assert (pre["color"], pre["scale"], pre["size"]["multiple_of"]) == ("RGB", 1 / 255, 32)
    assert pre["mean"] == list(cfg.mean) and pre["std"] == list(cfg.std) and pre["size"]["long_side"] == cfg.long_side
    for part in desc["files"].values():
        sess = ort.InferenceSession(str(out / part["file"]), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == list(part["inputs"])
        assert [o.name for o in sess.get_outputs()] == list(part["outputs"])
        # K, H and W are free in the graphs, not fixed to the traced size.
        for i in sess.get_inputs():
            if i.name in ("masks", "warped"):
                assert all(isinstance(d, str) for d in i.shape), i.shape
            if i.name == "image":
                assert i.shape[:2] == [1, 3] and all(isinstance(d, str) for d in i.shape[2:])
    assert "ONNX Runtime vs PyTorch" in stdout and "step.onnx" in stdout


@pytest.mark.parametrize("objects", [1, 2])
def test_exported_graphs_match_pytorch_on_a_real_frame(exported, objects):
    model_ref, out, _ = exported
    desc = json.loads((out / "export.json").read_text())
    model = load_model(model_ref)
    rgb = cv2.cvtColor(cv2.imread(str(require(SEQ / "JPEGImages" / "00000.jpg"))), cv2.COLOR_BGR2RGB)
    fg = (cv2.imread(str(SEQ / "Annotations" / "00000.png"), cv2.IMREAD_GRAYSCALE) > 0).astype(np.float32)
    reference = ort.InferenceSession(str(out / "reference.onnx"), providers=["CPUExecutionProvider"])
    step = ort.InferenceSession(str(out / "step.onnx"), providers=["CPUExecutionProvider"])
    default = network_size(*rgb.shape[:2], desc["preprocessing"]["size"]["long_side"])
    for h, w in (default, (default[0] + 32, default[1] - 64)):
        image = _preprocess(rgb, desc["preprocessing"], (h, w))
        swan = cv2.resize(fg, (w, h), interpolation=cv2.INTER_AREA)
        masks = np.stack([swan, np.roll(swan, (h // 8, -w // 6), axis=(0, 1))])[:objects]
        warped = np.ascontiguousarray(np.roll(masks, (2, -3), axis=(1, 2)))
        with torch.no_grad():
            x = model.preprocess(cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA))
            assert np.abs(x.numpy() - image).max() < 1e-5, "export.json describes the pre-processing wrongly"
            ref = model.encode_reference(x, torch.from_numpy(masks))
            want = model.object_probs(x, torch.from_numpy(warped), ref)
        ref_r5 = reference.run(None, {"image": image, "masks": masks})[0]
        assert np.abs(ref_r5 - ref.r5.numpy()).max() < TOL
        raw, probs = step.run(None, {"image": image, "warped": warped, "ref_r5": ref_r5})
        assert raw.shape == probs.shape == (objects, h, w)
        assert np.abs(raw - want.numpy()).max() < TOL
        # The normalisation across objects is ill-conditioned where two objects both come near 1 (the odds
        # p/(1-p) turn a 1e-5 difference of p into 1e-3): it is compared on the graph's own raw output.
        assert np.abs(probs - normalize_objects(torch.from_numpy(raw)).numpy()).max() < 1e-5
        assert probs.sum(axis=0).max() <= 1 + 1e-5
        assert want.max() > 0.5 > want.min(), "a degenerate output would make the comparison vacuous"


def test_flow_only_has_nothing_to_export(tmp_path):
    p = agss("export", "flow-only", "--out", tmp_path / "x", check=False)
    assert p.returncode == 2 and "flow-only" in p.stderr
