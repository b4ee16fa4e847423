"""The modeling commands: raysys run / train / evaluate / models / runs, with --json and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from raysys.cli.main import app
from tests.modeling.test_train import sklearn_cfg
from tests.test_cli import console_script

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def as_json(result) -> dict:
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout + result.stderr
    return json.loads(lines[0])


@pytest.fixture()
def config(write_config, ray_session):
    return str(write_config(sklearn_cfg("breast_cancer", "binary", epochs=10)))


def test_offline_pipeline_and_registry_commands(config, tmp_path):
    ran = as_json(invoke("run", "-c", config, "--json"))
    assert ran["dataset"]["created"] and ran["version"] == 1
    assert ran["metrics"]["metrics"]["accuracy"] >= 0.93
    listed = as_json(invoke("models", "list", "-c", config, "--json"))
    assert [v["version"] for v in listed["versions"]] == [1]
    promoted = as_json(invoke("models", "promote", "1", "--alias", "champion", "--reason", "first", "-c", config, "--json"))
    assert promoted["to_version"] == 1 and promoted["reason"] == "first"
    shown = as_json(invoke("models", "show", "champion", "-c", config, "--json"))
    assert shown["aliases"] == ["champion"] and shown["lineage"]["run_id"] == ran["run_id"]
    evaluated = as_json(invoke("evaluate", "--model", "champion", "--split", "val", "-c", config, "--json"))
    assert evaluated["model"] == 1 and evaluated["metrics"]["n"] == evaluated["split_rows"]
    # the console script on a Ray of its own: Ray Data's actor-pool warning stays in Ray's log files
    done = console_script("evaluate", "--model", "1", "--split", "val", "-c", config, "--json",
                          home=tmp_path / "home")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["metrics"] == evaluated["metrics"]
    assert "has constructor arguments in the object store" not in done.stderr, done.stderr[-2000:]
    runs = as_json(invoke("runs", "list", "-c", config, "--json"))["runs"]
    assert {r["kind"] for r in runs} == {"train", "evaluate"}
    run = as_json(invoke("runs", "show", ran["run_id"][:14], "-c", config, "--json"))
    assert run["run_id"] == ran["run_id"] and run["history"]

    # a slice column the data lacks: one error line naming it, before Ray starts or a run is recorded
    cfg = yaml.safe_load(Path(config).read_text())
    bad = Path(config).with_name("bad-slices.yaml")
    bad.write_text(yaml.safe_dump({**cfg, "evaluate": {"slices": ["mean_radius", "no such column"]}}))
    for command in (["evaluate", "--model", "1"], ["train"]):
        refused = console_script(*command, "-c", str(bad), home=tmp_path / "home")
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert refused.returncode == 1 and len(errors) == 1, refused.stderr[-2000:]
        assert "evaluate.slices: 'no such column' is not a column of dataset version" in errors[0]
        assert "mean_radius" in errors[0] and "Traceback" not in refused.stderr  # the columns it has are named
    assert len(as_json(invoke("runs", "list", "-c", config, "--json"))["runs"]) == len(runs)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["models", "show", "9"], "model 'breast_cancer-model' does not exist"),
        (["models", "promote", "1", "--alias", "champion"], "does not exist (models: none registered yet)"),
        (["evaluate", "--model", "nope"], "does not exist"),
        (["runs", "show", "train-1999"], "train-1999"),
        (["train", "--data", "feedface"], "no version"),
    ],
)
def test_bad_references_on_an_empty_registry_are_one_line_errors(config, args, message):
    result = invoke(*args, "-c", config)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
