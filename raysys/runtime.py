"""Ray start-up (local Rays on ``ray.host``, clusters joined with their own auth mode and token),
and the translation of errors raised inside Ray tasks into one-line errors."""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raysys.config import RayConfig, StorageConfig
from raysys.errors import ConfigError, RaysysError, SourceError
from raysys.haproxy import EVERY_INTERFACE, private_haproxy, stop_haproxy
from raysys.secrets import mask_text


def ensure_ray(cfg: RayConfig, storage: StorageConfig | None = None) -> None:
    """Start or join Ray unless this process is already connected.

    ``ray.address`` (or ``$RAY_ADDRESS``) joins a running cluster ("auto" finds one started with
    ``ray start``) the way it expects (:func:`join_ray`); otherwise a fresh local Ray sized by
    ``ray.num_cpus`` starts, so a command never attaches to some other local Ray by accident.
    A joined cluster of several nodes must share the storage root (:func:`check_cluster_storage`).
    The dashboard is kept on: Ray Train's placement-group cleaner and Serve's status use the
    State API it serves, and without it a Tune trial's finished Train run keeps its CPUs
    reserved (ray-project/ray#54305).
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
        join_ray(address, **quiet)
        check_cluster_storage(storage)
    else:
        start_local_ray(cfg, **quiet)
    if _QUIET:
        _quiet_ray_data()


_QUIET = False
RAY_TOKEN_FILE = ("~", ".ray", "auth_token")  # where Ray (`ray get-auth-token --generate`) keeps its token


@dataclass
class NewRay:
    """What raysys gives a Ray it starts: its processes' environment, and the HAProxy folder it owns."""

    env: dict[str, str]
    haproxy_dir: str | None

    def release(self) -> None:
        """Stop this Ray's HAProxy and remove its folder (once Ray itself is down)."""
        stop_haproxy(self.haproxy_dir)


_STARTED: list[NewRay] = []  # the local Rays this process started (ray.init), released at exit


def start_local_ray(cfg: RayConfig, **options: Any) -> NewRay:
    """A new local Ray as raysys runs one (:func:`new_ray`, its own dashboard, on ``ray.host``).

    ``ray.init`` options pass on. :func:`stop_local_ray` (also run at exit) shuts it down with
    its HAProxy.
    """
    import ray

    from raysys.ray_compat import loopback_node_ip

    port = free_port()
    new = new_ray(cfg, port)
    node = {"_node_ip_address": cfg.host} if not (is_loopback(cfg.host) or every_interface(cfg.host)) else {}
    try:
        with environment(new.env), loopback_node_ip(is_loopback(cfg.host)):
            ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=True, dashboard_host=cfg.host,
                     dashboard_port=port, **node, **options)
    except BaseException:
        new.release()
        raise
    if not _STARTED:
        atexit.register(stop_local_ray)
    _STARTED.append(new)
    return new


def stop_local_ray() -> None:
    """Shut Ray down in this process, then stop the HAProxy of every local Ray it started.

    Serve runs HAProxy as a child of its proxy actor and leaves it running when Ray stops.
    """
    import ray

    ray.shutdown()
    while _STARTED:
        _STARTED.pop().release()


def join_ray(address: str, token_path: str | None = None, **options: Any) -> None:
    """Connect this process to the running Ray at ``address`` the way that cluster expects.

    The auth mode is the cluster's (its GCS refuses a call without a token when token auth is
    on), never whatever this shell's ``RAY_AUTH_MODE`` says. The token is read from
    ``token_path`` (the file a head raysys started was given), else where Ray looks for it
    (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``). A loopback address
    stays on loopback (Linux Ray would swap in the network IP, where such a Ray does not listen).
    ``ray.init`` options pass on; a Ray Client address (``ray://``) goes to Ray as it is.
    """
    import ray

    from raysys.ray_compat import cluster_requires_token, loopback_node_ip, use_client_auth

    gcs = _gcs_address(address)
    if gcs and not port_open(gcs):
        raise RaysysError(f"no Ray cluster answers at {address} (from --address, ray.address or $RAY_ADDRESS): "
                          "check the address, or that the cluster is up")
    needs_token = cluster_requires_token(gcs) if gcs else None
    if needs_token is not None:
        use_client_auth(needs_token, _client_token_file(gcs, token_path) if needs_token else None)
    with loopback_node_ip(gcs is not None and is_loopback(gcs.rsplit(":", 1)[0].strip("[]"))):
        ray.init(address=gcs or address, **options)


def port_open(address: str, timeout_s: float = 2.0) -> bool:
    """Whether something accepts TCP connections at ``address`` (host:port, IPv6 hosts in brackets)."""
    import socket

    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def local_storage_problem(root: str, shared: bool, alive_nodes: int) -> str | None:
    """Why ``storage.root`` cannot hold the state of a cluster of ``alive_nodes`` nodes; None when it can.

    A local path is each node's own disk, unless ``storage.shared`` says it is a mount every node sees.
    """
    local = "://" not in root or root.startswith("file://")
    if shared or not local or alive_nodes < 2:
        return None
    return (f"storage.root is the local path '{root}' and the Ray cluster has {alive_nodes} nodes, which would each "
            "write their own copy: set storage.root to shared storage (s3://…, gs://…), or set storage.shared: true "
            "if that path is a mount every node sees")


def check_cluster_storage(storage: StorageConfig | None) -> None:
    """Refuse (ConfigError) a local ``storage.root`` on the multi-node cluster this process is connected to."""
    import ray

    if storage is None:
        return
    alive = sum(1 for node in ray.nodes() if node.get("Alive"))
    problem = local_storage_problem(storage.root, storage.shared, alive)
    if problem:
        raise ConfigError(problem)


