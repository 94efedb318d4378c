"""Local S3 endpoint backed by an in-process moto server."""

from __future__ import annotations

import logging
from typing import Any

import boto3
import requests
from botocore.config import Config
from moto.server import ThreadedMotoServer

from harness.service import Service

S3Client = Any  # boto3 ships no stubs here; keep the alias for readability

log = logging.getLogger(__name__)

AWS_REGION = "us-east-1"
# Dummy credentials (moto accepts any). Long and unlike any word, so Airflow's secrets masker
# (which replaces every occurrence of a connection's password in log lines) masks only them.
AWS_ACCESS_KEY_ID = "AKIALOCALS3HARNESS00"
AWS_SECRET_ACCESS_KEY = "local-s3-harness-secret-key-not-a-credential"


def client_config() -> Config:
    """botocore config used for every client talking to the local endpoint."""
    return Config(signature_version="s3v4")


class LocalS3(Service):
    """moto S3 server on 127.0.0.1 (a thread in this process) plus client helpers."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = True) -> None:
        """Configure the server; ``port=0`` lets the OS pick a free port at bind time.

        ``quiet`` raises the ``werkzeug`` logger to WARNING (no per-request lines).
        """
        self.host = host
        self.quiet = quiet
        self._requested_port = port
        self._server: ThreadedMotoServer | None = None
        self._port: int | None = None
        self._client: S3Client | None = None

    @property
    def port(self) -> int:
        """Bound TCP port (valid after ``start()``)."""
        if self._port is None:
            raise RuntimeError("LocalS3 is not started")
        return self._port

    @property
    def endpoint_url(self) -> str:
        """``http://host:port`` of the server."""
        return f"http://{self.host}:{self.port}"

    @property
    def region(self) -> str:
        """AWS region the clients use."""
        return AWS_REGION

    @property
    def access_key(self) -> str:
        """Dummy access key id."""
        return AWS_ACCESS_KEY_ID

    @property
    def secret_key(self) -> str:
        """Dummy secret key."""
        return AWS_SECRET_ACCESS_KEY

    def start(self) -> LocalS3:
        """Start the moto server thread (idempotent)."""
        if self._server is not None:
            return self
        if self.quiet:
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address=self.host, port=self._requested_port, verbose=False)
        server.start()
        self._server = server
        self._port = int(server.get_host_and_port()[1])
        log.info("moto S3 listening on %s", self.endpoint_url)
        return self

    def stop(self) -> None:
        """Stop the server thread."""
        server, self._server = self._server, None
        self._client = None
        if server is not None:
            server.stop()
        self._port = None

    def client(self, **kwargs: Any) -> S3Client:
        """A new boto3 S3 client pointed at this server with dummy credentials."""
        params: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "region_name": AWS_REGION,
            "aws_access_key_id": AWS_ACCESS_KEY_ID,
            "aws_secret_access_key": AWS_SECRET_ACCESS_KEY,
            "config": client_config(),
        }
        params.update(kwargs)
        return boto3.session.Session().client("s3", **params)

    def _shared_client(self) -> S3Client:
        if self._client is None:
            self._client = self.client()
        return self._client

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` and return the name."""
        self._shared_client().create_bucket(Bucket=name)
        return name

    def put_object(self, bucket: str, key: str, data: bytes, **extra: Any) -> dict[str, Any]:
        """Upload ``data`` to ``s3://bucket/key``; ``extra`` goes to ``put_object``."""
        return dict(self._shared_client().put_object(Bucket=bucket, Key=key, Body=data, **extra))

    def get_object(self, bucket: str, key: str) -> bytes:
        """Download ``s3://bucket/key``."""
        body = self._shared_client().get_object(Bucket=bucket, Key=key)["Body"]
        return bytes(body.read())

    def reset(self) -> None:
        """Wipe all moto state (every bucket) via moto's reset API."""
        requests.post(f"{self.endpoint_url}/moto-api/reset", timeout=10).raise_for_status()
