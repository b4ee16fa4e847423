"""Every private or undocumented Ray API raysys relies on, in one place, each behind a guard.

Ray changes fast and these are not part of its public API. Each function here uses one of them
and, when it no longer works as expected, logs a warning once and falls back to a safe
behaviour (never a crash). ``tests/test_ray_compat.py`` is pinned to the installed Ray and
fails loudly when any guard takes its fallback, so an upgrade cannot silently degrade raysys
(for example into restarting every replica on each rollout).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

logger = logging.getLogger(__name__)

TESTED_RAY_SERIES = "2.60"

# Serve's data-plane switches, read from the environment by ray.serve._private.constants.
SERVE_MODE_SWITCHES = ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED")
# HAProxy's machine-wide defaults that raysys overrides per cluster (same module).
HAPROXY_SETTINGS = ("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "RAY_SERVE_HAPROXY_SOCKET_PATH",
                    "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH", "RAY_SERVE_HAPROXY_SERVER_STATE_BASE",
                    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE", "RAY_SERVE_HAPROXY_STATS_PORT",
                    "RAY_SERVE_HAPROXY_METRICS_PORT")
ASGI_BUILDER = "__serve_build_asgi_app__"  # a class with this method is a late-bound Serve ingress


@functools.cache
def _fallback(hook: str, consequence: str) -> None:
    """Log (once per hook) that a private Ray API is gone and what raysys does instead."""
    import ray

    logger.warning("raysys: Ray %s no longer offers %s (tested with Ray %s.x); %s", ray.__version__, hook,
                   TESTED_RAY_SERIES, consequence)


def redirect_driver_prints_to_stderr() -> bool:
    """Send every line Ray prints on the driver (raylet warnings, worker output) to stderr.

    Ray prints some raylet warnings to stdout, which would corrupt a command's ``--json``
    output. Uses ``ray._private.worker.print_to_stdstream``; False when it is gone.
    """
    try:
        from ray._private import worker
    except ImportError:
        worker = None
    original = getattr(worker, "print_to_stdstream", None)
    if not callable(original):
        _fallback("ray._private.worker.print_to_stdstream", "Ray's driver lines may reach stdout")
        return False
    if getattr(original, "_raysys", False):
        return True

    def to_stderr(data: dict, ignore_prefix: bool) -> None:
        original({**data, "is_err": True}, ignore_prefix)

    to_stderr._raysys = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr
    return True


def ray_address_file() -> str | None:
    """``/tmp/ray/ray_current_cluster``: the file naming the local cluster ``ray start`` ran last.

    Uses ``ray._common.utils.get_ray_address_file``; None when it is gone.
    """
    try:
        from ray._common.utils import get_ray_address_file
    except ImportError:
        _fallback("ray._common.utils.get_ray_address_file", "a stale ray_current_cluster is left in place")
        return None
    return get_ray_address_file(None)


def pin_deployment_version(deployment: Any, version: str) -> Any:
    """The deployment with its code version pinned, so a new ``user_config`` is applied in place.

    Serve's Python API otherwise draws a random version per ``serve.run`` and restarts every
    replica on each rollout. Uses ``Deployment.options(version=…, _internal=True)``; when that
    is refused, returns the deployment unchanged (rollouts then restart replicas, still without
    failed requests, only slower).
    """
    try:
        return deployment.options(version=version, _internal=True)
    except (TypeError, ValueError):
        _fallback("Deployment.options(version=..., _internal=True)", "every rollout restarts the replicas")
        return deployment


def asgi_builder_supported() -> bool:
    """Whether Serve builds an ingress's ASGI app through the class's ``__serve_build_asgi_app__``."""
    try:
        from ray.serve._private.replica import SERVE_BUILD_ASGI_APP_METHOD
    except ImportError:
        SERVE_BUILD_ASGI_APP_METHOD = None
    if SERVE_BUILD_ASGI_APP_METHOD != ASGI_BUILDER:
        _fallback(ASGI_BUILDER, "the model server cannot be deployed")
        return False
    return True


def unknown_serve_settings() -> list[str]:
    """The ``RAY_SERVE_*`` variables raysys sets that Serve's constants no longer read (empty: all read)."""
    try:
        from ray.serve._private import constants
    except ImportError:
        return [*SERVE_MODE_SWITCHES, *HAPROXY_SETTINGS]
    unknown = [name for name in (*SERVE_MODE_SWITCHES, *HAPROXY_SETTINGS) if not hasattr(constants, name)]
    if unknown:
        _fallback(", ".join(unknown), "Serve ignores these settings")
    return unknown
