"""Progress bars of long commands: one bar per stage, fed by `on_progress(stage, done, total)` callbacks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from heimdall.budget import Progress as OnProgress


@contextmanager
def staged_progress(console: Console, quiet: bool = False) -> Iterator[tuple[Progress, OnProgress]]:
    """(the rich Progress, a callback adding a bar per new stage name and updating it); nothing shown when quiet."""
    with Progress(
        TextColumn("[bold]{task.description:>6}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def on_progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done)

        yield progress, on_progress
