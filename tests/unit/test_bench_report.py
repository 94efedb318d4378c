"""The benchmark's verdicts: a target inside the pairs' spread is undecided, not a coin flip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import readme, report

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "latest.json"


def ratio(*values: float) -> dict[str, float]:
    return report.spread(list(values))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ((0.96, 1.02, 0.99), "PASS"),
        ((0.95, 0.95), "PASS"),
        ((0.80, 0.90, 0.949), "FAIL"),
        ((0.84, 0.99, 1.20), "UNDECIDED"),  # median above the target, one pair below
        ((0.70, 0.84, 0.96), "UNDECIDED"),  # median below the target, one pair above
    ],
)
def test_verdict_from_the_spread_of_pair_ratios(values: tuple[float, ...], expected: str) -> None:
    assert report.verdict(ratio(*values), 0.95) == expected


@pytest.mark.parametrize(("n", "confidence"), [(1, 0.0), (2, 0.5), (3, 0.75), (5, 0.9375), (0, 0.0)])
def test_min_max_covers_the_median_with_this_confidence(n: int, confidence: float) -> None:
    assert report.median_confidence(n) == pytest.approx(confidence)


def run_with(pairs: dict[str, list[float]]) -> dict[str, Any]:
    """A minimal results dict: limit 10 s runs, and each variant's pair ratios."""
    runs: dict[str, list[dict[str, float]]] = {"limit": [], "plain": [], "gzip": [], "psycopg2": []}
    out_pairs: dict[str, list[dict[str, float]]] = {}
    for variant, ratios in pairs.items():
        out_pairs[variant] = []
        for r in ratios:
            runs["limit"].append({"seconds": 10.0, "server_cpu": 9.9, "client_cpu": 0.3, "s3_cpu": 0.0})
            runs[variant].append({"seconds": 10.0 / r, "server_cpu": 8.9, "client_cpu": 2.5, "s3_cpu": 0.3})
            out_pairs[variant].append({"limit": 10.0, "operator": 10.0 / r, "ratio": r})
    for group in runs.values():
        for run in group:
            run.update(machine_busy=run["server_cpu"] + run["client_cpu"], machine_steal=0.0)
    return {"runs": runs, "pairs": out_pairs}


def test_targets_name_the_verdict_the_confidence_and_the_server_busy_share() -> None:
    out = run_with({"plain": [0.9, 1.0, 1.1], "gzip": [0.96, 0.97, 0.98]})
    rows = [
        {"key": "plain", "ratio_to_limit": ratio(0.9, 1.0, 1.1)},
        {"key": "gzip", "ratio_to_limit": ratio(0.96, 0.97, 0.98)},
    ]

    checks = {c["target"]: c for c in report.targets(out, rows)}

    plain, gzip = checks["operator plain >= 0.95x limit"], checks["operator gzip >= 0.95x limit"]
    assert (plain["verdict"], plain["pass"], plain["value"]) == ("UNDECIDED", False, 1.0)
    assert (gzip["verdict"], gzip["pass"]) == ("PASS", True)
    assert "median of 3 per-pair ratios 1.000 [0.900–1.100]" in plain["detail"]
    assert "with 75% confidence" in plain["detail"]
    assert "server backend busy 89% of the operator's wall time vs 99% of the limit's" in plain["detail"]


def test_readme_table_marks_what_did_not_pass() -> None:
    out = json.loads(RESULTS.read_text())
    out["targets"] = [
        {"target": "a", "value": 1.0, "pass": True, "verdict": "PASS", "detail": "d1"},
        {"target": "b", "value": 0.9, "pass": False, "verdict": "UNDECIDED", "detail": "d2"},
        {"target": "c", "value": 3.0, "pass": False, "detail": "old results without a verdict"},
    ]

    text = readme.render(out)

    assert "| a | 1.000 (d1) | PASS |" in text
    assert "| b | 0.900 (d2) | **UNDECIDED** |" in text
    assert "| c | 3.000 (old results without a verdict) | **FAIL** |" in text


def load_run(seconds: float, *, peak: float = 70.0, worker_peak: float | None = None, workers_cpu: float = 0.0) -> dict:
    return {
        "seconds": seconds,
        "client_cpu": 2.0,
        "workers_cpu": workers_cpu,
        "peak_rss_mb": peak,
        "workers_peak_rss_mb": worker_peak,
        "workers_start_method": "fork" if worker_peak else None,
    }


