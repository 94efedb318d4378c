"""The allowed values of the load options (no imports: safe to use at DAG parse time)."""

from __future__ import annotations

FORMATS = ("auto", "jsonl", "csv")
COMPRESSIONS = ("auto", "none", "gzip")
MODES = ("replace", "append")
COPY_FORMATS = ("auto", "text", "binary")
