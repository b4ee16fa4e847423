"""Ray start-up and the translation of errors raised inside Ray tasks into one-line errors."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from raysys.config import RayConfig
from raysys.errors import RaysysError, SourceError


def ensure_ray(cfg: RayConfig) -> None:
    """Start or join Ray unless this process is already connected.

    ``ray.address`` (or ``$RAY_ADDRESS``) joins a running cluster ("auto" finds one started with
    ``ray start``); otherwise a fresh local Ray sized by ``ray.num_cpus`` starts, so a command
    never attaches to some other local Ray by accident. The dashboard is kept on: Ray Train's
    placement-group cleaner and Serve's status use the State API it serves, and without it a
    Tune trial's finished Train run keeps its CPUs reserved (ray-project/ray#54305).
    """
    import ray

    tune_ray_data()
    if ray.is_initialized():
        return
    address = cfg.address if cfg.address != "local" else None
    if address is None and cfg.address != "local":
        address = os.environ.get("RAY_ADDRESS")
    quiet = {"logging_level": "ERROR", "log_to_driver": False} if _QUIET else {"logging_level": "WARNING"}
    if address:
        ray.init(address=address, **quiet)
    else:
        start_local_ray(cfg, **quiet)
    if _QUIET:
        _quiet_ray_data()


_QUIET = False


def start_local_ray(cfg: RayConfig, **options: Any) -> None:
    """A new local Ray as raysys runs one: :func:`cluster_env` and its own dashboard (``ray.init`` options pass on)."""
    import ray

    port = free_port()
    with cluster_environment(cfg, port):
        ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=True, dashboard_port=port, **options)

SERVE_MODES = {
    # Ray Serve's high-throughput mode (Ray >= 2.55): HAProxy in front of the ingress replicas
    # instead of the Python proxy actor, and replicas that run requests on their main event loop.
    # Measured here: 5-7.5x the requests/s of the proxy mode for one small model (benchmarks/README.md).
    "high_throughput": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
    "proxy": {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"},
}


def cluster_env(cfg: RayConfig, dashboard_port: int) -> dict[str, str]:
    """Environment variables for a new Ray that raysys starts (its daemons pass them to every worker).

    ``RAY_API_SERVER_ADDRESS`` names the cluster's own dashboard (started on ``dashboard_port``):
    State API clients inside the cluster, such as Ray Train's placement-group cleaner, otherwise
    look for "the" local Ray in ``/tmp/ray/ray_current_cluster``, which names whichever cluster
    ``ray start`` ran last, possibly one stopped since; the cleaner then dies and a finished Train
    run keeps its CPUs. In ``high_throughput`` mode the cluster also gets HAProxy files and side
    ports of its own. A variable already set in this process wins (an operator's override).
    """
    env = {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard_port}", **SERVE_MODES[cfg.serve_mode]}
    if cfg.serve_mode == "high_throughput":
        env.update(_private_haproxy())
    return {name: os.environ.get(name, value) for name, value in env.items()}


def _private_haproxy() -> dict[str, str]:
    """Serve's HAProxy defaults (``/tmp/haproxy-serve``, ports 8404 and 9101) are the same for every
    Ray on a machine, so a second local cluster (a test session next to ``serve up``) would
    overwrite the first one's config and fail to bind: give each cluster its own."""
    import tempfile

    # short: Serve nests a 56-character node id under it, and HAProxy's socket paths max out at 97
    folder = tempfile.mkdtemp(prefix="rshap", dir="/tmp" if os.path.isdir("/tmp") else None)
    return {"RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{folder}/haproxy.cfg",
            "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{folder}/admin.sock",
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{folder}/metrics.sock",
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": folder,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{folder}/server-state",
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port())}


def free_port() -> int:
    """A TCP port nothing listens on right now (on 127.0.0.1)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def cluster_environment(cfg: RayConfig, dashboard_port: int) -> Iterator[None]:
    """Start a local Ray inside this block to give it :func:`cluster_env` (this process's env is restored)."""
    extra = cluster_env(cfg, dashboard_port)
    before = {name: os.environ.get(name) for name in extra}
    os.environ.update(extra)
    try:
        yield
    finally:  # only these names: ray.init sets variables of its own that later commands need
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def tune_ray_data() -> None:
    """Ray Data settings measured to matter here (benchmarks/README.md).

    One Parquet footer-reading actor instead of 32 per read (raysys reads small versions
    often), and numpy-backed pandas batches, which raysys's vectorized code is written for.
    """
    from ray.data import DataContext

    os.environ.setdefault("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", "1")
    DataContext.get_current().enable_arrow_backed_pandas_conversion = False


def quiet_logs() -> None:
    """Keep Ray's console chatter (progress logs, internal stack traces) off the terminal.

    For the CLI, which prints its own progress and a one-line error; Ray's log files keep
    everything (see /tmp/ray/session_latest/logs).
    """
    global _QUIET
    _QUIET = True
    logging.getLogger("ray").setLevel(logging.ERROR)
    from raysys.ray_compat import redirect_driver_prints_to_stderr

    redirect_driver_prints_to_stderr()  # raylet warnings would corrupt --json stdout


def quiet_serve_logs() -> None:
    """Serve's driver-side INFO lines (deploying, deleting) off the CLI's terminal, if quiet."""
    if _QUIET:
        logging.getLogger("ray.serve").setLevel(logging.WARNING)


def _quiet_ray_data() -> None:
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    for handler in logging.getLogger("ray.data").handlers:
        if "File" not in type(handler).__name__:
            handler.setLevel(logging.CRITICAL + 1)


def root_cause(error: BaseException) -> BaseException:
    """The innermost exception of a chain, looking through Ray's task-error wrappers."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, RaysysError) and not _is_ray_wrapper(error):
            return error
        inner = getattr(error, "cause", None) or error.__cause__ or error.__context__
        if not isinstance(inner, BaseException):
            break
        error = inner
    return error


def _is_ray_wrapper(error: BaseException) -> bool:
    from ray.exceptions import RayError

    return isinstance(error, RayError)


@contextlib.contextmanager
def user_errors(label: str) -> Iterator[None]:
    """Re-raise errors from Ray tasks as clean one-line raysys errors.

    A raysys error raised in a task comes back as itself; an I/O or parse error of the source
    (for example a malformed CSV row) becomes a :class:`SourceError` that starts with ``label``.
    """
    try:
        yield
    except RaysysError as error:
        cause = root_cause(error)
        if cause is error and not _is_ray_wrapper(error):
            raise
        raise _clean(cause, label) from None
    except Exception as error:
        cause = root_cause(error)
        if isinstance(cause, RaysysError):
            raise _clean(cause, label) from None
        if _from_io(cause):
            raise SourceError(f"{label}: {_first_line(cause)}") from None
        raise


def _clean(cause: BaseException, label: str) -> RaysysError:
    if isinstance(cause, RaysysError) and not _is_ray_wrapper(cause):
        cause.args = (_first_line(cause), *cause.args[1:])  # Ray appends retry advice to messages
        return cause
    return SourceError(f"{label}: {_first_line(cause)}")


def _from_io(error: BaseException) -> bool:
    """Whether an error is about reading data (a file, a format), not a bug in raysys."""
    import pyarrow as pa

    return isinstance(error, (pa.ArrowException, OSError, UnicodeDecodeError)) or type(error) is ValueError


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__
