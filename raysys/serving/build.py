"""``raysys serve build``: the model server as a Serve config file (for ``serve deploy``) and as a
KubeRay ``RayService`` manifest, both from the raysys config.

Both name :func:`application` as the Serve import path, with the raysys config as written (its
``${VAR}`` references unexpanded, so no secret value lands in a generated file) as the
application's arguments. Where Serve builds the application (the cluster's controller), the
builder expands the variables, reads the saved traffic plan (else ``serve.model`` as the
champion) and each served version's artifacts from ``storage.root``, and returns the application
``raysys serve up`` would run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from raysys.config import CONFIG_ENV_VAR, DEFAULT_CONFIG_PATH, expand_env, load_config, parse_config
from raysys.errors import ConfigError, RaysysError

IMPORT_PATH = "raysys.serving.build:application"
SERVE_FILE, RAYSERVICE_FILE = "serve.yaml", "rayservice.yaml"
RAY_IMAGE_TAG = "2.60.0-py311-cpu"  # the Ray image cluster/Dockerfile builds on (the `ray==2.60.*` pin)


def serve_config(raw: dict[str, Any], serve_host: str | None = None) -> dict[str, Any]:
    """The Serve config (``serve deploy`` schema) of the raysys config ``raw`` (as parsed from YAML)."""
    config = parse_config(expand_env(raw), source="config")
    cfg = config.serve
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": serve_host or cfg.host, "port": cfg.port},
        "applications": [{"name": cfg.app_name or config.project.name, "route_prefix": cfg.route_prefix,
                          "import_path": IMPORT_PATH, "args": {"config": raw}}],
    }


def rayservice(serve: dict[str, Any], name: str, image: str) -> dict[str, Any]:
    """A KubeRay ``RayService`` running ``serve`` on an autoscaling cluster of ``image`` (token auth on)."""
    port = serve["http_options"]["port"]
    env = [{"name": "RAY_DATA_DISABLE_PROGRESS_BARS", "value": "1"},
           {"name": "RAY_SERVE_ENABLE_HA_PROXY", "value": "1"},  # Serve's high-throughput data plane
           {"name": "RAY_SERVE_THROUGHPUT_OPTIMIZED", "value": "1"}]

    def container(role: str, cpu: str, memory: str, ports: list[dict[str, Any]]) -> dict[str, Any]:
        return {"name": f"ray-{role}", "image": image, "imagePullPolicy": "IfNotPresent", "ports": ports, "env": env,
                "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}}}

    head_ports = [{"containerPort": 6379, "name": "gcs"}, {"containerPort": 8265, "name": "dashboard"},
                  {"containerPort": 10001, "name": "client"}, {"containerPort": port, "name": "serve"}]
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "serveConfigV2": dump_yaml(serve),
            "rayClusterConfig": {
                "rayVersion": RAY_IMAGE_TAG.split("-")[0],
                "authOptions": {"mode": "token"},
                "enableInTreeAutoscaling": True,
                "headGroupSpec": {
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": {"metadata": {"labels": labels},
                                 "spec": {"containers": [container("head", "2", "8Gi", head_ports)]}},
                },
                "workerGroupSpecs": [{
                    "groupName": "cpu", "replicas": 1, "minReplicas": 1, "maxReplicas": 10, "rayStartParams": {},
                    "template": {"metadata": {"labels": labels},
                                 "spec": {"containers": [container("worker", "4", "16Gi", [])]}},
                }],
            },
        },
    }


class _ManifestDumper(yaml.SafeDumper):
    """Plain YAML for people and kubectl: no anchors, multi-line strings as ``|`` blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _string(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_ManifestDumper.add_representer(str, _string)


def dump_yaml(data: dict[str, Any]) -> str:
    """``data`` as YAML in the order given, long lines unwrapped."""
    return yaml.dump(data, Dumper=_ManifestDumper, sort_keys=False, width=10_000)


def default_image() -> str:
    """The image name cluster/Dockerfile's README builds (REGISTRY is a placeholder to replace)."""
    from raysys import __version__

    return f"REGISTRY/raysys:{__version__}-ray{RAY_IMAGE_TAG}"


def build(config_path: str | os.PathLike | None, out_dir: str | os.PathLike, image: str | None = None) -> dict[str, Any]:
    """Write ``serve.yaml`` and ``rayservice.yaml`` for the config into ``out_dir``; returns their paths."""
    path = Path(config_path or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)
    config = load_config(path)  # the config must be valid as it stands
    raw = yaml.safe_load(path.read_text())
    serve = serve_config(raw)
    name = config.serve.app_name or config.project.name
    # In a pod the Serve port is reached on the pod's IP: the Kubernetes Service decides who can reach it.
    manifest = rayservice(serve_config(raw, serve_host="0.0.0.0"), name, image or default_image())
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / SERVE_FILE).write_text(dump_yaml(serve))
        (out / RAYSERVICE_FILE).write_text(dump_yaml(manifest))
    except OSError as error:
        raise RaysysError(f"serve build: cannot write to {out}: {error.strerror or error}") from None
    return {"app": name, "serve_config": str(out / SERVE_FILE), "rayservice": str(out / RAYSERVICE_FILE),
            "import_path": IMPORT_PATH}


def application(args: dict[str, Any]):
    """Serve's entry point (``import_path``): the model server of the raysys config in ``args["config"]``.

    Like the CLI, it builds the whole system from the config (the facade adds what the layers
    above serving contribute, such as the dashboard's routes).
    """
    from raysys.system import System

    if not isinstance(args.get("config"), dict):
        raise ConfigError("serve build: the application's args need the raysys config as 'config'")
    return System(parse_config(expand_env(args["config"]), source="serve config args")).serving.application()
