"""The benchmark's data: provider-directory JSON lines (plain and gzip level 1), S3 objects, COPY rows.

Every size is a prefix of the same stream (``harness.sample.jsonl_lines``: line ``i`` depends
only on the seed and ``i``), generated once; each gzip file is compressed on its own (one
member, level 1) in a writer thread while the next lines are generated.
"""

from __future__ import annotations

import datetime
import gzip
import itertools
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.sample import jsonl_lines
from s3_postgres_copy.encoders import JsonLinesEncoder
from s3_postgres_copy.records import line_blocks
from s3_postgres_copy.rows import TextRows, binary_rows
from s3_postgres_copy.sink import Columns

if TYPE_CHECKING:
    from harness.s3 import LocalS3
    from s3_postgres_copy.rows import RowLayout

BUCKET = "bench-imports"
SEED = 1
STEP = 10_000
GZIP_LEVEL = 1
BATCH_ID = "bench-batch"
# The shape of the loader's loaded_at (datetime.now(UTC).isoformat()), fixed for the limit's rows.
LOADED_AT = "2026-01-01T00:00:00.000000+00:00"


@dataclass
class SizedData:
    """One size of the data set: local files and the S3 objects made from them."""

    records: int
    plain_path: Path
    gz_path: Path | None
    plain_bytes: int = 0
    gz_bytes: int | None = None
    keys: dict[str, str] = field(default_factory=dict)  # "plain"/"gzip" -> key
    etags: dict[str, str] = field(default_factory=dict)

    def key(self, compression: str) -> str:
        """The object key of the plain or gzip variant."""
        return self.keys[compression]


class _GzipWriter(threading.Thread):
    """Compress chunks to one gzip file in a thread (zlib releases the GIL)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with (
                open(self.path, "wb") as raw,
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0) as gz,
            ):
                while (chunk := self.queue.get()) is not None:
                    gz.write(chunk)
        except BaseException as err:  # reported by generate()
            self.error = err
            while self.queue.get() is not None:  # drain so the producer never blocks
                pass


def generate(directory: Path, sizes: dict[int, set[str]], seed: int = SEED) -> dict[int, SizedData]:
    """Write ``providers-<n>.jsonl`` (and ``.jsonl.gz`` where ``"gzip"`` is wanted) for every size."""
    directory.mkdir(parents=True, exist_ok=True)
    out: dict[int, SizedData] = {}
    plain_files = {}
    writers: dict[int, _GzipWriter] = {}
    for n, kinds in sorted(sizes.items()):
        plain = directory / f"providers-{n}.jsonl"
        gz = directory / f"providers-{n}.jsonl.gz" if "gzip" in kinds else None
        out[n] = SizedData(n, plain, gz)
        plain_files[n] = open(plain, "wb")  # closed below
        if gz is not None:
            writers[n] = _GzipWriter(gz)
            writers[n].start()
    try:
        largest = max(sizes)
        for start in range(0, largest, STEP):
            lines = list(jsonl_lines(min(STEP, largest - start), seed, start=start))
            whole = b"".join(lines)
            for n in sizes:
                take = min(len(lines), n - start)
                if take <= 0:
                    continue
                chunk = whole if take == len(lines) else b"".join(lines[:take])
                plain_files[n].write(chunk)
                if n in writers:
                    writers[n].queue.put(chunk)
    finally:
        for f in plain_files.values():
            f.close()
        for writer in writers.values():
            writer.queue.put(None)
        for writer in writers.values():
            writer.join()
    for n, writer in writers.items():
        if writer.error is not None:
            raise RuntimeError(f"gzip of {n} records failed: {writer.error}") from writer.error
    for data in out.values():
        data.plain_bytes = data.plain_path.stat().st_size
        if data.gz_path is not None:
            data.gz_bytes = data.gz_path.stat().st_size
    return out


def upload(s3: LocalS3, datasets: dict[int, SizedData], sizes: dict[int, set[str]]) -> float:
    """Put the wanted variants into the bench bucket; return seconds taken."""
    started = time.monotonic()
    s3.create_bucket(BUCKET)
    for n, data in datasets.items():
        for kind in sorted(sizes[n]):
            path = data.plain_path if kind == "plain" else data.gz_path
            assert path is not None
            key = f"bench/{path.name}"
            with open(path, "rb") as f:
                response = s3.put_object(BUCKET, key, f)
            data.keys[kind] = key
            data.etags[kind] = str(response["ETag"])
    return time.monotonic() - started


def constants(key: str, etag: str) -> list[str]:
    """The constant metadata values of a row, in the loader's COPY order."""
    return [key, etag, BATCH_ID, LOADED_AT]


def _file_chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk


def row_layout(values: list[str], types: Mapping[str, str] | None = None) -> RowLayout:
    """The loader's row layout for the bench's constant values (:func:`constants`).

    With ``types`` (column type by role), the binary layout the loader picks for them; without,
    text rows.
    """
    if types is None:
        return TextRows(values, with_line=True)
    roles: dict[str, object] = dict(zip(Columns.CONSTANTS, values, strict=True))
    roles["loaded_at"] = datetime.datetime.fromisoformat(LOADED_AT)
    return binary_rows(types, roles, with_line=True)


def write_copy_rows(
    data: SizedData,
    path: Path,
    types: Mapping[str, str] | None = None,
    *,
    transform: str | None = None,
    compression: str = "plain",
) -> int:
    """Encode the plain object's lines into the exact COPY rows the loader sends; return bytes.

    Uses the plugin's own encoder and row layout with the object's key and ETag (the plain one
    unless ``compression`` says otherwise), the bench batch id and a fixed ``loaded_at``: the
    same columns, fields and line numbers. With ``types`` (the bench table's column type by
    role), the binary layout the loader picks for them, between the binary signature and
    trailer; without, text rows (for the ``--settings`` experiments). ``transform`` (a dotted
    path): the record path's rows, encoded by the plugin's transform workers.
    """
    from s3_postgres_copy.documents import resolve_transform
    from s3_postgres_copy.pipeline import encoded_blocks

    row_format = row_layout(constants(data.key(compression), data.etags[compression]), types)
    head, tail = row_format.header(), row_format.trailer()
    encoder = JsonLinesEncoder(row_format, resolve_transform(transform))
    size = 0
    with open(path, "wb") as out:
        out.write(head)
        blocks = encoded_blocks(encoder, line_blocks(_file_chunks(data.plain_path)), None, location=str(path))
        for block in blocks:
            if block.rejects:
                raise RuntimeError(f"sample data has bad records: {block.rejects[:3]}")
            out.write(block.payload)
            size += len(block.payload)
        out.write(tail)
    return size + len(head) + len(tail)


def first_lines(data: SizedData, n: int) -> list[bytes]:
    """The first ``n`` JSON lines of a data set (newlines kept)."""
    with open(data.plain_path, "rb") as f:
        return list(itertools.islice(f, n))
