"""Which Ray cluster the model server lives on, so that ``serve up``, ``status`` and ``down`` agree.

Serving outlives the command that starts it, so it cannot use a throw-away local Ray. In order:
the Ray this process is already connected to (notebooks, tests); an explicit ``--address`` /
``ray.address`` / ``$RAY_ADDRESS``; the local Ray that an earlier ``serve up`` started (recorded
under ``serving/<app>/cluster.json``); else, for ``up`` only, a new local head node
(``ray start --head --block``, its pid recorded so that ``serve down`` stops it and nothing else).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from raysys.config import SystemConfig
from raysys.errors import RaysysError
from raysys.runtime import cluster_env, free_port
from raysys.storage import Storage


@dataclass
class ServingCluster:
    """The cluster a command is connected to, and whether raysys started it."""

    storage: Storage
    app_name: str
    started_pid: int | None = None

    def stop_if_started_by_raysys(self) -> bool:
        """Stop the local head node ``serve up`` started (only that one)."""
        import ray

        if self.started_pid is None:
            return False
        address = _record(self.storage, self.app_name).get("address")
        ray.shutdown()
        try:
            os.killpg(self.started_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        _forget_as_current(address)
        self.storage.write_json({}, "serving", self.app_name, "cluster.json")
        return True


def _forget_as_current(address: str | None) -> None:
    """`ray start` named this head "the" local Ray in /tmp/ray/ray_current_cluster; once it is
    stopped, a stale entry would send Ray's address auto-detection to a dead cluster."""
    from raysys.ray_compat import ray_address_file

    path = ray_address_file()
    if path is None:
        return
    current = Path(path)
    try:  # the file holds the node's IP, the record 127.0.0.1: the GCS port tells them apart
        if address and current.read_text().strip().rsplit(":", 1)[-1] == address.rsplit(":", 1)[-1]:
            current.unlink()
    except OSError:
        pass


def connect_serving_cluster(config: SystemConfig, storage: Storage, app_name: str, address: str | None,
                            start: bool = True) -> ServingCluster:
    """Connect this process to the serving cluster (see the module docstring for the order)."""
    import ray

    record = _record(storage, app_name)
    cluster = ServingCluster(storage, app_name, record.get("pid"))
    if ray.is_initialized():
        return cluster
    address = address or (config.ray.address if config.ray.address not in (None, "local") else None)
    address = address or os.environ.get("RAY_ADDRESS") or (record.get("address") if _alive(record) else None)
    if address is None:
        if not start:
            raise RaysysError(f"serve: no running cluster for '{app_name}' (run `raysys serve up`, or pass --address)")
        record = _start_head(config, storage, app_name)
        cluster.started_pid, address = record["pid"], record["address"]
    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    return cluster


def _record(storage: Storage, app_name: str) -> dict:
    if storage.exists("serving", app_name, "cluster.json"):
        return storage.read_json("serving", app_name, "cluster.json")
    return {}


def _alive(record: dict) -> bool:
    pid = record.get("pid")
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _start_head(config: SystemConfig, storage: Storage, app_name: str, timeout_s: float = 60.0) -> dict:
    """``ray start --head --block`` in its own process group; wait until it accepts drivers."""
    temp = Path(storage.path("serving", app_name)) if "://" not in storage.uri else Path("/tmp")
    temp.mkdir(parents=True, exist_ok=True)
    port, dashboard_port = free_port(), free_port()
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", f"--port={port}",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", "--disable-usage-stats"]
    if config.ray.num_cpus:
        command.append(f"--num-cpus={config.ray.num_cpus}")
    log = open(temp / "ray-head.log", "ab")  # noqa: SIM115 - the head keeps writing after we return
    env = {**os.environ, **cluster_env(config.ray, dashboard_port)}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RaysysError(f"serve: `ray start --head` exited with {process.returncode}; see {temp / 'ray-head.log'}")
        if _gcs_ready(port):
            record = {"pid": process.pid, "address": address}
            storage.write_json(record, "serving", app_name, "cluster.json")
            return record
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGTERM)
    raise RaysysError(f"serve: local Ray did not start within {timeout_s:.0f} s; see {temp / 'ray-head.log'}")


def _gcs_ready(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
