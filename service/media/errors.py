"""Typed errors for bad media input; service/errors.py maps them to status and exit codes."""


class MediaError(Exception):
    """Input that cannot be used: undecodable, empty, inconsistent sizes, missing files."""


class UnsupportedFormatError(MediaError):
    """A file whose type is not one we read at all."""


class UnsafeArchiveError(MediaError):
    """A zip with path tricks (absolute names, `..`) or entries too large to unpack."""
