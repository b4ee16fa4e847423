"""The monitor's costs: one function per section, each prints a table (``--only SECTION``).

Sections:

- ``drift``: latency of one drift test per window (1,000 rows against 5,000 reference rows, 20 and
  100 features, half numeric and half categorical) for each backend and detector, against calling
  alibi-detect / scipy directly on the same arrays (overhead = raysys / direct). raysys's time
  includes turning raw columns into arrays (nulls out, categories to codes) and the correction;
  the direct call gets ready arrays.
- ``monitor-cost``: the monitor's cost per 1M logged predictions (CPU seconds, peak memory) at
  1×, 4×, 16× log size: incremental reads (cursor) + windows + window metrics vs a full re-read
  with pandas (``benchmarks/monitor_cost.py``, which also runs alone).
- ``serving``: ``/v1/predict`` throughput and latency (p50, p99) of one served model (random
  weights over the breast-cancer features, one replica, a local Ray in this process) with
  ``--clients`` concurrent async httpx clients for ``--seconds`` per phase, in four modes: off,
  the monitor actor running (1 s interval, 200-row windows, scipy drift), every answer's label
  POSTed to ``/v1/feedback`` (by separate client tasks: the predict clients never wait for
  them), and both; in that order, then reversed (``--rounds 1``: once). The clients share this
  process and its cores with Ray, so the client side is part of what is measured.

    .venv/bin/python benchmarks/monitor_bench.py [--only drift] [--repeats 5] [--out FILE]
    .venv/bin/python benchmarks/monitor_bench.py --only serving [--clients 8] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

WINDOW_ROWS = 1_000
REFERENCE_ROWS = 5_000
FEATURE_COUNTS = (20, 100)
LEVELS = ("a", "b", "c", "d", "e")


def timed(call: Callable[[], Any], repeats: int) -> float:
    """Median wall time of `call` in milliseconds (after one warm-up call)."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def frames(features: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """Reference and window frames: half numeric (normal), half categorical (5 levels)."""
    rng = np.random.default_rng(seed)
    kinds = {f"x{i}": "numeric" if i % 2 == 0 else "categorical" for i in range(features)}

    def frame(rows: int) -> pd.DataFrame:
        return pd.DataFrame({name: rng.normal(size=rows) if kind == "numeric"
                             else rng.choice(np.array(LEVELS, dtype=object), rows)
                             for name, kind in kinds.items()})

    return frame(REFERENCE_ROWS), frame(WINDOW_ROWS), kinds


def as_matrix(frame: pd.DataFrame, kinds: dict[str, str]) -> np.ndarray:
    """Numeric columns as they are, categorical ones as level codes (what the row test sees)."""
    codes = {level: i for i, level in enumerate(LEVELS)}
    return np.column_stack([frame[n].to_numpy(float) if k == "numeric" else frame[n].map(codes)
                            for n, k in kinds.items()]).astype(np.float32)


def direct_calls(backend: str, ref: pd.DataFrame, win: pd.DataFrame,
                 kinds: dict[str, str]) -> dict[str, Callable[[], Any]]:
    """The same tests called directly on ready arrays: alibi-detect detectors or scipy loops."""
    from scipy import stats

    num = [n for n, k in kinds.items() if k == "numeric"]
    cat = [n for n, k in kinds.items() if k == "categorical"]
    rm, wm = as_matrix(ref, kinds), as_matrix(win, kinds)
    rn, wn = rm[:, [list(kinds).index(n) for n in num]], wm[:, [list(kinds).index(n) for n in num]]
    ci = [list(kinds).index(n) for n in cat]
    rc, wc = rm[:, ci].astype(np.int64), wm[:, ci].astype(np.int64)
    if backend == "alibi":
        from alibi_detect.cd import ChiSquareDrift, CVMDrift, KSDrift, TabularDrift

        ks, cvm, chi = KSDrift(rn), CVMDrift(rn), ChiSquareDrift(rc)
        tab = TabularDrift(rm, categories_per_feature={i: None for i in ci})
        return {"numeric ks": lambda: ks.score(wn), "numeric cvm": lambda: cvm.score(wn),
                "categorical chi2": lambda: chi.score(wc), "row tabular": lambda: tab.score(wm)}

    def counts(col: np.ndarray) -> np.ndarray:
        return np.bincount(col, minlength=len(LEVELS))

    def chi2_all() -> list:
        return [stats.chi2_contingency(np.vstack([counts(rc[:, j]), counts(wc[:, j])]))
                for j in range(rc.shape[1])]

    def ks_all() -> list:
        return [stats.ks_2samp(rn[:, j], wn[:, j], method="asymp") for j in range(rn.shape[1])]

    return {"numeric ks": ks_all, "categorical chi2": chi2_all,
            "row tabular": lambda: (ks_all(), chi2_all())}


def raysys_calls(backend: str, ref: pd.DataFrame, win: pd.DataFrame,
                 kinds: dict[str, str]) -> dict[str, Callable[[], Any]]:
    """raysys detectors restricted to one kind of test each, plus the whole window's test."""
    from raysys.config import DriftDetectionConfig
    from raysys.monitoring.drift import build_drift_detector

    num = {n: k for n, k in kinds.items() if k == "numeric"}
    cat = {n: k for n, k in kinds.items() if k == "categorical"}

    def matrix(frame: pd.DataFrame) -> np.ndarray:
        return as_matrix(frame, kinds)

    def make(types: dict, transform=None, **cfg) -> Callable[[], Any]:
        cfg = {"backend": backend, "multivariate": "tabular" if transform else "none", **cfg}
        det = build_drift_detector(DriftDetectionConfig(**cfg), ref, types, transform)
        return lambda: det.test(win)

    calls = {"numeric ks": make(num), "categorical chi2": make(cat), "row tabular": make({}, matrix),
             "whole window": make(kinds, matrix)}
    if backend == "alibi":
        calls["numeric cvm"] = make(num, numeric_test="cvm")
    return calls


