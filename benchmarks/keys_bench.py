"""What a replica's key refresh costs: raysys's key store (a file per key) vs one JSON file.

Every ``serve.auth_refresh_s`` (2 s) each replica re-reads the stored keys, in a thread, off the
event loop. raysys keeps a file per key and per revocation (``access/keys/``, ``access/revoked/``)
so that concurrent ``keys create``/``revoke`` never lose a key or a revocation; the plain
alternative is the single ``keys.json`` that is rewritten on every change (and loses updates).
This times ``read_keys`` against one ``json.loads`` of the same records, at several key counts,
on a local root.

Usage::

    .venv/bin/python benchmarks/keys_bench.py --keys 10,100,1000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone

from raysys.access import KEYS_DIR, REVOKED_DIR, new_key, read_keys
from raysys.storage import Storage


def timed(call, repeats: int) -> float:
    """Mean seconds per call."""
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def measure(count: int, repeats: int, refresh_s: float) -> dict[str, float]:
    """Both ways of reading ``count`` keys (a tenth of them revoked)."""
    storage = Storage.open(tempfile.mkdtemp(prefix="keys-bench-"))
    record, _ = new_key("predict", "bench", "bench", datetime.now(timezone.utc), set())
    records = [replace(record, id=f"{i:08x}") for i in range(count)]
    for key in records:
        storage.create_json(asdict(key), *KEYS_DIR, f"{key.id}.json")
    for key in records[::10]:
        storage.create_json({"revoked_at": "2026-11-30T00:00:00", "revoked_by": "bench"}, *REVOKED_DIR, f"{key.id}.json")
    storage.write_json({"keys": [asdict(k) for k in records]}, "plain", "keys.json")
    assert len(read_keys(storage)) == count
    per_file = timed(lambda: read_keys(storage), repeats)
    one_file = timed(lambda: json.loads(storage.read_bytes("plain", "keys.json")), repeats)
    return {"keys": count, "raysys_ms": per_file * 1e3, "one_file_ms": one_file * 1e3,
            "ratio": per_file / one_file, "core_pct": per_file / refresh_s * 100}


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--keys", default="10,100,1000", help="key counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--refresh-s", type=float, default=2.0, help="serve.auth_refresh_s")
    args = parser.parse_args()
    print("| keys | raysys read_keys ms | one keys.json ms | raysys/plain | share of a core per replica |")
    print("|---|---|---|---|---|")
    for count in (int(k) for k in args.keys.split(",")):
        row = measure(count, args.repeats, args.refresh_s)
        print(f"| {row['keys']} | {row['raysys_ms']:.2f} | {row['one_file_ms']:.2f} | {row['ratio']:.1f}x "
              f"| {row['core_pct']:.2f} % |")


if __name__ == "__main__":
    main()
