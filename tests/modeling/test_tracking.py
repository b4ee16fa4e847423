"""Run tracking: the local run record, and real W&B runs in offline mode (read back from disk)."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from raysys.config import TrackingConfig
from raysys.errors import NotFound, RaysysError
from raysys.modeling.tracking import (
    as_read,
    interrupt_runs,
    is_rank_zero,
    list_runs,
    load_run,
    start_run,
)
from raysys.staging import process_start
from raysys.storage import Storage

LOCAL_ONLY = TrackingConfig(wandb=False)
WITH_WANDB = TrackingConfig(wandb=True, project="tracking-test")


@pytest.fixture(autouse=True)
def offline_wandb(monkeypatch, tmp_path):
    """W&B offline and silent, with its config and cache dirs under tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))


@pytest.fixture()
def storage(tmp_path) -> Storage:
    return Storage.open(str(tmp_path / "store"))


def read_wandb_records(path: Path) -> list:
    """Decode a .wandb transaction log (LevelDB log format: 32 KiB blocks of chunks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert not data or data[:4] == b":W&B", "not a W&B transaction log"
    records, position, pending = [], 7, b""
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # block trailer padding
            position += 32768 - position % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def finished_records(wandb_file: Path, timeout_s: float = 15.0) -> list:
    """The records of a finished run: W&B closes the offline log just after finish() returns."""
    deadline = time.monotonic() + timeout_s
    while not of_type(records := read_wandb_records(wandb_file), "exit"):
        assert time.monotonic() < deadline, f"no exit record in {wandb_file} after {timeout_s}s"
        time.sleep(0.1)
    return records


def of_type(records: list, kind: str) -> list:
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def wandb_summary(records: list) -> dict:
    """The final W&B summary: the summary updates replayed in order."""
    summary = {}
    for record in of_type(records, "summary"):
        for item in record.update:
            key = item.key or ".".join(item.nested_key)
            summary[key] = json.loads(item.value_json)
    return summary


def wandb_log_of(storage: Storage, run_id: str) -> Path:
    record = load_run(storage, run_id)
    run_dir = Path(record["wandb"]["dir"])
    assert run_dir.is_relative_to(Path(storage.path("runs", run_id), "wandb"))
    files = list(run_dir.glob("*.wandb"))
    assert len(files) == 1, f"expected one .wandb file in {run_dir}"
    return files[0]


def test_a_run_records_metrics_and_summary(storage):
    with start_run(storage, LOCAL_ONLY, "proj", "train", {"lr": 0.1}, "ds-v3", ["ci"]) as run:
        for epoch in range(3):
            run.log({"epoch": epoch, "loss": 1.0 / (epoch + 1)})
        run.log({"val_loss": 0.25}, step=10)
        run.summary({"test_acc": 0.9})
    record = storage.read_json("runs", run.run_id, "run.json")
    assert record["status"] == "finished" and record["kind"] == "train"
    assert record["config"] == {"lr": 0.1} and record["tags"] == ["ci"]
    assert record["dataset_version"] == "ds-v3" and record["ended_at"] and record["wandb"] is None
    assert record["summary"] == {"epoch": 2, "loss": pytest.approx(1 / 3), "val_loss": 0.25,
                                 "test_acc": 0.9}
    lines = Path(storage.path("runs", run.run_id, "metrics.jsonl")).read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 0, "epoch": 0, "loss": 1.0}, {"step": 1, "epoch": 1, "loss": 0.5},
        {"step": 2, "epoch": 2, "loss": pytest.approx(1 / 3)}, {"step": 10, "val_loss": 0.25},
    ]
    assert sorted(p.name for p in Path(storage.path("runs", run.run_id)).iterdir()) == [
        "metrics.jsonl", "run.json"]


def test_list_and_load_runs_by_id_and_prefix(storage):
    first = start_run(storage, LOCAL_ONLY, "proj", "train", {})
    first.log({"loss": 1.0})
    first.finish()
    time.sleep(0.01)  # started_at has millisecond resolution
    second = start_run(storage, LOCAL_ONLY, "proj", "evaluate", {})
    second.reference_model("churn", 2, "/models/churn/2")
    listed = list_runs(storage)
    assert [r["run_id"] for r in listed] == [second.run_id, first.run_id]
    assert listed[0]["status"] == "running" and listed[0]["model"] == "churn:v2"
    assert load_run(storage, first.run_id)["history"] == [{"step": 0, "loss": 1.0}]
    loaded = load_run(storage, "eval")  # a unique prefix
    assert loaded["run_id"] == second.run_id and loaded["history"] == []
    assert loaded["model"] == {"name": "churn", "version": 2, "uri": "/models/churn/2"}
    with pytest.raises(NotFound, match="no run 'nope'"):
        load_run(storage, "nope")
    start_run(storage, LOCAL_ONLY, "proj", "train", {}).finish()
    with pytest.raises(RaysysError, match="ambiguous"):
        load_run(storage, "train-")


def test_failure_inside_with_marks_the_run_failed(storage):
    run = start_run(storage, WITH_WANDB, "proj", "tune", {"lr": 10.0})
    with pytest.raises(ValueError, match="diverged"), run:
        run.log({"loss": float("nan")})
        raise ValueError("loss diverged")
    record = load_run(storage, run.run_id)
    assert record["status"] == "failed" and record["error"] == "ValueError: loss diverged"
    exits = of_type(finished_records(wandb_log_of(storage, run.run_id)), "exit")
    assert [e.exit_code for e in exits] == [1]


def test_wandb_offline_run_holds_config_summary_and_model_reference(storage, tmp_path):
    model_dir = tmp_path / "models" / "churn" / "3"
    model_dir.mkdir(parents=True)
    (model_dir / "model.safetensors").write_bytes(b"weights" * 1000)
    started = time.perf_counter()
    run = start_run(storage, WITH_WANDB, "proj", "train", {"lr": 0.01, "hidden": [8]}, "ds-v1")
    init_s = time.perf_counter() - started
    run.log({"loss": 0.7, "epoch": 0})
    run.log({"loss": 0.4, "epoch": 1})
    run.summary({"test_auc": 0.88})
    run.reference_model("churn", 3, model_dir.as_uri())
    run.finish()
    assert init_s < 20, f"wandb.init took {init_s:.1f}s offline"

    record = load_run(storage, run.run_id)
    assert record["wandb"]["mode"] == "offline"
    assert record["wandb"]["path"].endswith(f"tracking-test/{run.run_id}")
    wandb_file = wandb_log_of(storage, run.run_id)
    assert wandb_file.parent.name.startswith("offline-run-")
    records = finished_records(wandb_file)
    run_record, tagged = of_type(records, "run")  # the start, then the model-version tag added at registration
    config = {item.key: json.loads(item.value_json) for item in run_record.config.update}
    assert config["lr"] == 0.01 and config["hidden"] == [8]
    assert run_record.project == "tracking-test" and run_record.job_type == "train"
    assert run_record.display_name == run.run_id and run_record.run_group == "training"
    assert list(tagged.tags) == ["model:churn:v3"] == record["tags"]
    summary = wandb_summary(records)
    assert summary["test_auc"] == 0.88 and summary["loss"] == 0.4
    history = [{i.nested_key[0]: json.loads(i.value_json) for i in h.item}
               for h in of_type(records, "history")]
    assert [(h["_step"], h["loss"]) for h in history] == [(0, 0.7), (1, 0.4)]
    (artifact,) = of_type(records, "artifact")
    assert artifact.type == "model" and artifact.name == "churn"
    assert json.loads(artifact.metadata)["uri"] == model_dir.as_uri()
    refs = [entry.ref for entry in artifact.manifest.contents]
    assert refs and all(ref.startswith(model_dir.as_uri()) for ref in refs)
    assert not list(wandb_file.parent.rglob("model.safetensors")), "weights were copied"


def test_remote_root_rewrites_metrics_and_keeps_wandb_outside(monkeypatch):
    from raysys.modeling import tracking

    monkeypatch.setattr(tracking, "REMOTE_FLUSH_EVERY", 2)
    storage = Storage.open("mock:///store")
    run = start_run(storage, WITH_WANDB, "proj", "train", {"lr": 0.1})
    for step in range(3):
        run.log({"loss": float(step)})
    flushed = storage.read_bytes("runs", run.run_id, "metrics.jsonl").decode().splitlines()
    assert len(flushed) == 2  # rewritten at the second step; the third waits for the next flush
    run.reference_model("churn", 1, "s3://bucket/models/churn/1")
    run.finish()
    record = load_run(storage, run.run_id)
    assert [r["loss"] for r in record["history"]] == [0.0, 1.0, 2.0]
    assert record["model"]["uri"] == "s3://bucket/models/churn/1"
    wandb_dir = Path(record["wandb"]["dir"])
    assert wandb_dir.is_dir() and list(wandb_dir.glob("*.wandb"))
    (artifact,) = of_type(finished_records(next(wandb_dir.glob("*.wandb"))), "artifact")
    assert json.loads(artifact.metadata)["uri"] == "s3://bucket/models/churn/1"


def test_wandb_disabled_in_config_writes_only_the_local_record(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from raysys.config import TrackingConfig
        from raysys.modeling.tracking import start_run
        from raysys.storage import Storage
        storage = Storage.open({str(tmp_path / "store")!r})
        with start_run(storage, TrackingConfig(wandb=False), "p", "train", {{}}) as run:
            run.log({{"loss": 1.0}})
            run.reference_model("m", 1, "s3://bucket/m/1")
        print(run.run_id, "wandb" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, check=True)
    run_id, imported = result.stdout.split()
    assert imported == "False"
    assert sorted(p.name for p in (tmp_path / "store" / "runs" / run_id).iterdir()) == [
        "metrics.jsonl", "run.json"]


def test_is_rank_zero_outside_ray_train():
    assert is_rank_zero() is True


def test_invalid_kind_is_refused(storage):
    with pytest.raises(RaysysError, match="run kind"):
        start_run(storage, LOCAL_ONLY, "proj", "../escape", {})


@pytest.mark.slow
def test_is_rank_zero_inside_ray_train_workers(ray_session, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    def train_fn(config: dict) -> None:
        import ray.train

        from raysys.modeling.tracking import is_rank_zero as rank_zero

        rank = ray.train.get_context().get_world_rank()
        Path(config["out"], f"rank{rank}").write_text(str(rank_zero()))

    trainer = DataParallelTrainer(
        train_fn, train_loop_config={"out": str(tmp_path)},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=str(tmp_path / "ray"), name="ranks"),
    )
    trainer.fit()
    assert (tmp_path / "rank0").read_text() == "True"
    assert (tmp_path / "rank1").read_text() == "False"


def test_secrets_of_the_config_reach_neither_run_json_nor_wandb(storage):
    from raysys.config import parse_config

    password, key = f"pw-{uuid.uuid4().hex}", f"key-{uuid.uuid4().hex}"
    url = f"postgresql://etl:{password}@db.internal:5432/shop?sslmode=require&sslkey={key}"
    source = {"kind": "sql", "url": url, "table": "t"}
    config = parse_config({"data": {"name": "orders", "source": source}}).model_dump(mode="json")
    with pytest.raises(ValueError), start_run(storage, WITH_WANDB, "p", "train", config) as run:
        run.log({"loss": 0.5})
        raise ValueError(f"lost the connection to {url}")
    finished_records(wandb_log_of(storage, run.run_id))  # W&B has written and closed its files

    record = load_run(storage, run.run_id)
    shown = "postgresql://etl:***@db.internal:5432/shop?sslmode=require&sslkey=***"
    assert record["config"]["data"]["source"]["url"] == shown
    assert record["error"] == f"ValueError: lost the connection to {shown}"
    files = [p for p in Path(storage.path("runs")).rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and any(p.name == "run.json" for p in files)
    leaks = [str(p) for p in files if any(s.encode() in p.read_bytes() for s in (password, key))]
    assert leaks == []


def test_a_run_is_listed_before_wandb_starts(storage, monkeypatch):
    """W&B's start can take up to its init timeout on a busy machine; the run is on record before it."""
    from raysys.modeling.tracking import Run

    listed_while_starting = []
    start_wandb = Run._start_wandb

    def starting(self, *args):
        listed_while_starting.append([(r["run_id"], r["tags"]) for r in list_runs(self.storage)])
        start_wandb(self, *args)

    monkeypatch.setattr(Run, "_start_wandb", starting)
    with start_run(storage, WITH_WANDB, "proj", "monitor", {}, tags=["model:m:v1"]) as run:
        pass
    assert listed_while_starting == [[(run.run_id, ["model:m:v1"])]]
    assert load_run(storage, run.run_id)["wandb"]["mode"] == "offline"  # and W&B's part is recorded after


