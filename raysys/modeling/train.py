"""Distributed training: Ray Train (V2) ``TorchTrainer`` running PyTorch Lightning.

The driver prepares a picklable :class:`TrainSpec` and streams the transformed train/val splits
to the workers (``ray.train.get_dataset_shard``); it never materializes the table. Workers
checkpoint every epoch under the storage root; after a worker dies, Ray Train restarts the
group (``train.max_failures``) and the loop resumes from the last checkpoint. Rank 0 returns
the metric history and the final weights (safetensors bytes) as the run's return value.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L

from raysys.config import TrainConfig
from raysys.errors import RaysysError
from raysys.modeling.artifacts import TrainSpec, encode_labels, state_dict_to_bytes

CPU_RESERVED_FOR_DATA = 0.5
DATA_TASK_CPUS = 0.25
CHUNK_BATCHES = 64  # training batches fetched from Ray Data at once, sliced in the worker
POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"  # read by Ray Train when a run starts, passed on to its controller


@dataclass
class TrainOutput:
    """What a finished training run hands back to the driver."""

    weights: bytes
    history: list[dict[str, float]]
    metrics: dict[str, float]
    checkpoint_path: str | None
    resumed_from_checkpoint: bool


def worker_resources(cfg: TrainConfig, cluster: dict[str, float]) -> dict[str, float]:
    """Resources per worker that fit the cluster, leaving room for the data pipeline.

    Raises a clear error instead of letting Ray wait forever for resources that don't exist.
    """
    wanted = dict(cfg.resources_per_worker)
    if cfg.use_gpu:
        wanted.setdefault("GPU", 1.0)
    for name, amount in wanted.items():
        have = cluster.get(name, 0.0)
        if amount * cfg.num_workers > have:
            raise RaysysError(
                f"train: {cfg.num_workers} workers × {amount:g} {name} = {amount * cfg.num_workers:g} {name}, "
                f"but the cluster has {have:g}; lower train.num_workers or train.resources_per_worker"
            )
    cpus = wanted.get("CPU", 1.0)
    spare = cluster.get("CPU", 0.0) - cpus * cfg.num_workers
    if spare < CPU_RESERVED_FOR_DATA:
        wanted["CPU"] = max(0.1, (cluster.get("CPU", 0.0) - CPU_RESERVED_FOR_DATA) / cfg.num_workers)
    return wanted


def train_loop(config: dict[str, Any]) -> dict[str, Any] | None:
    """The per-worker loop: Lightning with Ray's DDP strategy, fed by dataset shards."""
    import ray.train
    from ray.train.lightning import (
        RayDDPStrategy,
        RayLightningEnvironment,
        RayTrainReportCallback,
        prepare_trainer,
    )

    from raysys.modeling.module import TabularModule, make_callbacks, seed_everything

    spec = TrainSpec(**config["spec"])
    seed_everything(spec.train["seed"])
    module = TabularModule(spec.model, spec.train, spec.inputs, spec.task, spec.num_classes,
                           spec.target_mean, spec.target_std)
    history = HistoryCallback()
    distributed = ray.train.get_context().get_world_size() > 1
    trainer = L.Trainer(
        max_epochs=spec.train["epochs"],
        max_steps=spec.train["max_steps"] or -1,
        accelerator="auto",
        devices="auto",
        # one worker needs no gradient all-reduce: Lightning's single-device loop is ~15 % faster
        strategy=RayDDPStrategy() if distributed else "auto",
        plugins=[RayLightningEnvironment()] if distributed else None,
        callbacks=[*make_callbacks(spec.train), history, RayTrainReportCallback()],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        deterministic=True,
        num_sanity_val_steps=0,
    )
    if distributed:
        trainer = prepare_trainer(trainer)
    checkpoint = ray.train.get_checkpoint()
    resume_path = _lightning_checkpoint(checkpoint)
    _maybe_fail_for_test(spec, resume_path)
    trainer.fit(module, train_dataloaders=ShardBatches("train", spec, shuffle=True),
                val_dataloaders=ShardBatches("val", spec, shuffle=False), ckpt_path=resume_path)
    if ray.train.get_context().get_world_rank() != 0:
        return None
    return {
        "weights": state_dict_to_bytes(module.model.state_dict()),
        "history": history.rows,
        "resumed": resume_path is not None,
    }


def _lightning_checkpoint(checkpoint: Any) -> str | None:
    if checkpoint is None:
        return None
    local = tempfile.mkdtemp(prefix="raysys-resume-")
    path = checkpoint.to_directory(local)
    candidate = os.path.join(path, "checkpoint.ckpt")
    return candidate if os.path.exists(candidate) else None


