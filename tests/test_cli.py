"""The ``raysys`` command line: exit codes, one-line errors and one JSON object with --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from raysys.cli.main import app
from tests.data.test_ingest import SCHEMA, orders
from tests.user_shell import clean_env

runner = CliRunner()


@pytest.fixture()
def config(write_config, tmp_path, ray_session) -> Path:
    orders(30).to_parquet(tmp_path / "orders.parquet")
    source = {"kind": "parquet", "path": str(tmp_path / "orders.parquet")}
    return write_config({"data": {"name": "orders", "source": source, "schema": {"columns": SCHEMA},
                                  "label": "churned", "task": "binary"}})


def run(*args: str, env: dict | None = None):
    return runner.invoke(app, list(args), env=env)


def error_line(result) -> str:
    """The one error line on stderr (progress lines may come before it)."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    return errors[0]


def as_json(result) -> dict:
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


def test_ingest_versions_show_diff_preprocess_as_json(config, tmp_path):
    first = as_json(run("data", "ingest", "-c", str(config), "--json"))
    assert first["created"] and first["accepted"] == 30 and first["reconciled"]
    orders(35).to_parquet(tmp_path / "orders.parquet")
    second = as_json(run("data", "ingest", "--config", str(config), "--json"))
    listed = as_json(run("data", "versions", "-c", str(config), "--json"))
    assert [v["version"] for v in listed["versions"]] == [first["version"], second["version"]]
    shown = as_json(run("data", "show", second["version"][:7], "-c", str(config), "--json"))
    assert shown["row_count"] == 35 and shown["parent"] == first["version"]
    diff = as_json(run("data", "diff", first["version"], "latest", "-c", str(config), "--json"))
    assert diff["rows"] == {"old": 30, "new": 35, "change": 5}
    prep = as_json(run("data", "preprocess", "-c", str(config), "--json"))
    assert sum(prep["splits"].values()) == 35 and "plan=basic" in prep["output_columns"]


def test_text_output_for_people(config):
    result = run("data", "ingest", "-c", str(config))
    assert result.exit_code == 0 and "new version" in result.stdout
    assert "rows read 30 = accepted 30 + quarantined 0" in result.stdout
    shown = run("data", "show", "-c", str(config))
    assert shown.exit_code == 0 and "amount" in shown.stdout


def test_config_from_environment_and_default_file(config, tmp_path, monkeypatch):
    assert run("data", "versions", "--json", env={"RAYSYS_CONFIG": str(config)}).exit_code == 0
    monkeypatch.chdir(tmp_path)
    assert config.name == "raysys.yaml"
    assert run("data", "versions", "--json").exit_code == 0


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["data"]["source"].update(bogus=1), "data.source.bogus: unknown field"),
        (lambda c: c["data"].update(batch_rows="many"), "data.batch_rows: input should be a valid integer"),
        (lambda c: c["data"]["source"].pop("path"), "data.source.path: field required"),
    ],
)
def test_invalid_config_is_one_line_and_exit_1(config, edit, message):
    import yaml

    data = yaml.safe_load(config.read_text())
    edit(data)
    config.write_text(yaml.safe_dump(data))
    result = run("data", "ingest", "-c", str(config))
    assert result.exit_code == 1 and message in error_line(result)
    payload = as_json(run("data", "ingest", "-c", str(config), "--json"))
    assert message in payload["error"]


def test_missing_config_file(tmp_path):
    result = run("data", "versions", "-c", str(tmp_path / "none.yaml"))
    assert result.exit_code == 1 and "none.yaml: config file not found" in result.stderr


def test_unknown_version_and_validation_failure(config, tmp_path):
    result = run("data", "show", "deadbeef", "-c", str(config))
    assert result.exit_code == 1 and "has no versions yet" in result.stderr
    pd.concat([orders(5), orders(5)]).to_parquet(tmp_path / "orders.parquet")
    failed = run("data", "validate", "-c", str(config), "--json")
    assert failed.exit_code == 1
    payload = as_json(failed)
    assert "appear more than once" in payload["error"] and payload["report"]["rows_read"] == 10


def test_malformed_csv_is_a_one_line_error(write_config, tmp_path, ray_session):
    (tmp_path / "bad.csv").write_text("id,amount,plan,churned\n1,2,basic,0\n2,3\n")
    config = write_config({"data": {"name": "orders", "source": {"kind": "csv", "path": str(tmp_path / "bad.csv")},
                                    "schema": {"columns": SCHEMA}}})
    result = run("data", "ingest", "-c", str(config))
    assert result.exit_code == 1 and "Expected 4 columns, got 2" in error_line(result)


def test_console_script_joins_the_session_ray(config, ray_session):
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address)
    script = Path(sys.executable).with_name("raysys")
    done = subprocess.run([str(script), "data", "ingest", "-c", str(config), "--json"],
                          check=False, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["accepted"] == 30
    bad = subprocess.run([str(script), "data", "show", "nope", "-c", str(config)],
                         check=False, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "no version 'nope'" in bad.stderr and "Traceback" not in bad.stderr


def console_script(*args: str, home: Path) -> subprocess.CompletedProcess:
    """``raysys ARGS`` as a user's shell runs it: a clean environment, no RAY_* variables, wide terminal."""
    env = clean_env(home)
    return subprocess.run([str(Path(sys.executable).with_name("raysys")), *args], env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def test_version_and_help_as_a_new_user_sees_them(tmp_path):
    import importlib.metadata

    import raysys

    version = console_script("--version", home=tmp_path / "home")
    assert (version.returncode, version.stdout) == (0, f"raysys {raysys.__version__}\n"), version.stderr
    assert importlib.metadata.version("raysys") == raysys.__version__  # one version, in the package
    shown = console_script("--help", home=tmp_path / "home")
    assert shown.returncode == 0 and "preprocess → [tune] → train → evaluate → register" in shown.stdout


def test_no_help_text_is_eaten_as_console_markup():
    import typer
    from rich.text import Text

    def texts(command):  # a click command or group
        yield command.help or ""
        yield from (getattr(param, "help", None) or "" for param in command.params)
        for sub in getattr(command, "commands", {}).values():
            yield from texts(sub)

    helps = [text for text in texts(typer.main.get_command(app)) if text]
    assert len(helps) > 40
    for text in helps:  # what Rich shows is the text itself; a literal "[" is written "\["
        assert Text.from_markup(text).plain == text.replace("\\[", "["), text
