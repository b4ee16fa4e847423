"""Data-layer benchmark: raysys vs plain pandas on the same synthetic churn table.

Both sides do the same work, from the same generator and the same config (configs/quickstart.yaml
with ``data.source.rows`` overridden):

1. generate the rows            raysys: the synthetic Ray Data source (streamed, never whole);
                                pandas: ``synthetic.generate_rows`` -> one DataFrame in memory
2. validate                     raysys: ``ValidatingSink`` (``validation.validate_batch`` per block,
                                column stats, null-rate and hash-bucket uniqueness checks);
                                pandas: the same pure ``validation.validate_batch`` on the whole
                                frame, ``stats.batch_stats`` and ``Series.duplicated`` for unique
                                columns
3. write a versioned snapshot   raysys: staged Parquet + content-addressed manifest;
                                pandas: ``DataFrame.to_parquet`` into a version directory named by
                                the same content hash (``store.rows_hash`` / ``store.version_id``)
4. split, fit, transform        raysys: ``split_plan``, ``fit_features`` (train split) and
                                ``transform`` of every row, consumed with ``iter_batches``;
                                pandas: ``splits.compute_plan``/``splits.assign``,
                                ``features.fit`` on the train rows, ``features.transform`` on all

Every (system, size) runs in a fresh subprocess with a fresh storage root. The parent samples the
whole process tree of that subprocess (Ray's gcs/raylet/workers are its descendants) every 0.2 s
and reports the peak of the summed PSS: shared pages (Ray's plasma object store in /dev/shm, shared
libraries) are divided among the processes that map them, so they count once in the sum, where a
sum of RSS would count the object store once per worker that maps it.

Throughput is rows read / pipeline seconds; Ray start-up (``ray.init`` plus one warm-up task per
CPU) and module imports are timed separately and excluded, so the table compares steady-state
pipeline throughput; the rows/s including start-up is printed too.

``--memory-limit-gb N`` caps the pandas subprocess with ``RLIMIT_AS`` = N GiB (a MemoryError then
counts as OOM) and gives raysys the same N GiB as a budget: Ray's ``object_store_memory`` is a
fraction of it, and the whole-tree PSS of either system is checked against it by the sampler,
which kills a run whose tree goes over it (reported as OOM).

Usage::

    .venv/bin/python benchmarks/data_bench.py --sizes 1000000,5000000,20000000 \
        --systems raysys,pandas --out results.json [--memory-limit-gb 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench_common import TreeThread, vendored_psutil

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "configs" / "quickstart.yaml"
DEFAULT_SIZES = "1000000,5000000,20000000"
SAMPLE_S = 0.2
GIB = 1024**3
#: Under --memory-limit-gb, the share of the budget given to Ray's object store.
OBJECT_STORE_SHARE = 0.3


def log(message: str) -> None:
    """A progress line on stderr."""
    print(f"[data_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# =========================================================================== worker side


class Stages:
    """Wall-clock stage timings (epoch seconds, so the parent can match its memory samples)."""

    def __init__(self, label: str):
        self.label = label
        self.items: list[dict[str, Any]] = []

    def run(self, name: str, fn, *args, **kwargs):
        start, cpu = time.time(), time.process_time()
        value = fn(*args, **kwargs)
        end = time.time()
        self.items.append({"name": name, "start": start, "end": end, "seconds": end - start,
                           "process_cpu_s": time.process_time() - cpu})
        log(f"{self.label}: {name} {end - start:.2f}s")
        return value


def load_config(path: str, rows: int, root: str) -> dict:
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    data["data"]["source"]["rows"] = rows
    data["storage"] = {"root": os.path.join(root, "store")}
    data["ray"] = {"num_cpus": 2}
    return data


def worker(args: argparse.Namespace) -> int:
    """Run one (system, size) and write its result JSON; the exit code says how it ended."""
    result: dict[str, Any] = {"system": args.worker, "rows": args.rows, "status": "ok",
                              "raysys_source_sha256": source_fingerprint()}
    label = f"{args.worker} {args.rows:,}"
    stages = Stages(label)
    oom = False
    try:
        if args.worker == "pandas":
            if args.memory_limit_gb:
                cap = int(args.memory_limit_gb * GIB)
                resource.setrlimit(resource.RLIMIT_AS, (cap, resource.RLIM_INFINITY))
            result.update(run_pandas(args, stages))
        else:
            result.update(run_raysys(args, stages))
    except MemoryError as error:
        oom = True
        result["status"] = "OOM"
        result["error"] = f"{type(error).__name__}: {str(error)[:300]}"
    except BaseException as error:  # noqa: BLE001 - reported to the parent
        result["status"] = "error"
        result["error"] = f"{type(error).__name__}: {str(error)[:2000]}"
        result["traceback"] = traceback.format_exc()[-6000:]
    if oom:
        log(f"{label}: MemoryError")
    result["stages"] = stages.items
    Path(args.result).write_text(json.dumps(result, indent=2, default=str))
    return 0 if result["status"] == "ok" else 3


def run_pandas(args: argparse.Namespace, stages: Stages) -> dict[str, Any]:
    """Plain pandas: the whole table in one frame, raysys's pure functions applied to it."""
    t0 = time.time()
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raysys.config import parse_config
    from raysys.data import features, splits, stats, synthetic, validation
    from raysys.data.store import rows_hash, version_id

    cfg = parse_config(load_config(args.config, args.rows, args.root))
    startup = time.time() - t0
    data, schema = cfg.data, cfg.data.schema_
    types = {name: spec.type for name, spec in schema.columns.items()}

    frame = stages.run("generate", synthetic.generate_rows, data.source, 0, data.source.rows)
    rows_read = len(frame)

    def validate(frame):
        problems = validation.check_columns(list(frame.columns), schema)
        accepted, quarantined = validation.validate_batch(frame, schema)
        quarantined = _normalize_quarantine(quarantined, list(schema.columns))
        column_stats = stats.finalize_stats(stats.batch_stats(accepted, types))
        problems += stats.null_rate_failures(column_stats, schema.columns)
        for name in [n for n, spec in schema.columns.items() if spec.unique]:
            dupes = int(accepted[name].duplicated().sum())
            if dupes:
                problems.append(f"column '{name}': {dupes} duplicated values")
        if problems:
            raise RuntimeError("validation failed: " + "; ".join(problems))
        return accepted, quarantined, column_stats

    accepted, quarantined, column_stats = stages.run("validate", validate, frame)
    del frame  # the raw frame is no longer needed: give plain pandas its best case

    def version() -> str:
        # The same Arrow form raysys writes (pandas' own to_parquet also goes through Arrow).
        table_a = validation.to_arrow(accepted, schema.columns).replace_schema_metadata(None)
        table_q = pa.Table.from_pandas(quarantined, preserve_index=False,
                                       schema=pa.schema([(c, pa.string()) for c in quarantined]))
        table_q = table_q.replace_schema_metadata(None)
        content_a = (len(accepted), _rows_hash(rows_hash, table_a, accepted))
        content_q = (len(quarantined), _rows_hash(rows_hash, table_q, quarantined))
        vid = version_id(types, content_a, content_q)
        target = Path(args.root, "store", "datasets", data.name, vid)
        (target / "data").mkdir(parents=True)
        (target / "quarantine").mkdir()
        pq.write_table(table_a, target / "data" / "part-0.parquet")
        pq.write_table(table_q, target / "quarantine" / "part-0.parquet")
        manifest = {"name": data.name, "version": vid, "schema": types, "rows": len(accepted),
                    "quarantined": len(quarantined), "stats": column_stats,
                    "content": {"accepted": [content_a[0], f"{content_a[1]:016x}"],
                                "quarantined": [content_q[0], f"{content_q[1]:016x}"]}}
        (target / "manifest.json").write_text(json.dumps(manifest, default=str))
        return vid

    vid = stages.run("version", version)

    def split() -> np.ndarray:
        plan = splits.compute_plan(data.split, data.label, 0.0, 1.0, lambda fn: fn(accepted))
        return splits.assign(accepted, plan) == "train"

    train_mask = stages.run("split", split)

    def fit():
        plan = features.plan_features(cfg.features, types, data.label)
        return features.fit(plan, accepted[train_mask])

    state = stages.run("fit", fit)
    out = stages.run("transform", features.transform, state, accepted)
    return {"startup_s": startup, "rows_read": rows_read, "accepted": len(accepted),
            "quarantined": len(quarantined), "version": vid, "train_rows": state.rows,
            "feature_columns": len(state.output_columns), "rows_out": len(out),
            "feature_state": state.state_id, "feature_state_canonical": _canonical_state(state),
            "feature_sum": float(np.asarray(out).sum(dtype="float64"))}


