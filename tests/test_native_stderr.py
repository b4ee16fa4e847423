"""Ray's native stderr lines stay in its log files during a block; Python's stderr still shows."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import os, sys
from raysys.native_stderr import ray_core_lines_to_log_files
os.write(2, b"native before\n")
with ray_core_lines_to_log_files():
    os.write(2, b"native inside\n")
    print("python inside", file=sys.stderr)
    with ray_core_lines_to_log_files():
        os.write(2, b"native nested\n")
    os.write(2, b"native after the nested block\n")
try:
    with ray_core_lines_to_log_files():
        raise ValueError("boom")
except ValueError:
    pass
os.write(2, b"native after\n")
print("python after", file=sys.stderr)
"""


def test_only_writes_that_bypass_python_stderr_are_dropped_and_everything_is_restored():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["native before", "python inside", "native after", "python after"]
