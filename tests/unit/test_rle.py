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


# -- the compressed counts, the decoder's checks, the frame entries (tests that fail when the code is wrong:
#    docs/TESTING.md) ----------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 10_000_000), max_size=30))
def test_any_counts_survive_the_compressed_form(counts):
    """Large runs take several characters, and from the fourth count on the deltas may be negative."""
    s = reference_string(counts)
    assert rle._string_to_counts(s) == counts


def test_counts_strings_are_checked_character_by_character():
    assert rle._string_to_counts("") == []
    assert rle._string_to_counts("0") == [0] and rle._string_to_counts("?") == [15]  # the largest in one char
    assert rle._string_to_counts("o0") == [0b11111]  # 0x3F: more follows; then 0: a positive number ends
    with pytest.raises(ValueError, match="^counts end inside a number$"):
        rle._string_to_counts("00o")  # 'o' (0x3F) says more follows, and nothing does
    for bad in ("/", "p", "0/", "0\x7f"):  # one below and one past the 64-character alphabet
        with pytest.raises(ValueError, match="^counts hold a character outside the alphabet: "):
            rle._string_to_counts(bad)
    with pytest.raises(ValueError, match="^counts must not be negative$"):
        rle._string_to_counts("O")  # 0x1F: the sign bit 0x10 set, and nothing follows: -1 as a first count
    with pytest.raises(ValueError, match="^counts must be an ASCII string$"):
        rle._string_to_counts(["1", "2"])
    with pytest.raises(ValueError, match="^counts must be an ASCII string$"):
        rle._string_to_counts("1é")


def test_the_third_count_is_absolute_and_the_fourth_a_delta():
    counts = [1, 2, 3, 1]  # the fourth is written as 1 - 2 = -1
    s = reference_string(counts)
    assert rle._string_to_counts(s) == counts and len(s) == 4
    assert rle.decode({"size": [7, 1], "counts": s}).ravel().tolist() == [0, 1, 1, 0, 0, 0, 1]


def test_decode_refuses_sizes_that_do_not_fit_and_gives_a_c_ordered_uint8_mask():
    for bad in ({"size": [-2, -2], "counts": "4"}, {"size": [2, -2], "counts": ""}, {"size": [-1, 0], "counts": ""}):
        with pytest.raises(ValueError) as e:
            rle.decode(bad)
        assert str(e.value) == "RLE counts do not add up to the mask size"
    for bad in ({"size": None, "counts": "0"}, {"size": ["a", "b"], "counts": "0"}, {"size": [1, 1]},
                {"size": [1, 1], "counts": [1]}):
        with pytest.raises(ValueError, match=r"^not a COCO RLE \(.+\)$"):
            rle.decode(bad)
    assert rle.decode({"size": [0, 5], "counts": ""}).shape == (0, 5)
    assert rle.decode({"size": [5, 0], "counts": ""}).shape == (5, 0)
    m = np.zeros((3, 4), bool)
    m[:, 1] = True
    m[2, 3] = True
    back = rle.decode(rle.encode(m))
    assert back.dtype == np.uint8 and back.flags["C_CONTIGUOUS"] and set(np.unique(back)) == {0, 1}
    assert np.array_equal(back, m)
    assert rle.decode({"size": ["3", "4"], "counts": rle.encode(m)["counts"]}).shape == (3, 4)  # text sizes


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.float32, np.uint16])
def test_masks_of_any_numeric_type_encode_as_binary(dtype):
    m = np.zeros((4, 5), dtype)
    m[1:3, 2:4] = 1
    m[0, 0] = 3  # any non-zero value is foreground
    want = m.astype(bool)
    assert rle.encode(m) == rle.encode(want) and np.array_equal(rle.decode(rle.encode(m)), want)
    assert rle.area_bbox(m) == (5, [0, 0, 4, 3])


def test_encode_gives_plain_json_types():
    r = rle.encode(np.ones((2, 3), np.uint8) * 7)  # any non-zero value is foreground
    assert r == {"size": [2, 3], "counts": "06"} and all(type(v) is int for v in r["size"])
    assert type(r["counts"]) is str
    area, bbox = rle.area_bbox(np.eye(3, 5, 1, dtype=bool))
    assert (area, bbox) == (3, [1, 0, 3, 3]) and type(area) is int and all(type(v) is int for v in bbox)


def test_frame_objects_give_each_object_its_rle_area_and_box():
    labels = np.zeros((6, 8), np.uint8)
    labels[1:3, 2:5] = 4
    labels[5, 7] = 9
    objs = rle.frame_objects(labels, [4, 9, 11])
    assert [set(o) for o in objs] == [{"id", "rle", "area", "bbox"}] * 3
    four, nine, eleven = objs
    assert (four["area"], four["bbox"]) == (6, [2, 1, 3, 2]) and (nine["area"], nine["bbox"]) == (1, [7, 5, 1, 1])
    empty = {"size": [6, 8], "counts": reference_string([48])}
    assert (eleven["area"], eleven["bbox"], eleven["rle"]) == (0, [0, 0, 0, 0], empty)
    assert np.array_equal(rle.decode(four["rle"]), labels == 4) and type(four["rle"]["counts"]) is str
    assert all(type(o["id"]) is int and type(o["area"]) is int for o in objs)
    back = rle.objects_to_labels(objs, (6, 8))
    assert back.dtype == np.uint8 and np.array_equal(back, labels)
    wrong = [{"id": 4, "area": 0, "rle": four["rle"]}]  # an entry whose area says empty is skipped
    assert not rle.objects_to_labels(wrong, (6, 8)).any()
    assert rle.objects_to_labels([], (2, 3)).shape == (2, 3)
