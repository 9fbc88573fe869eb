"""Typed errors of the job layer; service/errors.py maps them to status codes."""


class JobError(Exception):
    pass


class JobNotFoundError(JobError):
    pass


class JobConflictError(JobError):
    """The operation does not fit the job's state (cancel an ended job, result of a running job)."""


class QueueFullError(JobError):
    pass


class UploadTooLargeError(JobError):
    pass


class BadOptionsError(JobError):
    pass


class BrokerUnavailableError(JobError):
    """Redis cannot be reached."""
