"""Smoke tests proving the harness fixtures talk to real servers."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import psycopg
import requests

if TYPE_CHECKING:
    from harness.postgres import ExistingPostgres, ThrowawayPostgres
    from harness.s3 import LocalS3


def test_postgres_roundtrip(pg_conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Create a table, insert and read back through a real server."""
    table = f"t_{uuid.uuid4().hex[:8]}"
    pg_conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, name text)")
    pg_conn.execute(f"INSERT INTO {table} VALUES (1, 'a'), (2, 'b')")
    rows = pg_conn.execute(f"SELECT id, name FROM {table} ORDER BY id").fetchall()
    assert rows == [(1, "a"), (2, "b")]
    assert pg_conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)
    pg_conn.execute(f"DROP TABLE {table}")


def test_postgres_create_database(postgres: ThrowawayPostgres | ExistingPostgres) -> None:
    """``create_database`` returns a DSN that connects to the new database."""
    name = f"db_{uuid.uuid4().hex[:8]}"
    dsn = postgres.create_database(name)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (name,)
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}"')


def test_s3_put_get_and_presigned(s3: LocalS3, bucket: str) -> None:
    """Objects round-trip through the client and through a pre-signed URL."""
    payload = b"id,name\n1,a\n"
    s3.put_object(bucket, "in/data.csv", payload, ContentType="text/csv")
    client = s3.client()
    obj = client.get_object(Bucket=bucket, Key="in/data.csv")
    assert obj["Body"].read() == payload
    assert obj["ContentType"] == "text/csv"
    url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "in/data.csv"}, ExpiresIn=60)
    assert url.startswith(s3.endpoint_url)
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 200
    assert resp.content == payload


def test_bucket_fixture_is_fresh(s3: LocalS3, bucket: str) -> None:
    """Each test gets its own empty bucket."""
    assert s3.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_airflow_hooks_use_harness_servers(airflow_env: dict[str, str], s3: LocalS3, bucket: str) -> None:
    """Airflow's Postgres and S3 hooks resolve the env connections to the servers."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    assert PostgresHook().get_records("select 1") == [(1,)]

    s3.put_object(bucket, "k.txt", b"hello")
    hook = S3Hook()
    assert hook.check_for_key("k.txt", bucket_name=bucket)
    url = hook.generate_presigned_url(
        client_method="get_object",
        params={"Bucket": bucket, "Key": "k.txt"},
        expires_in=60,
    )
    assert isinstance(url, str)
    assert url.startswith(s3.endpoint_url)
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 200
    assert resp.content == b"hello"
