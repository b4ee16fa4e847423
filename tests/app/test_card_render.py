"""The model card's pure rendering: plans in words, importance, and what it says when data is missing."""

from __future__ import annotations

from raysys.app.card import NO_HISTORY, describe_plan, render_card


def minimal_card(**override) -> dict:
    """The smallest card data :func:`render_card` takes: a version registered without any history."""
    data = {
        "model": {"name": "m", "version": 3, "created_at": "2026-01-01T00:00:00+00:00", "aliases": [],
                  "description": "", "files": ["weights.safetensors"]},
        "project": {"name": "m", "description": "", "intended_use": "Ranking support tickets."},
        "lineage": {"dataset": "tickets", "dataset_version": "0123abcd", "run_id": None},
        "data": {"dataset": "tickets", "version": "0123abcd", "features": None, "split": None, "label": "y",
                 "task": "binary", "found": False},
        "evaluation": None,
        "training": {"params": {"train": {"epochs": 4}}, "run": None},
        "importance": None,
        "production": {"app": "m", "windows": [], "incidents": []},
        "releases": {"events": [], "alias_moves": []},
    }
    return {**data, **override}


def test_plans_in_words():
    assert describe_plan(None) == "nothing served"
    assert describe_plan({"champion": 2, "challenger": 3, "canary_percent": 10.0, "shadow": None}) == \
        "v2 champion, v3 canary 10%"
    assert describe_plan({"champion": 2, "shadow": 4}) == "v2 champion, v4 shadow"


def test_a_card_without_data_history_or_importance_says_what_is_missing():
    markdown = render_card(minimal_card())
    assert markdown.startswith("# Model card: m v3\n") and "Ranking support tickets." in markdown
    assert "its manifest is not in this storage root" in markdown and "Not evaluated" in markdown
    assert "No training run is recorded" in markdown and "| train.epochs | 4 |" in markdown
    assert "Not computed for this version" in markdown and NO_HISTORY in markdown and "Never deployed." in markdown
    importance = {"metric": "log_loss", "loss": 0.41, "rows": 1200, "repeats": 3, "seed": 0,
                  "importance": {"plan": {"mean": 0.25, "std": 0.02}, "age": {"mean": -0.001, "std": 0.003}}}
    with_importance = render_card(minimal_card(importance=importance))
    assert "rise of the log_loss (0.4100 unshuffled)" in with_importance and "3 shuffles of 1,200" in with_importance
    assert "| plan | 0.2500 | 0.0200 |\n| age | -0.0010 | 0.0030 |" in with_importance
    assert "Not computed" not in with_importance


def test_slices_show_each_measured_value_and_name_the_ones_with_too_few_rows():
    evaluation = {"split_rows": 200, "run_id": "evaluate-1", "metrics": {"accuracy": 0.9, "n": 200},
                  "baseline": {"accuracy": 0.6, "n": 200},
                  "slices": {"plan": {"basic": {"accuracy": 0.91, "n": 120}, "premium": {"accuracy": 0.875, "n": 70},
                                      "_skipped": {"gold": 10}}}}
    markdown = render_card(minimal_card(evaluation=evaluation))
    assert "| accuracy | 0.9000 | 0.6000 |\n| n | 200 | 200 |" in markdown
    assert "### By `plan`" in markdown and "| basic | 0.9100 | 120 |\n| premium | 0.8750 | 70 |" in markdown
    assert "Too few rows to measure: gold (10)." in markdown and "_skipped" not in markdown
