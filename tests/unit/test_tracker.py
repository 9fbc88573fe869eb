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
    t.step(_frame(seed=3), _labels(boxes=[(2, (30, 55, 40, 70))]))
    assert t.ids == [1, 2] and [g.ids for g in t._groups] == [[1], [2]]
    out = t.step(_frame(seed=4))
    assert set(np.unique(out)) <= {0, 1, 2}


def test_a_later_mask_of_a_tracked_object_is_a_correction(model):
    t = Tracker(model, flow="none", long_side=128)
    t.step(_frame(), _labels(boxes=[(3, (5, 25, 5, 30)), (7, (30, 55, 40, 70))]))
    t.step(_frame(seed=1))
    old_ref = t._groups[0].ref.r5.clone()
    fix = np.zeros((60, 100), bool)
    fix[40:58, 5:20] = True  # object 3 is somewhere else now
    out = t.step(_frame(seed=2), {3: fix})
    assert np.array_equal(out == 3, fix)  # the correction is the prediction on its frame
    assert [g.ids for g in t._groups] == [[7], [3]]  # 3 re-encoded in a group of its own; 7 keeps its state
    assert torch.equal(t._groups[0].ref.r5, old_ref)
    assert t.events == [{"type": "corrected", "id": 3}] and t.scores[3] == 1.0
    # With the flow-only model (masks carried by the flow alone) later frames follow the correction exactly.
    f = Tracker(load_model("flow-only"), flow="none", long_side=128)
    f.step(_frame(), _labels(boxes=[(3, (5, 25, 5, 30)), (7, (30, 55, 40, 70))]))
    f.step(_frame(seed=1), {3: fix})
    after = f.step(_frame(seed=2))
    assert np.array_equal(after == 3, fix) and np.array_equal(after == 7, _labels(boxes=[(7, (30, 55, 40, 70))]) == 7)


def test_an_empty_mask_removes_the_object_until_it_is_given_again():
    t = Tracker(load_model("flow-only"), flow="none", long_side=128)
    t.step(_frame(), _labels(boxes=[(3, (5, 25, 5, 30)), (7, (30, 55, 40, 70))]))
    out = t.step(_frame(seed=1), {3: np.zeros((60, 100), bool)})
    assert not (out == 3).any() and t.tracked == [7] and t.ids == [3, 7]
    assert t.events == [{"type": "removed", "id": 3}] and t.scores[3] == 0.0
    for s in range(2, 5):
        assert not (t.step(_frame(seed=s)) == 3).any()
    again = _labels(boxes=[(3, (10, 20, 10, 20))]) == 3
    assert np.array_equal(t.step(_frame(seed=5), {3: again}) == 3, again)
    assert t.tracked == [7, 3] and t.events == [{"type": "corrected", "id": 3}]


