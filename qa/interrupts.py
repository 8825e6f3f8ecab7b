"""Stopping a long command politely: SIGTERM handled as Ctrl+C, and the exit status a shell expects.

`qa batch` keeps the records answered so far, `qa train-reader` saves a checkpoint and `qa serve`
closes the server, whether the stop came from Ctrl+C or from `kill`, systemd or a container stopping.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl+C raises KeyboardInterrupt, so one handler keeps the work of both."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM (kill, systemd, a container stopping) stops it as Ctrl+C does.

    Python's default for SIGTERM is to die at once, losing what a command could still save. Only
    the first SIGTERM interrupts: a second one must not break the saving the first one started.
    """

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_status(exc: KeyboardInterrupt) -> int:
    """The shell's exit status for a command stopped by a signal: 128 + its number."""
    return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
