"""How m8ctl prints what it lists and shows: tables for people, TSV and JSON for programs.

- `table`: fits the terminal; a long cell is cut short with "…" (fingerprints never are).
- `wide`: every column, nothing cut: lines may be wider than the terminal.
- `tsv`: tab-separated, nothing cut, no colour. A list prints a header line of field names
  (the JSON field names), then a line per item; a single item prints a `field<TAB>value`
  line per field. A tab, newline, carriage return or backslash in a cell is written `\\t`,
  `\\n`, `\\r`, `\\\\`; a list in a cell is comma-separated; an absent value is empty.
- `json`: the API's object, indented: its fields are documented in the README (m8ctl).

An upload's outcome (`secret put`, `upload status`) is a one-item listing in TSV (a header
and one line, whatever the outcome), and in `table` the sentence m8ctl says (m8ctl.py).

Without `-o`, a table on a terminal and TSV when standard output is a pipe or a file, so
that `m8ctl secret list | cut -f2` gets whole paths. rich is loaded for tables only.
"A terminal" is what the stream itself says (`on_terminal`), not rich's idea of one:
FORCE_COLOR or TTY_COMPATIBLE ask for colour, and must not turn a pipe into a table.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


class OutputFormat(StrEnum):
    """The formats of `-o` (its values: table, wide, json, tsv)."""

    TABLE = "table"
    WIDE = "wide"
    JSON = "json"
    TSV = "tsv"


@dataclass(frozen=True)
class Field:
    """One column of a listing, one line of a shown item."""

    name: str  # the JSON field: the TSV header, and where the value is read
    title: str = ""  # the table's header (default: `name`)
    wide: bool = False  # in `wide`, `tsv` and `json` only: too long for a terminal's table
    whole: bool = False  # never cut (fingerprints are compared character by character)

    @property
    def heading(self) -> str:
        return self.title or self.name


class LazyConsole:
    """rich's Console on standard output (or error), made when first used: a `secret put`
    into a pipe prints nothing through rich, and so never loads it. Stands in for the
    Console it makes: what is read or set on it is read or set on that Console."""

    __slots__ = ("_console", "_stderr")

    def __init__(self, stderr: bool = False) -> None:
        object.__setattr__(self, "_stderr", stderr)
        object.__setattr__(self, "_console", None)

    @property
    def file(self) -> Any:
        """The stream it writes to: the Console's once made; before, the one it would
        write to (read at each call, as the Console does)."""
        if self._console is not None:
            return self._console.file
        return sys.stderr if self._stderr else sys.stdout

    def _made(self) -> Console:
        made: Console | None = self._console
        if made is None:
            from rich.console import Console

            made = Console(stderr=self._stderr, emoji=False)
            object.__setattr__(self, "_console", made)
        return made

    def __getattr__(self, name: str) -> Any:
        return getattr(self._made(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._made(), name, value)

    # Special methods are looked up on the type, past __getattr__: rich's live displays
    # (the spinner) enter the console.
    def __enter__(self) -> Console:
        return self._made().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._made().__exit__(*exc)


def on_terminal(console: Console) -> bool:
    """Whether `console` writes to a terminal: its stream's isatty(), whatever the
    environment says about colour (rich's `is_terminal` is True with FORCE_COLOR=1 or
    TTY_COMPATIBLE=1, even on a pipe)."""
    try:
        return bool(console.file.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def choose(output: OutputFormat | None, as_json: bool, terminal: bool) -> OutputFormat:
    """The format asked for; without one, a table on a terminal and TSV elsewhere.

    `--json` is `-o json`; with another `-o` it is a mistake, reported as ValueError.
    """
    if as_json:
        if output not in (None, OutputFormat.JSON):
            raise ValueError(f"--json and -o {output.value} ask for two formats: give one")
        return OutputFormat.JSON
    if output is not None:
        return output
    return OutputFormat.TABLE if terminal else OutputFormat.TSV


def tsv_cell(value: Any) -> str:
    """A value as one TSV cell: escaped, so that every line has the same cells."""
    text = _text(value, booleans=("true", "false"))
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def table_cell(value: Any) -> str:
    """A value as a person reads it in a table."""
    return _text(value, booleans=("yes", "no"))


def _text(value: Any, booleans: tuple[str, str]) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return booleans[0] if value else booleans[1]
    if isinstance(value, Mapping):
        return ",".join(f"{k}={_text(v, booleans)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ",".join(_text(v, booleans) for v in value)
    return str(value)


def tsv_rows(fields: Sequence[Field], items: Sequence[Mapping[str, Any]]) -> str:
    """A header of field names and a line per item, every field (wide ones too)."""
    lines = ["\t".join(f.name for f in fields)]
    lines += ["\t".join(tsv_cell(item.get(f.name)) for f in fields) for item in items]
    return "\n".join(lines) + "\n"


def tsv_fields(fields: Sequence[Field], item: Mapping[str, Any]) -> str:
    """A `field<TAB>value` line per field of one item."""
    return "".join(f"{f.name}\t{tsv_cell(item.get(f.name))}\n" for f in fields)


def json_text(data: Any) -> str:
    """The JSON m8ctl prints: indented, keys in the API's order, UTF-8 as is."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def print_rows(
    console: Console,
    fmt: OutputFormat,
    fields: Sequence[Field],
    items: Sequence[Mapping[str, Any]],
    data: Any,
) -> None:
    """A listing in `fmt`: `items` are its rows, `data` what JSON prints (the API's object)."""
    if fmt is OutputFormat.JSON:
        sys.stdout.write(json_text(data))
    elif fmt is OutputFormat.TSV:
        sys.stdout.write(tsv_rows(fields, items))
    else:
        shown = [f for f in fields if fmt is OutputFormat.WIDE or not f.wide]
        listing = _table(shown, fmt, items)
        for item in items:
            listing.add_row(*(_cell(item.get(f.name)) for f in shown))
        _print_table(console, listing, fmt)


