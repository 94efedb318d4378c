"""The package both ways: ``pip install <repo>`` into a fresh virtualenv (provider), and the plugins folder.

Fresh virtualenv: ``python -m venv`` from the project's interpreter, *without* system site
packages, then ``pip install`` of a copy of the repo (the copy keeps setuptools' in-tree
``build/`` and ``plugins/*.egg-info`` out of the work tree and the Airflow plugins folder).
pip resolves every dependency from the package index as a user's install would; the project
venv's ``pip freeze`` is passed as constraints so it picks the same versions (no resolver
backtracking, and a result that matches what the rest of the suite tests). It takes about
2.5 minutes on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from .conftest import _timing

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

REPO_ROOT = Path(__file__).resolve().parents[2]
DIST_NAME = "s3-postgres-copy"
ENTRY_POINT = "s3_postgres_copy.provider:get_provider_info"
INSTALL_TIMEOUT = 900
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__", "*.pyc",
    "*.egg-info", "build", "dist", "logs", "docs", "bench",
)  # fmt: skip


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's env without any Airflow setting or PYTHONPATH (the suite points those at the repo)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "PYTHON")) and key not in ("VIRTUAL_ENV",)
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PYTHONNOUSERSITE": "1",
        }
    )
    env.update(extra)
    return env


def _run(cmd: Sequence[str], *, env: dict[str, str], cwd: Path, timeout: float = 300) -> str:
    result = subprocess.run(list(cmd), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, (
        f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
    )
    return result.stdout


def _json_tail(stdout: str) -> Any:
    """The last line of ``stdout`` as JSON (Airflow may log before it)."""
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(virtualenv, AIRFLOW_HOME): a new virtualenv holding ``pip install <copy of the repo>`` and its dependencies."""
    root = tmp_path_factory.mktemp("provider")
    src, venv, home = root / "src", root / "venv", root / "airflow-home"
    home.mkdir()
    shutil.copytree(REPO_ROOT, src, ignore=COPY_IGNORE, symlinks=True)
    env = _clean_env(home)
    t0 = time.monotonic()
    _run([sys.executable, "-m", "venv", str(venv)], env=env, cwd=root)
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg, cfg

    frozen = _run([sys.executable, "-m", "pip", "freeze", "--all"], env=env, cwd=root)
    constraints = root / "constraints.txt"
    constraints.write_text(
        "\n".join(
            line
            for line in frozen.splitlines()
            # only plain pins; not pip/setuptools (the build env needs its own) nor this package
            if "==" in line
            and " @ " not in line
            and not line.startswith(("-e", "pip==", "setuptools==", "wheel==", f"{DIST_NAME}=="))
        )
        + "\n"
    )
    python = venv / "bin" / "python"
    _run(
        [str(python), "-m", "pip", "install", "--progress-bar", "off", "-q", "-c", str(constraints), str(src)],
        env=env,
        cwd=root,
        timeout=INSTALL_TIMEOUT,
    )
    _timing("fresh venv + pip install <repo>", time.monotonic() - t0)
    return venv, home


def test_operator_imports_from_the_installed_package(fresh_venv: tuple[Path, Path]) -> None:
    venv, home = fresh_venv
    out = _run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import json, s3_postgres_copy\n"
            "from s3_postgres_copy import S3ToPostgresCopyOperator\n"
            "from airflow.sdk import BaseOperator\n"
            "print(json.dumps([s3_postgres_copy.__file__, S3ToPostgresCopyOperator.__module__, "
            "issubclass(S3ToPostgresCopyOperator, BaseOperator)]))",
        ],
        env=_clean_env(home),
        cwd=home,
    )
    path, module, is_operator = _json_tail(out)
    assert Path(path).is_relative_to(venv), f"imported from {path}, not from the virtualenv"
    assert module == "s3_postgres_copy.operators"
    assert is_operator, "S3ToPostgresCopyOperator is not an airflow.sdk.BaseOperator"


def test_entry_point_and_provider_info(fresh_venv: tuple[Path, Path]) -> None:
    venv, home = fresh_venv
    script = """
import importlib, importlib.metadata as md, json
eps = [ep for ep in md.entry_points(group="apache_airflow_provider") if ep.dist.name == "s3-postgres-copy"]
info = eps[0].load()() if eps else None
modules = [m for op in (info or {}).get("operators", []) for m in op["python-modules"]]
for m in modules:
    importlib.import_module(m)
print(json.dumps({"eps": [[ep.name, ep.value] for ep in eps], "info": info, "version": md.version("s3-postgres-copy"),
                  "modules": modules}))
"""
    result = _json_tail(_run([str(venv / "bin" / "python"), "-c", script], env=_clean_env(home), cwd=home))
    assert result["eps"] == [["provider_info", ENTRY_POINT]]
    info = result["info"]
    assert info["package-name"] == DIST_NAME
    assert info["name"]
    assert info["description"]
    assert result["version"] in info["versions"]
    assert "s3_postgres_copy.operators" in result["modules"]


def test_airflow_providers_list_shows_it(fresh_venv: tuple[Path, Path]) -> None:
    venv, home = fresh_venv
    out = _run([str(venv / "bin" / "airflow"), "providers", "list", "--output", "json"], env=_clean_env(home), cwd=home)
    start = out.index("[")
    providers = {p["package_name"]: p for p in json.loads(out[start:])}
    assert DIST_NAME in providers, f"not listed: {sorted(providers)}"
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert providers[DIST_NAME]["version"] == version


def test_plugins_folder_without_installing(tmp_path: Path) -> None:
    """The project venv (package not installed) loads ``dags/`` with the package from the plugins folder."""
    script = """
import importlib.metadata as md, json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get("s3_to_postgres_import")
import s3_postgres_copy
try:
    installed = str(md.distribution("s3-postgres-copy").locate_file(""))
except md.PackageNotFoundError:
    installed = None
from s3_postgres_copy import S3ToPostgresCopyOperator as Op
op_module = sys.modules[Op.__module__]
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dag": bool(dag),
                  "tasks": sorted(dag.task_ids) if dag else [], "package": s3_postgres_copy.__file__,
                  "operator_file": getattr(op_module, "__file__", None), "installed": installed}))
"""
    home = tmp_path / "airflow-home"
    home.mkdir()
    env = _clean_env(
        home,
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO_ROOT / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO_ROOT / "plugins"),
    )
    out = _run([sys.executable, "-c", script, str(REPO_ROOT / "dags")], env=env, cwd=tmp_path)
    result = _json_tail(out)
    assert result["installed"] is None, (
        f"{DIST_NAME} is pip-installed in the project venv ({result['installed']}): it would shadow the "
        "plugins folder copy this test is about; `pip uninstall s3-postgres-copy` there"
    )
    assert not result["errors"], result["errors"]
    assert result["dag"]
    assert result["tasks"] == ["check_row_count", "discard_stage", "load", "publish", "validate", "wait_for_objects"]
    plugins = REPO_ROOT / "plugins"
    assert Path(result["package"]).is_relative_to(plugins), f"s3_postgres_copy came from {result['package']}"
    if result["operator_file"]:
        assert Path(result["operator_file"]).is_relative_to(plugins)
