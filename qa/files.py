"""Users' files in and outputs out, the same way everywhere (CLI, batch, web page, index, eval).

Reading: bytes are decoded as UTF-8 with undecodable bytes kept as lone surrogates, so one bad
line of a questions file becomes one error record (the question check rejects it) instead of
sinking the whole file; lines are split on "\\n" only, because U+2028, U+2029 and U+0085 are
valid characters inside a JSON string or a line of text (`str.splitlines` splits on them).

Writing: an output path is checked before any work is spent (its folder exists and takes a new
file, it is not a folder or a device), the data goes to a temporary file beside the target and
replaces it atomically, a symlink is written through to its target, and an interrupted run can
still commit what was done.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO

from qa.errors import InputError, QAError

_SURROGATE = re.compile("[\ud800-\udfff]")


def decode_bytes(raw: bytes) -> str:
    """UTF-8 text, byte-order mark dropped; bytes that are not UTF-8 become lone surrogates."""
    text = raw.decode("utf-8", errors="surrogateescape")
    return text[1:] if text.startswith("\ufeff") else text


def first_bad_char(text: str) -> int | None:
    """Position of the first character that is not text (a lone surrogate), or None."""
    m = _SURROGATE.search(text)
    return m.start() if m else None


def printable(text: str) -> str:
    """The text with anything that cannot be written as UTF-8 replaced by U+FFFD (for echoing input back)."""
    return _SURROGATE.sub("\ufffd", text)


def split_lines(text: str) -> list[str]:
    """Lines split on \\n only (\\r\\n too); see the module docstring for why not splitlines()."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_input(path: str | Path, what: str, hint: str) -> str:
    """A user's input file as text, or one InputError naming the problem and the fix."""
    path = Path(path)
    try:
        if path.is_dir():
            raise InputError(f"{what} {path} is a folder; {hint}")
        return decode_bytes(path.read_bytes())
    except FileNotFoundError as exc:
        raise InputError(f"{what} {path} does not exist; {hint}") from exc
    except OSError as exc:
        raise InputError(f"cannot read {what} {path} ({exc.strerror}); {hint}") from exc


def read_stdin(stream: IO[str] | None = None) -> str:
    """Standard input as text, decoded like a file (whatever the locale says)."""
    stream = stream or sys.stdin
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        return decode_bytes(buffer.read())
    return stream.read()


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "not a regular file"


class OutputFile:
    """A file the user asked to write, checked now and written atomically later.

    Opening creates the temporary file beside the target, so an unwritable place fails before
    any work; `commit()` replaces the target; `discard()` leaves the target as it was.
    """

    def __init__(self, path: str | Path, flag: str = "--out", error: type[QAError] = InputError) -> None:
        self.path = Path(path)
        self.flag = flag
        self.error = error
        target = Path(os.path.realpath(self.path))  # through symlinks: the link stays a link
        self._mode: int | None = None
        try:
            st = os.stat(target)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise error(f"cannot use {self.path} as output ({exc.strerror}); choose another path for {flag}") from exc
        if st is not None:
            if not stat.S_ISREG(st.st_mode):
                raise error(f"{self.path} is {_kind(st.st_mode)}, not a file; choose a file path for {flag}")
            self._mode = stat.S_IMODE(st.st_mode)
        folder = target.parent
        if not folder.is_dir():
            raise error(f"the folder {folder} does not exist; create it or choose another path for {flag}")
        self.target = target
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=folder)
        except OSError as exc:
            raise error(f"cannot write in {folder} ({exc.strerror}); choose a writable path for {flag}") from exc
        self._tmp = Path(tmp)
        self.stream: IO[str] = os.fdopen(fd, "w", encoding="utf-8", newline="")
        self.closed = False

    def commit(self) -> None:
        """Flush, sync and move the data into place; raises InputError when the disk refuses."""
        try:
            self.stream.flush()
            os.fsync(self.stream.fileno())
            self.stream.close()
            os.chmod(self._tmp, self._mode if self._mode is not None else 0o666 & ~_umask())
            os.replace(self._tmp, self.target)
        except OSError as exc:
            self.discard()
            raise self.error(
                f"cannot write {self.path} ({exc.strerror}); free some space or choose another path for {self.flag}"
            ) from exc
        self.closed = True

    def discard(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.close()
        with contextlib.suppress(OSError):
            self._tmp.unlink()
        self.closed = True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str, flag: str = "the output", error: type[QAError] = InputError) -> None:
    """Write a whole file at once: the target holds either its old or its new content."""
    out = OutputFile(path, flag, error)
    try:
        out.stream.write(text)
    except OSError as exc:
        out.discard()
        raise error(f"cannot write {path} ({exc.strerror}); free some space or choose another path for {flag}") from exc
    except BaseException:
        out.discard()
        raise
    out.commit()
