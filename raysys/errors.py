"""The errors raysys raises for a user's mistake: each carries a one-line message."""

from __future__ import annotations


class RaysysError(Exception):
    """Base class: a problem the user can fix, reported as one line without a traceback."""


class ConfigError(RaysysError):
    """The YAML config is missing, unreadable or invalid."""


class SourceError(RaysysError):
    """A data source cannot be read: missing file, unreachable database or API, bad format."""


class ValidationFailed(RaysysError):
    """A dataset-level expectation failed; the pipeline stopped and nothing was published."""

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report or {}


class NotFound(RaysysError):
    """A named thing (dataset version, feature state, model) does not exist."""
