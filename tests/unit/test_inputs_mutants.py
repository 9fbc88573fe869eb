"""The checks on a (video, prompts) pair before any work is done (service/media/inputs.py), on real files:
which file is a JSON prompts file, what the summary holds, where a refused prompt is named."""

from __future__ import annotations

import json
import zipfile

import cv2
import numpy as np
import pytest

from service.media import davis_palette, encode_label_png
from service.media.errors import MediaError
from service.media.inputs import inspect_inputs, read_prompts
from service.media.masks import MaskSet
from service.media.prompts import PromptFile
from service.vos.labels import MAX_OBJECTS

H, W = 24, 32


def _video(path, n=3):
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(n):
            zf.writestr(f"{i:05d}.jpg", cv2.imencode(".jpg", np.full((H, W, 3), 30 * i, np.uint8))[1].tobytes())
    return path


def _doc(frames: dict) -> str:
    return json.dumps({"frames": {str(f): objs for f, objs in frames.items()}})


def test_which_files_are_json_prompts(tmp_path):
    doc = _doc({0: {"3": {"box": [1, 1, 10, 10]}}})
    for name, body in [("p.json", doc), ("P.JSON", doc), ("prompts.txt", doc), ("noext", doc),
                       ("list.bin", json.dumps({"prompts": [{"frame": 0, "id": 3, "box": [1, 1, 10, 10]}]}))]:
        (tmp_path / name).write_text(body)
        assert isinstance(read_prompts(tmp_path / name), PromptFile), name
    (tmp_path / "bracket.dat").write_text("[1]")  # starts like JSON: read as JSON, and refused as such
    with pytest.raises(MediaError, match="expected"):
        read_prompts(tmp_path / "bracket.dat")
    (tmp_path / "m.png").write_bytes(encode_label_png(np.ones((H, W), np.uint8)))
    assert isinstance(read_prompts(tmp_path / "m.png"), MaskSet)
    with pytest.raises(MediaError) as e:
        read_prompts(tmp_path / "missing.json")
    assert str(e.value) == f"{tmp_path / 'missing.json'}: no such file"
    with pytest.raises(MediaError) as e:
        read_prompts(tmp_path / "missing.JSON")
    assert str(e.value) == f"{tmp_path / 'missing.JSON'}: no such file"
    (tmp_path / "x.json").mkdir()  # a folder named .json is not a prompts file either
    with pytest.raises(MediaError, match="x.json: no such file$"):
        read_prompts(tmp_path / "x.json")


def test_a_png_that_starts_with_a_brace_is_still_read_by_its_first_byte(tmp_path):
    # Only the first byte decides: a mask PNG never starts with { or [, a JSON document does.
    p = tmp_path / "prompts.png"
    p.write_text("  " + _doc({0: {"3": {"remove": True}}}))  # leading spaces: not JSON by its first byte
    assert isinstance(read_prompts(p), MaskSet)


def test_the_summary_of_checked_inputs(tmp_path):
    video = _video(tmp_path / "v.zip", n=4)
    lab = np.zeros((H, W), np.uint8)
    lab[2:6, 2:9], lab[10:20, 15:30] = 7, 2
    (tmp_path / "m.png").write_bytes(encode_label_png(lab))
    s = inspect_inputs(video, tmp_path / "m.png")
    assert s.object_ids == [2, 7] and s.schedule == {0: "m"} and s.size == (H, W) and s.frame_count == 4
    assert s.palette == davis_palette() and s.frames.count == 4 and isinstance(s.prompts, MaskSet)
    assert sorted(s.prompts.frame_prompts("m")) == [2, 7]
    gray = tmp_path / "gray.png"
    cv2.imwrite(str(gray), (lab > 0).astype(np.uint8) * 255)
    assert inspect_inputs(video, gray).palette is None and inspect_inputs(video, gray).object_ids == [1]
    (tmp_path / "p.json").write_text(_doc({2: {"5": {"box": [1, 1, 10, 10]}}, 0: {"4": {"box": [0, 0, 5, 5]}}}))
    js = inspect_inputs(video, tmp_path / "p.json")
    assert js.object_ids == [4, 5] and js.schedule == {0: 0, 2: 2} and js.palette is None


def test_a_prompt_that_does_not_fit_is_named_by_file_frame_and_object(tmp_path):
    video = _video(tmp_path / "v.zip")
    (tmp_path / "p.json").write_text(_doc({1: {"6": {"box": [0, 0, 40, 10]}}}))
    with pytest.raises(MediaError) as e:
        inspect_inputs(video, tmp_path / "p.json")
    assert str(e.value).startswith("p.json: frame 1, object 6: box [0.0, 0.0, 40.0, 10.0] is not inside")


def test_removals_alone_are_no_object(tmp_path):
    video = _video(tmp_path / "v.zip")
    (tmp_path / "p.json").write_text(_doc({1: {"6": {"remove": True}}}))
    with pytest.raises(MediaError) as e:
        inspect_inputs(video, tmp_path / "p.json")
    assert str(e.value) == "the masks contain no object (every pixel is background or void)"


def test_as_many_objects_as_the_tracker_takes(tmp_path):
    lab = np.zeros((16, 16), np.uint8)
    lab.ravel()[:MAX_OBJECTS] = np.arange(1, MAX_OBJECTS + 1)
    vid16 = tmp_path / "v16.zip"
    with zipfile.ZipFile(vid16, "w") as zf:
        zf.writestr("00000.jpg", cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes())
    (tmp_path / "many.png").write_bytes(encode_label_png(lab))
    assert inspect_inputs(vid16, tmp_path / "many.png").object_ids == list(range(1, MAX_OBJECTS + 1))
