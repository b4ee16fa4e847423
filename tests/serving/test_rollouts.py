"""Rollouts on a real Ray Serve under continuous load: canary, promote, shadow, rollback, blue-green.

Every move must complete with zero failed requests; aliases and the audit trail follow each one.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Self

import pytest
import requests

from raysys.errors import NotFound, RaysysError
from tests.serving.test_server import raw_rows


class Load:
    """Clients posting predictions in a loop; records every status and answering version."""

    def __init__(self, url: str, rows: list[dict], clients: int = 3, pause_s: float = 0.01):
        self.url, self.rows, self.pause_s, self.stop = url, rows, pause_s, threading.Event()
        self.statuses: Counter = Counter()
        self.versions: list[int] = []
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def _client(self, index: int) -> None:
        session = requests.Session()
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                answer = session.post(f"{self.url}/v1/predict", json={"records": self.rows, "key": f"c{index}-{n}"},
                                      timeout=30)
                self.statuses[answer.status_code] += 1
                if answer.status_code == 200:
                    self.versions.append(answer.json()["model_version"])
            except requests.RequestException as error:
                self.statuses[type(error).__name__] += 1
            time.sleep(self.pause_s)

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        time.sleep(1.0)
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(1.0)
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def answering(self, seconds: float = 1.5) -> set[int]:
        """The versions that answered during the next ``seconds`` (after a moment to settle)."""
        time.sleep(0.5)
        mark = len(self.versions)
        time.sleep(seconds)
        return set(self.versions[mark:])


def test_every_move_under_load_has_zero_failed_requests(served):
    rs, url = served
    serving, registry, name = rs.serving, rs.models.registry, rs.models.name
    with Load(url, raw_rows(rs, 2)) as load:
        serving.deploy("2", "canary", percent=50, reason="try v2")
        assert load.answering() == {1, 2}  # both versions answer during the canary
        assert registry.aliases(name)["challenger"] == 2

        serving.promote(reason="v2 is good")
        assert load.answering() == {2}
        assert registry.aliases(name)["champion"] == 2 and "challenger" not in registry.aliases(name)

        serving.deploy("1", "shadow")
        assert load.answering() == {2}  # the shadow never answers
        assert registry.aliases(name)["shadow"] == 1

        serving.rollback(reason="drop the shadow")
        assert "shadow" not in registry.aliases(name)  # the alias follows the role
        serving.rollback(reason="back to v1")  # no canary/shadow left: the previous champion
        assert load.answering() == {1}

        serving.deploy("2", "blue-green")
        assert load.answering() == {2}
        serving.rollback(to="1")
    assert set(load.statuses) == {200} and load.statuses[200] > 50, load.statuses
    actions = [e["action"] for e in rs.serving.audit()]
    assert actions[-7:] == ["deploy.canary", "deploy.promote", "deploy.shadow", "rollback", "rollback",
                            "deploy.blue-green", "rollback"]
    assert serving.plan().champion == 1 and serving.status()["status"] == "RUNNING"


def test_shadow_answers_are_logged_never_returned(served):
    rs, url = served
    serving = rs.serving
    serving.deploy("2", "shadow")
    try:
        rows = raw_rows(rs, 3)
        answer = requests.post(f"{url}/v1/predict", json={"records": rows}, headers={"x-request-id": "shadowed"},
                               timeout=30).json()
        assert answer["model_version"] == 1
        logged = _wait_for_log(serving, "shadowed", roles={"answer", "shadow"})
        by_role = {role: group for role, group in logged.groupby("_role")}
        assert list(by_role["answer"]["_model_version"].unique()) == [1]
        assert list(by_role["shadow"]["_model_version"].unique()) == [2]
        assert len(by_role["shadow"]) == len(rows)
        # v2 is a perturbed copy: its logged probabilities differ from the answer the client got
        assert [p[1] for p in by_role["answer"].sort_values("_row")["_probabilities"]] == [
            p[1] for p in answer["probabilities"]]
        assert list(by_role["shadow"]["_probabilities"].map(lambda p: p[1])) != [p[1] for p in answer["probabilities"]]
        assert set(logged.columns) >= set(rows[0])  # the raw inputs, for drift monitoring
    finally:
        serving.rollback()


def _wait_for_log(serving, request_id: str, roles: set[str], timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = serving.prediction_log()
        if not log.empty:
            rows = log[log["_request_id"] == request_id]
            if set(rows["_role"]) == roles:
                return rows
        time.sleep(0.5)
    raise AssertionError(f"no {roles} rows for {request_id} in the prediction log")


@pytest.mark.parametrize(
    ("move", "error", "message"),
    [
        (lambda s: s.deploy("9"), NotFound, "9"),
        (lambda s: s.deploy("nope", "canary"), NotFound, "nope"),
        (lambda s: s.rollback(to="42"), NotFound, "42"),
        (lambda s: s.deploy("1", "sideways"), RaysysError, "sideways"),
        (lambda s: s.deploy("1", "canary", percent=10), RaysysError, "already the champion"),
        (lambda s: s.promote(), RaysysError, "no canary to promote"),
    ],
)
def test_bad_moves_are_clear_errors_and_change_nothing(served, move, error, message):
    rs, _ = served
    before, aliases, events = rs.serving.plan(), rs.models.registry.aliases(rs.models.name), len(rs.serving.audit())
    with pytest.raises(error, match=message):
        move(rs.serving)
    assert rs.serving.plan() == before
    assert rs.models.registry.aliases(rs.models.name) == aliases and len(rs.serving.audit()) == events


def copy_reading_another_input(rs, version: int, column: str) -> int:
    """Register a copy of ``version`` whose preprocessing also reads ``column`` (no feature uses it)."""
    import json

    from raysys.modeling.predict import FEATURES

    registry = rs.models.registry
    source = registry.get(rs.models.name, version)
    files = registry.load_files(source)
    state = json.loads(files[FEATURES])
    state["inputs"].append({"name": column, "type": "float"})
    files[FEATURES] = json.dumps(state).encode()
    return registry.register(rs.models.name, files, metrics=source.metrics, lineage=source.lineage,
                             params=source.params, run_id=None, description=f"also reads {column}").version


def test_a_canary_reading_a_new_input_makes_every_request_carry_it(served):
    rs, url = served
    version = copy_reading_another_input(rs, 1, "probe")
    rows = raw_rows(rs, 2)
    with_probe = [{**row, "probe": 1.0} for row in rows]

    def documented_inputs() -> set[str]:
        spec = requests.get(f"{url}/openapi.json", timeout=30).json()
        return set(spec["components"]["schemas"]["Record"]["properties"])

    rs.serving.deploy(str(version), "canary", percent=50)
    try:
        missing = requests.post(f"{url}/v1/predict", json={"records": rows}, timeout=30)
        assert missing.status_code == 422 and missing.json()["field"] == "records[0].probe"
        assert "probe" in documented_inputs()
        answered = {requests.post(f"{url}/v1/predict", json={"records": with_probe}, timeout=30).json()["model_version"]
                    for _ in range(30)}
        assert answered == {1, version}  # either version may answer, so each request carries both's inputs
    finally:
        rs.serving.rollback()
    assert requests.post(f"{url}/v1/predict", json={"records": rows}, timeout=30).status_code == 200
    assert "probe" not in documented_inputs()
