"""Errors raised by the loader; each names the object, the line and what to do."""

from __future__ import annotations


class LoadError(Exception):
    """A load failed; nothing was committed."""


class SourceError(LoadError):
    """The S3 object could not be read (missing, changed, unreachable)."""


class BadRecordError(LoadError):
    """A record could not be loaded; carries its source line and the reason."""

    def __init__(self, location: str, line: int, reason: str) -> None:
        self.location = location
        self.line = line
        self.reason = reason
        super().__init__(f"Bad record in {location} at line {line}: {reason}")


class TooManyBadRecordsError(LoadError):
    """More bad records than ``max_bad_rows`` allows; nothing was committed."""

    def __init__(self, location: str, limit: int, rejects: list[tuple[int, str]], count: int) -> None:
        self.location = location
        self.limit = limit
        self.rejects = rejects
        self.count = count
        first = "; ".join(f"line {line}: {reason}" for line, reason in rejects)
        super().__init__(
            f"{location}: more than {limit} bad records (at least {count}); nothing was committed. "
            f"First bad records: {first}"
        )
