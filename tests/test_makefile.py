"""``make test`` tells the user how to run the suite CI runs when it skipped PostgreSQL's tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HINT = "run the suite CI runs, PostgreSQL included, with: bash .ci/run"


def make_test(pytest_args: str, **env: str) -> subprocess.CompletedProcess:
    """``make test`` on a few tests, in a clean environment, with this venv and no re-install."""
    clean = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
             "LANG": "C.UTF-8", **env}
    return subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", "test",
                           f"BIN={Path(sys.executable).parent}", f"PYTEST_ARGS={pytest_args}"],
                          cwd=REPO, env=clean, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_test_without_postgres_says_how_to_run_what_ci_runs():
    done = make_test("tests/test_native_stderr.py")
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr
    assert done.stderr.strip().endswith(HINT), done.stderr
    failed = make_test("tests/no_such_test.py")  # a failing run keeps both its exit status and the hint
    assert failed.returncode != 0 and HINT in failed.stderr, failed.stderr
    with_postgres = make_test("tests/test_native_stderr.py", RAYSYS_TEST_POSTGRES_URL="postgresql://u@127.0.0.1/x")
    assert with_postgres.returncode == 0 and HINT not in with_postgres.stderr, with_postgres.stderr
