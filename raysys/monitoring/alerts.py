"""Alert rules: one window's numbers in, the rules that fired out (pure; no I/O, no Ray).

:func:`evaluate_rules` checks ``monitor.alerts.rules`` against what the monitor measured for a
window. Its inputs, all plain JSON-like dicts:

``window_summary``
    ``{"seq": 12, "task": "binary", "versions": {"3": {...}}, "last_request_at": 1764440000.0}``.
    ``task`` is ``data.task`` (it picks the primary metric, :func:`primary_metric`);
    ``versions`` is :func:`raysys.monitoring.quality.window_metrics`' result, one entry per model
    version, of which the rules read ``requests``, ``latency_ms.p99``, ``labelled``,
    ``quality`` (a dict holding the primary metric) and ``input_violations.share`` (records
    with any broken ``data.schema`` rule / records; ``.features`` per feature);
    ``last_request_at`` is the time of the newest logged request (epoch seconds or ISO; with
    no request yet, the time the monitor started).
``drift``
    :meth:`raysys.monitoring.drift.DriftReport.to_dict`: ``{"drifted", "threshold",
    "features": {name: {"test", "statistic", "p_value", "drifted"}}, "row", "predictions",
    "labels", "online"}`` (the last four each a dict with ``drifted``, or None); None when the
    window was not tested (fewer than ``window.min_rows`` records).
``champion_metric``
    The champion's offline test metric, ``{"version": 3, "name": "accuracy", "value": 0.81}``
    (``name`` defaults to the primary metric), or None if unknown.
``faults``
    The serving fault counts of this window, per version: the difference of two
    :func:`raysys.serving.faults.read_fault_counts` readings (:func:`fault_delta`).

Each rule set to null in the config is off. A rule that could not be checked in this window
(quality with fewer than ``min_labelled`` labels, drift with no report, error rate with no
fault counts) is listed in :attr:`Findings.unchecked`, so its open incident neither updates
nor resolves (:mod:`raysys.monitoring.incidents`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from raysys.config import AlertRulesConfig
from raysys.modeling.metrics import primary_metric

SEVERITIES = ("warning", "critical")  # lowest first
SEVERITY = {"drift": "warning", "quality": "critical", "latency": "warning",
            "error_rate": "critical", "no_traffic": "warning", "input_violations": "warning"}
RULES = tuple(SEVERITY)


@dataclass(frozen=True)
class Finding:
    """A rule that fired: for which subject (a model version ``v3``, or "" for the whole app)."""

    rule: str
    severity: str
    message: str
    evidence: dict[str, Any]
    subject: str = ""

    @property
    def key(self) -> str:
        """What an incident is about: the rule, and the subject if any (``quality@v3``)."""
        return f"{self.rule}@{self.subject}" if self.subject else self.rule

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {**asdict(self), "key": self.key}


class Findings(list):
    """The findings of one window (a list), and the rules or keys that could not be checked."""

    def __init__(self, items: list[Finding] | None = None, unchecked: set[str] | None = None):
        super().__init__(items or [])
        self.unchecked = set(unchecked or ())


def evaluate_rules(rules: AlertRulesConfig, window_summary: dict[str, Any],
                   drift: dict[str, Any] | None, champion_metric: dict[str, Any] | None,
                   faults: dict[str, Any] | None, now: datetime | float) -> Findings:
    """The rules that fire on one window (see the module docstring for the inputs)."""
    found = Findings()
    versions = window_summary.get("versions") or {}
    if rules.drift:
        _drift(drift, found)
    if rules.quality_floor is not None or rules.quality_margin is not None:
        name, direction = primary_metric(window_summary.get("task", "binary"))
        for version, metrics in versions.items():
            _quality(rules, f"v{version}", metrics, (name, direction), champion_metric, found)
    if rules.latency_p99_ms is not None:
        for version, metrics in versions.items():
            _latency(rules.latency_p99_ms, f"v{version}", metrics, found)
    if rules.error_rate is not None:
        _error_rate(rules.error_rate, faults, found)
    if rules.no_traffic_s is not None:
        _no_traffic(rules.no_traffic_s, window_summary.get("last_request_at"), now, found)
    if rules.input_violations is not None:
        _input_violations(rules.input_violations, versions, found)
    return found


def _finding(rule: str, subject: str, message: str, **evidence: Any) -> Finding:
    return Finding(rule, SEVERITY[rule], message, evidence, subject)


def _drift(drift: dict[str, Any] | None, found: Findings) -> None:
    if drift is None:
        found.unchecked.add("drift")
        return
    features = {name: test for name, test in (drift.get("features") or {}).items()
                if test.get("drifted")}
    parts = {part: drift[part] for part in ("row", "predictions", "labels", "online")
             if isinstance(drift.get(part), dict) and drift[part].get("drifted")}
    if not (features or parts or drift.get("drifted")):
        return
    named = sorted(features, key=lambda n: features[n].get("p_value", 1.0))
    what = ", ".join([*named[:5], *(["…"] if len(named) > 5 else []), *parts]) or "the window"
    found.append(_finding("drift", "", f"drift in {what}", threshold=drift.get("threshold"),
                          features=features, **parts))


def _quality(rules: AlertRulesConfig, subject: str, metrics: dict[str, Any],
             metric: tuple[str, str], champion_metric: dict[str, Any] | None,
             found: Findings) -> None:
    name, direction = metric
    labelled = int(metrics.get("labelled") or 0)
    value = (metrics.get("quality") or {}).get(name)
    if labelled < rules.min_labelled or value is None:
        found.unchecked.add(f"quality@{subject}")
        return
    sign = 1.0 if direction == "max" else -1.0  # how much worse = sign * (reference - value)
    live = f"live {name} {value:.4g} ({labelled} labelled)"
    evidence = {"metric": name, "direction": direction, "value": value, "labelled": labelled}
    floor = rules.quality_floor
    if floor is not None and sign * (floor - value) > 0:
        word = "below" if direction == "max" else "above"
        found.append(_finding("quality", subject, f"{live} is {word} the floor {floor:.4g}",
                              **evidence, floor=floor))
        return
    margin = rules.quality_margin
    if margin is None or not champion_metric or champion_metric.get("value") is None:
        return
    if champion_metric.get("name", name) != name:
        return
    offline = float(champion_metric["value"])
    if sign * (offline - value) > margin:
        found.append(_finding("quality", subject,
                              f"{live} is {abs(offline - value):.4g} worse than the champion's "
                              f"offline {offline:.4g} (margin {margin:.4g})", **evidence,
                              offline=offline, champion_version=champion_metric.get("version"),
                              margin=margin))


def _latency(ceiling_ms: float, subject: str, metrics: dict[str, Any], found: Findings) -> None:
    p99 = (metrics.get("latency_ms") or {}).get("p99")
    if p99 is not None and p99 > ceiling_ms:
        found.append(_finding("latency", subject, f"latency p99 {p99:.0f} ms is over "
                              f"{ceiling_ms:.0f} ms", p99_ms=p99, ceiling_ms=ceiling_ms,
                              requests=metrics.get("requests")))


def error_rates(faults: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Requests, failures and error rate per version of a :func:`fault_delta` (roles summed)."""
    rates: dict[str, dict[str, float]] = {}
    for version, roles in (faults.get("versions") or {}).items():
        requests = sum(int(events.get("requests", 0)) for events in roles.values())
        failures = sum(int(events.get("failures", 0)) for events in roles.values())
        if requests or failures:
            rates[version] = {"requests": requests, "failures": failures,
                              "error_rate": failures / requests if requests else 1.0}
    return rates


