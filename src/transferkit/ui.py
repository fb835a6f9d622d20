"""What transferkit shows a person while it works: the one stderr console and the progress bar.

A module of its own at the bottom of the layers (it imports only rich), so that data loading, training, the
pipeline and the CLI can all print and draw bars without importing each other; the CLI imports it at start-up.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
_warned: set[str] = set()


def warn_once(message: str) -> None:
    """One yellow ``warning:`` line on stderr, once per message and process (every seed of a run would otherwise
    repeat a cache's warning); whitespace folded, so a library's multi-line exception text stays one line."""
    message = " ".join(message.split())
    if message not in _warned:
        _warned.add(message)
        console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)


def make_progress(enabled: bool = True) -> Progress:
    """One bar per epoch with the running loss and accuracy; silent when ``enabled`` is False."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )
