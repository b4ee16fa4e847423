"""The README stays true: its config example is valid and its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from raysys.cli.main import app
from raysys.config import parse_config

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_config_example_is_valid():
    block = re.search(r"```yaml\n(.*?)```", README, re.DOTALL).group(1)
    config = parse_config(yaml.safe_load(block), "README.md")
    assert config.data.label == "churned" and config.data.split.kind == "stratified"


def test_documented_cli_commands_exist():
    commands = set(re.findall(r"raysys data (\w+)", README))
    assert {"ingest", "validate", "versions", "show", "diff", "preprocess"} <= commands
    for command in commands:
        assert CliRunner().invoke(app, ["data", command, "--help"]).exit_code == 0, command


def test_make_targets_exist():
    makefile = (Path(__file__).parent.parent / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in README and re.search(rf"^{target}:", makefile, re.MULTILINE)


def test_documented_serving_commands_exist():
    for args in (["serve", "up"], ["serve", "status"], ["serve", "down"], ["deploy"], ["rollback"], ["predict"]):
        assert f"raysys {' '.join(args)}" in README, args
        assert CliRunner().invoke(app, [*args, "--help"]).exit_code == 0, args
