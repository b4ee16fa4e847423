"""The README's path, run as a new user runs it: CLI subprocesses in a clean environment.

Nothing is inherited from the test session: ``env -i`` semantics (PATH with the venv, a
temporary HOME that holds a Ray token made the way Ray makes one, no ``RAY_*`` variable), so the
head that ``serve up`` starts turns token authentication on, and every later command must send
its token by itself. Afterwards nothing of that head may be left running.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests
import yaml

from raysys import System
from raysys.runtime import free_port
from tests.modeling.test_train import sklearn_cfg
from tests.serving.conftest import perturbed_copy
from tests.user_shell import clean_env

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.timeout(1800)  # the module's first test also pays for `raysys run`


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A config, a clean environment with a Ray token in its HOME, v1 trained by `raysys run` (and so the
    champion), and v2 (a copy of v1 with other answers)."""
    root = tmp_path_factory.mktemp("readme")
    home = root / "home"
    env = clean_env(home, **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"})  # a checkout run from elsewhere
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=env, capture_output=True, timeout=300,
                   check=True)
    assert (home / ".ray" / "auth_token").is_file()
    cfg = {**sklearn_cfg("breast_cancer", "binary", epochs=4), "storage": {"root": str(root / "store")},
           "ray": {"num_cpus": 2}, "tracking": {"wandb": False},
           "serve": {"port": free_port(), "num_cpus": 0.2, "autoscaling": {"min_replicas": 1, "max_replicas": 1},
                     "prediction_log": {"flush_s": 0.5}}}
    config = root / "raysys.yaml"
    config.write_text(yaml.safe_dump(cfg))
    ran = cli(env, config, "run")
    assert ran["version"] == 1 and ran["promotion"]["promoted"] is True, ran["promotion"]  # beats the baseline
    rs = System.from_config(config)
    assert rs.models.registry.aliases(rs.models.name) == {"champion": 1}
    assert perturbed_copy(rs, 1) == 2  # a second version for the canary, without a second training run
    return cfg, config, env


