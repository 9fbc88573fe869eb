"""The web console as a person uses it, in headless Chromium against a real stack: open a sequence, draw
boxes, run the job, watch overlaid frames arrive, correct a later frame, download; keyboard only; live
from a fake camera fed a real clip. Screenshots of each step go to $AGSS_CONSOLE_SHOTS (`make
test-browser` sets docs/console) or the test's temporary folder."""

from __future__ import annotations

import io
import json
import os
import re
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis
from PIL import Image

from service.jobs import apikeys
from service.jobs.keys import Keys

from ..conftest import REAL, require

SEQ = REAL / "horsejump-high"
W, H = 854, 480
COLOURS = {1: (230, 25, 75), 2: (60, 180, 75)}  # ui.js COLORS for objects 1 and 2
HORSE = [17, 104, 358, 360]  # around the horse and rider on frame 0 (ground truth box, a little wider)
FERN = [536, 338, 716, 462]  # the fern at the foot of the fence
FIX_FRAME = 35
FIX_BOX = [250, 132, 471, 354]  # the horse and rider on frame 35


def sequence_zip(out: Path, n: int) -> Path:
    seq = require(SEQ / "JPEGImages")
    with zipfile.ZipFile(out, "w") as zf:
        for f in sorted(seq.iterdir())[:n]:
            zf.write(f, f.name)
    return out


