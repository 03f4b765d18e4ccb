"""The command line's first minutes: one-line start-up errors, truthful help, the peers table."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import click
import pytest
import trio
from click.testing import CliRunner, Result
from rich.console import Console

from dmoa_p2p.cli import _common as common
from dmoa_p2p.cli import cli
from dmoa_p2p.cli._common import run_until_signalled, user_errors
from dmoa_p2p.cli._node import load_config, node_overrides
from dmoa_p2p.cli._peers import one_address, peers_table, reachability_line, short_peer_id
from dmoa_p2p.cli._swarm import SwarmTiming, report
from dmoa_p2p.config import DEFAULT_LISTEN, ConfigError, NodeConfig
from dmoa_p2p.overlay import OverlayError
from dmoa_p2p.registry import plugin_names
from dmoa_p2p.swarm import SwarmError, SwarmMember

PEER = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
LOCAL = ["--listen", "/ip4/127.0.0.1/tcp/0"]  # were a test to start a node, not on 4001
needs_llama = pytest.mark.skipif(
    "llama-cpp" not in plugin_names("backend"), reason="the llama-cpp plugin is not installed"
)


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """The CLI configures logging for the process; later tests (caplog) need it as it was."""
    loggers = [logging.getLogger(name) for name in ("dmoa_p2p", "dmoa_p2p.events", "libp2p")]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for logger, handlers, level, propagate in saved:
        logger.handlers, logger.propagate = handlers, propagate
        logger.setLevel(level)


def invoke(args: list[str], **env: str) -> Result:
    """Run `dmoa-p2p ARGS` as `main()` does (environment variables on)."""
    return CliRunner().invoke(
        cli, args, env=env, prog_name="dmoa-p2p", auto_envvar_prefix="DMOA_P2P"
    )


def node(tmp_path: Path, *args: str, **env: str) -> Result:
    return invoke(["node", "--data-dir", str(tmp_path / "data"), *args], **env)


def one_error_line(result: Result, exit_code: int = 1) -> str:
    """The one line a mistake prints on stderr, after checking that it is alone."""
    assert result.exit_code == exit_code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert lines[0].startswith("Error: ")
    return lines[0]


# --- start-up mistakes: one line each, no traceback, exit code != 0 ---


def test_bootstrap_without_a_peer_id_shows_the_expected_form(tmp_path: Path) -> None:
    line = one_error_line(
        node(tmp_path, "--backend", "fake", *LOCAL, "--bootstrap", "/ip4/127.0.0.1/tcp/4001")
    )
    assert "'/ip4/127.0.0.1/tcp/4001' does not end with /p2p/<peer id>" in line
    assert "expected /ip4/HOST/tcp/PORT/p2p/PEER_ID" in line


@pytest.mark.parametrize(
    ("option", "typo", "meant"),
    [
        ("--backend", "llamacpp", "llama-cpp"),
        ("--backend", "fak", "fake"),
        ("--gossip", "pubsu", "pubsub"),
        ("--admission", "thresold", "threshold"),
    ],
)
def test_a_mistyped_plugin_name_suggests_the_installed_one(
    tmp_path: Path, option: str, typo: str, meant: str
) -> None:
    backend = [] if option == "--backend" else ["--backend", "fake"]
    line = one_error_line(node(tmp_path, *backend, *LOCAL, option, typo))
    assert f"named {typo!r} (did you mean {meant!r}?); available: " in line


def test_a_strategy_option_for_a_strategy_not_installed(tmp_path: Path) -> None:
    args = ["--backend", "fake", *LOCAL, "--strategy-option", "augmentd:x=1"]
    line = one_error_line(node(tmp_path, *args))
    assert "no strategy plugin named 'augmentd' (did you mean 'augmented'?)" in line


def test_an_environment_variable_sets_the_option(tmp_path: Path) -> None:
    line = one_error_line(node(tmp_path, *LOCAL, DMOA_P2P_NODE_BACKEND="llamacpp"))
    assert "(did you mean 'llama-cpp'?)" in line


def test_a_mistyped_backend_option(tmp_path: Path) -> None:
    line = one_error_line(node(tmp_path, "--backend", "fake", *LOCAL, "-o", "modle=x"))
    assert "has no option 'modle' (did you mean 'model'?)" in line


@needs_llama
def test_a_missing_model_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    line = one_error_line(node(tmp_path, *LOCAL, "-o", f"model={missing}"))
    assert str(missing) in line and "not found" in line


@needs_llama
def test_a_model_file_that_is_not_gguf(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_text("not a model")
    line = one_error_line(node(tmp_path, *LOCAL, "-o", f"model={model}"))
    assert "is not a GGUF model file" in line


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--listen", "localhost:4001"], "'localhost:4001' is not a multiaddr (e.g. /ip4/"),
        (["--http", "0.0.0.0:8080"], "set an API key (--api-key or DMOA_P2P_API_KEY)"),
        (["--http", "localhost:port"], "is not HOST:PORT"),
    ],
)
def test_bad_settings_are_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    assert says in one_error_line(node(tmp_path, "--backend", "fake", *args))


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--bakend", "fake"], "No such option '--bakend'"),
        (["--presence-interval", "0"], "'--presence-interval': 0.0 is not in the range"),
        (["--queue-capacity", "many"], "'many' is not a valid integer"),
        (["-o", "model"], "--backend-option: 'model' is not KEY=VALUE"),
        (["--gossip-option", "=1"], "--gossip-option: '=1' is not KEY=VALUE"),
        (["--strategy-option", "x=1"], "--strategy-option: 'x=1' is not NAME:KEY=VALUE"),
    ],
)
def test_usage_mistakes_are_one_line_too(tmp_path: Path, args: list[str], says: str) -> None:
    line = one_error_line(node(tmp_path, *args), exit_code=2)
    assert says in line


def test_a_usage_mistake_says_where_help_is(tmp_path: Path) -> None:
    line = one_error_line(node(tmp_path, "--bakend", "fake"), exit_code=2)
    assert line.endswith("(see 'dmoa-p2p node --help')")


def test_a_config_file_with_a_flag_spelling(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('backend = "fake"\nqueue-capacity = 8\n')
    line = one_error_line(node(tmp_path, "--config", str(config)))
    assert f"config {config}: unknown key 'queue-capacity' (did you mean 'queue_capacity'?)" in line


def test_a_config_file_that_is_missing_or_not_toml(tmp_path: Path) -> None:
    line = one_error_line(node(tmp_path, "--config", str(tmp_path / "nope.toml")))
    assert "cannot read config" in line
    broken = tmp_path / "broken.toml"
    broken.write_text("backend = \n")
    assert "is not valid TOML" in one_error_line(node(tmp_path, "--config", str(broken)))


def test_with_vv_the_traceback_comes_first(tmp_path: Path) -> None:
    args = ["-vv", "node", "--data-dir", str(tmp_path), "--backend", "fake"]
    result = invoke([*args, "--bootstrap", "/ip4/127.0.0.1/tcp/4001"])
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("Error: bad node configuration: bootstrap")


# --- the error path itself: exception groups, as trio's nurseries make them ---


class _Stop(click.ClickException):
    pass


def _raise(exc: BaseException) -> None:
    with user_errors():
        raise exc


def test_a_user_error_deep_in_exception_groups_is_one_line() -> None:
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [OverlayError("port 4001 in use")])])
    with pytest.raises(click.ClickException, match=r"^port 4001 in use$"):
        _raise(group)


def test_cancelled_leaves_are_ignored_and_messages_joined() -> None:
    async def fails() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            raise ConfigError("first\nproblem")

    with pytest.raises(click.ClickException, match=r"^first problem$"), user_errors():
        trio.run(fails)
    group = ExceptionGroup("two", [ConfigError("a"), OverlayError("b"), ConfigError("a")])
    with pytest.raises(click.ClickException, match=r"^a; b$"):
        _raise(group)


def test_a_command_error_raised_inside_the_trio_run_is_one_line() -> None:
    async def main(nursery: trio.Nursery) -> None:
        nursery.start_soon(trio.sleep_forever)
        raise SwarmError("peer views did not converge within 1 s")

    with pytest.raises(click.ClickException, match=r"^peer views did not converge within 1 s$"):
        run_until_signalled(main, also=(SwarmError,))


def test_a_bug_keeps_its_traceback() -> None:
    with pytest.raises(ExceptionGroup):
        _raise(ExceptionGroup("mixed", [ConfigError("fine"), KeyError("bug")]))
    with pytest.raises(KeyError):
        _raise(KeyError("bug"))


def test_a_click_exception_inside_a_group_passes_as_itself() -> None:
    with pytest.raises(_Stop, match="stop"):
        _raise(ExceptionGroup("g", [_Stop("stop")]))


# --- help that tells the truth ---


def _help(*command: str) -> str:
    result = invoke([*command, "--help"])
    assert result.exit_code == 0, result.output
    return " ".join(result.stdout.split())  # help wraps lines; compare the words


def test_node_help_shows_the_real_defaults_and_environment() -> None:
    text = _help("node")
    defaults = NodeConfig(data_dir=Path("d"))
    assert f"[default: {defaults.backend}]" in text and defaults.backend == "llama-cpp"
    for shown in (
        DEFAULT_LISTEN,
        f"default: {defaults.presence_interval_s}",
        f"default: {defaults.queue_capacity}",
        f"default: {defaults.gossip}",
        f"default: {defaults.admission}",
    ):
        assert shown in text
    envvars = re.findall(r"DMOA_P2P_[A-Z_]+", text)
    assert {"DMOA_P2P_DATA_DIR", "DMOA_P2P_API_KEY", "DMOA_P2P_NODE_BACKEND"} <= set(envvars)
    assert {"DMOA_P2P_NODE_CONFIG", "DMOA_P2P_NODE_HTTP", "DMOA_P2P_NODE_LISTEN"} <= set(envvars)
    assert "view_size" in text and "examples/node.toml" in text


def test_every_option_of_node_is_documented_with_its_env_var() -> None:
    command = cli.commands["node"]
    for param in command.params:
        if isinstance(param, click.Option) and param.name not in ("help", "as_json"):
            assert param.show_envvar, param.name


def test_backend_defaults_per_command() -> None:
    assert "[default: llama-cpp]" in _help("swarm")
    assert "[default: fake]" in _help("bench", "moa")


def test_no_other_command_claims_the_fake_backend_default() -> None:
    for command in (("ask",), ("swarm",), ("simulate",), ("stability",), ("peers",)):
        assert "[default: fake]" not in _help(*command)
    assert "default: 0.2 … 2" in _help("simulate")


def test_version_and_log_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    version = invoke(["--version"])
    assert version.exit_code == 0 and re.match(r"dmoa-p2p, version \d", version.stdout)
    calls: list[tuple[int, Path | None]] = []
    monkeypatch.setattr(common, "configure_logging", lambda v, f=None: calls.append((v, f)))
    log = tmp_path / "node.log"
    assert invoke(["-v", "--log-file", str(log), "plugins", "--json"]).exit_code == 0
    assert invoke(["plugins", "--json"], DMOA_P2P_LOG_FILE=str(log)).exit_code == 0
    assert calls == [(1, log), (0, log)]
    assert "--log-file" in _help()


def test_a_log_file_that_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    line = one_error_line(invoke(["--log-file", str(tmp_path / "file" / "x.log"), "plugins"]))
    assert "cannot write the log file" in line


# --- the peers table ---


def _status(peers: int) -> dict[str, Any]:
    def addrs(i: int) -> list[str]:
        return [f"/ip4/127.0.0.1/tcp/{40000 + i}/p2p/{PEER}", f"/ip4/192.168.10.{i}/tcp/40001"]

    return {
        "peer_id": PEER,
        "listen_addrs": addrs(0),
        "plugins": {"model": "SmolLM2-135M-Instruct-Q4_1-with-a-long-name.gguf"},
        "queue": {"length": 3, "capacity": 64, "mean_service_s": 1.25, "arrival_rate": 0.5},
        "peers": [
            {
                "peer_id": PEER[:-4] + f"{i:04d}",
                "listen_addrs": addrs(i),
                "models": ["qwen2.5-7b-instruct-q4_k_m-with-a-long-name.gguf"],
                "queue_length": 12,
                "queue_capacity": 1000,
                "mean_service_s": 12.345,
                "arrival_rate": None,
                "last_seen_s": 123.456,
            }
            for i in range(1, peers + 1)
        ],
    }


def test_the_peers_table_fits_80_columns_and_lists_the_node_first() -> None:
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(peers_table(_status(3)))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    rows = [line for line in lines if line.startswith("12D3KooW…")]
    assert len(rows) == 4  # one line per node: nothing wrapped
    assert rows[0].startswith(short_peer_id(PEER)) and rows[0].rstrip().endswith("self")
    assert rows[1].startswith(short_peer_id(PEER[:-4] + "0001"))
    assert "192.168.10.1:40001 +1" in rows[1] and "123s" in rows[1] and "12/1000" in rows[1]


def test_peer_ids_and_addresses_are_shortened() -> None:
    assert short_peer_id(PEER) == "12D3KooW…e2Xo"
    assert short_peer_id("short") == "short"
    assert one_address([f"/ip4/127.0.0.1/tcp/1/p2p/{PEER}"]) == "127.0.0.1:1"
    assert one_address(["/ip6/::1/tcp/2", "/dns4/example.org/tcp/3"]) == "example.org:3 +1"
    assert one_address(["/ip6/fe80::1/tcp/4"]) == "[fe80::1]:4"
    assert one_address(["/memory/7/p2p/x"]) == "/memory/7"
    circuit = f"/ip4/198.51.100.10/tcp/4001/p2p/{PEER}/p2p-circuit/p2p/{PEER}"
    assert one_address([circuit, circuit]) == "via 198.51.100.10:4001 +1"


def test_peers_says_how_the_node_is_reached() -> None:
    relay = f"/ip4/198.51.100.10/tcp/4001/p2p/{PEER}"
    counts = {"confirmed_by": 0, "failed_by": 0}
    public = {"public": True, "relaying": True, "relays": [], "source": "guess", **counts}
    assert reachability_line(public) == (
        "reachable directly (by its addresses; no dial-back check yet), relaying for nodes "
        "behind NAT"
    )
    checked = {**public, "source": "dial-back", "confirmed_by": 3}
    assert reachability_line(checked).startswith("reachable directly (3 peers dialled it back)")
    behind = {**public, "public": False, "relaying": False, "relays": [relay]}
    behind |= {"source": "dial-back", "failed_by": 2}
    assert reachability_line(behind) == (
        "not publicly reachable (2 peers could not dial it back); reached through relay "
        "198.51.100.10:4001"
    )
    told = {**behind, "source": "configured", "relays": []}
    assert reachability_line(told) == (
        "not publicly reachable (as configured), and no relay holds a reservation for it yet"
    )
    assert one_address([]) == "-"


def test_node_config_defaults_are_what_help_reads() -> None:
    fields = attrs.fields_dict(NodeConfig)
    assert common.node_default("backend") == fields["backend"].default == "llama-cpp"


# --- where settings come from ---


def test_options_left_at_their_defaults_do_not_override_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(f'data_dir = "{tmp_path}/mine"\nqueue_capacity = 8\nbackend = "fake"\n')
    assert set(node_overrides({}).values()) == {None}
    loaded = load_config(config, node_overrides({}), "/the/default/data/dir")
    assert loaded.data_dir == tmp_path / "mine" and loaded.queue_capacity == 8
    given = node_overrides({"queue_capacity": 16, "listen": ("/ip4/127.0.0.1/tcp/0",)})
    loaded = load_config(config, given, "/the/default/data/dir")
    assert loaded.queue_capacity == 16 and loaded.listen_addrs == ("/ip4/127.0.0.1/tcp/0",)


def test_no_relay_is_a_setting_given_not_one_left_out(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(f'data_dir = "{tmp_path}/mine"\nbackend = "fake"\n')
    assert load_config(config, node_overrides({}), "/d").relay_service is True
    given = node_overrides({"relay_service": False, "reachability": "private"})
    loaded = load_config(config, given, "/d")
    assert loaded.relay_service is False and loaded.reachability == "private"


# --- swarm ---


def test_swarm_reports_convergence_from_its_start(capsys: pytest.CaptureFixture[str]) -> None:
    members = [
        SwarmMember(i, PEER, (f"/ip4/127.0.0.1/tcp/{i}/p2p/{PEER}",), Path("/s")) for i in (0, 1)
    ]
    report(members, SwarmTiming(up_s=0.94, converged_s=1.96), as_json=False)
    assert "every node joined 2.0 s after the start (all 2 up after 0.9 s)" in (
        " ".join(capsys.readouterr().err.split())
    )


def test_swarms_of_more_than_64_node_processes_are_refused_in_one_line() -> None:
    result = invoke(["swarm", "--nodes", "65", "--backend", "fake"])
    line = one_error_line(result, exit_code=2)
    assert "--in-process" in line and "65 node processes" in line
    assert "256" in invoke(["swarm", "--help"]).output.replace("\n", " ")


def test_a_node_starts_without_the_benchmarks_and_the_simulator() -> None:
    # a fresh interpreter: this one has imported everything the other tests need
    probe = (
        "import sys; from dmoa_p2p.cli import cli; "
        "print(sorted(m for m in ('matplotlib', 'dmoa_p2p.bench', 'dmoa_p2p.simulate') "
        "if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"
    listed = CliRunner().invoke(cli, ["--help"]).output
    assert "bench " in listed and "simulate " in listed
    assert "scale " in CliRunner().invoke(cli, ["bench", "--help"]).output
