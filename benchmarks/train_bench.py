"""Training benchmark: raysys (Ray Train V2 + Lightning, 1 and 2 workers) vs plain Lightning.

Both sides train the same :class:`raysys.modeling.module.TabularModule` (same model config,
batch size, lr, seed, ``deterministic=True``) for the same fixed number of optimizer steps on the
same transformed train split of a synthetic churn table (configs/quickstart.yaml with
``data.source.rows`` overridden):

* **prepare** (once, own subprocess): ``System.data.ingest()`` and ``fit_features()`` under a
  temporary storage root; every run below loads that feature artifact by id.
* **raysys** (one subprocess per worker count): ``ModelService._train_datasets`` (the transformed
  train/val splits, materialized in the object store as ``System.models.train`` does for tables
  up to 2M rows), then ``run_trainer(spec, datasets, cfg.train, ...)``, i.e. raysys's own
  ``train_loop`` on a ``TorchTrainer``, with ``train.num_workers`` 1 or 2.
* **lightning** (own subprocess): the same transformed train split read once with
  ``rs.data.transform(...).to_pandas()`` (Ray is shut down afterwards), tensors from
  ``batch_from_frame``, a torch ``DataLoader`` (shuffled, same batch size, whole-batch indexing
  via ``__getitems__``) and ``L.Trainer(max_steps=..., accelerator="cpu", deterministic=True,
  logger=False, enable_checkpointing=False, enable_progress_bar=False)``.

**How steps are timed.** Without editing raysys: the driver of the raysys run replaces the module
attribute ``raysys.modeling.train.train_loop`` (which ``run_trainer`` looks up when it builds the
``TorchTrainer``) by a wrapper that, inside each Ray Train worker, adds two timing hooks to
``TabularModule`` (``on_train_batch_start``/``on_train_batch_end``, LightningModule hooks that
raysys does not define) and then calls the original ``train_loop`` unchanged. The plain Lightning
run installs the very same hooks. Each process writes its timestamps (``time.time()``, one clock
for the whole machine) to a JSON file when training ends.

* time to first step = first ``on_train_batch_start`` (rank 0) - start of the timed section,
  which begins with the data preparation (raysys: ``_train_datasets``; plain: transform +
  ``to_pandas`` + tensors); Ray start-up and imports are timed separately and excluded.
* samples/s (steady) = (steps - 1) x batch_size x workers / (end of last step - end of first step),
  from rank 0's clock (DDP keeps the ranks in lock-step).
* total = the whole timed section (data preparation + fit, incl. Ray Train's worker start-up,
  any validation and checkpoint reporting, and teardown).

Usage::

    .venv/bin/python benchmarks/train_bench.py --rows 20000 --steps 20          # debug
    .venv/bin/python benchmarks/train_bench.py --out train_results.json        # 1M rows, 300 steps
    .venv/bin/python benchmarks/train_bench.py --rows 20000 --epochs 10 --workers 1 --poll-s 2,0.25
                                                 # epoch-bound: whole epochs, raysys at each train.poll_s
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "configs" / "quickstart.yaml"
LABEL, TASK = "churned", "binary"
EPOCHS = 100  # an upper bound only: every run stops at --steps optimizer steps (unless --epochs)


def log(message: str) -> None:
    """A progress line on stderr."""
    print(f"[train_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# =========================================================================== step clock


def install_step_clock(out_dir: str) -> None:
    """Add timing hooks to TabularModule in this process; each rank writes a JSON on train end."""
    import time as _time

    from raysys.modeling.module import TabularModule

    if getattr(TabularModule, "_bench_clock", False):
        return

    def on_train_batch_start(self, batch, batch_idx):
        clock = self.__dict__.setdefault("_bench", {"starts": [], "ends": []})
        if not clock["starts"]:
            clock["starts"].append(_time.time())

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.__dict__.setdefault("_bench", {"starts": [], "ends": []})["ends"].append(_time.time())

    def on_train_end(self):
        import torch

        clock = self.__dict__.get("_bench", {"starts": [], "ends": []})
        record = {"rank": int(self.global_rank), "pid": os.getpid(), "torch_threads": torch.get_num_threads(),
                  "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "first_start": clock["starts"][:1],
                  "ends": clock["ends"], "global_step": int(self.trainer.global_step),
                  "train_end": _time.time()}
        Path(out_dir, f"clock-rank{self.global_rank}-{os.getpid()}.json").write_text(json.dumps(record))

    TabularModule.on_train_batch_start = on_train_batch_start
    TabularModule.on_train_batch_end = on_train_batch_end
    TabularModule.on_train_end = on_train_end
    TabularModule._bench_clock = True


def read_clock(out_dir: str) -> dict[str, Any]:
    """Rank 0's timestamps (and every rank's thread settings)."""
    records = [json.loads(p.read_text()) for p in sorted(Path(out_dir).glob("clock-rank*.json"))]
    if not records:
        raise RuntimeError(f"no step clock written under {out_dir}")
    rank0 = min(records, key=lambda r: r["rank"])
    return {"rank0": rank0, "ranks": [{k: r[k] for k in ("rank", "pid", "torch_threads", "omp_num_threads",
                                                           "global_step")} for r in records]}


def step_metrics(clock: dict[str, Any], t0: float, batch_size: int, workers: int) -> dict[str, Any]:
    rank0 = clock["rank0"]
    ends, first = rank0["ends"], rank0["first_start"][0]
    steps = len(ends)
    steady = (steps - 1) * batch_size * workers / (ends[-1] - ends[0]) if steps > 1 else None
    return {"steps_done": steps, "time_to_first_step_s": first - t0, "first_step_s": ends[0] - first,
            "steady_s": ends[-1] - ends[0], "samples_per_s": steady,
            "samples_per_s_incl_first": steps * batch_size * workers / (ends[-1] - first),
            "ms_per_step": 1000 * (ends[-1] - ends[0]) / (steps - 1) if steps > 1 else None,
            "first_batch_start": first, "last_step_end": ends[-1], "train_end": rank0["train_end"]}


# =========================================================================== worker side


def load_config(args: argparse.Namespace, workers: int = 1):
    import yaml

    from raysys.config import parse_config

    data = yaml.safe_load(Path(args.config).read_text())
    data["data"]["source"]["rows"] = args.rows
    data["storage"] = {"root": os.path.join(args.root, "store")}
    data["ray"] = {"num_cpus": 2}
    train = data.setdefault("train", {})
    if args.epochs:  # whole epochs, each one validated and reported as in `raysys train`
        train.update(max_steps=None, epochs=args.epochs, batch_size=args.batch_size, num_workers=workers)
    else:
        train.update(max_steps=args.steps, epochs=EPOCHS, batch_size=args.batch_size, num_workers=workers)
    if args.poll_s:
        train["poll_s"] = float(args.poll_s)
    # raysys's EarlyStopping(val_loss) raises when max_steps ends training mid-epoch: Lightning
    # then skips the epoch-end validation, so val_loss is missing (see benchmarks/README.md).
    train["early_stopping"] = None
    return parse_config(data)


def start_ray() -> float:
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import ray

    from raysys.runtime import tune_ray_data

    t = time.time()
    tune_ray_data()  # what ensure_ray does first; ensure_ray then sees Ray running and returns
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    DataContext.get_current().print_on_execution_start = False
    return time.time() - t


def run_prepare(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from raysys.system import System

    ray_start = start_ray()
    try:
        rs = System(load_config(args))
        t = time.time()
        ingest = rs.data.ingest()
        t_ingest = time.time() - t
        t = time.time()
        artifact = rs.data.fit_features()
        t_fit = time.time() - t
        counts = rs.data.split_counts(artifact.version)
        return {"ray_startup_s": ray_start, "ingest_s": t_ingest, "fit_features_s": t_fit,
                "rows": ingest.manifest.row_count, "version": artifact.version, "feature_id": artifact.id,
                "split_counts": counts, "feature_columns": len(artifact.state.output_columns)}
    finally:
        ray.shutdown()


def _spec(rs, args):
    artifact = rs.data.load_features(args.feature_id)
    spec = rs.models.spec_for(artifact, LABEL, TASK, {})
    return artifact, spec


def run_raysys(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    import ray

    import raysys.modeling.train as train_mod
    from raysys.system import System

    ray_start = start_ray()
    run_name = f"bench-{workers}w-poll-{args.poll_s or 'default'}"  # a run of its own: never resume another's
    clock_dir = os.path.join(args.root, f"clock-{run_name}")
    os.makedirs(clock_dir, exist_ok=True)
    original_loop = train_mod.train_loop

    def timed_train_loop(config):
        # Runs inside each Ray Train worker (where raysys.modeling.train is unpatched): add the
        # step clock, then raysys's own loop.
        import raysys.modeling.train as worker_train

        install_step_clock(clock_dir)
        return worker_train.train_loop(config)

    try:
        cfg = load_config(args, workers)
        rs = System(cfg)
        artifact, spec = _spec(rs, args)
        resources = train_mod.worker_resources(cfg.train, ray.cluster_resources())
        train_mod.train_loop = timed_train_loop  # run_trainer looks the name up at call time
        t0 = time.time()
        datasets = rs.models._train_datasets(artifact, LABEL, rs.data.show(artifact.version).row_count)
        t_data = time.time()
        output = train_mod.run_trainer(spec, datasets, cfg.train, os.path.join(args.root, "train"),
                                       run_name)
        t_end = time.time()
    finally:
        train_mod.train_loop = original_loop
        ray.shutdown()
    clock = read_clock(clock_dir)
    result = {"workers": workers, "ray_startup_s": ray_start, "resources_per_worker": resources,
              "data_prep_s": t_data - t0, "fit_s": t_end - t_data, "total_s": t_end - t0,
              "history": output.history, "clock_ranks": clock["ranks"],
              **step_metrics(clock, t0, args.batch_size, workers)}
    result["fit_call_to_first_step_s"] = result["first_batch_start"] - t_data
    result["train_end_to_return_s"] = t_end - result["train_end"]
    return result


def run_lightning(args: argparse.Namespace) -> dict[str, Any]:
    import lightning as L
    import ray
    import torch

    from raysys.modeling.artifacts import encode_labels
    from raysys.modeling.module import TabularModule, batch_from_frame, seed_everything
    from raysys.modeling.train import _inputs
    from raysys.system import System

    if args.plain_threads:
        torch.set_num_threads(args.plain_threads)
    ray_start = start_ray()
    clock_dir = os.path.join(args.root, f"clock-lightning-{args.plain_threads or 'default'}")
    os.makedirs(clock_dir, exist_ok=True)
    install_step_clock(clock_dir)
    try:
        rs = System(load_config(args))
        artifact, spec = _spec(rs, args)
        t0 = time.time()
        frame = rs.data.transform(artifact, split="train", keep=[LABEL]).to_pandas()
    finally:
        ray.shutdown()  # plain Lightning gets the machine to itself
    frame[LABEL] = encode_labels(frame[LABEL], spec.classes)
    tensors = batch_from_frame(frame, _inputs(spec), LABEL, TASK)
    rows = len(frame)
    del frame

    class DictBatches(torch.utils.data.Dataset):
        """Whole-batch indexing (``__getitems__``): no per-row collate."""

        def __len__(self):
            return rows

        def __getitems__(self, index):
            index = torch.as_tensor(index)
            return {k: v[index] for k, v in tensors.items()}

    seed_everything(spec.train["seed"])
    generator = torch.Generator().manual_seed(spec.train["seed"])
    loader = torch.utils.data.DataLoader(DictBatches(), batch_size=spec.train["batch_size"], shuffle=True,
                                         generator=generator, collate_fn=lambda batch: batch)
    module = TabularModule(spec.model, spec.train, spec.inputs, spec.task, spec.num_classes,
                           spec.target_mean, spec.target_std)
    trainer = L.Trainer(max_epochs=spec.train["epochs"], max_steps=spec.train["max_steps"] or -1, accelerator="cpu",
                        devices=1, deterministic=True, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    t_data = time.time()
    trainer.fit(module, train_dataloaders=loader)
    t_end = time.time()
    clock = read_clock(clock_dir)
    result = {"workers": 1, "ray_startup_s": ray_start, "data_prep_s": t_data - t0, "fit_s": t_end - t_data,
              "total_s": t_end - t0, "train_rows": rows, "torch_threads": torch.get_num_threads(),
              "clock_ranks": clock["ranks"], **step_metrics(clock, t0, args.batch_size, 1)}
    result["fit_call_to_first_step_s"] = result["first_batch_start"] - t_data
    result["train_end_to_return_s"] = t_end - result["train_end"]
    return result


def worker(args: argparse.Namespace) -> int:
    result: dict[str, Any] = {"system": args.worker, "rows": args.rows, "steps": args.steps,
                              "batch_size": args.batch_size, "status": "ok"}
    try:
        if args.worker == "prepare":
            result.update(run_prepare(args))
        elif args.worker == "lightning":
            result.update(run_lightning(args))
        else:
            result.update(run_raysys(args, int(args.worker.split("-")[1])))
    except BaseException as error:  # noqa: BLE001 - reported to the parent
        result["status"] = "error"
        result["error"] = f"{type(error).__name__}: {str(error)[:2000]}"
        result["traceback"] = traceback.format_exc()[-6000:]
    Path(args.result).write_text(json.dumps(result, indent=2, default=str))
    return 0 if result["status"] == "ok" else 3


# =========================================================================== parent side


def run_child(args: argparse.Namespace, name: str, extra: list[str]) -> dict[str, Any]:
    result_path = os.path.join(args.root, f"result-{name}.json")
    cmd = [sys.executable, __file__, "--worker", name, "--result", result_path, "--root", args.root,
           "--rows", str(args.rows), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--config", str(args.config), "--epochs", str(args.epochs), *extra]
    load_before = os.getloadavg()[0]
    start = time.time()
    log(f"{name}: starting (load {load_before:.2f})")
    try:
        proc = subprocess.run(cmd, check=False, timeout=args.timeout_s, cwd=str(ROOT))
        code = proc.returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    wall = time.time() - start
    if os.path.exists(result_path):
        result = json.loads(Path(result_path).read_text())
    else:
        result = {"system": name, "status": "error", "error": f"no result (exit {code})"}
    result.update(process_wall_s=wall, load_avg=[load_before, os.getloadavg()[0]])
    log(f"{name}: {result['status']} in {wall:.1f}s" + (f": {result.get('error')}" if result["status"] != "ok" else ""))
    return result


def fmt(value: Any, spec: str = ",.0f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def table(runs: list[dict[str, Any]]) -> str:
    base = next((r for r in runs if r["system"] == "lightning" and r["status"] == "ok"), None)
    lines = [("| system | workers | steps | samples/s (steady) | ms/step | time to first step | "
              "(data prep + fit call→1st step) | total time | ratio vs plain Lightning | load avg |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        if r["status"] != "ok":
            error = " ".join(r.get("error", "").split())[:120]
            lines.append(f"| {r['system']} | | | {r['status']}: {error} | | | | | | |")
            continue
        name = "plain Lightning" if r["system"] == "lightning" else "raysys"
        if r.get("poll_s"):
            name += f" (train.poll_s {r['poll_s']:g})"
        if r["system"] == "lightning" and r.get("plain_threads"):
            name += f" ({r['plain_threads']} thread)"
        ratio = (f"{r['samples_per_s'] / base['samples_per_s']:.2f}x" if base and r is not base
                 and r["samples_per_s"] else ("1.00x" if r is base else "-"))
        lines.append(
            f"| {name} | {r['workers']} | {r['steps_done']} | {fmt(r['samples_per_s'])} | "
            f"{fmt(r['ms_per_step'], '.2f')} | {fmt(r['time_to_first_step_s'], '.1f', ' s')} | "
            f"({fmt(r['data_prep_s'], '.1f', ' s')} + {fmt(r['fit_call_to_first_step_s'], '.1f', ' s')}) | "
            f"{fmt(r['total_s'], '.1f', ' s')} | {ratio} | "
            f"{r['load_avg'][0]:.1f}/{r['load_avg'][1]:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=0, help="train whole epochs (not --steps) on both sides")
    parser.add_argument("--poll-s", default="", help="raysys runs at each train.poll_s, comma-separated "
                                                     "(default: the config's)")
    parser.add_argument("--workers", default="1,2", help="raysys worker counts, comma-separated")
    parser.add_argument("--plain-threads", default="0",
                        help="torch threads for plain Lightning runs, comma-separated (0 = torch default)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--out", default=None, help="write all results as JSON here")
    parser.add_argument("--timeout-s", type=int, default=1800)
    parser.add_argument("--keep", action="store_true", help="keep the temporary storage root")
    # internal
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--feature-id", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.plain_threads = int(args.plain_threads)
        return worker(args)

    args.root = tempfile.mkdtemp(prefix="raysys-train-bench-")
    started = time.time()
    try:
        prep = run_child(args, "prepare", [])
        if prep["status"] != "ok":
            print(json.dumps(prep, indent=2), file=sys.stderr)
            return 3
        log(f"prepared {prep['rows']:,} rows, splits {prep['split_counts']}, features {prep['feature_id']}")
        runs = []
        for threads in [int(t) for t in args.plain_threads.split(",")]:
            run = run_child(args, "lightning", ["--feature-id", prep["feature_id"], "--plain-threads", str(threads)])
            run["plain_threads"] = threads
            runs.append(run)
        for workers in [int(w) for w in args.workers.split(",") if w]:
            for poll in args.poll_s.split(","):
                run = run_child(args, f"raysys-{workers}", ["--feature-id", prep["feature_id"], "--poll-s", poll])
                run["poll_s"] = float(poll) if poll else None
                runs.append(run)
    finally:
        if not args.keep:
            shutil.rmtree(args.root, ignore_errors=True)
    out = table(runs)
    length = f"epochs={args.epochs}" if args.epochs else f"steps={args.steps}"
    print(f"\nrows={args.rows:,} (train split {prep['split_counts'].get('train', 0):,}), {length}, "
          f"batch_size={args.batch_size}, cpus={os.cpu_count()}, python {platform.python_version()}, "
          f"wall {time.time() - started:.0f}s\n")
    print(out)
    for r in runs:
        if r["status"] != "ok":
            print(f"\n{r['system']}: {r.get('traceback', r.get('error'))}", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": {k: v for k, v in vars(args).items()}, "prepare": prep,
                                              "runs": runs, "table": out}, indent=2, default=str))
    return 0 if all(r["status"] == "ok" for r in runs) else 3


if __name__ == "__main__":
    sys.exit(main())
