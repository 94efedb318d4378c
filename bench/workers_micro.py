"""Per-block overhead of ``workers.OrderedPool``: 1 MiB in, 1 MiB out, through the pool vs in-process.

``python -m bench.workers_micro [blocks] [workers]`` — each block is a 1 MiB ``bytes`` of JSON
lines and ``func`` returns a 1 MiB ``bytes`` (the shape of the loader's blocks), so what is
measured is pickling, the socket round trip and unpickling. Reports wall time and the parent's
CPU time per MiB (the cost the loader's own thread pays), for each start method, and a
one-block-in-flight round trip (latency). Not a test: numbers vary with the machine.
"""

from __future__ import annotations

import sys
import time

from bench import add_paths

add_paths()

from s3_postgres_copy.workers import START_METHODS, OrderedPool  # noqa: E402 - needs add_paths()

MIB = 1 << 20


def same_size(block: bytes) -> bytes:
    """A result as large as the block, without real work (a copy, as an encoder makes)."""
    return block[:1] + block[1:]


def measure(blocks: int, workers: int, method: str | None, in_flight: int | None) -> tuple[float, float]:
    """µs per MiB of input: (wall, parent CPU)."""
    from bench.workers_micro import same_size as func  # by its importable name, for spawn (not __main__)

    block = (b'{"npi":"1234567890","name":"x"}\n' * (MIB // 32 + 1))[:MIB]
    with OrderedPool(func, workers, in_flight=in_flight, start_method=method) as pool:
        list(pool.map([block] * 4))  # warm up
        wall, cpu = time.perf_counter(), time.process_time()
        for result in pool.map(block for _ in range(blocks)):
            assert len(result) == MIB
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall / blocks * 1e6, cpu / blocks * 1e6


def main(argv: list[str]) -> None:
    blocks = int(argv[0]) if argv else 200
    workers = int(argv[1]) if len(argv) > 1 else 2
    print(f"{blocks} blocks of 1 MiB in and 1 MiB out; µs per MiB of input")
    print(f"{'':34}{'wall':>10}{'parent CPU':>12}")
    wall, cpu = measure(blocks, 0, None, None)
    print(f"{'in-process (a copy)':34}{wall:10.0f}{cpu:12.0f}")
    for method in START_METHODS:
        wall, cpu = measure(blocks, workers, method, None)
        print(f"{f'{method}, {workers} workers, in_flight default':34}{wall:10.0f}{cpu:12.0f}")
        wall, cpu = measure(blocks // 4, workers, method, 1)
        print(f"{f'{method}, one block in flight':34}{wall:10.0f}{cpu:12.0f}")


if __name__ == "__main__":
    main(sys.argv[1:])
