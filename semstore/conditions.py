"""The metadata filter language: what a ``where`` may say, checked and in one normal form.

A filter maps metadata keys to what the key's value must satisfy; every key must hold::

    {"camera": "leica"}                      # equality (the value's type matters)
    {"year": {"$gte": 2020, "$lt": 2024}}    # a range of numbers (or of strings: "2024-05-01")
    {"tag": {"$in": ["cat", "dog"]}}         # one of these values ("$nin": none of them)
    {"camera": {"$ne": "leica"}}             # anything else, the key missing included
    {"rating": {"$exists": True}}            # the key holds a filterable (scalar) value
    {"exif.taken_at": {"$gte": "2024-05-01"}, "exif.model": "X100V"}   # photo facts (EXIF)
    {"exif.location": {"$near": [48.85, 2.35, 10]}}                     # within 10 km

Types follow the equality of stored values: ``"1"``, ``1`` and ``true`` differ, ``1`` equals
``1.0``; a range compares numbers with numbers (booleans are not numbers) and strings with
strings by code point, so ISO 8601 dates in one format and time zone order as dates.
``exif.*`` keys are the photo facts of :mod:`semstore.exif_fields` (typed: a time takes ISO
dates, a model a string, a latitude a number); ``exif.location`` takes ``$near`` (a
great-circle radius in km) or ``$box`` (west > east crosses the antimeridian). Only
scalar members are filterable: a key holding an object, a list or null does not match
``$exists``, and matches ``$ne`` / ``$nin`` as a missing key does.

:func:`check_filter` validates a filter (errors name the key and the operator) and
:func:`conditions_of` turns a checked one into :class:`Condition` tuples, what the SQL
renderer (:mod:`semstore.storage.filters`) and the in-memory columns
(:mod:`semstore.index.metadata_columns`) evaluate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from semstore import exif_fields
from semstore.validation import MAX_KEY_CHARS, MAX_TEXT_CHARS, InvalidTextError, check_text

Scalar = str | int | float | bool

#: Most keys a metadata filter may have unless the caller says otherwise.
MAX_FILTER_KEYS = 32
#: Most values of one ``$in`` / ``$nin`` list.
MAX_IN_VALUES = 1024
#: The operators, and what their operand is.
RANGE_OPERATORS = ("$gt", "$gte", "$lt", "$lte")
OPERATORS = ("$eq", "$ne", *RANGE_OPERATORS, "$in", "$nin", "$exists")
_INT64 = 2**63


class InvalidFilterError(ValueError):
    """A metadata filter (``where``) is malformed: the message names the key and operator."""


@dataclass(frozen=True)
class Condition:
    """One test of one key's value: ``op`` without its ``$``; ``value`` a scalar, a tuple of
    scalars (``in`` / ``nin``) or a bool (``exists``)."""

    op: str
    value: Any


def value_kind(value: Scalar) -> str:
    """``"bool"``, ``"text"`` or ``"number"``: what decides which stored values a value can equal."""
    if isinstance(value, bool):
        return "bool"
    return "text" if isinstance(value, str) else "number"


def check_filter(where: object, *, max_keys: int = MAX_FILTER_KEYS) -> dict[str, Any]:
    """A copy of a metadata filter if it is valid, else raise :class:`InvalidFilterError`.

    Each of at most ``max_keys`` keys maps to a scalar (equality) or to an object of
    operators (see the module docstring); scalars are booleans, 64-bit integers, finite
    floats or strings (checked like metadata).
    """
    if not isinstance(where, Mapping):
        raise InvalidFilterError(f"a metadata filter must be an object, got {type(where).__name__}")
    if len(where) > max_keys:
        raise InvalidFilterError(f"a metadata filter may have at most {max_keys} keys, got {len(where)}")
    checked: dict[str, Any] = {}
    for key, value in where.items():
        try:
            check_text(key, "a filter key", max_chars=MAX_KEY_CHARS, allow_empty=False)
        except InvalidTextError as exc:
            raise InvalidFilterError(str(exc)) from None
        shown = repr(key[:40])
        if key.startswith(exif_fields.PREFIX):
            checked[key] = _check_exif(key, value, shown)
        elif isinstance(value, Mapping):
            checked[key] = _check_operators(value, shown)
        else:
            checked[key] = _check_scalar(value, f"the filter value of {shown}")
    return checked


def _check_exif(key: str, value: object, shown: str) -> Any:
    """An ``exif.*`` key: a known field, with operands of its kind (times as ISO text)."""
    if key == exif_fields.LOCATION:
        return _check_location(value, shown)
    field = exif_fields.FIELDS.get(key)
    if field is None:
        known = ", ".join([*exif_fields.FIELDS, exif_fields.LOCATION])
        raise InvalidFilterError(f"unknown EXIF field {shown} (known: {known})")
    checked = _check_operators(value, shown) if isinstance(value, Mapping) else _check_scalar(value, f"the filter value of {shown}")
    operands = [checked] if not isinstance(checked, Mapping) else [
        item for op, operand in checked.items() if op != "$exists" for item in (operand if isinstance(operand, list) else [operand])
    ]
    kind = field[1]
    for operand in operands:
        if kind == "time":
            if not isinstance(operand, str):
                raise InvalidFilterError(f"{shown} compares with ISO 8601 dates or date-times (e.g. \"2024-05-01\"), got {operand!r}")
            try:
                exif_fields.parse_local_time(operand)
            except ValueError as exc:
                raise InvalidFilterError(f"{shown}: {exc}") from None
        elif value_kind(operand) != kind:
            raise InvalidFilterError(f"{shown} holds {'strings' if kind == 'text' else 'numbers'}, got {operand!r}")
    return checked


def _check_location(value: object, shown: str) -> dict[str, list[float]]:
    if not isinstance(value, Mapping) or len(value) != 1 or next(iter(value)) not in ("$near", "$box"):
        raise InvalidFilterError(f'{shown} takes {{"$near": [lat, lon, km]}} or {{"$box": [south, west, north, east]}}')
    ((op, operand),) = value.items()
    if not isinstance(operand, list | tuple) or len(operand) != (3 if op == "$near" else 4) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in operand
    ):
        wanted = "[lat, lon, km]" if op == "$near" else "[south, west, north, east]"
        raise InvalidFilterError(f"the {op} operand of {shown} must be {wanted} (numbers)")
    numbers = [float(x) for x in operand]
    latitudes, longitudes = (numbers[:1], numbers[1:2]) if op == "$near" else (numbers[0::2], numbers[1::2])
    if not all(-90 <= x <= 90 for x in latitudes) or not all(-180 <= x <= 180 for x in longitudes):
        raise InvalidFilterError(f"the {op} operand of {shown}: latitudes lie in [-90, 90], longitudes in [-180, 180]")
    if op == "$near" and not 0 < numbers[2] <= math.pi * exif_fields.EARTH_RADIUS_KM:
        raise InvalidFilterError(f"the $near radius of {shown} must be positive km (at most half the Earth's circumference)")
    if op == "$box" and numbers[0] > numbers[2]:
        raise InvalidFilterError(f"the $box of {shown}: south must not be north of north")
    return {op: numbers}


def _check_operators(value: Mapping[Any, Any], key: str) -> dict[str, Any]:
    if not value:
        raise InvalidFilterError(f"the filter of {key} is an empty object: give a value or operators such as $gt")
    checked: dict[str, Any] = {}
    range_kinds = set()
    for op, operand in value.items():
        if op not in OPERATORS:
            raise InvalidFilterError(f"unknown filter operator {str(op)[:40]!r} for {key} (known: {', '.join(OPERATORS)})")
        field = f"the {op} operand of {key}"
        if op == "$exists":
            if not isinstance(operand, bool):
                raise InvalidFilterError(f"{field} must be true or false, got {type(operand).__name__}")
            checked[op] = operand
        elif op in ("$in", "$nin"):
            if not isinstance(operand, list | tuple) or not operand:
                raise InvalidFilterError(f"{field} must be a non-empty list of values")
            if len(operand) > MAX_IN_VALUES:
                raise InvalidFilterError(f"{field} has {len(operand)} values; at most {MAX_IN_VALUES} are allowed")
            checked[op] = [_check_scalar(item, field) for item in operand]
        else:
            scalar = _check_scalar(operand, field)
            if op in RANGE_OPERATORS:
                if isinstance(scalar, bool):
                    raise InvalidFilterError(f"{field} must be a number or a string (booleans have no order)")
                range_kinds.add(value_kind(scalar))
            checked[op] = scalar
    if len(range_kinds) > 1:
        raise InvalidFilterError(f"the range of {key} mixes numbers and strings")
    return checked


def _check_scalar(value: object, field: str) -> Scalar:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return check_text(value, field, max_chars=MAX_TEXT_CHARS)
        except InvalidTextError as exc:
            raise InvalidFilterError(str(exc)) from None
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise InvalidFilterError(f"{field} is outside the 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidFilterError(f"{field} must be finite")
        return value
    raise InvalidFilterError(f"{field} must be a string, a number or a boolean, got {type(value).__name__}")


def conditions_of(value: Any) -> tuple[Condition, ...]:
    """The conditions of one key of a checked filter (a scalar is ``eq``; ``exif.location``
    gives ``near`` / ``box`` with a tuple of numbers)."""
    if not isinstance(value, Mapping):
        return (Condition("eq", value),)
    found = []
    for op, operand in value.items():
        name = op[1:]
        found.append(Condition(name, tuple(operand) if name in ("in", "nin", "near", "box") else operand))
    return tuple(found)


def is_equality(where: Mapping[str, Any]) -> bool:
    """Whether every key of a checked filter is a plain equality."""
    return not any(isinstance(value, Mapping) for value in where.values())


def matches(condition: Condition, present: bool, value: Any = None) -> bool:
    """Whether a stored value (``present``: the key holds a scalar ``value``) satisfies the
    condition: the reference semantics the SQL and the in-memory columns follow."""
    op, operand = condition.op, condition.value
    if op == "exists":
        return present == operand
    if op in ("ne", "nin"):
        return not matches(Condition("eq" if op == "ne" else "in", operand), present, value)
    if not present:
        return False
    if op == "eq":
        return value_kind(value) == value_kind(operand) and value == operand
    if op == "in":
        return any(value_kind(value) == value_kind(item) and value == item for item in operand)
    if isinstance(value, bool) or value_kind(value) != value_kind(operand):
        return False
    return {"gt": value > operand, "gte": value >= operand, "lt": value < operand, "lte": value <= operand}[op]
