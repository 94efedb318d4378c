"""What to load and how: :class:`LoadOptions`, checked once into :class:`PreparedLoad` before any I/O."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from s3_postgres_copy.checks import parse_checks
from s3_postgres_copy.compression import Compression, compression_names
from s3_postgres_copy.documents import Transform, Validator, resolve_transform, schema_validator
from s3_postgres_copy.exceptions import ConfigurationError
from s3_postgres_copy.formats import FormatName, format_names
from s3_postgres_copy.identifiers import split_table
from s3_postgres_copy.modes import Mode, ModeName, get_mode
from s3_postgres_copy.records import DEFAULT_MAX_LINE_BYTES
from s3_postgres_copy.sink import Columns, derived_identifier

if TYPE_CHECKING:
    from s3_postgres_copy.rows import CopyFormat

SEGMENT_BYTES = 32 << 20
"""COPY rows per COPY statement (tolerant mode re-sends a refused one in part)."""
COPY_FORMATS = ("auto", "text", "binary")


@dataclass(slots=True)
class LoadOptions:
    """What to load and how; validated by :meth:`check` (or :meth:`prepare`) before any I/O."""

    bucket: str
    key: str
    table: str
    format: FormatName = "auto"
    compression: Compression = "auto"
    mode: ModeName = "replace"
    max_bad_rows: int = 0
    max_bad_ratio: float | None = None
    transform: str | Transform | None = None
    schema: Mapping[str, Any] | None = None
    columns: Columns = field(default_factory=Columns)
    create_table: bool = True
    batch_id: str | None = None
    csv_delimiter: str = ","
    raw_limit: int = 10_000
    segment_bytes: int = SEGMENT_BYTES
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    copy_format: CopyFormat = "auto"
    """COPY rows: ``binary`` is faster for the server; ``auto`` uses it in strict mode when the column
    types allow (jsonb/json/text document, text/varchar metadata, timestamptz/timestamp ``loaded_at``,
    bigint ``source_line``) and text rows otherwise; tolerant mode always sends text rows."""
    merge_key: Sequence[str] | None = None
    """``mode="merge"``: the top-level document fields rows match on (``document->>field``)."""
    stage: str | None = None
    """``mode="snapshot"`` of a prefix: stage the object in this table; ``snapshot.publish`` makes it the content."""
    skip_unchanged: bool = False
    """Skip an object whose ETag equals that of the last committed load of its key into the table (the ledger's)."""
    checks: Mapping[str, Any] | None = None
    """``{"name": {"check_statement": "<SQL>"}}`` evaluated over the rows the load wrote, before commit."""
    lock_timeout: float | None = None
    """Seconds to wait for a lock on the target before failing (transient); ``None``: wait, logging who holds it."""
    ledger: bool | None = None
    """Write the load's row into ``<table>_loads`` (in its transaction). ``None``: created with the table
    (``create_table``), used if it exists, else left out with a warning; ``True``: required; ``False``: off."""
    reconcile: bool = True
    """Before commit, check that the rows written add up (the mode's row counts, every line accounted for)."""
    transform_workers: int | None = None
    """Processes that run the record path (transform, schema) for blocks of records, in order; ``0``/``1``:
    in the load's process; ``None``: the CPUs the process may use, at most 8 (see ``pipeline``)."""

    @property
    def location(self) -> str:
        """``s3://bucket/key`` for messages."""
        return f"s3://{self.bucket}/{self.key}"

    @property
    def tolerant(self) -> bool:
        """Whether bad records go to the rejects table instead of failing the load."""
        return self.max_bad_rows > 0 or bool(self.max_bad_ratio)

    def check(self) -> None:
        """Raise :class:`ConfigurationError` (a ``ValueError``) naming the first bad option."""
        self.prepare()

    def prepare(self) -> PreparedLoad:
        """Check every option and resolve the transform, the schema validator and the mode, once."""
        try:
            mode = self._check()
            transform = resolve_transform(self.transform)
            validate = _validator(self.schema)
            checks = parse_checks(self.checks)
        except ConfigurationError:
            raise
        except ValueError as err:
            raise ConfigurationError(str(err)) from err
        return PreparedLoad(self, transform, validate, mode, checks)

    def _check(self) -> Mode:
        split_table(self.table)
        _one_of("format", self.format, format_names())
        _one_of("compression", self.compression, compression_names())
        mode = get_mode(self.mode)
        _one_of("copy_format", self.copy_format, COPY_FORMATS)
        if not self.bucket or not self.key:
            raise ValueError("s3_bucket and s3_key must not be empty")
        for name, minimum in (("max_bad_rows", 0), ("raw_limit", 0), ("segment_bytes", 1), ("max_line_bytes", 1)):
            _integer(name, getattr(self, name), minimum)
        if self.transform_workers is not None:
            _integer("transform_workers", self.transform_workers, 0)
        ratio = self.max_bad_ratio
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1):
            raise ValueError(f"max_bad_ratio must be a number between 0 and 1, got {ratio!r}")
        if self.lock_timeout is not None and (
            isinstance(self.lock_timeout, bool)
            or not isinstance(self.lock_timeout, int | float)
            or not self.lock_timeout > 0
        ):
            raise ValueError(
                f"lock_timeout must be a positive number of seconds (or None to wait), got {self.lock_timeout!r}"
            )
        if self.skip_unchanged and self.ledger is False:
            raise ValueError("skip_unchanged needs the ledger (ledger=True): it compares the ETag with the last load's")
        if self.stage is not None:
            split_table(self.stage)
        if self.tolerant:
            derived_identifier(self.table, "_rejects")
            if self.copy_format == "binary":
                raise ValueError(
                    "copy_format='binary' needs strict mode (max_bad_rows=0, no max_bad_ratio): "
                    "tolerant mode re-sends refused segments as text rows"
                )
        mode.check(self)
        if len(self.csv_delimiter) != 1 or self.csv_delimiter in '"\r\n':
            raise ValueError(
                f"csv_delimiter must be one character other than a quote or newline, got {self.csv_delimiter!r}"
            )
        return mode


@dataclass(frozen=True, slots=True)
class PreparedLoad:
    """Checked options with what they resolve to; one per operator run, re-used for every object."""

    options: LoadOptions
    transform: Transform | None
    validate: Validator | None
    mode: Mode
    checks: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    def for_object(self, key: str, batch_id: str | None) -> PreparedLoad:
        """The same load for another object (and batch), without checking or resolving again."""
        options = dataclasses.replace(self.options, key=key, batch_id=batch_id)
        if not key:
            raise ConfigurationError("s3_bucket and s3_key must not be empty")
        return dataclasses.replace(self, options=options)


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _integer(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "non-negative" if minimum == 0 else "positive"
        raise ValueError(f"{name} must be a {kind} integer, got {value!r}")


def _validator(schema: Mapping[str, Any] | None) -> Validator | None:
    try:
        return schema_validator(schema)
    except Exception as err:  # jsonschema's SchemaError is not a ValueError
        raise ValueError(f"schema is not a valid JSON Schema: {err}") from err