def cli(env: dict, config: Path, *args: str, ok: bool = True) -> dict:
    """``raysys ARGS -c CONFIG --json`` in the clean environment; its JSON answer."""
    done = subprocess.run([str(BIN / "raysys"), *args, "-c", str(config), "--json"], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert (done.returncode == 0) == ok, f"raysys {' '.join(args)}: {done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def head_record(cfg: dict) -> dict:
    path = Path(cfg["storage"]["root"]) / "serving" / cfg["project"]["name"] / "cluster.json"
    return json.loads(path.read_text()) if path.exists() else {}


def head_processes(record: dict) -> list[psutil.Process]:
    """Every live process of a recorded head: its process group, anything naming its GCS, its HAProxy."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            args = process.info["cmdline"] or []
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if (os.getpgid(process.pid) == record["pid"] or any(record["address"] in a for a in args)
                    or any(a.startswith(record["haproxy_dir"] + "/") for a in args)):
                found.append(process)
        except (psutil.Error, ProcessLookupError):
            continue
    return found


def listening_addresses(processes: list[psutil.Process]) -> dict[str, str]:
    """``ip:port`` → process name of every socket these processes accept traffic on: TCP listeners and
    unconnected UDP sockets, except HAProxy's syslog sender (Serve's ``log 127.0.0.1:514``: an
    unconnected socket on an ephemeral port that HAProxy only sends from, never reads)."""
    found = {}
    for process in processes:
        try:
            for conn in process.net_connections(kind="inet"):
                udp = conn.type == socket.SOCK_DGRAM and not conn.raddr and process.name() != "haproxy"
                if conn.status == psutil.CONN_LISTEN or udp:
                    found[f"{conn.laddr.ip}:{conn.laddr.port}"] = process.name()
        except psutil.Error:
            continue
    return found


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def kill_what_is_left(record: dict) -> None:
    """Safety net for a failed test: only the processes and folder of the head this test made raysys start."""
    for process in head_processes(record) if record else []:
        try:
            process.kill()
        except psutil.Error:
            pass
    if record.get("haproxy_dir"):
        shutil.rmtree(record["haproxy_dir"], ignore_errors=True)


def test_the_readme_path_in_a_clean_environment_leaves_nothing_running(project):
    cfg, config, env = project
    record = {}
    try:
        up = cli(env, config, "serve", "up")
        record = head_record(cfg)
        assert up["status"] == "RUNNING" and record["auth"] == "token"
        assert record["token_path"] == env["HOME"] + "/.ray/auth_token"  # a file, never the token itself
        assert Path(record["token_path"]).read_text() not in json.dumps(record)

        from raysys.data.sources import load_sklearn

        row = load_sklearn("breast_cancer").drop(columns=["target"]).iloc[0].to_dict()
        answer = requests.post(f"http://127.0.0.1:{cfg['serve']['port']}/v1/predict", json={"records": row},
                               timeout=60)
        assert answer.status_code == 200 and answer.json()["model_version"] == 1, answer.text

        status = cli(env, config, "serve", "status")
        assert status["status"] == "RUNNING" and status["plan"]["champion"] == 1

        processes = head_processes(record)
        assert any(p.name() == "haproxy" for p in processes)  # Serve's high-throughput mode, in front
        listening = listening_addresses(processes)
        assert any(name == "haproxy" for name in listening.values())  # its frontend, stats and metrics
        exposed = {a: name for a, name in listening.items() if not is_loopback(a.rsplit(":", 1)[0])}
        assert listening and not exposed, exposed

        canary = cli(env, config, "deploy", "--model", "2", "--canary", "10")
        assert canary["applied_to_running_app"] and canary["plan"]["challenger"] == 2
        promoted = cli(env, config, "promote")
        assert promoted["applied_to_running_app"] and promoted["plan"]["champion"] == 2
        rolled = cli(env, config, "rollback")
        assert rolled["applied_to_running_app"] and rolled["plan"]["champion"] == 1
        assert rolled["plan"]["challenger"] is None
        monitor = cli(env, config, "monitor", "status")  # `serve up` started the monitor
        assert monitor["running"] is True, monitor

        down = cli(env, config, "serve", "down")
        assert down["stopped_local_ray"] is True and "unreachable" not in down
        assert head_processes(record) == []
        stopped = [e["action"] for e in System.from_config(config).monitor.audit(action="monitor.")]
        assert stopped[0] == "monitor.start" and stopped[-1] == "monitor.stop", stopped
        assert not Path(record["haproxy_dir"]).exists() and head_record(cfg) == {}
    finally:
        kill_what_is_left(record)


CONNECT_ONLY = """
import sys
from raysys import System
rs = System.from_config(sys.argv[1])
from raysys.serving.cluster import connect_serving_cluster
connect_serving_cluster(rs.config, rs.storage, rs.serving.app_name, None)
"""


def test_an_interrupted_up_stops_its_head_and_down_stops_a_head_it_cannot_reach(project, tmp_path):
    cfg, config, env = project
    record = {}
    try:
        up = subprocess.Popen([str(BIN / "raysys"), "serve", "up", "-c", str(config)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while not head_record(cfg).get("pid") and up.poll() is None:
            time.sleep(0.2)
        record = head_record(cfg)
        up.send_signal(signal.SIGINT)  # Ctrl-C while the head starts
        up.communicate(timeout=300)
        assert up.returncode != 0 and record.get("pid")
        assert head_processes(record) == [] and not Path(record["haproxy_dir"]).exists()

        # a head that raysys started, then a command that cannot connect to it: its token is gone
        subprocess.run([sys.executable, "-c", CONNECT_ONLY, str(config)], env=env, timeout=600, check=True,
                       capture_output=True)
        record = head_record(cfg)
        assert head_processes(record)
        token = Path(record["token_path"])
        token.rename(tmp_path / "token")
        try:
            down = cli(env, config, "serve", "down")
        finally:
            (tmp_path / "token").rename(token)
        assert down["stopped_local_ray"] is True and "no token" in down["unreachable"]
        assert head_processes(record) == [] and not Path(record["haproxy_dir"]).exists()
    finally:
        kill_what_is_left(record)


BETTER = {"metrics": {"log_loss": 0.1}, "baseline": {"log_loss": 0.66}}
WORSE = {"metrics": {"log_loss": 0.7}, "baseline": {"log_loss": 0.66}}


def test_only_a_first_model_that_beats_the_baseline_becomes_champion_and_the_switch_turns_it_off(project, tmp_path):
    from raysys.config import parse_config

    cfg, config, _ = project
    rs = System.from_config(config)
    assert rs.models._promote_if_first(rs.models.show("2"), BETTER, "binary") is None  # v1 is the champion

    def fresh(promote_first: bool):
        """A registry with one model (a copy of v1) and no champion."""
        other = System(parse_config({**cfg, "storage": {"root": str(tmp_path / str(promote_first))},
                                     "train": {**cfg["train"], "promote_first": promote_first}}))
        source = rs.models.show("1")
        copy = other.models.registry.register(other.models.name, rs.models.registry.load_files(source),
                                              metrics=source.metrics, lineage=source.lineage, params=source.params,
                                              run_id=None)
        return other, copy

    other, copy = fresh(promote_first=True)
    assert other.models._promote_if_first(copy, WORSE, "binary")["promoted"] is False
    assert other.models.registry.aliases(other.models.name) == {}  # no better than guessing: never served
    promoted = other.models._promote_if_first(copy, BETTER, "binary")
    assert promoted == {"alias": "champion", "version": 1, "promoted": True,
                        "reason": "test log_loss 0.1 below the trivial baseline's 0.66"}
    move = other.models.registry.alias_history(other.models.name)[-1]
    assert (move.alias, move.to_version, move.actor) == ("champion", 1, "raysys (train.promote_first)")
    switched_off, copy = fresh(promote_first=False)
    assert switched_off.models._promote_if_first(copy, BETTER, "binary") is None
    assert switched_off.models.registry.aliases(switched_off.models.name) == {}
