"""Which Ray cluster the model server lives on, so that ``serve up``, ``status`` and ``down`` agree.

Serving outlives the command that starts it, so it cannot use a throw-away local Ray. In order:
the Ray this process is already connected to (notebooks, tests); an explicit ``--address`` /
``ray.address`` / ``$RAY_ADDRESS``; the local Ray that an earlier ``serve up`` started (recorded
under ``serving/<app>/cluster.json``); else, for ``up`` only, a new local head node
(``ray start --head --block`` in a process group of its own).

A head raysys starts listens on ``ray.host`` (127.0.0.1 unless the config opens it) and always
has token authentication on, with the token in ``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``
(created if missing). Its record names its process group, address, token *file* (never the
token) and HAProxy folder: every later command connects with that token, whatever its shell
says, and ``serve down`` stops exactly that head (its process group, its HAProxy, its folder),
also when it cannot connect to it. A ``serve up`` that fails stops the head it started.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raysys.config import SystemConfig
from raysys.errors import RaysysError
from raysys.haproxy import stop_haproxy
from raysys.processes import is_same_process, start_time, stop_group
from raysys.runtime import (
    check_cluster_storage,
    every_interface,
    free_port,
    head_token_file,
    is_loopback,
    join_ray,
    new_ray,
    port_open,
)
from raysys.storage import Storage

QUIET = {"logging_level": "ERROR", "log_to_driver": False}


@dataclass
class ServingCluster:
    """The cluster a command is connected to, and the head raysys started there (if it did)."""

    storage: Storage
    app_name: str
    head: dict[str, Any] | None = None  # the record of the head `serve up` started
    started_now: bool = False  # this command started it

    def stop_head(self) -> bool:
        """Stop the head ``serve up`` started (only that one) and forget it; False if there is none."""
        import ray

        if not self.head:
            return False
        ray.shutdown()
        stopped = stop_head_processes(self.head)
        _forget_as_current(self.head.get("address"))
        self.storage.write_json({}, "serving", self.app_name, "cluster.json")
        self.head = None
        return stopped

    @contextlib.contextmanager
    def stopped_on_failure(self) -> Iterator[None]:
        """Stop the head this command started when the block fails (Ctrl-C included), then re-raise."""
        try:
            yield
        except BaseException:
            if self.started_now:
                self.stop_head()
            raise


def stop_head_processes(record: dict[str, Any]) -> bool:
    """Stop a recorded head's process group (leader first, SIGKILL last) and its HAProxy; False if none was left."""
    stopped = bool(record.get("pid")) and stop_group(record["pid"], record.get("started"))
    stop_haproxy(record.get("haproxy_dir"))
    return stopped


def _forget_as_current(address: str | None) -> None:
    """`ray start` named this head "the" local Ray in /tmp/ray/ray_current_cluster; once it is
    stopped, a stale entry would send Ray's address auto-detection to a dead cluster."""
    from raysys.ray_compat import ray_address_file

    path = ray_address_file()
    if path is None:
        return
    current = Path(path)
    try:  # the file may name the node's IP where the record has 127.0.0.1: the GCS port tells them apart
        if address and current.read_text().strip().rsplit(":", 1)[-1] == address.rsplit(":", 1)[-1]:
            current.unlink()
    except OSError:
        pass


def connect_serving_cluster(config: SystemConfig, storage: Storage, app_name: str, address: str | None,
                            start: bool = True) -> ServingCluster:
    """Connect this process to the serving cluster (see the module docstring for the order)."""
    import ray

    record = _record(storage, app_name)
    alive = _alive(record)
    if ray.is_initialized():
        here = ray.get_runtime_context().gcs_address
        return ServingCluster(storage, app_name, record if alive and here == record.get("address") else None)
    address = address or (config.ray.address if config.ray.address not in (None, "local") else None)
    address = address or os.environ.get("RAY_ADDRESS")
    if address and not (alive and address == record.get("address")):
        join_ray(address, **QUIET)  # a cluster raysys joins, with its own auth mode
        check_cluster_storage(config.storage)
        return ServingCluster(storage, app_name)
    if alive:
        join_ray(record["address"], token_path=record.get("token_path"), **QUIET)
        return ServingCluster(storage, app_name, record)
    if not start:
        raise RaysysError(f"serve: no running cluster for '{app_name}' (run `raysys serve up`, or pass --address)")
    if record:
        stop_head_processes(record)  # what a head that died may have left (its HAProxy, its folder)
    cluster = ServingCluster(storage, app_name, _start_head(config, storage, app_name), started_now=True)
    with cluster.stopped_on_failure():
        join_ray(cluster.head["address"], token_path=cluster.head["token_path"], **QUIET)
    return cluster


