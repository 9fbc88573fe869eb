"""Typed errors raised by the network package; service/errors.py maps them to status codes."""


class VOSError(Exception):
    """Base of every error the vos package raises on purpose."""


class CheckpointError(VOSError):
    """A file or folder that is not a loadable AGSS-VOS checkpoint."""


class ModelNotFoundError(CheckpointError):
    """A model name or path that does not exist."""


class TrackerInputError(VOSError, ValueError):
    """Frames or masks the tracker cannot use (wrong size, wrong dtype, too many objects)."""


class BackendError(VOSError):
    """An inference backend or export that cannot be used: an unknown name, a runtime that is not
    installed, or a model it cannot run."""
