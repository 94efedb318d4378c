"""The nightly import DAG's task logic: the run's conf, its objects, their loads, and the checks after commit.

``dags/s3_to_postgres_import.py`` declares the DAG (params, tasks, their order) and calls these
functions from thin task bodies; they need no Airflow themselves except where a task context
or hook is handed in, so each is tested alone.

* :func:`check_conf` refuses conf keys that are not params (a misspelt ``prefx`` would
  otherwise load the default key into the default table), naming the closest param.
* :func:`resolve_target` renders the key template for the run's logical date, or says that a
  run without one needs an explicit key or prefix.
* :func:`plan_loads` turns the listing of a prefix into a bounded number of mapped loads
  (Airflow maps at most ``max_map_length``, 1,024 by default, tasks): each object is still
  its own transaction and batch; sizes and ETags come from the listing, a sample of the
  objects is sniffed, and the XCom holds keys only.
* :func:`reconcile_run` reads the load ledger for every object of the run after commit.
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from s3_postgres_copy.exceptions import CheckFailedError, ConfigurationError

MAX_LOAD_TASKS = 16
"""Mapped ``load`` tasks a run uses at most, whatever the number of objects."""
SNIFFED_OBJECTS = 8
"""Objects of a prefix whose first bytes ``validate`` reads (the first, the last, a random sample)."""


def check_conf(conf: Mapping[str, Any] | None, params: Iterable[str]) -> None:
    """Refuse conf keys that are not params, naming them and the closest param of each."""
    known = sorted(params)
    unknown = sorted(set(conf or {}) - set(known))
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hints.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    raise ConfigurationError(
        f"unknown conf key(s): {', '.join(hints)}; the params are {', '.join(known)}. Nothing was loaded."
    )


@dataclass(frozen=True, slots=True)
class Target:
    """What a run loads: one key, or every object under a prefix."""

    bucket: str
    key: str | None = None
    prefix: str | None = None

    @property
    def location(self) -> str:
        """``s3://bucket/key`` or ``s3://bucket/prefix*``."""
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}/{self.prefix}*"


def resolve_target(params: Mapping[str, Any], render: Callable[[str], str], default_key: str) -> Target:
    """The run's key (the ``key`` param rendered for the logical date; empty → ``default_key``) or prefix.

    :param render: renders a Jinja template against the task context.
    """
    from jinja2.exceptions import UndefinedError

    bucket = params["bucket"]
    if params.get("prefix"):
        prefix = render(str(params["prefix"])).strip()
        if prefix:
            return Target(bucket, prefix=prefix)
    template = str(params.get("key") or default_key)
    try:
        key = render(template).strip()
    except UndefinedError as err:
        raise ConfigurationError(
            f"the key {template!r} is a template on the run's logical date, but this run has none "
            f"({err.message}): trigger it with a logical date, or give an explicit key (or prefix) in its conf"
        ) from None
    if not key:
        raise ConfigurationError(f"the key {template!r} rendered to an empty string")
    return Target(bucket, key=key)


@dataclass(frozen=True, slots=True)
class Listed:
    """An object as a listing shows it."""

    key: str
    size: int
    etag: str | None


def list_objects(client: Any, bucket: str, prefix: str) -> list[Listed]:
    """Every object under ``prefix`` (``ListObjectsV2``, all pages), "folder" markers left out, in key order."""
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if not item["Key"].endswith("/"):
                out.append(Listed(item["Key"], int(item.get("Size") or 0), item.get("ETag")))
    return sorted(out, key=lambda obj: obj.key)


def sample(objects: Sequence[Listed], count: int = SNIFFED_OBJECTS, *, seed: str = "") -> list[Listed]:
    """The objects whose first bytes are sniffed: the first, the last and a (deterministic) random sample."""
    if len(objects) <= count:
        return list(objects)
    rng = random.Random(seed)  # noqa: S311 - a sample, not a secret
    middle = rng.sample(range(1, len(objects) - 1), count - 2)
    return [objects[0], *(objects[i] for i in sorted(middle)), objects[-1]]


