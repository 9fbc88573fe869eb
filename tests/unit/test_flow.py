import cv2
import numpy as np
import pytest
import torch

from service.vos import make_flow, warp_masks


def _texture(h=96, w=128, seed=0):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 255, (h, w), dtype=np.uint8), (5, 5), 1.5)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)


def test_warp_with_constant_flow_shifts_and_fills_background():
    m = torch.zeros(1, 8, 8)
    m[0, 2:4, 2:4] = 1
    flow = np.zeros((8, 8, 2), np.float32)
    flow[..., 0] = -3  # each current pixel comes from 3 px to its left: content moves right by 3
    out = warp_masks(m, flow)
    assert torch.allclose(out[0, 2:4, 5:7], torch.ones(2, 2), atol=1e-5)
    assert float(out.sum()) == pytest.approx(4, abs=1e-4)
    flow[..., 0] = 100  # everything comes from outside the frame
    assert warp_masks(m, flow).sum() == 0


def test_warp_is_bilinear():
    m = torch.zeros(1, 4, 4)
    m[0, :, 1] = 1
    flow = np.zeros((4, 4, 2), np.float32)
    flow[..., 0] = 0.5
    out = warp_masks(m, flow)
    assert torch.allclose(out[0, :, 0], torch.full((4,), 0.5))
    assert torch.allclose(out[0, :, 1], torch.full((4,), 0.5))


@pytest.mark.parametrize("name", ["dis", "farneback"])
def test_estimators_recover_a_translation(name):
    prev = _texture()
    cur = np.roll(prev, shift=(2, 3), axis=(0, 1))  # content moved down 2, right 3
    flow = make_flow(name)(cur, prev)
    assert flow.shape == (96, 128, 2) and flow.dtype == np.float32
    inner = flow[16:-16, 16:-16]
    assert np.median(inner[..., 0]) == pytest.approx(-3, abs=0.5)
    assert np.median(inner[..., 1]) == pytest.approx(-2, abs=0.5)


def test_none_flow_and_unknown_names():
    f = make_flow("none")(_texture(), _texture(seed=1))
    assert not f.any()
    with pytest.raises(ValueError, match="unknown flow"):
        make_flow("flownet")


def _square_flows(x0: int, x1: int, step: int, h: int = 32, w: int = 64):
    """A square on rows 8-24, at columns x0:x1 in the previous frame, moved right by `step` over a static
    background: the backward flow of the current frame and the forward flow of the previous one."""
    backward, forward = np.zeros((h, w, 2), np.float32), np.zeros((h, w, 2), np.float32)
    backward[8:24, x0 + step:x1 + step, 0] = -step
    forward[8:24, x0:x1, 0] = step
    return backward, forward


def test_only_what_an_object_uncovered_is_not_visible_before():
    from service.vos.flow import visible_before

    backward, forward = _square_flows(10, 26, 6)
    seen = visible_before(backward, forward)
    assert seen.shape == (32, 64) and seen.dtype == np.float32
    hidden = np.zeros((32, 64), bool)
    hidden[8:24, 10:16] = True  # the strip the square moved off
    assert np.array_equal(seen == 0, hidden)
    assert visible_before(*_square_flows(10, 26, 0)).all()  # nothing moved: all consistent
    # Sub-pixel disagreement is tolerated (0.5 px^2 plus 1 % of the motion), a full pixel is not.
    assert visible_before(np.full((4, 4, 2), 0.4, np.float32), np.zeros((4, 4, 2), np.float32)).all()
    assert not visible_before(np.full((4, 4, 2), 1.0, np.float32), np.zeros((4, 4, 2), np.float32)).any()


def test_uncovered_pixels_are_dropped_unless_they_are_much_of_the_mask():
    from service.vos.flow import UNCOVERED_CAP, drop_uncovered

    warped = torch.zeros(3, 10, 10)
    warped[0, :, :] = 1  # 100 px, 10 of them uncovered: dropped
    warped[1, 0:2, 0:5] = 0.5  # 10 px of 0.5, all uncovered: the flow failed on it, kept
    seen = torch.ones(10, 10)
    seen[0, :] = 0
    seen[1, :5] = 0
    got = drop_uncovered(warped, seen)
    assert torch.equal(got[0], warped[0] * seen) and torch.equal(got[1], warped[1]) and not got[2].any()
    assert 0 < UNCOVERED_CAP < 1
    assert torch.equal(drop_uncovered(warped, seen, cap=0.0)[0], warped[0])  # any loss is too much
    assert drop_uncovered(warped[:0], seen).shape == (0, 10, 10)
