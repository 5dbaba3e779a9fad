"""The error hierarchy. Each CLI-facing error carries the exit code the CLI uses."""

from __future__ import annotations


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


class StoreError(AggregatorError):
    """The database cannot be opened, read or written; the message says what to do."""

    exit_code = 3


class WriterBusy(AggregatorError):
    """Another process holds the database's writer lock and the caller chose not to wait.
    Exit code 75 is sysexits' EX_TEMPFAIL: try again later."""

    exit_code = 75


class FeedError(AggregatorError):
    """One feed failed; it ends that feed's cycle, never the process."""

    kind = "error"

    def __init__(self, url: str, message: str, *, status: int | None = None) -> None:
        self.url = url
        self.message = message
        self.status = status
        super().__init__(f"{url}: {message}")


class ParseError(FeedError):
    kind = "parse"
