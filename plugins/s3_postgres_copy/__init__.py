"""Stream S3 objects (JSON lines or CSV, optionally gzipped) into PostgreSQL with COPY FROM STDIN.

The modules follow the data's path: ``source`` (HTTP byte stream) → ``compression`` →
``formats`` (which format, by registry) → ``records`` (line blocks, CSV records) →
``documents`` (the API's document) → ``encoders`` (one per format) → ``rows`` (COPY row
layouts and their framing) → ``segments``/``tolerant`` (COPY statements) → ``sink`` (the
transaction) and ``modes`` (what happens to the table's other rows) → ``loader`` (one load)
→ ``operators`` (Airflow). None but ``operators`` needs Airflow; the operator is imported
lazily so that using a stage does not import Airflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["S3ToPostgresCopyOperator", "__version__"]

if TYPE_CHECKING:
    from s3_postgres_copy.operators import S3ToPostgresCopyOperator


def __getattr__(name: str) -> Any:
    if name == "S3ToPostgresCopyOperator":
        from s3_postgres_copy.operators import S3ToPostgresCopyOperator

        return S3ToPostgresCopyOperator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
