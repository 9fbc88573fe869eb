"""/metrics: Prometheus exposition of the service's counters (read from Redis, shared by every process)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ..deps import Config, Store, authenticate
from ..metrics import ServiceCollector
from ..schemas import error_responses

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, summary="Prometheus text format", responses={
    200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "every agss_* metric"}, **error_responses(401, 503)})
async def metrics(store: Store, settings: Config, request: Request) -> Response:
    if settings.metrics_auth:
        await authenticate(settings, store, request.headers.get("authorization"))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(await store.stats()))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