def _canonical_state(state) -> str:
    """A digest of a fitted feature state with its features sorted by name (order-free)."""
    import hashlib

    data = state.to_dict()
    for key in ("inputs", "derived", "numeric", "categorical"):
        data[key] = sorted(data[key], key=lambda item: item["name"])
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _rows_hash(rows_hash, table, frame) -> int:
    """raysys.data.store.rows_hash of a table (current API) or of a frame (older API)."""
    try:
        return rows_hash(table)
    except AttributeError:
        return rows_hash(frame)


def _normalize_quarantine(frame, columns: list[str]):
    """raysys.data.ingest.normalize_quarantine, copied so that this process never imports Ray."""
    frame = frame.reindex(columns=[*columns, "_raw", "_reason"])
    text = frame.astype(object).where(frame.notna(), None)
    return text.apply(lambda c: c.map(lambda v: None if v is None else str(v)))


def run_raysys(args: argparse.Namespace, stages: Stages) -> dict[str, Any]:
    """raysys: System.data ingest, split plan, fit_features, transform, on a local 2-CPU Ray."""
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    t0 = time.time()
    import ray
    from ray.data import DataContext

    from raysys.config import parse_config
    from raysys.system import System

    cfg = parse_config(load_config(args.config, args.rows, args.root))
    imports = time.time() - t0

    t1 = time.time()
    init: dict[str, Any] = {"num_cpus": 2, "include_dashboard": False, "logging_level": "WARNING"}
    if args.memory_limit_gb:
        init["object_store_memory"] = int(args.memory_limit_gb * GIB * OBJECT_STORE_SHARE)
    ray.init(**init)
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    _warm_up(ray)
    ray_start = time.time() - t1
    log(f"{args.worker} {args.rows:,}: imports {imports:.2f}s, ray start-up {ray_start:.2f}s")

    try:
        system = System(cfg)
        data = system.data
        ingest = stages.run("ingest", data.ingest)
        vid = ingest.manifest.version
        stages.run("split", data.split_plan, vid)
        artifact = stages.run("fit", data.fit_features, vid)

        def transform() -> tuple[int, float]:
            import numpy as np

            rows, total = 0, 0.0
            dataset = data.transform(artifact, vid)
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                columns = list(batch.values())
                rows += len(columns[0]) if columns else 0
                total += float(sum(np.asarray(c).sum(dtype="float64") for c in columns))
            return rows, total

        rows_out, feature_sum = stages.run("transform", transform)
        return {"startup_s": imports + ray_start, "ray_startup_s": ray_start, "imports_s": imports,
                "rows_read": ingest.report["rows_read"], "accepted": ingest.manifest.row_count,
                "quarantined": ingest.manifest.quarantined_count, "version": vid,
                "train_rows": artifact.state.rows, "feature_columns": len(artifact.state.output_columns),
                "rows_out": rows_out, "feature_state": artifact.id,
                "feature_state_canonical": _canonical_state(artifact.state), "feature_sum": feature_sum,
                "object_store_memory": init.get("object_store_memory")}
    finally:
        ray.shutdown()


