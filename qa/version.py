"""The installed package's name and version, read from its metadata (pyproject.toml is the one source)."""

from __future__ import annotations

import functools

DISTRIBUTION = "article-qa"


@functools.cache
def package_version() -> str:
    """The version pip installed (recorded in each index manifest); "unknown" when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"
