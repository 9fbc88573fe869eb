"""COCO RLE as pycocotools defines it: column-major runs starting with zeros, compressed counts.

The reference here is written from the format's definition (not from service/media/rle.py) and
checked against pycocotools itself, on random masks and on the edge shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as coco

from service.media import rle


def reference_counts(mask: np.ndarray) -> list[int]:
    """Run lengths in column-major order, the first run being zeros (maybe of length 0)."""
    flat = [int(v) for col in np.asarray(mask, bool).T for v in col]
    counts, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(n)
            cur, n = v, 0
        n += 1
    counts.append(n)
    return counts


def reference_string(counts: list[int]) -> str:
    """pycocotools' rleToString: deltas from two counts back, 5 bits per char, +48."""
    out = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = (x != -1) if ch & 0x10 else (x != 0)
            out.append(chr((ch | 0x20 if more else ch) + 48))
    return "".join(out)


def _check(mask: np.ndarray) -> None:
    mask = mask.astype(bool)
    r = rle.encode(mask)
    assert r["size"] == list(mask.shape)
    assert r["counts"] == reference_string(reference_counts(mask))
    assert r["counts"] == coco.encode(np.asfortranarray(mask, np.uint8))["counts"].decode()
    back = rle.decode(r)
    assert back.dtype == np.uint8 and back.shape == mask.shape and np.array_equal(back.astype(bool), mask)
    area, bbox = rle.area_bbox(mask)
    assert area == int(mask.sum())
    if area:
        ys, xs = np.nonzero(mask)
        assert bbox == [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    else:
        assert bbox == [0, 0, 0, 0]


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (23, 1), (5, 7), (480, 854)])
@pytest.mark.parametrize("fill", ["empty", "full", "first", "last", "column", "row"])
def test_edge_masks(shape, fill):
    m = np.zeros(shape, bool)
    if fill == "full":
        m[:] = True
    elif fill == "first":
        m[0, 0] = True
    elif fill == "last":
        m[-1, -1] = True
    elif fill == "column":
        m[:, -1] = True
    elif fill == "row":
        m[-1, :] = True
    _check(m)


def test_not_row_major():
    m = np.zeros((2, 3), bool)
    m[0, 1] = True  # column-major order: (0,0) (1,0) (0,1) -> runs 2, 1, 3
    assert reference_counts(m) == [2, 1, 3]
    assert rle.decode(rle.encode(m))[0, 1] == 1 and rle.decode(rle.encode(m)).sum() == 1


@settings(max_examples=150, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 40), st.integers(1, 40))))
def test_random_masks(mask):
    _check(mask)


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 30), st.integers(1, 30)), elements=st.sampled_from([0, 3, 7, 12])))
def test_frames_round_trip_with_noncontiguous_ids(labels):
    objs = rle.frame_objects(labels, [3, 7, 12])
    assert [o["id"] for o in objs] == [3, 7, 12]  # every id, empty or not
    assert np.array_equal(rle.objects_to_labels(objs, labels.shape), labels)


@pytest.mark.parametrize("bad", [
    {"size": [2, 2], "counts": "3"},  # sums to 3, not 4
    {"size": [2, 2], "counts": "9"},  # 9 > 4: pycocotools would write past the mask
    {"size": [2, 2], "counts": "\x7f"},
    {"size": [2, 2], "counts": "é"},
    {"size": [2, 2], "counts": 5},
    {"size": [2], "counts": "4"},
    {"counts": "4"},
    {"size": [2, 2], "counts": "1o"},  # a number cut short
])
def test_malformed_rle_is_refused(bad):
    with pytest.raises(ValueError):
        rle.decode(bad)
