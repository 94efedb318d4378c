"""Maintaining an application's table: merge by key, atomic snapshots, skipping unchanged objects, checks before commit.

Real PostgreSQL and S3 server; every merge test runs on psycopg 3 and psycopg2.
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from s3_postgres_copy.exceptions import BadRecordError, CheckFailedError, ConfigurationError, LoadError

if TYPE_CHECKING:
    from psycopg import sql

    from .helpers import IntegrationEnv


def lines(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(record, sort_keys=False).encode() + b"\n" for record in records)


def provider(npi: int, version: int, **extra: Any) -> dict[str, Any]:
    return {"npi": f"{npi:010d}", "name": f"Provider {npi}", "version": version, **extra}


DAY1 = [provider(i, 1) for i in range(3000)]
DAY2 = (
    [provider(i, 1) for i in range(1000)]  # identical
    + [provider(i, 2) for i in range(1000, 2000)]  # changed
    + [provider(i, 1) for i in range(3000, 4000)]  # new
    + [provider(i, 3) for i in range(1000, 1050)]  # later duplicates of changed keys: these win
)


def versions(env: IntegrationEnv, table: str) -> dict[str, tuple[int, str, str]]:
    """npi → (version, xmin, batch_id)."""
    rows = env.execute(f"SELECT document->>'npi', (document->>'version')::int, xmin::text, batch_id FROM \"{table}\"")
    return {npi: (version, xmin, batch) for npi, version, xmin, batch in rows}


class TestMerge:
    def test_day_two_updates_inserts_and_leaves_the_rest_alone(self, denv: IntegrationEnv, table: str) -> None:
        denv.put("day1.jsonl", lines(DAY1))
        denv.put("day2.jsonl", lines(DAY2))
        first = denv.load("day1.jsonl", table, mode="merge", merge_key=["npi"], batch_id="day1")
        assert (first.rows_inserted, first.rows_updated, first.rows_unchanged, first.rows_deduplicated) == (
            3000,
            0,
            0,
            0,
        )
        before = versions(denv, table)

        stats = denv.load("day2.jsonl", table, mode="merge", merge_key=["npi"], batch_id="day2")

        assert (stats.rows_copied, stats.lines_read) == (3050, 3050)
        assert (stats.rows_inserted, stats.rows_updated, stats.rows_unchanged, stats.rows_deduplicated) == (
            1000,
            1000,
            1000,
            50,
        )
        after = versions(denv, table)
        assert len(after) == 4000
        for i in range(4000):
            npi = f"{i:010d}"
            version, xmin, batch = after[npi]
            if i < 1000 or 2000 <= i < 3000:  # identical in day 2, or not in it: the same row version
                assert (version, xmin, batch) == before[npi], npi
            elif i < 2000:
                assert (version, batch) == (3 if i < 1050 else 2, "day2"), npi
                assert xmin != before[npi][1]
            else:
                assert (version, batch) == (1, "day2"), npi
        # The loads are in the ledger, with their counts.
        ledger = denv.execute(
            f"SELECT batch_id, mode, state, rows_copied, rows_inserted, rows_updated, rows_unchanged, "
            f'rows_deduplicated FROM "{table}_loads" ORDER BY finished_at'
        )
        assert ledger == [
            ("day1", "merge", "committed", 3000, 3000, 0, 0, 0),
            ("day2", "merge", "committed", 3050, 1000, 1000, 1000, 50),
        ]

    def test_the_same_file_again_rewrites_nothing(self, denv: IntegrationEnv, table: str) -> None:
        denv.put("day2.jsonl", lines(DAY2))
        denv.load("day2.jsonl", table, mode="merge", merge_key=["npi"], batch_id="a")
        before = versions(denv, table)
        denv.put("one.jsonl", lines(DAY2[:1]))

        def wal_of(key: str, batch: str) -> Any:
            lsn = denv.execute("SELECT pg_current_wal_lsn()")[0][0]
            stats = denv.load(key, table, mode="merge", merge_key=["npi"], batch_id=batch)
            return stats, denv.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", [lsn])[0][0]

        _, fixed = wal_of("one.jsonl", "one")  # a load's own WAL: the staging table's catalog rows, the ledger
        again, wal = wal_of("day2.jsonl", "b")
        # Not even a row lock for the 3,000 unchanged rows (ON CONFLICT locks what it matches: ~56 B of WAL each).
        assert wal - fixed < 60_000, (wal, fixed)
        assert (again.rows_inserted, again.rows_updated, again.rows_unchanged, again.rows_deduplicated) == (
            0,
            0,
            3000,
            50,
        )
        assert versions(denv, table) == before

    def test_a_record_without_the_key_is_a_bad_record_at_its_line(self, denv: IntegrationEnv, table: str) -> None:
        denv.put("day1.jsonl", lines(DAY1[:10]))
        denv.load("day1.jsonl", table, mode="merge", merge_key=["npi"])
        before = versions(denv, table)
        denv.put("bad.jsonl", lines([provider(50, 1), {"name": "no npi"}, provider(51, 1), {"npi": None}]))
        with pytest.raises(BadRecordError) as caught:
            denv.load("bad.jsonl", table, mode="merge", merge_key=["npi"])
        assert caught.value.line == 2
        assert "has no value for the merge key field 'npi'" in str(caught.value)
        assert versions(denv, table) == before

    def test_tolerant_merge_rejects_records_without_the_key(self, denv: IntegrationEnv, table: str) -> None:
        denv.put("bad.jsonl", lines([provider(50, 1), {"name": "no npi"}, provider(51, 1), {"npi": None}]))
        stats = denv.load("bad.jsonl", table, mode="merge", merge_key=["npi"], max_bad_rows=5)
        assert (stats.rows_copied, stats.rows_rejected, stats.rows_inserted) == (2, 2, 2)
        reason = "the record has no value for the merge key field 'npi' (missing or null)"
        assert [(line, error) for line, _, error, _, _ in denv.rejects(table)] == [(2, reason), (4, reason)]
        assert [r["line"] for r in stats.first_rejects] == [2, 4]
        assert sorted(versions(denv, table)) == ["0000000050", "0000000051"]

    def test_an_existing_table_without_the_unique_index_is_refused_with_the_statement(
        self, denv: IntegrationEnv, table: str
    ) -> None:
        denv.execute(
            f'CREATE TABLE "{table}" (document jsonb NOT NULL, source_key text, source_etag text, batch_id text, '
            "loaded_at timestamptz, source_line bigint)"
        )
        denv.put("day1.jsonl", lines(DAY1[:5]))
        with pytest.raises(ConfigurationError, match="needs a unique index on the merge key") as caught:
            denv.load("day1.jsonl", table, mode="merge", merge_key=["npi"])
        statement = str(caught.value).split("\n")[1].strip().rstrip(";")
        assert statement.startswith(f'CREATE UNIQUE INDEX "{table}_')
        assert statement.endswith(f'ON "{table}" (("document" ->> \'npi\'))')
        assert denv.count(table) == 0
        denv.execute(statement)  # the printed statement is the one that makes the load work
        assert denv.load("day1.jsonl", table, mode="merge", merge_key=["npi"]).rows_inserted == 5

    def test_a_composite_key(self, env: IntegrationEnv, table: str) -> None:
        records = [{"npi": "1", "loc": "a", "v": 1}, {"npi": "1", "loc": "b", "v": 1}, {"npi": "1", "loc": "a", "v": 2}]
        env.put("c.jsonl", lines(records))
        stats = env.load("c.jsonl", table, mode="merge", merge_key=["npi", "loc"])
        assert (stats.rows_inserted, stats.rows_deduplicated) == (2, 1)
        rows = env.execute(f"SELECT document->>'loc', (document->>'v')::int FROM \"{table}\" ORDER BY 1")
        assert rows == [("a", 2), ("b", 1)]

    @pytest.mark.parametrize(("session", "during"), [("4MB", "256MB"), ("1GB", "1GB")])
    def test_the_upsert_runs_with_more_work_mem_and_puts_it_back(
        self, env: IntegrationEnv, table: str, session: str, during: str
    ) -> None:
        from s3_postgres_copy.merge import create_staging, create_unique_index, upsert
        from s3_postgres_copy.sink import Columns, PostgresSink

        env.execute(
            f'CREATE TABLE "{table}" (document jsonb NOT NULL, source_key text, source_etag text, '
            "batch_id text, loaded_at timestamptz, source_line bigint)"
        )
        seen: list[str] = []
        with env.connect() as conn:
            sink = PostgresSink(conn, table, Columns())
            create_unique_index(sink, ["npi"])
            conn.execute("SELECT set_config('work_mem', %s, false)", [session])
            create_staging(sink, ["npi"])
            conn.execute('INSERT INTO s3_postgres_copy_merge (document) VALUES (\'{"npi": "1"}\')')
            execute = sink.execute

            def watched(query: sql.Composable, params: Any = None) -> Any:
                if "WITH last AS" in query.as_string(conn):
                    seen.append(str(conn.execute("SHOW work_mem").fetchone()[0]))  # type: ignore[index]
                return execute(query, params)

            sink.execute = watched  # type: ignore[method-assign]
            counts = upsert(sink, ["npi"])
            after = conn.execute("SHOW work_mem").fetchone()[0]  # type: ignore[index]
            conn.commit()
        assert (counts.inserted, seen, after) == (1, [during], session)

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"mode": "merge"}, "mode='merge' needs merge_key"),
            ({"mode": "merge", "merge_key": []}, "mode='merge' needs merge_key"),
            ({"mode": "merge", "merge_key": ["npi", "npi"]}, "merge_key repeats a field"),
            ({"mode": "replace", "merge_key": ["npi"]}, "merge_key is for mode='merge'"),
        ],
        ids=["missing", "empty", "repeated", "other-mode"],
    )
    def test_bad_merge_options(self, env: IntegrationEnv, table: str, options: dict[str, Any], message: str) -> None:
        env.put("k.jsonl", b"{}\n")
        with pytest.raises(ConfigurationError, match=message):
            env.load("k.jsonl", table, **options)


class TestSnapshot:
    def _app_table(self, env: IntegrationEnv, table: str) -> None:
        env.put("old.jsonl", lines([provider(i, 0) for i in range(200)]))
        env.load("old.jsonl", table, mode="append")
        env.execute(f'CREATE VIEW "{table}_v" AS SELECT document->>\'npi\' AS npi FROM "{table}"')
        env.execute(f'CREATE INDEX "{table}_npi" ON "{table}" ((document->>\'npi\'))')
        env.execute(f"DO $$ BEGIN CREATE ROLE reader_{table}; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        env.execute(f'GRANT SELECT ON "{table}" TO reader_{table}')

    def test_the_table_becomes_the_new_rows_and_keeps_its_views_grants_and_indexes(
        self, denv: IntegrationEnv, table: str
    ) -> None:
        self._app_table(denv, table)
        oid = denv.execute(f"SELECT '\"{table}\"'::regclass::oid")[0][0]
        denv.put("new.jsonl", lines([provider(i, 1) for i in range(1000, 1150)]))
        stats = denv.load("new.jsonl", table, mode="snapshot")
        assert (stats.rows_copied, stats.rows_deleted) == (150, 200)
        assert denv.execute(f'SELECT count(*), min(npi), max(npi) FROM "{table}_v"') == [
            (150, "0000001000", "0000001149")
        ]
        assert denv.execute(f"SELECT '\"{table}\"'::regclass::oid")[0][0] == oid
        assert denv.execute(f"SELECT has_table_privilege('reader_{table}', '\"{table}\"', 'SELECT')") == [(True,)]
        assert denv.execute("SELECT count(*) FROM pg_indexes WHERE indexname = %s", [f"{table}_npi"]) == [(1,)]
        assert {v for v, _, _ in versions(denv, table).values()} == {1}

    def test_a_failing_snapshot_leaves_the_table_as_it_was(self, env: IntegrationEnv, table: str) -> None:
        self._app_table(env, table)
        before = env.snapshot(table)
        env.put("bad.jsonl", lines([provider(i, 1) for i in range(100)]) + b"not json\n")
        with pytest.raises(BadRecordError, match="line 101"):
            env.load("bad.jsonl", table, mode="snapshot")
        assert env.snapshot(table) == before

    def test_a_concurrent_reader_sees_the_old_or_the_new_content_and_is_not_blocked(
        self, env: IntegrationEnv, table: str
    ) -> None:
        env.put("old.jsonl", lines([provider(i, 0) for i in range(3000)]))
        env.load("old.jsonl", table, mode="snapshot")
        env.put("new.jsonl", lines([provider(i, 1) for i in range(5000)]))
        seen: list[int] = []
        waits: list[float] = []
        stop = threading.Event()

        def read() -> None:
            with env.connect(autocommit=True) as conn:
                while not stop.is_set():
                    t0 = time.monotonic()
                    seen.append(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])  # type: ignore[index]
                    waits.append(time.monotonic() - t0)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            env.load("new.jsonl", table, mode="snapshot", segment_bytes=50_000)
            time.sleep(0.2)
        finally:
            stop.set()
            reader.join(timeout=30)
        assert set(seen) <= {3000, 5000}, sorted(set(seen))
        assert seen[0] == 3000
        assert seen[-1] == 5000
        assert len(seen) > 3  # it kept reading during the load: never blocked for the whole of it

    def test_snapshot_of_a_first_load_freezes_its_rows(self, env: IntegrationEnv, table: str) -> None:
        env.put("new.jsonl", lines([provider(i, 1) for i in range(500)]))
        env.load("new.jsonl", table, mode="snapshot")
        env.execute("CREATE EXTENSION IF NOT EXISTS pg_visibility")
        frozen = env.execute(f"SELECT all_frozen FROM pg_visibility_map_summary('\"{table}\"')")
        pages = env.execute(f"SELECT pg_relation_size('\"{table}\"') / current_setting('block_size')::int")
        assert frozen[0][0] >= 1
        assert frozen[0][0] == pages[0][0]


class TestSkipUnchanged:
    def test_the_same_object_twice_is_skipped_and_a_changed_one_loaded(self, env: IntegrationEnv, table: str) -> None:
        etag = env.put("k.jsonl", lines(DAY1[:20]))
        env.load("k.jsonl", table, batch_id="one", skip_unchanged=True)
        rows = env.execute(f'SELECT ctid, xmin::text FROM "{table}" ORDER BY 1')
        again = env.load("k.jsonl", table, batch_id="two", skip_unchanged=True)
        assert (again.skipped, again.rows_copied, again.source_etag) == (True, 0, etag)
        assert "was loaded by batch one" in (again.skip_reason or "")
        assert env.execute(f'SELECT ctid, xmin::text FROM "{table}" ORDER BY 1') == rows
        assert env.execute(f'SELECT batch_id, source_etag FROM "{table}_loads"') == [("one", etag)]
        env.put("k.jsonl", lines(DAY1[:21]))
        changed = env.load("k.jsonl", table, batch_id="three", skip_unchanged=True)
        assert (changed.skipped, changed.rows_copied) == (False, 21)

    def test_without_skip_unchanged_it_loads_again(self, env: IntegrationEnv, table: str) -> None:
        env.put("k.jsonl", lines(DAY1[:5]))
        env.load("k.jsonl", table, batch_id="one", skip_unchanged=True)
        assert env.load("k.jsonl", table, batch_id="two").rows_copied == 5
        assert env.execute(f'SELECT DISTINCT batch_id FROM "{table}"') == [("two",)]


class TestChecks:
    CHECKS = {"npi_present": {"check_statement": "COUNT(*) FILTER (WHERE document->>'npi' IS NULL) = 0"}}

    def test_a_failing_check_rolls_back_and_names_the_check(self, env: IntegrationEnv, table: str) -> None:
        env.put("ok.jsonl", lines(DAY1[:5]))
        env.load("ok.jsonl", table)
        before = env.snapshot(table)
        env.put("k.jsonl", lines([provider(1, 1), {"name": "no npi"}]))
        with pytest.raises(CheckFailedError, match="Check 'npi_present' failed for .*nothing was committed") as caught:
            env.load("k.jsonl", table, mode="append", checks=self.CHECKS)
        assert caught.value.name == "npi_present"
        assert env.snapshot(table) == before

    def test_a_passing_check_loads(self, env: IntegrationEnv, table: str) -> None:
        env.put("k.jsonl", lines(DAY1[:7]))
        checks = {
            **self.CHECKS,
            "seven": {"check_statement": "COUNT(*) = 7"},
            "like": {"check_statement": "document->>'name' LIKE 'Provider %'"},  # a % in the SQL is SQL
            "part": {"check_statement": "COUNT(*) = 2", "partition_clause": "document->>'npi' < '0000000002'"},
        }
        assert env.load("k.jsonl", table, checks=checks).rows_copied == 7

    def test_checks_see_only_the_rows_this_load_wrote(self, env: IntegrationEnv, table: str) -> None:
        env.put("a.jsonl", lines(DAY1[:3]))
        env.put("b.jsonl", lines(DAY1[3:5]))
        env.load("a.jsonl", table)
        assert env.load("b.jsonl", table, checks={"two": {"check_statement": "COUNT(*) = 2"}}).rows_copied == 2

    def test_a_check_that_cannot_run_fails_naming_it(self, env: IntegrationEnv, table: str) -> None:
        env.put("k.jsonl", lines(DAY1[:1]))
        with pytest.raises(CheckFailedError, match="Check 'typo' failed .*could not be evaluated: column \"nope\""):
            env.load("k.jsonl", table, checks={"typo": {"check_statement": "nope = 1"}})
        assert env.snapshot(table) is None

    @pytest.mark.parametrize(
        ("checks", "message"),
        [
            ({"a": "COUNT(*) = 1"}, "must be a dict with a 'check_statement'"),
            ({"a": {"statement": "x"}}, "must be a dict with a 'check_statement'"),
            ({"a": {"check_statement": "x", "extra": 1}}, "unknown key"),
            ({"bad name": {"check_statement": "x"}}, "not a plain identifier"),
        ],
        ids=["string", "wrong-key", "extra-key", "name"],
    )
    def test_bad_checks_are_refused_before_loading(
        self, env: IntegrationEnv, table: str, checks: dict[str, Any], message: str
    ) -> None:
        env.put("k.jsonl", b"{}\n")
        with pytest.raises(LoadError, match=message):
            env.load("k.jsonl", table, checks=checks)