def take_down(config: SystemConfig, storage: Storage, app_name: str, address: str | None) -> dict[str, Any]:
    """Delete the Serve app and stop the head ``serve up`` started, if it did, reachable or not."""
    from ray import serve

    try:
        cluster = connect_serving_cluster(config, storage, app_name, address, start=False)
    except Exception as error:  # unreachable, refused (auth), gone: a recorded head is stopped all the same
        record = _record(storage, app_name)
        if not record.get("pid"):
            raise
        stopped = ServingCluster(storage, app_name, record).stop_head()
        return {"stopped_local_ray": stopped, "unreachable": str(error).strip().splitlines()[0][:300]}
    try:
        if app_name in serve.status().applications:  # (no Serve running: nothing to delete)
            serve.delete(app_name)
    finally:
        stopped = cluster.stop_head()
    return {"stopped_local_ray": stopped}


def _record(storage: Storage, app_name: str) -> dict[str, Any]:
    if storage.exists("serving", app_name, "cluster.json"):
        return storage.read_json("serving", app_name, "cluster.json")
    return {}


def _alive(record: dict[str, Any]) -> bool:
    return bool(record.get("pid")) and is_same_process(record["pid"], record.get("started"))


def _start_head(config: SystemConfig, storage: Storage, app_name: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """``ray start --head --block`` in its own process group, on ``ray.host``, token auth on.

    Recorded at once (a command interrupted while it waits leaves a head ``serve down`` can
    stop); returns the record once the head accepts drivers, else stops it and raises.
    """
    import ray

    temp = Path(storage.path("serving", app_name)) if "://" not in storage.uri else Path("/tmp")
    temp.mkdir(parents=True, exist_ok=True)
    host, port, dashboard_port = config.ray.host, free_port(), free_port()
    new = new_ray(config.ray, dashboard_port)
    token = head_token_file()
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", f"--port={port}",
               f"--dashboard-host={host}", f"--dashboard-port={dashboard_port}", "--disable-usage-stats",
               f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}"]
    if not (is_loopback(host) or every_interface(host)):
        command.append(f"--node-ip-address={host}")
    if config.ray.num_cpus:
        command.append(f"--num-cpus={config.ray.num_cpus}")
    env = {name: value for name, value in os.environ.items() if name != "RAY_AUTH_TOKEN"}
    env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")  # `serve down` deletes the app first: nothing to drain
    env.update(new.env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=token)
    log = temp / "ray-head.log"
    with open(log, "ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    node = "127.0.0.1" if is_loopback(host) else ray.util.get_node_ip_address() if every_interface(host) else host
    record = {"pid": process.pid, "started": start_time(process.pid), "address": f"{node}:{port}", "auth": "token",
              "token_path": token, "haproxy_dir": new.haproxy_dir, "log": str(log)}
    storage.write_json(record, "serving", app_name, "cluster.json")
    head = ServingCluster(storage, app_name, record, started_now=True)
    deadline = time.monotonic() + timeout_s
    with head.stopped_on_failure():
        while not port_open(f"{node}:{port}", timeout_s=0.5):
            if process.poll() is not None:
                raise RaysysError(f"serve: `ray start --head` exited with {process.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise RaysysError(f"serve: local Ray did not start within {timeout_s:.0f} s; see {log}")
            time.sleep(0.5)
    return record
