"""What a load did: :class:`LoadStats`, the operator's XCom, and the accounting of every line read."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from s3_postgres_copy.source import HttpObjectSource

REPORTED_REJECTS = 5
"""How many bad records the stats (and the errors) list."""
ACCOUNTED = ("rows_copied", "rows_rejected", "blank_lines", "header_lines", "continuation_lines")
"""What every line read is: ``sum(ACCOUNTED) == lines_read``."""


@dataclass(slots=True)
class LoadStats:
    """What a load did; the operator returns :meth:`as_dict` as its XCom."""

    source_bucket: str
    source_key: str
    table: str
    batch_id: str | None
    mode: str
    source_etag: str | None = None
    format: str | None = None
    compression: str | None = None
    copy_format: str | None = None
    transform_workers: int = 0
    """Worker processes that ran the record path (0: it ran in the load's process)."""
    workers_start_method: str | None = None
    """How they were started: ``fork`` or ``spawn`` (``None``: no workers)."""
    rows_copied: int = 0
    rows_streamed: int = 0
    rows_rejected: int = 0
    rows_deleted: int = 0
    rows_inserted: int | None = None
    """Merge: rows of new keys."""
    rows_updated: int | None = None
    """Merge: stored rows whose document changed."""
    rows_unchanged: int | None = None
    """Merge: records whose document equals the stored one (the row is left as it is)."""
    rows_deduplicated: int | None = None
    """Merge: records of a key that a later record of the same key in the file replaced."""
    skipped: bool = False
    skip_reason: str | None = None
    lock_wait_seconds: float = 0.0
    copy_statements: int = 0
    """COPY commands sent (one per segment; more when tolerant mode recovers refused rows)."""
    lines_read: int = 0
    blank_lines: int = 0
    header_lines: int = 0
    continuation_lines: int = 0
    bytes_read: int = 0
    bytes_decompressed: int = 0
    content_length: int | None = None
    requests: int = 0
    resumes: int = 0
    resigns: int = 0
    seconds: float = 0.0
    first_rejects: list[dict[str, Any]] = field(default_factory=list)

    @property
    def unaccounted_lines(self) -> int:
        """Lines read that are neither a row, a reject, blank, a header nor a CSV continuation (0 when all is well)."""
        return unaccounted_lines({name: getattr(self, name) for name in ("lines_read", *ACCOUNTED)})

    def record_source(self, source: HttpObjectSource) -> None:
        """Take the byte and request counts (and the ETag) from the object's source."""
        self.bytes_read = source.offset
        self.source_etag = source.etag
        self.content_length = source.content_length
        self.requests, self.resumes, self.resigns = source.requests, source.resumes, source.resigns

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (rates included)."""
        out = asdict(self)
        out["rows_per_second"] = round(self.rows_copied / self.seconds, 1) if self.seconds else None
        out["mb_per_second"] = round(self.bytes_decompressed / 1e6 / self.seconds, 2) if self.seconds else None
        return out


ProgressCallback = Callable[[LoadStats], None]
"""Called with the running stats after each block (the operator logs progress from it)."""


def unaccounted_lines(stats: Mapping[str, Any]) -> int:
    """:attr:`LoadStats.unaccounted_lines` of a stats mapping (an XCom)."""
    return int(stats["lines_read"]) - sum(int(stats.get(name) or 0) for name in ACCOUNTED)
