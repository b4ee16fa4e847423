"""What a Ray started by raysys gets, and how raysys stops what it started (pure: no Ray is started here)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from raysys.config import RayConfig, parse_config
from raysys.errors import ConfigError
from raysys.haproxy import bind_ports_to, replica_ports, stop_haproxy, write_launcher
from raysys.processes import env_values, pids_with_option, stop_group
from raysys.runtime import environment, head_token_file, new_ray


@pytest.fixture()
def no_serve_variables(monkeypatch):
    for name in [n for n in os.environ if n.startswith(("RAY_SERVE_", "RAY_ENABLE_WINDOWS"))]:
        monkeypatch.delenv(name)


@pytest.fixture()
def new(no_serve_variables):
    """new_ray(...) for a config, its HAProxy folder removed afterwards."""
    made = []

    def make(**cfg):
        made.append(new_ray(RayConfig(**cfg), 8265))
        return made[-1]

    yield make
    for ray in made:
        ray.release()


def test_high_throughput_serving_is_the_default_and_proxy_mode_turns_it_off(new):
    env = new().env
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    proxy = new(serve_mode="proxy")
    assert proxy.env["RAY_SERVE_ENABLE_HA_PROXY"] == proxy.env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0"
    assert proxy.haproxy_dir is None
    # the cluster's own dashboard, not whatever /tmp/ray/ray_current_cluster names
    assert proxy.env["RAY_API_SERVER_ADDRESS"] == "http://127.0.0.1:8265"


def test_serve_holds_a_removed_replica_for_ray_serve_drain_s_not_rays_30_s(new, monkeypatch):
    assert new().env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "5"
    assert new(serve_drain_s=1.5).env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "1.5"
    assert "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S" not in new(serve_mode="proxy").env
    monkeypatch.setenv("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "30")  # an operator's choice wins
    assert new().env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "30"


def test_each_cluster_gets_its_own_haproxy_files_and_ports(new):
    first, second = new().env, new().env
    for name in ("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "RAY_SERVE_HAPROXY_SOCKET_PATH", "RAY_SERVE_HAPROXY_STATS_PORT",
                 "RAY_SERVE_HAPROXY_METRICS_PORT"):
        assert first[name] != second[name]
    assert os.path.isdir(first["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"])
    assert not first["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"].startswith("/tmp/haproxy-serve/")


def test_each_new_ray_gets_replica_ports_that_no_running_ray_of_this_user_has(new, tmp_path):
    window = replica_ports(set())
    assert window["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == "31000"  # Serve's 30000-31000 stays for others
    assert replica_ports({"31000", "31100"})["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == "31200"
    # a running process holding a window (as a Ray's daemons do) makes the next Ray take another one
    holder_env = {**new().env, "PATH": os.environ["PATH"]}
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=holder_env)
    try:
        taken = holder_env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"]
        assert taken in env_values("RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT")
        fresh = new().env
        assert fresh["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] != taken
        assert int(fresh["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"]) - int(fresh["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"]) == 100
    finally:
        holder.kill()
        holder.wait()


def test_a_ray_on_loopback_runs_in_single_machine_mode_with_haproxy_behind_the_launcher(new):
    local = new()
    assert local.env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"  # Ray's node IP: 127.0.0.1, not the network's
    launcher = Path(local.env["RAY_SERVE_HAPROXY_BINARY_PATH"])
    assert launcher.parent == Path(local.haproxy_dir) and launcher.stat().st_mode & stat.S_IXUSR
    opened = new(host="0.0.0.0")
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in opened.env and "RAY_SERVE_HAPROXY_BINARY_PATH" not in opened.env
    node = new(host="10.1.2.3")
    assert node.env["RAY_API_SERVER_ADDRESS"] == "http://10.1.2.3:8265" and "RAY_SERVE_HAPROXY_BINARY_PATH" in node.env


def test_ray_host_must_be_an_ip_address():
    with pytest.raises(ConfigError, match=r"ray\.host"):
        parse_config({"data": {"name": "d", "source": {"kind": "sklearn", "dataset": "iris"}},
                      "ray": {"host": "my laptop"}})


def test_an_operator_variable_wins_and_the_process_environment_is_restored(new, monkeypatch):
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")
    assert new().env["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    with environment({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}):
        assert os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert "RAY_SERVE_THROUGHPUT_OPTIMIZED" not in os.environ and os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "0"


SERVE_CONFIG = """frontend prometheus
    bind :9101
    mode http
frontend http_frontend
    bind 127.0.0.1:8000
listen stats
  bind *:8404
  stats enable
frontend other
    bind *:7000
