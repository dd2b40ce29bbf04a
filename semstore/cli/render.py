"""Output helpers: rich tables for people, JSON for programs. Only stdout, never stderr."""

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.table import Table


def console() -> Console:
    """A console on the current stdout (built per call so test runners can capture it)."""
    return Console(soft_wrap=False)


def echo_json(data: Any) -> None:
    """One JSON document on one line."""
    typer.echo(json.dumps(data, ensure_ascii=False, default=_jsonable))


def compact(mapping: Mapping[str, Any] | None) -> str:
    """Metadata as a short ``key=value`` list for table cells."""
    if not mapping:
        return ""
    return ", ".join(f"{key}={json.dumps(value, ensure_ascii=False, default=_jsonable)}" for key, value in mapping.items())


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: Sequence[str] = ()) -> Table:
    """A rich table; ``numeric`` columns are right-aligned, long text folds instead of being cut."""
    result = Table(title=title, title_justify="left")
    for name in columns:
        if name in numeric:
            result.add_column(name, justify="right", no_wrap=True)
        else:
            result.add_column(name, overflow="fold")
    for row in rows:
        result.add_row(*("" if cell is None else str(cell) for cell in row))
    return result


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: Sequence[str] = ()) -> None:
    """Build and print a table (see :func:`table`)."""
    console().print(table(title, columns, rows, numeric=numeric))


def _jsonable(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    return str(value)
