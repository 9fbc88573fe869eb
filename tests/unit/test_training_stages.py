"""Static-image clips (COCO layout), fast clips, corrupted previous masks, and continuing a run."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from service.training.clips import composite_clip, make_clip, real_clip, static_clip
from service.training.datasets import Instance, Sequence, StillImage, is_coco, load_coco, load_sequences
from service.training.loop import TrainConfig, build, clip_flows, corrupt_masks, train, train_step
from service.training.report import every_nth, validation_groups
from service.vos.flow import make_flow

from ..conftest import SHARED, TRAIN240, require


def _image(seed: int, n: int = 3) -> StillImage:
    """A textured 120x160 image with n rectangles and ellipses as instances."""
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), (160, 120))
    insts = []
    for _ in range(n):
        h, w = int(rng.integers(12, 40)), int(rng.integers(12, 50))
        m = np.zeros((h, w), np.uint8)
        cv2.ellipse(m, (w // 2, h // 2), (w // 2 - 1, h // 2 - 1), 0, 0, 360, 1, -1)
        insts.append(Instance(m > 0, int(rng.integers(0, 120 - h)), int(rng.integers(0, 160 - w)), 1))
    return StillImage(f"im{seed}", img, insts)


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    """A COCO-layout folder: 3 images, polygon and RLE annotations, one crowd region (ignored)."""
    root = tmp_path_factory.mktemp("coco")
    (root / "images").mkdir()
    images, anns = [], []
    for i in range(3):
        im = _image(i)
        cv2.imwrite(str(root / "images" / f"{i:012d}.jpg"), cv2.cvtColor(im.image, cv2.COLOR_RGB2BGR))
        images.append({"id": i + 1, "file_name": f"{i:012d}.jpg", "height": 120, "width": 160, "license": 4})
        for k, inst in enumerate(im.instances):
            y, x = inst.y0, inst.x0
            h, w = inst.mask.shape
            poly = [x, y, x + w, y, x + w, y + h, x, y + h]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": int(k == 2),
                         "segmentation": [poly], "area": h * w, "bbox": [x, y, w, h]})
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": [],
                                                     "licenses": []}))
    return root


def test_coco_layout_is_read_without_crowds(coco_dir):
    assert is_coco(coco_dir) and not is_coco(coco_dir / "images")
    ims = load_coco(coco_dir)
    assert len(ims) == 3 and all(len(im.instances) == 2 for im in ims)  # the crowd region is dropped
    assert ims[0].image.shape == (120, 160, 3) and ims[0].licence == 4
    inst = ims[0].instances[0]
    assert inst.mask.dtype == bool and inst.area > 50
    small = load_coco(coco_dir, max_side=80)
    assert small[0].image.shape == (60, 80, 3)


def test_the_shared_coco_subset_loads():
    ims = load_coco(require(SHARED / "data" / "coco-subset"), limit=4)
    assert ims and all(max(im.image.shape[:2]) <= 480 and im.instances for im in ims)


def test_static_clips_shapes_ids_and_determinism():
    ims = [_image(i) for i in range(3)]
    for seed in range(8):
        c = static_clip(ims, np.random.default_rng(seed), 4, (64, 96))
        assert c.frames.shape == (4, 64, 96, 3) and c.frames.dtype == np.uint8
        assert c.labels.shape == (4, 64, 96) and c.labels.dtype == np.uint8
        assert c.ids == list(range(1, len(c.ids) + 1)) and len(c.ids) <= 4  # 1..K, consecutive
        assert set(np.unique(c.labels)) <= {0, *c.ids}  # nothing but the reference frame's objects
    a = static_clip(ims, np.random.default_rng([5, 2]), 5, (64, 96), fast=True)
    b = static_clip(ims, np.random.default_rng([5, 2]), 5, (64, 96), fast=True)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.labels, b.labels)


def test_fast_static_clips_move_far_and_objects_leave_the_frame():
    ims = [_image(i) for i in range(3)]
    left, moved = 0, []
    for seed in range(30):
        c = static_clip(ims, np.random.default_rng(seed), 6, (64, 96), fast=True, p_distractor=0)
        for i in c.ids:
            if not (c.labels[-1] == i).any():
                left += 1
            elif (c.labels[1] == i).any():
                y0, x0 = np.argwhere(c.labels[0] == i).mean(0)
                y1, x1 = np.argwhere(c.labels[1] == i).mean(0)
                moved.append(np.hypot(y1 - y0, x1 - x0))
    assert left >= 3, "fast objects should sometimes leave the frame"
    assert np.median(moved) > 3  # pixels per frame at 96 px wide: several times the ordinary drift


def test_fast_video_clips_and_mixing(tmp_path):
    seqs = load_sequences(require(TRAIN240), names=["dog", "boat"])
    for s in seqs:
        s.frames, s.labels, s.annotated = s.frames[:30], s.labels[:30], s.annotated[:30]
    c = real_clip(seqs[0], np.random.default_rng(1), 4, (64, 96), fast=True)
    assert c.frames.shape == (4, 64, 96, 3) and c.ids == [1]
    m = composite_clip(seqs[0], [seqs[1]], np.random.default_rng(2), 4, (64, 96), fast=True)
    assert m.frames.shape == (4, 64, 96, 3) and 1 <= len(m.ids) <= 2
    ims = [_image(i) for i in range(3)]
    kinds = [make_clip(seqs, np.random.default_rng([3, i]), 3, (64, 96), images=ims, p_static=1.0) for i in range(3)]
    assert all(k.ids for k in kinds)
    # Options left off draw nothing: the same clips as a recipe that never had them.
    a = make_clip(seqs, np.random.default_rng(9), 3, (64, 96))
    b = make_clip(seqs, np.random.default_rng(9), 3, (64, 96), images=ims, p_static=0.0, p_fast=0.0)
    assert np.array_equal(a.frames, b.frames)


def test_composite_objects_leave_the_frame_or_meet_the_background_object():
    seqs = load_sequences(require(TRAIN240), names=["dog", "boat", "bear"])

    def vanished(p_exit: float) -> tuple[int, int]:
        """(objects absent from some predicted frame, objects) over 24 composites of 4 frames."""
        gone = present = 0
        for seed in range(24):
            c = composite_clip(seqs[0], seqs[1:], np.random.default_rng([7, seed]), 4, (96, 160), p_exit=p_exit)
            for i in c.ids:
                gone += min((c.labels[t] == i).sum() for t in range(1, 4)) == 0
                present += 1
        return gone, present

    gone, present = vanished(1.0)
    assert gone >= present // 5, (gone, present)  # objects vanish within a 4-frame clip, as over a long video
    assert vanished(0.0)[0] < gone


def test_corrupted_previous_masks():
    m = torch.zeros(3, 48, 64)
    m[0, 10:20, 10:30] = 1
    m[1, 25:40, 30:50] = 0.8
    assert torch.equal(corrupt_masks(m, np.random.default_rng(0), 0.0), m)
    changed = 0
    for seed in range(20):
        a = corrupt_masks(m, np.random.default_rng(seed), 1.0)
        b = corrupt_masks(m, np.random.default_rng(seed), 1.0)
        assert torch.equal(a, b) and a.shape == m.shape  # deterministic for a seed
        assert float(a.min()) >= 0 and float(a.max()) <= 1
        changed += int(not torch.equal(a[0], m[0]))
    assert changed >= 15
    # Some corruptions drop an object entirely; over many draws at least one does.
    dropped = sum(float(corrupt_masks(m, np.random.default_rng(s), 1.0)[0].sum()) == 0 for s in range(80))
    assert dropped >= 1


def test_validation_groups_hold_fast_and_multi_object_proxies():
    seqs = load_sequences(require(TRAIN240), names=["dog", "boat", "lucia"])
    for s in seqs:
        s.frames, s.labels, s.annotated = s.frames[:12], s.labels[:12], s.annotated[:12]
    fast = every_nth(seqs, 3)
    assert [s.name for s in fast] == ["boat-x3", "dog-x3", "lucia-x3"] and len(fast[0].frames) == 4
    assert np.array_equal(fast[0].frames[1], seqs[0].frames[3])
    g = validation_groups(seqs, n_composites=1, groups=("fast", "fast-composites"))
    assert list(g) == ["fast", "fast-composites"] and g["fast-composites"][0].name == "fast-composite-0"
    # The composites are drawn from the seed: the same seed, the same videos; another, another set.
    same = validation_groups(seqs, n_composites=1, groups=("fast-composites",))["fast-composites"][0]
    other = validation_groups(seqs, n_composites=1, groups=("fast-composites",), seed=99)["fast-composites"][0]
    assert np.array_equal(same.frames, g["fast-composites"][0].frames)
    assert not np.array_equal(other.frames, same.frames)


def test_paired_differences_are_a_mean_and_standard_error_over_sequences():
    from service.training.report import format_differences, paired_difference

    r = {"a": {"s1": 0.5, "s2": 0.6, "s3": 0.7, "mean": 0.9}, "b": {"s1": 0.6, "s2": 0.6, "s3": 0.9, "mean": 0.1}}
    d, se = paired_difference(r, "a", "b")  # differences 0.1, 0, 0.2 (the object means are left out)
    assert d == pytest.approx(0.1) and se == pytest.approx(0.1 / 3 ** 0.5)
    assert paired_difference(r, "b", "a")[0] == pytest.approx(-0.1)
    d1, se1 = paired_difference({"a": {"s1": 0.5}, "b": {"s1": 0.7}}, "a", "b")
    assert d1 == pytest.approx(0.2) and np.isnan(se1)  # one sequence: no error to give
    table = format_differences({"real": r, "fast": {"a": r["b"], "b": r["a"]}}).splitlines()
    assert table == ["| group | b - a |", "|---|---:|", "| real | +0.1000 +- 0.0577 |", "| fast | -0.1000 +- 0.0577 |"]


TINY = {"model": {"backbone": "efficientnet_lite0", "width": 16, "long_side": 96, "mean": [0.5, 0.5, 0.5],
                  "std": [0.5, 0.5, 0.5]},
        "clip_length": 3, "crop": [64, 96], "pretrained": False, "checkpoint_every": 1, "val_every": 1000,
        "seed": 5, "p_static": 0.3, "p_static_stage": 0.9, "static_iterations": 2, "p_fast": 0.5, "p_corrupt": 0.5}


@pytest.fixture(scope="module")
def tiny_seqs(tmp_path_factory):
    root = tmp_path_factory.mktemp("seqs")
    for name in ("dog", "boat"):
        src = require(TRAIN240 / name)
        for sub in ("JPEGImages", "Annotations"):
            (root / name / sub).mkdir(parents=True)
            for f in sorted((src / sub).iterdir())[:6]:
                shutil.copy(f, root / name / sub / f.name)
    return root


class _Killed(Exception):
    pass


def test_an_interrupted_run_resumes_to_the_same_weights_and_can_be_continued(tiny_seqs, coco_dir, tmp_path):
    torch.set_num_threads(1)
    quiet = lambda m: None  # noqa: E731
    cfg = TrainConfig(**{**TINY, "iterations": 4})
    train(cfg, [tiny_seqs, coco_dir], tmp_path / "straight", log=quiet)

    def kill_during_3(it, loss, iou):  # iteration 3 computed but never checkpointed: a kill before the save
        if it == 3:
            raise _Killed

    with pytest.raises(_Killed):
        train(cfg, [tiny_seqs, coco_dir], tmp_path / "killed", progress=kill_during_3, log=quiet)
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["iteration"] == 2
    logs: list[str] = []
    train(cfg, [tiny_seqs, coco_dir], tmp_path / "killed", log=logs.append)
    assert any("resumed" in m and "iteration 2" in m for m in logs)
    wa = load_file(tmp_path / "straight" / "final" / "weights.safetensors")
    wb = load_file(tmp_path / "killed" / "final" / "weights.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # Longer training: a finished run continues from where it ended when asked for more.
    logs.clear()
    train(TrainConfig(**{**TINY, "iterations": 6}), [tiny_seqs, coco_dir], tmp_path / "straight", log=logs.append)
    assert any("resumed" in m and "iteration 4" in m for m in logs)
    assert torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["iteration"] == 6
    # A second stage starts from a model folder's weights.
    stage2 = TrainConfig(**{**TINY, "iterations": 1, "init": str(tmp_path / "straight" / "final")})
    train(stage2, [tiny_seqs, coco_dir], tmp_path / "stage2", log=quiet)
    assert (tmp_path / "stage2" / "final" / "weights.safetensors").is_file()


def test_after_step_sees_each_step_and_what_it_changes_is_what_is_saved(tiny_seqs, coco_dir, tmp_path):
    """The hook replicas average their weights in (tools/gpu_session.py): called after every step with the
    model being trained, before the checkpoint, so the averaged weights are the ones saved."""
    torch.set_num_threads(1)
    seen: list[int] = []

    def hook(it: int, model) -> None:
        seen.append(it)
        with torch.no_grad():
            next(model.parameters()).fill_(0.25)

    train(TrainConfig(**{**TINY, "iterations": 3}), [tiny_seqs, coco_dir], tmp_path / "run", log=lambda m: None,
          after_step=hook)
    assert seen == [1, 2, 3]
    first = next(iter(torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"].values()))
    assert torch.all(first == 0.25)


def test_loader_workers_train_on_the_same_clips_as_the_training_process(tiny_seqs, coco_dir, tmp_path):
    """Clips and flows made ahead by worker processes, the corruption drawn on from each clip's generator in
    the training process: the same weights as making everything in line."""
    torch.set_num_threads(1)
    quiet = lambda m: None  # noqa: E731
    cfg = TrainConfig(**{**TINY, "iterations": 3, "occlusions": True, "flow": "dis"})
    train(cfg, [tiny_seqs, coco_dir], tmp_path / "inline", log=quiet)
    train(cfg, [tiny_seqs, coco_dir], tmp_path / "workers", log=quiet, workers=2)
    wa = load_file(tmp_path / "inline" / "final" / "weights.safetensors")
    wb = load_file(tmp_path / "workers" / "final" / "weights.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_mixed_precision_trains_the_float32_weights(tiny_seqs, coco_dir):
    """bfloat16 autocast (what --amp auto takes on a GPU; the CPU runs it too): the loss is finite, it has
    gradients, and the weights the optimiser updates stay float32."""
    from service.training.loop import amp_dtype

    torch.set_num_threads(1)
    assert amp_dtype("auto", torch.device("cpu")) is None and amp_dtype("off", torch.device("cuda")) is None
    assert amp_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(ValueError):
        amp_dtype("fp8", torch.device("cpu"))
    cfg = TrainConfig(**{**TINY, "p_corrupt": 0.0, "occlusions": True})
    model, opt = build(cfg, torch.device("cpu"))
    seq = load_sequences(tiny_seqs / "dog")[0]
    c = real_clip(seq, np.random.default_rng(4), 3, (64, 96))
    flows = clip_flows(c, make_flow("dis"), True)
    full = train_step(model, c, flows, torch.device("cpu"), cfg)[0].detach()
    loss, iou = train_step(model, c, flows, torch.device("cpu"), cfg, torch.bfloat16)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and 0 <= iou <= 1
    assert abs(float(loss.detach()) - float(full)) < 0.05 * float(full)  # the same loss, to bfloat16's precision
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = model.state_dict()
    assert all(v.dtype == before[k].dtype for k, v in after.items())
    assert any(not torch.equal(v, before[k]) for k, v in after.items() if v.is_floating_point())


def _numbered_sequence(n: int = 40) -> Sequence:
    """Frame t is the grey level 5t everywhere (so a clip's frames name their source frames), one square object."""
    frames = np.repeat((5 * np.arange(n, dtype=np.uint8))[:, None, None, None], 3, axis=3) * np.ones(
        (1, 60, 90, 3), np.uint8)
    labels = np.zeros((n, 60, 90), np.uint8)
    labels[:, 15:45, 20:60] = 1
    return Sequence("numbered", frames, labels, np.ones(n, bool))


def test_far_reference_clips_take_the_reference_from_outside_the_propagated_frames():
    seq = _numbered_sequence()
    refs = set()
    for s in range(30):
        c = real_clip(seq, np.random.default_rng(s), 4, (64, 96), far_reference=True)
        assert c.far_reference and c.frames.shape == (5, 64, 96, 3) and c.ids == [1]
        src = [int(f[32, 48, 0]) // 5 for f in c.frames]  # (T,) source frame of each clip frame
        ref, span = src[0], src[1:]
        assert not min(span) <= ref <= max(span)
        refs.add(ref)
    assert len(refs) > 10  # drawn all over the sequence, not a fixed offset
    plain = real_clip(seq, np.random.default_rng(4), 4, (64, 96))
    assert not plain.far_reference and len(plain.frames) == 4
    clips = [make_clip([seq], np.random.default_rng([5, i]), 3, (64, 96), p_composite=0, p_synthetic=0,
                       p_far_reference=1.0) for i in range(4)]
    assert all(k.far_reference and len(k.frames) == 4 for k in clips)
    # Off by default, and then nothing is drawn for it: the same clips as before the option existed.
    a = make_clip([seq], np.random.default_rng(9), 3, (64, 96), p_composite=0, p_synthetic=0)
    b = make_clip([seq], np.random.default_rng(9), 3, (64, 96), p_composite=0, p_synthetic=0, p_far_reference=0.0)
    assert not a.far_reference and np.array_equal(a.frames, b.frames)


def test_a_far_reference_clip_trains_on_the_frames_after_its_start():
    torch.set_num_threads(1)
    cfg = TrainConfig(**{**TINY, "p_far_reference": 1.0})
    model, _ = build(cfg, torch.device("cpu"))
    c = real_clip(_numbered_sequence(), np.random.default_rng(0), 3, (64, 96), far_reference=True)
    seen = []
    flow = make_flow("none")
    flows = clip_flows(c, lambda a, b: seen.append((a, b)) or flow(a, b), cfg.occlusions)
    loss, iou = train_step(model, c, flows, torch.device("cpu"), cfg)
    assert torch.isfinite(loss) and 0 <= iou <= 1
    # Propagation starts at frame 1 (its exact mask): flows 1->2 and 2->3 only, never from the reference frame.
    grey = [int(g[0, 0]) for pair in seen for g in pair]
    src = [int(f[32, 48, 0]) for f in c.frames]
    assert grey == [src[2], src[1], src[3], src[2]]


@pytest.mark.parametrize("occlusions", [False, True])
def test_training_warps_the_previous_masks_as_the_tracker_does(occlusions):
    """With `occlusions` (and `absent_loss`, whose areas share the step) the network learns on the warps the
    tracker gives it by default: both flows of each step, and what an object uncovered taken out of its
    warped mask (flow.drop_uncovered)."""
    from service.vos.flow import drop_uncovered, visible_before, warp_masks

    torch.set_num_threads(1)
    cfg = TrainConfig(**{**TINY, "p_corrupt": 0.0, "occlusions": occlusions, "absent_loss": True})
    model, _ = build(cfg, torch.device("cpu"))
    seq = load_sequences(require(TRAIN240 / "dog"))[0]
    c = real_clip(seq, np.random.default_rng(3), 2, (64, 96))
    calls, inputs = [], []
    dis = make_flow("dis")

    def flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        calls.append((a, b, dis(a, b)))
        return calls[-1][2]

    model.register_forward_pre_hook(lambda m, args: inputs.append(args[1].detach().clone()))
    train_step(model, c, clip_flows(c, flow, cfg.occlusions), torch.device("cpu"), cfg)
    grays = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in c.frames]
    assert len(calls) == (2 if occlusions else 1) and len(inputs) == 1
    assert np.array_equal(calls[0][0], grays[1]) and np.array_equal(calls[0][1], grays[0])  # the backward flow
    first = torch.from_numpy(np.stack([c.labels[0] == i for i in c.ids]).astype(np.float32))
    want = warp_masks(first, calls[0][2])
    if occlusions:
        assert np.array_equal(calls[1][0], grays[0]) and np.array_equal(calls[1][1], grays[1])  # the forward flow
        want = drop_uncovered(want, torch.from_numpy(visible_before(calls[0][2], calls[1][2])))
    assert torch.equal(inputs[0], want)