def _error_rate(ceiling: float, faults: dict[str, Any] | None, found: Findings) -> None:
    if faults is None:
        found.unchecked.add("error_rate")
        return
    for version, counts in error_rates(faults).items():
        rate, failures, requests = counts["error_rate"], counts["failures"], counts["requests"]
        if rate > ceiling:
            found.append(_finding("error_rate", f"v{version}", f"error rate {rate:.2%} "
                                  f"({failures} of {requests} requests) is over {ceiling:.2%}",
                                  rate=rate, failures=failures, requests=requests,
                                  ceiling=ceiling))


def _seconds(moment: datetime | float | str) -> float:
    if isinstance(moment, datetime):
        return moment.timestamp()
    if isinstance(moment, str):
        return datetime.fromisoformat(moment).timestamp()
    return float(moment)


def _no_traffic(limit_s: float, last_request_at: Any, now: datetime | float,
                found: Findings) -> None:
    if last_request_at is None:
        found.unchecked.add("no_traffic")
        return
    idle = _seconds(now) - _seconds(last_request_at)
    if idle > limit_s:
        found.append(_finding("no_traffic", "", f"no request for {idle:.0f} s (limit "
                              f"{limit_s:.0f} s)", idle_s=idle, limit_s=limit_s,
                              last_request_at=last_request_at))


def _input_violations(ceiling: float, versions: dict[str, Any], found: Findings) -> None:
    records = broken = 0.0
    features: dict[str, float] = {}
    for metrics in versions.values():
        violations = metrics.get("input_violations") or {}
        n = float(metrics.get("records") or 0)
        if violations.get("share") is None or not n:
            continue
        records, broken = records + n, broken + violations["share"] * n
        for name, share in (violations.get("features") or {}).items():
            features[name] = features.get(name, 0.0) + share * n
    if records and broken / records > ceiling:
        shares = {name: count / records for name, count in sorted(features.items())}
        worst = ", ".join(sorted(shares, key=shares.get, reverse=True)[:5])
        found.append(_finding("input_violations", "", f"{broken / records:.1%} of records broke "
                              f"an input rule (over {ceiling:.1%})" + (worst and f": {worst}"),
                              share=broken / records, ceiling=ceiling, records=int(records),
                              features=shares))


def fault_delta(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """The fault counts between two :func:`read_fault_counts` readings (counts, never < 0)."""
    earlier = (before or {}).get("versions") or {}
    versions: dict[str, dict[str, dict[str, int]]] = {}
    for version, roles in (after.get("versions") or {}).items():
        for role, events in roles.items():
            old = earlier.get(version, {}).get(role, {})
            versions.setdefault(version, {})[role] = {
                event: max(0, int(n) - int(old.get(event, 0)))
                for event, n in events.items() if event != "last_error"}
    return {"versions": versions}