def _warm_up(ray) -> None:
    """Start one worker per CPU and import the ingest code in it (part of start-up, not work)."""

    @ray.remote(num_cpus=1)
    def warm() -> int:
        import raysys.data.ingest
        import raysys.data.service  # noqa: F401

        time.sleep(0.5)
        return os.getpid()

    ray.get([warm.remote() for _ in range(2)])
    ray.data.range(8, override_num_blocks=2).count()


# =========================================================================== parent side


class TreeSampler(TreeThread):
    """Samples the memory of a process and all its descendants every SAMPLE_S seconds."""

    def __init__(self, pid: int, cap_bytes: int | None):
        super().__init__(pid)
        self.cap_bytes = cap_bytes
        # (t, pss, uss, rss, processes, cumulative CPU seconds of every process seen so far)
        self.samples: list[tuple[float, int, int, int, int, float]] = []
        self.cpu: dict[tuple[int, float], float] = {}
        self.peak_breakdown: tuple[int, list[tuple[int, str]]] = (0, [])  # PSS per process
        self.killed_over_cap = False
        vm = self.psutil.virtual_memory()
        self.base_used, self.base_shared = vm.used, getattr(vm, "shared", 0)
        self.peak_used_delta = self.peak_shared_delta = 0

    def sample(self) -> None:
        pss = uss = rss = count = 0
        parts = []
        for proc in self.tree():
            try:
                info = proc.memory_full_info()
                times = proc.cpu_times()
                self.cpu[(proc.pid, proc.create_time())] = times.user + times.system
                parts.append((info.pss, proc.name()))
            except self.psutil.Error:
                continue
            pss, uss, rss, count = pss + info.pss, uss + info.uss, rss + info.rss, count + 1
        if not count:
            return
        if pss > self.peak_breakdown[0]:
            self.peak_breakdown = (pss, sorted(parts, reverse=True))
        self.samples.append((time.time(), pss, uss, rss, count, sum(self.cpu.values())))
        vm = self.psutil.virtual_memory()
        self.peak_used_delta = max(self.peak_used_delta, vm.used - self.base_used)
        self.peak_shared_delta = max(self.peak_shared_delta, getattr(vm, "shared", 0) - self.base_shared)
        if self.cap_bytes and pss > self.cap_bytes and not self.killed_over_cap:
            self.killed_over_cap = True
            log(f"tree PSS {pss / GIB:.2f} GiB is over the {self.cap_bytes / GIB:.1f} GiB cap: killing")
            self.kill_all()

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(SAMPLE_S)


    def cpu_between(self, start: float, end: float) -> float:
        """CPU seconds (user + system) the whole tree used between two times (±SAMPLE_S)."""
        before = [s[5] for s in self.samples if s[0] <= start]
        after = [s[5] for s in self.samples if s[0] >= end]
        first = before[-1] if before else 0.0
        last = after[0] if after else (self.samples[-1][5] if self.samples else 0.0)
        return last - first

    def peak(self, start: float | None = None, end: float | None = None) -> dict[str, int]:
        rows = [s for s in self.samples if (start is None or s[0] >= start - SAMPLE_S)
                and (end is None or s[0] <= end + SAMPLE_S)]
        if not rows:
            return {"pss": 0, "uss": 0, "rss": 0, "processes": 0}
        return {"pss": max(r[1] for r in rows), "uss": max(r[2] for r in rows),
                "rss": max(r[3] for r in rows), "processes": max(r[4] for r in rows)}