"""


def test_only_haproxys_stats_and_metrics_listeners_move_to_the_host():
    moved = bind_ports_to(SERVE_CONFIG, "127.0.0.1", (8404, 9101))
    assert "    bind 127.0.0.1:9101\n" in moved and "  bind 127.0.0.1:8404\n" in moved
    assert "bind 127.0.0.1:8000" in moved and "bind *:7000" in moved  # Serve's own frontend: serve.host decides
    assert bind_ports_to(moved, "127.0.0.1", (8404, 9101)) == moved


def test_the_launcher_rewrites_the_config_then_becomes_the_real_binary(tmp_path):
    fake = tmp_path / "fake-haproxy"  # stands in for HAProxy: prints its arguments and the config it got
    fake.write_text("#!/bin/sh\necho \"$@\"\ncat \"$3\"\n")
    fake.chmod(0o700)
    config = tmp_path / "haproxy.cfg"
    config.write_text(SERVE_CONFIG)
    launcher = write_launcher(str(tmp_path), str(fake), "127.0.0.1", (8404, 9101))
    done = subprocess.run([launcher, "-db", "-f", str(config), "-dR"], capture_output=True, text=True, timeout=60,
                          check=True, env={"PATH": os.environ["PATH"]})
    assert done.stdout.startswith(f"-db -f {config} -dR\n")
    assert "bind 127.0.0.1:8404" in done.stdout and "bind :9101" not in config.read_text()


def test_stop_haproxy_stops_only_the_processes_of_its_folder(tmp_path):
    ours, other = tmp_path / "rshapA", tmp_path / "rshapB"
    ours.mkdir()
    other.mkdir()
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    mine = subprocess.Popen([*sleeper, "-f", f"{ours}/haproxy.cfg"])
    theirs = subprocess.Popen([*sleeper, "-f", f"{other}/haproxy.cfg"])
    try:
        assert pids_with_option("-f", f"{ours}/") == [mine.pid]
        stop_haproxy(str(ours))
        assert mine.wait(timeout=30) is not None and theirs.poll() is None
        assert not ours.exists() and other.exists()
    finally:
        theirs.kill()
        mine.kill()


def test_stop_group_stops_a_whole_process_group_and_never_a_reused_pid():
    leader = subprocess.Popen(["/bin/sh", "-c", f"{sys.executable} -c 'import time; time.sleep(600)' & wait"],
                              start_new_session=True)
    from raysys.processes import group_alive, start_time

    started = start_time(leader.pid)
    assert not stop_group(leader.pid, "1")  # another start time: another process, left alone
    assert group_alive(leader.pid)
    assert stop_group(leader.pid, started, timeout_s=1)
    assert not group_alive(leader.pid)
    assert not stop_group(leader.pid, started)  # nothing left to stop


def test_a_head_token_is_created_private_once_and_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    path = Path(head_token_file())
    assert path == tmp_path / ".ray" / "auth_token" and stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0  # 256 bits in hex, as `ray get-auth-token --generate` writes
    assert head_token_file() == str(path) and path.read_text() == token
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "elsewhere"))
    assert head_token_file() == str(tmp_path / "elsewhere")


def test_a_model_becomes_champion_only_below_the_trivial_baselines_loss():
    from raysys.modeling.promotion import beats_baseline

    better, why = beats_baseline("binary", {"metrics": {"log_loss": 0.2}, "baseline": {"log_loss": 0.66}})
    assert better and why == "test log_loss 0.2 below the trivial baseline's 0.66"
    assert not beats_baseline("multiclass", {"metrics": {"log_loss": 1.2}, "baseline": {"log_loss": 1.1}})[0]
    assert not beats_baseline("regression", {"metrics": {"rmse": 3.0}, "baseline": {"rmse": 3.0}})[0]
    assert beats_baseline("regression", {"metrics": {"rmse": 2.0}, "baseline": {"rmse": 3.0}})[0]
    assert not beats_baseline("binary", {"metrics": {"log_loss": float("nan")}, "baseline": {"log_loss": 0.6}})[0]


def test_a_small_read_is_planned_with_the_first_parquet_reader_a_large_one_with_the_default(monkeypatch):
    from ray.data import DataContext

    from raysys.runtime import SMALL_READ_ROWS, parquet_reader_for

    context = DataContext.get_current()
    monkeypatch.setattr(context, "use_datasource_v2", True)
    monkeypatch.delenv("RAY_DATA_USE_DATASOURCE_V2", raising=False)
    with parquet_reader_for(SMALL_READ_ROWS):
        assert context.use_datasource_v2 is False  # no footer-reading actor for a small version
    assert context.use_datasource_v2 is True
    with parquet_reader_for(SMALL_READ_ROWS + 1):
        assert context.use_datasource_v2 is True
    monkeypatch.setenv("RAY_DATA_USE_DATASOURCE_V2", "1")  # the operator's choice, for every read
    with parquet_reader_for(10):
        assert context.use_datasource_v2 is True


def test_a_training_run_sets_its_controllers_poll_interval_and_keeps_an_operators(monkeypatch):
    from raysys.modeling.train import POLL_ENV, controller_poll

    monkeypatch.delenv(POLL_ENV, raising=False)
    with controller_poll(0.25):
        assert os.environ[POLL_ENV] == "0.25"  # Ray Train reads it when fit starts its controller
    assert POLL_ENV not in os.environ
    monkeypatch.setenv(POLL_ENV, "5")
    with controller_poll(0.25):
        assert os.environ[POLL_ENV] == "5"
    assert os.environ[POLL_ENV] == "5"


@pytest.mark.parametrize("bad", [0, -1, 61, "often"])
def test_train_poll_s_out_of_range_is_a_config_error_naming_it(bad):
    with pytest.raises(ConfigError, match="train.poll_s"):
        parse_config({"data": {"name": "d", "source": {"kind": "sklearn", "dataset": "iris"}},
                      "train": {"poll_s": bad}})
