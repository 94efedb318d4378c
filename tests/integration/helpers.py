"""Helpers for the integration tests: the shared load environment without the proxy, on either driver."""

from __future__ import annotations

from pathlib import Path

from harness.loads import LoadEnv, exact, unique

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTDATA = REPO_ROOT / "tests" / "data"  # the vendored public suites: see tests/data/README.md
DRIVERS = ("psycopg", "psycopg2")
# No proxy here, so nothing stalls on purpose; a loaded machine may still be slow.
TIMEOUT = (10.0, 60.0)

IntegrationEnv = LoadEnv
"""A :class:`~harness.loads.LoadEnv` straight to the S3 server (``proxy=None``)."""

__all__ = ["DRIVERS", "TESTDATA", "TIMEOUT", "IntegrationEnv", "exact", "unique"]
