"""What ``"explain": true`` costs a ``/v1/predict`` request: the replica's work with and without it.

A replica answers a request with ``answer()`` (features, network) and, when asked, adds
``explain()`` (integrated gradients or gradient × input on the same network). This script times
both in-process on the quickstart's model (its MLP and features, fitted on 5,000 synthetic rows,
random weights: only the shapes matter), for requests of 1, 10 and 100 records, and prints the
median CPU milliseconds per request. HTTP, parsing and logging cost the same with and without, so the
difference is what ``explain`` adds. With ``--url`` it also times real requests against a running
app (``raysys serve up -c configs/quickstart.yaml``)::

    .venv/bin/python benchmarks/explain_bench.py [--runs 30] [--url http://127.0.0.1:8000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from replica_bench import write_model  # the same quickstart model files

SIZES = (1, 10, 100)


def median_ms(work: Callable[[], object], runs: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Median time of ``work()`` over ``runs`` calls (after one warm-up) by ``clock``, in ms."""
    work()
    times = []
    for _ in range(runs):
        started = clock()
        work()
        times.append((clock() - started) * 1000)
    return statistics.median(times)


def in_process(runs: int) -> list[dict]:
    """Per request size, in CPU ms of this process (steady on a busy machine): the answer alone, and
    what IG (32 steps) or gradient × input adds."""
    import pandas as pd

    from raysys.config import load_config
    from raysys.data import synthetic
    from raysys.modeling.explain import explain
    from raysys.modeling.predict import LoadedModel
    from raysys.serving.server import answer

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_model(folder)
        model = LoadedModel({p.name: p.read_bytes() for p in folder.iterdir() if p.name != "rows.json"})
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
    frame = synthetic.generate_rows(cfg.data.source.model_copy(update={"rows": 1000}), 0, 1000)
    results = []
    for size in SIZES:
        rows = {c: frame[c].to_numpy()[:size] for c in model.state.input_columns}
        plain = median_ms(lambda rows=rows: answer(model, pd.DataFrame(rows)), runs, time.process_time)
        ig = median_ms(lambda rows=rows: explain(model, rows, "integrated_gradients", 32), runs, time.process_time)
        gxi = median_ms(lambda rows=rows: explain(model, rows, "gradient_x_input", 32), runs, time.process_time)
        results.append({"records": size, "answer_ms": plain, "ig32_ms": ig, "gradient_x_input_ms": gxi})
    return results


def over_http(url: str, runs: int) -> list[dict]:
    """Per request size: ``/v1/predict`` without and with ``explain: true`` (the app's explain settings)."""
    import requests

    from raysys.config import load_config
    from raysys.data import synthetic

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
    inputs = requests.get(f"{url}/openapi.json", timeout=30).json()["components"]["schemas"]["Record"]["properties"]
    frame = synthetic.generate_rows(cfg.data.source.model_copy(update={"rows": 1000}), 0, 1000)
    records = frame[list(inputs)].astype(object).where(frame[list(inputs)].notna(), None)
    records = [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
               for r in records.to_dict(orient="records")]
    session, results = requests.Session(), []
    for size in SIZES:
        def post(explain: bool, size: int = size) -> None:
            body = {"records": records[:size], **({"explain": True} if explain else {})}
            session.post(f"{url}/v1/predict", json=body, timeout=60).raise_for_status()

        results.append({"records": size, "plain_ms": median_ms(lambda: post(False), runs),
                        "explain_ms": median_ms(lambda: post(True), runs)})
    return results


def main() -> None:
    """Print the table(s) of median milliseconds per request."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--url", help="also time HTTP requests against this running app")
    args = parser.parse_args()
    print("| records | answer (CPU ms) | + IG, 32 steps (CPU ms) | + gradient × input (CPU ms) |")
    print("|---|---|---|---|")
    for row in in_process(args.runs):
        print(f"| {row['records']} | {row['answer_ms']:.2f} | {row['ig32_ms']:.2f} | {row['gradient_x_input_ms']:.2f} |")
    if args.url:
        print("\n| records | /v1/predict (ms) | with explain: true (ms) |")
        print("|---|---|---|")
        for row in over_http(args.url, args.runs):
            print(f"| {row['records']} | {row['plain_ms']:.2f} | {row['explain_ms']:.2f} |")


if __name__ == "__main__":
    main()
