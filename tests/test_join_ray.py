"""Joining a running cluster uses that cluster's auth mode, whatever the shell says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

JOIN = """
import sys
import ray
from raysys.config import RayConfig
from raysys.runtime import ensure_ray

ensure_ray(RayConfig(address=sys.argv[1]))
print(ray.get_runtime_context().gcs_address)
"""


def test_a_driver_joins_a_token_cluster_though_its_shell_says_auth_is_disabled(ray_session):
    address = ray_session.get_runtime_context().gcs_address
    env = {"PATH": os.environ["PATH"], "HOME": str(Path.home()), "RAY_AUTH_MODE": "disabled",
           **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}}  # the token: ~/.ray/auth_token
    done = subprocess.run([sys.executable, "-c", JOIN, address], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == address, done.stderr[-2000:]


def test_a_token_cluster_without_a_token_here_is_a_clear_error(ray_session, tmp_path):
    address = ray_session.get_runtime_context().gcs_address
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
           **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}}
    done = subprocess.run([sys.executable, "-c", JOIN, address], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode != 0
    assert (f"RaysysError: the Ray cluster at {address} uses token authentication and there is no token here: "
            f"put the cluster's token in {tmp_path}/.ray/auth_token") in done.stderr
