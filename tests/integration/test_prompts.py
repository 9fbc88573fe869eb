"""Prompts through the job APIs: JSON masks at submission, prompts added to a running job (HTTP and
gRPC), corrections and new objects taking effect on their frame, refusals naming the current frame."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest

from service.client import Client, ClientError, GrpcClient
from service.media.masks import read_label_png
from service.media.rle import encode

from .conftest import FIRST_MASK, frames_zip


def test_a_job_with_rle_json_masks_gives_the_frames_of_the_same_masks_as_png(make_stack, tmp_path):
    video = frames_zip(tmp_path / "v.zip", 5)
    gt, _ = read_label_png(FIRST_MASK.read_bytes())
    (tmp_path / "p.json").write_text(json.dumps({"frames": {"0": {"1": encode(gt == 1)}}}))
    stack = make_stack(workers=1)
    with Client(stack.url) as c:
        a = c.submit(video, FIRST_MASK)
        b = c.submit(video, tmp_path / "p.json")
        assert a.objects == b.objects == [1]
        fa, fb = list(c.frames(a.id)), list(c.frames(b.id))
    assert [f.as_dict() for f in fa] == [f.as_dict() for f in fb]
    assert fa[0].objects[0]["score"] == 1.0 and fa[0].events == [{"type": "started", "id": 1}]
    assert all(0 <= f.objects[0]["score"] <= 1 for f in fa)


def _wait_frames(c, job_id: str, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while c.status(job_id).frames_done < n:
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.parametrize("api", ["http", "grpc"])
def test_prompts_on_a_running_job(make_stack, tmp_path, api):
    n = 14
    video = frames_zip(tmp_path / "v.zip", n)
    # flow-only: later masks are the earlier ones carried by the flow, so they show where the correction went
    stack = make_stack(workers=1, grpc=api == "grpc", agss_frame_delay_seconds=0.3, agss_model="flow-only")
    fix = np.zeros((480, 854), bool)
    fix[100:260, 500:700] = True  # object 1 is "really" here from frame 9 on
    client = GrpcClient(stack.grpc_target) if api == "grpc" else Client(stack.url)
    with client as c:
        job = c.submit(video, FIRST_MASK)
        _wait_frames(c, job.id, 2)
        got = c.add_prompts(job.id, {"prompts": [{"frame": 9, "id": 1, "rle": encode(fix)},
                                                 {"frame": 11, "id": 5, "box": [20, 20, 200, 150]}]})
        assert got.objects == [1, 5]
        with pytest.raises(ClientError) as e:
            c.add_prompts(job.id, {"frames": {"0": {"1": {"remove": True}}}})
        assert e.value.code == "conflict" and "is on frame" in e.value.message
        assert (e.value.status == 409) if api == "http" else (e.value.grpc_status == "FAILED_PRECONDITION")
        with pytest.raises(ClientError) as e:
            c.add_prompts(job.id, {"frames": {str(n): {"1": {"remove": True}}}})
        assert e.value.code == "bad_input" and "does not exist" in e.value.message
        with pytest.raises(ClientError) as e:
            c.add_prompts(job.id, {"frames": {"12": {"1": {"box": [0, 0, 9999, 10]}}}})
        assert e.value.code == "bad_input" and "not inside" in e.value.message
        frames = list(c.frames(job.id))
    assert [f.index for f in frames] == list(range(n))
    labels = [f.labels((480, 854)) for f in frames]
    assert np.array_equal(labels[9] == 1, fix)  # the correction is the prediction on its frame
    assert not (labels[10] == 1)[:, :300].any()  # and later frames follow it, not the old place
    assert {"type": "corrected", "id": 1} in frames[9].events
    assert not any((x == 5).any() for x in labels[:11]) and (labels[11] == 5).sum() > 100
    assert {"type": "started", "id": 5} in frames[11].events
    assert all([o["id"] for o in f.objects] == [1, 5] for f in frames[3:])  # every later frame lists both


def test_prompt_requests_that_do_not_fit_the_schema(make_stack, tmp_path):
    stack = make_stack(workers=0)
    with Client(stack.url) as c:
        job = c.submit(frames_zip(tmp_path / "v.zip", 3), FIRST_MASK)
    url = f"{stack.url}/v1/jobs/{job.id}/prompts"
    r = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "malformed_request"
    r = httpx.post(url, json={"frames": {"1": {"2": {"colour": "red"}}}})
    assert r.status_code == 400 and "frames.1.2" in r.json()["error"]["message"]
    r = httpx.post(f"{stack.url}/v1/jobs/nope/prompts", json={"frames": {"1": {"2": {"remove": True}}}})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.post(url, json={"frames": {"0": {"2": {"box": [1, 1, 50, 50]}}}})  # queued: frame 0 is fine
    assert r.status_code == 202 and r.json()["objects"] == [1, 2]
