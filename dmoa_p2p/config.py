"""Node configuration: defaults, validation and loading from TOML."""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
import cattrs

DEFAULT_LISTEN = "/ip4/0.0.0.0/tcp/4001"
CONTROL_SOCKET_NAME = "control.sock"
LOCALHOST_LISTEN = "/ip4/127.0.0.1/tcp/0"


class ConfigError(Exception):
    """A configuration value is missing, of the wrong type or out of range."""


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _between(low: float, high: float) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    """A validator: `low` <= value <= `high`, said in one sentence when not."""

    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not low <= value <= high:
            raise ValueError(f"{attribute.name} must be from {low:g} to {high:g}, got {value!r}")

    return check


def _multiaddrs(
    _: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
) -> None:
    for addr in value:
        if not addr.startswith("/"):
            raise ValueError(
                f"{attribute.name}: {addr!r} is not a multiaddr (e.g. {DEFAULT_LISTEN})"
            )


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


DEFAULT_HTTP_HOST = "127.0.0.1"


def parse_http_bind(bind: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [HOST]:PORT), or PORT alone on 127.0.0.1; ConfigError if neither."""
    host, sep, port = bind.rpartition(":")
    if not sep:
        host, sep = DEFAULT_HTTP_HOST, ":"
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"http: {bind!r} is not HOST:PORT (e.g. 127.0.0.1:8080; port 0 picks a free one)"
        )
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@attrs.frozen
class NodeConfig:
    """Everything a node needs to start; the CLI and tests build one of these."""

    data_dir: Path = attrs.field(converter=Path)
    listen_addrs: tuple[str, ...] = attrs.field(
        default=(DEFAULT_LISTEN,), converter=_strings, validator=_multiaddrs
    )
    bootstrap: tuple[str, ...] = attrs.field(default=(), converter=_strings, validator=_multiaddrs)
    # within what peers accept (wire.limits.MIN_INTERVAL_S..MAX_INTERVAL_S)
    presence_interval_s: float = attrs.field(default=2.0, validator=_between(0.1, 60.0))
    # a peer is dropped from the view after this many presence periods without news
    missed_presence_limit: float = attrs.field(default=3.0, validator=_positive)
    # dial peers learnt from presence until this many connections are open
    max_dialed_peers: int = attrs.field(default=16, validator=attrs.validators.ge(0))
    # llama.cpp with the embedded SmolLM2 model (plugins/dmoa-p2p-llama-cpp)
    backend: str = "llama-cpp"
    # plugin-specific settings, e.g. {"model": "/path/to/model.gguf", "n_threads": "1"}
    backend_options: dict[str, str] = attrs.field(factory=dict)
    gossip: str = "direct"
    gossip_options: dict[str, str] = attrs.field(factory=dict)
    admission: str = "none"
    # the admission policy's fields, e.g. {"rho_max": "0.9"} or {"cap": "32"}
    admission_options: dict[str, str] = attrs.field(factory=dict)
    # strategies' and aggregators' options by plugin name, e.g. {"first-peers": {"offset": "1"}}
    strategy_options: dict[str, dict[str, str]] = attrs.field(factory=dict)
    aggregator_options: dict[str, dict[str, str]] = attrs.field(factory=dict)
    queue_capacity: int = attrs.field(default=64, validator=_between(1, 10**6))
    control_socket: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(Path)
    )
    # the OpenAI-compatible HTTP API, "HOST:PORT" or "PORT" (on 127.0.0.1); None: off
    http: str | None = None
    # Bearer key the HTTP API requires; mandatory when it binds beyond the loopback interface
    http_api_key: str | None = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.http is None:
            return
        host, _port = parse_http_bind(self.http)
        if not is_loopback(host) and not self.http_api_key:
            raise ConfigError(
                f"http: binding to {host} exposes the API beyond this machine; set an API key "
                "(--api-key or DMOA_P2P_API_KEY) or bind to 127.0.0.1"
            )

    @property
    def control_path(self) -> Path:
        return self.control_socket or control_socket_path(self.data_dir)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> NodeConfig:
        try:
            return _converter.structure(values, cls)
        except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
            raise ConfigError(f"bad node configuration: {_explain(exc)}") from exc

    @classmethod
    def from_toml(cls, path: Path, **overrides: Any) -> NodeConfig:
        try:
            values = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config {path} is not valid TOML: {exc}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(values)


def control_socket_path(data_dir: Path) -> Path:
    """Where the node whose data directory is `data_dir` answers local commands."""
    return data_dir / CONTROL_SOCKET_NAME


def _explain(exc: BaseException) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        problems = cattrs.transform_error(exc, path="config", format_exception=describe_error)
        return "; ".join(problems)
    return str(exc)


def describe_error(exc: BaseException, type_: type | None) -> str:
    """A field error for people: attrs validators carry the useful sentence."""
    if type(exc) in (ValueError, ConfigError):
        return str(exc)
    return cattrs.v.format_exception(exc, type_)


_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_structure_hook(Path, lambda value, _: Path(value))
