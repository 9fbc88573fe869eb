"""The `agss-vos` command as a user runs it: real processes, real DAVIS frames, real files."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from ..conftest import REAL, copy_frames, require

N = 5


def agss(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "service.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def seq(tmp_path_factory) -> Path:
    return copy_frames(require(REAL / "bmx-trees"), tmp_path_factory.mktemp("seq") / "frames", N)


FIRST_MASK = REAL / "bmx-trees" / "Annotations" / "00000.png"


def _check_outputs(out: Path, names: list[str]) -> list[np.ndarray]:
    files = sorted(out.glob("*.png"))
    assert [f.stem for f in files] == names
    labels = []
    for f in files:
        img = Image.open(f)
        assert img.mode == "P" and img.size == (854, 480)
        assert bytes(img.getpalette()[:6]) == bytes((0, 0, 0, 128, 0, 0))
        labels.append(np.array(img))
    assert set(np.unique(labels[0])) == {0, 1}  # first frame is the given mask, id 1
    return labels


def test_segment_folder_with_official_checkpoint_and_eval(seq, official_ckpt, tmp_path):
    out = tmp_path / "out"
    p = agss("segment", seq, "--masks", FIRST_MASK, "--out", out, "--model", official_ckpt, "--long-side", "256",
             "--overlay", tmp_path / "ov.mp4")
    assert "wrote 5 masks" in p.stderr and "frames/s" in p.stderr
    labels = _check_outputs(out, [f"{i:05d}" for i in range(N)])
    gt0 = np.array(Image.open(FIRST_MASK)) > 0
    assert np.array_equal(labels[0] > 0, gt0)
    cap = cv2.VideoCapture(str(tmp_path / "ov.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == N
    # eval against the real ground truth: frame 0 equals GT, the scored frames are 1..N-2
    gt = tmp_path / "gt"
    gt.mkdir()
    for f in sorted((REAL / "bmx-trees" / "Annotations").iterdir())[:N]:
        (gt / f.name).write_bytes(f.read_bytes())
    e = agss("eval", gt, out, "--json", tmp_path / "s.json")
    assert "mean (1 objects)" in e.stdout
    same = agss("eval", gt, gt)
    assert same.stdout.strip().splitlines()[-1].split()[-1] == "1.0000"


def test_segment_mp4_and_zip_inputs(seq, small_model_dir, tmp_path):
    mp4 = tmp_path / "v.mp4"
    w = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), 24, (854, 480))
    for f in sorted(seq.iterdir()):
        w.write(cv2.imread(str(f)))
    w.release()
    agss("segment", mp4, "--masks", FIRST_MASK, "--out", tmp_path / "a", "--model", small_model_dir, "--quiet")
    _check_outputs(tmp_path / "a", [f"{i:05d}" for i in range(N)])
    z = tmp_path / "frames.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in sorted(seq.iterdir()):
            zf.write(f, f"bmx/{f.name}")
    agss("segment", z, "--masks", FIRST_MASK, "--out", tmp_path / "b", "--model", small_model_dir,
         "--flow", "farneback", "--quiet")
    _check_outputs(tmp_path / "b", [f"{i:05d}" for i in range(N)])


def test_same_result_from_folder_and_zip(seq, small_model_dir, tmp_path):
    z = tmp_path / "frames.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in sorted(seq.iterdir()):
            zf.write(f, f.name)
    agss("segment", seq, "--masks", FIRST_MASK, "--out", tmp_path / "a", "--model", small_model_dir, "--quiet")
    agss("segment", z, "--masks", FIRST_MASK, "--out", tmp_path / "b", "--model", small_model_dir, "--quiet")
    for a in sorted((tmp_path / "a").iterdir()):
        assert np.array_equal(np.array(Image.open(a)), np.array(Image.open(tmp_path / "b" / a.name)))


def _one_line_error(p: subprocess.CompletedProcess, text: str) -> None:
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("agss-vos")]
    assert len(lines) == 1 and text in lines[0], p.stderr
    assert "Traceback" not in p.stderr


def test_bad_input_is_one_line_and_exit_2(seq, small_model_dir, tmp_path):
    m = ["--model", small_model_dir]
    _one_line_error(agss("segment", tmp_path / "nope", "--masks", FIRST_MASK, "--out", tmp_path / "o", *m,
                         check=False), "no such file")
    (tmp_path / "rand.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    _one_line_error(agss("segment", tmp_path / "rand.mp4", "--masks", FIRST_MASK, "--out", tmp_path / "o", *m,
                         check=False), "cannot be decoded")
    (tmp_path / "empty").mkdir()
    _one_line_error(agss("segment", tmp_path / "empty", "--masks", FIRST_MASK, "--out", tmp_path / "o", *m,
                         check=False), "no image frames")
    small = tmp_path / "small.png"
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(small)
    _one_line_error(agss("segment", seq, "--masks", small, "--out", tmp_path / "o", *m, check=False), "10x10")
    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros((480, 854), np.uint8)).save(blank)
    _one_line_error(agss("segment", seq, "--masks", blank, "--out", tmp_path / "o", *m, check=False), "no object")
    many = tmp_path / "many.png"
    Image.fromarray(np.arange(480 * 854, dtype=np.uint16).reshape(480, 854) % 300).save(many)
    _one_line_error(agss("segment", seq, "--masks", many, "--out", tmp_path / "o", *m, check=False), "at most 254")
    _one_line_error(agss("segment", seq, "--masks", tmp_path / "missing.png", "--out", tmp_path / "o", *m,
                         check=False), "no such file")
    _one_line_error(agss("segment", seq, "--masks", FIRST_MASK, "--out", tmp_path / "o", "--model",
                         tmp_path / "rand.mp4", check=False), "weights-only")


def test_bench_model_writes_table_and_plot(tmp_path):
    p = agss("bench", "model", "--config", "resnet18", "--long-side", "64", "--objects", "1,3", "--repeats", "1",
             "--plot", tmp_path / "b.png")
    rows = [ln for ln in p.stdout.splitlines() if ln.startswith("| 1 ") or ln.startswith("| 3 ")]
    assert len(rows) == 2
    assert cv2.imread(str(tmp_path / "b.png")) is not None


def test_help_lists_commands():
    p = agss("--help")
    for c in ("segment", "eval", "convert", "bench"):
        assert c in p.stdout
    assert "--long-side" in agss("segment", "--help").stdout


def test_bench_service_runs_both_paths(seq, small_model_dir):
    p = agss("bench", "service", seq, "--masks", FIRST_MASK, "--model", small_model_dir, "--long-side", "128",
             "--rounds", "1", "--grpc-clients", "3")
    assert "throughput ratio service / tracker" in p.stdout
    assert f"| {N} |" in p.stdout
    assert "delay p99 ms" in p.stdout and "job run time with 3 clients" in p.stdout


def test_bench_tracker(small_model_dir):
    """By default it times the backend a worker runs (Settings.backend auto), and says which."""
    from service.vos.backends import default_backend

    p = agss("bench", "tracker", "--model", small_model_dir, "--objects", "2", "--frames", "2")
    assert f"backend auto: {default_backend('cpu')} (what a worker on cpu runs" in p.stdout
    assert f"{small_model_dir}: 2 objects" in p.stdout and "s/frame" in p.stdout


def test_bench_tracker_times_auto_and_torch_in_one_run(small_model_dir):
    from service.vos.backends import default_backend

    p = agss("bench", "tracker", "--model", small_model_dir, "--objects", "1", "--frames", "2", "--long-side", "128",
             "--backend", "torch,auto")
    auto = default_backend("cpu")
    assert f"{small_model_dir} [torch]: 1 objects" in p.stdout and f"{small_model_dir} [{auto}]: 1 objects" in p.stdout
    assert f"1 objects: {small_model_dir} [{auto}]" in p.stdout and "labels differ" in p.stdout


def test_bench_tracker_times_occlusion_handling_off_and_on_in_one_run(small_model_dir):
    p = agss("bench", "tracker", "--model", small_model_dir, "--objects", "1", "--frames", "2",
             "--long-side", "128", "--occlusions", "both")
    off, on = f"{small_model_dir} [occlusions off]", f"{small_model_dir} [occlusions on]"
    assert f"{off}: 1 objects" in p.stdout and f"{on}: 1 objects" in p.stdout
    assert f"1 objects: {on}" in p.stdout and f"the speed of {off}" in p.stdout and "labels differ" not in p.stdout


def test_bench_tracker_times_several_models_and_an_untrained_preset_in_one_run(small_model_dir):
    p = agss("bench", "tracker", "--model", f"{small_model_dir},lite2", "--objects", "1", "--frames", "2",
             "--long-side", "128")
    assert "timing the lite2 preset untrained" in p.stdout
    assert f"{small_model_dir}: 1 objects" in p.stdout and "lite2: 1 objects" in p.stdout
    assert "1 objects: lite2" in p.stdout and "labels differ" not in p.stdout


def _prompt_masks(tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Frame 0: objects 3 (the real bmx rider) and 7 (a box); frame 2: object 12 starts and 3 is corrected."""
    gt = np.array(Image.open(FIRST_MASK)) > 0
    first = np.zeros((480, 854), np.uint8)
    first[gt] = 3
    first[300:400, 600:700] = 7
    second = np.zeros((480, 854), np.uint8)
    second[50:150, 50:200] = 12
    second[200:330, 300:420] = 3
    return first, second


