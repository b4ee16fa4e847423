"""The end-to-end demo behind ``make demo``: what raysys can do today, on local Ray.

Data layer: ingest the quickstart's drifting churn stream, quarantine faulty rows, append the
next micro-batches of the stream, diff the versions, split, and fit preprocessing on train.
Modeling layer: train on Ray Train, evaluate against the trivial baseline, register the model
and make it the champion. Serving layer: put the champion behind Ray Serve, send it requests
over HTTP, read them back from the prediction log, take the server down.
Run with ``python -m raysys.demo [--config PATH]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from raysys.cli.common import table
from raysys.data import synthetic
from raysys.runtime import quiet_logs
from raysys.system import System

console = Console()


def step(title: str, fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run one stage with a spinner and report its time."""
    started = time.perf_counter()
    with console.status(f"{title}…"):
        result = fn()
    elapsed = time.perf_counter() - started
    console.print(f"[green]✔[/green] {title} [dim]({elapsed:.1f} s)[/dim]")
    return result, elapsed


def next_batch(rs: System, start: int, rows: int):
    """Rows of the configured synthetic stream past the ingested ones, as logs would deliver them."""
    source = rs.config.data.source
    following = source.model_copy(update={"offset": source.offset + source.rows + start, "rows": rows})
    return synthetic.generate_rows(following, 0, rows)


def drift_table(diff: dict[str, Any], columns: dict[str, Any]):
    """The biggest changes between two versions: numeric mean shifts and category shares."""
    rows = []
    for name, change in diff["columns"].items():
        if columns[name].get("unique") or change["type"] == "timestamp":
            continue
        if change.get("mean_shift_std") is not None:
            rows.append((abs(change["mean_shift_std"]), name, f"mean {change['mean_shift_std']:+.3f} std"))
        for freq in change.get("frequency_changes", [])[:1]:
            rows.append((abs(freq["change"]) * 4, name, f"'{freq['value']}' share {freq['old']:.1%} → {freq['new']:.1%}"))
    rows.sort(reverse=True)
    return table(f"Drift {diff['old'][:8]} → {diff['new'][:8]}", ["column", "change"], [[n, text] for _, n, text in rows[:6]])


def run(config: str) -> dict[str, Any]:
    """Run the demo and return its summary."""
    quiet_logs()
    rs = System.from_config(config)
    console.rule(f"raysys demo — {rs.config.project.name}")
    console.print(f"storage root: {rs.storage.uri}")
    ingested, t_ingest = step(f"Ingest {rs.config.data.source.rows:,} synthetic rows", rs.data.ingest)
    report = ingested.report
    console.print(
        f"  version [bold]{ingested.manifest.version}[/bold] ({'new' if ingested.created else 'unchanged'}): "
        f"read {report['rows_read']:,} = accepted {report['accepted']:,} + quarantined {report['quarantined']:,}"
    )
    for reason, count in list(report["quarantine_reasons"].items())[:5]:
        console.print(f"  quarantine: {count:>5,} × {reason}")
    batches = [rs.data.append(next_batch(rs, start, 25_000)) for start in (0, 25_000)]
    appended = batches[-1]
    console.print(f"[green]✔[/green] Appended 2 drifted micro-batches of 25,000 rows: quarantined {sum(b.report['quarantined'] for b in batches):,}")
    old, new = ingested.manifest.version, appended.manifest.version
    console.print(drift_table(rs.data.diff(old, new), rs.data.show(new).columns))
    artifact, t_features = step("Split (stratified) and fit preprocessing on train", lambda: rs.data.fit_features(new))
    counts = rs.data.split_counts(new)
    transformed, t_transform = step("Transform the test split with Ray Data", lambda: rs.data.transform(artifact, split="test").count())
    trained, t_train = step("Train on Ray Train, evaluate on test, register", lambda: rs.models.train(new))
    rs.models.promote(str(trained.model.version), "champion", "demo", "first model of the demo")
    test = trained.metrics
    console.print(table(f"Model {trained.model.name} v{trained.model.version} on {test['split_rows']:,} test rows",
                        ["metric", "model", "baseline"],
                        [[k, f"{v:.4f}", f"{test['baseline'][k]:.4f}"] for k, v in test["metrics"].items()
                         if isinstance(v, float)]))
    served, t_serve = step("Serve the champion on Ray Serve and send 200 HTTP requests", lambda: serve_demo(rs, new))
    console.print(f"  {served['url']}/v1/predict: p50 {served['p50_ms']:.1f} ms, p99 {served['p99_ms']:.1f} ms; "
                  f"{served['logged']} predictions in the prediction log; example answer: {served['example']}")
    summary = {
        "versions": [old, new],
        "rows": appended.manifest.row_count,
        "quarantined": appended.manifest.quarantined_count,
        "splits": counts,
        "features": artifact.id,
        "feature_columns": len(artifact.state.output_columns),
        "test_rows_transformed": transformed,
        "model": {"version": trained.model.version, "alias": "champion", "metrics": test["metrics"]},
        "serving": served,
        "seconds": {"ingest": t_ingest, "fit": t_features, "transform": t_transform, "train": t_train,
                    "serve": t_serve},
    }
    rows = [
        ["dataset versions", f"{old} → {new}"],
        ["rows (accepted / quarantined)", f"{summary['rows']:,} / {summary['quarantined']:,}"],
        ["splits", ", ".join(f"{k} {v:,}" for k, v in counts.items())],
        ["preprocessing", f"{artifact.id} ({summary['feature_columns']} features)"],
        ["test rows transformed", f"{transformed:,}"],
        ["champion model", (f"v{trained.model.version}: accuracy {test['metrics']['accuracy']:.3f} "
                            f"(baseline {test['baseline']['accuracy']:.3f})")],
        ["online serving", f"200 requests, p50 {served['p50_ms']:.1f} ms, all logged: {served['logged'] >= 200}"],
    ]
    console.print(table("Summary", ["", ""], rows))
    console.print(f"Next: `.venv/bin/raysys data versions -c {config}`, `raysys models list -c {config}`, "
                  f"`raysys runs list -c {config}`, `raysys serve up -c {config}`.")
    return summary


def serve_demo(rs: System, version: str, requests_count: int = 200) -> dict[str, Any]:
    """Serve the champion, time one-record requests from the test split, check the log, stop."""
    import numpy as np
    import requests

    rows = rs.data.read(version, split="test").limit(requests_count).to_pandas()
    inputs = rs.models.load("champion").state.input_columns
    records = [{c: _plain(row[c]) for c in inputs} for _, row in rows.iterrows()]
    rs.serving.up()
    try:
        url, latencies, session = rs.serving.url, [], requests.Session()
        for record in records:
            started = time.perf_counter()
            answer = session.post(f"{url}/v1/predict", json={"records": record}, timeout=30)
            answer.raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
        example = answer.json()
        deadline = time.monotonic() + 15
        while len(rs.serving.prediction_log()) < len(records) and time.monotonic() < deadline:
            time.sleep(0.5)
        logged = len(rs.serving.prediction_log())
    finally:
        rs.serving.down()
    return {"url": url, "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
            "logged": logged, "example": {k: example[k] for k in ("model_version", "predictions", "probabilities")}}


def _plain(value: Any) -> Any:
    """JSON-ready scalars (numpy → Python, NaN/NaT → null)."""
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value.item() if hasattr(value, "item") else value


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", "-c", default="configs/quickstart.yaml")
    args = parser.parse_args()
    run(args.config)


if __name__ == "__main__":
    main()
