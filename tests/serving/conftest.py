"""Helpers of the serving tests (the served model itself is ``tests/conftest.py::served``, one per session)."""

from __future__ import annotations

from raysys.runtime import free_port
from tests.modeling.test_train import system_from

SERVE_PORT = free_port()  # Serve's HTTP ingress starts once per Ray session, on one port


def serve_cfg(**override) -> dict:
    return {"port": SERVE_PORT, "num_cpus": 0.2,
            "autoscaling": {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 2,
                            "upscale_delay_s": 0.5, "downscale_delay_s": 2.0},
            "prediction_log": {"flush_rows": 200, "flush_s": 0.5}, **override}


def perturbed_copy(rs, version: int) -> int:
    """Register a second version: the same model with a shifted output bias (other answers)."""
    from raysys.modeling.artifacts import bytes_to_state_dict, state_dict_to_bytes
    from raysys.modeling.predict import WEIGHTS

    registry = rs.models.registry
    source = registry.get(rs.models.name, version)
    files = registry.load_files(source)
    state = bytes_to_state_dict(files[WEIGHTS])
    last_bias = [k for k in state if k.endswith("bias")][-1]
    state[last_bias] = state[last_bias] + 1.5
    files[WEIGHTS] = state_dict_to_bytes(state)
    return registry.register(rs.models.name, files, metrics=source.metrics, lineage=source.lineage,
                             params=source.params, run_id=None, description="perturbed copy for tests").version


def failing_copy(rs, version: int) -> int:
    """Register a version that loads (checksums, weights, spec) but whose every prediction raises.

    Its network and its preprocessing are out of step: the network reads a feature column the
    preprocessing does not produce (same count, so the weights load), as skew between a model
    and its feature state would fail in production.
    """
    import json

    from raysys.modeling.predict import SPEC

    registry = rs.models.registry
    source = registry.get(rs.models.name, version)
    files = registry.load_files(source)
    spec = json.loads(files[SPEC])
    spec["inputs"]["numeric"][0] = "no_such_feature"
    files[SPEC] = json.dumps(spec).encode()
    return registry.register(rs.models.name, files, metrics=source.metrics, lineage=source.lineage,
                             params=source.params, run_id=None, description="fails on every request").version


def copy_on_new_root(rs, root, version: int, **serve):
    """A System on its own storage root (own app, log and counts) serving a copy of ``version``."""
    import yaml

    cfg = yaml.safe_load(rs.config_path.read_text())
    cfg["serve"] = {**cfg["serve"], **serve}
    other = system_from(cfg, root)
    source = rs.models.registry.get(rs.models.name, version)
    copied = other.models.registry.register(other.models.name, rs.models.registry.load_files(source),
                                            metrics=source.metrics, lineage=source.lineage, params=source.params,
                                            run_id=None, description=f"copy of v{version}")
    other.models.promote(copied.version, "champion", actor="test", reason="copy")
    return other
