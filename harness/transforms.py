"""Transforms for the tests and the benchmark (importable by name, so spawned workers can load them).

* :func:`rename_fields`: a cheap transform (two fields renamed, a constant added): the bench's
  second record-path contender beside the shipped API transform.
* :func:`picky_document`: the shipped API transform, refusing every record whose NPI ends in 7
  (the tests' "transform that raises on some records").
* :func:`slow_document`: the API transform with a pause per record (a load that lasts, to kill it).
* :func:`overflowing_document`: the record, with a number ``jsonb`` refuses on line 1500 (the server's error).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from provider_directory.documents import build_provider_document

__all__ = ["SOURCE", "overflowing_document", "picky_document", "rename_fields", "slow_document"]

SOURCE = "bulk-import"
"""The constant :func:`rename_fields` adds."""
SLOW_SECONDS = 0.0005


def rename_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The record with ``npi`` → ``provider_id`` and ``updated_at`` → ``modified_at``, and ``source`` added."""
    record["provider_id"] = record.pop("npi", None)
    record["modified_at"] = record.pop("updated_at", None)
    record["source"] = SOURCE
    return record


def picky_document(record: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`build_provider_document`, but a record whose NPI ends in 7 raises ``LookupError``."""
    if str(record.get("npi", "")).endswith("7"):
        raise LookupError("no such provider in the registry")
    return build_provider_document(record)


def slow_document(record: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`build_provider_document` after a short sleep (half a millisecond)."""
    time.sleep(SLOW_SECONDS)
    return build_provider_document(record)


def overflowing_document(record: dict[str, Any]) -> dict[str, Any]:
    """The record; the one with ``"n": 1500`` gets a number beyond ``numeric``'s range (the server refuses it)."""
    if record.get("n") == 1500:
        record["big"] = Decimal("1E+200000")
    return record
