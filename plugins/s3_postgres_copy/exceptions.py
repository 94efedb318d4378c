"""Errors raised by the loader; each names the object, the line and what to do.

Every error says whether retrying can help, in the style of dlt's ``TerminalException`` /
``TransientException``: the class carries the mark, so whoever retries (the operator, a
script) asks the exception (:func:`is_terminal`) instead of keeping a list of classes.

* **terminal**: the same inputs give the same failure (a bad record, a missing column, a
  failed check, a bad option); Airflow must not retry.
* **transient**: the network, the S3 endpoint or the database server got in the way
  (connection lost, server restarted, statement cancelled, lock timeout); nothing was
  committed and a retry may succeed.
"""

from __future__ import annotations


class TerminalError:
    """Mixin: retrying with the same inputs cannot succeed."""


class TransientError:
    """Mixin: nothing was committed and a retry may succeed."""


class LoadError(Exception):
    """A load failed; nothing was committed."""


class ConfigurationError(LoadError, TerminalError, ValueError):
    """An option, the table or its columns cannot work; fix the configuration (no retry).

    It is a ``ValueError`` too, as bad arguments are in Python.
    """


class UnknownFormatError(ConfigurationError):
    """The object is neither of the formats the loader reads (or not in the format asked for)."""


class SourceError(LoadError, TransientError):
    """The S3 object could not be read (missing, changed, unreachable); a retry may succeed."""


class ServerError(LoadError, TransientError):
    """The database server or the connection interrupted the load; it was rolled back."""


class TransformWorkerError(LoadError, TransientError):
    """A worker process of the record path (``transform_workers``) died; the load was rolled back.

    :param location: the object.
    :param reason: which process, how it ended, what to do.
    :param lines: the lines that were being encoded.
    """

    def __init__(self, location: str, reason: str, lines: str) -> None:
        self.location = location
        self.reason = reason
        super().__init__(f"Loading {location} failed: {reason} ({lines} were being encoded); nothing was committed")


class LockTimeoutError(ServerError):
    """A lock on the target was not granted within ``lock_timeout``; nothing changed."""


class BadRecordError(LoadError, TerminalError):
    """A record could not be loaded; carries its source line and the reason."""

    def __init__(self, location: str, line: int, reason: str) -> None:
        self.location = location
        self.line = line
        self.reason = reason
        super().__init__(f"Bad record in {location} at line {line}: {reason}")


class TooManyBadRecordsError(LoadError, TerminalError):
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


class CheckFailedError(LoadError, TerminalError):
    """A check was false (or failed): before commit, the load was rolled back."""

    def __init__(self, location: str, name: str, reason: str, *, after_commit: bool = False) -> None:
        self.location = location
        self.name = name
        self.reason = reason
        outcome = "the load is committed: look into it" if after_commit else "nothing was committed"
        super().__init__(f"Check {name!r} failed for {location}: {reason}; {outcome}")


def is_terminal(err: BaseException) -> bool:
    """Whether retrying cannot help: a terminal load error, or a ``ValueError``/``TypeError`` (bad arguments)."""
    if isinstance(err, TerminalError):
        return True
    if isinstance(err, TransientError):
        return False
    return isinstance(err, ValueError | TypeError)
