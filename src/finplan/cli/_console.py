"""Shared printing helpers for the CLI: rich tables to stdout, progress bars to stderr."""
from __future__ import annotations

import io
import json
import os
import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False)


def print_json(doc, file=None) -> None:
    (file or sys.stdout).write(json.dumps(doc, indent=2, allow_nan=False) + "\n")


def progress_enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


@contextmanager
def progress_bar(quiet: bool):
    """Yield a callback ``report(description, done, total)``; a no-op when quiet or piped."""
    if not progress_enabled(quiet):
        yield lambda description, done, total: None
        return
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=stderr, transient=True,
    )
    tasks: dict[str, int] = {}
    with progress:
        def report(description: str, done: int, total: int) -> None:
            if description not in tasks:
                tasks[description] = progress.add_task(description, total=total)
            progress.update(tasks[description], completed=done, total=total)

        yield report


@contextmanager
def foreign_output_to_stderr():
    """Send everything written to stdout meanwhile (file descriptor 1 and Python's
    ``sys.stdout``) to stderr, and yield a text stream on the real stdout for finplan's own
    output inside the block.

    Why: Ray's driver threads print lines such as "(raylet) Task ... failed" to
    ``sys.stdout``, and the raylets a local cluster starts write to descriptor 1, at shutdown
    too; on stdout they break ``--json`` and interleave with the tables. Processes started
    inside inherit the redirect.
    """
    try:
        stdout_fd = sys.__stdout__.fileno() if sys.__stdout__ is not None else 1
    except (AttributeError, ValueError, io.UnsupportedOperation):
        stdout_fd = 1
    previous = sys.stdout
    previous.flush()
    saved = os.dup(stdout_fd)
    # finplan's own output: the real stdout, or whatever sys.stdout was (a test's capture)
    real = previous if previous is not sys.__stdout__ else \
        io.TextIOWrapper(os.fdopen(os.dup(saved), "wb"), encoding="utf-8", line_buffering=True)
    os.dup2(2, stdout_fd)
    sys.stdout = sys.stderr
    try:
        yield real
    finally:
        sys.stdout = previous
        real.flush()
        os.dup2(saved, stdout_fd)
        os.close(saved)
        if real is not previous:
            real.close()
