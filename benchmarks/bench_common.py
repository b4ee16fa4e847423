"""What the benchmark scripts share: psutil and a thread that watches a process tree."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import threading
from typing import Any


def vendored_psutil():
    """psutil, or the copy Ray vendors (the venv has no top-level psutil)."""
    try:
        import psutil
    except ImportError:
        spec = importlib.util.find_spec("ray")
        if spec is None or not spec.submodule_search_locations:
            raise
        sys.path.insert(0, os.path.join(next(iter(spec.submodule_search_locations)), "thirdparty_files"))
        import psutil
    return psutil


class TreeThread(threading.Thread):
    """A daemon thread watching a process and all its descendants (subclasses sample them)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.psutil = vendored_psutil()
        self.root = self.psutil.Process(pid)
        self.known: dict[int, Any] = {pid: self.root}  # every process ever seen, by pid
        self.stop = threading.Event()

    def tree(self) -> list[Any]:
        """The root and its descendants now (empty once the root is gone)."""
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except self.psutil.Error:
            return []
        for proc in procs:
            self.known.setdefault(proc.pid, proc)
        return procs

    def kill_all(self) -> None:
        """SIGKILL the root and every descendant ever seen (only processes the benchmark started)."""
        for proc in [*self.tree(), *self.known.values()]:
            try:
                if proc.is_running():
                    proc.send_signal(signal.SIGKILL)
            except self.psutil.Error:
                pass
