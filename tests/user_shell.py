"""The environment of a new user's shell, for tests that run the CLI as a subprocess.

``env -i`` semantics: a temporary ``HOME``, the venv's ``bin`` on ``PATH``, W&B offline, and no
``RAY_*`` variable, so nothing the test session's own Ray set in this process (``RAY_AUTH_MODE``
among others) hides what a user meets.
"""

from __future__ import annotations

import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """A user's shell: ``HOME`` (created), the venv on ``PATH``, UTF-8, a wide terminal, W&B offline."""
    home.mkdir(parents=True, exist_ok=True)
    return {"HOME": str(home), "PATH": f"{BIN}:/usr/bin:/bin", "LANG": "C.UTF-8", "COLUMNS": "200",
            "WANDB_MODE": "offline", **extra}
