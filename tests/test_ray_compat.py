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


def test_a_cluster_with_token_auth_is_detected_without_a_token(ray_session):
    from raysys.runtime import free_port

    # the session's local Ray has Ray's default for a new local cluster: token authentication on
    assert ray_compat.cluster_requires_token(ray_session.get_runtime_context().gcs_address) is True
    assert ray_compat.cluster_requires_token(f"127.0.0.1:{free_port()}", timeout_s=2) is None  # nobody there


CLIENT_HOOKS = """
import sys
from ray._private import ray_constants, services
from ray._raylet import AuthenticationMode, AuthenticationTokenLoader, get_authentication_mode
from raysys import ray_compat

token = lambda: get_authentication_mode() == AuthenticationMode.TOKEN
print(token())
print(ray_compat.use_client_auth(True, sys.argv[1]), token(),
      AuthenticationTokenLoader.instance().get_raw_token(ignore_auth_mode=True) == open(sys.argv[1]).read())
ray_compat.use_client_auth(False)
print(token())
before = ray_constants.ENABLE_RAY_CLUSTER
with ray_compat.loopback_node_ip() as on:
    print(on, services.get_node_ip_address(), services.resolve_ip_for_localhost("127.0.0.1"))
print(ray_constants.ENABLE_RAY_CLUSTER == before)
"""


def test_client_auth_and_loopback_hooks_take_effect_in_a_running_process(tmp_path):
    import os
    import subprocess
    import sys

    token = tmp_path / "token"
    token.write_text("ab" * 32)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **{k: v for k, v in os.environ.items()
                                                                 if k == "PYTHONPATH"}}
    done = subprocess.run([sys.executable, "-c", CLIENT_HOOKS, str(token)], env=env, capture_output=True, text=True,
                          timeout=300, check=True)
    assert done.stdout.split("\n")[:5] == ["False", "True True True", "False", "True 127.0.0.1 127.0.0.1", "True"]


def test_serve_runs_the_haproxy_launcher_and_binds_side_ports_to_every_interface():
    assert ray_compat.haproxy_launcher_supported()
