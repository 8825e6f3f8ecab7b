"""article-qa: extractive question answering over plain-text articles, with exact citations.

Heavy modules (torch, transformers, faiss, gradio) are imported lazily so that
`import qa` and `qa --help` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Answer", "Assistant", "Chunk", "Document", "Passage", "QAError", "Result", "__version__"]

if TYPE_CHECKING:
    from qa.assistant import Assistant
    from qa.errors import QAError
    from qa.types import Answer, Chunk, Document, Passage, Result

    __version__: str


def __getattr__(name: str) -> Any:
    if name == "__version__":  # from the installed package's metadata (pyproject.toml), read on first use
        from qa.version import package_version

        return package_version()
    if name == "Assistant":
        from qa.assistant import Assistant

        return Assistant
    if name == "QAError":
        from qa.errors import QAError

        return QAError
    if name in {"Answer", "Chunk", "Document", "Passage", "Result"}:
        from qa import types

        return getattr(types, name)
    raise AttributeError(f"module 'qa' has no attribute {name!r}")
