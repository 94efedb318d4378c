"""Running the project's DAGs in-process with ``dag.test()`` and reading what they did.

``dag.test()`` does not raise when a task fails: callers check the returned run's
state (and the task states here). Airflow must already be configured (env applied,
metadata DB migrated) before these functions are called.
"""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
_DAGS: dict[str, Any] = {}
SUCCESS_STATES = {
    "wait_for_objects": ["success"],
    "validate": ["success"],
    "load": ["success"],
    "publish": ["success"],
    "check_row_count": ["success"],
    "discard_stage": ["skipped"],
}
"""The task states of a successful run of the import DAG with one mapped load."""


def load_dag(dag_id: str, dags_folder: Path | None = None) -> Any:
    """The DAG ``dag_id`` parsed from the dags folder (cached per process)."""
    if dag_id not in _DAGS:
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(dags_folder or REPO_ROOT / "dags"))
        if bag.import_errors:
            raise RuntimeError(f"DAG import errors: {bag.import_errors}")
        dag = bag.get_dag(dag_id)
        if dag is None:
            raise RuntimeError(f"DAG {dag_id} not found")
        _DAGS[dag_id] = dag
    return _DAGS[dag_id]


def run_dag(dag: Any, logical_date: dt.datetime | str | None, conf: dict[str, Any] | None = None) -> Any:
    """Run ``dag`` once for ``logical_date`` (``YYYY-MM-DD`` means 02:00 UTC that day; ``None``: a run without one)."""
    if isinstance(logical_date, str):
        logical_date = dt.datetime.fromisoformat(logical_date).replace(hour=2, tzinfo=dt.UTC)
    # dag.test() runs tasks in this process and writes the run's conf into the DAG's and the
    # tasks' params objects; restore them so that runs stay independent.
    saved = copy.deepcopy(dag.params), {task.task_id: copy.deepcopy(task.params) for task in dag.tasks}
    try:
        if logical_date is None:
            return dag.test(logical_date=None, run_after=dt.datetime.now(dt.UTC), run_conf=conf)
        return dag.test(logical_date=logical_date, run_conf=conf)
    finally:
        dag.params = saved[0]
        for task in dag.tasks:
            task.params = saved[1][task.task_id]


def task_states(run: Any) -> dict[str, list[str]]:
    """``task_id`` → the states of its task instances (several when mapped)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id).all()
        states: dict[str, list[str]] = {}
        for ti in sorted(tis, key=lambda t: (t.task_id, t.map_index)):
            states.setdefault(ti.task_id, []).append(str(ti.state))
        return states


def task_tries(run: Any, task_id: str) -> list[int]:
    """The try numbers of ``task_id``'s task instances in ``run`` (one per map index)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id).all()
        return [ti.try_number for ti in sorted(tis, key=lambda t: t.map_index)]


def xcom_values(run: Any, task_id: str) -> list[Any]:
    """The return values of ``task_id`` in ``run``, one per map index (in order)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id).all()
        return [
            ti.xcom_pull(task_ids=task_id, map_indexes=ti.map_index, session=session)
            for ti in sorted(tis, key=lambda t: t.map_index)
        ]