def run_one(system: str, rows: int, args: argparse.Namespace) -> dict[str, Any]:
    """One (system, size) in a fresh subprocess and a fresh storage root."""
    root = tempfile.mkdtemp(prefix=f"data_bench-{system}-{rows}-", dir=args.tmp_dir)
    result_path = os.path.join(root, "result.json")
    command = [sys.executable, os.path.abspath(__file__), "--worker", system, "--rows", str(rows),
               "--root", root, "--result", result_path, "--config", str(args.config)]
    if args.memory_limit_gb:
        command += ["--memory-limit-gb", str(args.memory_limit_gb)]
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "PYTHONUNBUFFERED": "1"}
    if system == "raysys":
        env.update(dict(item.split("=", 1) for item in args.ray_env))
    cap = int(args.memory_limit_gb * GIB) if args.memory_limit_gb else None
    load_start = os.getloadavg()
    log(f"{system} {rows:,}: start (root {root}, load average {load_start[0]:.1f})")
    started = time.time()
    proc = subprocess.Popen(command, stdout=sys.stderr, stderr=sys.stderr, env=env, cwd=ROOT)
    sampler = TreeSampler(proc.pid, cap)
    sampler.start()
    try:
        code = proc.wait(timeout=args.timeout_s)
    except subprocess.TimeoutExpired:
        sampler.kill_all()
        code = proc.wait()
        log(f"{system} {rows:,}: timed out after {args.timeout_s}s")
    wall = time.time() - started
    sampler.stop.set()
    sampler.join()
    sampler.kill_all()  # leftovers of a killed run (Ray's daemons), by pid

    result: dict[str, Any] = {"system": system, "rows": rows}
    if os.path.exists(result_path):
        result.update(json.loads(Path(result_path).read_text()))
    if sampler.killed_over_cap:
        result["status"] = "OOM"
        result["error"] = f"whole-tree PSS went over the {args.memory_limit_gb} GiB cap: killed"
    elif code < 0 or (code != 0 and "status" not in result) or result.get("status") is None:
        result["status"] = "OOM" if code in (-signal.SIGKILL, 137) else "error"
        result["error"] = f"subprocess ended with code {code} and no result"
    result["exit_code"] = code
    result["subprocess_wall_s"] = wall
    result["memory_limit_gb"] = args.memory_limit_gb
    result["peak"] = sampler.peak()
    result["peak_system_used_delta"] = sampler.peak_used_delta
    result["peak_system_shmem_delta"] = sampler.peak_shared_delta
    result["samples"] = len(sampler.samples)
    result["peak_by_process"] = [f"{name} {value / GIB:.2f} GiB"
                                 for value, name in sampler.peak_breakdown[1]]
    result["cpu_s_total"] = sampler.samples[-1][5] if sampler.samples else None
    result["load_average"] = {"start": load_start, "end": os.getloadavg()}
    # CPU: pandas is one process, whose own clock is exact; raysys is the whole tree, sampled.
    for stage in result.get("stages", []):
        stage["peak_pss"] = sampler.peak(stage["start"], stage["end"])["pss"]
        stage["cpu_s"] = (stage["process_cpu_s"] if system == "pandas"
                          else sampler.cpu_between(stage["start"], stage["end"]))
    if result["status"] == "ok":
        seconds = sum(s["seconds"] for s in result["stages"])
        result["pipeline_s"] = seconds
        first, last = result["stages"][0]["start"], result["stages"][-1]["end"]
        result["pipeline_cpu_s"] = (sum(s["cpu_s"] for s in result["stages"]) if system == "pandas"
                                    else sampler.cpu_between(first, last))
        result["rows_per_s"] = result["rows_read"] / seconds
        result["rows_per_s_with_startup"] = result["rows_read"] / (seconds + result["startup_s"])
        result["rows_per_cpu_s"] = result["rows_read"] / max(result["pipeline_cpu_s"], 1e-9)
    log(f"{system} {rows:,}: {result['status']}, peak PSS {result['peak']['pss'] / GIB:.2f} GiB"
        + (f", {result['rows_per_s']:,.0f} rows/s" if result["status"] == "ok" else
           f": {result.get('error', '')[:300]}"))
    if result.get("traceback"):
        print(result["traceback"], file=sys.stderr)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return result


