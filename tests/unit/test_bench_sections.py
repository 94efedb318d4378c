"""The maintenance sections' verdicts, tables and data shapes (no server: results dicts and files only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import readme, report, sections_report
from bench.maintenance import GROUP, MergeFile, reader_summary, write_merge_file
from bench.memory_shapes import KEY_LENGTH, long_key, write_members
from bench.refusals import BACK, duplicate_positions, write_with_duplicates

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "latest.json"


def spread(*values: float) -> dict[str, float]:
    return report.spread(list(values))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param((1.2, 1.5, 2.0), "PASS", id="every-pair-at-most"),
        pytest.param((2.1, 2.5), "FAIL", id="no-pair-at-most"),
        pytest.param((1.8, 2.2, 2.4), "UNDECIDED", id="target-inside-the-spread"),
    ],
)
def test_at_most_verdict_from_the_spread(values: tuple[float, ...], expected: str) -> None:
    assert sections_report.verdict_at_most(spread(*values), 2.0) == expected


def run(seconds: float, **extra: Any) -> dict[str, Any]:
    return {"seconds": seconds, "server_cpu": seconds * 0.8, "peak_rss_mb": 60.0, "wal_bytes": 1e6, **extra}


def merge_section(merge: list[float], append: list[float], peer_seconds: float, lock_wal: int) -> dict[str, Any]:
    counters = {"n_tup_ins": 50, "n_tup_upd": 50, "n_tup_hot_upd": 0, "n_tup_del": 0}
    records = [{"record": "Heap/LOCK", "count": 900, "bytes": lock_wal}] if lock_wal else []
    return {
        "records": 1000,
        "mix": {"identical": 900, "changed": 50, "new": 50},
        "runs": {
            "merge": [run(s, counters=counters, wal_records=records) for s in merge],
            "append": [run(s, counters=counters) for s in append],
        },
        "pairs": [{"merge": m, "append": a, "ratio": m / a} for m, a in zip(merge, append, strict=True)],
        "peer": {
            "seconds": peer_seconds,
            "fixed": 0.5,
            "per_record": 0.001,
            "method": "fixed + per-record",
            "points": [{"records": 100, "seconds": 0.6, "rows_updated": 95, "rows_hot_updated": 0, "peak_rss_mb": 150}],
        },
        "sql": {
            "rounds": 1,
            "labels": {"on_conflict": "a", "merge": "b"},
            "variants": {"on_conflict": [run(2.0)], "merge": [run(1.0)]},
            "identical_rows": 900,
            "unchanged_only": {
                "on_conflict": run(1.0, wal_bytes=lock_wal, wal_records=records),
                "merge": run(0.5, wal_bytes=0, wal_records=[]),
            },
        },
    }


class TestMergeTargets:
    def test_merge_vs_append_and_peer_and_unchanged_wal(self) -> None:
        section = merge_section([10.0, 12.0, 11.0], [6.0, 5.0, 6.5], peer_seconds=120.0, lock_wal=48_600)

        checks = {c["target"]: c for c in sections_report.merge_targets(section)}

        vs_append = checks["merge of the file <= 2x its append"]
        assert vs_append["verdict"] == "UNDECIDED"  # 1.67, 1.69 and 2.4: the target is inside the spread
        assert "median of 3 pairs" in vs_append["detail"]
        vs_peer = checks["merge >= 5x ahead of insert_rows(replace=True)"]
        assert (vs_peer["verdict"], vs_peer["value"]) == ("PASS", pytest.approx(120 / 11))
        wal = checks["unchanged rows write no WAL (the loader's upsert of the identical rows alone)"]
        assert (wal["verdict"], wal["value"]) == ("FAIL", 54.0)
        assert "Heap/LOCK ×900" in wal["detail"]
        assert "merge: 0 bytes" in wal["detail"]

    def test_no_wal_for_unchanged_rows_passes(self) -> None:
        section = merge_section([8.0], [5.0], peer_seconds=20.0, lock_wal=0)

        checks = {c["target"]: c for c in sections_report.merge_targets(section)}

        assert checks["merge of the file <= 2x its append"]["verdict"] == "PASS"
        assert checks["merge >= 5x ahead of insert_rows(replace=True)"]["verdict"] == "FAIL"  # 2.5x
        assert checks["unchanged rows write no WAL (the loader's upsert of the identical rows alone)"]["pass"]

    def test_tables_show_the_ratio_the_rewrites_and_the_sql_side_by_side(self) -> None:
        section = merge_section([10.0, 12.0], [5.0, 6.0], peer_seconds=120.0, lock_wal=48_600)

        merge_table, sql_table = sections_report.merge_tables(section)

        merge_row = merge_table["rows"][0]
        assert merge_row[2] == "11.00 [10.00–12.00]"
        assert merge_row[3] == "2.000"
        assert merge_row[5] == "50 / 0"
        assert "Heap/LOCK ×900" in merge_row[-1]
        assert merge_table["rows"][2][3] == "10.9"  # the peer vs the merge's median
        assert [row[0] for row in sql_table["rows"]] == ["on_conflict", "merge"]
        assert sql_table["rows"][1][2] == "0.500"  # MERGE / ON CONFLICT in the same round


def test_refusals_target_is_per_round_ratio_to_the_clean_load() -> None:
    rounds = [{"0": 1.0, "150": 1.8}, {"0": 1.1, "150": 2.6}]
    section = {
        "lines": 200_000,
        "duplicates": [0, 150],
        "max_bad_rows": 1000,
        "runs": {
            str(k): [
                run(r[str(k)], copy_statements=1 + 4 * k, copy_refused=k, tolerant_statements=3 * k) for r in rounds
            ]
            for k in (0, 150)
        },
        "per_round": [{"order": [0, 150], "seconds": r} for r in rounds],
    }

    (check,) = sections_report.refusals_targets(section)
    (table,) = sections_report.refusals_tables(section)

    assert check["verdict"] == "UNDECIDED"  # 1.8 and 2.36
    assert check["value"] == pytest.approx((1.8 + 2.6 / 1.1) / 2)
    assert table["rows"][1][:6] == ["150", "2.20 [1.80–2.60]", "2.082 [1.800–2.364]", "601", "150", "450"]
    assert table["rows"][1][6] == f"{(2.2 - 1.05) / 150 * 1000:.1f}"


def test_small_records_growth_against_the_tiny_load() -> None:
    section = {
        "key_length": 1000,
        "tiny_lines": 1000,
        "runs": {
            "binary": {
                "label": "binary rows",
                "lines": 2_000_000,
                "tiny": {"peak_rss_mb": 50.0},
                "big": {"peak_rss_mb": 70.0, "object_bytes": 6e6, "seconds": 20.0, "lines": 2_000_000},
            },
            "tolerant": {
                "label": "tolerant",
                "lines": 2_000_000,
                "tiny": {"peak_rss_mb": 51.0},
                "big": {"peak_rss_mb": 160.0, "object_bytes": 6e6, "seconds": 25.0, "lines": 2_000_000},
            },
        },
    }

    section["runs"]["gzip_one_member"] = {**section["runs"]["tolerant"], "label": "for the time"}

    checks = sections_report.small_records_targets(section)

    assert [(c["verdict"], c["value"]) for c in checks] == [("PASS", 20.0), ("FAIL", 109.0)]  # no target for the time
    assert sections_report.small_records_tables(section)[0]["rows"][1][5] == "+109.0 MB"


def test_reader_summary_splits_idle_from_during_and_checks_what_it_saw() -> None:
    old, new, partial = (10, "a", "a"), (10, "b", "b"), (5, "a", "b")
    samples = [(0.0, 0.1, old), (0.2, 0.3, old), (1.0, 1.5, old), (1.6, 3.0, new), (3.1, 3.2, new)]

    summary = reader_summary(samples, start=0.5, end=3.05, allowed={old, new})
    bad = reader_summary([*samples, (2.0, 2.1, partial)], start=0.5, end=3.05, allowed={old, new})

    assert summary["queries_during"] == 2  # the last one starts after the load
    assert summary["max_seconds"] == pytest.approx(1.4)
    assert summary["idle_median_seconds"] == pytest.approx(0.1)
    assert summary["only_old_or_new"] is True
    assert bad["only_old_or_new"] is False


def test_sections_reach_the_targets_and_the_readme_block() -> None:
    out = json.loads(RESULTS.read_text())
    out["merge"] = merge_section([10.0], [6.0], peer_seconds=120.0, lock_wal=48_600)
    out["section_tables"] = sections_report.tables(out)
    out["targets"] = sections_report.targets(out)

    text = readme.render(out)

    assert "Merge (--merge): 1,000 records (900 identical, 50 changed, 50 new) into 1,000 stored rows:" in text
    assert "| merge of the file <= 2x its append | 1.667 (" in text
    assert "| **FAIL** |" in text


def test_merge_file_mix_is_the_same_in_every_prefix(tmp_path: Path) -> None:
    path, mix = write_merge_file(tmp_path, 2000)
    lines = path.read_bytes().splitlines(keepends=True)
    merge_file = MergeFile(path, "k", "e", 2000, mix["identical"], mix["changed"], mix["new"], 0)

    assert len(lines) == 2000
    assert mix == {"identical": 1800, "changed": 100, "new": 100}
    assert all(json.loads(line) for line in lines)
    assert sum(b'"revision":2' in line for line in lines[:GROUP]) == 1
    for prefix in (1, 19, 20, 21, 999, 2000):
        changed = sum(b'"revision":2' in line for line in lines[:prefix])
        new = sum(int(json.loads(line)["npi"][:9]) - 100_000_000 >= 2000 for line in lines[:prefix])
        assert merge_file.prefix_mix(prefix) == {"identical": prefix - changed - new, "changed": changed, "new": new}


def test_duplicates_copy_an_earlier_line_at_the_lines_reported(tmp_path: Path) -> None:
    records = [b'{"npi":"%d"}\n' % i for i in range(1000)]

    reject_lines = write_with_duplicates(tmp_path / "d.jsonl", records, 1000, 3)

    lines = (tmp_path / "d.jsonl").read_bytes().splitlines(keepends=True)
    assert len(lines) == 1000
    assert reject_lines == [p + 1 for p in duplicate_positions(1000, 3)] == [251, 501, 751]
    assert [lines[n - 1] == lines[n - 1 - BACK] for n in reject_lines] == [True, True, True]
    assert len(set(lines)) == 997


def test_long_key_and_one_member_per_line(tmp_path: Path) -> None:
    import gzip

    write_members(tmp_path / "m.gz", [b"{}\n", b'{"a":1}\n'])

    assert len(long_key("x", ".jsonl.gz")) == KEY_LENGTH
    data = (tmp_path / "m.gz").read_bytes()
    assert data.count(b"\x1f\x8b\x08") == 2
    assert gzip.decompress(data) == b'{}\n{"a":1}\n'


PLAN = """\
Aggregate  (cost=949371.39..949371.40 rows=1 width=32) (actual time=8110.382..8110.389 rows=1 loops=1)
  CTE latest
    ->  Unique  (cost=844272.54..857500.06 rows=200 width=184) (actual time=1730.201..2372.307 rows=1000000 loops=1)
          ->  Sort  (cost=8.54..8.30 rows=2 width=184) (actual time=1730.197..2160.216 rows=1000000 loops=1)
                Sort Key: ((document ->> 'npi'::text)), s3_postgres_copy_seq DESC
                Sort Method: external merge  Disk: 454368kB
  CTE upserted
    ->  Insert on bench_merge stored  (cost=0.00..4.00 rows=2) (actual time=1730.592..7632.833 rows=100000 loops=1)
          Rows Removed by Conflict Filter: 900000
          Tuples Inserted: 50000
          Conflicting Tuples: 950000
Execution Time: 8290.592 ms""".splitlines()


def test_explain_summary_names_the_sort_and_the_conflicts() -> None:
    from bench.maintenance import explain_summary

    assert explain_summary(PLAN) == (
        "8.29 s in all; the DISTINCT ON sort 2.16 s (external merge  Disk: 454368kB); conflicting tuples 950,000; "
        "rows removed by conflict filter 900,000; tuples inserted 50,000"
    )
