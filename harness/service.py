"""A local service the harness starts and stops (a server on a free loopback port)."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Service:
    """``with Service(): ...`` starts it and always stops it; subclasses define ``start``/``stop``."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
