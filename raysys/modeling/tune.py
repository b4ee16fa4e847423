"""Hyperparameter search: Ray Tune (ASHA, Optuna) over trials that each run a Ray Train job.

In Ray Train V2 a ``Tuner`` no longer takes a trainer: each trial is a function trainable that
runs a ``TorchTrainer`` and forwards its per-epoch reports to Tune (``TuneReportCallback``), so
ASHA can stop weak trials early. The space names ``model.*`` and ``train.*`` hyperparameters; the
Ray Train scaling (``train.num_workers`` and the like) is not searched. Every trial trains with
``train.num_workers`` workers, as the final run does (each worker sees ``batch_size`` rows a step,
so the worker count changes the effective batch and the best learning rate with it); the
workers of concurrent trials share the cluster's CPUs.

ASHA's ``max_t`` is one more than the epochs, so a trial that trains to the end finishes on its
own. When Tune ends a trial, its Train controller dies with it; Ray Train's detached
placement-group cleaner then frees the run's CPUs, which needs the State API (the dashboard),
so :func:`raysys.runtime.ensure_ray` starts Ray with it (else ray-project/ray#54305: the CPUs
stay reserved and the next trial waits forever).
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from dataclasses import asdict, replace
from typing import Any

from raysys.config import ParamSpace, TrainConfig, TuneConfig
from raysys.modeling.artifacts import TrainSpec
from raysys.modeling.train import CPU_RESERVED_FOR_DATA, worker_resources

TRIAL_DRIVER_CPUS = 0.05


def search_space(space: dict[str, ParamSpace]) -> dict[str, Any]:
    """The config's space as Ray Tune sampling objects."""
    from ray import tune

    samplers = {
        "uniform": lambda p: tune.uniform(p.low, p.high),
        "loguniform": lambda p: tune.loguniform(p.low, p.high),
        "randint": lambda p: tune.randint(int(p.low), int(p.high)),
        "choice": lambda p: tune.choice(p.values),
    }
    return {key: samplers[param.type](param) for key, param in space.items()}


def apply_params(spec: TrainSpec, params: dict[str, Any]) -> TrainSpec:
    """A spec with ``model.x`` / ``train.y`` values replaced by a trial's choices."""
    model, train = dict(spec.model), dict(spec.train)
    for key, value in params.items():
        section, _, name = key.partition(".")
        (model if section == "model" else train)[name] = value
    return replace(spec, model=model, train=train)


def trial_cpus(cluster_cpus: float, concurrent: int) -> float:
    """CPUs for each trial's training workers together, so that every concurrent trial fits."""
    return max(0.1, (cluster_cpus - CPU_RESERVED_FOR_DATA) / concurrent - TRIAL_DRIVER_CPUS)


def trial_scaling(train: dict[str, Any], cluster_cpus: float, concurrent: int) -> dict[str, Any]:
    """A trial's Ray Train scaling: ``train.num_workers`` workers sharing the trial's CPUs."""
    workers = int(train["num_workers"])
    return {"num_workers": workers, "resources_per_worker": {"CPU": trial_cpus(cluster_cpus, concurrent) / workers}}


def run_trial(params: dict[str, Any], spec: dict[str, Any], datasets: dict[str, Any], scaling: dict[str, Any],
              storage_path: str) -> None:
    """One Tune trial: a TorchTrainer (``scaling``) whose reports flow to Tune."""
    from ray import tune
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from raysys.modeling.train import controller_poll, train_loop

    trial_spec = apply_params(TrainSpec(**spec), params)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"spec": asdict(trial_spec)},
        scaling_config=ScalingConfig(**scaling),
        run_config=RunConfig(name=f"trial-{tune.get_context().get_trial_id()}", storage_path=storage_path,
                             callbacks=[TuneReportCallback()]),
        datasets=datasets,
    )
    with controller_poll(trial_spec.train["poll_s"]):  # in the trial's process: the driver's setting is not here
        trainer.fit()


def run_search(cfg: TuneConfig, spec: TrainSpec, datasets: dict[str, Any], storage_path: str, name: str) -> dict[str, Any]:
    """Run the search; return the best trial's parameters and metrics, and every trial's."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    if not cfg.space:
        from raysys.errors import ConfigError

        raise ConfigError("tune.space: empty; name at least one model.* or train.* setting to search")
    cluster = ray.cluster_resources()
    worker_resources(TrainConfig(**spec.train), cluster)  # the final run's workers must fit: fail before searching
    cpus = cluster.get("CPU", 1)
    concurrent = max(1, min(cfg.max_concurrent, int(cpus - CPU_RESERVED_FOR_DATA) or 1))
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, spec=asdict(spec), datasets=datasets,
                             scaling=trial_scaling(spec.train, cpus, concurrent), storage_path=storage_path),
        {"CPU": TRIAL_DRIVER_CPUS},
    )
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(cfg.space),
        tune_config=tune.TuneConfig(
            metric=cfg.metric, mode=cfg.mode, num_samples=cfg.num_samples, max_concurrent_trials=concurrent,
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=spec.train["epochs"] + 1,
                                    grace_period=cfg.grace_period, reduction_factor=cfg.reduction_factor),
            search_alg=_searcher(cfg),
        ),
        run_config=tune.RunConfig(name=name, storage_path=storage_path, verbose=0),
    )
    with contextlib.redirect_stdout(sys.stderr):  # Tune's banner must not mix into --json output
        grid = tuner.fit()
    best = grid.get_best_result(metric=cfg.metric, mode=cfg.mode)
    trials = [{"params": r.config, "metrics": _numbers(r.metrics)} for r in grid if r.metrics]
    return {"best_params": best.config, "best_metrics": _numbers(best.metrics), "trials": trials,
            "errors": sum(1 for r in grid if r.error)}


def _searcher(cfg: TuneConfig):
    if cfg.search != "optuna":
        return None
    from ray.tune.search.optuna import OptunaSearch

    # list-valued choices (e.g. model.hidden) work; Optuna only warns that they can't be persisted
    warnings.filterwarnings("ignore", message="Choices for a categorical distribution", category=UserWarning)
    return OptunaSearch(seed=0)


TUNE_BOOKKEEPING = {"timestamp", "pid", "time_this_iter_s", "time_total_s", "time_since_restore",
                    "iterations_since_restore"}


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The trial's reported metrics (and ``training_iteration``: epochs run before ASHA stopped it)."""
    return {k: v for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in TUNE_BOOKKEEPING}
