"""Shared fixtures: one local Ray for the whole session, and a fresh storage root per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 2 CPUs, started once and shut down at the end, with nothing of it left running."""
    import ray

    from raysys.config import RayConfig
    from raysys.runtime import start_local_ray, stop_local_ray

    new = None
    if not ray.is_initialized():
        # as raysys starts a Ray (on 127.0.0.1, Serve's high-throughput mode, its own dashboard and HAProxy);
        # log_to_driver=False as in the CLI: worker and raylet lines must not mix into captured stdout
        new = start_local_ray(RayConfig(num_cpus=2), logging_level="WARNING", log_to_driver=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield ray
    if new is not None:
        stop_local_ray()
        if new.haproxy_dir:
            left = haproxy_processes(new.haproxy_dir)
            assert not left, f"HAProxy of the session's Ray still running after it stopped: {left}"
            assert not os.path.exists(new.haproxy_dir)


def haproxy_processes(folder: str) -> list[str]:
    """Command lines of the running processes that name a file in ``folder`` (psutil, independent of raysys)."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if process.info["status"] != psutil.STATUS_ZOMBIE and any(a.startswith(folder + "/") for a in cmdline):
            found.append(f"{process.info['pid']}: {' '.join(cmdline)}")
    return found


@pytest.fixture()
def write_config(tmp_path: Path):
    """Write a config dict as YAML (storage under tmp_path) and return its path."""

    def write(data: dict, name: str = "raysys.yaml") -> Path:
        data = {"storage": {"root": str(tmp_path / "store")}, **data}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture()
def make_system(write_config, ray_session):
    """Build a System from a config dict, on the session's Ray."""
    from raysys import System

    def make(data: dict) -> System:
        return System.from_config(write_config(data))

    return make
