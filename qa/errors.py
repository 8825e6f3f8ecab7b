"""Typed errors: the library raises them, the CLI and the web page turn them into one line."""

from __future__ import annotations


class QAError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""


class InputError(QAError):
    """A bad question, option or input file."""


class DocumentError(QAError):
    """A missing, empty, unreadable or non-UTF-8 article or folder."""


class IndexStoreError(QAError):
    """A missing, stale or corrupt index."""


class ModelError(QAError):
    """A model that cannot be found or loaded."""


class ClusterError(QAError):
    """A Ray cluster that cannot be used (`--ray`): Ray not installed, not reachable, or no room for the actors."""
