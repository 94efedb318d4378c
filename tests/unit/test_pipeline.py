"""``pipeline``: how many transform workers a load gets, and the ``transform_workers`` option's check.

What the workers produce (the same rows and rejects as in-process, errors, no orphans) is tested
against real servers in ``tests/integration/test_transform_workers.py``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from s3_postgres_copy import pipeline
from s3_postgres_copy.encoders import JsonLinesEncoder
from s3_postgres_copy.loader import LoadOptions
from s3_postgres_copy.records import LineBlock
from s3_postgres_copy.rows import TextRows

ROWS = TextRows(["k"], with_line=True)


class TestTransformWorkersOption:
    @pytest.mark.parametrize("workers", [None, 0, 1, 2, 64])
    def test_valid(self, workers: int | None) -> None:
        assert LoadOptions("b", "k", "t", transform_workers=workers).prepare().options.transform_workers == workers

    @pytest.mark.parametrize("workers", [-1, 1.5, "2", True])
    def test_invalid(self, workers: Any) -> None:
        error = f"transform_workers must be a non-negative integer, got {workers!r}"
        with pytest.raises(ValueError, match=f"^{re.escape(error)}$"):
            LoadOptions("b", "k", "t", transform_workers=workers).check()


class TestAvailableCpus:
    @pytest.fixture
    def affinity(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(pipeline.os, "sched_getaffinity", lambda pid: set(range(6)))

    @pytest.mark.parametrize(
        ("cpu_max", "expected"),
        [
            (None, 6),  # no cgroup v2 file
            ("max 100000\n", 6),  # no quota
            ("200000 100000\n", 2),  # a container limited to 2 CPUs
            ("150000 100000\n", 2),  # 1.5 CPUs: rounded up
            ("50000 100000\n", 1),  # half a CPU: at least one
            ("800000 100000\n", 6),  # a quota above the affinity
            ("garbage\n", 6),
        ],
        ids=["no-cgroup", "no-quota", "two", "one-and-a-half", "half", "above-affinity", "unreadable"],
    )
    def test_affinity_capped_by_the_cgroup_quota(
        self, affinity: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_max: str | None, expected: int
    ) -> None:
        path = tmp_path / "cpu.max"
        if cpu_max is not None:
            path.write_text(cpu_max)
        monkeypatch.setattr(pipeline, "_CGROUP_CPU_MAX", path)

        assert pipeline.available_cpus() == expected

    @pytest.mark.parametrize(("cpus", "expected"), [(1, 1), (2, 2), (8, 8), (64, pipeline.MAX_DEFAULT_WORKERS)])
    def test_default_is_the_cpus_at_most_eight(self, monkeypatch: pytest.MonkeyPatch, cpus: int, expected: int) -> None:
        monkeypatch.setattr(pipeline, "available_cpus", lambda: cpus)

        assert pipeline.default_transform_workers() == expected


class TestInProcess:
    """Where no worker starts, ``encoded_blocks`` is the encoder's own ``encode``."""

    BLOCKS = [LineBlock(1, b'{"a":1}\n{"a":2}\n', 2), LineBlock(3, b'{"a":3}\n', 1)]

    @pytest.mark.parametrize("workers", [0, 1])
    def test_zero_or_one(self, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
        monkeypatch.setattr(pipeline, "OrderedPool", None)  # would fail if used
        encoder = JsonLinesEncoder(ROWS, transform=dict)

        out = list(pipeline.encoded_blocks(encoder, self.BLOCKS, workers, location="s3://b/k"))

        assert [list(block.lines) for block in out] == [[1, 2], [3]]
        assert b"".join(block.payload for block in out) == b'{"a":1}\tk\t1\n{"a":2}\tk\t2\n{"a":3}\tk\t3\n'

    def test_lines_as_they_are_whatever_the_count(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(pipeline, "OrderedPool", None)

        out = list(pipeline.encoded_blocks(JsonLinesEncoder(ROWS), self.BLOCKS, 8, location="s3://b/k"))

        assert sum(len(block.lines) for block in out) == 3

    def test_workers_in_order(self) -> None:
        blocks = [LineBlock(n, b'{"n":%d}\n' % n, 1) for n in range(1, 41)]
        encoder = JsonLinesEncoder(ROWS, transform=dict)

        out = list(pipeline.encoded_blocks(encoder, blocks, 3, location="s3://b/k"))

        assert [list(block.lines) for block in out] == [[n] for n in range(1, 41)]
        assert [block.payload for block in out] == [b'{"n":%d}\tk\t%d\n' % (n, n) for n in range(1, 41)]
