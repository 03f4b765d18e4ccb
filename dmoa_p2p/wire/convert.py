"""A strict cattrs converter between message objects and plain msgpack-ready data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args, get_origin

import cattrs

from dmoa_p2p.wire.messages import Message

StructureHook = Callable[[Any, Any], Any]


def _exactly(expected: type) -> StructureHook:
    # cattrs' defaults call str()/int()/bytes() on anything; a peer must send the right type
    def hook(value: Any, _type: Any) -> Any:
        if type(value) is not expected:
            raise TypeError(f"expected {expected.__name__}, got {type(value).__name__}")
        return value

    return hook


def _structure_float(value: Any, _type: Any) -> float:
    # ints are accepted because some msgpack encoders write 1.0 as 1; bools are not
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    raise TypeError(f"expected float, got {type(value).__name__}")


def _is_tuple(type_: Any) -> bool:
    return get_origin(type_) is tuple


def _tuple_hook(type_: Any, converter: cattrs.Converter) -> StructureHook:
    # msgpack arrays arrive as lists; cattrs would otherwise iterate a str into characters
    args = get_args(type_)
    variadic = len(args) == 2 and args[1] is Ellipsis
    item_types = args[:1] if variadic else args
    item_hooks = [converter.get_structure_hook(t) for t in item_types]

    def hook(value: Any, _type: Any) -> tuple[Any, ...]:
        if type(value) is not list:
            raise TypeError(f"expected an array, got {type(value).__name__}")
        if variadic:
            return tuple(item_hooks[0](v, item_types[0]) for v in value)
        if len(value) != len(item_types):
            raise ValueError(f"expected {len(item_types)} items, got {len(value)}")
        return tuple(h(v, t) for h, v, t in zip(item_hooks, value, item_types, strict=True))

    return hook


def make_strict_converter() -> cattrs.Converter:
    """Wrong types raise, nothing is coerced, and unknown or missing fields are errors."""
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    for exact in (str, int, bool, bytes):
        converter.register_structure_hook(exact, _exactly(exact))
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook_factory(_is_tuple, _tuple_hook)
    return converter


_CONVERTER = make_strict_converter()


def canonical(value: Any) -> Any:
    """Maps with sorted keys and tuples as lists, so equal values always pack to equal bytes."""
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [canonical(item) for item in value]
    return value


def unstructure_body(body: Message) -> dict[str, Any]:
    data = canonical(_CONVERTER.unstructure(body))
    assert isinstance(data, dict)
    return data


def structure_body(data: Any, cls: type[Message]) -> Message:
    """Build a message from untrusted data; raises TypeError or a cattrs validation error."""
    if type(data) is not dict:
        raise TypeError(f"a message body must be a map, not {type(data).__name__}")
    return _CONVERTER.structure(data, cls)
