"""``raysys train | evaluate | run``, ``raysys models …`` and ``raysys runs …``."""

from __future__ import annotations

import getpass
from pathlib import Path
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

models_app = typer.Typer(help="List, show and promote registered model versions.", no_args_is_help=True)
runs_app = typer.Typer(help="Local records of train, tune and evaluate runs.", no_args_is_help=True)

DatasetOption = Annotated[str, typer.Option("--data", help="Dataset version to use.")]


@handle_errors
def train(data: DatasetOption = "latest", config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Train on Ray Train, evaluate on the test split and register the model."""
    rs = system(config)
    with progress(f"Training a {rs.config.model.type} on {rs.config.train.num_workers} Ray Train worker(s)…", as_json):
        result = rs.models.train(data)
    emit(result.to_dict(), as_json, _render_train)


@handle_errors
def evaluate(
    model: Annotated[str, typer.Option("--model", help="Version number, 'latest' or an alias.")] = "latest",
    data: Annotated[str | None, typer.Option("--data", help="Dataset version (default: the model's own).")] = None,
    split: Annotated[str, typer.Option("--split", help="train, val or test.")] = "test",
    cv: Annotated[bool, typer.Option("--cv", help="k-fold cross-validation of the configured model instead.")] = False,
    folds: Annotated[int | None, typer.Option("--folds", min=2, help="Folds for --cv (default: evaluate.folds).")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Evaluate a registered model (metrics, baseline, slices), or cross-validate with --cv."""
    rs = system(config)
    if cv:
        with progress("Cross-validating, folds in parallel on Ray…", as_json):
            result = rs.models.cross_validate(data or "latest", folds)
        emit(result, as_json, _render_cv)
        return
    with progress(f"Evaluating model {model} on the {split} split…", as_json):
        result = rs.models.evaluate(model, data, split)
    emit(result, as_json, _render_evaluation)


@handle_errors
def run(
    tune: Annotated[bool, typer.Option("--tune", help="Search the tune.space first; register the best trial.")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    r"""The whole offline pipeline: ingest → validate → preprocess → \[tune] → train → evaluate → register."""
    rs = system(config)
    with progress("Ingesting, tuning and training…" if tune else "Ingesting and training…", as_json):
        result = rs.run(tune=tune)
    emit(result, as_json, _render_train)


@models_app.command("list")
@handle_errors
def list_models(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Registered versions of this project's model."""
    rs = system(config)
    versions = [v.to_dict() for v in rs.models.list()]
    emit({"model": rs.models.name, "versions": versions}, as_json, _render_versions)


@models_app.command("show")
@handle_errors
def show_model(
    version: Annotated[str, typer.Argument(help="Version number, 'latest' or an alias.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """One registered version: metrics, lineage, aliases, permutation importance."""
    models = system(config).models
    shown = models.show(version)
    emit({**shown.to_dict(), "importance": models.importance(str(shown.version))}, as_json, _render_model)


@models_app.command("promote")
@handle_errors
def promote(
    version: Annotated[str, typer.Argument(help="Version number or alias to point at.")],
    alias: Annotated[str, typer.Option("--alias", help="champion, challenger, shadow or a custom name.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the alias history).")] = "promoted from the CLI",
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move an alias to a version (recorded with who, when and why)."""
    move = system(config).models.promote(version, alias, getpass.getuser(), reason)
    emit(move.to_dict(), as_json, lambda m: out_console.print(f"{m['alias']} → v{m['to_version']} (was {m['from_version']})"))


@models_app.command("card")
@handle_errors
def card(
    version: Annotated[str, typer.Argument(help="Version number, 'latest' or an alias.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the Markdown here (default: stdout).")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """A Markdown model card: intended use, data, metrics, training, production history, releases."""
    rs = system(config)
    with progress(f"Writing the model card of {version} (evaluating it on its test split)…", as_json):
        model_card = rs.card(version)
    written = str(model_card.write(output)) if output is not None else None

    def render(data: dict[str, Any]) -> None:
        if written is None:
            typer.echo(model_card.markdown, nl=False)
        else:
            out_console.print(f"model card of {data['model']['name']} v{data['model']['version']} written to {written}")

    emit({**model_card.data, "written_to": written}, as_json, render)


@runs_app.command("list")
@handle_errors
def list_runs(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Train, tune and evaluate runs, newest first."""
    emit({"runs": system(config).models.runs()}, as_json, _render_runs)


@runs_app.command("show")
@handle_errors
def show_run(
    run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """One run: config, metrics history, summary, model reference."""
    emit(system(config).models.run(run_id), as_json, lambda r: out_console.print_json(data=r, default=str))


def _render_train(r: dict[str, Any]) -> None:
    out_console.print(f"registered [bold]{r['model']} v{r['version']}[/bold] (run {r['run_id']}, {r['epochs']} epochs)")
    _render_evaluation(r["metrics"])
    promotion = r.get("promotion")
    if promotion and promotion["promoted"]:
        out_console.print(f"champion → v{promotion['version']} (the first: {promotion['reason']})")
    elif promotion:
        out_console.print(f"no champion yet: v{promotion['version']} was not made one ({promotion['reason']}); "
                          f"`raysys models promote {promotion['version']} --alias champion` overrides")


def _render_evaluation(r: dict[str, Any]) -> None:
    names = list(r["metrics"])
    rows = [[name, _fmt(r["metrics"].get(name)), _fmt(r["baseline"].get(name))] for name in names]
    out_console.print(table(f"{r['split_rows']:,} rows", ["metric", "model", "baseline"], rows))


def _render_cv(r: dict[str, Any]) -> None:
    rows = [[name, _fmt(v["mean"]), _fmt(v["std"])] for name, v in r["summary"].items() if name != "n"]
    out_console.print(table(f"{r['folds']}-fold cross-validation of {r['dataset_version']}", ["metric", "mean", "std"], rows))


def _render_versions(r: dict[str, Any]) -> None:
    rows = [[v["version"], v["created_at"][:19], ", ".join(v["aliases"]), v["lineage"].get("dataset_version"),
             _fmt(next(iter(v["metrics"].values()), None))] for v in r["versions"]]
    out_console.print(table(f"Model '{r['model']}'", ["version", "created", "aliases", "dataset", "first metric"], rows))


def _render_model(v: dict[str, Any]) -> None:
    out_console.print_json(data=v, default=str)


def _render_runs(r: dict[str, Any]) -> None:
    rows = [[x.get("run_id"), x.get("kind"), x.get("status"), str(x.get("started_at", ""))[:19]] for x in r["runs"]]
    out_console.print(table("Runs", ["run", "kind", "status", "started"], rows))


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "" if value is None else str(value)


@handle_errors
def tune(data: DatasetOption = "latest", config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Search the tune.space with Ray Tune (ASHA, Optuna), then retrain the best and register it."""
    rs = system(config)
    with progress(f"Tuning: {rs.config.tune.num_samples} trials…", as_json):
        result = rs.models.tune(data)
    emit(result, as_json, _render_tune)


def _render_tune(r: dict[str, Any]) -> None:
    out_console.print(f"best of {len(r['trials'])} trials: {r['best_params']} → {r['best_metrics']}")
    _render_train(r["model"])
