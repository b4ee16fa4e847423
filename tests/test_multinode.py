"""raysys on a real two-node Ray cluster, driven as users drive one: `ray job submit` (the Jobs SDK).

The cluster is a head (`ray start --head`) and a second node (`ray start --address …`) on this
machine, 1 CPU each, token authentication on, each with its own ``--temp-dir`` and in its own
process group, so the test stops exactly those two nodes (never `ray stop`). Jobs run the CLI
from a working directory holding only the configs, as a new user's would.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from raysys.processes import start_time, stop_group
from raysys.runtime import free_port, local_storage_problem
from tests.user_shell import BIN, clean_env

ROOT = Path(__file__).resolve().parents[1]
NODE_START_S = 180.0  # a loaded 2-core machine starts a Ray node slowly


# --------------------------------------------------------------------------- pure: the shared-storage rule


@pytest.mark.parametrize(("root", "shared", "nodes", "refused"), [
    ("./.raysys", False, 2, True),
    ("/mnt/raysys", False, 3, True),
    ("file:///mnt/raysys", False, 2, True),
    ("/mnt/raysys", True, 2, False),     # storage.shared: a mount every node sees
    ("./.raysys", False, 1, False),      # one node: its disk is the only one
    ("s3://bucket/raysys", False, 4, False),
    ("gs://bucket/raysys", False, 2, False),
])
def test_local_storage_is_refused_on_a_multi_node_cluster(root, shared, nodes, refused):
    problem = local_storage_problem(root, shared, nodes)
    assert (problem is not None) is refused
    if refused:
        assert "storage.root" in problem and "storage.shared" in problem and root in problem


# --------------------------------------------------------------------------- the cluster


@dataclass
class TwoNodes:
    """A head and a second node started by this test, and how to reach them."""

    base: Path
    env: dict[str, str]
    gcs: str
    dashboard: str
    token: str
    groups: list[tuple[int, str | None]]

    def client(self):
        """The Jobs SDK, with the cluster's token."""
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard, headers=self.auth)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def run_job(self, entrypoint: str, working_dir: Path, timeout_s: float = 600.0) -> tuple[str, str]:
        """Submit a job, wait for it to end, return (status, logs)."""
        from ray.job_submission import JobStatus

        client = self.client()
        job = client.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": str(working_dir)})
        deadline = time.monotonic() + timeout_s
        while (status := client.get_job_status(job)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                             JobStatus.STOPPED}:
            if time.monotonic() > deadline:
                client.stop_job(job)
                pytest.fail(f"job {entrypoint!r} still {status} after {timeout_s:.0f} s:\n{client.get_job_logs(job)}")
            time.sleep(1.0)
        return str(status.value), client.get_job_logs(job)

    def command(self, *argv: str) -> subprocess.CompletedProcess:
        """A command of the venv (``raysys``, Ray's ``serve``) run in the nodes' user shell (their token)."""
        return subprocess.run([str(BIN / argv[0]), *argv[1:]], env=self.env, capture_output=True, text=True,
                              check=False, timeout=300)

    def state(self):
        """Ray's State API client for this cluster (with its token)."""
        from ray.util.state.api import StateApiClient

        return StateApiClient(address=self.dashboard, headers=self.auth)

    def alive_nodes(self) -> list[str]:
        from ray.util.state.common import ListApiOptions, StateResource

        nodes = self.state().list(StateResource.NODES, options=ListApiOptions(), raise_on_missing_output=False)
        return [n.node_id for n in nodes if n.state == "ALIVE"]


