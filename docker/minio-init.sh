#!/bin/sh
# One-shot MinIO bootstrap for docker-compose.yaml (runs in the minio/mc image).
#
# Waits for MinIO, creates the import bucket and uploads the sample file where the
# s3_to_postgres_import DAG looks by default:
#
#     s3://imports/imports/<YYYY-MM-DD>/providers.jsonl.gz
#       bucket  ^^^^^^^ ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ key (imports/{{ ds }}/providers.jsonl.gz)
#
# <YYYY-MM-DD> is today's date in UTC (Airflow's ``ds`` is UTC); set IMPORT_DATES to a
# space-separated list of dates to upload for other days as well. Safe to run repeatedly.
set -eu

MINIO_ENDPOINT="${MINIO_ENDPOINT:-http://minio:9000}"
IMPORT_BUCKET="${IMPORT_BUCKET:-imports}"
IMPORT_KEY_PREFIX="${IMPORT_KEY_PREFIX:-imports}"
IMPORT_DATES="${IMPORT_DATES:-$(date -u +%Y-%m-%d)}"
SAMPLE_FILE="${SAMPLE_FILE:-/sample/providers.jsonl.gz}"

if [ ! -f "${SAMPLE_FILE}" ]; then
    echo "Sample file ${SAMPLE_FILE} not found (is ./docker/sample mounted?)" >&2
    exit 1
fi

echo "Waiting for MinIO at ${MINIO_ENDPOINT} ..."
attempt=0
until mc alias set demo "${MINIO_ENDPOINT}" "${MINIO_ROOT_USER}" "${MINIO_ROOT_PASSWORD}" >/dev/null 2>&1 \
    && mc ready demo >/dev/null 2>&1; do
    attempt=$((attempt + 1))
    if [ "${attempt}" -ge 60 ]; then
        echo "MinIO did not become ready after ${attempt} attempts" >&2
        exit 1
    fi
    sleep 2
done

mc mb --ignore-existing "demo/${IMPORT_BUCKET}"

for day in ${IMPORT_DATES}; do
    mc cp "${SAMPLE_FILE}" "demo/${IMPORT_BUCKET}/${IMPORT_KEY_PREFIX}/${day}/providers.jsonl.gz"
done

echo "Objects in s3://${IMPORT_BUCKET}:"
mc ls --recursive "demo/${IMPORT_BUCKET}"
