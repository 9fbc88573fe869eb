import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from service.training.clips import composite_clip, make_clip, real_clip, synthetic_clip
from service.training.datasets import load_sequences
from service.training.loop import soft_iou_loss

from ..conftest import REAL, TRAIN240, require


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Three real sequences, 8 frames each, in the flat layout."""
    root = tmp_path_factory.mktemp("data")
    for name in ("dog", "boat", "lucia"):
        src = require(TRAIN240 / name)
        for sub in ("JPEGImages", "Annotations"):
            (root / name / sub).mkdir(parents=True)
            for f in sorted((src / sub).iterdir())[:8]:
                shutil.copy(f, root / name / sub / f.name)
    return root


def test_layouts_and_masks(tiny_data, tmp_path):
    seqs = load_sequences(tiny_data)
    assert [s.name for s in seqs] == ["boat", "dog", "lucia"]
    assert seqs[0].frames.shape == (8, 240, 427, 3) and seqs[0].ids == [1]
    davis = tmp_path / "davis"
    for sub in ("JPEGImages", "Annotations"):
        (davis / sub / "480p").mkdir(parents=True)
        shutil.copytree(tiny_data / "dog" / sub, davis / sub / "480p" / "dog")
    (d,) = load_sequences(davis)
    assert d.name == "dog" and np.array_equal(d.labels, seqs[1].labels)


def test_clip_generators(tiny_data):
    seqs = load_sequences(tiny_data)
    rng = np.random.default_rng(0)
    c = real_clip(seqs[0], rng, 4, (96, 160))
    assert c.frames.shape == (4, 96, 160, 3) and c.labels.shape == (4, 96, 160) and c.ids == [1]
    multi = [composite_clip(seqs[1], [seqs[0], seqs[2]], np.random.default_rng(i), 4, (96, 160)) for i in range(6)]
    assert max(len(m.ids) for m in multi) >= 2  # pasted objects become objects of their own
    s = synthetic_clip(np.random.default_rng(3), 5, (64, 96))
    assert s.frames.shape == (5, 64, 96, 3) and 1 <= len(s.ids) <= 3
    a = make_clip(seqs, np.random.default_rng([7, 1]), 3, (64, 96))
    b = make_clip(seqs, np.random.default_rng([7, 1]), 3, (64, 96))
    assert np.array_equal(a.frames, b.frames) and a.ids  # deterministic for a seed, never empty


def test_sparse_annotations_are_never_trained_on_as_empty(tiny_data):
    seq = load_sequences(tiny_data, names=["dog"])[0]
    seq.annotated[1::2] = False  # YouTube-VOS style: some frames have no mask file
    seq.labels[~seq.annotated] = 0
    for i in range(20):
        clip = real_clip(seq, np.random.default_rng(i), 3, (64, 96))
        assert all(clip.labels[t].any() for t in range(3))


def test_soft_iou_loss():
    y = torch.zeros(2, 8, 8)
    y[:, 2:5, 2:5] = 1
    assert float(soft_iou_loss(y, y)) == 0
    assert float(soft_iou_loss(1 - y, y)) == 1
    assert 0 < float(soft_iou_loss(y * 0.5, y)) < 1


def test_an_absent_object_is_taught_to_let_go():
    y = torch.zeros(2, 8, 8)
    y[0, 2:5, 2:5] = 1  # object 1 present, object 2 gone from this frame
    p = torch.full((2, 8, 8), 0.3, requires_grad=True)
    plain = soft_iou_loss(p, y)
    plain.backward()
    assert float(p.grad[1].abs().sum()) == 0  # the plain soft IoU of an absent object is flat: 1 whatever it predicts
    q = p.detach().clone().requires_grad_(True)
    seen = torch.tensor([9.0, 9.0])
    loss = soft_iou_loss(q, y, seen)
    loss.backward()
    assert float(q.grad[1].min()) > 0  # every predicted pixel of the absent object is pushed down
    assert torch.allclose(q.grad[0], p.grad[0])  # a present object's loss is the plain one
    # S / (S + a) per absent object: 0 when nothing is predicted, 1/2 with a whole object's area predicted.
    none = torch.stack([y[0], torch.zeros(8, 8)])
    assert float(soft_iou_loss(none, y, seen)) == 0
    half = torch.stack([y[0], y[0]])
    assert float(soft_iou_loss(half, y, seen)) == pytest.approx(0.25)


TINY = {"model": {"backbone": "efficientnet_lite0", "width": 16, "long_side": 96, "mean": [0.5, 0.5, 0.5],
                  "std": [0.5, 0.5, 0.5]},
        "iterations": 6, "clip_length": 3, "crop": [64, 96], "pretrained": False, "checkpoint_every": 1,
        "val_every": 3, "seed": 3}


def _train(cfg_path, data, out, *extra, wait=True):
    cmd = [sys.executable, "-m", "service.cli", "train", "--config", str(cfg_path), "--data", str(data), "--out",
           str(out), "--quiet", *map(str, extra)]
    if not wait:
        return subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)


def test_training_runs_validates_and_is_deterministic(tiny_data, tmp_path):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    p = _train(cfg, tiny_data, tmp_path / "a", "--val", tiny_data / "dog")
    assert "flow-only baseline J&F" in p.stderr and "validation J&F" in p.stderr
    log = [json.loads(ln) for ln in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [e["iteration"] for e in log] == [3, 6] and 0 <= log[-1]["val"]["mean"] <= 1
    assert (tmp_path / "a" / "best" / "model.json").is_file()
    _train(cfg, tiny_data, tmp_path / "b", "--val", tiny_data / "dog")
    wa = load_file(tmp_path / "a" / "final" / "weights.safetensors")
    wb = load_file(tmp_path / "b" / "final" / "weights.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    from service.vos import load_model

    assert load_model(tmp_path / "a" / "best").config.backbone == "efficientnet_lite0"


def test_training_resumes_after_being_killed(tiny_data, tmp_path):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({**TINY, "iterations": 400, "val_every": 1000}))
    proc = _train(cfg, tiny_data, tmp_path / "run", wait=False)
    last = tmp_path / "run" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() or torch.load(last, weights_only=True)["iteration"] < 3:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(last, weights_only=True)["iteration"]
    assert 3 <= killed_at < 400
    p = _train(cfg, tiny_data, tmp_path / "run", "--iterations", killed_at + 3)
    assert f"resumed from {last} at iteration {killed_at}" in p.stderr
    assert torch.load(last, weights_only=True)["iteration"] == killed_at + 3


def test_a_second_stage_card_names_the_first_stage_and_every_licence(tmp_path):
    """The card of a model trained on top of another says how that one was trained (its card, or its run's
    config when it is a run folder's best/), and the licences of all the data either stage used."""
    from service.training.loop import TrainConfig
    from service.training.report import write_card
    from service.vos.checkpoint import BUNDLED_MODELS

    shipped = BUNDLED_MODELS / "agss-lite"
    shipped_card = json.loads((shipped / "model.json").read_text())
    first = shipped_card["training"]
    cfg = TrainConfig(model=shipped_card["config"], init=str(shipped))
    card = json.loads((write_card(shipped, tmp_path / "out", cfg, ["x/davis2016-train-240p", "x/coco-subset"],
                                  {}, "val", {}) / "model.json").read_text())["training"]
    assert card["earlier_stage"] == {"model": str(shipped), **first}
    assert "CC BY-NC 4.0" in card["data_licence"] and "annotations CC BY 4.0" in card["data_licence"]
    assert f"then the weights of {shipped}" in card["encoder_init"]

    run = tmp_path / "run"  # a first stage that was never exported: its run folder's config
    shutil.copytree(shipped, run / "best")
    (run / "best" / "model.json").write_text(json.dumps({"config": cfg.model}))
    (run / "config.json").write_text(json.dumps({"iterations": 7}))
    cfg.init = str(run / "best")
    card = json.loads((write_card(shipped, tmp_path / "out2", cfg, ["x/davis2016-train-240p"], {}, "val", {})
                       / "model.json").read_text())["training"]
    assert card["earlier_stage"] == {"model": str(run / "best"), "recipe": {"iterations": 7}}
    assert "COCO" not in card["data_licence"]

    cfg.init = None
    assert "earlier_stage" not in json.loads((write_card(shipped, tmp_path / "out3", cfg, ["d"], {}, "v", {})
                                              / "model.json").read_text())["training"]


def test_the_card_says_when_each_object_sees_the_other_objects(tmp_path):
    from service.training.loop import TrainConfig
    from service.training.report import write_card
    from service.vos.checkpoint import BUNDLED_MODELS

    shipped = BUNDLED_MODELS / "agss-lite"
    config = json.loads((shipped / "model.json").read_text())["config"]
    cards = {}
    for others in (False, True):
        cfg = TrainConfig(model={**config, "others": others})
        card = write_card(shipped, tmp_path / str(others), cfg, ["d"], {}, "v", {}) / "model.json"
        cards[others] = json.loads(card.read_text())["architecture"]
    assert "other objects' warped masks" in cards[True] and "other objects" not in cards[False]


def test_make_eval_runs_the_tracker_with_occlusions_unless_told_not_to(tmp_path, capsys):
    """`python -m service.training.report` (make eval) measures the tracker as it runs by default, with its
    occlusion handling, and as it was before with --no-occlusions."""
    from service.training.loop import evaluate
    from service.training.report import main
    from service.vos import load_model

    src = require(REAL / "blackswan")
    for part in ("JPEGImages", "Annotations"):
        (tmp_path / "seq" / part).mkdir(parents=True)
        for f in sorted((src / part).iterdir())[:8]:
            shutil.copy(f, tmp_path / "seq" / part / f.name)
    seqs = load_sequences(tmp_path / "seq")
    got = {}
    for flag, occlusions in (([], True), (["--no-occlusions"], False)):
        out = tmp_path / f"{occlusions}.json"
        assert main(["--models", "flow-only", "--data", str(tmp_path / "seq"), "--groups", "real",
                     "--json", str(out), *flag]) == 0
        assert f"occlusions {'on' if occlusions else 'off'}" in capsys.readouterr().out
        flow_only = load_model("flow-only")
        want = evaluate(flow_only, seqs, "dis", flow_only.config.long_side, occlusions=occlusions)
        got[occlusions] = json.loads(out.read_text())["real"]["flow-only"]
        assert got[occlusions] == pytest.approx(want)
    assert got[True]["mean"] != pytest.approx(got[False]["mean"])  # the two settings differ on these frames
    # Two or more models: each one's paired difference to the first, per group (here the same model twice).
    assert main(["--models", "flow-only,again=flow-only", "--data", str(tmp_path / "seq"), "--groups", "real"]) == 0
    out = capsys.readouterr().out
    assert "paired differences per group" in out and "| real | +0.0000 +- nan |" in out


@pytest.mark.parametrize("flags, message", [
    (["--workers", "-1"], "--workers -1: must be 0 or more"),
    (["--device", "cuda"], "--device cuda: CUDA is not available on this machine"),
    (["--amp", "fp8"], "invalid choice: 'fp8'"),
])
def test_train_refuses_bad_flags_in_one_line(tiny_data, tmp_path, flags, message):
    if "cuda" in flags and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    p = subprocess.run([sys.executable, "-m", "service.cli", "train", "--config", str(cfg), "--data", str(tiny_data),
                        "--out", str(tmp_path / "run"), *flags], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "run").exists()
