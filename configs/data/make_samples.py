"""Make the small sample files the example configs read; deterministic, so safe to re-run.

    .venv/bin/python configs/data/make_samples.py            # writes next to this script
    .venv/bin/python configs/data/make_samples.py --out DIR  # writes into DIR

Writes:

- ``churn_sample.csv``: 500 rows of the synthetic churn table with a few deliberately bad
  values (see ``CSV_FAULTS``), so an ingest quarantines them.
- ``churn_sample.parquet``: the same 500 rows, clean, as Parquet.
- ``app_logs.jsonl``: 300 application log records (nested ``user`` object), plus 2
  malformed lines.
- ``shop.db``: a SQLite database with one table, ``orders`` (400 rows).

The text files are byte-for-byte reproducible; the Parquet and SQLite files hold the same data on
every run, but their bytes may differ across library versions.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd

from raysys.config import SyntheticSource
from raysys.data.synthetic import generate_rows

HERE = Path(__file__).resolve().parent

CHURN_ROWS = 500
CHURN_SEED = 11
LOG_RECORDS = 300
LOG_SEED = 23
ORDER_ROWS = 400
ORDER_SEED = 31

#: (row, column, bad value) written into churn_sample.csv; the Parquet copy stays clean.
CSV_FAULTS = (
    (17, "age", "forty-two"),  # not a number
    (58, "plan", "platinum"),  # not an allowed category
    (133, "region", ""),  # empty required cell
    (214, "monthly_spend", "-12.50"),  # below min 0
    (371, "churned", "maybe"),  # label not 0/1
)


def churn_frame() -> pd.DataFrame:
    """The clean churn rows: 50 rows a day from 2026-01-01, so 10 days in all."""
    spec = SyntheticSource(
        kind="synthetic", rows=CHURN_ROWS, seed=CHURN_SEED, start_time=datetime(2026, 1, 1),
        rows_per_day=50,
    )
    return generate_rows(spec, 0, CHURN_ROWS)


def churn_csv_text(frame: pd.DataFrame) -> str:
    """The churn rows as CSV text with CSV_FAULTS applied."""
    text = frame.astype(object)
    text["event_time"] = frame["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    text["monthly_spend"] = frame["monthly_spend"].map("{:.2f}".format)
    text["discount_pct"] = frame["discount_pct"].map("{:.1f}".format)
    for row, column, value in CSV_FAULTS:
        text.loc[row, column] = value
    return text.to_csv(index=False, lineterminator="\n")


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    frame = frame.copy()
    frame["event_time"] = frame["event_time"].astype("datetime64[us]")
    frame.to_parquet(path, index=False, compression="zstd")


# --------------------------------------------------------------------------- application logs

_SERVICES = {  # service: (endpoints, typical latency in ms)
    "checkout": (["/cart", "/checkout", "/payment"], 120.0),
    "search": (["/search", "/suggest"], 45.0),
    "auth": (["/login", "/refresh"], 25.0),
    "inventory": (["/stock", "/reserve"], 60.0),
}
_POST_ENDPOINTS = ("/checkout", "/payment", "/login", "/reserve")
_PLAN_FACTOR = {"free": 1.3, "basic": 1.0, "premium": 0.8}
_ERRORS = {500: "upstream timeout", 502: "bad gateway", 503: "service unavailable",
           400: "invalid request body", 404: "item not found", 429: "rate limited"}


def log_lines() -> list[str]:
    """300 JSON log lines, in time order, then 2 malformed lines inserted among them."""
    rng = random.Random(LOG_SEED)
    start = datetime(2026, 3, 2, 8, 0, 0, tzinfo=timezone.utc)
    t = start
    lines = []
    for i in range(LOG_RECORDS):
        t += timedelta(milliseconds=rng.randint(200, 20_000))
        service = rng.choice(sorted(_SERVICES))
        endpoints, typical = _SERVICES[service]
        endpoint = rng.choice(endpoints)
        anonymous = rng.random() < 0.15
        plan = None if anonymous else rng.choices(["free", "basic", "premium"], [5, 3, 2])[0]
        roll = rng.random()
        if roll < 0.88:
            status = 200
        else:
            status = rng.choice([400, 404, 429] if roll < 0.95 else [500, 502, 503])
        latency = typical * _PLAN_FACTOR[plan or "free"] * math.exp(rng.gauss(0.0, 0.45))
        if status >= 500:
            latency *= 6.0
        level = "ERROR" if status >= 500 else "WARN" if status >= 400 else "INFO"
        record = {
            "ts": t.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": level,
            "service": service,
            "endpoint": endpoint,
            "method": "POST" if endpoint in _POST_ENDPOINTS else "GET",
            "status": status,
            "latency_ms": round(latency, 1),
            "trace_id": f"{rng.getrandbits(64):016x}",
            "user": None if anonymous else {"id": rng.randint(1, 250), "plan": plan},
        }
        if status >= 400:
            record["error"] = _ERRORS[status]
        lines.append(json.dumps(record, separators=(", ", ": ")))
    lines.insert(97, '{"ts": "2026-03-02T08:27:13.402Z", "level": "INFO", "service": "search", '
                     '"endpoint": "/search", "status": 200, "latency_ms": 4')  # truncated write
    lines.insert(211, "upstream connect error or disconnect/reset before headers")  # not JSON
    return lines


def log_text() -> str:
    return "\n".join(log_lines()) + "\n"


# --------------------------------------------------------------------------- SQLite shop

_COUNTRIES = (("US", 40), ("DE", 15), ("GB", 15), ("FR", 10), ("NL", 8), ("PL", 7), ("ES", 5))
_RETURN_BASE = {"US": 0.08, "DE": 0.18, "GB": 0.10, "FR": 0.12, "NL": 0.15, "PL": 0.06, "ES": 0.09}


def order_rows() -> list[tuple]:
    """(order_id, customer_id, amount, country, created_at, returned) for 400 orders."""
    rng = random.Random(ORDER_SEED)
    names, weights = zip(*_COUNTRIES)
    t = datetime(2025, 11, 1, 9, 0, 0)
    rows = []
    for i in range(ORDER_ROWS):
        t += timedelta(seconds=rng.randint(60, 9_000))
        country = rng.choices(names, weights)[0]
        amount = round(min(max(math.exp(rng.gauss(3.8, 0.8)), 3.0), 2_500.0), 2)
        p_return = min(_RETURN_BASE[country] * (1.0 + amount / 150.0), 0.9)
        returned = int(rng.random() < p_return)
        rows.append((10_001 + i, rng.randint(1, 180), amount, country,
                     t.strftime("%Y-%m-%dT%H:%M:%S"), returned))
    return rows


def write_sqlite(path: Path) -> None:
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.execute(
            "CREATE TABLE orders ("
            " order_id INTEGER PRIMARY KEY,"
            " customer_id INTEGER NOT NULL,"
            " amount REAL NOT NULL,"
            " country TEXT NOT NULL,"
            " created_at TEXT NOT NULL,"
            " returned INTEGER NOT NULL CHECK (returned IN (0, 1)))"
        )
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)", order_rows())
        conn.commit()
    finally:
        conn.close()


# --------------------------------------------------------------------------- main


def make_samples(out: Path) -> list[Path]:
    """Write every sample file into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    churn = churn_frame()
    paths = [out / name for name in
             ("churn_sample.csv", "churn_sample.parquet", "app_logs.jsonl", "shop.db")]
    csv_path, parquet_path, logs_path, db_path = paths
    csv_path.write_bytes(churn_csv_text(churn).encode("utf-8"))
    write_parquet(churn, parquet_path)
    logs_path.write_bytes(log_text().encode("utf-8"))
    write_sqlite(db_path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE,
                        help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    for path in make_samples(args.out):
        print(f"{path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