def test_runs_a_dead_process_left_running_are_marked_interrupted_and_no_other(storage):
    """A run records its owner; interrupt_runs ends only running runs of that kind with that tag."""
    dead = start_run(storage, LOCAL_ONLY, "proj", "monitor", {}, tags=["app:a"])  # never finished
    done = start_run(storage, LOCAL_ONLY, "proj", "monitor", {}, tags=["app:a"])
    done.finish()
    other_app = start_run(storage, LOCAL_ONLY, "proj", "monitor", {}, tags=["app:b"])
    other_kind = start_run(storage, LOCAL_ONLY, "proj", "train", {}, tags=["app:a"])
    owner = load_run(storage, dead.run_id)["owner"]
    assert (owner["host"], owner["pid"], owner["started"]) == (socket.gethostname(), os.getpid(), process_start(os.getpid()))

    assert interrupt_runs(storage, "monitor", "app:a", "the monitor died") == [dead.run_id]
    record = load_run(storage, dead.run_id)
    assert record["status"] == "interrupted" and record["error"] == "the monitor died" and record["ended_at"]
    statuses = {r["run_id"]: r["status"] for r in list_runs(storage)}
    assert statuses == {dead.run_id: "interrupted", done.run_id: "finished",
                        other_app.run_id: "running", other_kind.run_id: "running"}
    assert interrupt_runs(storage, "monitor", "app:a", "again") == []  # already ended: left as it is


