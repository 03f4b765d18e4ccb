"""Plugins by entry point: one group per kind, built-ins registered the same way as others."""

from __future__ import annotations

import contextlib
import difflib
import functools
from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import attrs
import cattrs

from dmoa_p2p.config import describe_error

PLUGIN_GROUPS: dict[str, str] = {
    "strategy": "dmoa_p2p.strategies",
    "aggregator": "dmoa_p2p.aggregators",
    "backend": "dmoa_p2p.backends",
    "gossip": "dmoa_p2p.gossip",
    "admission": "dmoa_p2p.admission",
}

# in-process registrations, for tests and embedding; they win over entry points
_registered: dict[tuple[str, str], Any] = {}


class PluginError(Exception):
    """A plugin kind or name is unknown, or the plugin failed to import."""


class PluginOptionsError(PluginError):
    """A plugin was given an option it does not have, or a value it cannot take."""


@attrs.frozen
class PluginInfo:
    kind: str
    name: str
    target: str  # "module:attribute", or "(registered)" for in-process plugins
    distribution: str


def _group(kind: str) -> str:
    try:
        return PLUGIN_GROUPS[kind]
    except KeyError:
        raise PluginError(
            f"unknown plugin kind {kind!r}; kinds are: {', '.join(PLUGIN_GROUPS)}"
        ) from None


def _entry_points(kind: str) -> dict[str, EntryPoint]:
    return _installed(_group(kind))


@functools.cache  # scanning installed distributions costs milliseconds; once per process
def _installed(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


@functools.cache  # every query asks for its strategy and aggregator
def _load(ep: EntryPoint) -> Any:
    return ep.load()


def list_plugins(kind: str | None = None) -> list[PluginInfo]:
    """Every installed plugin (of one kind, or all), sorted; imports none of them."""
    infos = []
    for k in [kind] if kind else list(PLUGIN_GROUPS):
        for name, ep in _entry_points(k).items():
            dist = ep.dist.name if ep.dist is not None else "?"
            infos.append(PluginInfo(k, name, ep.value, dist))
        infos += [PluginInfo(k, n, "(registered)", "-") for kk, n in _registered if kk == k]
    return sorted(set(infos), key=lambda i: (i.kind, i.name))


def plugin_names(kind: str) -> list[str]:
    return sorted({info.name for info in list_plugins(kind)})


def unknown_plugin(kind: str, name: str) -> PluginError:
    """The error for a `kind` plugin `name` that is not installed, with the closest name."""
    names = plugin_names(kind)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    available = ", ".join(names) or "none installed"
    return PluginError(f"no {kind} plugin named {name!r}{hint}; available: {available}")


def load_plugin(kind: str, name: str) -> Any:
    """The object a plugin's entry point names (a class or factory)."""
    if (kind, name) in _registered:
        return _registered[kind, name]
    ep = _entry_points(kind).get(name)
    if ep is None:
        raise unknown_plugin(kind, name)
    try:
        return _load(ep)
    except Exception as exc:  # a broken third-party plugin must not look like our bug
        raise PluginError(f"{kind} plugin {name!r} ({ep.value}) failed to load: {exc}") from exc


def create_plugin(kind: str, name: str, options: Mapping[str, str] | None = None) -> Any:
    """The plugin `name` of `kind`, built from its options (`-o KEY=VALUE` strings).

    Every plugin is an attrs class whose fields are its options: values are converted to the
    fields' types and checked by their validators, and an unknown option is an error that
    names the known ones. A plain class takes no options. Backends build their options
    object here; its `load()` opens the model.
    """
    cls = load_plugin(kind, name)
    options = dict(options or {})
    label = f"{kind} {name!r}"
    if not attrs.has(cls):
        if options:
            raise PluginOptionsError(f"{label} takes no options, got: {', '.join(options)}")
        return cls()
    known = [a.alias for a in attrs.fields(cls) if a.init]
    for option in sorted(set(options) - set(known)):
        close = difflib.get_close_matches(option, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listed = ", ".join(known) or "none"
        raise PluginOptionsError(
            f"{label} has no option {option!r}{hint}; its options: {listed}"
        )
    try:
        return _options.structure(options, cls)
    except cattrs.BaseValidationError as exc:
        problems = cattrs.transform_error(exc, "", format_exception=_describe)
        described = "; ".join(_path_first(problem) for problem in problems)
        raise PluginOptionsError(f"bad option for {label}: {described}") from exc
    except (ValueError, TypeError) as exc:
        raise PluginOptionsError(f"bad option for {label}: {exc}") from exc


def _describe(exc: BaseException, type_: type | None) -> str:
    """"n_threads: expected an integer, got 'two'" rather than int()'s own words."""
    if get_origin(type_) is Literal:
        return "expected one of " + ", ".join(map(str, get_args(type_)))
    if isinstance(exc, ValueError) and type_ in (int, float) and ": " in str(exc):
        wanted = "an integer" if type_ is int else "a number"
        return f"expected {wanted}, got {str(exc).rsplit(': ', 1)[-1]}"
    return describe_error(exc, type_)


def _path_first(problem: str) -> str:
    message, _, path = problem.rpartition(" @ ")
    field = path.lstrip("$.")
    return f"{field}: {message}" if field else message


def _to_bool(value: Any, _: type) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{value!r} is not true or false")


_options = cattrs.Converter(forbid_extra_keys=True)
_options.register_structure_hook(bool, _to_bool)
_options.register_structure_hook(Path, lambda value, _: Path(value).expanduser())


@contextlib.contextmanager
def registered(kind: str, name: str, plugin: Any) -> Iterator[None]:
    """Register `plugin` in-process for the block, then unregister it."""
    _group(kind)
    key = (kind, name)
    if key in _registered:
        raise PluginError(f"{kind} plugin {name!r} is registered already")
    _registered[key] = plugin
    try:
        yield
    finally:
        del _registered[key]
