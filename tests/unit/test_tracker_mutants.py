"""The tracker's rules one at a time (service/vos/tracker.py), fast: the network size, mask resizing, the
checks of frames and prompts, the labels and scores of soft masks, and the saved state that a worker
resumes from. The networks are real (a small random one, and the flow-only baseline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from service.vos import Tracker, TrackerInputError, load_model, network_size
from service.vos.flow import NoFlow
from service.vos.labels import MAX_OBJECTS
from service.vos.tracker import STATE_FORMAT, STATE_VERSION, dumps, loads, masks_from_labels, resize_masks


@pytest.fixture(scope="module")
def tiny(small_model_dir):
    return load_model(small_model_dir)


@pytest.fixture(scope="module")
def flow_only():
    return load_model("flow-only")


def _frame(h=48, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _box(y0, y1, x0, x1, h=48, w=64):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


# -- the network size ------------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.integers(1, 4000), st.integers(1, 4000), st.integers(1, 64).map(lambda k: 32 * k))
def test_network_size_scales_the_long_side_and_keeps_the_shape(h, w, long_side):
    nh, nw = network_size(h, w, long_side)
    assert nh % 32 == 0 and nw % 32 == 0 and nh >= 32 and nw >= 32
    assert max(nh, nw) == long_side  # the long side is exactly the asked one
    assert (nh >= nw) == (h >= w) or nh == nw  # orientation kept
    short, nshort = min(h, w), min(nh, nw)
    exact = short * long_side / max(h, w)
    assert nshort == 32 if exact < 48 else abs(nshort - exact) <= 16  # the nearest multiple of 32


@pytest.mark.parametrize("long_side", [0, 16, 31, 33, 100, -32])
def test_a_long_side_must_be_a_positive_multiple_of_32(long_side):
    with pytest.raises(TrackerInputError) as e:
        network_size(480, 854, long_side)
    assert str(e.value) == f"long side must be a positive multiple of 32, got {long_side}"


def test_network_size_examples():
    assert network_size(480, 854, 864) == (480, 864)
    assert network_size(32, 32, 32) == (32, 32)
    assert network_size(10, 1000, 64) == (32, 64)  # the short side never goes under 32
    assert network_size(1000, 10, 64) == (64, 32)
    assert network_size(70, 100, 64) == (32, 64)  # 44.8 -> 32, not 64
    assert network_size(85, 100, 64) == (64, 64)  # 54.4 -> 64
    assert network_size(300, 200, 96) == (96, 64)


# -- masks -----------------------------------------------------------------------------------------------------
def test_resize_masks_area_averages_each_mask():
    full, half = np.ones((4, 8), bool), np.zeros((4, 8), bool)
    half[:, ::2] = True  # every other column
    out = resize_masks([full, half, np.zeros((4, 8), bool)], (2, 4))
    assert out.shape == (3, 2, 4) and out.dtype == np.float32
    assert np.all(out[0] == 1) and np.allclose(out[1], 0.5) and np.all(out[2] == 0)
    assert resize_masks([], (2, 4)).shape == (0, 2, 4)
    up = resize_masks([_box(0, 2, 0, 2, 4, 4)], (8, 8))[0]  # upscaling too: (w, h) in the right order
    assert up.shape == (8, 8) and up[:4, :4].min() == 1 and up[4:, :].max() == 0


def test_masks_from_labels_gives_every_present_id():
    lab = np.zeros((3, 4), np.uint8)
    lab[0, 0], lab[2, 3], lab[1, 1] = 7, 3, 3
    out = masks_from_labels(lab)
    assert sorted(out) == [3, 7] and all(type(i) is int for i in out)
    assert out[3].dtype == bool and out[3].sum() == 2 and out[7][0, 0] and out[7].sum() == 1
    assert masks_from_labels(np.zeros((2, 2), np.uint8)) == {}


# -- a new tracker and its inputs ------------------------------------------------------------------------------
def test_a_new_tracker(tiny):
    t = Tracker(tiny)
    assert t.long_side == tiny.config.long_side and t.flow.name == "dis"
    assert (t.ids, t.tracked, t.num_objects, t.frames_seen) == ([], [], 0, 0)
    assert (t.scores, t.events, t.input_size, t.net_size) == ({}, [], None, None)
    assert t.timings == {"flow": 0.0, "network": 0.0}
    mine = NoFlow()
    assert Tracker(tiny, flow=mine, long_side=64).flow is mine
    assert Tracker(tiny, flow="farneback", long_side=96).long_side == 96
    with pytest.raises(TrackerInputError, match="got 100$"):
        Tracker(tiny, long_side=100)  # refused before any frame


def test_frames_must_be_rgb_uint8_of_one_size(flow_only):
    t = Tracker(flow_only, flow="none", long_side=64)
    for bad in (np.zeros((48, 64), np.uint8), np.zeros((48, 64, 3), np.float32), np.zeros((48, 64, 4), np.uint8),
                np.zeros((1, 48, 64, 3), np.uint8), [[0, 0, 0]]):
        with pytest.raises(TrackerInputError) as e:
            t.step(bad)
        assert str(e.value) == "frame must be an RGB uint8 array of shape (H,W,3)"
    assert t.input_size is None and t.frames_seen == 0
    t.step(_frame(96, 128))
    assert t.input_size == (96, 128) and t.net_size == (64, 64) and t.frames_seen == 1  # 48: rounded to even
    with pytest.raises(TrackerInputError) as e:
        t.step(_frame(96, 127))
    assert str(e.value) == "frame 1 is 127x96, earlier frames were 128x96"
    assert t.step(_frame(96, 128)).shape == (96, 128) and t.frames_seen == 2


def test_prompts_are_checked(flow_only):
    t = Tracker(flow_only, flow="none", long_side=64)
    t.step(_frame())
    cases = [
        (np.zeros((48, 63), np.uint8), "mask is 63x48, frame is 64x48"),
        ({0: _box(0, 4, 0, 4)}, f"object ids must be 1..{MAX_OBJECTS}, got 0"),
        ({MAX_OBJECTS + 1: _box(0, 4, 0, 4)}, f"object ids must be 1..{MAX_OBJECTS}, got {MAX_OBJECTS + 1}"),
        ({2: [[True]]}, "the mask of object 2 must be an (H,W) array"),
        ({2: np.zeros((48, 64, 1), bool)}, "the mask of object 2 must be an (H,W) array"),
        ({2: np.zeros((47, 64), bool)}, "mask of object 2 is 64x47, frame is 64x48"),
    ]
    for masks, message in cases:
        with pytest.raises(TrackerInputError) as e:
            t.step(_frame(seed=1), masks)
        assert str(e.value) == message
    assert t.ids == [] and t.frames_seen == 1
    out = t.step(_frame(seed=2), {MAX_OBJECTS: _box(0, 4, 0, 4), 1: np.zeros((48, 64), np.uint8)})  # ints count
    assert t.ids == [MAX_OBJECTS] and (out == MAX_OBJECTS).sum() == 16


def test_max_objects_can_be_tracked_at_once(flow_only):
    t = Tracker(flow_only, flow="none", long_side=64)
    every = {i: _box(i // 64, i // 64 + 1, i % 64, i % 64 + 1) for i in range(1, MAX_OBJECTS + 1)}
    out = t.step(_frame(), every)
    assert t.num_objects == MAX_OBJECTS and len(np.unique(out)) == MAX_OBJECTS + 1
    t.step(_frame(seed=1), {MAX_OBJECTS: np.zeros((48, 64), bool)})  # a removal
    assert t.num_objects == MAX_OBJECTS - 1 and len(t.ids) == MAX_OBJECTS


# -- labels and scores of soft masks ---------------------------------------------------------------------------
def _at(t: Tracker, size=(96, 128)) -> Tracker:
    t.step(_frame(*size))  # sets the input and network sizes
    return t


def test_labels_are_the_argmax_over_background_and_objects_at_input_size(tiny):
    t = _at(Tracker(tiny, flow="none", long_side=64))
    h, w = t.net_size
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(3, h, w, generator=g)
    probs = probs / probs.sum(0, keepdim=True) * torch.rand(1, h, w, generator=g)  # objects sum to at most 1
    labels, small = t._labels(probs, [9, 4, 200])
    assert labels.shape == (96, 128) and labels.dtype == np.uint8 and small.shape == (h, w)
    planes = torch.cat([1 - probs.sum(0, keepdim=True), probs])
    up = F.interpolate(planes[None], size=(96, 128), mode="bilinear", align_corners=False)[0]
    top2 = up.topk(2, dim=0).values
    sure = (top2[0] - top2[1] > 1e-5).numpy()  # where two planes are within rounding, either may win
    expect = np.array([0, 9, 4, 200], np.uint8)[up.argmax(0).numpy()]
    assert sure.mean() > 0.99 and np.array_equal(labels[sure], expect[sure])
    assert np.array_equal(small, planes.argmax(0).numpy())
    assert set(np.unique(labels)) == {0, 9, 4, 200}


def test_ties_go_to_the_earlier_plane(tiny):
    t = _at(Tracker(tiny, flow="none", long_side=64))
    h, w = t.net_size
    probs = torch.zeros(2, h, w)
    probs[:, :, : w // 2] = 0.45  # the two objects tie (background 0.1): the first object wins
    probs[0, :, w // 2:] = 0.5  # an object ties with the background: background wins
    labels, _ = t._labels(probs, [5, 6])
    assert set(np.unique(labels[:, :60])) == {5} and set(np.unique(labels[:, 68:])) == {0}
    assert t._labels(None, [5])[0].shape == (96, 128) and not t._labels(None, [5])[0].any()
    assert t._labels(probs, [])[1] is None


def test_scores_are_the_mean_probability_inside_each_predicted_mask(tiny):
    t = _at(Tracker(tiny, flow="none", long_side=64))
    t.ids = [2, 5, 8]  # 8 is known but not tracked on this frame
    h, w = t.net_size
    probs = torch.zeros(2, h, w)
    probs[0, :10, :10] = 0.8
    probs[0, 10:20, :10] = 0.6
    probs[1, 30:, 30:] = 0.123456
    labels, small = t._labels(probs, [2, 5])
    scores = t._scores(probs, small, [2, 5])
    assert scores == {2: 0.7, 5: 0.0, 8: 0.0}  # 5 is nowhere the argmax: an empty mask scores 0
    probs[1, 30:, 30:] = 0.923456
    _, small = t._labels(probs, [2, 5])
    assert t._scores(probs, small, [2, 5]) == {2: 0.7, 5: 0.9235, 8: 0.0}
    assert t._scores(None, None, []) == {2: 0.0, 5: 0.0, 8: 0.0}


# -- the saved state -------------------------------------------------------------------------------------------
def test_the_state_holds_everything_in_plain_types(tiny):
    t = Tracker(tiny, flow="dis", long_side=64)
    fresh = t.state_dict()
    assert fresh["format"] == STATE_FORMAT == "agss-tracker" and fresh["version"] == STATE_VERSION == 1
    assert fresh["input_size"] is None and fresh["net_size"] is None and fresh["prev_probs"] is None
    assert fresh["prev_gray"] is None and fresh["groups"] == [] and fresh["ids"] == [] and fresh["events"] == {}
    t.step(_frame(96, 128), {4: _box(5, 40, 5, 60, 96, 128), 2: _box(50, 90, 70, 120, 96, 128)})
    t.step(_frame(96, 128, seed=1), {7: _box(10, 30, 80, 100, 96, 128)})
    s = t.state_dict()
    assert (s["flow"], s["long_side"], s["ids"], s["frames_seen"]) == ("dis", 64, [2, 4, 7], 2)
    assert s["input_size"] == [96, 128] and s["net_size"] == [64, 64]
    assert [g["ids"] for g in s["groups"]] == [[2, 4], [7]]
    assert all(g["r5"].device.type == "cpu" and g["r5"].dtype == torch.float32 for g in s["groups"])
    assert s["prev_probs"].dtype == torch.float16 and s["prev_probs"].shape == (3, 64, 64)
    assert s["prev_gray"].dtype == torch.uint8 and s["prev_gray"].shape == (64, 64)
    assert s["events"] == t._events.state_dict() and set(s["events"]) == {2, 4, 7}
    s["ids"].append(99)
    s["groups"][0]["ids"].append(99)
    assert t.ids == [2, 4, 7] and t._groups[0].ids == [2, 4]  # copies, not the tracker's own lists
    back = loads(dumps(s))
    assert back["ids"] == [2, 4, 7, 99] and torch.equal(back["prev_probs"], s["prev_probs"])


def test_a_tracker_restored_from_bytes_continues_exactly(tiny):
    frames = [_frame(seed=i) for i in range(6)]
    first = {3: _box(5, 25, 5, 30), 12: _box(30, 45, 35, 60)}
    later = {5: _box(30, 46, 2, 20), 3: _box(8, 28, 8, 33)}

    def run(stop_at=None):
        t = Tracker(tiny, flow="dis", long_side=64)
        out = []
        for i, f in enumerate(frames):
            if i == stop_at:
                t = Tracker.from_state(tiny, loads(dumps(t.state_dict())))
                assert t.frames_seen == i and t.flow.name == "dis" and t.long_side == 64
            out.append((t.step(f, first if i == 0 else later if i == 3 else None), t.events, t.scores,
                        t.tracked, list(t.ids)))
        return out

    straight = run()
    for stop in (1, 3, 4):
        resumed = run(stop)
        for a, b in zip(straight, resumed, strict=True):
            assert np.array_equal(a[0], b[0]) and a[1:] == b[1:], stop


def test_a_restored_tracker_may_use_another_flow_and_refuses_other_states(tiny):
    t = Tracker(tiny, flow="dis", long_side=64)
    t.step(_frame(), {1: _box(5, 25, 5, 30)})
    state = loads(dumps(t.state_dict()))
    r = Tracker.from_state(tiny, state, flow="none")
    assert r.flow.name == "none" and r.ids == [1] and r.input_size == (48, 64) and r.net_size == (64, 64)
    assert isinstance(r.input_size, tuple) and isinstance(r.net_size, tuple)
    assert r._prev_probs.dtype == torch.float32 and r._prev_gray.dtype == np.uint8
    assert np.array_equal(r._prev_gray, t._prev_gray) and r._prev_gray is not t._prev_gray
    assert torch.equal(r._groups[0].ref.r5, t._groups[0].ref.r5) and r._groups[0].ids == [1]
    assert r._events.state_dict() == t._events.state_dict()
    fresh = Tracker.from_state(tiny, loads(dumps(Tracker(tiny, long_side=96).state_dict())))
    assert fresh.input_size is None and fresh.net_size is None and fresh._prev_probs is None and fresh.long_side == 96
    assert fresh._prev_gray is None and fresh.frames_seen == 0
    for bad in ({**state, "version": 2}, {**state, "format": "other"}, {"version": STATE_VERSION}):
        with pytest.raises(TrackerInputError) as e:
            Tracker.from_state(tiny, bad)
        assert str(e.value) == "not a tracker state of version 1"


class _RunsCode:
    def __reduce__(self):
        return (print, ("a state that runs code when it is loaded",))


def test_unreadable_state_bytes_are_one_typed_error():
    for data, kind in ((b"not a state", "UnpicklingError"), (b"", "EOFError"), (dumps({"x": 1})[:-5], None)):
        with pytest.raises(TrackerInputError, match=rf"^unreadable tracker state \({kind or '[A-Za-z]+'}\)$"):
            loads(data)
    with pytest.raises(TrackerInputError, match=r"^unreadable tracker state \(UnpicklingError\)$"):
        loads(dumps({"x": _RunsCode()}))  # a checkpoint from Redis never runs code (weights_only)
    assert loads(dumps({"a": torch.ones(2)}))["a"].tolist() == [1.0, 1.0]
    assert isinstance(dumps({}), bytes)
