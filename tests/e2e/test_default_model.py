"""The shipped default model: loads by name and path, is the CLI's default, and beats flow-only."""

from __future__ import annotations

import json

import pytest

from service.training.datasets import load_sequences
from service.training.loop import evaluate
from service.vos import load_model
from service.vos.checkpoint import BUNDLED_MODELS

from ..conftest import REAL, require
from .test_cli import agss

MODEL = BUNDLED_MODELS / "agss-lite"


@pytest.fixture(scope="module")
def card() -> dict:
    if not (MODEL / "model.json").exists():
        pytest.fail("service/models/agss-lite is missing")
    return json.loads((MODEL / "model.json").read_text())


def test_loads_by_name_and_path(card):
    a, b = load_model("agss-lite"), load_model(MODEL)
    assert a.config == b.config and a.config.backbone == "efficientnet_lite0"
    assert (MODEL / "weights.safetensors").stat().st_size < 50 << 20
    real = card["validation"]["jf"]["real"]
    assert real["trained"]["mean"] >= real["flow-only"]["mean"] + 0.05


def test_card_measured_it_next_to_flow_only_and_the_model_it_replaced(card):
    """Every validation group of the card: the shipped model, flow-only and the previous default, measured
    in one run; the shipped model is not below flow-only in any group, and says what it was trained on."""
    occlusions = card["validation_occlusions"]  # the same with the tracker's default occlusion handling
    for groups, names in ((card["validation"]["jf"], {"real", "fast", "composites", "fast-composites"}),
                          (occlusions["jf"], {"real", "fast", "composites", "fast-composites"}),
                          (occlusions["jf_12_composites"], {"composites", "fast-composites"})):
        assert set(groups) == names
        for name, g in groups.items():
            assert set(g) == {"trained", "previous", "flow-only"}, name
            assert g["trained"]["mean"] > g["flow-only"]["mean"], name
            assert g["trained"].keys() == g["previous"].keys() == g["flow-only"].keys()  # per sequence, the same ones
    assert len(occlusions["jf_12_composites"]["composites"]["trained"]) == 12 + 1  # and their mean
    assert "CC BY-NC 4.0" in card["training"]["data_licence"] and "Flickr" in card["training"]["data_licence"]
    assert card["training"]["earlier_stage"]["data"]  # the first stage's data, too


def test_beats_flow_only_on_a_real_sequence(card):
    seq = load_sequences(require(REAL / "horsejump-high"))[0]
    seq.frames, seq.labels, seq.annotated = seq.frames[:16], seq.labels[:16], seq.annotated[:16]
    trained = evaluate(load_model("agss-lite"), [seq], "dis", None)["mean"]
    flow = evaluate(load_model("flow-only"), [seq], "dis", 512)["mean"]
    assert trained > flow, (trained, flow)


def test_segment_uses_it_by_default(tmp_path):
    from ..conftest import copy_frames

    frames = copy_frames(require(REAL / "camel"), tmp_path / "f", 3)
    p = agss("segment", frames, "--masks", REAL / "camel" / "Annotations" / "00000.png", "--out", tmp_path / "o")
    assert "network 512x288" in p.stderr and len(list((tmp_path / "o").glob("*.png"))) == 3
