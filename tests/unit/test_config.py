"""Node configuration: defaults, TOML loading and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmoa_p2p.config import DEFAULT_LISTEN, ConfigError, NodeConfig


def test_defaults_listen_on_all_interfaces(tmp_path: Path) -> None:
    config = NodeConfig(data_dir=tmp_path)
    assert config.listen_addrs == (DEFAULT_LISTEN,)
    assert config.control_path == tmp_path / "control.sock"


def test_from_toml_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('data_dir = "/tmp/a"\npresence_interval_s = 5\nbootstrap = []\n')
    config = NodeConfig.from_toml(path, presence_interval_s=1.5, bootstrap=None)
    assert config.data_dir == Path("/tmp/a")
    assert config.presence_interval_s == 1.5


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"data_dir": "d", "presence_interval_s": -1}, "presence_interval_s must be from 0.1 to"),
        ({"data_dir": "d", "presence_interval_s": 600}, "presence_interval_s must be from 0.1"),
        ({"data_dir": "d", "colour": "blue"}, "extra fields found"),
        ({"data_dir": "d", "listen_addrs": ["localhost:4001"]}, "is not a multiaddr"),
        ({}, "required field missing @ config.data_dir"),
        ({"data_dir": "d", "queue_capacity": 0}, "queue_capacity"),
    ],
)
def test_bad_values_name_the_problem(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NodeConfig.from_mapping(values)


def test_unreadable_or_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        NodeConfig.from_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("data_dir = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        NodeConfig.from_toml(bad)
