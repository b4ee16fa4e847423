"""Environment a Ray started by raysys gets (pure: no Ray is started here)."""

from __future__ import annotations

import os

from raysys.config import RayConfig
from raysys.runtime import cluster_env, cluster_environment


def test_high_throughput_serving_is_the_default_and_proxy_mode_turns_it_off():
    assert cluster_env(RayConfig()) == {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
    assert set(cluster_env(RayConfig(serve_mode="proxy")).values()) == {"0"}


def test_an_operator_variable_wins_and_the_process_environment_is_restored(monkeypatch):
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")
    monkeypatch.delenv("RAY_SERVE_THROUGHPUT_OPTIMIZED", raising=False)
    assert cluster_env(RayConfig())["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    with cluster_environment(RayConfig()):
        assert os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert "RAY_SERVE_THROUGHPUT_OPTIMIZED" not in os.environ and os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