def groups(objects: Sequence[Listed], count: int = MAX_LOAD_TASKS) -> list[list[Listed]]:
    """At most ``count`` groups of consecutive objects with about the same number of bytes each."""
    if not objects:
        return []
    count = min(count, len(objects))
    total = sum(max(obj.size, 1) for obj in objects)
    out: list[list[Listed]] = [[]]
    done = 0
    for i, obj in enumerate(objects):
        left_objects, left_groups = len(objects) - i, count - len(out)
        boundary = done >= total * len(out) / count
        if out[-1] and left_groups > 0 and (boundary or left_objects <= left_groups):
            out.append([])
        out[-1].append(obj)
        done += max(obj.size, 1)
    return out


def batch_id(run_id: str, key: str, *, single: bool) -> str:
    """A load's batch: the run id for a run of one object, ``<run id>:<key>`` for each object of a prefix."""
    return run_id if single else f"{run_id}:{key}"


@dataclass(frozen=True, slots=True)
class Expected:
    """An object the run loaded, as the check after commit expects it."""

    key: str
    batch_id: str
    etag: str | None


def reconcile_run(conn: Any, table: str, mode: str, expected: Sequence[Expected]) -> dict[str, Any]:
    """After commit: every object of the run has its ledger row, and the table holds what it reports.

    An object skipped as unchanged needs a committed ledger row with the same ETag instead.
    Raises :class:`CheckFailedError` listing what does not add up.
    """
    from s3_postgres_copy.ledger import COMMITTED_STATES, Ledger
    from s3_postgres_copy.modes import get_mode
    from s3_postgres_copy.sink import Columns, PostgresSink
    from s3_postgres_copy.stats import unaccounted_lines

    sink = PostgresSink(conn, table, Columns())
    problems: list[str] = []
    rows = skipped = 0
    try:
        ledger = Ledger(sink)
        if not ledger.exists():
            raise CheckFailedError(table, "row count", "the table has no load ledger", after_commit=True)
        entries = {entry.batch_id: entry for entry in ledger.entries([obj.batch_id for obj in expected])}
        loaded = []
        for obj in expected:
            entry = entries.get(obj.batch_id)
            if entry is None or entry.state not in COMMITTED_STATES:
                last = ledger.last_load(obj.key)
                if last is not None and obj.etag and last.source_etag == obj.etag:
                    skipped += 1  # unchanged since that load: it was skipped
                    continue
                problems.append(f"{obj.key}: no committed load of batch {obj.batch_id} in the ledger")
                continue
            if unaccounted_lines(entry.counts):
                problems.append(f"{obj.key}: {entry.counts['lines_read']} lines read, not all accounted for")
            rows += int(entry.counts["rows_copied"] or 0)
            loaded.append(entry)
        problems += get_mode(mode).after_commit(sink, loaded)
    finally:
        sink.rollback()
    if problems:
        raise CheckFailedError(table, "row count", "; ".join(problems), after_commit=True)
    return {"objects": len(expected), "skipped": skipped, "rows": rows}


def check_connections(conn_ids: Iterable[str], get_connection: Callable[[str], Any]) -> None:
    """Fail naming the first connection id that is not defined."""
    for conn_id in conn_ids:
        try:
            get_connection(conn_id)
        except Exception as err:  # Airflow's AirflowNotFoundException, without importing Airflow here
            if type(err).__name__ != "AirflowNotFoundException":
                raise
            raise ConfigurationError(f"connection {conn_id!r} is not defined") from None


