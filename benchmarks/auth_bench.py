"""What API keys cost the serving benchmark: the same load on one raysys server, auth off and on.

One raysys server (``serve_bench.py``'s ``raysys`` system: same model, bodies, replica and client)
is loaded at each concurrency level in alternating windows: **off** (no key exists, so
``serve.auth: auto`` leaves the API open) and **on** (one ``predict`` key exists and the client
sends ``Authorization: Bearer <key>`` on every request). Before each window the key is created or
revoked in the storage root and the script waits until the replica answers accordingly (401 / 200
without a key), so the windows alternate on the same process, which cancels most of the drift of a
shared machine. ``--rounds`` pairs per level; the table shows the median of each side and the
ratio on/off (throughput: above 0.95 means auth costs less than 5 %).

Usage::

    .venv/bin/python benchmarks/auth_bench.py --quick       # ~3 min: level 8, 2 rounds, 3 s windows
    .venv/bin/python benchmarks/auth_bench.py --out auth.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import serve_bench as bench


def wait_status(url: str, expected: int, timeout_s: float = 60.0) -> None:
    """Poll a body-less ``POST`` without a key until it answers ``expected`` (401: auth on, 422: off)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=b"{}", method="POST"), timeout=10) as answer:
                status = answer.status
        except urllib.error.HTTPError as error:
            status = error.code
        if status == expected:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer {expected} within {timeout_s:.0f} s")


def toggler(args: argparse.Namespace):
    """``before_level``: even windows off (no key), odd windows on (a predict key, sent by the client)."""
    from raysys.access import KeyStore
    from raysys.storage import Storage

    store = KeyStore(Storage.open(os.path.join(args.root, "store")))

    def before_level(index: int, url: str) -> None:
        for key in store.list(include_revoked=False):
            store.revoke(key["id"], actor="auth_bench")
        os.environ.pop(bench.AUTH_ENV, None)
        if index % 2:
            os.environ[bench.AUTH_ENV] = f"Bearer {store.create('predict', 'auth_bench', actor='auth_bench')['key']}"
        wait_status(url, 401 if index % 2 else 422)
        bench.log(f"window {index}: auth {'on' if index % 2 else 'off'}")

    return before_level


def guard_micro(repeat: int = 20_000) -> dict[str, float]:
    """Median CPU µs per ``Guard.check`` in this process: auth off, and on with a verified (cached) key.

    CPU time (``time.process_time``), not wall time, so that other processes on a busy machine do not count.
    """
    import asyncio

    from starlette.requests import Request

    from raysys.access import KeyStore
    from raysys.serving.auth import Guard
    from raysys.storage import Storage

    storage = Storage.open(tempfile.mkdtemp(prefix="raysys-auth-micro-"))
    try:
        key = KeyStore(storage).create("predict", "micro", actor="auth_bench")["key"]
        with_key = Request({"type": "http", "headers": [(b"authorization", f"Bearer {key}".encode())]})
        guards = {"off": Guard(storage, "off", 3600.0), "on": Guard(storage, "auto", 3600.0)}

        async def per_check(guard: Guard) -> float:
            await guard.check(with_key, "predict")  # the first check hashes; the rest hit the cache
            samples = []
            for _ in range(5):
                started = time.process_time()
                for _ in range(repeat):
                    await guard.check(with_key, "predict")
                samples.append((time.process_time() - started) / repeat * 1e6)
            return statistics.median(samples)

        return {name: asyncio.run(per_check(guard)) for name, guard in guards.items()}
    finally:
        shutil.rmtree(storage.base, ignore_errors=True)


def table(levels: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Markdown: per concurrency, median req/s and p50/p99 off and on, and the ratios."""
    rows, summary = ["| concurrency | req/s off | req/s on | on/off | p50 ms off | p50 ms on | p99 ms off | p99 ms on |",
                     "|---|---|---|---|---|---|---|---|"], []
    for level in sorted({r["concurrency"] for r in levels}):
        runs = [r for r in levels if r["concurrency"] == level and r["status"] == "ok"]
        side = {name: [r for i, r in enumerate(runs) if i % 2 == parity] for name, parity in (("off", 0), ("on", 1))}
        med = {(name, key): statistics.median(r[key] for r in side[name])
               for name in side for key in ("rps", "p50_ms", "p99_ms")}
        ratio = med[("on", "rps")] / med[("off", "rps")]
        summary.append({"concurrency": level, "ratio": ratio, "errors": sum(r["errors"] for r in runs),
                        **{f"{k}_{n}": v for (n, k), v in med.items()}})
        rows.append(f"| {level} | {med[('off', 'rps')]:.0f} | {med[('on', 'rps')]:.0f} | {ratio:.3f} | "
                    f"{med[('off', 'p50_ms')]:.2f} | {med[('on', 'p50_ms')]:.2f} | {med[('off', 'p99_ms')]:.2f} | "
                    f"{med[('on', 'p99_ms')]:.2f} |")
    return "\n".join(rows), summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,8", help="client concurrency levels, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs per level")
    parser.add_argument("--duration-s", type=float, default=8.0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--system", choices=("raysys", "raysys-batch"), default="raysys")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs (the model's size does not change)")
    parser.add_argument("--quick", action="store_true", help="level 8, 2 rounds, 3 s windows, 2 epochs")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.levels, args.rounds, args.duration_s, args.warmup_s, args.epochs = "8", 2, 3.0, 0.5, 2
    levels = [int(c) for c in args.levels.split(",") if c]
    args = argparse.Namespace(**vars(args), bodies=256, micro_repeat=10,
                              replica_cpus=0.5, max_ongoing=64, max_batch_size=32, batch_wait_s=0.0,
                              fastapi_threads=1, mem_interval_s=1.0, start_timeout_s=180.0,
                              root=tempfile.mkdtemp(prefix="raysys-auth-bench-"))
    args.levels = [level for level in levels for _ in range(2 * args.rounds)]  # off, on, off, on, …
    from raysys.haproxy import private_haproxy, stop_haproxy
    from raysys.runtime import SERVE_MODES, free_port

    # HAProxy files and ports of its own (as raysys's own Rays get): other Rays on the machine keep theirs
    haproxy_env, haproxy_dir = private_haproxy("127.0.0.1", free_port(), free_port())
    os.environ.update({**SERVE_MODES["high_throughput"], **haproxy_env})
    try:
        prep = bench.run_prepare_child(args)
        if prep["status"] != "ok":
            print(json.dumps(prep, indent=2), file=sys.stderr)
            return 3
        args.version = prep["version"]
        bodies = json.loads(Path(args.root, "bodies.json").read_text())
        run = bench.run_system(args, args.system, bodies, before_level=toggler(args))
    finally:
        os.environ.pop(bench.AUTH_ENV, None)
        shutil.rmtree(args.root, ignore_errors=True)
        stop_haproxy(haproxy_dir)
    if run["status"] != "ok":
        print(run.get("traceback", run.get("error")), file=sys.stderr)
        return 3
    text, summary = table(run["levels"])
    micro = guard_micro()
    print(f"\nGuard.check CPU per request, in-process: auth off {micro['off']:.2f} µs, "
          f"on (cached key) {micro['on']:.2f} µs")
    print(f"\n{args.system}, one replica ({args.replica_cpus} CPU), {args.rounds} off/on pairs of "
          f"{args.warmup_s:g} + {args.duration_s:g} s windows per level, cpus={os.cpu_count()}\n")
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "guard_us": micro, "levels": run["levels"]}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
