"""ASGI middleware of the HTTP API."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from .schemas import error_body


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Answer 413 as soon as a request body passes the limit (with or without Content-Length), before
    the multipart parser has spooled all of it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._reject(send)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return msg

        async def tracking_send(msg):
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send):
        resp = JSONResponse(error_body("too_large", f"request body is larger than {self.limit} bytes"), 413,
                            headers={"Connection": "close"})
        await resp({"type": "http"}, None, send)
