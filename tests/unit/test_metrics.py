import cv2
import numpy as np
import pytest

from service.media import read_label_png
from service.vos.metrics import SequenceScorer, f_measure, jaccard, seg2bmap, summarize

from ..conftest import TRAIN240, require
from . import davis_reference as ref


def _perturb(lab: np.ndarray, seed: int) -> np.ndarray:
    """A plausible wrong prediction: shifted, eroded or dilated, with a spurious blob."""
    rng = np.random.default_rng(seed)
    out = np.roll(lab, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), axis=(0, 1))
    k = np.ones((5, 5), np.uint8)
    out = cv2.erode(out, k) if seed % 2 else cv2.dilate(out, k)
    y, x = rng.integers(0, lab.shape[0] - 20), rng.integers(0, lab.shape[1] - 20)
    out[y:y + 15, x:x + 15] = lab.max()
    return out


def test_boundary_maps_agree_with_the_reference():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = cv2.dilate((rng.random((23, 31)) > 0.93).astype(np.uint8), np.ones((3, 3), np.uint8))
        assert np.array_equal(seg2bmap(m), ref.boundary(m))


def test_edge_cases():
    z = np.zeros((10, 10), bool)
    o = z.copy()
    o[2:5, 2:5] = True
    assert jaccard(z, z) == 1 and f_measure(z, z) == 1
    assert jaccard(o, z) == 0 and f_measure(o, z) == 0 and f_measure(z, o) == 0
    assert jaccard(o, o) == 1 and f_measure(o, o) == 1
    void = np.ones((10, 10), bool)
    assert jaccard(o, z, void) == 1


def test_real_sequence_agrees_with_the_independent_implementation():
    seq = require(TRAIN240 / "dog")
    files = sorted((seq / "Annotations").iterdir())[:7]
    gts = [read_label_png(f.read_bytes())[0] for f in files]
    # a second object so that per-object averaging is exercised
    for g in gts:
        g[:40, :60][g[:40, :60] == 0] = 2
    preds = [_perturb(g, i) for i, g in enumerate(gts)]
    scorer = SequenceScorer("dog")
    for g, p in zip(gts, preds, strict=True):
        scorer.add(g, p)
    ours = {s.object_id: (s.j, s.f) for s in scorer.result()}
    theirs = ref.evaluate(gts, preds)
    assert ours.keys() == theirs.keys() == {1, 2}
    for obj in ours:
        assert ours[obj][0] == pytest.approx(theirs[obj][0], abs=1e-3)
        assert ours[obj][1] == pytest.approx(theirs[obj][1], abs=1e-3)
    assert 0.2 < ours[1][0] < 0.99  # the perturbation is visible: the check is not vacuous


def test_first_and_last_frames_are_not_scored():
    gt = np.zeros((20, 20), np.uint8)
    gt[5:15, 5:15] = 1
    bad = np.zeros_like(gt)
    s = SequenceScorer("x")
    for p in (bad, gt, gt, bad):
        s.add(gt, p)
    (r,) = s.result()
    assert r.j == 1 and r.f == 1
    m = summarize(s.result())
    assert m["J&F"] == 1