def test_scores_and_lost_and_reappeared_events(model):
    from service.vos.network import Reference

    class Scripted:
        """A model whose object probabilities are set by the test, frame by frame."""

        config = model.config
        device = torch.device("cpu")
        next_probs: torch.Tensor | None = None

        def preprocess(self, rgb):
            return torch.zeros(1, 3, *rgb.shape[:2])

        def encode_reference(self, image, masks):
            return Reference(torch.zeros(1, 1, 1, 1))

        def object_probs(self, image, warped, ref):
            return self.next_probs

    m = Scripted()
    t = Tracker(m, flow="none", long_side=128)
    t.step(_frame(), _labels(boxes=[(4, (0, 30, 0, 50))]))
    h, w = t.net_size
    p = torch.zeros(1, h, w)
    p[0, : h // 2, : w // 2] = 0.9
    m.next_probs = p
    t.step(_frame(seed=1))
    assert t.events == [] and 0.95 < t.scores[4] < 1  # 0.9 before the normalisation across objects
    m.next_probs = torch.zeros(1, h, w)
    assert not t.step(_frame(seed=2)).any()
    assert t.events == [{"type": "lost", "id": 4, "score": 0.0}]
    m.next_probs = p.clone()
    t.step(_frame(seed=3))
    assert [e["type"] for e in t.events] == ["reappeared"]
    big = torch.zeros(1, h, w)
    big[0] = 0.9
    m.next_probs = big
    t.step(_frame(seed=4))
    assert [e["type"] for e in t.events] == ["area_jump"] and t.events[0]["ratio"] > 2


@pytest.fixture(scope="module")
def match_model():
    """A small model that matches appearance (`AGSSConfig.match`), its match_in made non-zero."""
    from service.vos.network import AGSSConfig, build_model

    torch.manual_seed(0)
    m = build_model(AGSSConfig("efficientnet_lite0", 16, 128, match=True))
    with torch.no_grad():
        m.Encoder.match_in.weight.normal_(0, 1.0)
    return m


@pytest.mark.parametrize("which", ["model", "match_model"])
def test_a_restored_tracker_gives_the_same_labels_as_one_that_never_stopped(which, request):
    from service.vos.tracker import dumps, loads

    model = request.getfixturevalue(which)

    frames = [_frame(seed=s) for s in range(12)]
    first = _labels(boxes=[(3, (5, 25, 5, 30)), (12, (30, 55, 40, 70))])
    later = {5: _labels(boxes=[(5, (35, 58, 75, 95))]) == 5, 3: _labels(boxes=[(3, (8, 28, 8, 33))]) == 3}

    def run(stop_at: int | None) -> tuple[list[np.ndarray], list]:
        t = Tracker(model, flow="dis", long_side=128)
        out, events = [], []
        for i, f in enumerate(frames):
            if i == stop_at:
                state = loads(dumps(t.state_dict()))
                t = Tracker.from_state(model, state)
            out.append(t.step(f, first if i == 0 else later if i == 5 else None))
            events.append((t.events, t.scores))
        return out, events

    straight, ev_straight = run(None)
    for stop in (1, 5, 9):
        resumed, ev_resumed = run(stop)
        assert all(np.array_equal(a, b) for a, b in zip(straight, resumed, strict=True)), stop
        assert ev_resumed == ev_straight


def test_state_is_compact_and_refuses_anything_else(model):
    from service.vos.tracker import dumps, loads

    t = Tracker(model, flow="dis", long_side=128)
    t.step(_frame(), _labels(boxes=[(1, (5, 25, 5, 30))]))
    state = t.state_dict()
    assert state["prev_probs"].dtype == torch.float16 and state["prev_gray"].dtype == torch.uint8
    small = len(dumps(state))
    for s in range(1, 20):
        t.step(_frame(seed=s))
    assert abs(len(dumps(t.state_dict())) - small) < 512  # O(objects), not O(frames)
    with pytest.raises(TrackerInputError):
        loads(b"not a state")
    with pytest.raises(TrackerInputError):
        Tracker.from_state(model, {"format": "something else"})


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
    return total + sum(g.ref.r5.numel() * 4 for g in t._groups) + len(t._events.state_dict())


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


def test_a_match_model_follows_its_objects_through_corrections_and_refuses_a_plain_state(model, match_model):
    """The reference of a match model holds each object's mask at 1/16; an object corrected on a later frame
    leaves its group with its row, so every group's masks keep one row per object it tracks."""
    t = Tracker(match_model, flow="dis", long_side=128)
    t.step(_frame(), _labels(boxes=[(3, (5, 25, 5, 30)), (7, (30, 55, 40, 70)), (9, (5, 20, 70, 95))]))
    first = t._groups[0].ref.masks.clone()  # (3,h,w)
    assert first.shape[0] == 3 and t._groups[0].ref.feats.shape[-2:] == first.shape[-2:]
    t.step(_frame(seed=1), {7: _labels(boxes=[(7, (35, 58, 45, 75))]) == 7})
    assert [g.ids for g in t._groups] == [[3, 9], [7]]
    assert torch.equal(t._groups[0].ref.masks, first[[0, 2]])
    assert [g.ref.masks.shape[0] for g in t._groups] == [2, 1]
    out = t.step(_frame(seed=2))
    assert set(np.unique(out)) <= {0, 3, 7, 9}
    plain = Tracker(model, flow="dis", long_side=128)
    plain.step(_frame(), _labels(boxes=[(3, (5, 25, 5, 30))]))
    with pytest.raises(TrackerInputError, match="does not match appearance"):
        Tracker.from_state(match_model, plain.state_dict())


class _SquareFlow:
    """The exact flow of frames in which one white square moves over a static scene: for each pixel of the
    first frame, where it is in the second."""

    name = "square"

    def __call__(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        def left(gray):
            return int(np.nonzero((gray == 255).any(0))[0].min())

        flow = np.zeros((*first.shape, 2), np.float32)
        flow[first == 255, 0] = left(second) - left(first)
        return flow


def test_with_occlusions_an_object_leaves_no_mask_on_what_it_uncovers():
    """A square (object 1) moves right across a static object 2: a backward warp gives the strip it uncovers
    the square's label, so its mask grows a trail over object 2; with `occlusions` (the default) that strip
    is nobody's, and a restored tracker keeps the setting."""
    from service.vos.tracker import dumps, loads

    frames, first = [], None
    for t in range(6):
        f = np.full((64, 128, 3), 100, np.uint8)
        f[10:50, 20:110] = 50  # object 2, static
        f[20:36, 24 + 2 * t:40 + 2 * t] = 255  # object 1 in front, 2 px a frame (1/8 of its width)
        frames.append(f)
        if t == 0:
            first = np.where(f[..., 0] == 255, 1, np.where(f[..., 0] == 50, 2, 0)).astype(np.uint8)
    areas = {}
    for occlusions in (False, True):
        t = Tracker(load_model("flow-only"), flow=_SquareFlow(), long_side=128, occlusions=occlusions)
        out = [t.step(f, first if i == 0 else None) for i, f in enumerate(frames[:3])]
        t = Tracker.from_state(t.model, loads(dumps(t.state_dict())), flow=_SquareFlow())
        assert t.occlusions is occlusions
        out += [t.step(f) for f in frames[3:]]
        areas[occlusions] = int((out[-1] == 1).sum())
        assert np.array_equal(out[-1][20:36, 34:50], np.ones((16, 16)))  # the square itself, where it is now
    assert areas[True] == 16 * 16
    assert areas[False] == 16 * 16 + 5 * 2 * 16  # the trail: every strip uncovered so far
    assert Tracker(load_model("flow-only")).occlusions
    state = Tracker(load_model("flow-only"), flow="none").state_dict()
    del state["occlusions"]  # a state saved before occlusions were handled continues without
    assert not Tracker.from_state(load_model("flow-only"), state).occlusions