def test_a_run_whose_process_was_killed_reads_as_interrupted_on_its_host(storage):
    """A driver SIGKILLed mid-run cannot finish its record; readers on its host see it interrupted."""
    script = textwrap.dedent(f"""
        import os, signal
        from raysys.config import TrackingConfig
        from raysys.modeling.tracking import start_run
        from raysys.storage import Storage
        run = start_run(Storage.open({str(storage.uri)!r}), TrackingConfig(wandb=False), "proj", "train", {{}})
        run.log({{"loss": 1.0}})
        print(run.run_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -9, killed.stderr
    run_id = killed.stdout.strip()
    alive = start_run(storage, LOCAL_ONLY, "proj", "train", {})  # this process: still running
    statuses = {r["run_id"]: r["status"] for r in list_runs(storage)}
    assert statuses == {run_id: "interrupted", alive.run_id: "running"}
    loaded = load_run(storage, run_id)
    assert loaded["status"] == "interrupted" and "ended without finishing" in loaded["error"]
    assert loaded["history"] == [{"step": 0, "loss": 1.0}]
    assert storage.read_json("runs", run_id, "run.json")["status"] == "running"  # reading rewrites nothing


def test_only_a_running_record_whose_owner_is_gone_reads_as_interrupted():
    record = {"status": "running", "error": None, "owner": {"host": "a", "pid": 7}}
    def status(value):
        return lambda owner: value
    assert as_read(record, status("gone"))["status"] == "interrupted"
    assert as_read(record, status("running")) is record
    assert as_read(record, status("unknown")) is record  # another host's process cannot be checked from here
    assert as_read({**record, "status": "finished"}, status("gone"))["status"] == "finished"
    assert as_read({"status": "running"}, status("gone"))["status"] == "running"  # a record from before owners
