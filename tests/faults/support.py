"""Helpers for the fault tests: the shared load environment (``harness/loads.py``) through the proxy."""

from __future__ import annotations

from harness.loads import FAST, STALL_TIMEOUT, TIMEOUT, LoadEnv, PresignedUrls, s3_client, unique

FaultEnv = LoadEnv
"""A :class:`~harness.loads.LoadEnv` with the test's fault proxy."""

__all__ = ["FAST", "STALL_TIMEOUT", "TIMEOUT", "FaultEnv", "PresignedUrls", "s3_client", "unique"]
