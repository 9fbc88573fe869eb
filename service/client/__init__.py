"""Clients of the service: HTTP (`Client`) and gRPC (`GrpcClient`), with the same results and errors.

The gRPC client is imported on first use, so that HTTP-only users do not load the generated stubs.
"""

from .http import Client
from .types import ClientError, FrameResult, JobInfo

__all__ = ["Client", "ClientError", "FrameResult", "GrpcClient", "GrpcSession", "JobInfo", "WsSession"]
_LAZY = {"GrpcClient": "grpc", "GrpcSession": "session", "WsSession": "session"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