def plan_loads(client: Any, target: Mapping[str, Any], params: Mapping[str, Any], run_id: str) -> list[dict[str, Any]]:
    """The mapped ``load`` tasks' arguments: one for a key, at most :data:`MAX_LOAD_TASKS` groups for a prefix.

    Checks the key's object (HEAD and its first bytes), or sniffs a sample of the prefix's objects
    (sizes and ETags come from the listing), before anything is written.
    """
    from s3_postgres_copy.preflight import check_object
    from s3_postgres_copy.snapshot import stage_name

    bucket, key, prefix = target["bucket"], target.get("key"), target.get("prefix")
    fmt, mode, table = params["format"], params["mode"], params["table"]
    if key:
        info = check_object(client, bucket, key, format=fmt)
        objects = [Listed(key, info.size, info.etag)]
    else:
        objects = list_objects(client, bucket, prefix or "")
        if not objects:
            raise ConfigurationError(f"no objects under s3://{bucket}/{prefix}")
        for obj in sample(objects, seed=run_id):
            check_object(client, bucket, obj.key, format=fmt)
    staged = mode == "snapshot" and not key
    common = {
        "s3_bucket": bucket,
        "table": table,
        "format": fmt,
        "mode": mode,
        "max_bad_rows": int(params["max_bad_rows"]),
        "merge_key": list(params["merge_key"]) if mode == "merge" else None,
        "skip_unchanged": bool(params["skip_unchanged"]) and not params["force"] and not staged,
        "lock_timeout": params.get("lock_timeout"),
        "transform_workers": params.get("transform_workers"),
        "stage": stage_name(table, run_id) if staged else None,
        "batch_id": run_id,
    }
    total = sum(obj.size for obj in objects)
    if key:
        return [{**common, "s3_key": key}]
    planned = [{**common, "s3_keys": [obj.key for obj in group]} for group in groups(objects)]
    log_plan(f"s3://{bucket}/{prefix}", len(objects), total, len(planned))
    return planned


def log_plan(where: str, objects: int, size: int, tasks: int) -> None:
    """One log line for a prefix's plan."""
    import logging

    logging.getLogger(__name__).info(
        "%s: %d objects, %.1f MB, in %d mapped loads (at most %d)", where, objects, size / 1e6, tasks, MAX_LOAD_TASKS
    )


def _objects(planned: Sequence[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], str]]:
    return [(group, key) for group in planned for key in (group.get("s3_keys") or [group["s3_key"]])]


def publish_run(conn: Any, planned: Sequence[Mapping[str, Any]], *, checks: Mapping[str, Any] | None) -> dict[str, Any]:
    """A prefix snapshot's publication (the staged objects become the table's content); nothing for other runs."""
    from s3_postgres_copy.snapshot import publish

    first = planned[0] if planned else {}
    if not first.get("stage"):
        return {"published": False}
    batch_ids = [batch_id(group["batch_id"], key, single=False) for group, key in _objects(planned)]
    try:
        done = publish(
            conn, first["table"], first["stage"], batch_ids, checks=checks, lock_timeout=first.get("lock_timeout")
        )
    except BaseException:
        discard_run(conn, planned)
        raise
    return {"published": True, "objects": done.objects, "rows": done.rows, "rows_deleted": done.rows_deleted}


def discard_run(conn: Any, planned: Sequence[Mapping[str, Any]]) -> None:
    """A failed prefix snapshot: drop the staging table and its ledger rows; the table stays as it was."""
    from psycopg import sql

    from s3_postgres_copy.ledger import Ledger
    from s3_postgres_copy.sink import Columns, PostgresSink

    first = planned[0] if planned else {}
    if not first.get("stage"):
        return
    sink = PostgresSink(conn, first["table"], Columns())
    staging = PostgresSink(conn, first["stage"], Columns())
    try:
        sink.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staging.table))
        ledger = Ledger(sink)
        if ledger.exists():
            batch_ids = [batch_id(group["batch_id"], key, single=False) for group, key in _objects(planned)]
            query = sql.SQL("DELETE FROM {} WHERE state = 'staged' AND batch_id = ANY(%s)").format(ledger.table)
            sink.execute(query, [batch_ids])
        sink.commit()
    except BaseException:
        sink.rollback()
        raise


def check_run(
    conn: Any, planned: Sequence[Mapping[str, Any]], results: Sequence[Mapping[str, Any] | None]
) -> dict[str, Any]:
    """The after-commit check of a run: each planned object's ledger row and rows (see :func:`reconcile_run`)."""
    expected = []
    for group, result in zip(planned, results, strict=True):
        reports = (result or {}).get("objects") if group.get("s3_keys") else [result or {}]
        by_key = {report.get("source_key"): report for report in reports or []}
        single = not group.get("s3_keys")
        for key in group.get("s3_keys") or [group["s3_key"]]:
            report = by_key.get(key, {})
            etag = report.get("source_etag") if report.get("skipped") else None
            expected.append(Expected(key, batch_id(group["batch_id"], key, single=single), etag))
    first = planned[0]
    return reconcile_run(conn, first["table"], first["mode"], expected)
