"""/v1/sessions: live sessions. Create one, then send frames and prompts and receive each frame's masks
over the WebSocket (or push frames over HTTP and read them like a job's). The message schema is in
docs/SESSIONS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from fastapi import APIRouter, Body, Query, Request, Response, WebSocket, WebSocketDisconnect

from ...errors import classify, expected_types
from ...jobs import intake
from ...jobs.records import Job
from ...jobs.store import JobStore
from ..deps import Caller, Config, Store, authenticate
from ..schemas import MAX_INDEX, FrameAck, FramesPage, SessionOut, error_responses, links
from .frames import get_frames as job_frames

log = logging.getLogger("agss.api")
router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


@router.post("", operation_id="createSession",
             status_code=201, response_model=SessionOut, responses={**error_responses(401, 422, 429, 503), **links(
                 201, "session_id", "getSession", "deleteSession", "endSession", "pushSessionFrame",
                 "addSessionPrompts", "getSessionFrames")},
             summary="Create a live session (a worker takes it and keeps it until it ends)")
async def create_session(store: Store, settings: Config, caller: Caller, response: Response,
                         options: intake.SessionOptions = Body(default_factory=intake.SessionOptions)) -> dict:
    session = await store.create_session(intake.new_session(settings, options), caller)
    response.headers["Location"] = f"/v1/sessions/{session.id}"
    return session.public()


@router.get("/{session_id}", operation_id="getSession",
            response_model=SessionOut, responses=error_responses(401, 404, 422, 503),
            summary="A session's status")
async def get_session(store: Store, caller: Caller, session_id: str) -> dict:
    return (await store.get_session(session_id, caller)).public()


@router.delete("/{session_id}", operation_id="deleteSession",
               response_model=SessionOut, responses=error_responses(401, 404, 409, 422, 503),
               summary="End a session now (its published frames stay readable)")
async def delete_session(store: Store, caller: Caller, session_id: str) -> dict:
    await store.get_session(session_id, caller)
    return (await store.cancel(session_id)).public()


@router.post("/{session_id}/end", operation_id="endSession",
             response_model=SessionOut, responses=error_responses(401, 404, 422, 503),
             summary="The client sends nothing more: the session ends once its frames are answered")
async def end_session(store: Store, caller: Caller, session_id: str) -> dict:
    await store.get_session(session_id, caller)
    return (await store.end_session(session_id)).public()


@router.post("/{session_id}/frames", operation_id="pushSessionFrame", status_code=202, response_model=FrameAck,
             responses=error_responses(400, 401, 404, 409, 413, 415, 422, 429, 503),
             openapi_extra={"requestBody": {"content": {"image/jpeg": {}, "image/png": {}}, "required": True}},
             summary="Send one frame (JPEG or PNG bytes as the body); its masks come with the same index")
async def push_frame(store: Store, settings: Config, caller: Caller, request: Request, session_id: str) -> dict:
    session = await store.get_session(session_id, caller)
    data = await request.body()
    intake.check_frame(data, settings.max_frame_bytes)
    return {"index": await store.push_frame(session_id, data, session.max_pending)}


@router.post("/{session_id}/prompts", operation_id="addSessionPrompts", status_code=202, response_model=SessionOut,
             responses=error_responses(400, 401, 404, 409, 422, 503),
             summary='Prompts for the next frame ("next") or a named frame not reached yet')
async def add_prompts(store: Store, caller: Caller, session_id: str, prompts: dict = Body(...)) -> dict:
    session = await store.get_session(session_id, caller)
    frames, new_ids = await asyncio.to_thread(intake.job_prompts, session, prompts)
    return (await store.add_prompts(session_id, frames, new_ids)).public()


@router.get("/{session_id}/frames", operation_id="getSessionFrames",
            response_model=FramesPage, response_model_exclude_none=True,
            responses=error_responses(401, 404, 422, 503), summary="Answered frames from `start` on (long-poll)")
async def get_frames(store: Store, settings: Config, caller: Caller, session_id: str,
                     start: int = Query(0, ge=0, le=MAX_INDEX),
                     limit: int = Query(100, ge=1, le=1000), wait: float = Query(0, ge=0)) -> dict:
    await store.get_session(session_id, caller)
    return await job_frames(store, settings, caller, session_id, start, limit, wait)


# -- the WebSocket ----------------------------------------------------------------------------------------
def frame_message(frame: dict) -> dict:
    """A published frame as the message a live client receives."""
    if frame.get("dropped"):
        return {"type": "dropped", "index": frame["index"]}
    if frame.get("error"):
        return {"type": "error", "index": frame["index"], **frame["error"]}
    return {"type": "frame", "index": frame["index"], "objects": frame["objects"], "events": frame["events"],
            "timings": frame.get("timings", {})}


def error_message(exc: Exception, index: int | None = None) -> dict:
    spec = classify(exc)
    return {"type": "error", "index": index, "code": spec.code if spec else "internal",
            "message": str(exc) if spec else "internal error"}


@router.websocket("/{session_id}/ws")
async def live(websocket: WebSocket, session_id: str, start: int = 0) -> None:
    """Frames (binary messages) and prompts/end (JSON text) in; acks, frames, drops, errors, end out."""
    store: JobStore = websocket.app.state.store
    settings = websocket.app.state.settings
    await websocket.accept()
    lock = asyncio.Lock()

    async def send(msg: dict) -> None:
        async with lock:
            await websocket.send_text(json.dumps(msg, separators=(",", ":")))

    try:
        header = websocket.headers.get("authorization")
        if settings.auth != "off" and not header:  # a browser cannot set headers: the first message
            first = json.loads(await websocket.receive_text())
            header = first.get("key") if isinstance(first, dict) and first.get("type") == "auth" else None
        caller = await authenticate(settings, store, header)
        session = await store.get_session(session_id, caller)
    except (json.JSONDecodeError, WebSocketDisconnect):
        await websocket.close(code=4400)
        return
    except expected_types() as e:
        await send(error_message(e))
        await websocket.close(code=4000 + classify(e).http if classify(e).http < 500 else 1011)
        return
    relay = asyncio.create_task(_relay(store, session_id, min(max(start, 0), MAX_INDEX), send))
    watch = None
    try:
        await _receive(websocket, store, settings, session, send)
        # After "end" the relay goes on until the last frame is answered, unless the client goes away first
        # (then nobody would ever read the socket, and this handler would outlive the connection).
        watch = asyncio.create_task(_until_disconnect(websocket))
        await asyncio.wait({relay, watch}, return_when=asyncio.FIRST_COMPLETED)
    except WebSocketDisconnect:
        pass
    finally:
        for task in (relay, watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
    with contextlib.suppress(Exception):
        await websocket.close()


async def _relay(store: JobStore, session_id: str, start: int, send) -> None:
    """Every answered frame from `start` on, as it is published; then the end of the session."""
    async for frame in store.stream(session_id, start):
        await send(frame_message(frame))
    session = await store.get(session_id)
    await send({"type": "end", "status": session.status.value, "ended_by": session.ended_by or None,
                "frames_done": session.frames_done})


async def _until_disconnect(websocket: WebSocket) -> None:
    """Returns when the client closes the connection; whatever it sends after "end" is not read."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def _receive(websocket: WebSocket, store: JobStore, settings, session: Job, send) -> None:
    while True:
        msg = await websocket.receive()
        if msg["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(msg.get("code", 1000))
        data, text = msg.get("bytes"), msg.get("text")
        try:
            if data is not None:
                intake.check_frame(data, settings.max_frame_bytes)
                await send({"type": "ack", "index": await store.push_frame(session.id, data, session.max_pending)})
                continue
            body = json.loads(text or "")
            kind = body.get("type") if isinstance(body, dict) else None
            if kind == "prompts":
                current = await store.get(session.id)
                frames, new_ids = await asyncio.to_thread(intake.job_prompts, current, body)
                await store.add_prompts(session.id, frames, new_ids)
                await send({"type": "prompts", "frames": sorted(frames)})
            elif kind == "end":
                await store.end_session(session.id)
                # the relay sends the end message once the last frame is answered; then we are done
                return
            elif kind in ("frame", "auth"):
                continue  # an optional header before a binary frame; a key sent twice
            else:
                await send({"type": "error", "index": None, "code": "malformed_request",
                            "message": 'a text message is JSON with "type": prompts, end or frame'})
        except json.JSONDecodeError:
            await send({"type": "error", "index": None, "code": "malformed_request",
                        "message": "a text message must be JSON"})
        except expected_types() as e:
            await send(error_message(e))
