"""The monitor's cost per 1M logged predictions as the log grows (issue 10, section 8).

A temporary storage root gets a synthetic prediction log of ``L`` = 1×, 4×, 16× ``--unit-rows``
rows, as replicas write it: Parquet files of ``--file-rows`` rows (``serve.prediction_log.flush_rows``)
named ``part-<ms>-<log id>-<seq>.parquet``, one ``date=`` partition per ``--unit-rows`` rows (a
day). The newest ``--unit-rows`` rows are the increment; everything before it is history that a
monitor has already read. Each measurement runs in a fresh process (CPU seconds of all its
threads from ``getrusage``, peak RSS above the process's RSS before the work):

- **incremental**: the monitor's data side — :func:`read_new` from a cursor that has read the
  history, in steps of ``--step-rows`` (as a monitor step would), :class:`Windower`
  (``window.rows`` = 500) and :func:`window_metrics` for every closed window, the cursor and the
  open window serialised after each step;
- **full re-read**: ``pandas.read_parquet`` of the whole log directory once, the rows newer than
  the history selected by ``_time``, then the same windows and metrics (the baseline's best case:
  one re-read per increment, not one per step).

Costs are per 1M rows of the increment. Run: ``.venv/bin/python benchmarks/monitor_cost.py``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import resource
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DIRECTORY = "logs/predictions/bench"
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
WINDOW_ROWS = 500


def log_table(rows: int, first: datetime, seed: int) -> pa.Table:
    """A replica's batch of log rows: model inputs plus the prediction log's ``_`` columns."""
    rng = np.random.default_rng(seed)
    p1 = rng.uniform(0, 1, rows)
    offsets = np.arange(0, 2 * rows + 1, 2, dtype=np.int32)
    flags = np.where(rng.uniform(0, 1, rows) < 0.02, "age: above max 90", "")
    return pa.table({
        "age": rng.integers(18, 95, rows), "tenure": rng.uniform(0, 60, rows),
        "monthly_spend": rng.gamma(2.0, 30.0, rows), "sessions_30d": rng.poisson(12, rows),
        "plan": rng.choice(["basic", "standard", "premium"], rows),
        "region": rng.choice(["north", "south", "east", "west"], rows),
        "_time": pa.array(first + timedelta(milliseconds=int(ms)) for ms in np.arange(rows) * 5),
        "_request_id": [f"{seed:08x}{i:08x}" for i in range(rows)],
        "_model_version": np.full(rows, 1), "_role": np.full(rows, "answer"),
        "_latency_ms": rng.gamma(2.0, 3.0, rows), "_key": pa.nulls(rows),
        "_row": np.zeros(rows, dtype=np.int64), "_prediction": np.where(p1 > 0.5, "1", "0"),
        "_probabilities": pa.ListArray.from_arrays(offsets, np.column_stack([1 - p1, p1]).ravel()),
        "_input_flags": flags,
    })


def write_log(root: Path, total_rows: int, unit_rows: int, file_rows: int) -> tuple[list[str], float]:
    """Write the log; the names of the history files and the history's last ``_time`` (epoch s)."""
    history, history_end = [], START.timestamp() - 1.0
    for seq, first in enumerate(range(0, total_rows, file_rows)):
        day = START + timedelta(days=first // unit_rows)
        at = day + timedelta(seconds=(first % unit_rows) / file_rows * 10)
        name = f"part-{int(at.timestamp() * 1000)}-bench0001-{seq:06d}.parquet"
        folder = root / DIRECTORY / f"date={day:%Y-%m-%d}"
        folder.mkdir(parents=True, exist_ok=True)
        table = log_table(min(file_rows, total_rows - first), at, seq)
        pq.write_table(table, folder / name)
        if first < total_rows - unit_rows:
            history.append(f"date={day:%Y-%m-%d}/{name}")
            history_end = max(history_end, at.timestamp() + 5e-3 * table.num_rows)
    return history, history_end


def _rss_bytes() -> int:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * resource.getpagesize()


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(kind: str, root: str, history: list[str], history_end: float, step_rows: int) -> dict[str, Any]:
    """(Fresh process) One way of processing the increment: rows, CPU s, wall s, peak RSS growth."""
    import pandas as pd

    from raysys.config import WindowConfig
    from raysys.monitoring.logreader import LogCursor, read_new
    from raysys.monitoring.quality import window_metrics
    from raysys.monitoring.windows import Windower
    from raysys.storage import Storage

    storage = Storage.open(root)
    cursor = LogCursor()
    for path in history:  # a cursor that has read the history (built, not timed)
        cursor.mark(*path.split("/"))
    state = json.dumps(cursor.to_dict())
    base_rss, cpu, wall = _rss_bytes(), _cpu_s(), time.perf_counter()
    windower, rows, windows, read_cpu = Windower(WindowConfig(rows=WINDOW_ROWS)), 0, 0, 0.0

    def process(frame: pd.DataFrame) -> int:
        closed = windower.add(frame)
        for window in closed:
            json.dumps(window_metrics(window.frame, "binary", [0, 1]), allow_nan=False)
        return len(closed)

    if kind == "incremental":
        while True:
            started = _cpu_s()
            frame, cursor = read_new(storage, DIRECTORY, LogCursor.from_dict(json.loads(state)),
                                     max_rows=step_rows)
            read_cpu += _cpu_s() - started
            if frame.empty:
                break
            rows, windows = rows + len(frame), windows + process(frame)
            state = json.dumps(cursor.to_dict())
            json.dumps(windower.to_dict())
    else:
        frame = pd.read_parquet(storage.path(DIRECTORY))
        read_cpu = _cpu_s() - cpu
        stamps = (frame["_time"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
        fresh = frame[stamps > history_end].sort_values("_time", kind="stable")
        del frame
        rows, windows = len(fresh), process(fresh)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss
    return {"kind": kind, "rows": rows, "windows": windows, "cpu_s": _cpu_s() - cpu, "read_cpu_s": read_cpu,
            "wall_s": time.perf_counter() - wall, "peak_mib": max(peak, 0) / 2**20,
            "cursor_bytes": len(state)}


def _fresh(kind: str, *args: Any) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(measure, kind, *args).result()


def monitor_cost(sizes: tuple[int, ...] = (1, 4, 16), unit_rows: int = 125_000, file_rows: int = 1000,
                 step_rows: int = 50_000, root: str | None = None) -> list[dict[str, Any]]:
    """Per log size: the increment's cost per 1M rows, incremental and full re-read, and their ratio."""
    results = []
    for size in sizes:
        folder = Path(tempfile.mkdtemp(prefix="raysys-monitor-cost-", dir=root))
        try:
            history, history_end = write_log(folder, size * unit_rows, unit_rows, file_rows)
            runs = {kind: _fresh(kind, str(folder), history, history_end, step_rows)
                    for kind in ("incremental", "full")}
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        per_m = {kind: 1e6 / run["rows"] for kind, run in runs.items()}
        results.append({
            "log_rows": size * unit_rows, "size": f"{size}x", "increment_rows": runs["incremental"]["rows"],
            "incremental_cpu_s_per_1m": runs["incremental"]["cpu_s"] * per_m["incremental"],
            "incremental_peak_mib": runs["incremental"]["peak_mib"],
            "incremental_read_cpu_s_per_1m": runs["incremental"]["read_cpu_s"] * per_m["incremental"],
            "full_read_cpu_s_per_1m": runs["full"]["read_cpu_s"] * per_m["full"],
            "full_cpu_s_per_1m": runs["full"]["cpu_s"] * per_m["full"],
            "full_peak_mib": runs["full"]["peak_mib"],
            "cpu_ratio_full_over_incremental": runs["full"]["cpu_s"] / max(runs["incremental"]["cpu_s"], 1e-9),
            "cursor_bytes": runs["incremental"]["cursor_bytes"], "runs": runs})
    return results


def table(results: list[dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    header = ("| log size | log rows | incremental CPU s / 1M (reading) | peak MiB | "
              "full re-read CPU s / 1M (reading) | peak MiB | full / incremental | cursor bytes |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['size']} | {r['log_rows']:,} | {r['incremental_cpu_s_per_1m']:.1f} "
                     f"({r['incremental_read_cpu_s_per_1m']:.1f}) | {r['incremental_peak_mib']:.0f} | "
                     f"{r['full_cpu_s_per_1m']:.1f} ({r['full_read_cpu_s_per_1m']:.1f}) | "
                     f"{r['full_peak_mib']:.0f} | {r['cpu_ratio_full_over_incremental']:.1f}× | "
                     f"{r['cursor_bytes']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,4,16", help="log sizes, in units of --unit-rows")
    parser.add_argument("--unit-rows", type=int, default=125_000, help="rows of the increment (and of a day)")
    parser.add_argument("--file-rows", type=int, default=1000)
    parser.add_argument("--step-rows", type=int, default=50_000, help="rows a monitor step reads at most")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results = monitor_cost(tuple(int(s) for s in args.sizes.split(",")), args.unit_rows, args.file_rows,
                           args.step_rows)
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
