"""Users' files in and outputs out, the same way everywhere (CLI, batch, web page, index, eval).

Reading: bytes are decoded as UTF-8 with undecodable bytes kept as lone surrogates, so one bad
line of a questions file becomes one error record (the question check rejects it) instead of
sinking the whole file; lines are split on "\\n" only, because U+2028, U+2029 and U+0085 are
valid characters inside a JSON string or a line of text (`str.splitlines` splits on them).

Writing: an output path is checked before any work is spent (its folder exists and takes a new
file, it is not a folder, a device, a read-only file or one of the run's own input files), the
data goes to a temporary file beside the target and replaces it atomically, a symlink is written
through to its target, and an interrupted run can still commit what was done.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

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


def read_json(path: Path, missing: QAError, unreadable: Callable[[Exception], QAError]) -> Any:
    """The JSON in a file the user named: `missing` is raised when there is no such file, and
    `unreadable(the exception)` when it cannot be read or is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise missing from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise unreadable(exc) from exc


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
    any work; `commit()` replaces the target; `discard()` leaves the target as it was. `inputs`
    are the files the run reads ('-' is standard input): the output may not be one of them.
    """

    def __init__(
        self,
        path: str | Path,
        flag: str = "--out",
        error: type[QAError] = InputError,
        inputs: Iterable[str | Path] = (),
    ) -> None:
        self.path = Path(path)
        self.shown = os.fspath(path)  # as the user typed it: Path would turn "./q.jsonl" into "q.jsonl"
        self.flag = flag
        self.error = error
        target = Path(os.path.realpath(self.path))  # through symlinks: the link stays a link
        self._mode: int | None = None  # the existing target's, kept by what replaces it
        try:
            st = os.stat(target)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise error(f"cannot use {self.shown} as output ({exc.strerror}); choose another path for {flag}") from exc
        if st is not None:
            if not stat.S_ISREG(st.st_mode):
                raise error(f"{self.shown} is {_kind(st.st_mode)}, not a file; choose a file path for {flag}")
            self._refuse_inputs(st, inputs)
            # The mode bits too, not only os.access: root may write anything, yet a file whose
            # write bits are off was made read-only on purpose, and `cp` run by a user refuses it.
            if not st.st_mode & 0o222 or not os.access(target, os.W_OK):
                raise error(
                    f"{flag} {self.shown} is read-only; make it writable (chmod u+w {self.shown}) "
                    f"or choose another path for {flag}"
                )
            self._mode = stat.S_IMODE(st.st_mode)
        folder = target.parent
        if not folder.is_dir():
            raise error(f"the folder {folder} does not exist; create it or choose another path for {flag}")
        self.target = target
        _remove_stale_partials(target)
        try:
            # The writer's pid in the name lets a later run tell a killed run's leftover from a live one's.
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=_PARTIAL, dir=folder)
        except OSError as exc:
            raise error(f"cannot write in {folder} ({exc.strerror}); choose a writable path for {flag}") from exc
        self._tmp = Path(tmp)
        self.stream: IO[str] = os.fdopen(fd, "w", encoding="utf-8", newline="")
        self.closed = False

    def _refuse_inputs(self, st: os.stat_result, inputs: Iterable[str | Path]) -> None:
        """Refuse an output that is one of the inputs, however it is spelled: the same (device, inode)
        catches relative paths, `..`, symlinks and hard links alike."""
        for given in inputs:
            if str(given) == "-":
                continue  # standard input has no file
            try:
                ist = os.stat(given)
            except OSError:
                continue  # a missing or unreadable input is its reader's to report
            if (ist.st_dev, ist.st_ino) == (st.st_dev, st.st_ino):
                raise self.error(
                    f"{self.flag} {self.shown} is the input file {given} (the same file); "
                    f"choose another path for {self.flag}"
                )

    @property
    def existed(self) -> bool:
        """Whether the target held a file when this run began (then it is kept whole until the end)."""
        return self._mode is not None

    def commit(self, to: Path | None = None) -> None:
        """Flush, sync and move the data into place (or to `to`, a file beside the target, which is
        then left as it was); raises InputError when the disk refuses."""
        try:
            self.stream.flush()
            os.fsync(self.stream.fileno())
            self.stream.close()
            os.chmod(self._tmp, self._mode if self._mode is not None else 0o666 & ~_umask())
            os.replace(self._tmp, self.target if to is None else to)
        except OSError as exc:
            self.discard()
            shown = self.shown if to is None else os.fspath(to)
            raise self.error(
                f"cannot write {shown} ({exc.strerror}); free some space or choose another path for {self.flag}"
            ) from exc
        self.closed = True

    def write_all(self, text: str) -> None:
        """Write `text` and commit; on any failure (a full disk, Ctrl+C) the target keeps what it held."""
        try:
            self.stream.write(text)
        except OSError as exc:
            self.discard()
            raise self.error(
                f"cannot write {self.shown} ({exc.strerror}); free some space or choose another path for {self.flag}"
            ) from exc
        except BaseException:
            self.discard()
            raise
        self.commit()

    def discard(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.close()
        with contextlib.suppress(OSError):
            self._tmp.unlink()
        self.closed = True


_PARTIAL = ".partial"
_PARTIAL_REST = re.compile(r"(\d+)\.[^.]+" + re.escape(_PARTIAL))  # "<pid>.<random>.partial"


def _remove_stale_partials(target: Path) -> None:
    """Remove the temporary files of `target` left by writers that were killed (SIGKILL, power cut).

    Only files named by a pid that no longer exists go; a live writer's file, one of another user's
    process, or one without a pid (an older version's) is kept. Pids are this machine's: a writer in
    another pid namespace (a container sharing the folder) would look dead, so do not share one
    output folder between containers.
    """
    prefix = f".{target.name}."
    with contextlib.suppress(OSError), os.scandir(target.parent) as entries:
        for entry in entries:
            if not entry.name.startswith(prefix):
                continue
            m = _PARTIAL_REST.fullmatch(entry.name[len(prefix) :])
            if m is None or _alive(int(m.group(1))):
                continue
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or not a pid we can ask about: keep its file
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(
    path: str | Path,
    text: str,
    flag: str = "the output",
    error: type[QAError] = InputError,
    inputs: Iterable[str | Path] = (),
) -> None:
    """Write a whole file at once: the target holds either its old or its new content."""
    OutputFile(path, flag, error, inputs).write_all(text)