def fmt_gib(value: int | None) -> str:
    return "-" if not value else f"{value / GIB:.2f} GiB"


def table(results: list[dict[str, Any]], cap_gb: float | None) -> str:
    """The results as a Markdown table."""
    head = ["size", "system", "status", "rows/s", "peak memory (PSS)", "time", "start-up",
            "rows/s incl. start-up", "ratio (raysys/pandas rows/s)", "memory ratio (raysys/pandas)",
            "rows per CPU-s", "CPU-efficiency ratio", "load avg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_key = {(r["rows"], r["system"]): r for r in results}
    for r in results:
        ok = r["status"] == "ok"
        pandas = by_key.get((r["rows"], "pandas"))
        ratio = mem_ratio = cpu_ratio = ""
        if r["system"] == "raysys" and pandas is not None:
            if pandas["status"] != "ok":
                ratio = cpu_ratio = f"pandas {pandas['status']}"
                mem_ratio = f"pandas died at {fmt_gib(pandas['peak']['pss'])}"
            elif ok:
                ratio = f"{r['rows_per_s'] / pandas['rows_per_s']:.2f}x"
                cpu_ratio = f"{r['rows_per_cpu_s'] / pandas['rows_per_cpu_s']:.2f}x"
            if pandas["status"] == "ok" and pandas["peak"]["pss"] and r["peak"]["pss"]:
                mem_ratio = f"{r['peak']['pss'] / pandas['peak']['pss']:.2f}x"
        peak = fmt_gib(r["peak"]["pss"])
        if cap_gb and r["peak"]["pss"]:
            peak += f" ({r['peak']['pss'] / (cap_gb * GIB):.0%} of cap)"
        startup = f"{r['startup_s']:.1f} s" if r.get("startup_s") is not None else "-"
        load = r.get("load_average") or {}
        load_text = "/".join(f"{v[0]:.0f}" for v in (load.get("start"), load.get("end")) if v)
        lines.append("| " + " | ".join([
            f"{r['rows']:,}", r["system"], r["status"],
            f"{r['rows_per_s']:,.0f}" if ok else "-", peak,
            f"{r['pipeline_s']:.1f} s" if ok else f"({r['subprocess_wall_s']:.0f} s)", startup,
            f"{r['rows_per_s_with_startup']:,.0f}" if ok else "-", ratio, mem_ratio,
            f"{r['rows_per_cpu_s']:,.0f}" if ok else "-", cpu_ratio, load_text]) + " |")
    return "\n".join(lines)


def stage_table(results: list[dict[str, Any]]) -> str:
    """Seconds, CPU seconds and peak PSS per stage."""
    lines = ["| size | system | per stage: wall s / CPU s of the tree / peak PSS |", "|---|---|---|"]
    for r in results:
        parts = [f"{s['name']} {s['seconds']:.1f} s / {s.get('cpu_s', 0):.1f} s / "
                 f"{fmt_gib(s.get('peak_pss'))}" for s in r.get("stages", [])]
        lines.append(f"| {r['rows']:,} | {r['system']} | {'; '.join(parts) or '-'} |")
    return "\n".join(lines)


def checks(results: list[dict[str, Any]]) -> list[str]:
    """Do both systems agree on what they produced?"""
    out = []
    sizes = sorted({r["rows"] for r in results})
    keys = ("accepted", "quarantined", "version", "train_rows", "rows_out", "feature_state",
            "feature_state_canonical")
    for size in sizes:
        pair = {r["system"]: r for r in results if r["rows"] == size and r["status"] == "ok"}
        if len(pair) < 2:
            continue
        a, b = pair["raysys"], pair["pandas"]
        same = [k for k in keys if a.get(k) == b.get(k)]
        differ = [f"{k} (raysys {a.get(k)} / pandas {b.get(k)})" for k in keys if a.get(k) != b.get(k)]
        rel = abs(a["feature_sum"] - b["feature_sum"]) / max(abs(b["feature_sum"]), 1.0)
        out.append(f"{size:,}: same {', '.join(same) or 'nothing'}"
                   + (f"; differ: {', '.join(differ)}" if differ else "")
                   + f"; feature sums differ by {rel:.1e} (relative)")
    return out


def source_fingerprint() -> str:
    """sha256 of raysys/**/*.py: which snapshot of the (uncommitted, moving) code was measured."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((ROOT / "raysys").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpus": os.cpu_count()}
    try:
        info["ram_gib"] = round(vendored_psutil().virtual_memory().total / GIB, 1)
    except Exception as error:  # noqa: BLE001
        info["ram_gib"] = f"unknown ({error})"
    for name in ("ray", "pandas", "pyarrow", "numpy"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001
            info[name] = None
    return info


def parent(args: argparse.Namespace) -> int:
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - {"raysys", "pandas"}
    if unknown:
        raise SystemExit(f"unknown system(s): {', '.join(sorted(unknown))}")
    info = machine()
    info["raysys_source_sha256"] = source_fingerprint()
    log(f"machine: {info}")
    results = []
    for rows in sizes:
        for system in systems:
            results.append(run_one(system, rows, args))
            if args.out:
                _write(args, info, results)
    print(table(results, args.memory_limit_gb))
    print()
    print(stage_table(results))
    for line in checks(results):
        print(f"- {line}")
    if args.out:
        _write(args, info, results)
        log(f"results in {args.out}")
    return 0


def _write(args: argparse.Namespace, info: dict, results: list) -> None:
    payload = {"command": " ".join([os.path.relpath(sys.executable, ROOT), *sys.argv]),
               "ray_env": args.ray_env,
               "machine": info, "memory_limit_gb": args.memory_limit_gb, "results": results}
    Path(args.out).write_text(json.dumps(payload, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated row counts")
    parser.add_argument("--systems", default="raysys,pandas", help="raysys,pandas or one of them")
    parser.add_argument("--memory-limit-gb", type=float, default=None,
                        help="RLIMIT_AS for pandas; object-store share and PSS budget for raysys")
    parser.add_argument("--out", default=None, help="write all results as JSON here")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="base config (rows overridden)")
    parser.add_argument("--tmp-dir", default=None, help="where the per-run storage roots go")
    parser.add_argument("--timeout-s", type=float, default=3600, help="per-run time limit")
    parser.add_argument("--keep", action="store_true", help="keep the per-run storage roots")
    parser.add_argument("--ray-env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment for the raysys subprocess only, e.g. "
                             "RAY_DATA_USE_DATASOURCE_V2=0 (to try Ray settings; repeatable)")
    # internal: one run in this (sub)process
    parser.add_argument("--worker", choices=["raysys", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        sys.path.insert(0, str(ROOT))
        return worker(args)
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
