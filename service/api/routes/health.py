"""Liveness and readiness probes (never behind authentication)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ...errors import NO_WORKERS
from ..deps import Store
from ..schemas import Health, Ready, error_body, error_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process answers")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", response_model=Ready, responses=error_responses(503),
            summary="Redis is reachable and at least one worker has a live heartbeat")
async def readyz(store: Store):
    try:
        await store.ping()
    except Exception as e:  # noqa: BLE001 - any failure to reach Redis means not ready
        return JSONResponse(error_body("unavailable", f"redis unreachable: {e}"), 503)
    workers = await store.workers_alive()
    if not workers:
        return JSONResponse(error_body(NO_WORKERS.code, "no worker heartbeat seen"), NO_WORKERS.http)
    return {"status": "ready", "workers": workers}
