"""``raysys data …``: ingest, validate, list, show and diff dataset versions."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from raysys.cli.common import (
    ConfigOption,
    JsonOption,
    emit,
    handle_errors,
    out_console,
    progress,
    system,
    table,
)

app = typer.Typer(help="Ingest, validate and version datasets.", no_args_is_help=True)


@app.command()
@handle_errors
def ingest(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Read the configured source, validate it and publish a dataset version."""
    rs = system(config)
    with progress(f"Ingesting {rs.config.data.source.kind} source into '{rs.config.data.name}'…", as_json):
        result = rs.data.ingest()
    emit(result.to_dict(), as_json, _render_ingest)


@app.command()
@handle_errors
def validate(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Validate the configured source without publishing anything."""
    rs = system(config)
    with progress(f"Validating {rs.config.data.source.kind} source…", as_json):
        result = rs.data.validate()
    emit({"valid": True, **result.report}, as_json, _render_ingest)


@app.command()
@handle_errors
def versions(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List the dataset's versions, oldest first."""
    rs = system(config)
    rows = [m.summary() for m in rs.data.versions()]
    emit({"dataset": rs.config.data.name, "versions": rows}, as_json, _render_versions)


@app.command()
@handle_errors
def show(
    version: Annotated[str, typer.Argument(help="Version id, unique prefix, 'latest' or 'latest~N'.")] = "latest",
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a version's manifest: schema, counts, source, statistics."""
    manifest = system(config).data.show(version)
    emit(manifest.to_dict() | {"stats_partial": None}, as_json, _render_manifest)


@app.command()
@handle_errors
def diff(
    old: Annotated[str, typer.Argument(help="The older version.")],
    new: Annotated[str, typer.Argument(help="The newer version.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Compare two versions: schema and per-column statistics."""
    emit(system(config).data.diff(old, new), as_json, _render_diff)


@app.command()
@handle_errors
def preprocess(
    version: Annotated[str, typer.Argument(help="Version to split and fit on.")] = "latest",
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Split a version and fit the configured preprocessing on its train split."""
    rs = system(config)
    with progress("Splitting and fitting preprocessing on the train split…", as_json):
        artifact = rs.data.fit_features(version)
        counts = rs.data.split_counts(artifact.version)
    result = {"features": artifact.id, "version": artifact.version, "splits": counts,
              "output_columns": artifact.state.output_columns}
    emit(result, as_json, _render_preprocess)


def _render_ingest(result: dict[str, Any]) -> None:
    if "version" in result:
        state = "new version" if result["created"] else "unchanged (identical data)"
        out_console.print(f"[bold]{result['version']}[/bold] {state}")
    out_console.print(f"rows read {result['rows_read']:,} = accepted {result['accepted']:,} + quarantined {result['quarantined']:,}")
    if result["quarantine_reasons"]:
        rows = [[reason, f"{count:,}"] for reason, count in result["quarantine_reasons"].items()]
        out_console.print(table("Quarantine reasons", ["reason", "rows"], rows))


def _render_versions(result: dict[str, Any]) -> None:
    rows = [[v["version"], v["created_at"][:19], f"{v['rows']:,}", f"{v['quarantined']:,}", v["source"], v["parent"]] for v in result["versions"]]
    out_console.print(table(f"Dataset '{result['dataset']}'", ["version", "created", "rows", "quarantined", "source", "parent"], rows))


def _render_manifest(m: dict[str, Any]) -> None:
    out_console.print(f"[bold]{m['name']}@{m['version']}[/bold]  created {m['created_at'][:19]}  parent {m['parent']}")
    out_console.print(f"rows {m['row_count']:,}  quarantined {m['quarantined_count']:,}  source {m['source'].get('kind')}")
    rows = []
    for name, kind in m["schema"].items():
        s = m["stats"].get(name, {})
        rows.append([name, kind, f"{s.get('null_rate') or 0:.2%}", _fmt(s.get("min")), _fmt(s.get("max")), _fmt(s.get("mean")), _fmt(s.get("std"))])
    out_console.print(table("Columns", ["column", "type", "nulls", "min", "max", "mean", "std"], rows))


def _render_diff(d: dict[str, Any]) -> None:
    out_console.print(f"{d['old']} → {d['new']}: rows {d['rows']['old']:,} → {d['rows']['new']:,}")
    for key in ("added", "removed", "type_changed"):
        if d.get(key):
            out_console.print(f"columns {key.replace('_', ' ')}: {d[key]}")
    rows = []
    for name, c in d.get("columns", {}).items():
        rows.append([name, _fmt(c.get("mean_shift_std")), _fmt(c.get("null_rate_change")), ", ".join(map(str, c.get("categories_added", []))), ", ".join(map(str, c.get("categories_removed", [])))])
    out_console.print(table("Column changes", ["column", "mean shift (std)", "null rate Δ", "new categories", "gone categories"], rows))


def _render_preprocess(r: dict[str, Any]) -> None:
    out_console.print(f"features [bold]{r['features']}[/bold] fitted on the train split of {r['version']}")
    out_console.print("splits: " + ", ".join(f"{k} {v:,}" for k, v in r["splits"].items()))
    out_console.print(f"{len(r['output_columns'])} feature columns")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