def start_node(args: list[str], env: dict[str, str], log: Path, ready, attempts: int = 3) -> tuple[int, str | None]:
    """`ray start --block …` in a process group of its own, until ``ready()``; returns (pid, start time).

    Ray gives a node 30 s to register (fixed in ray/_private/node.py): on a loaded machine it may
    give up, and the node is started again.
    """
    for attempt in range(1, attempts + 1):
        with open(log, "ab") as output:
            process = subprocess.Popen([str(BIN / "ray"), "start", "--block", "--disable-usage-stats", *args],
                                       env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        group = (process.pid, start_time(process.pid))
        if wait_for(lambda p=process: p.poll() is not None or ready(), log, final=attempt == attempts) \
                and process.poll() is None:
            return group
        stop_nodes([group])
    pytest.fail(f"`ray start` failed {attempts} times; {log}:\n{log.read_text()[-3000:]}")


def wait_for(check, log: Path, final: bool = True, timeout_s: float = NODE_START_S) -> bool:
    """Poll ``check`` until it holds (an error means not yet: a starting dashboard drops connections);
    False after ``timeout_s``, or a test failure if this was the ``final`` try."""
    deadline, error = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except Exception as exc:  # noqa: BLE001 -- reported below if it never works
            error = exc
        time.sleep(1.0)
    if final:
        pytest.fail(f"not ready after {timeout_s:.0f} s ({error!r}); {log}:\n{log.read_text()[-3000:]}")
    return False


def stop_nodes(groups: list[tuple[int, str | None]]) -> list[str]:
    """Stop each node's process group (the second node first); returns what of theirs is still running."""
    import psutil

    spawned = []
    for pid, _ in groups:  # the raylets' workers run in sessions of their own: find them through their parents
        with contextlib.suppress(psutil.NoSuchProcess):
            spawned += psutil.Process(pid).children(recursive=True)
    for pid, started in reversed(groups):
        stop_group(pid, started)
    _, alive = psutil.wait_procs(spawned, timeout=30)
    left = [f"{p.pid}: {p.name()}" for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    return left


@pytest.fixture(scope="module")
def two_nodes():
    """A two-node local Ray cluster (1 CPU per node, token auth), stopped by process group at the end."""
    base = Path(tempfile.mkdtemp(prefix="rsmn-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    home = base / "home"
    token = secrets.token_hex(32)
    (home / ".ray").mkdir(parents=True)
    token_file = home / ".ray" / "auth_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    env = clean_env(home, RAY_AUTH_MODE="token", PYTHONUNBUFFERED="1", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
                    RAY_DATA_DISABLE_PROGRESS_BARS="1", RAY_SERVE_ENABLE_HA_PROXY="0")
    port, dashboard_port = free_port(), free_port()
    gcs = f"127.0.0.1:{port}"
    cluster = TwoNodes(base, env, gcs, f"http://127.0.0.1:{dashboard_port}", token, [])
    try:
        cluster.groups.append(start_node(
            ["--head", f"--port={port}", "--num-cpus=1", f"--temp-dir={base / 'h'}", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={free_port()}",
             f"--dashboard-agent-listen-port={free_port()}"], env, base / "head.log",
            ready=lambda: cluster.alive_nodes()))
        cluster.groups.append(start_node(
            [f"--address={gcs}", "--num-cpus=1", f"--temp-dir={base / 'w'}",
             f"--dashboard-agent-listen-port={free_port()}"], env, base / "worker.log",
            ready=lambda: len(cluster.alive_nodes()) == 2))
        yield cluster
    finally:
        left = stop_nodes(cluster.groups)
        shutil.rmtree(base, ignore_errors=True)
        assert not left, f"processes of the test's nodes still running after they stopped: {left}"


def job_config(base: Path, **override) -> dict:
    """The quickstart, tiny (2,000 rows, 1 epoch), on a storage root both nodes see, 2 training workers."""
    config = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    config["storage"] = {"root": str(base / "store"), "shared": True}
    config["data"]["source"].update(rows=2000)
    config["data"]["source"]["drift"]["start_row"] = 2000
    config["train"].update(epochs=1, num_workers=2)
    config["tracking"] = {"wandb": False}
    config["serve"].update(port=free_port(), model="latest")  # one epoch may not beat the baseline: no champion
    for section, values in override.items():
        config[section] = values
    return config


@pytest.fixture(scope="module")
def working_dir(two_nodes) -> Path:
    """What a user submits: a folder with configs/ only (the CLI comes from the nodes' environment)."""
    folder = two_nodes.base / "job"
    (folder / "configs").mkdir(parents=True)
    base = two_nodes.base
    configs = {"cluster.yaml": job_config(base),
               "local.yaml": job_config(base, storage={"root": str(base / "local-store")}),
               "bad.yaml": {**job_config(base), "train": {"epochs": "many"}}}
    for name, config in configs.items():
        (folder / "configs" / name).write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def last_json(logs: str) -> dict:
    """The one JSON object a ``--json`` command printed (the job's log has Ray's lines around it)."""
    line = next(line for line in reversed(logs.splitlines()) if line.startswith("{"))
    return json.loads(line)


# --------------------------------------------------------------------------- jobs


def test_a_job_with_a_bad_config_fails_with_the_error_line(two_nodes, working_dir):
    status, logs = two_nodes.run_job("raysys run -c configs/bad.yaml --json", working_dir)
    assert status == "FAILED", logs
    assert "error: configs/bad.yaml: train.epochs" in logs, logs
    assert not (two_nodes.base / "store").exists()  # nothing written


def test_a_local_storage_root_is_refused_before_any_work(two_nodes, working_dir):
    status, logs = two_nodes.run_job("raysys run -c configs/local.yaml --json", working_dir)
    assert status == "FAILED", logs
    assert "error: storage.root is the local path" in logs and "storage.shared: true" in logs, logs
    assert last_json(logs)["error"].startswith("storage.root")
    store = two_nodes.base / "local-store"
    assert not (store / "datasets").exists() and not (store / "models").exists()


@pytest.fixture(scope="module")
def pipeline(two_nodes, working_dir) -> dict:
    """`raysys run` submitted as a job (the quickstart's pipeline, tiny); its --json output."""
    status, logs = two_nodes.run_job("raysys run -c configs/cluster.yaml --json", working_dir)
    assert status == "SUCCEEDED", logs
    return last_json(logs)


def test_the_pipeline_job_trains_on_both_nodes_and_registers_the_model(two_nodes, working_dir, pipeline):
    from ray.util.state.common import ListApiOptions, StateResource

    from raysys import System

    assert pipeline["dataset"]["accepted"] == 2000 and pipeline["epochs"] == 1
    registered = {v.version: v for v in System.from_config(working_dir / "configs" / "cluster.yaml").models.list()}
    assert pipeline["version"] in registered and registered[pipeline["version"]].files

    # Ray's State API: the two training workers ran one on each node.
    tasks = two_nodes.state().list(StateResource.TASKS, options=ListApiOptions(limit=10000, detail=True),
                                   raise_on_missing_output=False)
    train_nodes = {t.node_id for t in tasks if "RayTrainWorker" in t.name and t.node_id}
    assert train_nodes == set(two_nodes.alive_nodes()), [(t.name, t.node_id) for t in tasks]


def predict(working_dir: Path, version: int) -> httpx.Response:
    """POST three raw rows of the quickstart's stream to the model server the config names."""
    from raysys import System
    from raysys.data.synthetic import generate_rows

    rs = System.from_config(working_dir / "configs" / "cluster.yaml")
    inputs = rs.models.load(str(version)).state.input_columns
    frame = generate_rows(rs.config.data.source, 0, 3)[inputs]
    records = json.loads(frame.to_json(orient="records", date_format="iso"))
    return httpx.post(f"{rs.serving.url}/v1/predict", json={"records": records}, timeout=60)


def test_serve_up_and_deploy_as_jobs(two_nodes, working_dir, pipeline):
    status, logs = two_nodes.run_job("raysys serve up -c configs/cluster.yaml --json", working_dir)
    try:
        assert status == "SUCCEEDED", logs
        assert last_json(logs)["status"] == "RUNNING"
        answer = predict(working_dir, pipeline["version"])  # the app outlives the job's driver
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 3

        status, logs = two_nodes.run_job(f"raysys deploy --model {pipeline['version']} --reason job "
                                         "-c configs/cluster.yaml --json", working_dir)
        assert status == "SUCCEEDED", logs
        assert last_json(logs)["applied_to_running_app"] is True
    finally:
        status, logs = two_nodes.run_job("raysys serve down -c configs/cluster.yaml --json", working_dir)
        assert status == "SUCCEEDED", logs


def test_serve_build_output_deploys_with_serve_deploy(two_nodes, working_dir, pipeline):
    out = two_nodes.base / "built"
    built = two_nodes.command("raysys", "serve", "build", "-c", str(working_dir / "configs" / "cluster.yaml"),
                              "-o", str(out), "--json")
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["serve_config"] == str(out / "serve.yaml")

    deployed = two_nodes.command("serve", "deploy", str(out / "serve.yaml"), "--address", two_nodes.dashboard)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    try:
        deadline = time.monotonic() + 180
        while (answer := predict(working_dir, pipeline["version"])).status_code != 200:
            assert time.monotonic() < deadline, answer.text
            time.sleep(2)
        assert len(answer.json()["predictions"]) == 3
    finally:
        two_nodes.command("serve", "shutdown", "--yes", "--address", two_nodes.dashboard)


def test_an_unreachable_cluster_is_a_clear_error_and_changes_nothing(tmp_path, write_config):
    config = write_config(job_config(tmp_path, storage={"root": str(tmp_path / "store")}))
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = subprocess.run([str(BIN / "raysys"), "run", "-c", str(config), "--json"], check=False, capture_output=True, text=True,
                            env=clean_env(tmp_path / "home", RAY_ADDRESS=address), timeout=120)
    assert result.returncode == 1, result.stderr
    assert f"error: no Ray cluster answers at {address}" in result.stderr
    assert json.loads(result.stdout)["error"].startswith("no Ray cluster answers")
    assert not (tmp_path / "store" / "datasets").exists()
