"""What a person waiting at a terminal sees: the stage an upload is in, and for how long.

Drawn on standard error, and only when it is a terminal (its isatty(), not FORCE_COLOR:
m8.client.output.on_terminal) and the output is for people (a table): a script's pipe,
JSON or TSV gets nothing extra (rich's live display is not even loaded then), and m8ctl
asks the API no more often than it would anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from m8.client.output import on_terminal

if TYPE_CHECKING:
    from rich.console import Console

Stage = Callable[[str], None]


# What each stage of a pending upload (the API's `stage`, m8.protocol.status) means to a
# person; `{store}` is where it goes. "writing" is the API's: a reactor holds the path for
# it (docs/contracts.md says when that is not quite so).
# A test holds its keys to m8.protocol.status.UPLOAD_STAGES, each named once.
STAGE_TEXTS: dict[str, str] = {
    "accepted": "accepted: recorded, not yet queued",
    "queued": "queued for {store}",
    "waiting": "waiting: another upload to this path is being written first",
    "writing": "writing to {store}",
}


def shows_stages(console: Console, for_people: bool = True) -> bool:
    """Whether a wait is drawn: on a terminal, for output meant for people (a table)."""
    return for_people and on_terminal(console)


@contextmanager
def stages(console: Console, first: str = "", show: bool = True) -> Iterator[Stage]:
    """A function that shows the current stage (a spinner, the stage, the time it took so
    far) on `console` while the block runs, if it is a terminal and `show`; a no-op
    otherwise. The line goes once the block ends: what follows prints the outcome."""
    if not shows_stages(console, show):
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

    A pending view says its `stage`; one without (before the first answer, or from an
    API too old to tell) is queued or being written: the text says either, rather than
    guess.
    """
    status = view.get("status")
    if status == "pending":
        where = store or view.get("store") or "its store"
        text = STAGE_TEXTS.get(str(view.get("stage")))
        if text is None:
            return f"accepted, pending: queued or being written to {where}"
        return text.format(store=where)
    return f"{status}: checking the reactor's receipt"
