"""Errors a user can act on. The CLI prints their message as one line and exits non-zero."""

from __future__ import annotations


class MedimgError(Exception):
    """A problem with the user's input or environment, with the fix in its message."""


class ConfigError(MedimgError):
    """``params.yaml`` is missing, malformed or holds a bad key or value."""


class WorkspaceError(MedimgError):
    """The directory is not a medimg workspace, or a file it needs is missing."""


class DataError(MedimgError):
    """The source data cannot be used as given (empty, one class, undecodable...)."""


class ValidationFailed(MedimgError):
    """A data-contract expectation failed."""
