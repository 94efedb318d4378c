"""Every key loads its own object: the request path is sent exactly as signed.

``requests`` (urllib3's ``parse_url``) removes dot segments from a URL's path, so the
key ``dots/../k.jsonl`` used to read ``k.jsonl``. Keys that need percent-encoding
(space, ``%``, ``+``, non-ASCII) and empty segments (``//``) must keep working too.
Each object's records name their key, so a load of the wrong object shows.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from s3_postgres_copy.source import HttpObjectSource

    from .support import FaultEnv

KEYS = {
    "plain": "k.jsonl",
    "dot-dot": "dots/../k.jsonl",
    "dot": "dots/./k.jsonl",
    "leading-dot-dot": "../k.jsonl",
    "leading-dot": "./k.jsonl",
    "last-segment-dot-dot": "dots/..",
    "double-slash": "dots//k.jsonl",
    "leading-slash": "/k.jsonl",
    "encoded-dots-literally": "dots/%2e%2e/k.jsonl",
    "space-plus-percent": "in/a b+c%41%2F 100%.jsonl",
    "unicode": "in/Zoë ☃ 日本語/k.jsonl",
}


def _records(key: str) -> bytes:
    return b"".join(json.dumps({"key": key, "n": n}).encode() + b"\n" for n in range(1, 4))


def _source(env: FaultEnv, key: str, via: str) -> HttpObjectSource:
    return env.source(key, factory=env.factory(key, direct=via == "direct"))


@pytest.mark.parametrize("via", ["direct", "proxy"])
def test_each_key_loads_its_own_object(env: FaultEnv, table: str, via: str) -> None:
    for key in KEYS.values():
        env.put(key, _records(key))
    for key in KEYS.values():
        stats = env.load(key, table, source=_source(env, key, via), format="jsonl")
        assert stats.rows_copied == 3, key

    rows = env.execute(
        f"SELECT source_key, document->>'key', (document->>'n')::int, source_line FROM \"{table}\" ORDER BY 1, 3"
    )
    expected = sorted((key, key, n, n) for key in KEYS.values() for n in range(1, 4))
    assert rows == expected
    if via == "proxy":
        paths = {get.path for get in env.proxy.gets}
        assert f"/{env.bucket}/dots/../k.jsonl" in paths
        assert f"/{env.bucket}/dots//k.jsonl" in paths


def test_dot_segment_key_beside_its_target(env: FaultEnv, table: str) -> None:
    """``dots/../k.jsonl`` and ``k.jsonl`` side by side: each load reads its own rows."""
    env.put("k.jsonl", b'{"version": "k"}\n{"version": "k", "second": true}\n')
    env.put("dots/../k.jsonl", b'{"version": "dots"}\n')
    env.load("dots/../k.jsonl", table)
    env.load("k.jsonl", table)
    assert [(key, line, document) for line, document, key, _ in env.rows(table)] == [
        ("dots/../k.jsonl", 1, '{"version": "dots"}'),
        ("k.jsonl", 1, '{"version": "k"}'),
        ("k.jsonl", 2, '{"second": true, "version": "k"}'),
    ]
