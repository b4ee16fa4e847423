"""Shared fixtures: one local Ray for the whole session, and a fresh storage root per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


def pytest_collection_modifyitems(config, items) -> None:
    """Modules that use the served app run last and together, so it holds CPUs only while they run."""
    serving_modules = {item.module.__name__ for item in items if "served" in getattr(item, "fixturenames", ())}
    items.sort(key=lambda item: item.module.__name__ in serving_modules)


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


@pytest.fixture(scope="session")
def served(ray_session, tmp_path_factory):
    """(system, base url): one breast-cancer model served for every test that needs one.

    v1 (trained, the champion, its TrainResult as ``system.trained``) up on Ray Serve, v2 (a
    perturbed copy) registered but not deployed. Tests that change the plan, keys or the monitor
    put them back; the modules that use it run last (``pytest_collection_modifyitems``).
    """
    from tests.modeling.test_train import sklearn_cfg, system_from
    from tests.serving.conftest import perturbed_copy, serve_cfg

    cfg = {**sklearn_cfg("breast_cancer", "binary"), "serve": serve_cfg(),
           "monitor": {"enabled": False}}  # monitor tests start their own, with their own settings
    root = tmp_path_factory.mktemp("serving")
    rs = system_from(cfg, root)
    rs.config_path = root / "raysys.yaml"  # the same config for the CLI tests
    rs.config_path.write_text(yaml.safe_dump({**cfg, "storage": {"root": str(root)}}))
    rs.data.ingest()
    rs.trained = rs.models.train()
    rs.models.promote(rs.trained.model.version, "champion", actor="test", reason="first")
    perturbed_copy(rs, rs.trained.model.version)
    rs.serving.up()
    yield rs, rs.serving.url
    rs.serving.down()


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
