"""Shared pieces of the command line: the root group, common options, output and errors."""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import attrs
import click
import trio
from rich.console import Console

from dmoa_p2p.backends import BackendError
from dmoa_p2p.config import ConfigError, NodeConfig
from dmoa_p2p.control import ControlError
from dmoa_p2p.exceptions import leaves
from dmoa_p2p.identity import IdentityError
from dmoa_p2p.logs import LogFileError, configure_logging
from dmoa_p2p.overlay import OverlayError
from dmoa_p2p.registry import PluginError, plugin_names, unknown_plugin

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

console = Console()
# errors a user can fix; anything else is a bug and keeps its traceback
USER_ERRORS: tuple[type[Exception], ...] = (
    BackendError,
    ConfigError,
    ControlError,
    IdentityError,
    LogFileError,
    OverlayError,
    PluginError,
    # a file or directory the user named (--data-dir, --config, a model): the message says
    # which; other OSErrors (sockets, descriptors) are bugs until shown otherwise
    PermissionError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
)
# a -v count from which errors a user can fix show their traceback too
TRACEBACK_VERBOSITY = 2


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dmoa-p2p"


def node_default(field: str) -> Any:
    """NodeConfig's default for `field`: what help texts show, so that they cannot drift."""
    return attrs.fields_dict(NodeConfig)[field].default


class UsageInOneLine(click.ClickException):
    """A command-line usage mistake, said in one line with where to read more."""

    exit_code = 2


class CommandLine(click.Group):
    """The root group: click's usage errors (a mistyped option, a value out of range) in one
    line, like every other mistake, rather than a usage block and the message below it.

    Commands in `lazy` ("name": "module:attribute") are imported only when named or listed:
    the benchmarks and the simulator bring plotting and numerics, which added 1.8 s of CPU
    to every node's start (a localhost swarm starts dozens).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, str] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, _, attribute = self.lazy[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with _usage_in_one_line():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _usage_in_one_line():
            return super().invoke(ctx)


@contextlib.contextmanager
def _usage_in_one_line() -> Iterator[None]:
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise  # it shows the help, as it should
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        raise UsageInOneLine(one_line(exc.format_message()) + hint) from exc


@click.group(cls=CommandLine, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="More log output (-v: info, -vv: debug and tracebacks of start-up errors).",
)
@click.option(
    "-q", "--quiet", is_flag=True, help="Warnings and errors only, not the node's notices."
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    show_envvar=True,
    help="Also write the log to this file (appended), at the level -v sets.",
)
@click.version_option(package_name="dmoa-p2p")
def cli(verbose: int, quiet: bool, log_file: Path | None) -> None:
    """Run a distributed Mixture-of-Agents of local LLMs over a peer-to-peer network.

    The node's options can also come from the environment (DMOA_P2P_NODE_<OPTION>, e.g.
    DMOA_P2P_NODE_BACKEND=fake; `dmoa-p2p node --help` names them all), --data-dir from
    DMOA_P2P_DATA_DIR and --log-file from DMOA_P2P_LOG_FILE.
    """
    with user_errors():
        configure_logging(-1 if quiet and not verbose else verbose, log_file)


def data_dir_option(func: F) -> F:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=default_data_dir,
        show_default="$XDG_DATA_HOME/dmoa-p2p, else ~/.local/share/dmoa-p2p",
        envvar="DMOA_P2P_DATA_DIR",
        show_envvar=True,
        help="Where the node keeps its key and control socket.",
    )(func)


def backend_options_with_default(default: str) -> Callable[[F], F]:
    """--backend and -o/--backend-option, whose help says the command's default backend."""

    def decorate(func: F) -> F:
        func = click.option(
            "--backend-option",
            "-o",
            multiple=True,
            metavar="KEY=VALUE",
            show_envvar=True,
            help="A backend setting, e.g. -o model=/path/model.gguf -o n_threads=1 "
            "(repeatable). [default: the backend's own]",
        )(func)
        return click.option(
            "--backend",
            show_envvar=True,
            help=f"LLM backend plugin (see `dmoa-p2p plugins`). [default: {default}]",
        )(func)

    return decorate


backend_options = backend_options_with_default(node_default("backend"))


