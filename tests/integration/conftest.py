"""Real Redis, real API and worker processes on loopback.

Redis: the server named by AGSS_TEST_REDIS_URL when set (tests then use a key prefix of their own and
delete only their keys), otherwise a redis-server started here on a free port and stopped after.
"""

from __future__ import annotations

import asyncio
import os
import uuid
import zipfile
from pathlib import Path

import pytest
import redis

from service.jobs.store import JobStore
from service.runtime.redis import EmbeddedRedis
from service.runtime.supervisor import Stack

from ..conftest import REAL, require


def store_call(settings, fn):
    """`await fn(store)` on a JobStore of its own (the API side), from a test's synchronous code."""
    async def go():
        store = JobStore(settings)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    url = os.environ.get("AGSS_TEST_REDIS_URL")
    if url:
        redis.from_url(url).ping()
        yield url
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), persist=False) as r:
        yield r.url


@pytest.fixture
def prefix(redis_url):
    p = f"agss-test-{uuid.uuid4().hex[:10]}:"
    yield p
    r = redis.from_url(redis_url)
    keys = list(r.scan_iter(match=p + "*", count=500))
    if keys:
        r.delete(*keys)


@pytest.fixture
def make_stack(redis_url, prefix, tmp_path, small_model_dir):
    stacks = []

    def make(workers: int = 1, grpc: bool = False, **env) -> Stack:
        base = {"AGSS_MODEL": str(small_model_dir), "AGSS_LONG_SIDE": "256", "AGSS_HEARTBEAT_SECONDS": "0.5"}
        base.update({k.upper(): str(v) for k, v in env.items()})
        logs = tmp_path / f"logs{len(stacks)}"
        logs.mkdir()
        s = Stack(redis_url, prefix, workers=workers, env=base, log_dir=str(logs), grpc=grpc)
        stacks.append(s)
        return s.start()

    yield make
    for s in stacks:
        s.stop()


FIRST_MASK = REAL / "bmx-trees" / "Annotations" / "00000.png"


def frames_zip(out: Path, n: int) -> Path:
    seq = require(REAL / "bmx-trees" / "JPEGImages")
    with zipfile.ZipFile(out, "w") as zf:
        for f in sorted(seq.iterdir())[:n]:
            zf.write(f, f.name)
    return out
