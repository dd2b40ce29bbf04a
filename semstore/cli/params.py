"""Options shared by several commands, ``key=value`` parsing, and settings/database set-up.

Every command builds ONE :class:`~semstore.config.Settings` from its options (which override
the ``SEMSTORE_*`` environment) and hands it to :func:`semstore.connect`.
"""

import json
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from semstore.cli.errors import CliError

if TYPE_CHECKING:
    from semstore.config import Settings
    from semstore.database import Database

_CONNECTION = "Database"
_MODEL = "Model"

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="SEMSTORE_DATABASE_URL",
        show_envvar=True,
        help="SQLAlchemy database URL, e.g. sqlite:///photos.db or postgresql://user@host/db "
        "(default: a SQLite file in the data directory).",
        rich_help_panel=_CONNECTION,
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="SEMSTORE_DATA_DIR",
        show_envvar=True,
        help="Where the default database and saved indexes live.",
        rich_help_panel=_CONNECTION,
    ),
]
CollectionOption = Annotated[
    str,
    typer.Option("--collection", "-c", envvar="SEMSTORE_COLLECTION", show_envvar=True, help="Collection name."),
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        envvar="SEMSTORE_MODEL",
        show_envvar=True,
        help="open_clip model for a new collection (default: from settings).",
        rich_help_panel=_MODEL,
    ),
]
PretrainedOption = Annotated[
    str | None,
    typer.Option(
        "--pretrained",
        envvar="SEMSTORE_PRETRAINED",
        show_envvar=True,
        help="open_clip pretrained tag or local checkpoint path for a new collection.",
        rich_help_panel=_MODEL,
    ),
]
CodecOption = Annotated[
    Path | None,
    typer.Option(
        "--codec",
        help="A codec file (from `semstore train-codec`) to use for a new collection instead of training one.",
        rich_help_panel=_MODEL,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]

DEFAULT_COLLECTION = "default"


def build_settings(
    *,
    db: str | None = None,
    data_dir: Path | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    **overrides: Any,
) -> "Settings":
    """Settings from the environment, overridden by every option that was given (not None)."""
    from semstore.config import get_settings

    given = {"database_url": db, "data_dir": data_dir, "model": model, "pretrained": pretrained, **overrides}
    return get_settings(**{key: value for key, value in given.items() if value is not None})


@contextmanager
def open_database(settings: "Settings", *, create: bool = True) -> Iterator["Database"]:
    """Connect (migrating the database if needed; creating it only with ``create``, as the
    commands that write do: a mistyped path must not leave an empty database); closed on exit."""
    import semstore

    database = semstore.connect(settings.resolved_database_url(), settings=settings, create=create)
    try:
        yield database
    finally:
        database.close()


def parse_value(text: str) -> str | int | float | bool:
    """A metadata value from the command line: int, float, true/false, else the string.

    Quote a value (``key='"42"'``) to keep it a string.
    """
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    # "nan"/"inf" would be legal floats but useless metadata: keep them as text.
    return number if math.isfinite(number) else text


def parse_pairs(pairs: Sequence[str] | None, option: str) -> dict[str, str | int | float | bool]:
    """``["k=v", ...]`` to a dict with typed values; raises :class:`CliError` on bad syntax."""
    result: dict[str, str | int | float | bool] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CliError(f"{option} expects KEY=VALUE, got {pair!r}")
        result[key] = parse_value(value.strip())
    return result


_COMPARISON = re.compile(r"^(?P<key>.+?)\s*(?P<op>!=|>=|<=|=|>|<)\s*(?P<value>.*)$", re.DOTALL)
_OPERATOR_OF = {"=": "$eq", "!=": "$ne", ">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte"}


def parse_where(pairs: Sequence[str] | None, filter_json: str | None = None) -> dict[str, Any]:
    """``--where`` comparisons (``KEY=V``, ``KEY!=V``, ``KEY>=V``, ``KEY<V``, ...; the same key
    twice: both must hold) and a ``--filter`` JSON object, merged into one filter (checked by
    the library); raises :class:`CliError` on bad syntax."""
    where: dict[str, Any] = {}
    if filter_json:
        try:
            parsed = json.loads(filter_json)
        except json.JSONDecodeError as exc:
            raise CliError(f"--filter is not valid JSON: {exc.msg} (at character {exc.pos})") from None
        if not isinstance(parsed, dict):
            raise CliError('--filter must be a JSON object, e.g. \'{"year": {"$gte": 2020}}\'')
        where.update(parsed)
    for pair in pairs or ():
        found = _COMPARISON.match(pair)
        if found is None or not found["key"].strip():
            raise CliError(f"--where expects KEY=VALUE (or KEY!=, >, >=, <, <= VALUE), got {pair!r}")
        key, op, value = found["key"].strip(), _OPERATOR_OF[found["op"]], parse_value(found["value"].strip())
        current = where.get(key)
        if current is None and op == "$eq":
            where[key] = value
            continue
        operators = dict(current) if isinstance(current, dict) else ({} if current is None else {"$eq": current})
        if op in operators:
            raise CliError(f"--where gives {key!r} {op} twice")
        operators[op] = value
        where[key] = operators
    return where


def photo_filters(
    where: dict[str, Any], *, taken_after: str | None, taken_before: str | None, near: str | None, camera: str | None
) -> dict[str, Any]:
    """``where`` with the EXIF options added: ``--taken-after`` (inclusive) / ``--taken-before``
    (exclusive) local dates, ``--near LAT,LON,KM`` and ``--camera MODEL``."""
    combined = dict(where)
    taken: dict[str, Any] = {}
    if taken_after:
        taken["$gte"] = taken_after
    if taken_before:
        taken["$lt"] = taken_before
    if taken:
        combined["exif.taken_at"] = taken
    if near:
        parts = [part.strip() for part in near.split(",")]
        try:
            lat, lon, km = (float(part) for part in parts)
        except ValueError:
            raise CliError(f"--near expects LAT,LON,KM (three numbers), got {near!r}") from None
        combined["exif.location"] = {"$near": [lat, lon, km]}
    if camera:
        combined["exif.model"] = camera
    return combined
