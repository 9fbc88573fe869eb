"""Live session clients: WebSocket (`WsSession`) and gRPC (`GrpcSession`), with one interface.

    with WsSession.create("http://127.0.0.1:8000", {"policy": "latest"}) as s:
        s.send_prompts({"frames": {"next": {"1": {"box": [10, 10, 200, 150]}}}})
        s.send_frame(jpeg_bytes)                  # sending and receiving may run in two threads
        for msg in s.messages():                  # dicts, as docs/SESSIONS.md describes
            if msg["type"] == "frame": ...
        s.end()

Messages: {"type": "ack", "index"}, {"type": "frame", "index", "objects", "events", "timings"},
{"type": "dropped", "index"}, {"type": "error", "index", "code", "message"}, {"type": "end", ...}.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator

import grpc
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ..grpc.pb import segmentation_pb2 as pb2
from ..grpc.pb import segmentation_pb2_grpc as pb2_grpc
from .grpc import client_error, event_dict
from .http import Client
from .types import ClientError

_CLOSE = object()


class LiveSession:
    id: str

    def send_frame(self, data: bytes) -> None:
        raise NotImplementedError

    def send_prompts(self, prompts: dict) -> None:
        raise NotImplementedError

    def end(self) -> None:
        raise NotImplementedError

    def messages(self) -> Iterator[dict]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WsSession(LiveSession):
    """A session over the WebSocket `/v1/sessions/{id}/ws` (created over HTTP first)."""

    def __init__(self, base_url: str, session_id: str, start: int = 0, key: str | None = None):
        self.id = session_id
        headers = {"Authorization": f"Bearer {key}"} if key else None
        ws_url = base_url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        try:
            self._connection = connect(f"{ws_url}/v1/sessions/{session_id}/ws?start={start}", max_size=64 << 20,
                                       additional_headers=headers, open_timeout=30)
            self.ws = self._connection.__enter__()
        except (OSError, ConnectionClosed) as e:
            raise ClientError("unreachable", f"{ws_url}: {e}") from None

    @classmethod
    def create(cls, base_url: str, options: dict | None = None, key: str | None = None) -> WsSession:
        with Client(base_url, key=key) as c:
            info = c.create_session(options or {})
        return cls(base_url, info["id"], key=key)

    def send_frame(self, data: bytes) -> None:
        self.ws.send(data)

    def send_prompts(self, prompts: dict) -> None:
        self.ws.send(json.dumps({"type": "prompts", **prompts}))

    def end(self) -> None:
        self.ws.send(json.dumps({"type": "end"}))

    def messages(self) -> Iterator[dict]:
        try:
            for raw in self.ws:
                msg = json.loads(raw)
                yield msg
                if msg["type"] == "end":
                    return
        except ConnectionClosed:
            return

    def close(self) -> None:
        self._connection.__exit__(None, None, None)


class GrpcSession(LiveSession):
    """A session over the gRPC `Track` stream."""

    def __init__(self, target: str, options: dict | None = None, attach: str | None = None, start: int = 0,
                 key: str | None = None):
        metadata = (("authorization", f"Bearer {key}"),) if key else ()
        self._requests: queue.Queue = queue.Queue()
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20),
                                                              ("grpc.max_send_message_length", 64 << 20)])
        first = (pb2.TrackRequest(attach=pb2.Attach(session_id=attach, start_index=start)) if attach else
                 pb2.TrackRequest(spec=pb2.SessionSpec(options_json=json.dumps(options or {}))))
        self._requests.put(first)
        self._call = pb2_grpc.SegmentationStub(self.channel).Track(self._request_iter(), metadata=metadata)
        try:
            head = next(self._call)
        except grpc.RpcError as e:
            self.channel.close()
            raise client_error(e) from None
        self.id = head.session.id

    def _request_iter(self):
        while (item := self._requests.get()) is not _CLOSE:
            yield item

    def send_frame(self, data: bytes) -> None:
        self._requests.put(pb2.TrackRequest(frame=data))

    def send_prompts(self, prompts: dict) -> None:
        self._requests.put(pb2.TrackRequest(prompts_json=json.dumps(prompts)))

    def end(self) -> None:
        self._requests.put(pb2.TrackRequest(end=True))

    def messages(self) -> Iterator[dict]:
        try:
            for resp in self._call:
                kind = resp.WhichOneof("part")
                if kind == "ack":
                    yield {"type": "ack", "index": resp.ack}
                elif kind == "dropped":
                    yield {"type": "dropped", "index": resp.dropped}
                elif kind == "error":
                    e = resp.error
                    yield {"type": "error", "index": None if e.index < 0 else e.index, "code": e.code,
                           "message": e.message}
                elif kind == "frame":
                    f = resp.frame
                    yield {"type": "frame", "index": f.index, "events": [event_dict(e) for e in f.events],
                           "timings": dict(f.timings),
                           "objects": [{"id": o.id, "rle": {"size": list(o.rle.size), "counts": o.rle.counts},
                                        "area": o.area, "bbox": list(o.bbox), "score": round(o.score, 4)}
                                       for o in f.objects]}
                elif kind == "ended":
                    yield {"type": "end", "status": resp.ended.status, "ended_by": resp.ended.ended_by or None,
                           "frames_done": resp.ended.frames_done}
                    return
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                raise client_error(e) from None

    def close(self) -> None:
        self._requests.put(_CLOSE)
        self._call.cancel()
        self.channel.close()