def print_fields(
    console: Console,
    fmt: OutputFormat,
    fields: Sequence[Field],
    item: Mapping[str, Any],
    data: Any = None,
) -> None:
    """One item in `fmt`, a line per field; JSON prints `data` (default: the item)."""
    if fmt is OutputFormat.JSON:
        sys.stdout.write(json_text(item if data is None else data))
    elif fmt is OutputFormat.TSV:
        sys.stdout.write(tsv_fields(fields, item))
    else:
        shown = [f for f in fields if fmt is OutputFormat.WIDE or not f.wide]
        from rich.table import Column, Table

        # One item: a long value folds onto more lines rather than being cut (in `wide`,
        # its line is as long as it needs).
        names, values = Column(style="bold", no_wrap=True), Column(overflow="fold")
        grid = Table.grid(names, values, padding=(0, 2))
        for f in shown:
            grid.add_row(f.heading, _cell(item.get(f.name)))
        _print_table(console, grid, fmt)


def _table(fields: Sequence[Field], fmt: OutputFormat, items: Sequence[Mapping[str, Any]]) -> Table:
    from rich.table import Column, Table

    def whole_width(f: Field) -> int:
        return max([len(f.heading), *(len(table_cell(item.get(f.name))) for item in items)])

    columns = [
        Column(
            f.heading,
            no_wrap=f.whole or fmt is OutputFormat.WIDE,
            # rich narrows a column below its content when the terminal is narrow: not these.
            # Others keep at least their heading's width: a column never vanishes.
            min_width=whole_width(f) if f.whole else min(len(f.heading), 3),
            overflow="ellipsis",
        )
        for f in fields
    ]
    return Table(*columns)


def _cell(value: Any) -> Any:
    # A Text, not a str: a cell's text is never read as rich markup ("[red]" in a path).
    from rich.text import Text

    return Text(table_cell(value))


def _print_table(console: Console, table: Table, fmt: OutputFormat) -> None:
    if fmt is not OutputFormat.WIDE:
        console.print(table)
        return
    from rich.measure import Measurement

    # As wide as the table needs, however narrow the terminal: nothing is cut.
    needed = Measurement.get(console, console.options.update_width(1_000_000), table).maximum
    width = console.width
    console.width = max(needed, width)  # print(width=) would be held to the console's
    try:
        console.print(table, crop=False)
    finally:
        console.width = width