def shot(page, name: str, tmp_path: Path, full_page: bool = False) -> Path:
    """A screenshot of the step, kept small: 256 colours are plenty to read a console."""
    folder = Path(os.environ.get("AGSS_CONSOLE_SHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    img = Image.open(io.BytesIO(page.screenshot(full_page=full_page))).convert("RGB")
    path = folder / name
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    return path


def to_client(page, stage: str, x: float, y: float, size: tuple[int, int] = (W, H)) -> tuple[float, float]:
    """Frame pixel (x, y) -> page position, through the stage's letterboxing (object-fit: contain)."""
    b = page.locator(f"{stage} canvas.ui").bounding_box()
    k = min(b["width"] / size[0], b["height"] / size[1])
    left = b["x"] + (b["width"] - size[0] * k) / 2
    top = b["y"] + (b["height"] - size[1] * k) / 2
    return left + x * k, top + y * k


def drag_box(page, stage: str, box: list[int], size: tuple[int, int] = (W, H)) -> None:
    x0, y0 = to_client(page, stage, box[0] + 0.5, box[1] + 0.5, size)
    x1, y1 = to_client(page, stage, box[2] - 0.5, box[3] - 0.5, size)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
    page.mouse.move(x1, y1, steps=4)
    page.mouse.up()


def colour_counts(page, canvas: str) -> dict[int, int]:
    """Pixels of each object's colour on a canvas the user sees (the mask overlay)."""
    js = """([sel, colours]) => {
      const c = document.querySelector(sel);
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      const out = {};
      for (const [id, [r, g, b]] of Object.entries(colours)) {
        let n = 0;
        // +-3: half see-through pixels come back through premultiplied alpha, a unit or two off
        for (let i = 0; i < d.length; i += 4) {
          if (d[i + 3] && Math.abs(d[i] - r) <= 3 && Math.abs(d[i + 1] - g) <= 3 && Math.abs(d[i + 2] - b) <= 3) n++;
        }
        out[id] = n;
      }
      return out;
    }"""
    return {int(k): v for k, v in page.evaluate(js, [canvas, {str(k): v for k, v in COLOURS.items()}]).items()}


def wait_until(cond, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(step)


def count_text(page) -> tuple[int, int]:
    done, total = page.locator("#job-count").inner_text().split("/")
    return int(done), int(total)


def new_key(redis_url: str, prefix: str, name: str) -> str:
    r = redis.from_url(redis_url)
    try:
        return apikeys.create(r, Keys(prefix), name)
    finally:
        r.close()


def test_boxes_on_two_objects_watch_them_arrive_correct_a_later_frame_and_download(
        make_stack, page, tmp_path, redis_url, prefix):
    n = 50
    video = sequence_zip(tmp_path / "horsejump-high.zip", n)
    # A pause per frame gives the person time to correct a frame before the worker reaches it.
    stack = make_stack(workers=1, agss_model="flow-only", agss_frame_delay_seconds=0.3, agss_auth="required")
    key = new_key(redis_url, prefix, "console")
    page.goto(stack.url + "/")
    assert page.title() == "AGSS-VOS console"

    # 1. Open the sequence: its first frame shows.
    page.set_input_files("#job-file", str(video))
    page.wait_for_selector("#job-stage[data-frame='0']:not(.empty)")
    assert f"{W}×{H}" in page.locator("#job-source").inner_text() and f"{n} frames" in page.locator(
        "#job-source").inner_text()
    shot(page, "01-open.png", tmp_path)

    # 2. A box on each object: two objects, each in its colour.
    drag_box(page, "#job-stage", HORSE)
    drag_box(page, "#job-stage", FERN)
    assert page.locator("#job-objects li").count() == 2
    drawn = colour_counts(page, "#job-stage canvas.ui")
    assert drawn[1] > 300 and drawn[2] > 300, drawn  # the two box outlines
    shot(page, "02-boxes.png", tmp_path)

    # A wrong key: the API's own words are shown, nothing is submitted.
    page.fill("#api-key", "agss_0000_wrong")
    page.click("#key-form button")
    page.click("#job-run")
    page.wait_for_selector("#alert.error:not([hidden])")
    assert "unknown or revoked API key" in page.locator("#alert").inner_text()

    # 3. The right key; run. Frames arrive with both masks overlaid, progress and frames per second shown.
    page.fill("#api-key", key)
    page.click("#key-form button")
    page.click("#job-run")
    wait_until(lambda: count_text(page)[0] >= 3, 60, "three frames arrived")
    job_id = page.get_attribute("#job-panel", "data-job")
    assert job_id and count_text(page)[1] == n
    assert page.get_attribute("#job-status", "data-status") == "running"
    wait_until(lambda: re.match(r"[\d.]+ frames/s", page.locator("#job-fps").inner_text()), 10, "fps shown")
    shown = int(page.get_attribute("#job-stage", "data-frame"))
    page.wait_for_selector(f"#job-stage[data-masked='{shown}']")
    masks = colour_counts(page, "#job-stage canvas.masks")
    assert masks[1] > 5000 and masks[2] > 1000, masks  # both objects overlaid on the frame shown
    shot(page, "03-running.png", tmp_path)

    # 4. Correct a frame the job has not reached: go there, select object 1, draw its box, send.
    page.locator("#p-slider").fill(str(FIX_FRAME))
    page.wait_for_selector(f"#job-stage[data-frame='{FIX_FRAME}']")
    assert count_text(page)[0] < FIX_FRAME, "the job got there first: the test is too slow"
    assert "not processed yet" in page.locator("#p-label").inner_text()
    page.keyboard.press("1")
    drag_box(page, "#job-stage", FIX_BOX)
    page.click("#job-send")
    page.wait_for_selector("#alert.info:not([hidden])")
    assert f"Prompts taken for frame {FIX_FRAME}" in page.locator("#alert").inner_text()
    shot(page, "04-correction.png", tmp_path)

    # 5. The job ends; the corrected frame says so; its masks and score chart are there.
    page.wait_for_selector("#job-status[data-status='succeeded']", timeout=90_000)
    assert count_text(page) == (n, n)
    event = page.locator(f"#job-events li[data-frame='{FIX_FRAME}']", has_text="object 1 corrected")
    assert event.count() == 1
    event.locator("button").click()
    page.wait_for_selector(f"#job-stage[data-masked='{FIX_FRAME}']")
    fixed = colour_counts(page, "#job-stage canvas.masks")
    assert fixed[1] > 5000 and fixed[2] > 500, fixed
    shot(page, "05-done.png", tmp_path)

    # 6. Downloads: the DAVIS zip decodes to one indexed PNG per frame at the video's size.
    with page.expect_download() as dl:
        page.click("#dl-zip")
    path = tmp_path / "result.zip"
    dl.value.save_as(path)
    with zipfile.ZipFile(path) as zf:
        names = sorted(zf.namelist())
        assert len(names) == n and all(x.endswith(".png") for x in names)
        pngs = [Image.open(io.BytesIO(zf.read(x))) for x in names]
    assert all(p.size == (W, H) and p.mode == "P" for p in pngs)
    labels = [np.array(p) for p in pngs]
    assert (labels[0] == 1).sum() > 5000 and (labels[0] == 2).sum() > 1000
    x0, y0, x1, y1 = FIX_BOX
    ys, xs = np.nonzero(labels[FIX_FRAME] == 1)  # the correction is the mask on its frame: inside its box
    assert len(xs) > 5000 and xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1

    with page.expect_download() as dl:
        page.click("#dl-json")
    doc = json.loads(Path(dl.value.path()).read_text())
    assert [f["index"] for f in doc["frames"]] == list(range(n)) and (doc["width"], doc["height"]) == (W, H)
    assert {o["id"] for o in doc["frames"][0]["objects"]} == {1, 2}

    # The overlay video, rendered by the page: a WebM that decodes to the job's frames.
    with page.expect_download(timeout=60_000) as dl:
        page.click("#dl-video")
    webm = tmp_path / "overlay.webm"
    dl.value.save_as(webm)
    assert webm.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"
    cap = cv2.VideoCapture(str(webm))
    decoded = 0
    while cap.read()[0]:
        decoded += 1
    cap.release()
    # Encoded frame by frame (WebCodecs), not recorded in real time: every frame is there however busy the CPU is.
    assert decoded == n, decoded
    note = page.locator("#dl-note").inner_text()
    assert f"overlay video: {n} frames" in note and "real time" not in note, note

    # 7. A phone-width window: one column, the frame first, still readable.
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(300)
    stage = page.locator("#job-stage").bounding_box()
    side = page.locator("#job-panel .col-side").bounding_box()
    assert stage["width"] > 350 and side["y"] >= stage["y"] + stage["height"]  # stacked, not squeezed
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing runs off the side
    shot(page, "07-phone.png", tmp_path)
    assert not page.page_errors, page.page_errors


def test_the_whole_job_by_keyboard_alone(make_stack, page, tmp_path):
    n = 8
    video = sequence_zip(tmp_path / "seq.zip", n)
    stack = make_stack(workers=1, agss_model="flow-only")
    page.goto(stack.url + "/")
    page.keyboard.press("?")
    page.wait_for_selector("#help[open]")
    assert "positive point" in page.locator("#help").inner_text()
    shot(page, "08-keys.png", tmp_path)
    page.keyboard.press("Escape")
    page.wait_for_selector("#help", state="hidden")  # a closed <dialog> is not rendered

    with page.expect_file_chooser() as chooser:
        page.keyboard.press("o")
    chooser.value.set_files(str(video))
    page.wait_for_selector("#job-stage[data-frame='0']:not(.empty)")
    # A box typed in: Tab to the field, type, Enter; then a new object (A) and its box.
    page.focus("#job-box-text")
    page.keyboard.type(" ".join(map(str, HORSE)))
    page.keyboard.press("Enter")
    page.locator("#job-box-text").blur()
    page.keyboard.press("a")
    page.focus("#job-box-text")
    page.keyboard.press("Control+a")
    page.keyboard.type(" ".join(map(str, FERN)))
    page.keyboard.press("Enter")
    page.locator("#job-box-text").blur()
    assert page.locator("#job-objects li").count() == 2
    page.keyboard.press("r")
    page.wait_for_selector("#job-status[data-status='succeeded']", timeout=60_000)
    assert count_text(page) == (n, n)
    # Arrows walk the frames; Home goes back to the first.
    page.keyboard.press("Home")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.wait_for_selector("#job-stage[data-masked='2']")
    counts = colour_counts(page, "#job-stage canvas.masks")
    assert counts[1] > 5000 and counts[2] > 500, counts
    # Focus is visible on whatever the keyboard reaches.
    page.keyboard.press("Tab")
    style = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert style not in ("", "none"), style
    assert not page.page_errors, page.page_errors


def fake_camera_clip(out: Path, n: int = 30, size: tuple[int, int] = (428, 240), fps: int = 10) -> Path:
    """A real clip as a Y4M file (I420), the format Chromium's fake camera reads."""
    frames = sorted(require(REAL / "bmx-trees" / "JPEGImages").iterdir())[:n]
    w, h = size
    with out.open("wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for p in frames:
            bgr = cv2.resize(cv2.imread(str(p)), (w, h), interpolation=cv2.INTER_AREA)
            f.write(b"FRAME\n")
            f.write(np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)).tobytes())
    return out


def test_live_from_a_fake_camera_shows_masks_and_the_delay(make_stack, launch, tmp_path):
    clip = fake_camera_clip(tmp_path / "bmx.y4m", n=80)
    stack = make_stack(workers=1, agss_model="agss-lite", agss_long_side="512")  # what a user gets
    browser = launch("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                     f"--use-file-for-fake-video-capture={clip}")
    context = browser.new_context(viewport={"width": 1280, "height": 720}, permissions=["camera"])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(stack.url + "/")
    page.click("#tab-live")
    page.fill("#live-rate", "6")
    page.click("#live-camera")
    page.wait_for_selector("#live-status[data-status='live']", timeout=30_000)
    wait_until(lambda: int(page.locator("#m-count").inner_text().split("/")[0]) >= 3, 20, "frames sent")
    size = tuple(page.evaluate("(() => { const c = document.querySelector('#live-stage canvas.ui');"
                               " return [c.width, c.height]; })()"))
    assert size == (428, 240), size  # the camera's own size (under the 640 px long side)
    # The rider and the bike, from the clip's first frame (ground truth box, halved).
    drag_box(page, "#live-stage", [178, 56, 280, 192], size)
    page.wait_for_selector("#live-delay:not([hidden])", timeout=30_000)
    wait_until(lambda: colour_counts(page, "#live-stage canvas.masks")[1] > 500, 30, "masks on the live view")
    badge = page.locator("#live-delay").inner_text()
    assert re.fullmatch(r"delay \d+ ms · median \d+ ms", badge), badge
    assert re.fullmatch(r"\d+ ms", page.locator("#m-step").inner_text())
    time.sleep(1.0)  # a few more answered frames, for the picture
    shot(page, "06-live.png", tmp_path)
    session_id = page.get_attribute("#live-panel", "data-session")
    page.keyboard.press("x")
    page.wait_for_selector("#alert.info:not([hidden])", timeout=30_000)
    assert "Session ended" in page.locator("#alert").inner_text()
    import httpx

    info = httpx.get(f"{stack.url}/v1/sessions/{session_id}").json()
    assert info["status"] == "succeeded" and info["frames_done"] >= 3 and 1 in info["objects"]
    assert not errors, errors
    context.close()


@pytest.mark.parametrize("masks", [1, 3])
def test_rle_in_the_page_is_pycocotools_rle(make_stack, page, masks):
    """The page's own RLE codec (decoding the API's masks, encoding painted ones) against pycocotools."""
    from service.media.rle import decode, encode

    stack = make_stack(workers=0)
    page.goto(stack.url + "/")
    rng = np.random.default_rng(masks)
    cases = []
    for _ in range(masks):
        h, w = int(rng.integers(1, 60)), int(rng.integers(1, 90))
        m = np.zeros((h, w), np.uint8)
        for _ in range(int(rng.integers(0, 6))):
            y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
            m[y:y + int(rng.integers(1, 40)), x:x + int(rng.integers(1, 40))] = 1
        cases.append(m)
    cases.append(np.ones((480, 854), np.uint8))  # counts over 2^16: multi-character numbers
    got = page.evaluate("""async (cases) => {
      const rle = await import('./console/js/rle.js');
      return cases.map(([h, w, flat, given]) => {
        const mask = Uint8Array.from(flat);
        const dec = rle.decodeRle(given);
        return [rle.encodeMask(mask, w, h), Array.from(dec.mask)];
      });
    }""", [[m.shape[0], m.shape[1], m.ravel().tolist(), encode(m)] for m in cases])
    for m, (enc, dec) in zip(cases, got, strict=True):
        assert enc == encode(m)  # the same text pycocotools writes
        assert np.array_equal(decode(enc), m)
        assert np.array_equal(np.array(dec, np.uint8).reshape(m.shape), m)
