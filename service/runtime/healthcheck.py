"""Container health check for every role (`python -m service.runtime.healthcheck`), chosen by AGSS_ROLE:

- api: GET /healthz answers 200;
- grpc: the gRPC health service answers SERVING;
- worker: this container's worker has a live heartbeat in Redis;
- serve: the HTTP check.
Exit 0 when healthy, 1 otherwise, with one line on stderr.
"""

from __future__ import annotations

import socket
import sys

from ..config import Settings


def check(role: str, settings: Settings) -> str | None:
    """None when healthy, else the reason."""
    if role in ("api", "serve"):
        import httpx

        url = f"http://127.0.0.1:{settings.http_port}/healthz"
        try:
            r = httpx.get(url, timeout=3)
        except httpx.HTTPError as e:
            return f"{url}: {e}"
        return None if r.status_code == 200 else f"{url}: HTTP {r.status_code}"
    if role == "grpc":
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as ch:
            try:
                resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=3)
            except grpc.RpcError as e:
                return f"grpc health: {e.code().name}"
        return None if resp.status == health_pb2.HealthCheckResponse.SERVING else "grpc health: not serving"
    if role == "worker":
        import redis

        from ..jobs.keys import Keys

        r = redis.from_url(settings.redis_url, socket_connect_timeout=3)
        pattern = Keys(settings.key_prefix).worker(f"{socket.gethostname()}-*")
        try:
            alive = any(True for _ in r.scan_iter(match=pattern, count=100))
        except redis.RedisError as e:
            return f"redis: {e}"
        return None if alive else "no heartbeat from this host's worker"
    return f"unknown AGSS_ROLE {role!r} (api, grpc, worker, serve)"


def main() -> int:
    settings = Settings()
    reason = check(settings.role, settings)
    if reason:
        print(f"unhealthy: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
