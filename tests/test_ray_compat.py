"""The private Ray APIs raysys uses, pinned to the installed Ray: each guard must take its real path.

When an upgrade breaks one of these, this test fails with the hook's name instead of raysys
silently falling back (say, to restarting every replica on each rollout).
"""

from __future__ import annotations

import logging

import ray
from ray import serve

from raysys import ray_compat


def test_installed_ray_is_the_tested_series():
    assert ray.__version__.startswith(ray_compat.TESTED_RAY_SERIES + "."), (
        f"Ray {ray.__version__}: re-check every hook in raysys/ray_compat.py, then update TESTED_RAY_SERIES")


def test_driver_prints_go_to_stderr(capsys):
    from ray._private import worker

    original = worker.print_to_stdstream
    try:
        assert ray_compat.redirect_driver_prints_to_stderr()
        worker.print_to_stdstream({"is_err": False, "lines": ["a raylet warning"], "pid": 1, "ip": "127.0.0.1",
                                   "task_name": None, "actor_name": None, "job": "01"}, False)
        captured = capsys.readouterr()
        assert "a raylet warning" in captured.err and "a raylet warning" not in captured.out
    finally:
        worker.print_to_stdstream = original


def test_ray_address_file_is_found():
    path = ray_compat.ray_address_file()
    assert path is not None and path.endswith("ray_current_cluster")


def test_deployment_version_pins_without_fallback(caplog):
    @serve.deployment
    class Echo:
        def __call__(self) -> str:
            return "ok"

    with caplog.at_level(logging.WARNING, logger="raysys.ray_compat"):
        pinned = ray_compat.pin_deployment_version(Echo, "abc123")
    assert pinned is not Echo and pinned.version == "abc123"
    assert not caplog.records


def test_serve_builds_the_ingress_app_through_the_class_method():
    assert ray_compat.asgi_builder_supported()


def test_every_serve_setting_raysys_sets_is_read_by_serve():
    assert ray_compat.unknown_serve_settings() == []
