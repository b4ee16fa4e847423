"""raysys: a closed-loop machine-learning system on Ray.

``raysys.System.from_config("configs/quickstart.yaml")`` is the entry point; importing the
package has no side effects (Ray starts only when a layer needs it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["System", "__version__", "load_config"]

if TYPE_CHECKING:
    from raysys.config import load_config
    from raysys.system import System


def __getattr__(name: str) -> Any:
    if name == "System":
        from raysys.system import System

        return System
    if name == "load_config":
        from raysys.config import load_config

        return load_config
    raise AttributeError(f"module 'raysys' has no attribute {name!r}")
