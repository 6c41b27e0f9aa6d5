"""mammokit's own errors: problems a user can fix (a bad option, config value, file or split), told in one line.

The command line prints a `MammokitError` as one line and exits with status 2; any other exception is a bug and
ends with its traceback. The subclasses are also `ValueError` / `FileNotFoundError`, so callers that catch those
keep working.
"""

from __future__ import annotations

__all__ = ["InvalidInputError", "MammokitError", "MissingDependencyError", "MissingInputError"]


class MammokitError(Exception):
    """Base of the errors whose message alone tells the user what to fix."""


class InvalidInputError(MammokitError, ValueError):
    """An option, config value, label table, DICOM set or model folder that cannot be used as given."""


class MissingInputError(MammokitError, FileNotFoundError):
    """A file, folder or split the user named that does not exist."""


class MissingDependencyError(MammokitError, ImportError):
    """An optional package a requested input needs (e.g. an Excel reader for a .xlsx label table) is not installed."""
