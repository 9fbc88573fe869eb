"""/v1/jobs/{id}/events: a job's frames pushed as server-sent events (text/event-stream).

For browsers (EventSource) and any client that reads an event stream; the long-poll frames endpoint and
gRPC StreamFrames carry the same frames. Each frame is one event:

    id: 12
    event: frame
    data: {"index": 12, "objects": [...], "events": [...]}      (the frames endpoint's JSON)

then one `event: end` with the job's status once it has ended, and a comment line every 15 s while
nothing happens (proxies close quiet connections). A client that reconnects with `Last-Event-ID: 12`
(EventSource does so by itself) gets the frames from 13 on. EventSource cannot set headers, so this
route alone also takes the API key as `?key=`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from ...errors import classify, expected_types
from ...jobs.apikeys import KeyInfo
from ...jobs.store import JobStore
from ..deps import Store, authenticate
from ..schemas import Frame, error_body, error_responses

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["frames"])

KEEPALIVE_SECONDS = 15.0
RETRY_MS = 3000  # how long an EventSource waits before it reconnects


async def _caller_or_key(request: Request, key: str | None = Query(
        None, description="the API key, for clients that cannot set an Authorization header (EventSource); "
                          "the header wins when both are given")) -> KeyInfo | None:
    header = request.headers.get("authorization") or key  # a bare key reads like a bearer token
    return await authenticate(request.app.state.settings, request.app.state.store, header)


KeyCaller = Annotated[KeyInfo | None, Depends(_caller_or_key)]


def _sse(event: str, data: dict, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def frame_payload(frame: dict) -> dict:
    """A stored frame as the frames endpoint returns it (same model, same fields left out)."""
    return Frame.model_validate(frame).model_dump(exclude_none=True)


async def _next(frames: AsyncIterator[dict]) -> dict:
    return await anext(frames)


async def event_stream(store: JobStore, job_id: str, start: int,
                       keepalive: float = KEEPALIVE_SECONDS) -> AsyncIterator[str]:
    """The events of one job from frame `start` on; ends after the `end` event (or an `error` event)."""
    yield f"retry: {RETRY_MS}\n\n"  # sent at once, so the client sees the stream open before the first frame
    frames = store.stream(job_id, start)
    pending: asyncio.Task | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.create_task(_next(frames))
            # The read blocks in Redis; waiting on the task (never cancelling it) keeps the generator whole.
            done, _ = await asyncio.wait({pending}, timeout=keepalive)
            if not done:
                yield ": keep-alive\n\n"
                continue
            task, pending = pending, None
            try:
                frame = task.result()
            except StopAsyncIteration:
                break
            yield _sse("frame", frame_payload(frame), frame["index"])
        job = await store.get(job_id)
        yield _sse("end", {"status": job.status.value, "frames_done": job.frames_done,
                           "frames_total": job.frames_total, "error": job.public().get("error")})
    except expected_types() as e:  # the job expired, Redis went away: said once, in the stream's own terms
        spec = classify(e)
        yield _sse("error", error_body(spec.code, str(e) or spec.code))
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        with contextlib.suppress(Exception):
            await frames.aclose()


EVENTS_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}},
          "description": "`id: N`, `event: frame`, `data:` the frames endpoint's JSON of frame N, per frame as it "
                         "is published; `event: end` with `{status, frames_done, frames_total, error}` once the job "
                         "has ended; `event: error` with the error body if the stream cannot go on; a comment "
                         "every 15 s"},
    **error_responses(401, 404, 422, 503),
}


@router.get("/events", response_class=StreamingResponse, responses=EVENTS_DOC,
            summary="Server-sent events: each frame as it is published, then the end (Last-Event-ID resumes)",
            description="For browsers (EventSource) and other event-stream clients. A reconnection with "
                        "`Last-Event-ID: N` (or `?start=N+1`) resumes after frame N. EventSource cannot set "
                        "headers: this route also accepts the API key as `?key=` (keep such URLs out of logs "
                        "and shared links).")
async def job_events(store: Store, caller: KeyCaller, job_id: str,
                     start: int = Query(0, ge=0, description="the first frame to send"),
                     last_event_id: Annotated[int | None, Header(
                         ge=-1, description="the last frame received; the stream resumes after it")] = None,
                     ) -> StreamingResponse:
    await store.get(job_id, caller)  # unknown job or another key's: 404 before the stream opens
    first = max(start, last_event_id + 1) if last_event_id is not None else start
    return StreamingResponse(event_stream(store, job_id, first), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
