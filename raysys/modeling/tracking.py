"""Run tracking: a local record of every train/tune/evaluate run, mirrored to W&B when enabled.

Each run writes ``runs/<run_id>/run.json`` (kind, status, config, tags, dataset version, times,
summary, model reference, W&B path) and ``runs/<run_id>/metrics.jsonl`` (one JSON object per
logged step); the config, tags and error are recorded there and in W&B with their secrets
masked (:mod:`raysys.secrets`). Files are written through :class:`~raysys.storage.Storage`.
On a local root each step is appended to ``metrics.jsonl`` as it is logged; on a remote root
(s3://, gs://) the history is kept in memory and the whole file is rewritten on each flush
(every ``REMOTE_FLUSH_EVERY`` steps, on ``summary``/``reference_model`` and at the end).

W&B (``tracking.wandb``) is imported only when enabled. It runs online only when
``WANDB_API_KEY`` is set and ``WANDB_MODE`` is not offline/disabled, so it never prompts for a
login. Its files go to ``<root>/runs/<run_id>/wandb/`` on a local root (offline runs as
``offline-run-<time>-<run_id>/run-<run_id>.wandb``, for ``wandb sync``), else to a temporary
directory that is kept. If W&B fails to start, a warning is logged and the local record goes on.
Every run of one project logs to one W&B project, grouped by stage (:data:`GROUPS`; the monitor's
runs are ``production``), named by run id, and a run about a model version carries its
:func:`model_tag`, so a workspace filtered on that tag shows the version from training to production.

Callers create runs on rank 0 only (:func:`is_rank_zero`), never in every Ray Train worker.
A run ends ``finished`` or ``failed``. A run whose process died before it could say so reads as
``interrupted``: when listed or loaded on the host it ran on and its pid is gone (the record names
its ``owner``, host and pid), and once the process that takes its place marks it so
(:func:`interrupt_runs`, the monitor's, which may run on another node).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs

from raysys import staging
from raysys.config import TrackingConfig
from raysys.errors import NotFound, RaysysError
from raysys.secrets import mask_config, mask_text, mask_values
from raysys.storage import Storage

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from typing_extensions import Self

logger = logging.getLogger(__name__)

RUNS_DIR = "runs"
REMOTE_FLUSH_EVERY = 50
WANDB_INIT_TIMEOUT_S = 60.0
_KIND = re.compile(r"^[a-z][a-z0-9_-]*$")
GROUPS = {"train": "training", "tune": "tuning", "evaluate": "evaluation", "crossval": "evaluation"}
"""The W&B group of each run kind (the monitor's runs are group ``production``)."""


def model_tag(name: str, version: int) -> str:
    """The tag of every run about one model version, training to production: ``model:<name>:v<N>``."""
    return f"model:{name}:v{int(version)}"


def is_rank_zero() -> bool:
    """True unless this is a Ray Train worker whose world rank is not 0."""
    if "ray.train" not in sys.modules:  # a Train worker has imported it already
        return True
    import ray.train

    try:
        return ray.train.get_context().get_world_rank() == 0
    except (RuntimeError, DeprecationWarning):  # not in a Train worker (driver, Tune trial)
        return True


def wandb_mode() -> str:
    """The W&B mode: an explicit offline/disabled WANDB_MODE, else online only with an API key."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode in ("offline", "dryrun", "disabled"):
        return "disabled" if mode == "disabled" else "offline"
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def _plain(value: Any) -> Any:
    """A JSON-friendly value: numpy/torch scalars become Python numbers."""
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", 0) == 0 else value


class Run:
    """One tracked run; use as a context manager (an exception marks it failed)."""

    def __init__(self, storage: Storage, kind: str, config: dict, record: dict) -> None:
        """Hold the record; use :func:`start_run` to create a run."""
        self.storage, self.kind, self.config, self.record = storage, kind, config, record
        self.run_id: str = record["run_id"]
        self.history: list[dict] = []
        self.local = isinstance(storage.fs, pafs.LocalFileSystem)
        self._file, self._wandb, self._unflushed = None, None, 0
        if self.local:
            path = Path(storage.path(RUNS_DIR, self.run_id, "metrics.jsonl"))
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")

    def __enter__(self) -> Self:
        """Enter the run."""
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        """Finish the run: failed with the error message if the block raised (it propagates)."""
        if exc is not None:
            self.finish("failed", error=f"{type(exc).__name__}: {exc}")
        else:
            self.finish()
        return False

    def log(self, metrics: dict, step: int | None = None) -> None:
        """Record one step of metrics (step defaults to the previous step + 1)."""
        if step is None:
            step = self.history[-1]["step"] + 1 if self.history else 0
        values = {k: _plain(v) for k, v in metrics.items() if k != "step"}
        row = {"step": int(step), **values}
        self.history.append(row)
        self.record["summary"].update(values)
        if self._file is not None:
            self._file.write(json.dumps(row, default=str) + "\n")
            self._file.flush()
        else:
            self._unflushed += 1
            if self._unflushed >= REMOTE_FLUSH_EVERY:
                self.flush()
        if self._wandb is not None:
            self._wandb.log(values, step=int(step))

    def summary(self, metrics: dict) -> None:
        """Set final metrics in the run's summary."""
        values = {k: _plain(v) for k, v in metrics.items()}
        self.record["summary"].update(values)
        if self._wandb is not None:
            self._wandb.summary.update(values)
        self.flush()

    def add_tags(self, *tags: str) -> None:
        """Add tags (in run.json and W&B) that the run does not have yet."""
        new = [tag for tag in mask_values(list(tags)) if tag not in self.record["tags"]]
        if not new:
            return
        self.record["tags"] = [*self.record["tags"], *new]
        if self._wandb is not None:
            self._wandb.tags = tuple(self.record["tags"])
        self.flush()

    def reference_model(self, name: str, version: int, uri: str) -> None:
        """Record the model version this run produced or used (a W&B artifact reference and its tag)."""
        self.add_tags(model_tag(name, version))
        self.record["model"] = {"name": name, "version": int(version), "uri": uri}
        if self._wandb is not None:  # an artifact *reference*: the weights are not uploaded
            import wandb

            metadata = self.record["model"]
            safe = re.sub(r"[^A-Za-z0-9_.-]", "-", name)
            artifact = wandb.Artifact(safe, type="model", metadata=metadata)
            ref = uri if "://" in uri else Path(uri).resolve().as_uri()
            try:  # s3/gs need boto3 / google-cloud-storage; checksum=False reads nothing
                artifact.add_reference(ref, name="model", checksum=False)
            except Exception as error:  # noqa: BLE001 - keep a metadata-only artifact
                logger.warning("W&B cannot reference %s (%s); logging metadata only", ref, error)
            self._wandb.log_artifact(artifact, aliases=[f"v{version}", "latest"])
        self.flush()

    def flush(self) -> None:
        """Write run.json, and metrics.jsonl on a remote root."""
        if not self.local:
            body = "".join(json.dumps(r, default=str) + "\n" for r in self.history)
            self.storage.write_bytes(body.encode(), RUNS_DIR, self.run_id, "metrics.jsonl")
            self._unflushed = 0
        self.storage.write_json(self.record, RUNS_DIR, self.run_id, "run.json")

    def finish(self, status: str = "finished", error: str | None = None) -> None:
        """End the run with a status (finished or failed); a second call does nothing."""
        if self.record["status"] != "running":
            return
        ended = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self.record.update(status=status, ended_at=ended, error=error and mask_text(error))
        if self._wandb is not None:
            try:
                self._wandb.finish(exit_code=0 if status == "finished" else 1)
            except Exception as wandb_error:  # noqa: BLE001 - the local record must be written
                logger.warning("W&B did not finish cleanly: %s", wandb_error)
        self.flush()
        if self._file is not None:
            self._file.close()

    def _start_wandb(self, tracking: TrackingConfig, project: str, group: str) -> None:
        """Start the W&B run (offline unless an API key is set); never prompts or hangs."""
        import wandb

        root = self.storage.path(RUNS_DIR, self.run_id) if self.local else tempfile.mkdtemp("-wandb")
        mode = wandb_mode()
        settings = wandb.Settings(init_timeout=WANDB_INIT_TIMEOUT_S, silent=True, reinit="create_new")
        try:
            self._wandb = wandb.init(
                project=tracking.project or project, entity=tracking.entity,
                config=self.config, job_type=self.kind, group=group, name=self.run_id, id=self.run_id,
                tags=self.record["tags"] or None, dir=root, mode=mode, settings=settings,
            )
        except Exception as error:  # noqa: BLE001 - tracking must not stop the work
            logger.warning("W&B did not start (%s); keeping the local record only",
                           mask_text(str(error)))
            self.record["wandb"] = {"mode": mode, "error": mask_text(str(error))}
            return
        run_dir = str(Path(self._wandb.dir).parent) if mode != "disabled" else None
        self.record["wandb"] = {"mode": mode, "path": str(self._wandb.path), "dir": run_dir}


def start_run(
    storage: Storage, tracking: TrackingConfig, project: str, kind: str, config: dict,
    dataset_version: str | None = None, tags: list[str] | None = None, group: str | None = None,
) -> Run:
    """Start a tracked run (call on rank 0 only) and write its first record.

    ``group`` is its W&B group (default: :data:`GROUPS` by kind), so one W&B project shows each
    model from training (``training``, ``tuning``, ``evaluation``) to ``production``.

    The config is recorded (in ``run.json`` and W&B) with its secrets masked
    (:func:`raysys.secrets.mask_config`), so every caller is covered.
    """
    if not _KIND.match(kind):
        raise RaysysError(f"run kind '{kind}' must be lowercase letters, digits, '-' or '_'")
    started = datetime.now(timezone.utc)
    run_id = f"{kind}-{started:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    config = mask_config(config)
    record = {
        "run_id": run_id, "kind": kind, "project": project, "group": group or GROUPS.get(kind, kind),
        "status": "running",
        "config": config, "tags": mask_values(list(tags or [])), "dataset_version": dataset_version,
        "started_at": started.isoformat(timespec="milliseconds"), "ended_at": None,
        "summary": {}, "model": None, "error": None, "wandb": None,
        "owner": staging.owner_record(),  # pid, host and start: a reused pid is not the owner
    }
    run = Run(storage, kind, config, record)
    run.flush()  # listed at once: W&B's start may take up to WANDB_INIT_TIMEOUT_S on a busy machine
    if tracking.wandb:
        run._start_wandb(tracking, project, record["group"])
        run.flush()
    return run


def interrupt_runs(storage: Storage, kind: str, tag: str, reason: str) -> list[str]:
    """Mark the running runs of ``kind`` tagged ``tag`` interrupted (their process is gone); their ids.

    Only a caller that knows no live process owns such a run may call it (the monitor actor of an
    app, of which there is one at a time).
    """
    ended = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    interrupted = []
    for name in _run_ids(storage):
        if not name.startswith(f"{kind}-"):
            continue
        record = storage.read_json(RUNS_DIR, name, "run.json")
        if record.get("status") == "running" and tag in record.get("tags", ()):
            record.update(status="interrupted", ended_at=ended, error=mask_text(reason))
            storage.write_json(record, RUNS_DIR, name, "run.json")
            interrupted.append(name)
    return interrupted


def as_read(record: dict, owner_status: Callable[[Any], str]) -> dict:
    """The record as a reader sees it: ``running`` with its owner ``gone`` (:func:`staging.owner_status`) is ``interrupted``."""
    owner = record.get("owner")
    if record.get("status") != "running" or owner is None or owner_status(owner) != "gone":
        return record
    return {**record, "status": "interrupted", "error": record.get("error") or
            f"its process (pid {owner.get('pid')} on {owner.get('host')}) ended without finishing the run"}


def _run_ids(storage: Storage) -> list[str]:
    """The runs on record (a directory with its ``run.json``)."""
    return [name for name in storage.list_dirs(RUNS_DIR) if storage.exists(RUNS_DIR, name, "run.json")]


def _read(storage: Storage, run_id: str) -> dict:
    return as_read(storage.read_json(RUNS_DIR, run_id, "run.json"), staging.owner_status)


def _short(record: dict) -> dict:
    """The short form of a run record, for listings."""
    keys = ("run_id", "kind", "status", "started_at", "ended_at", "dataset_version", "tags")
    model = record.get("model") or {}
    return {**{k: record.get(k) for k in keys}, "model": model.get("name") and
            f"{model['name']}:v{model['version']}"}


def list_runs(storage: Storage) -> list[dict]:
    """All runs, newest first, in short form."""
    records = [_read(storage, name) for name in _run_ids(storage)]
    records.sort(key=lambda r: (r.get("started_at") or "", r["run_id"]), reverse=True)
    return [_short(r) for r in records]


def resolve_run_id(storage: Storage, run_id: str) -> str:
    """The full run id for an id or a unique prefix of one."""
    names = _run_ids(storage)
    if run_id in names:
        return run_id
    matches = [n for n in names if run_id and n.startswith(run_id)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise RaysysError(f"run id prefix '{run_id}' is ambiguous: {', '.join(matches[:5])}")
    raise NotFound(f"no run '{run_id}' under {storage.uri}/{RUNS_DIR}")


def load_run(storage: Storage, run_id: str) -> dict:
    """A run's record plus its metrics history (``history``), by id or unique prefix."""
    run_id = resolve_run_id(storage, run_id)
    record = _read(storage, run_id)
    lines = storage.read_bytes(RUNS_DIR, run_id, "metrics.jsonl").decode().splitlines()
    return {**record, "history": [json.loads(line) for line in lines if line.strip()]}
