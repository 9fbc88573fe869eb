"""The service's processes: serve (all in one), api, grpc, worker."""

from __future__ import annotations

import argparse

from ..errors import EXIT_OK
from ..vos.options import FLOW_NAMES
from .common import CLIError, env_help, settings_from


def register(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    sv = sub.add_parser("serve", help="run everything: Redis (embedded if AGSS_REDIS_URL is unset), API, workers",
                        epilog=env_help(), formatter_class=fmt)
    sv.add_argument("--host", help="HTTP and gRPC bind address (AGSS_HTTP_HOST)")
    sv.add_argument("--port", type=int, help="HTTP port (AGSS_HTTP_PORT)")
    sv.add_argument("--workers", type=int, help="worker processes (AGSS_WORKERS)")
    sv.add_argument("--model", help="model name, folder or checkpoint (AGSS_MODEL)")
    sv.add_argument("--device", help="cpu or cuda (AGSS_DEVICE)")
    sv.set_defaults(func=serve)

    ap = sub.add_parser("api", help="the HTTP API alone (needs AGSS_REDIS_URL)", epilog=env_help(),
                        formatter_class=fmt)
    ap.add_argument("--host")
    ap.add_argument("--port", type=int)
    ap.set_defaults(func=api)

    gr = sub.add_parser("grpc", help="the gRPC API alone (needs AGSS_REDIS_URL)", epilog=env_help(),
                        formatter_class=fmt)
    gr.add_argument("--host")
    gr.add_argument("--port", type=int)
    gr.set_defaults(func=grpc)

    wk = sub.add_parser("worker", help="one worker process (needs AGSS_REDIS_URL)", epilog=env_help(),
                        formatter_class=fmt)
    wk.add_argument("--model")
    wk.add_argument("--device")
    wk.add_argument("--flow", choices=FLOW_NAMES)
    wk.set_defaults(func=worker)


def _needs_redis(settings, what: str) -> None:
    if not settings.redis_url:
        raise CLIError(f"AGSS_REDIS_URL is not set ({what})")


def _listener(settings) -> None:
    """A server that anyone can reach needs keys; the keys of a secrets file are registered."""
    from ..config import check_auth
    from ..jobs.apikeys import register_settings_file

    try:
        check_auth(settings)
    except ValueError as e:
        raise CLIError(str(e)) from None
    if settings.redis_url:
        try:
            register_settings_file(settings)
        except (OSError, ValueError) as e:
            raise CLIError(f"AGSS_API_KEYS_FILE: {e}") from None


def serve(args: argparse.Namespace) -> int:
    from .. import logs
    from ..runtime.serve import serve as run

    settings = settings_from(args, http_host="host", http_port="port", workers="workers", model="model",
                             device="device")
    logs.setup(settings.log_level)
    _listener(settings)  # with an embedded Redis, serve registers the file's keys once it has started
    return run(settings)


def api(args: argparse.Namespace) -> int:
    import uvicorn

    from .. import logs
    from ..api.app import create_app

    settings = settings_from(args, http_host="host", http_port="port")
    logs.setup(settings.log_level)
    _needs_redis(settings, "use `agss-vos serve` for an embedded Redis")
    _listener(settings)
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port, log_config=None,
                access_log=False, timeout_graceful_shutdown=settings.shutdown_seconds,
                timeout_keep_alive=settings.keepalive_seconds)
    return EXIT_OK


def grpc(args: argparse.Namespace) -> int:
    import asyncio

    from .. import logs
    from ..grpc.server import serve_grpc

    settings = settings_from(args, http_host="host", grpc_port="port")
    logs.setup(settings.log_level)
    _needs_redis(settings, "use `agss-vos serve` for an embedded Redis")
    _listener(settings)
    asyncio.run(serve_grpc(settings))
    return EXIT_OK


def worker(args: argparse.Namespace) -> int:
    from .. import logs
    from ..worker.worker import Worker

    settings = settings_from(args, model="model", device="device", flow="flow")
    logs.setup(settings.log_level)
    _needs_redis(settings, "a worker needs the Redis that the API uses")
    w = Worker(settings)
    w.install_signals()
    w.run()
    return EXIT_OK
