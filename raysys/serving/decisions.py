"""Decision rules: business rules applied after the model, as pure functions over its answers.

A rule maps a *score* to an action label: for classifiers the probability of one class
(``decisions.class``, default the positive class of a binary model), for regression the
predicted value. Rules are tried in order and the first whose ``[min, max)`` holds the score
decides; records whose ``segment.column`` holds one of ``segment.values`` use that value's rules
instead; a record no rule matches gets ``default``. Scores are compared at the 6 decimals that
``/v1/predict`` answers with, online and in batch alike, so both paths decide the same.

The rules a deployment serves travel with its traffic plan (Serve ``user_config``): a changed rule
set is applied in place like a rollout and recorded in the audit log (``serve.rules``, with the
digests of the old and the new rules).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from raysys.config import DecisionsConfig
from raysys.data.features import _category_key
from raysys.errors import ConfigError

SCORE_DECIMALS = 6  # as payloads.answer_from_output rounds probabilities


@dataclass(frozen=True)
class Rule:
    """A score in ``[low, high)`` → ``action`` (None: an open end)."""

    action: str
    low: float | None
    high: float | None


@dataclass(frozen=True)
class DecisionRules:
    """The rules of a deployment, plain data (JSON in the replica's ``user_config``)."""

    target: str | None
    rules: tuple[Rule, ...]
    default: str
    segment_column: str | None = None
    segments: Mapping[str, tuple[Rule, ...]] | None = None

    @classmethod
    def from_config(cls, cfg: DecisionsConfig) -> DecisionRules:
        """Rules from the validated ``decisions`` section."""
        def rules(items) -> tuple[Rule, ...]:
            return tuple(Rule(r.action, r.min, r.max) for r in items)

        segment = cfg.segment
        return cls(None if cfg.class_ is None else str(cfg.class_), rules(cfg.rules), cfg.default,
                   segment.column if segment else None,
                   {value: rules(items) for value, items in segment.values.items()} if segment else None)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; :meth:`from_dict` reads it back."""
        def rules(items: tuple[Rule, ...]) -> list[dict[str, Any]]:
            return [{"action": r.action, "min": r.low, "max": r.high} for r in items]

        return {"class": self.target, "rules": rules(self.rules), "default": self.default,
                "segment": None if self.segment_column is None else {
                    "column": self.segment_column, "values": {k: rules(v) for k, v in self.segments.items()}}}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DecisionRules | None:
        """Rules from :meth:`to_dict` output; None for None (no rules served)."""
        if data is None:
            return None

        def rules(items: list[dict[str, Any]]) -> tuple[Rule, ...]:
            return tuple(Rule(r["action"], r["min"], r["max"]) for r in items)

        segment = data["segment"]
        return cls(data["class"], rules(data["rules"]), data["default"], segment["column"] if segment else None,
                   {k: rules(v) for k, v in segment["values"].items()} if segment else None)

    def check(self, task: str, classes: list[Any] | None, inputs: Mapping[str, str], version: int) -> None:
        """ConfigError naming the field when these rules cannot apply to model ``version``."""
        model = f"model v{version}"
        if task != "regression" and self.target is not None and self.target not in {str(c) for c in classes or []}:
            raise ConfigError(f"decisions.class: {model} has no class '{self.target}' "
                              f"(classes: {', '.join(map(str, classes or []))})")
        if task == "multiclass" and self.target is None:
            raise ConfigError(f"decisions.class: {model} is multiclass; name the class whose probability "
                              "the rules compare")
        if task == "regression" and self.target is not None:
            raise ConfigError(f"decisions.class: {model} is a regression model; it has no classes")
        if self.segment_column is not None and self.segment_column not in inputs:
            raise ConfigError(f"decisions.segment.column: '{self.segment_column}' is not an input of {model} "
                              f"(inputs: {', '.join(inputs)}); a request carries only model inputs")

    def scores(self, predictions: list[Any], probabilities: list[list[float]] | np.ndarray | None,
               classes: list[Any] | None) -> np.ndarray:
        """Per record the score the rules compare: a class probability, or the predicted value."""
        if probabilities is None:
            return np.round(np.asarray(predictions, dtype=np.float64), SCORE_DECIMALS)
        names = [str(c) for c in classes or []]
        column = names.index(self.target) if self.target is not None else len(names) - 1
        return np.round(np.asarray(probabilities, dtype=np.float64)[:, column], SCORE_DECIMALS)

    def decide(self, scores: np.ndarray, segment_values: Any = None) -> list[str]:
        """The action of each record: its segment's rules (else the general ones), first match, else default."""
        actions = np.full(len(scores), self.default, dtype=object)
        general = np.ones(len(scores), dtype=bool)
        if self.segment_column is not None and segment_values is not None:
            keys = np.array([_category_key(v) for v in np.asarray(segment_values, dtype=object)], dtype=object)
            for value, rules in self.segments.items():
                mine = keys == value
                _apply(rules, scores, mine, actions)
                general &= ~mine
        _apply(self.rules, scores, general, actions)
        return actions.tolist()

    def decide_answer(self, answer: Mapping[str, Any], columns: Mapping[str, Any]) -> list[str]:
        """Decisions for a raysys answer (``predictions``, ``probabilities``, ``classes``) of rows ``columns``."""
        scores = self.scores(answer["predictions"], answer["probabilities"], answer["classes"])
        return self.decide(scores, columns.get(self.segment_column) if self.segment_column else None)


def _apply(rules: tuple[Rule, ...], scores: np.ndarray, among: np.ndarray, actions: np.ndarray) -> None:
    """Give each record of ``among`` the action of the first rule that holds (else leave it)."""
    undecided = among.copy()
    for rule in rules:
        hit = undecided.copy()
        if rule.low is not None:
            hit &= scores >= rule.low
        if rule.high is not None:
            hit &= scores < rule.high
        actions[hit] = rule.action
        undecided &= ~hit


def rules_digest(rules: DecisionRules | None) -> str | None:
    """The digest of a rule set (None for no rules)."""
    if rules is None:
        return None
    text = json.dumps(rules.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def configured_rules(cfg: DecisionsConfig | None) -> DecisionRules | None:
    """The rules of a config (None when it has no ``decisions`` section)."""
    return None if cfg is None else DecisionRules.from_config(cfg)
