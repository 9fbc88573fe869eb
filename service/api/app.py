"""The HTTP API (FastAPI). It validates and enqueues; it never imports torch and never runs the model."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..config import Settings, get_settings
from ..errors import HTTP_ERROR, INTERNAL, MALFORMED, classify, expected_types
from ..jobs.errors import RetryLater, UnauthenticatedError
from ..jobs.store import JobStore
from .middleware import BodyLimit
from .routes import console, events, frames, health, jobs, metrics, sessions
from .schemas import error_body

log = logging.getLogger("agss.api")


async def _on_expected(request: Request, exc: Exception) -> JSONResponse:
    spec = classify(exc)
    headers = {}
    if isinstance(exc, RetryLater):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, UnauthenticatedError):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error_body(spec.code, str(exc) or spec.code), spec.http, headers=headers)


async def _on_internal(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s", request.url.path)
    return JSONResponse(error_body(INTERNAL.code, "internal error"), INTERNAL.http)


async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errs = exc.errors()
    first = errs[0] if errs else {"loc": [], "msg": "malformed request"}
    where = ".".join(str(x) for x in first["loc"] if x != "body")
    return JSONResponse(error_body(MALFORMED.code, f"{where}: {first['msg']}" if where else first["msg"]),
                        MALFORMED.http)


async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(error_body(HTTP_ERROR.code, str(exc.detail)), exc.status_code)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.settings = settings
        app.state.store = JobStore(settings)
        yield
        await app.state.store.close()

    app = FastAPI(title="AGSS-VOS segmentation service", version="1", lifespan=lifespan,
                  description="Video object segmentation jobs: submit a video and masks, read each frame's "
                              "masks as they are computed. Errors are `{\"error\": {\"code\", \"message\"}}`.")
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + settings.max_mask_bytes + (1 << 20))
    for exc_type in expected_types():
        app.add_exception_handler(exc_type, _on_expected)
    app.add_exception_handler(Exception, _on_internal)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    for module in (jobs, frames, events, sessions, health, metrics, console):
        app.include_router(module.router)
    return app
