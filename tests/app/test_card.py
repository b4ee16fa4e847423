"""Model cards and W&B lineage of one model version, from training to production.

A copy of the served model's root (data, features, registry, runs: v1 trained with its W&B run,
v2 a perturbed copy) gets a production history the way the monitor makes one: v1 released,
prediction-log and feedback files as serving writes them, :class:`MonitorLoop` steps exporting to
W&B, drifted traffic that opens an incident, a v2 canary and its rollback. The card must show each
section with the values the registry, the manifest, the monitor and the audit log hold, and the
offline W&B files must tie v1's training run to its production monitoring run by one tag.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from raysys.app.card import NO_HISTORY, describe_plan, render_card
from raysys.errors import NotFound
from raysys.modeling.tracking import model_tag
from raysys.monitoring.loop import MonitorLoop
from raysys.monitoring.metrics import WandbExporter
from tests.modeling.test_tracking import finished_records, of_type
from tests.modeling.test_train import system_from
from tests.monitoring.conftest import answered, labels_for, write_log_part
from tests.monitoring.test_monitor_loop import drifted
from tests.user_shell import BIN, clean_env

INTENDED = "Screening support for breast biopsies; never a diagnosis on its own."
MONITOR = {"interval_s": 0.5, "window": {"rows": 100, "min_rows": 50}, "reference_rows": 300,
           "drift": {"backend": "scipy", "multivariate": "none"}, "wandb": True,
           "retrain": {"triggers": []}, "release": {"min_labelled": 10, "settle_labelled": 10}}
SLICE = "target"  # metrics per class
STAT_COLUMN = "mean_radius"


@pytest.fixture(scope="module")
def production(served, tmp_path_factory):
    """(system, config path): v1 with a production history on a copy of the served root."""
    rs, _ = served
    cfg = yaml.safe_load(rs.config_path.read_text())
    source, root = Path(cfg["storage"]["root"]), tmp_path_factory.mktemp("card") / "root"
    keep = ("datasets", "splits", "features", "models", "runs")
    shutil.copytree(source, root, ignore=lambda folder, names: [
        n for n in names if Path(folder) == source and n not in keep])
    cfg = {**cfg, "storage": {"root": str(root)}, "monitor": MONITOR, "evaluate": {"slices": [SLICE]},
           "project": {**cfg["project"], "intended_use": INTENDED}, "serve": {**cfg["serve"], "app_name": "card"}}
    path = root.parent / "raysys.yaml"
    path.write_text(yaml.safe_dump(cfg))
    copy = system_from(cfg, root)
    copy.serving.deploy("1", actor="test", reason="first release")

    train = copy.data.read("latest", split="train").to_pandas()
    tracker = WandbExporter(copy)
    loop = MonitorLoop(copy, tracker=tracker)
    steady_rows = train.sample(200, random_state=1)
    steady = answered(copy, steady_rows, 1)
    write_log_part(copy, "predictions", steady)
    write_log_part(copy, "feedback", labels_for(steady, steady_rows["target"]))
    loop.step()
    write_log_part(copy, "predictions", answered(copy, drifted(train.sample(100, random_state=2)), 1))
    loop.step()
    copy.serving.deploy("2", "canary", percent=50, actor="test", reason="try v2")
    write_log_part(copy, "predictions", answered(copy, train.sample(100, random_state=3), 2))
    loop.step()
    copy.serving.rollback(actor="test", reason="v2 is worse")
    tracker.close()
    return copy, path


@pytest.fixture(scope="module")
def card(production):
    rs, _ = production
    return rs.card("1")


def section(markdown: str, title: str) -> str:
    """The text of one ``## title`` section."""
    start = markdown.index(f"\n## {title}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start:end if end > 0 else None]


def fmt(value: float) -> str:
    return f"{value:.4f}"


def test_the_card_shows_intended_use_data_lineage_and_dataset_stats(production, card):
    rs, _ = production
    version = rs.models.show("1")
    manifest = rs.data.show(version.lineage["dataset_version"])
    markdown = card.markdown
    assert markdown.startswith(f"# Model card: {rs.models.name} v1")
    assert INTENDED in section(markdown, "Intended use")

    lineage = section(markdown, "Data lineage")
    assert f"| dataset version | {manifest.version} |" in lineage
    assert f"| rows accepted | {manifest.row_count:,} |" in lineage
    assert f"| rows quarantined | {manifest.quarantined_count:,} |" in lineage
    assert '"kind": "sklearn"' in lineage and '"kind": "stratified"' in lineage
    assert f"| training run | {version.run_id} |" in lineage and version.lineage["features"] in lineage

    stats = section(markdown, "Dataset statistics")
    column = manifest.stats[STAT_COLUMN]
    assert f"| {STAT_COLUMN} | {column['type']} | {fmt(column['null_rate'])} | {fmt(column['min'])} | " in stats
    assert fmt(column["mean"]) in stats and fmt(column["std"]) in stats


def test_the_card_shows_metrics_beside_the_baseline_with_slices_and_the_training_config(production, card):
    rs, _ = production
    version = rs.models.show("1")
    metrics = section(card.markdown, "Metrics")
    evaluation = card.data["evaluation"]
    for name, value in version.metrics.items():  # the registry's test metrics, evaluated again: the same
        if isinstance(value, float):
            assert f"| {name} | {fmt(value)} | {fmt(evaluation['baseline'][name])} |" in metrics
    assert evaluation["metrics"]["accuracy"] > evaluation["baseline"]["accuracy"]
    bins = [b for b in evaluation["slices"][SLICE] if b != "_skipped"]
    assert len(bins) >= 2 and f"### By `{SLICE}`" in metrics
    assert all(f"| {b} | {fmt(evaluation['slices'][SLICE][b]['accuracy'])} |" in metrics for b in bins)

    training = section(card.markdown, "Training")
    run = rs.models.run(version.run_id)
    assert f"| run id | {version.run_id} |" in training and f"| epochs logged | {len(run['history'])} |" in training
    assert f"| train.epochs | {version.params['train']['epochs']} |" in training
    assert f"| model.type | {version.params['model']['type']} |" in training
    assert model_tag(rs.models.name, 1) in training  # the W&B tag the training run got at registration

    importance = section(card.markdown, "Feature importance")
    stored = rs.models.importance("1")
    if stored is not None:  # importance.json, registered at training
        assert list(stored["importance"]) == list(card.data["importance"]["importance"])
        assert all(f"| {column} | {fmt(score['mean'])} | {fmt(score['std'])} |" in importance
                   for column, score in stored["importance"].items())
    else:
        assert "Not computed" in importance


def test_the_card_shows_production_history_incidents_and_releases(production, card):
    rs, _ = production
    from raysys.monitoring.state import StateStore

    windows = [w for w in StateStore(rs.storage, "card").windows() if "1" in {str(v) for v in w["versions"]}]
    assert len(windows) >= 3
    history = section(card.markdown, "Production: drift and live quality")
    for window in windows:
        served = {str(k): v for k, v in window["versions"].items()}["1"]
        end = datetime.fromtimestamp(window["end"], tz=timezone.utc).isoformat(timespec="seconds")
        assert f"| {window['seq']} | {end} | champion | {served['requests']:,} |" in history
    assert any(w["drift"]["drifted"] for w in windows) and "| yes |" in history
    accuracy = {str(k): v for k, v in windows[0]["versions"].items()}["1"]["quality"]["accuracy"]
    assert fmt(accuracy) in history
    incidents = rs.monitor.alerts()
    assert incidents and all(f"| {i['rule']} | {i['subject']} |" in history for i in incidents)

    releases = section(card.markdown, "Releases and rollbacks")
    events = [e for e in rs.monitor.audit() if e["action"].startswith(("deploy.", "rollback"))]
    assert [e["action"] for e in events] == ["deploy.blue-green", "deploy.canary", "rollback"]
    for event in events:
        assert f"| {event['at']} | {event['action']} | test | {describe_plan(event['from'])} | " \
               f"{describe_plan(event['to'])} | {event['reason']} |" in releases
    assert "v1 champion, v2 canary 50%" in releases
    moves = [m for m in rs.models.registry.alias_history(rs.models.name) if 1 in (m.from_version, m.to_version)]
    assert moves and all(f"| {m.at} | {m.alias} |" in releases for m in moves)
    # v2's canary was rolled back: its card shows the challenger alias set, then removed
    rejected = section(rs.card("2").markdown, "Releases and rollbacks")
    assert "| challenger |  | v2 | test | try v2 |" in rejected, rejected
    assert "| challenger | v2 | removed | test | v2 is worse |" in rejected, rejected


def test_a_version_that_never_served_says_so_and_an_unknown_version_is_named(production, card):
    rs, _ = production
    data = {**card.data, "production": {"app": "card", "windows": [], "incidents": []}}
    assert NO_HISTORY in render_card(data)  # pure: the same data, no history
    with pytest.raises(NotFound, match="'99'"):
        rs.card("99")


# --------------------------------------------------------------------------- W&B lineage


def offline_run(rs, run_id: str) -> dict:
    """Project, group, job type, name and final tags of a run as its offline W&B file records them."""
    files = list(Path(rs.storage.path("runs", run_id, "wandb")).glob(f"offline-run-*/run-{run_id}.wandb"))
    assert len(files) == 1, files
    runs = of_type(finished_records(files[0]), "run")
    last = runs[-1]  # tags added during the run are a later run record
    return {"project": last.project, "group": last.run_group, "job_type": last.job_type,
            "name": last.display_name, "tags": set(last.tags)}


def test_a_versions_training_run_and_its_production_monitoring_share_its_model_tag_in_one_project(production, card):
    rs, _ = production
    tag = model_tag(rs.models.name, 1)
    training = offline_run(rs, rs.models.show("1").run_id)
    monitors = [offline_run(rs, r["run_id"]) for r in rs.models.runs() if r["kind"] == "monitor"]
    assert len(monitors) == 1  # one run per serving champion
    monitor = monitors[0]
    assert tag in training["tags"] and tag in monitor["tags"]
    assert training["project"] == monitor["project"] == rs.config.project.name
    assert (training["group"], training["job_type"]) == ("training", "train")
    assert (monitor["group"], monitor["job_type"]) == ("production", "monitor")
    assert model_tag(rs.models.name, 2) in monitor["tags"]  # the canary served in this run's windows too
    assert model_tag(rs.models.name, 2) not in training["tags"]
    evaluations = {r["run_id"]: r["model"] for r in rs.models.runs() if r["kind"] == "evaluate" and r["status"] == "finished"}
    assert f"{rs.models.name}:v1" in evaluations.values()  # the card's evaluation of v1 (other cards evaluate theirs)
    for run_id, model in evaluations.items():
        evaluation = offline_run(rs, run_id)
        assert evaluation["group"] == "evaluation" and f"model:{model}" in evaluation["tags"], (model, evaluation)


# --------------------------------------------------------------------------- CLI


def test_models_card_from_the_shell_writes_markdown_and_names_an_unknown_version(production, tmp_path):
    rs, config = production
    env = clean_env(tmp_path / "home")
    out = tmp_path / "cards" / "v1.md"
    done = subprocess.run([str(BIN / "raysys"), "models", "card", "1", "-o", str(out), "--json", "-c", str(config)],
                          check=False, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["written_to"] == str(out) and result["model"]["version"] == 1
    markdown = out.read_text()
    assert markdown == render_card({k: v for k, v in result.items() if k != "written_to"})
    assert INTENDED in markdown and f"| rows accepted | {rs.data.show().row_count:,} |" in markdown

    missing = subprocess.run([str(BIN / "raysys"), "models", "card", "99", "-c", str(config)],
                             check=False, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and missing.stderr.splitlines()[-1].startswith("error: ")
    assert "'99'" in missing.stderr
    assert missing.stdout == ""
