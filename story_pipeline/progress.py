"""A process-wide progress hook: library stages call ``report(stage, done, total)``; the CLI
installs a rich progress display, Dagster assets log. Nothing is shown when no one listens."""

from collections.abc import Callable

_reporter: Callable[[str, int, int], None] | None = None


def set_reporter(fn: Callable[[str, int, int], None] | None) -> None:
    global _reporter
    _reporter = fn


def report(stage: str, done: int, total: int) -> None:
    if _reporter is not None:
        _reporter(stage, done, total)