def drift_section(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Drift test latency per window, per backend and detector, with the overhead ratio."""
    rows = []
    for features in FEATURE_COUNTS:
        ref, win, kinds = frames(features)
        for backend in ("scipy", "alibi"):
            direct = direct_calls(backend, ref, win, kinds)
            for detector, call in raysys_calls(backend, ref, win, kinds).items():
                ours = timed(call, args.repeats)
                base = timed(direct[detector], args.repeats) if detector in direct else None
                rows.append({"backend": backend, "detector": detector, "features": features,
                             "raysys_ms": ours, "direct_ms": base,
                             "overhead": ours / base if base else None})
    print(f"drift: one window of {WINDOW_ROWS:,} rows vs {REFERENCE_ROWS:,} reference rows, "
          f"median of {args.repeats}")
    print(table(rows, ["backend", "detector", "features", "raysys_ms", "direct_ms", "overhead"]))
    return rows


def monitor_cost_section(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The monitor's CPU seconds and peak memory per 1M logged predictions as the log grows."""
    from monitor_cost import monitor_cost

    rows = monitor_cost()
    print("monitor cost: the newest 125,000 predictions of a log of 1x, 4x, 16x that size, per 1M rows; "
          "each run in a fresh process (CPU s of all threads; peak RSS growth)")
    print(table(rows, ["size", "log_rows", "incremental_cpu_s_per_1m", "incremental_read_cpu_s_per_1m",
                       "incremental_peak_mib", "full_cpu_s_per_1m", "full_read_cpu_s_per_1m", "full_peak_mib",
                       "cpu_ratio_full_over_incremental", "cursor_bytes"]))
    return rows


SERVING_MONITOR = {"enabled": False, "interval_s": 1.0, "window": {"rows": 200, "min_rows": 50},
                   "reference_rows": 500, "drift": {"backend": "scipy", "multivariate": "none"},
                   "wandb": False, "retrain": {"triggers": []}}


def served_system(root: str) -> tuple[Any, Any, pd.DataFrame]:
    """(serving system, monitor system, rows with labels): a random-weights model over breast-cancer, served.

    The data is ingested (the monitor's drift reference is the champion's training split); the
    model is registered with that dataset version in its lineage and never trained.
    """
    from raysys import System
    from raysys.config import ModelConfig, parse_config
    from raysys.data import features
    from raysys.modeling.artifacts import TrainSpec, state_dict_to_bytes
    from raysys.modeling.models import build_model, model_inputs, output_size
    from raysys.modeling.predict import model_files
    from raysys.runtime import free_port

    cfg = {"project": {"name": "bench-serving"},
           "data": {"name": "breast_cancer", "source": {"kind": "sklearn", "dataset": "breast_cancer"},
                    "label": "target", "task": "binary"},
           "storage": {"root": root}, "tracking": {"wandb": False},
           "serve": {"port": free_port(), "num_cpus": 0.5, "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
           "monitor": SERVING_MONITOR}
    rs = System(parse_config(cfg))
    rs.data.ingest()
    manifest = rs.data.show("latest")
    frame = rs.data.sample(manifest.version, "train", 1000)
    state = features.fit(features.plan_features(rs.config.features, manifest.schema, "target"), frame)
    inputs, model = model_inputs(state), ModelConfig(hidden=[16])
    network = build_model(model, inputs, output_size("binary"))
    spec = TrainSpec(model=model.model_dump(), train={}, inputs=inputs.to_dict(), task="binary", label="target",
                     classes=[0, 1])
    files = model_files(spec, state, state_dict_to_bytes(network.state_dict()))
    rs.models.registry.register(rs.models.name, files, metrics={}, lineage={"dataset_version": manifest.version},
                                params={}, run_id=None, description="random weights for the serving benchmark")
    rs.models.registry.set_alias(rs.models.name, "champion", 1, actor="bench", reason="serving benchmark")
    rs.serving.up()
    on = System(parse_config({**cfg, "monitor": {**SERVING_MONITOR, "enabled": True}}))
    return rs, on, frame


SERVING_MODES = {"off": (False, False), "monitor": (True, False), "feedback": (False, True),
                 "monitor+feedback": (True, True)}  # (monitor running, labels POSTed)


async def load(url: str, rows: list[dict[str, Any]], labels: list[int], clients: int, seconds: float,
               feedback: bool) -> dict[str, Any]:
    """``clients`` predict loops for ``seconds``; with ``feedback``, every answer's label is POSTed apart."""
    import asyncio

    import httpx

    latencies: list[float] = []
    errors = {"predict": 0, "feedback": 0}
    sent = [0]
    queue: asyncio.Queue = asyncio.Queue()
    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        stop = time.perf_counter() + seconds

        async def predict(offset: int) -> None:
            i = offset
            while time.perf_counter() < stop:
                row = i % len(rows)
                started = time.perf_counter()
                try:
                    answer = await http.post(f"{url}/v1/predict", json={"records": [rows[row]]})
                except httpx.HTTPError:
                    answer = None
                elapsed = time.perf_counter() - started
                i += clients
                if answer is None or answer.status_code != 200:
                    errors["predict"] += 1
                    continue
                latencies.append(elapsed)
                if feedback:
                    queue.put_nowait((answer.json()["request_id"], labels[row]))

        async def label() -> None:
            while True:
                request_id, value = await queue.get()
                try:
                    answer = await http.post(f"{url}/v1/feedback",
                                             json={"request_id": request_id, "row": 0, "label": value})
                    sent[0] += 1
                    errors["feedback"] += answer.status_code != 202
                except httpx.HTTPError:
                    errors["feedback"] += 1
                finally:
                    queue.task_done()

        labellers = [asyncio.create_task(label()) for _ in range(clients if feedback else 0)]
        await asyncio.gather(*(predict(c) for c in range(clients)))
        wall = seconds + max(0.0, time.perf_counter() - stop)
        await queue.join()
        for task in labellers:
            task.cancel()
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "rps": len(latencies) / wall, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "predict_errors": errors["predict"], "feedback_sent": sent[0],
            "feedback_errors": errors["feedback"]}


def serving_section(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Predict throughput and latency with the monitor and feedback off and on, alternated in one run."""
    import asyncio
    import tempfile

    import ray

    from raysys.config import RayConfig
    from raysys.runtime import ensure_ray

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="monitor-bench-serving-") as root:
        started = time.perf_counter()
        ensure_ray(RayConfig())
        rs, on, frame = served_system(root)
        setup_s = time.perf_counter() - started
        inputs = [c for c in frame.columns if c != "target"]
        records = frame[inputs].to_dict("records")
        labels = frame["target"].astype(int).tolist()
        url = rs.serving.url
        try:
            asyncio.run(load(url, records, labels, args.clients, 3.0, False))  # warm-up: connections, first calls
            order = list(SERVING_MODES)
            for phase, mode in enumerate(order + order[::-1] if args.rounds > 1 else order):
                monitor, feedback = SERVING_MODES[mode]
                start_s, before = None, on.monitor.status()["windows"]
                if monitor:
                    t = time.perf_counter()
                    on.monitor.start()
                    start_s = time.perf_counter() - t
                    asyncio.run(load(url, records, labels, args.clients, 2.0, feedback))  # its first step
                result = asyncio.run(load(url, records, labels, args.clients, args.seconds, feedback))
                if monitor:
                    on.monitor.stop()  # its step in flight finishes and is committed
                status = on.monitor.status()
                rows.append({"phase": phase + 1, "mode": mode, **result, "monitor_start_s": start_s,
                             "windows": status["windows"] - before if monitor else None,
                             "monitor_error": status["last_error"] if monitor else None})
        finally:
            on.monitor.stop()
            rs.serving.down()
            ray.shutdown()
    off = statistics.mean(r["rps"] for r in rows if r["mode"] == "off")
    print(f"serving: /v1/predict, one record per request, {args.clients} concurrent clients, {args.seconds:.0f} s "
          f"per phase, one replica (setup {setup_s:.0f} s); feedback = every answer's label POSTed to "
          f"/v1/feedback; {os.cpu_count()} cores")
    print(table(rows, ["phase", "mode", "requests", "rps", "p50_ms", "p99_ms", "predict_errors",
                       "feedback_sent", "feedback_errors", "monitor_start_s", "windows"]))
    for mode in SERVING_MODES:
        ratio = statistics.mean(r["rps"] for r in rows if r["mode"] == mode) / off
        print(f"predict throughput {mode} / off: {ratio:.3f}")
        rows.append({"phase": "ratio", "mode": f"{mode} / off", "rps": ratio})
    return rows


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A markdown table; floats with 2 decimals, missing values as '-'."""
    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


SECTIONS: dict[str, Callable[[argparse.Namespace], list[dict[str, Any]]]] = {
    "drift": drift_section,
    "monitor-cost": monitor_cost_section,
    "serving": serving_section,
}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections and print their tables (and write JSON with --out)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append",
                        help="run only this section (repeatable)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--clients", type=int, default=8, help="serving: concurrent predict clients")
    parser.add_argument("--seconds", type=float, default=20.0, help="serving: seconds per measured phase")
    parser.add_argument("--rounds", type=int, default=2, help="serving: 1 = each mode once, 2 = then again in reverse order")
    parser.add_argument("--out", default=None, help="write all results as JSON here")
    args = parser.parse_args(argv)
    results = {}
    for name in args.only or list(SECTIONS):
        results[name] = SECTIONS[name](args)
        print()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
