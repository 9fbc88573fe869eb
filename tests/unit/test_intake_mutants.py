"""Upload checks (service/jobs/intake.py) and the error table (service/errors.py), on real files: the
options a job may carry, the suffix a stored upload gets, the size limit, the job record built from a
checked video and its masks, runtime prompts, a live session's frames and options."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service import errors
from service.config import Settings
from service.jobs import intake
from service.jobs.errors import (
    BacklogFullError,
    BadOptionsError,
    JobConflictError,
    JobNotFoundError,
    KeyExistsError,
    MalformedRequestError,
    QueueFullError,
    QuotaError,
    UnauthenticatedError,
    UploadTooLargeError,
)
from service.jobs.records import Job, Kind, Policy
from service.media import davis_palette, encode_label_png
from service.media.errors import MediaError, UnsafeArchiveError, UnsupportedFormatError
from service.vos.errors import BackendError, CheckpointError, ModelNotFoundError, TrackerInputError
from service.vos.labels import MAX_OBJECTS


def _jpg(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def _video(path: Path, n: int = 3, size=(24, 32)) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(n):
            zf.writestr(f"{i:05d}.jpg", _jpg(np.full((*size, 3), 40 * i, np.uint8)))
    return path


def _mask(path: Path, ids=(3,), size=(24, 32), palette: bytes | None = None) -> Path:
    lab = np.zeros(size, np.uint8)
    for k, i in enumerate(ids):
        lab[2 + 4 * k:5 + 4 * k, 2:6] = i
    path.write_bytes(encode_label_png(lab, palette))
    return path


# -- options ---------------------------------------------------------------------------------------------------
def test_options_are_parsed_and_checked():
    assert intake.parse_options(None) == {} and intake.parse_options("") == {}
    assert intake.parse_options('{"model": "agss-lite", "flow": "none", "long_side": 256}') == {
        "model": "agss-lite", "flow": "none", "long_side": 256}
    assert intake.parse_options('{"flow": null}') == {}  # unset options are left out
    for raw, message in [
        ("{", "options is not valid JSON (Expecting property name enclosed in double quotes)"),
        ("[1]", "options must be a JSON object"),
        ('"x"', "options must be a JSON object"),
        ('{"long_side": 100}', "options.long_side: Value error, long_side must be a multiple of 32"),
        ('{"long_side": 32}', "options.long_side: Input should be greater than or equal to 64"),
        ('{"flow": "magic"}', "options.flow: Value error, flow must be one of dis, farneback, none"),
        ('{"model": "../x"}', "options.model: Value error, model must be the name of a model in the repository"),
        ('{"colour": 1}', "options.colour: Extra inputs are not permitted"),
    ]:
        with pytest.raises(BadOptionsError) as e:
            intake.parse_options(raw)
        assert str(e.value) == message


@pytest.mark.parametrize("name", ["a/b", "a\\b", ".hidden", ""])
def test_a_model_is_a_name_never_a_path(name):
    with pytest.raises(BadOptionsError, match="^options.model: "):
        intake.parse_options(json.dumps({"model": name}))


@pytest.mark.parametrize("filename, suffix", [
    ("clip.MP4", ".mp4"), ("a.b.zip", ".zip"), ("x.tar.gz", ".gz"), ("f.png", ".png"), ("f.abcde", ".abcde"),
    ("f.abcdef", ".bin"), ("noext", ".bin"), (None, ".bin"), ("f.", ".bin"), ("f.x", ".x"), ("f.m-p", ".bin"),
    ("f.é", ".bin"), ("dir/../evil.zip", ".zip"),
])
def test_safe_suffix(filename, suffix):
    assert intake.safe_suffix(filename, ".bin") == suffix


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20))
def test_a_safe_suffix_is_short_plain_and_lower_case(name):
    s = intake.safe_suffix(name, ".bin")
    assert s == ".bin" or (s.startswith(".") and 2 <= len(s) <= 6 and s[1:].isascii() and s[1:].isalnum()
                           and s == s.lower() and name.lower().endswith(s))


# -- the size limit --------------------------------------------------------------------------------------------
def test_limited_file_refuses_to_grow_past_its_limit(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(bytes(range(256)) * 10)  # 2560 bytes
    with intake.LimitedFile(tmp_path / "ok", 2560, "the video") as f:
        assert f.copy_from(io.BytesIO(src.read_bytes())) == 2560
    assert (tmp_path / "ok").read_bytes() == src.read_bytes()
    with intake.LimitedFile(tmp_path / "big", 2559, "the video") as f:
        with pytest.raises(UploadTooLargeError) as e:
            f.copy_from(io.BytesIO(src.read_bytes()))
    assert str(e.value) == "the video is larger than the limit of 2559 bytes"
    assert (tmp_path / "big").stat().st_size == 0  # the chunk over the limit is not written


def test_limited_file_copies_in_chunks_and_from_async_chunks(tmp_path):
    data = np.random.default_rng(0).bytes(intake.COPY_CHUNK * 2 + 12345)  # two whole chunks and a short one
    f = intake.LimitedFile(tmp_path / "a", len(data), "x")
    assert f.copy_from(io.BytesIO(data)) == len(data) and f.size == len(data)
    f.close()
    assert (tmp_path / "a").read_bytes() == data

    async def chunks():
        for i in range(0, 70, 9):
            yield data[i:min(i + 9, 70)]

    g = intake.LimitedFile(tmp_path / "b", 70, "x")
    assert asyncio.run(g.copy_from_async(chunks())) == 70
    g.write(b"")  # an empty chunk at the limit is fine
    with pytest.raises(UploadTooLargeError):
        g.write(b"!")
    g.close()
    assert (tmp_path / "b").read_bytes() == data[:70]


def test_limited_file_reads_a_file_object_one_chunk_at_a_time(tmp_path):
    class Recording(io.BytesIO):  # a plain file object that notes the sizes asked of it
        asked: list = []

        def read(self, n=-1):
            self.asked.append(n)
            return super().read(n)

    src = Recording(b"z" * (intake.COPY_CHUNK + 5))
    with intake.LimitedFile(tmp_path / "a", 1 << 30, "x") as f:
        assert f.copy_from(src) == intake.COPY_CHUNK + 5
    assert src.asked == [intake.COPY_CHUNK] * 3  # a whole chunk, the rest, then the end


def test_upload_folder_is_removed_however_the_request_ends():
    with intake.upload_folder() as d:
        (d / "f").write_bytes(b"x")
        assert d.name.startswith("agss-upload-")
    assert not d.exists()
    with pytest.raises(RuntimeError), intake.upload_folder("agss-test-") as e:
        raise RuntimeError
    assert not e.exists()


# -- the job record --------------------------------------------------------------------------------------------
def test_build_job_describes_checked_inputs(tmp_path):
    video, masks = _video(tmp_path / "v.zip", n=4), _mask(tmp_path / "m.png", ids=(3, 9))
    job = intake.build_job(video, "dir/My Clip.zip", masks, "up/first.png", {"flow": "none"})
    assert (job.frames_total, job.objects, job.width, job.height) == (4, [3, 9], 32, 24)
    assert job.palette == davis_palette().hex() and job.options == {"flow": "none"}
    assert (job.video_name, job.masks_name) == ("My Clip.zip", "first.png")
    assert len(job.id) == 32 and job.created_at > 0 and job.status.value == "queued" and job.kind == Kind.JOB
    other = intake.build_job(video, "", masks, "", {})
    assert (other.video_name, other.masks_name) == ("video", "masks.png") and other.id != job.id
    long = intake.build_job(video, "x" * 300 + ".zip", masks, "m" * 300 + ".png", {})
    assert long.video_name == "x" * 200 and long.masks_name == "m" * 200
    gray = tmp_path / "gray.png"
    cv2.imwrite(str(gray), np.pad(np.full((3, 3), 255, np.uint8), ((2, 19), (2, 27))))
    assert intake.build_job(video, "v.zip", gray, "g.png", {}).palette == ""  # no palette: the DAVIS one


def test_build_job_reads_the_whole_video_now(tmp_path):
    video = tmp_path / "v.zip"
    with zipfile.ZipFile(video, "w") as zf:
        zf.writestr("00000.jpg", _jpg(np.zeros((24, 32, 3), np.uint8)))
        zf.writestr("00001.jpg", b"\xff\xd8\xff not a jpeg")  # only the second frame is broken
    with pytest.raises(MediaError):
        intake.build_job(video, "v.zip", _mask(tmp_path / "m.png"), "m.png", {})


# -- prompts for a running job or session ----------------------------------------------------------------------
def _job(**kw) -> Job:
    base = dict(id="j", frames_total=5, objects=[1], width=32, height=24)
    base.update(kw)
    return Job(**base)


def test_job_prompts_are_checked_against_the_job():
    box = {"box": [0, 0, 10, 10]}
    frames, new = intake.job_prompts(_job(), {"frames": {"2": {"1": box, "4": box}, "3": {"2": {"remove": True}}}})
    assert frames == {2: '{"1":{"box":[0.0,0.0,10.0,10.0]},"4":{"box":[0.0,0.0,10.0,10.0]}}',
                      3: '{"2":{"remove":true}}'}
    assert new == [4]  # 1 is the job's already, a removal starts nothing
    with pytest.raises(MediaError, match="frame 5 does not exist"):
        intake.job_prompts(_job(), {"frames": {"5": {"1": box}}})
    outside = r"^prompts\.frames\.1\.1: box \[0\.0, 0\.0, 40\.0, 10\.0\] is not inside the 32x24"
    with pytest.raises(MediaError, match=outside):
        intake.job_prompts(_job(), {"frames": {"1": {"1": {"box": [0, 0, 40, 10]}}}})
    with pytest.raises(MediaError, match=r"^prompts: expected"):
        intake.job_prompts(_job(), {"frame": {}})
    with pytest.raises(MediaError, match="frames are 0-based indices, got 'next'"):
        intake.job_prompts(_job(), {"frames": {"next": {"1": box}}})  # "next" is for sessions only


def test_session_prompts_may_name_the_next_frame_and_are_checked_once_the_size_is_known():
    box = {"box": [0, 0, 100, 100]}
    unsized = _job(kind=Kind.SESSION, frames_total=0, width=0, height=0, objects=[])
    frames, new = intake.job_prompts(unsized, {"frames": {"next": {"2": box}, "40": {"3": box}}})
    assert sorted(frames) == [-1, 40] and new == [2, 3]  # no frame count, no size yet: nothing to check against
    sized = _job(kind=Kind.SESSION, frames_total=0, objects=[])
    with pytest.raises(MediaError, match="is not inside the 32x24 frame"):
        intake.job_prompts(sized, {"frames": {"next": {"2": box}}})
    assert intake.job_prompts(sized, {"frames": {"40": {"3": {"box": [0, 0, 5, 5]}}}})[1] == [3]


def test_a_job_may_grow_up_to_the_object_limit():
    box = {"box": [0, 0, 4, 4]}
    full = _job(objects=list(range(1, MAX_OBJECTS)))
    assert intake.job_prompts(full, {"frames": {"1": {str(MAX_OBJECTS): box}}})[1] == [MAX_OBJECTS]


# -- live sessions ---------------------------------------------------------------------------------------------
def test_a_session_frame_is_a_jpeg_or_png_within_the_limit():
    jpg, png = _jpg(np.zeros((4, 4, 3), np.uint8)), encode_label_png(np.zeros((4, 4), np.uint8))
    intake.check_frame(jpg, len(jpg))
    intake.check_frame(png, len(png))
    with pytest.raises(UploadTooLargeError) as e:
        intake.check_frame(jpg, len(jpg) - 1)
    assert str(e.value) == f"a frame is larger than the limit of {len(jpg) - 1} bytes"
    with pytest.raises(MediaError) as e:
        intake.check_frame(b"", 10)
    assert str(e.value) == "a frame has no bytes" and not isinstance(e.value, UnsupportedFormatError)
    for data in (b"GIF89a....", jpg[1:], png[:7]):
        with pytest.raises(UnsupportedFormatError) as e:
            intake.check_frame(data, 1 << 20)
        assert str(e.value) == "frames must be JPEG or PNG images"


def test_a_new_session_takes_its_options_or_the_settings():
    s = Settings(session_idle_seconds=33.0, session_max_pending=7)
    default = intake.new_session(s, intake.SessionOptions())
    assert default.kind == Kind.SESSION and default.policy == Policy.LATEST and default.options == {}
    assert (default.idle_timeout, default.max_pending) == (33.0, 7)
    assert len(default.id) == 32 and default.created_at > 0 and default.status.value == "queued"
    opts = intake.SessionOptions(policy="all", idle_timeout_seconds=2.5, max_pending=3, flow="none",
                                 long_side=128, model="agss-lite")
    own = intake.new_session(s, opts)
    assert own.policy == Policy.ALL and (own.idle_timeout, own.max_pending) == (2.5, 3)
    assert own.options == {"model": "agss-lite", "flow": "none", "long_side": 128} and own.id != default.id


# -- the error table -------------------------------------------------------------------------------------------
def test_every_error_type_has_its_code_most_specific_first():
    expect = [
        (MalformedRequestError(), "malformed_request", 422), (UnauthenticatedError(), "unauthenticated", 401),
        (QuotaError("q"), "quota_exceeded", 429), (KeyExistsError(), "conflict", 409),
        (JobNotFoundError(), "not_found", 404), (JobConflictError(), "conflict", 409),
        (QueueFullError("q"), "queue_full", 429), (BacklogFullError("b"), "backlog_full", 429),
        (UploadTooLargeError(), "too_large", 413), (BadOptionsError(), "bad_options", 422),
        (UnsupportedFormatError(), "unsupported_format", 415), (UnsafeArchiveError(), "unsafe_archive", 400),
        (MediaError(), "bad_input", 400), (TrackerInputError(), "bad_input", 400),
        (ModelNotFoundError(), "model_not_found", 400), (CheckpointError(), "bad_checkpoint", 400),
        (BackendError(), "bad_backend", 400),
    ]
    for exc, code, http in expect:
        spec = errors.classify(exc)
        assert (spec.code, spec.http) == (code, http), exc
    import redis

    assert errors.classify(redis.ConnectionError()).http == 503 and errors.classify(redis.TimeoutError()).http == 503
    assert errors.classify(ValueError()) is None and errors.classify(KeyError()) is None  # a bug: internal


def test_expected_types_are_exactly_the_mapped_ones():
    types = errors.expected_types()
    assert isinstance(types, tuple) and len(types) == len(set(types)) == 19
    assert all(errors.classify(t.__new__(t)) is not None for t in types)
    assert ValueError not in types and MediaError in types and UnsafeArchiveError in types


def test_all_specs_lists_each_code_once_with_its_first_meaning():
    specs = errors.all_specs()
    codes = [s.code for s in specs]
    assert len(codes) == len(set(codes))
    assert set(codes) >= {"internal", "no_workers", "http_error", "malformed_request", "bad_input", "unavailable"}
    assert codes[0] == "malformed_request" and codes[-3:] == ["internal", "no_workers", "http_error"]
    by = {s.code: s for s in specs}
    assert by["conflict"].grpc == "ALREADY_EXISTS"  # the first of the two "conflict" specs (KeyExistsError)
    assert by["bad_input"].meaning == "a video or mask that cannot be used"
    for s in specs:
        assert hasattr(grpc.StatusCode, s.grpc) and s.exit in (errors.EXIT_USAGE, errors.EXIT_FAILURE), s
