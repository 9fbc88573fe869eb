"""Typed errors of the job layer; service/errors.py maps them to status codes."""


class JobError(Exception):
    pass


class RetryLater(JobError):
    """A refusal that goes away with time: servers send `retry_after` seconds (HTTP Retry-After)."""

    def __init__(self, message: str, retry_after: float = 5.0):
        super().__init__(message)
        self.retry_after = max(1, int(retry_after + 0.999))


class JobNotFoundError(JobError):
    pass


class JobConflictError(JobError):
    """The operation does not fit the job's state (cancel an ended job, result of a running job)."""


class QueueFullError(RetryLater):
    """The queue, or the bytes of queued inputs, is at its bound."""


class BacklogFullError(RetryLater):
    """A live session with policy `all` already has its maximum of frames waiting for the worker."""


class QuotaError(RetryLater):
    """The caller's key is over one of its quotas (queued jobs, submissions per second)."""


class UnauthenticatedError(JobError):
    """No API key, or a key that is unknown or revoked."""


class KeyExistsError(JobError):
    """`keys create` with a name that is taken."""


class UploadTooLargeError(JobError):
    pass


class BadOptionsError(JobError):
    pass



class MalformedRequestError(JobError):
    """A request that is not a message of the API at all (undecodable bytes, wrong types)."""