def _maybe_fail_for_test(spec: TrainSpec, resume_path: str | None) -> None:
    """Write this worker's pid for fault-injection tests (``extra.pid_file``)."""
    pid_file = spec.extra.get("pid_file")
    if pid_file:
        with open(pid_file, "a") as handle:
            handle.write(f"{os.getpid()} {'resumed' if resume_path else 'fresh'}\n")


class HistoryCallback(L.Callback):
    """Collects the epoch-end metrics Lightning computed (on every rank; rank 0's are returned)."""

    def __init__(self):
        self.rows: list[dict[str, float]] = []

    def state_dict(self) -> dict[str, Any]:
        """Saved in Lightning checkpoints, so a resumed run keeps its history."""
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the history from a checkpoint."""
        self.rows = list(state_dict["rows"])

    def on_validation_epoch_end(self, trainer, module) -> None:
        """Record the metrics of the finished epoch."""
        if trainer.sanity_checking:
            return
        row = {k: float(v) for k, v in trainer.callback_metrics.items()}
        row.update(epoch=int(trainer.current_epoch), step=int(trainer.global_step))
        self.rows.append(row)


class ShardBatches:
    """A re-iterable over this worker's shard of a split, as tensor batches.

    Ray Data hands over chunks of ``CHUNK_BATCHES`` batches; each chunk becomes tensors once
    (labels encoded, features stacked) and is cut into ``batch_size`` slices in the worker, in a
    seeded random order per epoch when shuffling. Per-step work is then only tensor indexing.
    """

    def __init__(self, split: str, spec: TrainSpec, shuffle: bool):
        import ray.train

        self.shard = ray.train.get_dataset_shard(split)
        self.spec, self.shuffle, self.epoch = spec, shuffle, 0

    def __iter__(self):
        import numpy as np
        import torch

        from raysys.modeling.module import batch_from_frame

        spec, size = self.spec, self.spec.train["batch_size"]
        rng = np.random.default_rng(spec.train["seed"] + self.epoch) if self.shuffle else None
        self.epoch += 1
        for frame in self.shard.iter_batches(batch_size=size * CHUNK_BATCHES, batch_format="pandas"):
            frame[spec.label] = encode_labels(frame[spec.label], spec.classes)
            chunk = batch_from_frame(frame, _inputs(spec), spec.label, spec.task)
            rows = len(frame)
            order = torch.from_numpy(rng.permutation(rows)) if rng is not None else torch.arange(rows)
            for start in range(0, rows, size):
                index = order[start:start + size]
                yield {name: tensor[index] for name, tensor in chunk.items()}


def _inputs(spec: TrainSpec):
    from raysys.modeling.models import ModelInputs

    return ModelInputs(**spec.inputs)


def run_trainer(spec: TrainSpec, datasets: dict[str, Any], cfg: TrainConfig, storage_path: str,
                run_name: str, storage_filesystem: Any = None) -> TrainOutput:
    """Run a TorchTrainer over the datasets and return rank 0's output."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = worker_resources(cfg, ray.cluster_resources())
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"spec": asdict(spec)},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
        datasets=datasets,
    )
    with _sigint_restored(), controller_poll(cfg.poll_s):
        result = trainer.fit()
    if result.error or not result.return_value:
        raise RaysysError(f"training failed: {_first_line(result.error)}")
    output = result.return_value
    return TrainOutput(
        weights=output["weights"],
        history=output["history"],
        metrics=output["history"][-1] if output["history"] else {},
        checkpoint_path=result.checkpoint.path if result.checkpoint else None,
        resumed_from_checkpoint=output["resumed"],
    )


@contextlib.contextmanager
def controller_poll(seconds: float) -> Iterator[None]:
    """Let the run's controller poll its workers every ``seconds`` (``train.poll_s``).

    A worker's ``ray.train.report`` blocks until the controller's next poll takes the result, so
    with Ray's default 2 s every epoch costs at least 2 s (a 14-epoch run spent 28 s waiting). Ray
    reads the variable once, when ``fit`` starts its controller; an operator's value is kept.
    """
    if POLL_ENV in os.environ:
        yield
        return
    os.environ[POLL_ENV] = f"{seconds:g}"
    try:
        yield
    finally:
        os.environ.pop(POLL_ENV, None)


@contextlib.contextmanager
def _sigint_restored() -> Iterator[None]:
    """Put back the SIGINT handler that ``trainer.fit()`` replaces in the main thread.

    Ray Train's handler closes over the run's controller actor, so the finished run's controller
    (and what it holds) stays alive until the next ``fit`` in the main thread replaces the
    handler, which may be never: Tune trials run ``fit`` off the main thread.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def _first_line(error: BaseException | None) -> str:
    return str(error).strip().splitlines()[0] if error else "no result from rank 0"
