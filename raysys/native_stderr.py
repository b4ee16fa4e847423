"""Keep the lines Ray's C++ core writes to this process's stderr in Ray's log files only.

Ray's core worker logs each ERROR line twice: to its log file in the session's logs
(``python-core-driver-*.log``) and to file descriptor 2. Ray Data starts every actor-pool worker
with object-store references of its own and ``max_restarts=-1``, so the first ``map_batches``
over actors in a process makes the driver print "Actor with class name: 'MapWorker(...)' ... has
constructor arguments in the object store and max_restarts > 0 ..." (ray-project/ray#57733),
whatever the caller passes; Ray Data keeps those references alive, so restarts do work. Python's
``sys.stderr`` (raysys's own messages, warnings, tracebacks) keeps writing where it did.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from typing import TextIO

_lock = threading.Lock()
_depth = 0  # blocks open now, in any thread
_terminal = -1  # a copy of what fd 2 was before the outermost block
_python_stderr: TextIO | None = None  # sys.stderr before the outermost block, if it wrote to fd 2


@contextlib.contextmanager
def ray_core_lines_to_log_files() -> Iterator[None]:
    """Inside this block, writes to file descriptor 2 that bypass ``sys.stderr`` are dropped.

    Only Ray's native (C++) log lines write there directly, and its log files already hold
    them. Nested and concurrent blocks are safe: the outermost one redirects and restores.
    """
    _enter()
    try:
        yield
    finally:
        _exit()


def _enter() -> None:
    global _depth, _terminal, _python_stderr
    with _lock:
        _depth += 1
        if _depth > 1:
            return
        sys.stderr.flush()
        _terminal = os.dup(2)
        if _fileno(sys.stderr) == 2:  # Python's stderr keeps its destination, on a copy of fd 2
            _python_stderr = sys.stderr
            sys.stderr = os.fdopen(os.dup(_terminal), "w", buffering=1, encoding=sys.stderr.encoding,
                                   errors=sys.stderr.errors)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)


def _exit() -> None:
    global _depth, _python_stderr
    with _lock:
        _depth -= 1
        if _depth > 0:
            return
        sys.stderr.flush()
        os.dup2(_terminal, 2)
        os.close(_terminal)
        if _python_stderr is not None:
            copy, sys.stderr, _python_stderr = sys.stderr, _python_stderr, None
            copy.close()


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
