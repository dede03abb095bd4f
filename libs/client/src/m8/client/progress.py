"""What a person waiting at a terminal sees: the stage an upload is in, and for how long.

Drawn on standard error, and only when it is a terminal: a script's pipe gets nothing extra
(rich's live display is not even loaded then).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

Stage = Callable[[str], None]


@contextmanager
def stages(console: Console, first: str = "") -> Iterator[Stage]:
    """A function that shows the current stage (a spinner, the stage, the time it took so
    far) on `console` while the block runs, if it is a terminal; a no-op otherwise. The
    line goes once the block ends: what follows prints the outcome."""
    if not console.is_terminal:
        yield _nothing
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Column

    # A long stage (a long path) is cut, never the time: it is what a person watches.
    text = Column(no_wrap=True, overflow="ellipsis", ratio=1)
    with Progress(
        SpinnerColumn("dots"),
        TextColumn("{task.description}", markup=False, table_column=text),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(first, total=None)
        yield lambda text: progress.update(task, description=text)


def _nothing(_text: str) -> None:
    pass


def upload_stage(view: dict[str, Any], store: str | None = None) -> str:
    """The stage an upload is in, in a few words, from the API's view of it.

    The API tells `pending` from the outcomes, not a queued upload from one being written
    upstream: the text says either, rather than guess.
    """
    status = view.get("status")
    if status == "pending":
        where = store or view.get("store") or "its store"
        return f"accepted, pending: queued or being written to {where}"
    return f"{status}: checking the reactor's receipt"
