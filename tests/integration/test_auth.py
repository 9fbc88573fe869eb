"""API keys and tenants through every API: HTTP, gRPC, WebSocket; quotas; the rule for binding without keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import httpx
import pytest
import redis

from service.client import Client, ClientError, GrpcClient
from service.client.session import WsSession

from .conftest import FIRST_MASK, frames_zip


def keys_cli(redis_url: str, prefix: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AGSS_REDIS_URL": redis_url, "AGSS_KEY_PREFIX": prefix}
    return subprocess.run([sys.executable, "-m", "service.cli", "keys", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def new_key(redis_url: str, prefix: str, name: str, *quota: str) -> str:
    p = keys_cli(redis_url, prefix, "create", "--name", name, *quota)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().splitlines()[-1]  # alone on the last line, for scripts


def _value(r: redis.Redis, key: bytes) -> bytes:
    """Whatever a key holds, as bytes (hash fields and values, stream entries, members)."""
    kind = r.type(key)
    if kind == b"hash":
        return b"".join(f + v for f, v in r.hgetall(key).items())
    if kind == b"string":
        return r.get(key) or b""
    if kind == b"stream":
        return repr(r.xrange(key)).encode()
    if kind == b"zset":
        return b"".join(r.zrange(key, 0, -1))
    if kind == b"set":
        return b"".join(r.smembers(key))
    if kind == b"list":
        return b"".join(r.lrange(key, 0, -1))
    return b""


def test_keys_tenants_and_quotas_over_http_grpc_and_websocket(make_stack, redis_url, prefix, tmp_path):
    stack = make_stack(workers=0, grpc=True, agss_auth="required")
    a = new_key(redis_url, prefix, "tenant-a", "--max-queued", "1")
    b = new_key(redis_url, prefix, "tenant-b", "--rate", "1/s")
    video = frames_zip(tmp_path / "v.zip", 3)
    url = stack.url
    # no key, a wrong key: 401 with the error body, on every /v1 route
    for r in (httpx.get(f"{url}/v1/jobs/x"), httpx.get(f"{url}/v1/jobs/x", headers={"Authorization": "Bearer nope"}),
              httpx.post(f"{url}/v1/sessions", json={})):
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
        assert r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{url}/healthz").status_code == 200 and httpx.get(f"{url}/readyz").status_code == 503
    assert httpx.get(f"{url}/metrics").status_code == 200
    with Client(url, key=a) as ca, Client(url, key=b) as cb:
        job = ca.submit(video, FIRST_MASK)
        with pytest.raises(ClientError) as e:
            cb.status(job.id)  # another tenant's job does not exist for b
        assert e.value.status == 404 and e.value.code == "not_found"
        with pytest.raises(ClientError) as e:
            cb.cancel(job.id)
        assert e.value.status == 404
        with pytest.raises(ClientError) as e:
            ca.submit(video, FIRST_MASK)  # max_queued 1
        assert e.value.status == 429 and e.value.code == "quota_exceeded"
        r = httpx.post(f"{url}/v1/jobs", files={"video": ("v.zip", video.read_bytes()),
                                                "masks": ("m.png", FIRST_MASK.read_bytes())},
                       headers={"Authorization": f"Bearer {a}"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        cb.submit(video, FIRST_MASK)
        with pytest.raises(ClientError) as e:
            cb.submit(video, FIRST_MASK)  # 1 per second
        assert e.value.code == "quota_exceeded"
        assert ca.status(job.id).id == job.id
    # gRPC: metadata `authorization`
    with GrpcClient(stack.grpc_target) as anonymous, GrpcClient(stack.grpc_target, key=b) as gb, \
            GrpcClient(stack.grpc_target, key=a) as ga:
        with pytest.raises(ClientError) as e:
            anonymous.status(job.id)
        assert e.value.grpc_status == "UNAUTHENTICATED" and e.value.code == "unauthenticated"
        with pytest.raises(ClientError) as e:
            gb.status(job.id)
        assert e.value.grpc_status == "NOT_FOUND"
        assert ga.status(job.id).id == job.id
        with pytest.raises(ClientError) as e:
            ga.submit(video, FIRST_MASK)
        assert e.value.grpc_status == "RESOURCE_EXHAUSTED" and e.value.code == "quota_exceeded"
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        assert health_pb2_grpc.HealthStub(anonymous.channel).Check(health_pb2.HealthCheckRequest()).status == 1
    # WebSocket: the header, or a first message for browsers
    with Client(url, key=a) as ca:
        ca.cancel(job.id)
        session = ca.create_session({})
    from websockets.sync.client import connect

    ws_url = url.replace("http://", "ws://") + f"/v1/sessions/{session['id']}/ws"
    with connect(ws_url) as ws:
        ws.send(json.dumps({"type": "auth", "key": b}))  # another tenant
        assert json.loads(ws.recv())["code"] == "not_found"
    with connect(ws_url) as ws:
        ws.send(json.dumps({"type": "auth", "key": a}))
        ws.send(json.dumps({"type": "end"}))  # accepted: nothing else comes back until the session ends
    with WsSession(url, session["id"], key=a) as s:
        s.end()
    # Keys are not readable from Redis: neither secret appears in any key or value (hashes, streams, strings).
    r = redis.from_url(redis_url)
    dump = b"".join(k + _value(r, k) for k in r.scan_iter(match=prefix + "*", count=1000))
    r.close()
    assert b"tenant-a" in dump and a.encode() not in dump and b.encode() not in dump
    assert a.split("_", 2)[2].encode() not in dump  # not even the secret part (which may hold "_" itself)
    # revoked: 401 from now on; the listing never shows keys
    listing = keys_cli(redis_url, prefix, "list")
    assert "tenant-a" in listing.stdout and a not in listing.stdout
    assert keys_cli(redis_url, prefix, "revoke", "tenant-a").returncode == 0
    with Client(url, key=a) as ca, pytest.raises(ClientError) as e:
        ca.session(session["id"])
    assert e.value.status == 401
    assert keys_cli(redis_url, prefix, "revoke", "tenant-a").returncode == 2
    dup = keys_cli(redis_url, prefix, "create", "--name", "tenant-b")
    assert dup.returncode == 2 and "exists" in dup.stderr


def test_a_key_runs_at_most_max_running_jobs_at_once(make_stack, redis_url, prefix, tmp_path):
    stack = make_stack(workers=2, agss_auth="required", agss_frame_delay_seconds=0.2)
    a = new_key(redis_url, prefix, "one-at-a-time", "--max-running", "1")
    video = frames_zip(tmp_path / "v.zip", 6)
    with Client(stack.url, key=a) as c:
        first, second = c.submit(video, FIRST_MASK), c.submit(video, FIRST_MASK)
        seen_both_running = False
        for _ in c.frames(first.id):
            s1, s2 = c.status(first.id).status, c.status(second.id).status
            seen_both_running |= s1 == s2 == "running"
        assert len(list(c.frames(second.id))) == 6  # queued again when the first ended, then run
    assert not seen_both_running


@pytest.mark.parametrize("command", ["api", "grpc", "serve"])
def test_no_keys_only_on_loopback(command, tmp_path):
    env = {**os.environ, "AGSS_HTTP_HOST": "0.0.0.0", "AGSS_AUTH": "off", "AGSS_REDIS_URL": "redis://127.0.0.1:1/0",
           "AGSS_DATA_DIR": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "service.cli", command], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert [ln for ln in p.stderr.splitlines() if ln.startswith("agss-vos")][0].count("AGSS_AUTH") == 2


def test_a_grpc_call_without_metadata_is_refused_before_any_work(make_stack, tmp_path):
    stack = make_stack(workers=0, grpc=True, agss_auth="required")
    channel = grpc.insecure_channel(stack.grpc_target)
    from service.grpc.pb import segmentation_pb2 as pb2
    from service.grpc.pb import segmentation_pb2_grpc as pb2_grpc

    with pytest.raises(grpc.RpcError) as e:
        list(pb2_grpc.SegmentationStub(channel).StreamFrames(pb2.StreamFramesRequest(job_id="x")))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    channel.close()
