import numpy as np
import pytest
import torch

from service.vos import Tracker, TrackerInputError, load_model, network_size


@pytest.fixture(scope="module")
def model(small_model_dir):
    return load_model(small_model_dir)


def _frame(h=60, w=100, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _labels(h=60, w=100, boxes=()):
    lab = np.zeros((h, w), np.uint8)
    for obj, (y0, y1, x0, x1) in boxes:
        lab[y0:y1, x0:x1] = obj
    return lab


def test_network_size_keeps_aspect_and_multiples_of_32():
    assert network_size(480, 854, 864) == (480, 864)
    assert network_size(1080, 1920, 864) == (480, 864)
    assert network_size(854, 480, 128) == (128, 64)
    with pytest.raises(TrackerInputError):
        network_size(480, 854, 100)


def test_ids_kept_as_given_and_output_at_input_size(model):
    t = Tracker(model, flow="none", long_side=128)
    first = _labels(boxes=[(3, (5, 25, 5, 30)), (7, (30, 55, 40, 70)), (12, (10, 40, 75, 95))])
    out0 = t.step(_frame(), first)
    assert np.array_equal(out0, first)  # the given masks come back on their frame
    assert t.ids == [3, 7, 12]
    out1 = t.step(_frame(seed=1))
    assert out1.shape == (60, 100) and out1.dtype == np.uint8
    assert set(np.unique(out1)) <= {0, 3, 7, 12}


def test_objects_that_appear_later_get_their_own_reference(model):
    t = Tracker(model, flow="dis", long_side=128)
    assert not t.step(_frame()).any()  # no object yet: all background
    t.step(_frame(seed=1), _labels(boxes=[(1, (5, 25, 5, 30))]))
    t.step(_frame(seed=2))
    t.step(_frame(seed=3), _labels(boxes=[(2, (30, 55, 40, 70)), (1, (0, 5, 0, 5))]))
    assert t.ids == [1, 2]  # id 1 given again is ignored, id 2 starts a second group
    assert [(g.start, g.stop) for g in t._groups] == [(0, 1), (1, 2)]
    out = t.step(_frame(seed=4))
    assert set(np.unique(out)) <= {0, 1, 2}


def test_vanishing_object_is_not_an_error(model):
    t = Tracker(model, flow="none", long_side=128)
    t.step(_frame(), _labels(boxes=[(5, (0, 2, 0, 2))]))  # tiny object
    for s in range(1, 6):
        out = t.step(_frame(seed=s))
        assert out.shape == (60, 100)
    assert t.ids == [5]


def test_bad_frames_and_masks(model):
    t = Tracker(model, long_side=128)
    with pytest.raises(TrackerInputError, match="RGB uint8"):
        t.step(np.zeros((60, 100), np.uint8))
    t.step(_frame(), _labels(boxes=[(1, (5, 25, 5, 30))]))
    with pytest.raises(TrackerInputError, match="earlier frames"):
        t.step(_frame(h=61))
    with pytest.raises(TrackerInputError, match="mask is"):
        t.step(_frame(), np.zeros((10, 10), np.uint8))


def _held_bytes(t: Tracker) -> int:
    total = t._prev_probs.numel() * 4 + t._prev_gray.nbytes
    return total + sum(g.ref.r5.numel() * 4 for g in t._groups)


def test_state_does_not_grow_with_video_length(model):
    t = Tracker(model, flow="dis", long_side=128)
    t.step(_frame(), _labels(boxes=[(1, (5, 25, 5, 30)), (2, (30, 55, 40, 70))]))
    for s in range(1, 4):
        t.step(_frame(seed=s))
    early = _held_bytes(t)
    tensors_early = len([v for v in vars(t).values() if isinstance(v, (torch.Tensor, np.ndarray, list))])
    for s in range(4, 30):
        t.step(_frame(seed=s))
    assert _held_bytes(t) == early
    assert len([v for v in vars(t).values() if isinstance(v, (torch.Tensor, np.ndarray, list))]) == tensors_early
    assert t.frames_seen == 30
