"""A backend by plugin name and `-o KEY=VALUE` options, loaded."""

from __future__ import annotations

from collections.abc import Mapping

from dmoa_p2p.backends._protocol import Backend, BackendPlugin
from dmoa_p2p.registry import create_plugin


def load_backend(name: str, options: Mapping[str, str] | None = None) -> Backend:
    """Build the backend plugin `name` from its options and load its model."""
    plugin: BackendPlugin = create_plugin("backend", name, options)
    return plugin.load()
