"""Tuning benchmark: one search, with each trial's Ray Train controller polling at ``train.poll_s``
vs Ray's default 2 s (what a Ray Tune search of Ray Train trials gets without raysys).

Each setting runs in its own subprocess on a fresh local Ray (2 CPUs): ingest breast cancer
(sklearn's bundled copy), then ``System.models.tune()`` with ``--samples`` trials of ``--epochs``
epochs, one worker each, early stopping off, and the best trial retrained and registered. A
worker's ``ray.train.report`` waits for the controller's next poll, so at 2 s every epoch of every
trial costs at least 2 s. The table gives the search (the ``tune`` run's record) and the whole
``tune()`` call (search + final run), and each against Ray's default.

Usage::

    .venv/bin/python benchmarks/tune_bench.py --epochs 10 --samples 2 --poll-s 2,0.25
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path


def one_run(poll_s: float, epochs: int, samples: int) -> dict[str, float]:
    """Child process: one search at ``train.poll_s``; seconds of the search and of the whole call."""
    from raysys import System
    from raysys.config import RayConfig, parse_config
    from raysys.runtime import start_local_ray, stop_local_ray

    start_local_ray(RayConfig(num_cpus=2), logging_level="WARNING", log_to_driver=False)
    cfg = {"project": {"name": "tune-bench"},
           "data": {"name": "breast_cancer", "source": {"kind": "sklearn", "dataset": "breast_cancer"},
                    "label": "target", "task": "binary", "split": {"kind": "stratified", "seed": 1}},
           "train": {"epochs": epochs, "num_workers": 1, "seed": 0, "poll_s": poll_s,
                     "early_stopping": {"patience": epochs + 1}},
           "tune": {"num_samples": samples, "grace_period": epochs,
                    "space": {"train.lr": {"type": "loguniform", "low": 1e-3, "high": 3e-2}}},
           "tracking": {"wandb": False}, "storage": {"root": tempfile.mkdtemp(prefix="tune-bench-")}}
    system = System(parse_config(cfg))
    system.data.ingest()
    started = time.perf_counter()
    result = system.models.tune()
    total = time.perf_counter() - started
    search = system.models.run(result["run_id"])
    seconds = (datetime.fromisoformat(search["ended_at"]) - datetime.fromisoformat(search["started_at"])).total_seconds()
    stop_local_ray()
    return {"poll_s": poll_s, "search_s": seconds, "total_s": total}


def main() -> None:
    """Run each setting in a subprocess and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--poll-s", default="2,0.25", help="train.poll_s values, comma-separated (2: Ray's default)")
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(one_run(args.child, args.epochs, args.samples)))
        return
    rows = []
    for poll in (float(p) for p in args.poll_s.split(",")):
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(poll), "--epochs",
                               str(args.epochs), "--samples", str(args.samples)], capture_output=True, text=True,
                              check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = next((r for r in rows if r["poll_s"] == 2.0), rows[0])
    print(f"{args.samples} trials x {args.epochs} epochs, 1 worker each, 2 CPUs")
    print("| train.poll_s | search s | tune() s | search vs 2 s | tune() vs 2 s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['poll_s']:g} | {r['search_s']:.1f} | {r['total_s']:.1f} | {base['search_s'] / r['search_s']:.2f}x "
              f"| {base['total_s'] / r['total_s']:.2f}x |")


if __name__ == "__main__":
    main()
