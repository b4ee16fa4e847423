"""A rollout move returns exactly when the running replicas serve the new plan, and restarts none.

Moves wait for the app themselves (a fast poll instead of Serve's once-a-second one), so the
first request after a move must already see the new plan, and the replicas that answered
before it must be the ones answering after it (the plan is applied in place). The model is a
small random-weights network registered twice (no training), served on the session's Ray
beside the serving tests' app, under its own route prefix.
"""

from __future__ import annotations

import pytest
import requests

from tests.modeling.test_train import system_from
from tests.serving.conftest import SERVE_PORT
from tests.serving.test_replica_imports import small_model_files

PREFIX = "/speed"


@pytest.fixture(scope="module")
def speedy(ray_session, tmp_path_factory):
    """(system, url): v1 (champion) and v2 registered, v1 served under /speed."""
    cfg = {"project": {"name": "speedy"},
           "data": {"name": "speedy", "source": {"kind": "sklearn", "dataset": "breast_cancer"}, "label": "target",
                    "task": "binary"},
           "serve": {"port": SERVE_PORT, "num_cpus": 0.2, "route_prefix": PREFIX,
                     "autoscaling": {"min_replicas": 2, "max_replicas": 2}},
           "monitor": {"enabled": False}}
    rs = system_from(cfg, tmp_path_factory.mktemp("speed"))
    files = small_model_files()
    for _ in range(2):
        rs.models.registry.register(rs.models.name, files, metrics={}, lineage={}, params={}, run_id=None,
                                    description="random weights")
    rs.models.registry.set_alias(rs.models.name, "champion", 1, actor="test", reason="first")
    rs.serving.up()
    yield rs, rs.serving.url
    rs.serving.down()


def answered(url: str, n: int = 12) -> set[int]:
    """The versions that answered the next ``n`` requests."""
    versions = set()
    for _ in range(n):
        answer = requests.post(f"{url}/v1/predict", json={"records": {"x": 0.5, "plan": "basic"}}, timeout=30)
        assert answer.status_code == 200, answer.text
        versions.add(answer.json()["model_version"])
    return versions


def test_the_first_request_after_each_move_sees_the_new_plan_and_no_replica_restarts(speedy):
    from ray import serve

    rs, url = speedy
    before = _replicas(rs.serving.app_name)
    assert answered(url) == {1}
    rs.serving.deploy("2", "blue-green")
    assert answered(url) == {2}
    rs.serving.rollback()
    assert answered(url) == {1}
    rs.serving.deploy("2", "canary", percent=100)  # all traffic to the challenger
    assert answered(url) == {2}
    rs.serving.promote()
    assert answered(url) == {2}
    assert _replicas(rs.serving.app_name) == before  # applied in place: the same replicas
    assert serve.status().applications[rs.serving.app_name].status == "RUNNING"


def _replicas(app: str) -> set[str]:
    """The ids of the app's running replicas (Ray's actor names of the deployment's replicas)."""
    import ray

    return {actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
            if actor["name"].startswith(f"SERVE_REPLICA::{app}#")}
