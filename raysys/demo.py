"""The end-to-end demo behind ``make demo``: what raysys can do today, on local Ray.

Data layer: ingest the quickstart's drifting churn stream, quarantine faulty rows, append the
next micro-batches of the stream, diff the versions, split, and fit preprocessing on train.
Modeling layer: train on Ray Train, evaluate against the trivial baseline, register the model
and make it the champion.
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
    summary = {
        "versions": [old, new],
        "rows": appended.manifest.row_count,
        "quarantined": appended.manifest.quarantined_count,
        "splits": counts,
        "features": artifact.id,
        "feature_columns": len(artifact.state.output_columns),
        "test_rows_transformed": transformed,
        "model": {"version": trained.model.version, "alias": "champion", "metrics": test["metrics"]},
        "seconds": {"ingest": t_ingest, "fit": t_features, "transform": t_transform, "train": t_train},
    }
    rows = [
        ["dataset versions", f"{old} → {new}"],
        ["rows (accepted / quarantined)", f"{summary['rows']:,} / {summary['quarantined']:,}"],
        ["splits", ", ".join(f"{k} {v:,}" for k, v in counts.items())],
        ["preprocessing", f"{artifact.id} ({summary['feature_columns']} features)"],
        ["test rows transformed", f"{transformed:,}"],
        ["champion model", (f"v{trained.model.version}: accuracy {test['metrics']['accuracy']:.3f} "
                            f"(baseline {test['baseline']['accuracy']:.3f})")],
    ]
    console.print(table("Summary", ["", ""], rows))
    console.print(f"Next: `.venv/bin/raysys data versions -c {config}`, `raysys models list -c {config}`, "
                  f"`raysys runs list -c {config}`.")
    return summary


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", "-c", default="configs/quickstart.yaml")
    args = parser.parse_args()
    run(args.config)


if __name__ == "__main__":
    main()
