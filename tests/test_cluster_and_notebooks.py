"""cluster/: the cluster definitions are valid and consistent (the notebook: tests/test_notebook.py)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml
from ray.runtime_env import RuntimeEnv
from typer.testing import CliRunner

from raysys.cli.main import app
from raysys.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHER = CLUSTER / "ray-cluster.yaml"
RAYCLUSTER = CLUSTER / "kuberay" / "raycluster.yaml"
RAYJOB = CLUSTER / "kuberay" / "rayjob.yaml"
RAYSERVICE = CLUSTER / "kuberay" / "rayservice.yaml"


def ray_pin() -> str:
    """The ``ray[...]==X.Y.*`` pin of pyproject.toml, as ``X.Y``."""
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'"ray\[[^\]]*\]==(\d+\.\d+)\.\*"', text)
    assert match, "pyproject.toml should pin ray as ray[...]==X.Y.*"
    return match.group(1)


def load_yaml(path: Path) -> dict:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(documents) == 1, f"{path}: expected one YAML document"
    return documents[0]


def containers(cluster_spec: dict) -> list[dict]:
    """Every Ray container of a RayCluster spec: the head's and each worker group's."""
    groups = [cluster_spec["headGroupSpec"], *cluster_spec["workerGroupSpecs"]]
    return [c for group in groups for c in group["template"]["spec"]["containers"]]


# --------------------------------------------------------------------------- launcher (ray up)


def ray_schema() -> dict:
    path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    return json.loads(path.read_text())


def test_launcher_config_validates_against_rays_schema():
    config = load_yaml(LAUNCHER)
    jsonschema.validate(config, ray_schema())

    # The schema forbids unknown top-level keys, so a misspelled field would be caught.
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**config, "max_worker": 2}, ray_schema())

    # Ray's own checks after filling in the AWS defaults, as `ray up` does.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(load_yaml(LAUNCHER)))


def test_launcher_config_shape():
    config = load_yaml(LAUNCHER)
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    workers = [spec for name, spec in types.items() if name != config["head_node_type"]]
    assert workers and all(w["max_workers"] > w.get("min_workers", 0) for w in workers)  # autoscaling
    assert sum(w["max_workers"] for w in workers) <= config["max_workers"]

    # Python 3.11 and the pinned Ray, in the image every command runs in.
    assert config["docker"]["image"] == f"rayproject/ray:{ray_pin()}.0-py311-cpu"
    setup = "\n".join(config["setup_commands"])
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in setup
    assert "pip install --no-cache-dir -e ~/raysys" in setup

    # The repository is synced to ~/raysys (`ray up` runs from the repo root), without .venv.
    assert config["file_mounts"]["~/raysys"] == "."
    assert (ROOT / config["file_mounts"]["~/raysys"] / "pyproject.toml").is_file()
    assert ".venv" in config["rsync_exclude"]

    # Token auth on every node, and the shared-storage warning.
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert "RAY_AUTH_MODE=token" in "\n".join(config[key])
    assert "~/.ray/auth_token" in config["file_mounts"]
    assert "s3://" in LAUNCHER.read_text()


# --------------------------------------------------------------------------- KubeRay


def test_kuberay_manifests_are_consistent():
    cluster, job, service = load_yaml(RAYCLUSTER), load_yaml(RAYJOB), load_yaml(RAYSERVICE)
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    for manifest in (cluster, job, service):
        assert manifest["metadata"]["name"] and manifest["spec"]

    base = (CLUSTER / "Dockerfile").read_text()
    from_line = next(line for line in base.splitlines() if line.startswith("FROM "))
    pin = ray_pin()
    assert ray.__version__.startswith(pin + ".")
    assert from_line == f"FROM rayproject/ray:{pin}.0-py311-cpu"

    for spec in (cluster["spec"], job["spec"]["rayClusterSpec"], service["spec"]["rayClusterConfig"]):
        assert spec["rayVersion"].startswith(pin + ".")
        assert spec["enableInTreeAutoscaling"] is True
        assert spec["authOptions"] == {"mode": "token"}
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        for group in spec["workerGroupSpecs"]:
            assert "rayStartParams" in group
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
            assert group["maxReplicas"] > group["minReplicas"]
        for container in containers(spec):
            # The derived image: the Dockerfile's base tag plus raysys.
            assert container["image"].endswith(f":0.1.0-ray{pin}.0-py311-cpu"), container["image"]
            resources = container["resources"]
            assert resources["requests"] == resources["limits"], container["name"]
            assert {"cpu", "memory"} <= resources["requests"].keys()


def test_rayjob_entrypoint_is_a_raysys_command():
    spec = load_yaml(RAYJOB)["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv == ["raysys", "run", "-c", "configs/quickstart.yaml", "--json"]  # the whole pipeline

    result = CliRunner().invoke(app, [*argv[1:], "--help"])
    assert result.exit_code == 0, result.output
    load_config(ROOT / argv[argv.index("-c") + 1])  # the config it names exists and is valid

    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"].endswith(".zip")
    RuntimeEnv(**runtime_env)  # Ray accepts it


def test_rayservice_is_what_serve_build_writes_and_serve_accepts(tmp_path):
    from ray.serve.schema import ServeDeploySchema

    from raysys.serving.build import IMPORT_PATH

    result = CliRunner().invoke(app, ["serve", "build", "-c", str(ROOT / "configs" / "quickstart.yaml"),
                                      "-o", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert load_yaml(RAYSERVICE) == load_yaml(tmp_path / "rayservice.yaml")  # regenerated, not hand-edited

    for serve_config in (yaml.safe_load(load_yaml(RAYSERVICE)["spec"]["serveConfigV2"]),
                         load_yaml(tmp_path / "serve.yaml")):
        schema = ServeDeploySchema.model_validate(serve_config)  # Serve's own schema of `serve deploy` files
        (application,) = schema.applications
        assert application.import_path == IMPORT_PATH
        assert application.args["config"]["storage"]["root"] == "${RAYSYS_STORAGE_ROOT:-./.raysys}"  # unexpanded
    module, function = IMPORT_PATH.split(":")
    assert callable(getattr(__import__(module, fromlist=[function]), function))
    assert schema.http_options.host == "127.0.0.1"  # serve.yaml keeps the config's host


def test_serve_build_refuses_a_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**load_yaml(ROOT / "configs" / "quickstart.yaml"), "serve": {"port": "x"}}))
    result = CliRunner().invoke(app, ["serve", "build", "-c", str(bad), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "serve.port" in result.output
    assert not (tmp_path / "out").exists()