def test_later_masks_start_and_correct_objects_in_any_form(seq, small_model_dir, tmp_path):
    """Non-contiguous ids (3, 7, 12), one starting on frame 2, a correction, a removal; PNG masks and the
    same masks as COCO RLE JSON give the same frames; every report line lists every id."""
    from service.media.rle import encode

    first, second = _prompt_masks(tmp_path)
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for name, lab in (("00000", first), ("00002", second)):
        Image.fromarray(lab).save(pngs / f"{name}.png")
    rles = {"frames": {"0": {str(i): encode(first == i) for i in (3, 7)},
                       "2": {str(i): encode(second == i) for i in (3, 12)}}}
    (tmp_path / "p.json").write_text(json.dumps(rles))
    removal = json.loads(json.dumps(rles))
    removal["frames"]["3"] = {"7": {"remove": True}}
    (tmp_path / "r.json").write_text(json.dumps(removal))
    m = ["--model", small_model_dir, "--quiet"]
    agss("segment", seq, "--masks", pngs, "--out", tmp_path / "a", "--report", tmp_path / "a.jsonl", *m)
    agss("segment", seq, "--masks", tmp_path / "p.json", "--out", tmp_path / "b", *m)
    agss("segment", seq, "--masks", tmp_path / "r.json", "--out", tmp_path / "c", "--report", tmp_path / "c.jsonl",
         *m)
    a = [np.array(Image.open(p)) for p in sorted((tmp_path / "a").glob("*.png"))]
    b = [np.array(Image.open(p)) for p in sorted((tmp_path / "b").glob("*.png"))]
    c = [np.array(Image.open(p)) for p in sorted((tmp_path / "c").glob("*.png"))]
    assert len(a) == len(b) == len(c) == N and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert np.array_equal(a[0], first)
    assert not (a[1] == 12).any() and np.array_equal(a[2] == 12, second == 12)
    assert np.array_equal(a[2] == 3, second == 3)  # the correction is the prediction on its frame
    assert all(np.array_equal(x, y) for x, y in zip(a[:3], c[:3], strict=True))
    assert not any((x == 7).any() for x in c[3:]) and any((x == 7).any() for x in a[3:])
    report = [json.loads(ln) for ln in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in report] == list(range(N)) and report[0]["name"] == "00000"
    assert all([o["id"] for o in r["objects"]] == [3, 7, 12] for r in report)
    assert report[0]["objects"][2] == {"id": 12, "area": 0, "bbox": [0, 0, 0, 0], "score": 0.0}
    events = {r["frame"]: sorted((e["type"], e["id"]) for e in r["events"]) for r in report}
    assert events[0] == [("started", 3), ("started", 7)]
    assert events[2] == [("corrected", 3), ("started", 12)]
    assert all(0 <= o["score"] <= 1 for r in report for o in r["objects"])
    assert report[0]["objects"][0]["score"] == 1.0  # a given mask
    removed = [json.loads(ln) for ln in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert {"type": "removed", "id": 7} in removed[3]["events"] and removed[4]["objects"][1]["area"] == 0


def test_a_box_prompt_starts_an_object(seq, small_model_dir, tmp_path):
    gt = np.array(Image.open(FIRST_MASK)) > 0
    ys, xs = np.nonzero(gt)
    (tmp_path / "box.json").write_text(json.dumps({"prompts": [
        {"frame": 0, "id": 1, "box": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]}]}))
    agss("segment", seq, "--masks", tmp_path / "box.json", "--out", tmp_path / "o", "--model", small_model_dir,
         "--quiet")
    first = np.array(Image.open(tmp_path / "o" / "00000.png")) == 1
    assert (first & gt).sum() / (first | gt).sum() > 0.3  # GrabCut's mask of the rider, not the whole box
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"frames": {"0": {"1": {"box": [0, 0, 5000, 10]}}}}))
    _one_line_error(agss("segment", seq, "--masks", bad, "--out", tmp_path / "x", "--model", small_model_dir,
                         check=False), "not inside")
