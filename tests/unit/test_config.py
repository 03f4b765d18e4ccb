"""Node configuration: defaults, TOML loading and clear errors."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import attrs
import pytest

from dmoa_p2p.config import DEFAULT_LISTEN, ConfigError, NodeConfig, config_keys

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node.toml"


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
        ({"data_dir": "d", "colour": "blue"}, "unknown key 'colour'; keys are: data_dir, "),
        ({"data_dir": "d", "listen_addrs": ["localhost:4001"]}, "is not a multiaddr"),
        ({"data_dir": "d", "listen_addrs": "/ip4/0.0.0.0/tcp/1"}, "expected a list of strings"),
        ({}, "data_dir: required field missing"),
        ({"data_dir": "d", "queue_capacity": 0}, "queue_capacity"),
        ({"data_dir": "d", "queue_capacity": "many"}, "queue_capacity: expected an integer"),
        (
            {"data_dir": "d", "bootstrap": ["/ip4/127.0.0.1/tcp/4001"]},
            "does not end with /p2p/<peer id>; expected /ip4/HOST/tcp/PORT/p2p/PEER_ID",
        ),
        (
            {"data_dir": "d", "bootstrap": ["/p2p/12D3KooWabc"]},
            "'/p2p/12D3KooWabc' names no host and port: expected /ip4/HOST/tcp/PORT/p2p/PEER_ID",
        ),
        ({"data_dir": "d", "bootstrap": ["/ip4/1.2.3.4/tcp/1/p2p/"]}, "does not end with /p2p/"),
        (
            {"data_dir": "d", "reachability": "nat"},
            "reachability: 'nat' is not one of auto, public, private",
        ),
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


def test_a_bootstrap_address_with_its_peer_id_is_accepted() -> None:
    addr = "/ip4/192.168.1.20/tcp/4001/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
    assert NodeConfig.from_mapping({"data_dir": "d", "bootstrap": [addr]}).bootstrap == (addr,)


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("listen", "listen_addrs"),
        ("queue-capacity", "queue_capacity"),
        ("presence-interval", "presence_interval_s"),
        ("presence_intervall_s", "presence_interval_s"),
        ("backend-option", "backend_options"),
        ("api-key", "http_api_key"),
        ("Backend", "backend"),
    ],
)
def test_an_unknown_toml_key_suggests_the_right_one(tmp_path: Path, key: str, meant: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(f'data_dir = "d"\n"{key}" = 1\n')
    message = f"unknown key '{key}' (did you mean '{meant}'?)"
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        NodeConfig.from_toml(path)
    assert str(caught.value).startswith(f"config {path}: ")


def test_command_line_tables_merge_with_the_files(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('data_dir = "d"\n[backend_options]\nmodel = "m.gguf"\nn_threads = "1"\n')
    config = NodeConfig.from_toml(
        path, defaults={"data_dir": "elsewhere"}, backend_options={"n_threads": "4"}
    )
    assert config.backend_options == {"model": "m.gguf", "n_threads": "4"}
    assert config.data_dir == Path("d")  # the file's value wins over the default


def test_data_dir_expands_the_home_directory() -> None:
    config = NodeConfig.from_mapping({"data_dir": "~/dmoa"})
    assert config.data_dir == Path.home() / "dmoa"


def test_the_example_file_loads_and_holds_every_key_at_its_default() -> None:
    config = NodeConfig.from_toml(EXAMPLE)
    assert config == NodeConfig(data_dir=Path("~/.local/share/dmoa-p2p").expanduser())
    written = set(tomllib.loads(EXAMPLE.read_text()))
    # TOML has no null: the keys whose default is None appear commented out, with a value
    commented = set(re.findall(r"^# (\w+) = ", EXAMPLE.read_text(), flags=re.MULTILINE))
    unset = {field.name for field in attrs.fields(NodeConfig) if field.default is None}
    assert written | (commented & unset) == set(config_keys())
    assert unset <= commented and not written & unset
