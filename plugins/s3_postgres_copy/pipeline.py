"""The record path over several cores: units of records encoded in worker processes, in order.

A load with a transform or a schema spends its time in Python per record (parse, the user's
code, serialise, frame). :func:`encoded_blocks` hands those units (a JSON-lines
:class:`~s3_postgres_copy.records.LineBlock` of ≤ ~1 MiB, or a
:class:`~s3_postgres_copy.encoders.CsvBatch` of parsed CSV records) to
``transform_workers`` processes (:class:`~s3_postgres_copy.workers.OrderedPool`) and yields
their :class:`~s3_postgres_copy.documents.EncodedBlock` results in input order, so rows,
rejects and line numbers are exactly those of an in-process load. This process keeps the
rest: the HTTP read, gunzip, cutting lines, parsing CSV, and the COPY; the server parses the
rows meanwhile (``copy.write`` returns while the socket buffer has room), so the network
read, the record work and the server's COPY overlap, each bounded by a fixed number of blocks.

* **Only the record path**: lines loaded as they are (no transform, no schema) never go
  through workers (that path is bound by the server, not by Python).
* **Memory**: at most ``2 × workers`` units in flight (plus their results), whatever the
  object's size.
* **Errors**: what the transform raises stays a bad record with its line (the worker's
  encoder catches it as in-process); a worker that dies fails the load with
  :class:`~s3_postgres_copy.exceptions.TransformWorkerError` (transient: nothing is
  committed, a retry may succeed); every worker is stopped and reaped.
* **Start method**: ``fork`` when this process runs one thread (Airflow's task processes,
  forked by the LocalExecutor's and Celery's workers, do), else ``spawn``, where the
  transform must be importable by name (``"package.module:function"``); a function defined in
  a DAG file or in ``__main__`` is refused up front, saying so.
"""

from __future__ import annotations

import math
import os
import pickle
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s3_postgres_copy.encoders import CsvBatch
from s3_postgres_copy.exceptions import ConfigurationError, TransformWorkerError
from s3_postgres_copy.records import LineBlock
from s3_postgres_copy.workers import FunctionLoadError, OrderedPool, WorkerError, default_start_method, func_name

if TYPE_CHECKING:
    from s3_postgres_copy.documents import EncodedBlock
    from s3_postgres_copy.encoders import Encoder
    from s3_postgres_copy.stats import LoadStats

__all__ = ["MAX_DEFAULT_WORKERS", "available_cpus", "default_transform_workers", "encoded_blocks"]

MAX_DEFAULT_WORKERS = 8
"""The most worker processes the default (``transform_workers=None``) starts."""
IN_PROCESS_UNITS = 2
"""Units (about 1 MiB each) encoded in this process before workers start: an object of no more never starts them."""
IN_FLIGHT_PER_WORKER = 2
"""Units sent to the workers and not yet copied, per worker: one being encoded, one waiting."""
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
# A function Airflow loaded from a DAG file lives in a module of this name, which no new interpreter can import.
_DAG_FILE_MODULE = "unusual_prefix_"


