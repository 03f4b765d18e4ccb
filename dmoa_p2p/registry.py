"""Plugins by entry point: one group per kind, built-ins registered the same way as others."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import attrs

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


def load_plugin(kind: str, name: str) -> Any:
    """The object a plugin's entry point names (a class or factory)."""
    if (kind, name) in _registered:
        return _registered[kind, name]
    ep = _entry_points(kind).get(name)
    if ep is None:
        available = ", ".join(plugin_names(kind)) or "none installed"
        raise PluginError(f"no {kind} plugin named {name!r}; available: {available}")
    try:
        return _load(ep)
    except Exception as exc:  # a broken third-party plugin must not look like our bug
        raise PluginError(f"{kind} plugin {name!r} ({ep.value}) failed to load: {exc}") from exc


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
