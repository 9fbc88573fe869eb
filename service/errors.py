"""The one place where typed errors become HTTP statuses, gRPC codes and CLI exit codes."""

from __future__ import annotations

from dataclasses import dataclass

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
