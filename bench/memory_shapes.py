"""Memory for small records (issue #11 item 4): ``--small-records``.

Tiny records under a long key are the worst case for a payload bounded by its *input* size:
each row repeats the key, the ETag, the batch and the timestamp, so a 1 MiB block of ``{}``
lines (350k rows) became ~370 MB of COPY rows. And a gzip object of one-line members used
to make one block per member. Each shape is loaded as the main bench measures memory (a
fresh ``bench.worker`` process, peak = its ``VmHWM``), next to a tiny load (1,000 lines) of the
same shape, key and options:

* ``{}`` lines under a 1,000-character key: binary rows (the strict default), text rows
  (``copy_format="text"``) and tolerant mode (``max_bad_rows=10``: text rows, a segment's
  payloads kept to re-send);
* a gzip object of one-line members (the main data's records, each compressed on its own),
  under the same key; and the same records as one member, for the time it takes.
"""

from __future__ import annotations

import time
import zlib
from typing import TYPE_CHECKING, Any

from bench.data import first_lines
from bench.maintenance import drop, upload
from bench.server import create_table
from bench.tablestate import count, expect, load, settle, truncate

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from bench.contenders import Context

TABLE = "bench_small"
KEY_LENGTH = 1000
TINY = 1000
VARIANTS = {
    "binary": ("{}", {}, "auto", "binary rows (strict)"),
    "text": ("{}", {}, "text", "text rows (copy_format='text')"),
    "tolerant": ("{}", {"max_bad_rows": 10}, "auto", "tolerant mode (max_bad_rows=10, text rows)"),
    "gzip_members": ("members", {}, "auto", "gzip, one member per line (binary rows)"),
    "gzip_one_member": ("one_member", {}, "auto", "the same records as one gzip member (for the time)"),
}


def long_key(name: str, suffix: str) -> str:
    """An object key of exactly :data:`KEY_LENGTH` characters."""
    head = f"bench/small/{name}/"
    return head + "k" * (KEY_LENGTH - len(head) - len(suffix)) + suffix


def write_empty_objects(path: Path, lines: int) -> int:
    """``lines`` lines of ``{}``; return bytes."""
    data = b"{}\n" * lines
    path.write_bytes(data)
    return len(data)


def write_members(path: Path, lines: list[bytes]) -> int:
    """One gzip member per line (level 1); return bytes."""
    with open(path, "wb") as out:
        for line in lines:
            packer = zlib.compressobj(1, zlib.DEFLATED, 31)
            out.write(packer.compress(line) + packer.flush())
    return path.stat().st_size


def write_one_member(path: Path, lines: list[bytes]) -> int:
    """The same lines as one gzip member (level 1); return bytes."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)
    path.write_bytes(packer.compress(b"".join(lines)) + packer.flush())
    return path.stat().st_size


def small_records_section(ctx: Context, *, lines: int, members: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Peak RSS of each shape at ``lines`` (``members`` for the gzip one) and at :data:`TINY` lines."""
    started = time.monotonic()
    directory = ctx.tmp / "data"
    members = min(members, ctx.records)
    objects: dict[tuple[str, int], tuple[str, int]] = {}
    for size in (TINY, lines):
        path = directory / f"empty-{size}.jsonl"
        nbytes = write_empty_objects(path, size)
        key = long_key(f"empty-{size}", ".jsonl")
        upload(ctx, path, key)
        objects["{}", size] = (key, nbytes)
    record_lines = first_lines(ctx.main, members)
    for size in (TINY, members):
        for shape, write in (("members", write_members), ("one_member", write_one_member)):
            path = directory / f"{shape}-{size}.jsonl.gz"
            nbytes = write(path, record_lines[:size])
            key = long_key(f"{shape}-{size}", ".jsonl.gz")
            upload(ctx, path, key)
            objects[shape, size] = (key, nbytes)
    drop(ctx, TABLE)
    create_table(ctx.pg, TABLE)
    log(
        f"small records: {lines:,} lines of {{}} and {members:,} one-line gzip members under a "
        f"{KEY_LENGTH}-character key, each beside a {TINY:,}-line load"
    )
    runs: dict[str, dict[str, Any]] = {}
    for name, (shape, options, copy_format, label) in VARIANTS.items():
        big = lines if shape == "{}" else members
        runs[name] = {"label": label, "lines": big}
        for which, size in (("tiny", TINY), ("big", big)):
            key, nbytes = objects[shape, size]
            truncate(ctx, TABLE)
            settle(ctx)
            run = load(ctx, key, TABLE, options=options, copy_format=copy_format, worker="bench.worker", wal=False)
            expect(f"{name} {which}: rows copied", run["rows"], size)
            expect(f"{name} {which}: rows in the table", count(ctx, TABLE), size)
            stats = run.pop("stats")
            run.update(
                lines=size,
                object_bytes=nbytes,
                copy_format=stats["copy_format"],
                rows_per_second=stats["rows_per_second"],
            )
            runs[name][which] = run
            log(
                f"  {name} {which} ({size:,} lines, {nbytes / 1e6:.1f} MB): {run['seconds']:.2f} s, "
                f"peak {run['peak_rss_mb']:.0f} MB (baseline {run['baseline_rss_mb']:.0f} MB), "
                f"{stats['copy_format']} rows"
            )
    drop(ctx, TABLE)
    return {
        "key_length": KEY_LENGTH,
        "tiny_lines": TINY,
        "lines": lines,
        "members": members,
        "runs": runs,
        "seconds": time.monotonic() - started,
    }
