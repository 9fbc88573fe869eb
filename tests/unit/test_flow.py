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
