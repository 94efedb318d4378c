"""Reusable test/demo/benchmark harness.

Submodules (imported explicitly so that importing ``harness`` stays cheap and
never imports Airflow before its environment is configured):

* ``harness.postgres``    -- ``ThrowawayPostgres``, ``postgres_from_env``
* ``harness.s3``          -- ``LocalS3`` (moto server)
* ``harness.airflow_env`` -- Airflow connection env, isolated AIRFLOW_HOME, DB migration
"""

from __future__ import annotations
