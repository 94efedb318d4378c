"""A fresh clone runs its tests with nothing beside it.

``git clone`` of the repository's committed ``HEAD`` into an empty temporary folder (no
``../shared`` next to it, no virtualenv in it), then, with this interpreter (the project's
virtualenv): the whole suite's collection, and the tests that read the vendored peer suites
(``tests/data``). Uncommitted changes are not in the clone: CI runs on a committed tree, so the
committed ``HEAD`` is what this checks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
PEER_SUITES = (
    "tests/integration/test_jsontestsuite.py",
    "tests/integration/test_csv_spectrum.py",
    "tests/integration/test_naughty_strings.py",
)


def _git(*args: str, cwd: Path) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"git {' '.join(args)} failed ({result.returncode}): {result.stderr}"
    return result.stdout.strip()


def _clean_env() -> dict[str, str]:
    """This process's env without what the suite set for itself (Airflow settings, connections, PYTHONPATH).

    ``TMPDIR`` stays the system's: the throwaway PostgreSQL runs as the ``postgres`` user when
    root, and pytest's own temporary folders (mode 0700) are closed to it.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "PYTHON", "PYTEST"))}
    env.update({"PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    return env


def _pytest(clone: Path, env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", *args],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _tail(result: subprocess.CompletedProcess[str]) -> str:
    return f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of the committed ``HEAD`` in an empty folder, checked out at that commit."""
    root = tmp_path_factory.mktemp("fresh-clone")
    assert not any(root.iterdir())
    head = _git("rev-parse", "HEAD", cwd=REPO_ROOT)
    target = root / "repo"
    _git("clone", "--quiet", "--no-checkout", str(REPO_ROOT), str(target), cwd=root)
    _git("-c", "advice.detachedHead=false", "checkout", "--quiet", head, cwd=target)
    assert _git("rev-parse", "HEAD", cwd=target) == head
    assert not (root / "shared").exists()
    assert not (target / ".venv").exists()
    return target


def test_vendored_data_is_committed(clone: Path) -> None:
    for path in ("tests/data/README.md", "tests/data/jsontestsuite/LICENSE", "tests/data/csv-spectrum/LICENSE"):
        assert (clone / path).is_file(), f"{path} is not committed"
    assert (clone / "tests/data/naughty-strings/LICENSE").is_file()
    # Byte for byte what the work tree holds (no line-ending conversion by git).
    for path in (clone / "tests/data").rglob("*"):
        if path.is_file():
            relative = path.relative_to(clone)
            assert path.read_bytes() == (REPO_ROOT / relative).read_bytes(), f"{relative} differs in the clone"


def test_collection_works_in_a_fresh_clone(clone: Path) -> None:
    t0 = time.monotonic()
    result = _pytest(clone, _clean_env(), "--collect-only", "-q")
    print(f"\n[fresh clone] collection: {time.monotonic() - t0:.1f} s", file=sys.stderr)
    assert result.returncode == 0, (
        f"collection failed in a fresh clone:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    )
    lines = result.stdout.splitlines()
    assert any(line.startswith(PEER_SUITES[0]) for line in lines), result.stdout[-3000:]
    assert "error" not in result.stdout.lower().splitlines()[-1], result.stdout[-3000:]


def test_peer_suites_pass_in_a_fresh_clone(clone: Path) -> None:
    t0 = time.monotonic()
    result = _pytest(clone, _clean_env(), "-q", *PEER_SUITES)
    print(f"\n[fresh clone] peer suites: {time.monotonic() - t0:.1f} s", file=sys.stderr)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, (
        f"peer suites failed in a fresh clone:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    )
    assert " passed" in summary, summary
    assert "skipped" not in summary, summary
    assert "failed" not in summary, summary
    assert "error" not in summary, summary