def parse_backend_options(
    pairs: tuple[str, ...], option: str = "--backend-option"
) -> dict[str, str]:
    """KEY=VALUE pairs (plugin options) as a dict."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageInOneLine(f"{option}: {pair!r} is not KEY=VALUE (e.g. {option} key=value)")
        options[key.strip()] = value.strip()
    return options


def parse_named_options(pairs: tuple[str, ...], option: str) -> dict[str, dict[str, str]]:
    """NAME:KEY=VALUE pairs (options of the plugin NAME) as {NAME: {KEY: VALUE}}."""
    options: dict[str, dict[str, str]] = {}
    for pair in pairs:
        name, colon, setting = pair.partition(":")
        key, equals, value = setting.partition("=")
        if not (colon and equals and name.strip() and key.strip()):
            raise UsageInOneLine(
                f"{option}: {pair!r} is not NAME:KEY=VALUE (e.g. {option} name:key=value)"
            )
        options.setdefault(name.strip(), {})[key.strip()] = value.strip()
    return options


def check_plugin_name(kind: str, name: str) -> None:
    """PluginError, with the closest installed name, when no `kind` plugin is called `name`."""
    if name not in plugin_names(kind):
        raise unknown_plugin(kind, name)


def positive_numbers(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> list[float] | None:
    """A click callback: "1,1,4,4" -> [1.0, 1.0, 4.0, 4.0], every value > 0."""
    if value is None:
        return None
    try:
        numbers = [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None
    if not numbers or any(x <= 0 for x in numbers):
        raise click.BadParameter("every value must be > 0")
    return numbers


def mdns_option(func: F) -> F:
    """`dmoa-p2p node --mdns/--no-mdns` (NodeConfig.mdns); set in _node.py's _SETS_FIELD."""
    return click.option(
        "--mdns/--no-mdns",
        "mdns",
        default=True,
        show_default=True,
        show_envvar=True,
        help="Find and join dmoa-p2p nodes on the local network (mDNS), no bootstrap needed.",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


@contextlib.contextmanager
def user_errors(also: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Turn errors a user can act on (USER_ERRORS and `also`) into a one-line message and
    exit code 1, also when trio's nurseries wrapped them in exception groups; with -vv the
    traceback comes first. Anything else is a bug and keeps its traceback."""
    kinds = (*USER_ERRORS, *also)
    caught: tuple[type[BaseException], ...] = (*kinds, BaseExceptionGroup)
    try:
        yield
    except click.ClickException:
        raise
    except caught as exc:
        errors = user_leaves(exc, kinds)
        if errors is None:
            raise
        if verbosity() >= TRACEBACK_VERBOSITY:
            traceback.print_exception(exc, file=sys.stderr)
        if len(errors) == 1 and isinstance(errors[0], click.ClickException):
            raise errors[0] from exc
        messages = dict.fromkeys(describe(error) for error in errors)  # once each, in order
        raise click.ClickException("; ".join(messages)) from exc


def user_leaves(
    exc: BaseException, kinds: tuple[type[Exception], ...]
) -> list[BaseException] | None:
    """The errors inside `exc` (trio.Cancelled aside) when all are a user's to fix, else None."""
    found = [leaf for leaf in leaves(exc) if not isinstance(leaf, trio.Cancelled)]
    allowed = (*kinds, click.ClickException)
    if not found or not all(isinstance(leaf, allowed) for leaf in found):
        return None
    return found


def describe(error: BaseException) -> str:
    """An error's message in one line (its type's name when it has none)."""
    if isinstance(error, click.ClickException):
        return one_line(error.format_message())
    return one_line(str(error)) or type(error).__name__


def one_line(text: str) -> str:
    return " ".join(text.split())


def verbosity() -> int:
    """How many -v the command line was given (0 outside a click command)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return 0
    value = ctx.find_root().params.get("verbose") or 0
    return int(value)


def freeze_startup_heap() -> None:
    """Put what start-up built (imports, the model's objects) beyond the garbage collector.

    A node's process holds about 190,000 objects once started, and a full collection of them
    stops its trio loop for about 0.2 s: every stream it serves then stutters.
    """
    gc.collect()
    gc.freeze()


def run_until_signalled(
    main: Callable[[trio.Nursery], Awaitable[None]], also: tuple[type[Exception], ...] = ()
) -> None:
    """trio.run `main`, cancelling it cleanly on SIGINT or SIGTERM; errors as `user_errors`."""
    with user_errors(also):
        trio.run(until_signalled, main, (signal.SIGINT, signal.SIGTERM))


async def until_signalled(
    main: Callable[[trio.Nursery], Awaitable[None]], signals: tuple[int, ...]
) -> None:
    """Run `main` in a nursery it is given, cancelling it at the first of `signals`."""
    with trio.open_signal_receiver(*signals) as received:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in received:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            await main(nursery)
            nursery.cancel_scope.cancel()
