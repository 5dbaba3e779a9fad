"""The error hierarchy. Each CLI-facing error carries the exit code the CLI uses.

    AggregatorError            exit 1: the root of every error raised on purpose
    ├── ConfigError            exit 2: the config cannot be used (names the file and the key)
    ├── StoreError             exit 3: the database cannot be opened, read or written
    ├── WriterBusy             exit 75: another process is writing and `--no-wait` was given
    └── FeedError              one feed failed: it ends that feed's poll, never the process
        └── ParseError         the body cannot be parsed (its `kind` says why: parse, not_a_feed,
                               too_large)

Every one of them pickles (a worker process sends a ParseError back to the poller as it is).
A `kind` is a `model.FailureKind` (a StrEnum); this module imports nothing of the package.
"""

from __future__ import annotations

from typing import Any


class AggregatorError(Exception):
    """Root of every error the aggregator raises on purpose."""

    exit_code = 1


class ConfigError(AggregatorError):
    """The configuration cannot be used; the message names the file and key."""

    exit_code = 2

    def __init__(self, path: str, key: str | None, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.key, self.problem))


class StoreError(AggregatorError):
    """The database cannot be opened, read or written; the message says what to do."""

    exit_code = 3


class WriterBusy(AggregatorError):
    """Another process holds the database's writer lock and the caller chose not to wait.
    Exit code 75 is sysexits' EX_TEMPFAIL: try again later."""

    exit_code = 75


class FeedError(AggregatorError):
    """One feed failed; it ends that feed's cycle, never the process. `kind`: a FailureKind."""

    def __init__(
        self, url: str, message: str, *, status: int | None = None, kind: str = "network"
    ) -> None:
        self.url = url
        self.message = message
        self.status = status
        self.kind = kind
        super().__init__(f"{url}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.url, self.message, self.status, self.kind))


class ParseError(FeedError):
    """The body cannot be parsed: `kind` is parse, not_a_feed (it is no feed at all) or
    too_large (more items than a document may hold)."""

    def __init__(
        self, url: str, message: str, *, status: int | None = None, kind: str = "parse"
    ) -> None:
        super().__init__(url, message, status=status, kind=kind)


def _rebuild(
    cls: type[FeedError], url: str, message: str, status: int | None, kind: str
) -> FeedError:
    return cls(url, message, status=status, kind=kind)
