"""Airflow provider metadata (the ``apache_airflow_provider`` entry point)."""

from __future__ import annotations

from typing import Any

from s3_postgres_copy import __version__


def get_provider_info() -> dict[str, Any]:
    """Describe this package to ``airflow providers list``."""
    return {
        "package-name": "s3-postgres-copy",
        "name": "S3 to PostgreSQL COPY",
        "description": "Stream S3 objects (JSON lines or CSV, gzip) into PostgreSQL with COPY FROM STDIN, "
        "in one transaction, with resume, rejects and metadata columns.",
        "versions": [__version__],
        "operators": [
            {
                "integration-name": "S3 to PostgreSQL COPY",
                "python-modules": ["s3_postgres_copy.operators"],
            }
        ],
        "transfers": [
            {
                "source-integration-name": "Amazon Simple Storage Service (S3)",
                "target-integration-name": "PostgreSQL",
                "python-module": "s3_postgres_copy.operators",
            }
        ],
    }
