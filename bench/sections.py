"""The maintenance sections' flags and dispatch: ``--merge``, ``--snapshot``, ``--small-records``, ``--refusals``.

Each is on by default (full or quick size, following ``--quick``); with ``--skip-main`` only the
sections asked for run. Their results go under their own keys of the results JSON
(``merge``, ``snapshot``, ``small_records``, ``refusals``); :mod:`bench.sections_report` turns
them into tables and verdicts.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.contenders import Context

NAMES = {
    "merge": "merge of a 90/5/5 file vs its append, vs insert_rows(replace=True); MERGE vs ON CONFLICT (issue #13)",
    "snapshot": "snapshot vs replace, a concurrent reader, WAL, a first load with wal_level=minimal (issue #13)",
    "small_records": "peak RSS of {} lines under a 1,000-character key and of one-line gzip members (issue #11)",
    "refusals": "tolerant mode with k unique violations refused by the server, k = 0, 10, 50, 150 (issue #11)",
}
FULL = {
    "merge_reps": 3,
    "merge_peer_sample": 20_000,
    "merge_sql_rounds": 3,
    "snapshot_reps": 3,
    "small_lines": 2_000_000,
    "small_members": 200_000,
    "refusal_lines": 200_000,
    "refusal_rounds": 3,
}
QUICK = {
    "merge_reps": 2,
    "merge_peer_sample": 2_000,
    "merge_sql_rounds": 1,
    "snapshot_reps": 2,
    "small_lines": 200_000,
    "small_members": 20_000,
    "refusal_lines": 50_000,
    "refusal_rounds": 1,
}
SIZES = {
    "merge_reps": "counterbalanced (merge, append) pairs",
    "merge_peer_sample": "records for insert_rows(replace=True), extrapolated",
    "merge_sql_rounds": "interleaved rounds of the SQL-only comparison",
    "snapshot_reps": "counterbalanced (snapshot, replace) pairs",
    "small_lines": "lines of {} in the small-records runs",
    "small_members": "one-line gzip members in the small-records run",
    "refusal_lines": "rows per refusals load",
    "refusal_rounds": "interleaved rounds of k = 0, 10, 50, 150",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sections' flags (``--merge/--no-merge``, ...) and sizes."""
    group = parser.add_argument_group("maintenance sections (on by default; with --skip-main, only those asked for)")
    for name, what in NAMES.items():
        group.add_argument(
            f"--{name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=None, help=what
        )
    for name, what in SIZES.items():
        group.add_argument(
            f"--{name.replace('_', '-')}", type=int, help=f"{what} ({FULL[name]:,}; quick {QUICK[name]:,})"
        )


def resolve(args: argparse.Namespace) -> None:
    """Fill the defaults: a section runs unless ``--no-...``, or unless ``--skip-main`` and not asked for."""
    for name in NAMES:
        if getattr(args, name) is None:
            setattr(args, name, not args.skip_main)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def run(args: argparse.Namespace, ctx: Context, out: dict[str, Any], log: Callable[[str], None]) -> None:
    """Run the sections asked for; each leaves its results under its own key of ``out``."""
    if args.merge:
        from bench.maintenance import merge_section

        out["merge"] = merge_section(
            ctx,
            reps=args.merge_reps,
            peer_sample=args.merge_peer_sample,
            peer_fixed=args.peer_fixed,
            sql_rounds=args.merge_sql_rounds,
            log=log,
        )
    if args.snapshot:
        from bench.maintenance import snapshot_section

        out["snapshot"] = snapshot_section(ctx, reps=args.snapshot_reps, minimal=True, log=log)
    if args.small_records:
        from bench.memory_shapes import small_records_section

        out["small_records"] = small_records_section(ctx, lines=args.small_lines, members=args.small_members, log=log)
    if args.refusals:
        from bench.refusals import refusals_section

        out["refusals"] = refusals_section(ctx, lines=args.refusal_lines, rounds=args.refusal_rounds, log=log)
