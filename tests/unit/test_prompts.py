"""Prompt documents (RLE, polygons, boxes, clicks, removals) and GrabCut prompts."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.media.errors import MediaError
from service.media.inputs import inspect_inputs
from service.media.prompts import Prompt, check_frames, frame_json, object_ids, parse_document
from service.media.rle import encode
from service.vos.errors import TrackerInputError
from service.vos.prompts import prompt_to_mask

from ..conftest import REAL, require


def _mask(h=20, w=30, box=(5, 4, 15, 12)) -> np.ndarray:
    m = np.zeros((h, w), bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    return m


def test_both_forms_give_the_same_prompts():
    rle = encode(_mask())
    a = parse_document({"frames": {"3": {"7": rle, "2": {"box": [1, 2, 10, 12], "points": [[4, 5, 1], [9, 9, 0]]},
                                         "5": {"remove": True}, "9": {"polygons": [[1, 1, 8, 1, 8, 6]]}}}})
    b = parse_document({"prompts": [{"frame": 3, "id": 7, "rle": rle}, {"frame": 3, "id": 2, "box": [1, 2, 10, 12],
                                                                       "points": [[4, 5, 1], [9, 9, 0]]},
                                    {"frame": 3, "id": 5, "remove": True},
                                    {"frame": 3, "id": 9, "polygons": [[1, 1, 8, 1, 8, 6]]}]})
    assert set(a[3]) == set(b[3]) == {2, 5, 7, 9}
    for i in (2, 5, 9):
        assert a[3][i] == b[3][i]
    assert np.array_equal(a[3][7].mask((20, 30)), _mask()) and np.array_equal(b[3][7].mask((20, 30)), _mask())
    assert a[3][5].empty and not a[3][7].empty and a[3][2].needs_frame
    assert object_ids(a.values()) == {2, 7, 9}  # a removal alone does not make an object
    poly = a[3][9].mask((20, 30))
    assert poly[2, 6] and not poly[10, 20] and 10 < poly.sum() < 40
    # the compact per-frame JSON reads back to the same prompts
    again = parse_document({"frames": {"3": json.loads(frame_json(a[3]))}})
    assert {i: p.to_json() for i, p in again[3].items()} == {i: p.to_json() for i, p in a[3].items()}


@pytest.mark.parametrize("doc, text", [
    ([], "expected"),
    ({"frames": {"x": {"1": {"remove": True}}}}, "0-based"),
    ({"frames": {"-1": {"1": {"remove": True}}}}, "0-based"),
    ({"frames": {"0": {"0": {"remove": True}}}}, "1..254"),
    ({"frames": {"0": {"255": {"remove": True}}}}, "1..254"),
    ({"frames": {"0": {"1": {"box": [1, 2, 3]}}}}, "box must be"),
    ({"frames": {"0": {"1": {"box": [1, 2, "a", 4]}}}}, "a number"),
    ({"frames": {"0": {"1": {"box": [1, 2, float("nan"), 4]}}}}, "a number"),
    ({"frames": {"0": {"1": {"points": [[1, 2, 0]]}}}}, "positive click"),
    ({"frames": {"0": {"1": {"points": [[1, 2]]}}}}, "a point is"),
    ({"frames": {"0": {"1": {"polygons": [[1, 2, 3, 4]]}}}}, "at least 3 points"),
    ({"frames": {"0": {"1": {"counts": "abc"}}}}, "size"),
    ({"frames": {"0": {"1": {"size": [2, 2], "counts": "4", "box": [0, 0, 1, 1]}}}}, "exactly one"),
    ({"frames": {"0": {"1": {"colour": "red"}}}}, "exactly one"),
    ({"frames": {"0": {"1": {"remove": True, "extra": 1}}}}, "unknown fields"),
    ({"frames": {}}, "no prompts"),
    ({"prompts": [{"frame": 0}]}, "frame and an id"),
])
def test_malformed_documents_are_refused_with_the_place(doc, text):
    with pytest.raises(MediaError, match=text):
        parse_document(doc)


def test_prompts_must_fit_the_frames():
    p = parse_document({"frames": {"2": {"1": {"box": [0, 0, 31, 10]}}}})
    with pytest.raises(MediaError, match="not inside"):
        check_frames(p, (20, 30), 5)
    with pytest.raises(MediaError, match="does not exist"):
        check_frames(parse_document({"frames": {"9": {"1": {"remove": True}}}}), (20, 30), 5)
    with pytest.raises(MediaError, match="not the frame"):
        check_frames(parse_document({"frames": {"0": {"1": encode(_mask(10, 10))}}}), (20, 30), 5)
    with pytest.raises(MediaError, match="outside"):
        check_frames(parse_document({"frames": {"0": {"1": {"points": [[30, 0, 1]]}}}}), (20, 30), 5)
    with pytest.raises(MediaError, match="add up"):
        check_frames(parse_document({"frames": {"0": {"1": {"size": [20, 30], "counts": "5"}}}}), (20, 30), 5)


@settings(max_examples=40, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                    max_leaves=12))
def test_any_json_is_parsed_or_refused_cleanly(doc):
    try:
        parse_document({"frames": {"0": {"1": doc}}})
    except MediaError:
        pass


def test_json_prompts_file_as_the_masks_of_a_video(tmp_path):
    frames = tmp_path / "f"
    frames.mkdir()
    for i in range(4):
        cv2.imwrite(str(frames / f"{i:05d}.jpg"), np.full((20, 30, 3), 40 * i, np.uint8))
    doc = {"frames": {"0": {"3": encode(_mask())}, "2": {"8": {"box": [2, 2, 20, 15]}, "3": {"remove": True}}}}
    (tmp_path / "p.json").write_text(json.dumps(doc))
    s = inspect_inputs(frames, tmp_path / "p.json")
    assert s.object_ids == [3, 8] and s.schedule == {0: 0, 2: 2} and s.palette is None
    (tmp_path / "bad.json").write_text(json.dumps({"frames": {"4": {"3": {"remove": True}}}}))
    with pytest.raises(MediaError, match="does not exist"):
        inspect_inputs(frames, tmp_path / "bad.json")
    (tmp_path / "none.json").write_text(json.dumps({"frames": {"0": {"3": {"remove": True}}}}))
    with pytest.raises(MediaError, match="no object"):
        inspect_inputs(frames, tmp_path / "none.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(MediaError, match="JSON"):
        inspect_inputs(frames, tmp_path / "junk.json")


def test_grabcut_from_a_box_finds_the_object():
    from PIL import Image

    seq = require(REAL / "camel")
    rgb = cv2.cvtColor(cv2.imread(str(seq / "JPEGImages" / "00000.jpg")), cv2.COLOR_BGR2RGB)
    gt = np.array(Image.open(seq / "Annotations" / "00000.png")) > 0
    ys, xs = np.nonzero(gt)
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    m = prompt_to_mask(rgb, box)
    filled = np.zeros_like(gt)
    filled[box[1]:box[3], box[0]:box[2]] = True
    j = (m & gt).sum() / (m | gt).sum()
    assert j > (filled & gt).sum() / (filled | gt).sum() + 0.1  # better than the box itself
    assert not m[:, : box[0]].any() and not m[: box[1]].any()  # never outside the box
    clicks = prompt_to_mask(rgb, points=[[int(xs.mean()), int(ys.mean()), 1]])
    assert clicks[int(ys.mean()), int(xs.mean())] and clicks.sum() > 100
    with pytest.raises(TrackerInputError):
        prompt_to_mask(rgb, [10, 10, 5, 5])
    with pytest.raises(TrackerInputError):
        prompt_to_mask(rgb, points=[[10, 10, 0]])


def test_prompt_masks_of_label_pngs_are_kept_as_given():
    m = _mask()
    assert Prompt(label_mask=m).mask((20, 30)) is m
    assert Prompt(remove=True).mask((20, 30)).sum() == 0


def test_the_prompt_study_corrects_where_the_run_drifted_most():
    """validate --prompts: the correction goes to the worst frame of the uncorrected run, the corrected run
    continues from the saved state there, and giving the truth on that frame cannot make it worse there."""
    from service.tracking.prompt_study import FIRST, LAST, format_table, study
    from service.training.datasets import load_sequences
    from service.vos.baseline import FlowOnlyModel

    seq = load_sequences(require(REAL), max_side=240, names=["bmx-trees"])[0]
    n = 16
    r = study(FlowOnlyModel(long_side=256), seq.name, seq.frames[:n], seq.labels[:n], "dis", 256)
    assert int(FIRST * n) <= r.correction_frame < int(LAST * n)
    assert 0 <= r.j_at_correction < 0.9 and 0 < r.grabcut_j < 1
    # Flow-only copies what it is given: the corrected frames start from the truth, the others drift.
    assert r.after_corrected > r.after_uncorrected
    assert 0 < r.box_jf < 1 and 0 < r.mask_jf < 1
    table = format_table([r])
    assert table.count("\n") == 3 and "bmx-trees" in table
