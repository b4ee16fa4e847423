"""Environment a Ray started by raysys gets (pure: no Ray is started here)."""

from __future__ import annotations

import os

from raysys.config import RayConfig
from raysys.runtime import cluster_env, cluster_environment


def test_high_throughput_serving_is_the_default_and_proxy_mode_turns_it_off(monkeypatch):
    for name in [n for n in os.environ if n.startswith("RAY_SERVE_")]:
        monkeypatch.delenv(name)
    env = cluster_env(RayConfig(), 8265)
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    proxy = cluster_env(RayConfig(serve_mode="proxy"), 8265)
    assert proxy["RAY_SERVE_ENABLE_HA_PROXY"] == proxy["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0"
    # the cluster's own dashboard, not whatever /tmp/ray/ray_current_cluster names
    assert proxy["RAY_API_SERVER_ADDRESS"] == "http://127.0.0.1:8265"


def test_each_cluster_gets_its_own_haproxy_files_and_ports(monkeypatch):
    for name in [n for n in os.environ if n.startswith("RAY_SERVE_")]:
        monkeypatch.delenv(name)
    first, second = cluster_env(RayConfig(), 8265), cluster_env(RayConfig(), 8265)
    for name in ("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "RAY_SERVE_HAPROXY_SOCKET_PATH", "RAY_SERVE_HAPROXY_STATS_PORT",
                 "RAY_SERVE_HAPROXY_METRICS_PORT"):
        assert first[name] != second[name]
    assert os.path.isdir(first["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"])
    assert not first["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"].startswith("/tmp/haproxy-serve/")


def test_an_operator_variable_wins_and_the_process_environment_is_restored(monkeypatch):
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")
    monkeypatch.delenv("RAY_SERVE_THROUGHPUT_OPTIMIZED", raising=False)
    assert cluster_env(RayConfig(), 8265)["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    with cluster_environment(RayConfig(), 8265):
        assert os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert "RAY_SERVE_THROUGHPUT_OPTIMIZED" not in os.environ and os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
