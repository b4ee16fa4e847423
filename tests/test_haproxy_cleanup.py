"""A process that started a local Ray stops that Ray's HAProxy when it exits (Serve leaves it running)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import haproxy_processes

SERVE_THEN_EXIT = """
import time
from ray import serve
from raysys.config import RayConfig
from raysys.processes import pids_with_option
from raysys.runtime import free_port, start_local_ray

new = start_local_ray(RayConfig(num_cpus=1), logging_level="ERROR", log_to_driver=False)
print(new.haproxy_dir, flush=True)
serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
deadline = time.monotonic() + 300
while not pids_with_option("-f", new.haproxy_dir + "/"):
    assert time.monotonic() < deadline, "HAProxy did not start"
    time.sleep(0.5)
print("haproxy running", flush=True)
"""  # then the process simply exits, as a CLI command does


def test_haproxy_of_a_local_ray_is_stopped_and_its_folder_removed_when_the_process_exits():
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run([sys.executable, "-c", SERVE_THEN_EXIT], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    folder, *rest = done.stdout.split("\n")
    try:
        assert done.returncode == 0 and rest[0] == "haproxy running", done.stderr[-3000:]
        assert haproxy_processes(folder) == [] and not Path(folder).exists()
    finally:
        for line in haproxy_processes(folder) if folder else []:  # only that Ray's HAProxy
            os.kill(int(line.split(":")[0]), 9)
