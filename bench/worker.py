"""Worker process: ``python -m bench.worker <spec.json>``; writes its result to ``spec["result"]``.

``mode == "load"``: one ``load_object`` (psycopg 3 or psycopg2) from a pre-signed URL, as the
operator runs it, timed from connect to commit, with the client's CPU, the server backend's CPU
and this process's memory (baseline after imports, and the peak).

``mode == "stages"``: the client's per-stage CPU cost on the same data (no server, no network),
each stage on its own: what a block costs in gunzip, line cutting, UTF-8 validation, escaping,
splitting and row formatting, plus HTTP reading and psycopg's COPY sending.

``mode == "alone"``: a transform alone in one process (``--record-path``): stdlib
``json.loads(..., parse_float=Decimal)`` and the function over every line of a local file, and
the record path's stages one by one on a sample (parse, transform, serialise; before and
after ``jsoncodec``).

A load's spec may name a ``transform`` (``"package.module:function"``), ``transform_workers``
and ``reference_codec`` (the record path's JSON as before #14: stdlib ``json`` and
``simplejson``); the result then counts the worker processes' CPU (``workers_cpu``) and peak
RSS (``workers_peak_rss_mb``: the largest worker's ``ru_maxrss``, pages shared with this
process at fork included).

Only what a load needs is imported before the baseline memory reading.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.procstat import backend_cpu, machine_cpu, memory_mb


def _cpu(who: int | None = None) -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF if who is None else who)
    return ru.ru_utime + ru.ru_stime


def _use_reference_codec() -> None:
    """The record path's JSON as before #14 (stdlib json to parse, simplejson to serialise)."""
    from s3_postgres_copy import documents, jsoncodec

    documents.loads_record = jsoncodec._reference_loads  # type: ignore[assignment]
    documents.dumps_document = jsoncodec._reference_dumps  # type: ignore[assignment]


def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    """One load; the result dict the bench records."""
    started = time.monotonic()
    import psycopg

    from s3_postgres_copy.loader import LoadOptions, load_object
    from s3_postgres_copy.source import HttpObjectSource

    driver = spec.get("driver", "psycopg")
    if driver == "psycopg2":
        import psycopg2

        connect: Any = psycopg2.connect
    else:
        connect = psycopg.connect
    if spec.get("transform"):
        from s3_postgres_copy.documents import resolve_transform

        resolve_transform(spec["transform"])  # its imports before the baseline
    if spec.get("reference_codec"):
        _use_reference_codec()
    import_seconds = time.monotonic() - started
    baseline = memory_mb()

    options = LoadOptions(
        bucket=spec["bucket"],
        key=spec["key"],
        table=spec["table"],
        batch_id=spec["batch_id"],
        segment_bytes=int(spec.get("segment_bytes") or (32 << 20)),
        copy_format=spec.get("copy_format") or "auto",
        transform=spec.get("transform"),
        transform_workers=spec.get("transform_workers"),
        **(spec.get("options") or {}),  # more LoadOptions fields (mode, merge_key, max_bad_rows, ...)
    )
    url = spec["url"]

    class TimedSource(HttpObjectSource):
        """Times the first request: the S3 server's time to the response headers."""

        first_byte_seconds = 0.0

        def open(self) -> HttpObjectSource:
            started = time.monotonic()
            super().open()
            self.first_byte_seconds = time.monotonic() - started
            return self

    import resource

    source = TimedSource(lambda: url, name=options.location)
    cpu0, children0 = _cpu(), _cpu(resource.RUSAGE_CHILDREN)
    machine0 = machine_cpu()
    t0 = time.monotonic()
    conn = connect(spec["dsn"])
    cursor = conn.cursor()
    server0 = backend_cpu(cursor)
    conn.commit()
    stats = load_object(conn, source, options)
    server1 = backend_cpu(cursor)
    conn.rollback()
    conn.close()
    seconds = time.monotonic() - t0
    machine1 = machine_cpu()
    client_cpu = _cpu() - cpu0
    workers_cpu = _cpu(resource.RUSAGE_CHILDREN) - children0
    workers_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if stats.transform_workers else None
    end = memory_mb()
    return {
        "seconds": seconds,
        "load_seconds": stats.seconds,
        "first_byte_seconds": source.first_byte_seconds,
        "rows": stats.rows_copied,
        "bytes_read": stats.bytes_read,
        "bytes_decompressed": stats.bytes_decompressed,
        "client_cpu": client_cpu,
        "server_cpu": server1 - server0,
        "machine_busy": machine1[0] - machine0[0],
        "machine_steal": machine1[1] - machine0[1],
        "import_seconds": import_seconds,
        "baseline_rss_mb": baseline["VmRSS"],
        "peak_rss_mb": end["VmHWM"],
        "end_rss_mb": end["VmRSS"],
        "driver": driver,
        "segment_bytes": options.segment_bytes,
        "copy_format": stats.copy_format,
        "transform": spec.get("transform"),
        "transform_workers": stats.transform_workers,
        "workers_start_method": stats.workers_start_method,
        "reference_codec": bool(spec.get("reference_codec")),
        "workers_cpu": workers_cpu,
        "workers_peak_rss_mb": workers_peak,
        "rows_rejected": stats.rows_rejected,
        "stats": stats.as_dict(),
    }


