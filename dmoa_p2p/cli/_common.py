"""Shared pieces of the command line: the root group, common options, output and errors."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
import trio
from rich.console import Console

from dmoa_p2p.backends import BackendError
from dmoa_p2p.config import ConfigError
from dmoa_p2p.control import ControlError
from dmoa_p2p.exceptions import single_leaf
from dmoa_p2p.identity import IdentityError
from dmoa_p2p.logs import configure_logging
from dmoa_p2p.overlay import OverlayError
from dmoa_p2p.registry import PluginError

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

console = Console()
# errors a user can fix; anything else is a bug and keeps its traceback
USER_ERRORS: tuple[type[Exception], ...] = (
    BackendError,
    ConfigError,
    ControlError,
    IdentityError,
    OverlayError,
    PluginError,
)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dmoa-p2p"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v: info, -vv: debug).")
@click.version_option(package_name="dmoa-p2p")
def cli(verbose: int) -> None:
    """Run a distributed Mixture-of-Agents of local LLMs over a peer-to-peer network."""
    configure_logging(verbose)


def data_dir_option(func: F) -> F:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=default_data_dir,
        show_default="$XDG_DATA_HOME/dmoa-p2p",
        envvar="DMOA_P2P_DATA_DIR",
        help="Where the node keeps its key and control socket.",
    )(func)


def backend_options(func: F) -> F:
    func = click.option(
        "--backend-option",
        "-o",
        multiple=True,
        metavar="KEY=VALUE",
        help="A backend setting, e.g. -o model=/path/model.gguf -o n_threads=1 (repeatable).",
    )(func)
    return click.option(
        "--backend", help="LLM backend plugin (see `dmoa-p2p plugins`). [default: fake]"
    )(func)


def parse_backend_options(pairs: tuple[str, ...]) -> dict[str, str]:
    """KEY=VALUE pairs (plugin options) as a dict."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE")
        options[key.strip()] = value.strip()
    return options


def parse_named_options(pairs: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """NAME:KEY=VALUE pairs (options of the plugin NAME) as {NAME: {KEY: VALUE}}."""
    options: dict[str, dict[str, str]] = {}
    for pair in pairs:
        name, sep, setting = pair.partition(":")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME:KEY=VALUE")
        options.setdefault(name.strip(), {}).update(parse_backend_options((setting,)))
    return options


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


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


@contextlib.contextmanager
def user_errors(also: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Turn errors a user can act on (USER_ERRORS and `also`) into a one-line message and
    exit code 1, also when trio's nurseries wrapped one alone in an exception group."""
    kinds = (*USER_ERRORS, *also)
    try:
        yield
    except kinds as exc:
        raise click.ClickException(str(exc)) from exc
    except BaseExceptionGroup as group:
        error = single_leaf(group, kinds)
        if error is None:
            raise
        raise click.ClickException(str(error)) from error


def run_until_signalled(main: Callable[[trio.Nursery], Awaitable[None]]) -> None:
    """trio.run `main`, cancelling it cleanly on SIGINT or SIGTERM."""

    async def runner() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(stop_on_signal)
                await main(nursery)
                nursery.cancel_scope.cancel()

    with user_errors():
        trio.run(runner)