def _gcs_address(address: str) -> str | None:
    """host:port of the GCS ``address`` names ("auto": the cluster `ray start` ran last), None if unknown."""
    if "://" in address:
        return None
    if address != "auto":
        return address
    from raysys.ray_compat import ray_address_file

    path = ray_address_file()
    try:
        return (Path(path).read_text().strip() or None) if path else None
    except OSError:
        return None


def _client_token_file(address: str, recorded: str | None) -> str | None:
    """The token file to send to a cluster that wants one: the ``recorded`` one, else Ray's
    (None: ``RAY_AUTH_TOKEN`` holds the token)."""
    if recorded is None and os.environ.get("RAY_AUTH_TOKEN"):
        return None
    path = Path(recorded or os.environ.get("RAY_AUTH_TOKEN_PATH") or Path(*RAY_TOKEN_FILE).expanduser())
    if not path.is_file():
        hint = "" if recorded else " (or name its file in RAY_AUTH_TOKEN_PATH)"
        raise RaysysError(f"the Ray cluster at {address} uses token authentication and there is no token here: "
                          f"put the cluster's token in {path}{hint}")
    return str(path)


def head_token_file() -> str:
    """The token file for a head raysys starts: ``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``,
    created (private to this user) the way ``ray get-auth-token --generate`` makes one if missing."""
    import secrets

    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path(*RAY_TOKEN_FILE).expanduser())
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(secrets.token_hex(32))
    return str(path)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP address) is this machine's loopback."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def every_interface(host: str) -> bool:
    """Whether ``host`` means every interface (0.0.0.0 or ::)."""
    return host in EVERY_INTERFACE


SERVE_MODES = {
    # Ray Serve's high-throughput mode (Ray >= 2.55): HAProxy in front of the ingress replicas
    # instead of the Python proxy actor, and replicas that run requests on their main event loop.
    # Measured here: 5-7.5x the requests/s of the proxy mode for one small model (benchmarks/README.md).
    "high_throughput": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
    "proxy": {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"},
}


SERVE_DRAIN_SETTING = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"  # read by Serve's controller and replicas


def new_ray(cfg: RayConfig, dashboard_port: int) -> NewRay:
    """Environment for a new Ray that raysys starts (its daemons pass it to every worker).

    ``RAY_API_SERVER_ADDRESS`` names the cluster's own dashboard (started on ``dashboard_port``):
    State API clients inside the cluster, such as Ray Train's placement-group cleaner, otherwise
    look for "the" local Ray in ``/tmp/ray/ray_current_cluster``, which names whichever cluster
    ``ray start`` ran last, possibly one stopped since; the cleaner then dies and a finished Train
    run keeps its CPUs. With ``ray.host`` on loopback, Ray runs in its single-machine mode (node
    IP 127.0.0.1, so its services listen there). In ``high_throughput`` mode the cluster also gets
    HAProxy files and side ports of its own, on ``ray.host`` (:mod:`raysys.haproxy`), and Serve
    holds a removed replica open ``ray.serve_drain_s`` (not Ray's 30 s). A variable already set in
    this process wins (an operator's override).
    """
    from raysys.ray_compat import HAPROXY_BINARY_SETTING, SINGLE_NODE_SWITCH

    api_host = "127.0.0.1" if every_interface(cfg.host) else cfg.host
    env = {"RAY_API_SERVER_ADDRESS": f"http://{_url_host(api_host)}:{dashboard_port}", **SERVE_MODES[cfg.serve_mode]}
    if is_loopback(cfg.host):
        env[SINGLE_NODE_SWITCH] = "0"
    folder, launcher = None, None
    if cfg.serve_mode == "high_throughput":
        env[SERVE_DRAIN_SETTING] = f"{cfg.serve_drain_s:g}"
        haproxy_env, folder = private_haproxy(cfg.host, free_port(), free_port())
        launcher = haproxy_env.pop(HAPROXY_BINARY_SETTING, None)
        env.update(haproxy_env)
    env = {name: os.environ.get(name, value) for name, value in env.items()}
    if launcher is not None:  # it runs the operator's binary, if one is set
        env[HAPROXY_BINARY_SETTING] = launcher
    return NewRay(env, folder)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def free_port() -> int:
    """A TCP port nothing listens on right now (on 127.0.0.1)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def environment(extra: dict[str, str]) -> Iterator[None]:
    """Start a local Ray inside this block to give it ``extra`` variables (this process's env is restored)."""
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


SMALL_READ_ROWS = 100_000


@contextlib.contextmanager
def parquet_reader_for(rows: int) -> Iterator[None]:
    """Plan a read of ``rows`` rows with Ray Data's first Parquet reader when it is small.

    The default reader (DataSourceV2) starts a footer-reading actor per read: about 2 s each
    time on 2 cores, where the first reader takes 0.2 s. On large versions the default reads in
    finer units and was 1.18-1.22x faster at 1M-5M rows (with 1.5-2x the memory), so it keeps
    them. An operator's RAY_DATA_USE_DATASOURCE_V2 decides every read.
    """
    from ray.data import DataContext

    context = DataContext.get_current()
    if rows > SMALL_READ_ROWS or "RAY_DATA_USE_DATASOURCE_V2" in os.environ:
        yield
        return
    previous, context.use_datasource_v2 = context.use_datasource_v2, False
    try:
        yield
    finally:
        context.use_datasource_v2 = previous


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
    text = mask_text(str(error)).strip().splitlines()
    return text[0][:300] if text else type(error).__name__
