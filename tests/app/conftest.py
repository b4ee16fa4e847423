"""Fixtures of the application-layer tests (the served model is ``tests/conftest.py::served``, one per session)."""

from __future__ import annotations