def record_section() -> dict[str, Any]:
    """A ``--record-path`` section: limit 5 s, the transform alone 10 s, 1000 records."""
    stages = {"parse_stdlib": 3.0, "parse_codec": 1.0, "transform": 6.0}
    return {
        "records": 1000,
        "compression": "gzip",
        "workers": [1, 2],
        "default_workers": 2,
        "reps": 2,
        "transforms": {
            "api": {
                "spec": "provider_directory.documents:build_provider_document",
                "label": "the shipped API transform",
                "rows_bytes": 500_000,
                "limit": [{"seconds": 5.0}] * 4,
                "alone": [{"seconds": 10.0, "client_cpu": 9.0, "stages_us": stages}] * 2,
                "operator": {
                    "1": [load_run(14.0), load_run(16.0)],
                    "2": [load_run(10.0, worker_peak=50.0, workers_cpu=8.0), load_run(11.0, worker_peak=75.0)],
                },
                "pairs": {
                    "1": [{"limit": 5.0, "operator": 14.0}, {"limit": 5.0, "operator": 16.0}],
                    "2": [{"limit": 5.0, "operator": 10.0}, {"limit": 5.0, "operator": 11.0}],
                },
                "before": [load_run(30.0), load_run(32.0)],
                "after": [load_run(10.0, worker_peak=50.0), load_run(11.0, worker_peak=50.0)],
            }
        },
        "memory": {"records": 200, "workers": 2, "run": load_run(1.0, peak=60.0, worker_peak=50.0)},
    }


class TestRecordPath:
    def test_targets_pair_the_limit_plus_the_transform_alone_with_the_operator(self) -> None:
        summary = report.record_path_summary(record_section())
        checks = {c["target"]: c for c in summary["targets"]}

        one = checks["record path (api), transform_workers=1: (limit + transform alone) / operator >= 1.0"]
        two = checks["record path (api), transform_workers=2: (limit + transform alone) / operator >= 1.3"]
        assert one["verdict"] == "UNDECIDED"  # 15/14 = 1.071 and 15/16 = 0.9375: 1.0 inside the pairs' range
        assert one["value"] == pytest.approx((15 / 14 + 15 / 16) / 2)
        assert "per-pair ratios 1.004 [0.938–1.071]" in one["detail"]
        assert two["verdict"] == "PASS"  # 1.5 and 1.364
        speedup = checks["api transform load (gzip, transform_workers=2) >= 2x the rows/s before #14"]
        assert (speedup["verdict"], speedup["value"]) == ("PASS", pytest.approx((3.0 + 32 / 11) / 2))

    def test_memory_growth_of_the_load_process_and_of_its_largest_worker(self) -> None:
        checks = report.record_path_summary(record_section())["targets"]
        memory = {c["target"]: c for c in checks if "peak RSS" in c["target"]}

        process = memory["record path, load process: peak RSS at 1k within 20 MB of 200 (transform_workers=2)"]
        worker = memory["record path, largest worker: peak RSS at 1k within 20 MB of 200 (transform_workers=2)"]
        assert (process["value"], process["verdict"]) == (10.0, "PASS")  # 60 → 70 MB
        assert (worker["value"], worker["verdict"]) == (25.0, "FAIL")  # 50 → 75 MB

    def test_rows_count_the_workers_cpu_and_the_stages(self) -> None:
        summary = report.record_path_summary(record_section())
        rows = {row["key"]: row for row in summary["rows"]}

        assert rows["api-operator-2"]["cpu_us_per_record"] == pytest.approx((2.0 + 4.0) / 1000 * 1e6)  # median of 10, 2
        assert rows["api-operator-2"]["workers_peak_rss_mb"] == 75.0
        assert rows["api-alone"]["cpu_us_per_record"] == pytest.approx(9.0 / 1000 * 1e6)
        assert rows["api-limit"]["cpu_us_per_record"] is None
        assert rows["api-memory"]["records"] == 200
        assert rows["api-memory"]["rows_per_s"] == 200.0
        assert summary["stages_us"] == {"api": {"parse_stdlib": 3.0, "parse_codec": 1.0, "transform": 6.0}}

    def test_finish_adds_the_section_to_the_targets_and_the_readme(self, tmp_path: Path) -> None:
        out = json.loads(RESULTS.read_text())
        out.pop("record_path", None)
        out["record_path"] = record_section()

        report.finish(out, tmp_path / "record.json")
        text = readme.render(out)

        assert any(c["target"].startswith("record path (api)") for c in out["targets"])
        assert "Record path (`--record-path`): 1,000 records, gzip, transform_workers 1, 2" in text
        assert "| operator (api), transform_workers=2 | 1,000 | 10.50 | 95 | 6,000.0 | 70 MB / 75 MB |" in text

    def test_the_dag_run_against_the_rows_per_second_before(self) -> None:
        section = record_section()
        section["records"] = 1_000_000
        section["dag"] = {
            "records": 1_000_000,
            "dag_run_seconds": 30.0,
            "load": {"seconds": 20.0, "transform_workers": 2, "workers_start_method": "fork"},
        }

        summary = report.record_path_summary(section)
        dag = {c["target"]: c for c in summary["targets"]}[
            "the shipped DAG's load >= 2x the rows/s before #14 (DAG load task)"
        ]
        row = {r["key"]: r for r in summary["rows"]}["dag"]

        assert row["rows_per_s"] == 50_000
        assert "transform_workers=2 (fork)" in row["note"]
        assert (dag["value"], dag["verdict"]) == (pytest.approx(50_000 / 22_010), "PASS")
