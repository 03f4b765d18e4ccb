"""attrs validators and converters shared by the envelope and the message kinds."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]

# Counts stay within int64 so every msgpack implementation can read them.
MAX_WIRE_INT = 2**63 - 1


def as_float(value: float) -> float:
    """Turn an int into a float so each value has exactly one wire encoding, hence one signature."""
    if type(value) is int:
        return float(value)
    return value


def as_optional_float(value: float | None) -> float | None:
    return None if value is None else as_float(value)


def _type_name(value: object) -> str:
    return type(value).__name__


def strict_int(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    # bool is an int subclass; a flag must never pass for a count
    if type(value) is not int:
        raise TypeError(f"{attribute.name} must be an int, not {_type_name(value)}")


def int_in(low: int, high: int) -> Validator:
    """An int (not a bool) from `low` to `high`, both included."""
    assert -MAX_WIRE_INT - 1 <= low <= high <= MAX_WIRE_INT

    def check(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
        strict_int(instance, attribute, value)
        if not low <= value <= high:
            raise ValueError(f"{attribute.name} must be in {low}..{high}, not {value}")

    return check


def finite_float(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not float:
        raise TypeError(f"{attribute.name} must be a float, not {_type_name(value)}")
    if not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be finite, not {value}")


def float_in(low: float, high: float, *, low_open: bool = False) -> Validator:
    """A finite float from `low` to `high` included; above `low` only, if `low_open`."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
        finite_float(instance, attribute, value)
        above_low = value > low if low_open else value >= low
        if not above_low or value > high:
            bounds = f"({low:g}, {high:g}]" if low_open else f"[{low:g}, {high:g}]"
            raise ValueError(f"{attribute.name} must be in {bounds}, not {value:g}")

    return check


def optional_float_in(low: float, high: float) -> Validator:
    """None (not measured yet) or a float from `low` to `high`."""
    bounded = float_in(low, high)

    def check(instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
        if value is not None:
            bounded(instance, attribute, value)

    return check


def holds(count_field: str) -> Validator:
    """A capacity at least the value of `count_field`, a field validated before this one."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
        count = getattr(instance, count_field)
        if count > value:
            raise ValueError(f"{count_field} {count} exceeds {attribute.name} {value}")

    return check


def bounded_str(max_len: int, min_len: int = 1) -> Validator:
    """A str of `min_len` (default: non-empty) to `max_len` characters."""

    def check(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, str):
            raise TypeError(f"{attribute.name} must be a str, not {_type_name(value)}")
        if not min_len <= len(value) <= max_len:
            raise ValueError(f"{attribute.name} must have {min_len}..{max_len} characters")

    return check


def one_of(*choices: str) -> Validator:
    def check(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {choices}, not {value!r}")

    return check


def tuple_of(item_type: type, max_items: int) -> Validator:
    """A tuple of at most `max_items` instances of `item_type`."""

    def check(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, tuple):
            raise TypeError(f"{attribute.name} must be a tuple, not {_type_name(value)}")
        if len(value) > max_items:
            raise ValueError(f"{attribute.name} has {len(value)} items, at most {max_items}")
        for i, item in enumerate(value):
            if not isinstance(item, item_type):
                raise TypeError(f"{attribute.name}[{i}] must be a {item_type.__name__}")

    return check


def str_tuple(max_items: int, max_item_len: int) -> Validator:
    """A tuple (not a list, so the message stays hashable) of at most `max_items` short strs."""
    items = tuple_of(str, max_items)

    def check(instance: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
        items(instance, attribute, value)
        for i, item in enumerate(value):
            if not 0 < len(item) <= max_item_len:
                raise ValueError(f"{attribute.name}[{i}] must have 1..{max_item_len} characters")

    return check


def exact_bytes(length: int) -> Validator:
    def check(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if type(value) is not bytes:
            raise TypeError(f"{attribute.name} must be bytes, not {_type_name(value)}")
        if len(value) != length:
            raise ValueError(f"{attribute.name} must have {length} bytes, not {len(value)}")

    return check