def available_cpus() -> int:
    """The CPUs this process may use: its CPU affinity, capped by a cgroup (container) CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = _CGROUP_CPU_MAX.read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def default_transform_workers() -> int:
    """``transform_workers`` when it is not given: :func:`available_cpus`, at most :data:`MAX_DEFAULT_WORKERS`."""
    return min(available_cpus(), MAX_DEFAULT_WORKERS)


def encoded_blocks(
    encoder: Encoder[Any],
    blocks: Iterable[LineBlock],
    workers: int | None,
    *,
    location: str,
    stats: LoadStats | None = None,
) -> Iterator[EncodedBlock]:
    """The encoded blocks of an object's line blocks, in order; the record path's in worker processes.

    :param encoder: the load's encoder.
    :param blocks: the object's line blocks.
    :param workers: ``transform_workers``: processes for the record path, ``0``/``1`` in this process,
        ``None`` for :func:`default_transform_workers`.
    :param location: ``s3://bucket/key``, for errors.
    :param stats: the load's stats get the worker count and start method.
    :raises ConfigurationError: the transform cannot be run by spawned workers (before any is started).
    :raises TransformWorkerError: a worker process died; all are stopped.
    """
    count = default_transform_workers() if workers is None else workers
    if count <= 1 or not encoder.runs_user_code:
        return encoder.encode(blocks)
    return _in_workers(encoder, blocks, count, location, stats)


def _in_workers(
    encoder: Encoder[Any], blocks: Iterable[LineBlock], count: int, location: str, stats: LoadStats | None
) -> Iterator[EncodedBlock]:
    method = default_start_method()
    if method == "spawn":
        _check_spawnable(encoder, count)
    all_units = iter(encoder.units(blocks))
    # A small object (a file of a prefix of thousands, say) is not worth starting processes for.
    head = list(islice(all_units, IN_PROCESS_UNITS + 1))
    for unit in head[:IN_PROCESS_UNITS]:
        yield encoder.encode_unit(unit)
    if len(head) <= IN_PROCESS_UNITS:
        if stats is not None:
            stats.transform_workers, stats.workers_start_method = 1, "in-process (small object)"
        return
    in_flight: deque[tuple[int, int] | None] = deque()  # the line range of each unit sent and not yet yielded

    def units() -> Iterator[Any]:
        for unit in chain(head[IN_PROCESS_UNITS:], all_units):
            in_flight.append(_lines_of(unit))
            yield unit

    # Workers start here, at the first block: before the loader starts any thread (fork needs one thread).
    pool = OrderedPool(encoder.encode_unit, count, in_flight=IN_FLIGHT_PER_WORKER * count, start_method=method)
    if stats is not None:
        stats.transform_workers, stats.workers_start_method = count, pool.start_method
    with pool:
        results = pool.map(units())
        while True:
            try:
                block = next(results)
            except StopIteration:
                return
            except FunctionLoadError as err:
                raise ConfigurationError(
                    f"transform_workers={count}: a spawned worker process could not load the transform "
                    f"({err}); give the transform as 'package.module:function' importable from the plugins "
                    "folder, or set transform_workers=1 (in this process)"
                ) from err
            except WorkerError as err:
                raise TransformWorkerError(location, str(err), _describe(in_flight)) from err
            in_flight.popleft()
            yield block


def _lines_of(unit: object) -> tuple[int, int] | None:
    """The first and last source line of a unit (None for a unit without records)."""
    if isinstance(unit, LineBlock):
        return unit.first_line, unit.first_line + unit.count - 1
    if isinstance(unit, CsvBatch) and unit.records:
        return unit.records[0][0], unit.records[-1][0]
    return None


def _describe(in_flight: Iterable[tuple[int, int] | None]) -> str:
    ranges = [r for r in in_flight if r is not None]
    return f"lines {ranges[0][0]}-{max(last for _, last in ranges)}" if ranges else "no records"


def _check_spawnable(encoder: Encoder[Any], count: int) -> None:
    """Refuse, before any worker starts, a transform that a new interpreter could not load."""
    transform = encoder.builder.transform
    why = (
        f"transform_workers={count} starts its worker processes as new interpreters (spawn) here, because this "
        "process already runs other threads (fork is only safe with one); a spawned worker imports the transform "
        "by its module and name, and"
    )
    fix = "give the transform as 'package.module:function' (an importable module), or set transform_workers=1"
    module = str(getattr(transform, "__module__", "") or "")
    if transform is not None and (module == "__main__" or module.startswith(_DAG_FILE_MODULE)):
        where = "a DAG file" if module.startswith(_DAG_FILE_MODULE) else "the __main__ script"
        raise ConfigurationError(f"{why} {func_name(transform)} is defined in {where}, which it cannot import; {fix}")
    try:
        pickle.dumps(encoder, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as err:
        name = func_name(transform) if transform is not None else "the schema"
        raise ConfigurationError(f"{why} {name} cannot be pickled by reference ({err}); {fix}") from err
