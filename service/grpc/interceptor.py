"""One interceptor for every RPC: it authenticates the caller (metadata `authorization: Bearer KEY`),
and maps every expected error to its gRPC status (service/errors.py).

The status carries the message; the trailing metadata `agss-error-code` carries the same error code
as the HTTP API's body, so clients can tell `queue_full` from `too_large` (both RESOURCE_EXHAUSTED),
and `retry-after` the seconds after which a refused call may succeed. Health and reflection are open.
The servicer reads the caller's key with `caller()`.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from ..errors import INTERNAL, ErrorSpec, classify
from ..jobs.apikeys import KeyInfo
from ..jobs.errors import MalformedRequestError, RetryLater

log = logging.getLogger("agss.grpc")
CODE_KEY = "agss-error-code"
OPEN = ("/grpc.health.", "/grpc.reflection.")
MAX_MESSAGE = 500
_caller: contextvars.ContextVar[KeyInfo | None] = contextvars.ContextVar("caller", default=None)


def caller() -> KeyInfo | None:
    """The key of the call being served (None when authentication is off)."""
    return _caller.get()


async def abort(context: grpc.aio.ServicerContext, spec: ErrorSpec, message: str, retry_after: int | None = None
                ) -> None:
    meta = [(CODE_KEY, spec.code)] + ([("retry-after", str(retry_after))] if retry_after else [])
    context.set_trailing_metadata(tuple(meta))
    # Messages can quote what the client sent (an id); headers past 8 KiB make the client drop the whole status.
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "..."
    await context.abort(grpc.StatusCode[spec.grpc], message)


async def _fail(context: grpc.aio.ServicerContext, exc: Exception, method: str) -> None:
    spec = classify(exc)
    if spec is None:
        log.error("internal error in %s", method, exc_info=exc)
        await abort(context, INTERNAL, "internal error")
    await abort(context, spec, str(exc) or spec.code, exc.retry_after if isinstance(exc, RetryLater) else None)


Authenticate = Callable[[str | None], Awaitable[KeyInfo | None]]
_MALFORMED = object()  # what a request that does not decode becomes, so that the behaviour can refuse it


def _lenient(deserializer):
    """grpc answers UNKNOWN when a message does not decode; we want INVALID_ARGUMENT, in our error mapping."""
    if deserializer is None:
        return None

    def decode(data: bytes):
        try:
            return deserializer(data)
        except Exception:  # noqa: BLE001 - any decoding failure is the client's
            return _MALFORMED

    return decode


def _checked(request):
    if request is _MALFORMED:
        raise MalformedRequestError("the request is not a message of this method (it does not decode)")
    return request


async def _checked_stream(requests):
    async for r in requests:
        yield _checked(r)


def _wrap_unary(behavior: Callable[..., Awaitable], method: str, auth: Authenticate | None, streaming_in: bool):
    async def wrapper(request, context):
        try:
            if auth:
                _caller.set(await auth(dict(context.invocation_metadata()).get("authorization")))
            request = _checked_stream(request) if streaming_in else _checked(request)
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as e:  # noqa: BLE001 - every error leaves as a status code
            await _fail(context, e, method)

    return wrapper


def _wrap_stream(behavior: Callable[..., AsyncIterator], method: str, auth: Authenticate | None,
                 streaming_in: bool):
    async def wrapper(request, context):
        try:
            if auth:
                _caller.set(await auth(dict(context.invocation_metadata()).get("authorization")))
            request = _checked_stream(request) if streaming_in else _checked(request)
            async for item in behavior(request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as e:  # noqa: BLE001
            await _fail(context, e, method)

    return wrapper


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticate: Authenticate):
        self.authenticate = authenticate

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        auth = None if method.startswith(OPEN) else self.authenticate
        decode = _lenient(handler.request_deserializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_wrap_unary(handler.unary_unary, method, auth, False),
                                                       decode, handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_wrap_unary(handler.stream_unary, method, auth, True),
                                                        decode, handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(_wrap_stream(handler.unary_stream, method, auth, False),
                                                        decode, handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(_wrap_stream(handler.stream_stream, method, auth, True),
                                                     decode, handler.response_serializer)


