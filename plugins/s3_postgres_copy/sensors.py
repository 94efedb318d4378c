"""``S3ObjectsSensor``: wait for an object (or any object under a prefix) without holding a worker slot.

Like the Amazon provider's ``S3KeySensor`` (which it follows: HEAD for a key, a listing for
a prefix), but its module imports no boto3 when a DAG file is parsed (the hook is made when
it pokes), it reschedules itself between checks by default (no worker slot is held while it
waits, no triggerer is needed), and its time-out names what it waited for and how long.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSensorTimeout

if TYPE_CHECKING:
    from airflow.sdk import Context

DEFAULT_WAIT_TIMEOUT = 6 * 3600.0
DEFAULT_WAIT_INTERVAL = 60.0


class S3ObjectsSensor(BaseSensorOperator):
    """Wait until ``s3://bucket/key`` exists (or, with ``prefix``, any object under it).

    :param bucket: the bucket (templated).
    :param key: the object key (templated); or give ``prefix``.
    :param prefix: wait for any object under this prefix (templated).
    :param aws_conn_id: the Amazon connection.
    :param wait_timeout: seconds to wait in all before failing.
    :param wait_interval: seconds between checks.
    """

    template_fields: Sequence[str] = ("bucket", "key", "prefix")
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        bucket: str = "",
        key: str | None = None,
        prefix: str | None = None,
        aws_conn_id: str | None = "aws_default",
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        wait_interval: float = DEFAULT_WAIT_INTERVAL,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("mode", "reschedule")
        super().__init__(timeout=wait_timeout, poke_interval=wait_interval, **kwargs)
        self.bucket = bucket
        self.key = key
        self.prefix = prefix
        self.aws_conn_id = aws_conn_id

    @property
    def location(self) -> str:
        """What the sensor waits for."""
        return f"s3://{self.bucket}/{self.key}" if self.key else f"an object under s3://{self.bucket}/{self.prefix}"

    def poke(self, context: Context) -> bool:
        """Whether the object (or an object under the prefix) exists now."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        hook = S3Hook(aws_conn_id=self.aws_conn_id)
        if self.key:
            found = hook.head_object(key=self.key, bucket_name=self.bucket) is not None
        else:
            found = any(
                not key.endswith("/")
                for key in hook.list_keys(bucket_name=self.bucket, prefix=self.prefix, max_items=10)
            )
        if not found:
            self.log.info(
                "Waiting for %s (checking every %.0f s, for %.0f s at most)",
                self.location,
                self.poke_interval,
                self.timeout,
            )
        return found

    def execute(self, context: Context) -> Any:
        """Wait; fail without retry, naming what and how long, when ``wait_timeout`` has passed."""
        try:
            return super().execute(context)
        except AirflowSensorTimeout as err:
            raise AirflowSensorTimeout(
                f"{self.location} did not appear within {self.timeout:.0f} s "
                f"(checked every {self.poke_interval:.0f} s); "
                "upload it and clear this task, or trigger a run with a longer wait_timeout"
            ) from err


class RunObjectsSensor(S3ObjectsSensor):
    """The import DAG's first task: refuse unknown conf keys, find the run's key or prefix, wait for it.

    The bucket, key (a template on the logical date), prefix, ``wait_timeout`` and ``wait_interval``
    come from the run's params; it returns the target for the next task.

    :param default_key: the key template when the ``key`` param is empty.
    :param param_names: the params the DAG declares (a conf key that is none of them is refused).
    """

    def __init__(self, *, default_key: str, param_names: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.default_key = default_key
        self.param_names = tuple(param_names)

    def execute(self, context: Context) -> dict[str, Any]:
        """Check the conf, resolve the target, wait for it."""
        from s3_postgres_copy.nightly import check_conf, resolve_target

        params = context["params"]
        dag_run = context.get("dag_run")
        # Not params.keys(): Airflow adds the run's conf keys to the params, misspelt ones included.
        check_conf(getattr(dag_run, "conf", None), self.param_names)
        target = resolve_target(params, lambda text: str(self.render_template(text, context)), self.default_key)
        self.bucket, self.key, self.prefix = target.bucket, target.key, target.prefix
        self.timeout = float(params["wait_timeout"])
        self.poke_interval = float(params["wait_interval"])
        super().execute(context)
        return {"bucket": target.bucket, "key": target.key, "prefix": target.prefix}
