"""The one place where typed errors become HTTP statuses, gRPC codes and CLI exit codes."""

from __future__ import annotations

from dataclasses import dataclass

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .jobs.errors import (
    BadOptionsError,
    BrokerUnavailableError,
    JobConflictError,
    JobNotFoundError,
    QueueFullError,
    UploadTooLargeError,
)
from .media.errors import MediaError, UnsafeArchiveError, UnsupportedFormatError
from .vos.errors import CheckpointError, ModelNotFoundError, TrackerInputError

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


# Most specific first: the first isinstance match wins.
_TABLE: list[tuple[type[BaseException], ErrorSpec]] = [
    (JobNotFoundError, ErrorSpec("not_found", 404, "NOT_FOUND", EXIT_USAGE)),
    (JobConflictError, ErrorSpec("conflict", 409, "FAILED_PRECONDITION", EXIT_USAGE)),
    (QueueFullError, ErrorSpec("queue_full", 429, "RESOURCE_EXHAUSTED", EXIT_FAILURE)),
    (UploadTooLargeError, ErrorSpec("too_large", 413, "RESOURCE_EXHAUSTED", EXIT_USAGE)),
    (BadOptionsError, ErrorSpec("bad_options", 422, "INVALID_ARGUMENT", EXIT_USAGE)),
    (BrokerUnavailableError, ErrorSpec("unavailable", 503, "UNAVAILABLE", EXIT_FAILURE)),
    (RedisConnectionError, ErrorSpec("unavailable", 503, "UNAVAILABLE", EXIT_FAILURE)),
    (RedisTimeoutError, ErrorSpec("unavailable", 503, "UNAVAILABLE", EXIT_FAILURE)),
    (UnsupportedFormatError, ErrorSpec("unsupported_format", 415, "INVALID_ARGUMENT", EXIT_USAGE)),
    (UnsafeArchiveError, ErrorSpec("unsafe_archive", 400, "INVALID_ARGUMENT", EXIT_USAGE)),
    (MediaError, ErrorSpec("bad_input", 400, "INVALID_ARGUMENT", EXIT_USAGE)),
    (TrackerInputError, ErrorSpec("bad_input", 400, "INVALID_ARGUMENT", EXIT_USAGE)),
    (ModelNotFoundError, ErrorSpec("model_not_found", 400, "INVALID_ARGUMENT", EXIT_USAGE)),
    (CheckpointError, ErrorSpec("bad_checkpoint", 400, "INVALID_ARGUMENT", EXIT_USAGE)),
]


def classify(exc: BaseException) -> ErrorSpec | None:
    """The spec of an expected error, or None for a bug (which callers report as internal)."""
    for cls, spec in _TABLE:
        if isinstance(exc, cls):
            return spec
    return None


def expected_types() -> tuple[type[BaseException], ...]:
    """Every error type with a mapping (servers register a handler for each)."""
    return tuple(cls for cls, _ in _TABLE)
