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
