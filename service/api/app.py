"""The HTTP API (FastAPI). It validates and enqueues; it never imports torch and never runs the model."""

from __future__ import annotations

import logging
import tempfile
import zipfile
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, File, Form, Header, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..config import Settings, get_settings
from ..errors import classify, expected_types
from ..jobs.broker import JobStore
from ..jobs.errors import JobConflictError, JobNotFoundError
from ..media.masks import encode_label_png
from ..media.rle import objects_to_labels
from . import intake
from .metrics import render_metrics

log = logging.getLogger("agss.api")


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


class BodyLimit:
    """ASGI middleware: answer 413 as soon as a request body passes the limit (with or without
    Content-Length), before the multipart parser has spooled all of it."""

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


class _TooLarge(Exception):
    pass


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.store = JobStore(settings)
        yield
        await app.state.store.close()

    app = FastAPI(title="AGSS-VOS segmentation service", version="1", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + settings.max_mask_bytes + (1 << 20))

    def store(request: Request) -> JobStore:
        return request.app.state.store

    async def on_expected(request: Request, exc: Exception):
        spec = classify(exc)
        return JSONResponse(error_body(spec.code, str(exc) or spec.code), spec.http)

    for exc_type in expected_types():
        app.add_exception_handler(exc_type, on_expected)

    @app.exception_handler(Exception)
    async def on_internal(request: Request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return JSONResponse(error_body("internal", "internal error"), 500)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {"loc": [], "msg": "malformed request"}
        where = ".".join(str(x) for x in first["loc"] if x != "body")
        return JSONResponse(error_body("malformed_request", f"{where}: {first['msg']}" if where else first["msg"]),
                            422)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException):
        return JSONResponse(error_body("http_error", str(exc.detail)), exc.status_code)

    @app.post("/v1/jobs", status_code=202)
    async def create_job(request: Request, video: UploadFile = File(...), masks: UploadFile = File(...),
                         options: str | None = Form(None),
                         idempotency_key: str | None = Header(None, max_length=200)):
        s = store(request)
        if idempotency_key:
            existing = await s.find_idempotent(idempotency_key)
            if existing:
                job = await s.get(existing)
                return JSONResponse(job.public(), 202, headers={"Location": f"/v1/jobs/{job.id}"})
        opts = intake.parse_options(options)
        folder = Path(tempfile.mkdtemp(prefix="agss-upload-"))
        try:
            vpath = folder / f"video{intake.safe_suffix(video.filename, '.bin')}"
            mpath = folder / f"masks{intake.safe_suffix(masks.filename, '.png')}"
            await run_in_threadpool(intake.copy_limited, video.file, vpath, settings.max_upload_bytes, "video")
            await run_in_threadpool(intake.copy_limited, masks.file, mpath, settings.max_mask_bytes, "masks")
            job = await intake.accept(s, settings, folder, vpath, video.filename or "", mpath, masks.filename or "",
                                      opts, idempotency_key)
        finally:
            intake.cleanup(folder)
        return JSONResponse(job.public(), 202, headers={"Location": f"/v1/jobs/{job.id}"})

    @app.get("/v1/jobs/{job_id}")
    async def get_job(request: Request, job_id: str):
        return (await store(request).get(job_id)).public()

    @app.get("/v1/jobs/{job_id}/frames")
    async def get_frames(request: Request, job_id: str, start: int = Query(0, ge=0),
                         limit: int = Query(100, ge=1, le=1000), wait: float = Query(0, ge=0)):
        page = await store(request).frames(job_id, start, limit, min(wait, settings.max_wait_seconds))
        frames = [{"index": f["index"], "objects": f["objects"]} for f in page.frames]
        return {"frames": frames, "next": page.next, "status": page.status}

    @app.get("/v1/jobs/{job_id}/frames/{index}.png")
    async def get_frame_png(request: Request, job_id: str, index: int):
        s = store(request)
        job = await s.get(job_id)
        page = await s.frames(job_id, index, 1)
        if not page.frames or page.frames[0]["index"] != index:
            raise JobNotFoundError(f"frame {index} of job {job_id} is not published"
                                   + ("" if job.ended else " yet"))
        labels = objects_to_labels(page.frames[0]["objects"], (job.height, job.width))
        return Response(encode_label_png(labels, job.palette_bytes()), media_type="image/png")

    @app.get("/v1/jobs/{job_id}/result.zip")
    async def get_result(request: Request, job_id: str):
        s = store(request)
        job = await s.get(job_id)
        if job.status != "succeeded":
            raise JobConflictError(f"job {job_id} is {job.status}; the result exists once it has succeeded")
        tmp = tempfile.NamedTemporaryFile(prefix="agss-result-", suffix=".zip", delete=False)
        tmp.close()
        with zipfile.ZipFile(tmp.name, "w", zipfile.ZIP_STORED) as zf:
            start = 0
            while True:
                page = await s.frames(job_id, start, 200)
                if not page.frames:
                    break
                for f in page.frames:
                    labels = objects_to_labels(f["objects"], (job.height, job.width))
                    png = await run_in_threadpool(encode_label_png, labels, job.palette_bytes())
                    zf.writestr(f"{f['index']:05d}.png", png)
                start = page.next
        return FileResponse(tmp.name, media_type="application/zip", filename=f"{job_id}.zip",
                            background=BackgroundTask(Path(tmp.name).unlink, missing_ok=True))

    @app.delete("/v1/jobs/{job_id}")
    async def cancel_job(request: Request, job_id: str):
        return (await store(request).cancel(job_id)).public()

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request):
        s = store(request)
        try:
            await s.ping()
        except Exception as e:  # noqa: BLE001
            return JSONResponse(error_body("unavailable", f"redis unreachable: {e}"), 503)
        workers = await s.workers_alive()
        if not workers:
            return JSONResponse(error_body("no_workers", "no worker heartbeat seen"), 503)
        return {"status": "ready", "workers": workers}

    @app.get("/metrics")
    async def metrics(request: Request):
        return PlainTextResponse(render_metrics(await store(request).stats()),
                                 media_type="text/plain; version=0.0.4")

    return app
