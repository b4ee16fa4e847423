"""Stopping the processes raysys started, and only those (Linux ``/proc``; elsewhere a no-op scan).

A process is named by its pid *and* its start time, so a pid the kernel has handed to some other
program since is never signalled.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

PROC = Path("/proc")


def start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), None when it is gone (or a zombie) or unknown."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[-1].split()  # the name may hold spaces
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]  # fields 3 (state) and 22 (start time)


def is_same_process(pid: int, started: str | None) -> bool:
    """Whether ``pid`` still is the process that started at ``started`` (just alive, if unknown)."""
    now = start_time(pid)
    if now is not None:
        return started is None or now == started
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return not PROC.is_dir()  # no /proc: only liveness can be checked


def pids_with_option(option: str, prefix: str) -> list[int]:
    """This user's processes run with ``option VALUE`` where VALUE starts with ``prefix`` (``-f /tmp/x/``)."""
    if not PROC.is_dir():
        return []
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(flag == option and value.startswith(prefix) for flag, value in itertools.pairwise(args)):
            found.append(int(entry.name))
    return found


def env_values(name: str) -> set[str]:
    """The values this user's processes have for environment variable ``name`` (Linux ``/proc``)."""
    if not PROC.is_dir():
        return set()
    prefix, found = f"{name}=".encode(), set()
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            variables = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        found |= {v[len(prefix):].decode(errors="replace") for v in variables if v.startswith(prefix)}
    return found


def terminate(pids: list[int], timeout_s: float = 10.0) -> None:
    """SIGTERM these processes, wait for them to exit, SIGKILL what is left."""
    started = {pid: start_time(pid) for pid in pids}

    def all_gone() -> bool:
        return not any(is_same_process(pid, started[pid]) for pid in pids)

    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        for pid in pids:
            if is_same_process(pid, started[pid]):
                _signal(os.kill, pid, sig)
        if _wait(all_gone, wait_s):
            return


def stop_group(leader: int, started: str | None, timeout_s: float = 30.0) -> bool:
    """Stop the process group that ``leader`` (started at ``started``) leads: its leader first,
    so that it shuts its children down in order, then the whole group, SIGKILL last.

    False (nothing signalled) when the group is gone, or the leader's pid now names another
    process (the kernel reuses a pid only once no group bears it).
    """
    if not group_alive(leader) or (start_time(leader) is not None and not is_same_process(leader, started)):
        return False
    steps = ((os.kill, signal.SIGTERM, timeout_s), (os.killpg, signal.SIGTERM, 10.0), (os.killpg, signal.SIGKILL, 5.0))
    for send, sig, wait_s in steps:
        _signal(send, leader, sig)
        if _wait(lambda: not group_alive(leader), wait_s):
            break
    return True


def group_alive(pgid: int) -> bool:
    """Whether any process (a zombie child of this process reaped first) is left in group ``pgid``."""
    try:
        os.waitpid(pgid, os.WNOHANG)  # our own child: reap it, or it lingers as a zombie
    except ChildProcessError:
        pass
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal(send, pid: int, sig: int) -> None:
    try:
        send(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait(done, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True
