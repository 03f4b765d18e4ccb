"""Plugin discovery through entry points, in-process registration, and unknown names."""

from __future__ import annotations

import pytest

from dmoa_p2p.registry import PLUGIN_GROUPS, PluginError, list_plugins, load_plugin, registered


def test_builtins_are_registered_through_entry_points() -> None:
    names = {(p.kind, p.name) for p in list_plugins()}
    for expected in [
        ("strategy", "local"),
        ("strategy", "raw"),
        ("strategy", "augmented"),
        ("strategy", "capacity"),
        ("aggregator", "moa"),
        ("aggregator", "dmoa-paper"),
        ("aggregator", "longest"),
        ("backend", "fake"),
        ("gossip", "direct"),
        ("gossip", "pubsub"),
    ]:
        assert expected in names
    builtin = next(p for p in list_plugins("aggregator") if p.name == "moa")
    assert builtin.distribution == "dmoa-p2p"
    assert builtin.target == "dmoa_p2p.moa.aggregators:MoaAggregator"


def test_unknown_names_list_what_is_available() -> None:
    with pytest.raises(
        PluginError, match=r"no strategy plugin named 'nope'; available: .*augmented"
    ):
        load_plugin("strategy", "nope")
    with pytest.raises(PluginError, match="kinds are: " + ", ".join(PLUGIN_GROUPS)):
        load_plugin("colour", "red")


def test_registered_plugins_are_found_and_always_unregistered() -> None:
    class Echo:
        pass

    with pytest.raises(RuntimeError), registered("aggregator", "echo", Echo):
        assert load_plugin("aggregator", "echo") is Echo
        assert ("aggregator", "echo") in {(p.kind, p.name) for p in list_plugins()}
        raise RuntimeError("the block fails")
    with pytest.raises(PluginError):
        load_plugin("aggregator", "echo")


def test_listing_imports_no_plugin_module() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from dmoa_p2p.registry import list_plugins; list_plugins(); "
        "print(sorted(m for m in sys.modules if m.startswith(('dmoa_p2p.moa', 'libp2p'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_unknown_plugin_name_is_answered_with_the_closest_one() -> None:
    with pytest.raises(PluginError, match=r"named 'augmentd' \(did you mean 'augmented'\?\)"):
        load_plugin("strategy", "augmentd")
    with pytest.raises(PluginError) as info:
        load_plugin("strategy", "zzzzzz")
    assert "did you mean" not in str(info.value) and "available: " in str(info.value)
