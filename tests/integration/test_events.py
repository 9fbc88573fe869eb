"""GET /v1/jobs/{id}/events (server-sent events) and the console's static files, over real HTTP.
These need no browser."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from service.api.routes.events import event_stream
from service.client import Client
from service.jobs import apikeys
from service.jobs.keys import Keys
from service.jobs.store import JobStore

from .conftest import FIRST_MASK, frames_zip


def read_events(resp: httpx.Response) -> list[dict]:
    """Parse an event stream: [{"id", "event", "data"}] (comments and `retry:` kept as their own entries)."""
    out, cur = [], {}
    for line in resp.iter_lines():
        if not line:
            if cur:
                out.append(cur)
            cur = {}
            continue
        if line.startswith(":"):
            out.append({"comment": line[1:].strip()})
            continue
        field, _, value = line.partition(":")
        cur[field] = value[1:] if value.startswith(" ") else value
    return out


def test_events_push_every_frame_then_the_end_and_resume_after_last_event_id(make_stack, tmp_path, redis_url,
                                                                             prefix):
    n = 6
    video = frames_zip(tmp_path / "v.zip", n)
    stack = make_stack(workers=1, agss_model="flow-only", agss_auth="required")
    r = redis.from_url(redis_url)
    key = apikeys.create(r, Keys(prefix), "events")
    r.close()
    url = stack.url
    with Client(url, key=key) as c:
        job = c.submit(video, FIRST_MASK)
        # Open the stream while the job runs: frames come as they are published, then the end.
        with httpx.stream("GET", f"{url}/v1/jobs/{job.id}/events", headers={"Authorization": f"Bearer {key}"},
                          timeout=60) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            assert resp.headers["cache-control"] == "no-cache"
            events = read_events(resp)
        page = httpx.get(f"{url}/v1/jobs/{job.id}/frames", params={"limit": 100},
                         headers={"Authorization": f"Bearer {key}"}).json()
    assert events[0] == {"retry": "3000"}
    frames = [e for e in events if e.get("event") == "frame"]
    assert [int(e["id"]) for e in frames] == list(range(n))
    assert [json.loads(e["data"]) for e in frames] == page["frames"]  # the frames endpoint's JSON, exactly
    end = events[-1]
    assert end["event"] == "end" and "id" not in end
    assert json.loads(end["data"]) == {"status": "succeeded", "frames_done": n, "frames_total": n, "error": None}

    # Reconnecting with Last-Event-ID (what EventSource does by itself) resumes after that frame; the key may
    # come as ?key= (EventSource cannot set headers).
    with httpx.stream("GET", f"{url}/v1/jobs/{job.id}/events", params={"key": key},
                      headers={"Last-Event-ID": "3"}, timeout=30) as resp:
        assert resp.status_code == 200
        again = read_events(resp)
    assert [int(e["id"]) for e in again if e.get("event") == "frame"] == [4, 5]
    assert again[-1]["event"] == "end"
    with httpx.stream("GET", f"{url}/v1/jobs/{job.id}/events", params={"key": key, "start": 5}, timeout=30) as resp:
        assert [int(e["id"]) for e in read_events(resp) if e.get("event") == "frame"] == [5]

    # Refusals are the API's error body, before any stream opens.
    for resp, status, code in (
            (httpx.get(f"{url}/v1/jobs/{job.id}/events"), 401, "unauthenticated"),
            (httpx.get(f"{url}/v1/jobs/{job.id}/events", params={"key": "agss_0000_nope"}), 401, "unauthenticated"),
            (httpx.get(f"{url}/v1/jobs/nope/events", params={"key": key}), 404, "not_found"),
            (httpx.get(f"{url}/v1/jobs/{job.id}/events", params={"key": key}, headers={"Last-Event-ID": "x"}), 422,
             "malformed_request")):
        assert resp.status_code == status and resp.json()["error"]["code"] == code, resp.text


def test_a_quiet_stream_sends_keep_alive_comments(make_stack, tmp_path):
    """No worker: the job waits in the queue, and the stream says it is alive (every 15 s; 0.2 s here)."""
    stack = make_stack(workers=0)
    with Client(stack.url) as c:
        job = c.submit(frames_zip(tmp_path / "v.zip", 2), FIRST_MASK)

    async def first(k: int) -> list[str]:
        store = JobStore(stack.settings)
        gen = event_stream(store, job.id, 0, keepalive=0.2)
        try:
            return [await anext(gen) for _ in range(k)]
        finally:
            await gen.aclose()
            await store.close()

    # A thread of its own: the browser tests' Playwright keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        got = pool.submit(asyncio.run, asyncio.wait_for(first(3), 10)).result(timeout=30)
    assert got == ["retry: 3000\n\n", ": keep-alive\n\n", ": keep-alive\n\n"]


@pytest.fixture
def api(make_stack):
    return make_stack(workers=0).url


def test_the_console_is_served_by_the_api_with_its_types_and_no_listing(api):
    page = httpx.get(f"{api}/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="console/js/main.js">' in page.text
    for path, kind in (("console/js/main.js", "text/javascript"), ("console/console.css", "text/css"),
                       ("console/js/rle.js", "text/javascript")):
        r = httpx.get(f"{api}/{path}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind), path
        assert r.headers["cache-control"] == "no-cache" and r.headers["x-content-type-options"] == "nosniff"
        again = httpx.get(f"{api}/{path}", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304  # revalidated, not downloaded again
    # No folder listing, nothing outside the console folder, nothing but its kinds of file.
    for path in ("console/", "console/js/", "console/js", "console/%2e%2e/app.py", "console/..%2fapp.py",
                 "console/nope.js", "console/../routes/console.py"):
        r = httpx.get(f"{api}/{path}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "http_error", (path, r.status_code)
    # The API is untouched: unknown routes are still the API's 404, documented routes still answer.
    assert httpx.get(f"{api}/v1/nope").status_code == 404
    assert httpx.get(f"{api}/healthz").json() == {"status": "ok"}
    doc = httpx.get(f"{api}/openapi.json").json()
    assert "/" not in doc["paths"] and "/v1/jobs/{job_id}/events" in doc["paths"]
