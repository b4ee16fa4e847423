"""Every private or undocumented Ray API raysys relies on, in one place, each behind a guard.

Ray changes fast and these are not part of its public API. Each function here uses one of them
and, when it no longer works as expected, logs a warning once and falls back to a safe
behaviour (never a crash). ``tests/test_ray_compat.py`` is pinned to the installed Ray and
fails loudly when any guard takes its fallback, so an upgrade cannot silently degrade raysys
(for example into restarting every replica on each rollout).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)

TESTED_RAY_SERIES = "2.60"

# Serve's data-plane switches, read from the environment by ray.serve._private.constants.
SERVE_MODE_SWITCHES = ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED")
# HAProxy's machine-wide defaults that raysys overrides per cluster (same module).
HAPROXY_SETTINGS = ("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "RAY_SERVE_HAPROXY_SOCKET_PATH",
                    "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH", "RAY_SERVE_HAPROXY_SERVER_STATE_BASE",
                    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE", "RAY_SERVE_HAPROXY_STATS_PORT",
                    "RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT",
                    "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT", "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT",
                    "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT")
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


# Ray's switch for its single-machine mode (ray._private.ray_constants.ENABLE_RAY_CLUSTER, read once at import).
SINGLE_NODE_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
HAPROXY_BINARY_SETTING = "RAY_SERVE_HAPROXY_BINARY_PATH"  # the HAProxy executable Serve runs


def cluster_requires_token(address: str, timeout_s: float = 10.0) -> bool | None:
    """Whether the Ray cluster whose GCS is at ``address`` (host:port) refuses a driver without a token.

    Asks the GCS for its cluster id, the first call every driver makes, over plain gRPC and
    without a token: UNAUTHENTICATED means token authentication is on. Uses Ray's generated
    ``ray.core.generated.gcs_service_pb2_grpc`` stubs; None when they are gone or the GCS does
    not answer (Ray's own connection then reports why).
    """
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:
        _fallback("ray.core.generated.gcs_service_pb2_grpc", "a cluster's token authentication is not detected")
        return None
    with grpc.insecure_channel(address) as channel:
        try:
            gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s)
        except grpc.RpcError as error:
            return True if error.code() == grpc.StatusCode.UNAUTHENTICATED else None
    return False


def use_client_auth(token: bool, token_path: str | None = None) -> bool:
    """Make this process connect with token authentication on or off, reading the token from ``token_path``.

    Ray takes the mode from ``RAY_AUTH_MODE`` and the token from ``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, and caches both: this sets the variables
    (a path replaces ``RAY_AUTH_TOKEN``) and refreshes the caches with
    ``ray._raylet.Config.initialize`` and ``AuthenticationTokenLoader.reset_cache``, as
    ``ray.init`` does for a new local cluster. False when those are gone (the variables then
    reach only the processes this one starts).
    """
    import os

    os.environ["RAY_AUTH_MODE"] = "token" if token else "disabled"
    if token_path is not None:
        os.environ["RAY_AUTH_TOKEN_PATH"] = token_path
        os.environ.pop("RAY_AUTH_TOKEN", None)
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:
        _fallback("ray._raylet.Config / AuthenticationTokenLoader", "this process keeps the auth mode it started with")
        return False
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    return True


@contextlib.contextmanager
def loopback_node_ip(enabled: bool = True) -> Iterator[bool]:
    """Inside this block, Ray takes 127.0.0.1 as this machine's node IP (its single-machine mode).

    On Linux Ray swaps 127.0.0.1 for the machine's network IP, both for the node ``ray.init``
    starts and for an address it connects to, so a Ray on loopback would be unreachable. Turns
    ``ray._private.ray_constants.ENABLE_RAY_CLUSTER`` (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``,
    read once at import) off for the block; yields False (Ray's network IP) when it is gone.
    """
    try:
        from ray._private import ray_constants
    except ImportError:
        ray_constants = None
    if not enabled:
        yield False
        return
    if getattr(ray_constants, "ENABLE_RAY_CLUSTERS_ENV_VAR", None) != SINGLE_NODE_SWITCH:
        _fallback("ray._private.ray_constants.ENABLE_RAY_CLUSTER", "Ray listens on the node's network IP")
        yield False
        return
    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield True
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def haproxy_launcher_supported() -> bool:
    """Whether Serve runs the HAProxy executable named by ``RAY_SERVE_HAPROXY_BINARY_PATH`` and binds
    its stats and metrics listeners with ``bind *:PORT`` / ``bind :PORT`` (what raysys's launcher
    rewrites to ``ray.host``); False: those listeners may stay on every interface."""
    try:
        from ray.serve._private import constants
        from ray.serve._private.haproxy_templates import HAPROXY_CONFIG_TEMPLATE
    except ImportError:
        constants, HAPROXY_CONFIG_TEMPLATE = None, ""
    binds = ("bind :{{ config.metrics_port }}", "bind *:{{ config.stats_port }}")
    if not hasattr(constants, HAPROXY_BINARY_SETTING) or not all(b in HAPROXY_CONFIG_TEMPLATE for b in binds):
        _fallback(f"{HAPROXY_BINARY_SETTING} and Serve's HAProxy binds", "HAProxy's side ports may listen everywhere")
        return False
    return True
