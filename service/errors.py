"""The one place where typed errors become HTTP statuses, gRPC codes and CLI exit codes.

Every error body of the HTTP API is `{"error": {"code", "message"}}` with one of the codes below; gRPC
sends the same code in the trailing metadata `agss-error-code` next to its status.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .jobs.errors import (
    BacklogFullError,
    BadOptionsError,
    JobConflictError,
    JobNotFoundError,
    KeyExistsError,
    MalformedRequestError,
    QueueFullError,
    QuotaError,
    UnauthenticatedError,
    UploadTooLargeError,
)
from .media.errors import MediaError, UnsafeArchiveError, UnsupportedFormatError
from .vos.errors import BackendError, CheckpointError, ModelNotFoundError, TrackerInputError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad input: one line on stderr, no traceback
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class ErrorSpec:
    code: str  # stable machine-readable code, used in JSON error bodies
    http: int
    grpc: str  # name of a grpc.StatusCode (kept as text so this module needs no grpc import)
    exit: int
    meaning: str = ""


MALFORMED = ErrorSpec("malformed_request", 422, "INVALID_ARGUMENT", EXIT_USAGE,
                      "a request that does not fit the schema (missing part, wrong type)")

# Most specific first: the first isinstance match wins.
_TABLE: list[tuple[type[BaseException], ErrorSpec]] = [
    (MalformedRequestError, MALFORMED),
    (UnauthenticatedError, ErrorSpec("unauthenticated", 401, "UNAUTHENTICATED", EXIT_USAGE,
                                     "no API key, or an unknown or revoked one")),
    (QuotaError, ErrorSpec("quota_exceeded", 429, "RESOURCE_EXHAUSTED", EXIT_FAILURE,
                           "the key is over a quota (queued jobs, submissions per second)")),
    (KeyExistsError, ErrorSpec("conflict", 409, "ALREADY_EXISTS", EXIT_USAGE, "a key of that name exists")),
    (JobNotFoundError, ErrorSpec("not_found", 404, "NOT_FOUND", EXIT_USAGE, "no such job, session or frame")),
    (JobConflictError, ErrorSpec("conflict", 409, "FAILED_PRECONDITION", EXIT_USAGE,
                                 "the job's state does not allow it")),
    (QueueFullError, ErrorSpec("queue_full", 429, "RESOURCE_EXHAUSTED", EXIT_FAILURE,
                               "the queue, or the bytes of queued inputs, is full")),
    (BacklogFullError, ErrorSpec("backlog_full", 429, "RESOURCE_EXHAUSTED", EXIT_FAILURE,
                                 "a live session (policy all) has its maximum of frames waiting")),
    (UploadTooLargeError, ErrorSpec("too_large", 413, "RESOURCE_EXHAUSTED", EXIT_USAGE,
                                    "an upload is over its size limit")),
    (BadOptionsError, ErrorSpec("bad_options", 422, "INVALID_ARGUMENT", EXIT_USAGE, "invalid job options")),
    (RedisConnectionError, ErrorSpec("unavailable", 503, "UNAVAILABLE", EXIT_FAILURE, "Redis cannot be reached")),
    (RedisTimeoutError, ErrorSpec("unavailable", 503, "UNAVAILABLE", EXIT_FAILURE, "Redis cannot be reached")),
    (UnsupportedFormatError, ErrorSpec("unsupported_format", 415, "INVALID_ARGUMENT", EXIT_USAGE,
                                       "a file type that is not read at all")),
    (UnsafeArchiveError, ErrorSpec("unsafe_archive", 400, "INVALID_ARGUMENT", EXIT_USAGE,
                                   "a zip with path tricks or oversized entries")),
    (MediaError, ErrorSpec("bad_input", 400, "INVALID_ARGUMENT", EXIT_USAGE,
                           "a video or mask that cannot be used")),
    (TrackerInputError, ErrorSpec("bad_input", 400, "INVALID_ARGUMENT", EXIT_USAGE,
                                  "frames or masks the tracker cannot use")),
    (ModelNotFoundError, ErrorSpec("model_not_found", 400, "INVALID_ARGUMENT", EXIT_USAGE, "no such model")),
    (CheckpointError, ErrorSpec("bad_checkpoint", 400, "INVALID_ARGUMENT", EXIT_USAGE,
                                "a model file that cannot be loaded")),
    (BackendError, ErrorSpec("bad_backend", 400, "INVALID_ARGUMENT", EXIT_USAGE,
                             "an inference backend that is unknown, not installed, or not for the device")),
]

# Codes that come from the servers themselves rather than from an exception type above.
INTERNAL = ErrorSpec("internal", 500, "INTERNAL", EXIT_FAILURE, "a bug; the server's log has the details")
NO_WORKERS = ErrorSpec("no_workers", 503, "UNAVAILABLE", EXIT_FAILURE, "no worker heartbeat seen (readyz)")
HTTP_ERROR = ErrorSpec("http_error", 404, "NOT_FOUND", EXIT_USAGE, "no such route, or a method it does not allow")
SERVER_SPECS = (MALFORMED, INTERNAL, NO_WORKERS, HTTP_ERROR)


def classify(exc: BaseException) -> ErrorSpec | None:
    """The spec of an expected error, or None for a bug (which callers report as internal)."""
    for cls, spec in _TABLE:
        if isinstance(exc, cls):
            return spec
    return None


def expected_types() -> tuple[type[BaseException], ...]:
    """Every error type with a mapping (servers register a handler for each)."""
    return tuple(cls for cls, _ in _TABLE)


def all_specs() -> list[ErrorSpec]:
    """Every documented error code (each once)."""
    seen: dict[str, ErrorSpec] = {}
    for spec in [s for _, s in _TABLE] + list(SERVER_SPECS):
        seen.setdefault(spec.code, spec)
    return list(seen.values())