def _best(func: Any, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.process_time()
        func()
        best = min(best, time.process_time() - t0)
    return best


def run_stages(spec: dict[str, Any]) -> dict[str, Any]:
    """CPU seconds of each client stage over the whole data set (best of ``reps``)."""
    import psycopg
    import requests

    from bench.data import row_layout
    from s3_postgres_copy.documents import all_lines_open_objects, is_utf8
    from s3_postgres_copy.encoders import JsonLinesEncoder
    from s3_postgres_copy.records import line_blocks
    from s3_postgres_copy.rows import escape
    from s3_postgres_copy.source import gunzip

    reps = int(spec.get("reps", 3))
    mib = 1 << 20
    plain = Path(spec["plain"]).read_bytes()
    gz = Path(spec["gz"]).read_bytes()
    chunks = [plain[i : i + mib] for i in range(0, len(plain), mib)]
    gz_chunks = [gz[i : i + mib] for i in range(0, len(gz), mib)]
    blocks = list(line_blocks(iter(chunks)))
    row_format = row_layout(spec["constants"])
    split = [escape(b.data).split(b"\n")[:-1] for b in blocks]
    encoder = JsonLinesEncoder(row_format)
    binary = row_layout(spec["constants"], spec["types"])
    payloads = [encoder.encode_block(b).payload for b in blocks]
    out: dict[str, Any] = {"records": sum(b.count for b in blocks), "blocks": len(blocks), "stages": {}}
    stages = out["stages"]

    def http_read() -> None:
        response = requests.get(spec["url"], stream=True, headers={"Accept-Encoding": "identity"}, timeout=60)
        while response.raw.read(mib, decode_content=False):
            pass
        response.close()

    measured = [
        ("http_read", "per block", "HTTP read of the plain object (requests, 1 MiB reads)", http_read),
        ("gunzip", "per block", "gunzip of the gzip object (zlib, 1 MiB steps)", lambda: list(gunzip(iter(gz_chunks)))),
        ("line_blocks", "per block", "cut chunks at newlines (carry, count)", lambda: list(line_blocks(iter(chunks)))),
        ("cr_check", "per block", "b'\\r' in block", lambda: [b"\r" in b.data for b in blocks]),
        (
            "all_objects_check",
            "per block",
            "every line starts with '{' (count b'\\n{')",
            lambda: [all_lines_open_objects(b.data, b.count) for b in blocks],
        ),
        (
            "utf8_check",
            "per block",
            "UTF-8 validation (bytes.decode)",
            lambda: [b.data.decode("utf-8") for b in blocks],
        ),
        (
            "utf8_check_pieces",
            "per block",
            "  as the loader does it: UTF-8 check in 64 KiB pieces (documents.is_utf8)",
            lambda: [is_utf8(b.data) for b in blocks],
        ),
        ("escape", "per block", "COPY escaping (3 x bytes.replace)", lambda: [escape(b.data) for b in blocks]),
        (
            "split",
            "per record",
            "split block into documents (bytes.split)",
            lambda: [b.data.split(b"\n") for b in blocks],
        ),
        (
            "format_rows",
            "per record",
            "row formatting (template % per row, join)",
            lambda: [
                row_format.rows(d, range(b.first_line, b.first_line + b.count))
                for d, b in zip(split, blocks, strict=True)
            ],
        ),
        (
            "binary_rows",
            "per record",
            "binary rows instead (split unescaped, length-prefixed fields, join)",
            lambda: [
                binary.rows(binary.fields(b.data)[:-1], range(b.first_line, b.first_line + b.count)) for b in blocks
            ],
        ),
        (
            "encode_block",
            "total",
            "JsonLinesEncoder.encode_block (the text layout), all of the above",
            lambda: [encoder.encode_block(b) for b in blocks],
        ),
    ]
    for name, kind, label, func in measured:
        stages[name] = {"kind": kind, "label": label, "cpu_seconds": _best(func, reps)}

    # psycopg 3 sending the encoded rows: client CPU only (into a temp text table, so the server is quick).
    with psycopg.connect(spec["dsn"]) as conn:
        conn.execute("CREATE TEMP TABLE stage_copy (a text, b text, c text, d text, e text, f text)")
        t0 = time.process_time()
        with conn.cursor().copy("COPY stage_copy FROM STDIN") as copy:
            for payload in payloads:
                copy.write(payload)
        stages["copy_send"] = {
            "kind": "per block",
            "label": "psycopg 3 copy.write of the encoded rows (client side)",
            "cpu_seconds": time.process_time() - t0,
        }
        conn.rollback()
    return out


def run_alone(spec: dict[str, Any]) -> dict[str, Any]:
    """A transform alone: stdlib parse + the function over every line, in this process; then each stage."""
    import json as stdlib_json
    from decimal import Decimal

    from s3_postgres_copy import jsoncodec
    from s3_postgres_copy.documents import resolve_transform

    transform = resolve_transform(spec["transform"])
    assert transform is not None
    decoder = stdlib_json.JSONDecoder(parse_float=Decimal)
    loads = decoder.decode
    with open(spec["plain"], "rb") as f:
        lines = f.readlines()
    records = len(lines)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for line in lines:
        transform(loads(line.decode("utf-8")))  # the stdlib's decoder, built once (json.loads(...) builds one per call)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0

    sample = [line.rstrip(b"\n") for line in lines[: int(spec.get("sample", 100_000))]]
    del lines
    parsed = [jsoncodec.loads_record(raw) for raw in sample]
    documents = [transform(jsoncodec.loads_record(raw)) for raw in sample]

    def per_record(func: Any, items: list[Any]) -> float:
        best = float("inf")
        for _ in range(int(spec.get("reps", 3))):
            started = time.process_time()
            for item in items:
                func(item)
            best = min(best, time.process_time() - started)
        return best / len(items) * 1e6

    stages = {
        "parse_stdlib": per_record(jsoncodec._reference_loads, sample),
        "parse_codec": per_record(jsoncodec.loads_record, sample),
        "transform": per_record(transform, parsed),
        "serialise_simplejson": per_record(jsoncodec._reference_dumps, documents),
        "serialise_codec": per_record(jsoncodec.dumps_document, documents),
    }
    return {"records": records, "seconds": seconds, "client_cpu": cpu, "stages_us": stages, "sample": len(sample)}


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    mode = spec.get("mode", "load")
    runners = {"load": run_load, "stages": run_stages, "alone": run_alone}
    result = runners[mode](spec)
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
