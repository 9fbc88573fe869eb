"""Typed dependencies of the routes: the job store, the settings, and the caller (its API key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..config import Settings
from ..jobs import apikeys
from ..jobs.apikeys import KeyInfo
from ..jobs.store import JobStore


def _store(request: Request) -> JobStore:
    return request.app.state.store


def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def authenticate(settings: Settings, store: JobStore, header: str | None) -> KeyInfo | None:
    """The caller's key (UnauthenticatedError without a valid one), or None when authentication is off."""
    return await apikeys.authenticate(settings.auth, store.r, store.keys, header)


async def _caller(request: Request) -> KeyInfo | None:
    return await authenticate(request.app.state.settings, request.app.state.store,
                              request.headers.get("authorization"))


Store = Annotated[JobStore, Depends(_store)]
Config = Annotated[Settings, Depends(_settings)]
Caller = Annotated[KeyInfo | None, Depends(_caller)]
