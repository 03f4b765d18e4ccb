"""Node configuration: defaults, validation and loading from TOML."""

from __future__ import annotations

import difflib
import ipaddress
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
import cattrs

DEFAULT_LISTEN = "/ip4/0.0.0.0/tcp/4001"
BOOTSTRAP_FORM = "/ip4/HOST/tcp/PORT/p2p/PEER_ID"
CONTROL_SOCKET_NAME = "control.sock"
LOCALHOST_LISTEN = "/ip4/127.0.0.1/tcp/0"


class ConfigError(Exception):
    """A configuration value is missing, of the wrong type or out of range."""


def _between(low: float, high: float) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    """A validator: `low` <= value <= `high`, said in one sentence when not."""

    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not low <= value <= high:
            raise ValueError(f"{attribute.name} must be from {low:g} to {high:g}, got {value!r}")

    return check


REACHABILITIES = ("auto", "public", "private")


def _one_of(names: tuple[str, ...]) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in names:
            raise ValueError(f"{attribute.name}: {value!r} is not one of {', '.join(names)}")

    return check


def _multiaddrs(
    _: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
) -> None:
    for addr in value:
        if not addr.startswith("/"):
            raise ValueError(
                f"{attribute.name}: {addr!r} is not a multiaddr (e.g. {DEFAULT_LISTEN})"
            )


def _bootstrap_addrs(
    _: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
) -> None:
    """Each bootstrap address names the peer it reaches: it ends with /p2p/<peer id>."""
    _multiaddrs(_, attribute, value)
    for addr in value:
        head, sep, peer_id = addr.rpartition("/p2p/")
        if not sep or not peer_id or "/" in peer_id:
            problem = "does not end with /p2p/<peer id>;"
        elif head.strip("/") == "":
            problem = "names no host and port:"
        else:
            continue
        raise ValueError(
            f"{attribute.name}: {addr!r} {problem} expected {BOOTSTRAP_FORM} "
            "(the address a node prints when it starts)"
        )


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _structure_strings(value: Any, _: type) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f'expected a list of strings, e.g. ["{value}"]')
    return tuple(str(item) for item in value)


def _expanded(value: str | Path) -> Path:
    return Path(value).expanduser()


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

    data_dir: Path = attrs.field(converter=_expanded)
    listen_addrs: tuple[str, ...] = attrs.field(
        default=(DEFAULT_LISTEN,), converter=_strings, validator=_multiaddrs
    )
    bootstrap: tuple[str, ...] = attrs.field(
        default=(), converter=_strings, validator=_bootstrap_addrs
    )
    # how often the node checks on its peers: reports joins and losses, remembers peers
    presence_interval_s: float = attrs.field(default=2.0, validator=_between(0.1, 60.0))
    # dial peers named by signed records until this many connections are open
    max_dialed_peers: int = attrs.field(default=16, validator=attrs.validators.ge(0))
    # peer sampling: records in the partial view (proposers are drawn from it), and the
    # connected neighbours it shuffles with; neither grows with the swarm
    view_size: int = attrs.field(default=20, validator=_between(1, 256))
    neighbours: int = attrs.field(default=6, validator=_between(1, 64))
    # a publicly reachable node relays (circuit relay v2) for nodes behind NAT unless False
    relay_service: bool = True
    # "auto": public unless every listen address is private (RFC 1918, CGNAT, loopback);
    # a node that is not public reaches others, and is reached, through relays
    reachability: str = attrs.field(default="auto", validator=_one_of(REACHABILITIES))
    # advertise the node on the local network (mDNS) and dial the dmoa-p2p nodes heard there
    mdns: bool = True
    # hold each peer to its fair share of this node's model (μ/n tasks/s): off only in a
    # swarm whose every node is its user's own, where one origin may use every idle model
    fair_share: bool = True
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
        default=None, converter=attrs.converters.optional(_expanded)
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
        """A NodeConfig from plain values (TOML's, or the CLI's); ConfigError in one line."""
        check_keys(values)
        try:
            return _converter.structure(values, cls)
        except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
            raise ConfigError(f"bad node configuration: {_explain(exc)}") from exc

    @classmethod
    def from_toml(
        cls, path: Path, *, defaults: dict[str, Any] | None = None, **overrides: Any
    ) -> NodeConfig:
        """The file's settings over `defaults`, under `overrides` (those not None): the
        command line's. A table such as backend_options merges key by key."""
        try:
            values = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config {path} is not valid TOML: {exc}") from exc
        try:
            check_keys(values)
        except ConfigError as exc:
            raise ConfigError(f"config {path}: {exc}") from exc
        given = {k: v for k, v in overrides.items() if v is not None}
        # a bad value may be the file's or an option's: the message names the key
        return cls.from_mapping(_merged(_merged(defaults or {}, values), given))


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`; where both hold a table, its keys merge the same way."""
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        if isinstance(below, dict) and isinstance(value, dict):
            merged[key] = _merged(below, value)
        else:
            merged[key] = value
    return merged


# what users write for a key when they think of the command-line flag
FLAG_SPELLINGS = {
    "listen": "listen_addrs",
    "presence_interval": "presence_interval_s",
    "backend_option": "backend_options",
    "gossip_option": "gossip_options",
    "admission_option": "admission_options",
    "strategy_option": "strategy_options",
    "aggregator_option": "aggregator_options",
    "api_key": "http_api_key",
}


def config_keys() -> list[str]:
    """Every key a node configuration (TOML file) may hold: NodeConfig's fields."""
    return [field.name for field in attrs.fields(NodeConfig)]


def check_keys(values: dict[str, Any]) -> None:
    """ConfigError naming the first unknown key and the closest known one."""
    known = config_keys()
    for key in (k for k in values if k not in known):
        hint = suggest_key(key, known)
        said = f" (did you mean {hint!r}?)" if hint else f"; keys are: {', '.join(known)}"
        raise ConfigError(f"unknown key {key!r}{said}")


def suggest_key(key: str, known: list[str]) -> str | None:
    """The known key `key` most likely means: its flag spelling's key, or the closest name."""
    snake = key.strip().lstrip("-").replace("-", "_").lower()
    if snake in known:
        return snake
    if snake in FLAG_SPELLINGS:
        return FLAG_SPELLINGS[snake]
    close = difflib.get_close_matches(snake, known, n=1, cutoff=0.6)
    return close[0] if close else None


def control_socket_path(data_dir: Path) -> Path:
    """Where the node whose data directory is `data_dir` answers local commands."""
    return data_dir / CONTROL_SOCKET_NAME


def _explain(exc: BaseException) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        problems = cattrs.transform_error(exc, path="config", format_exception=describe_error)
        return "; ".join(_field_first(problem) for problem in problems)
    return str(exc)


def _field_first(problem: str) -> str:
    """`data_dir: required field missing` rather than cattrs' `... @ config.data_dir`."""
    message, _, path = problem.rpartition(" @ ")
    field = path.removeprefix("config").lstrip(".")
    if not field or message.startswith(field.split(".")[0] + ":"):
        return message or problem
    return f"{field}: {message}"


def describe_error(exc: BaseException, type_: type | None) -> str:
    """A field error for people: attrs validators carry the useful sentence."""
    if type_ in (int, float) and isinstance(exc, ValueError) and ": " in str(exc):
        wanted = "an integer" if type_ is int else "a number"
        return f"expected {wanted}, got {str(exc).rsplit(': ', 1)[-1]}"
    if type(exc) in (ValueError, ConfigError):
        return str(exc)
    return cattrs.v.format_exception(exc, type_)


_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_structure_hook(Path, lambda value, _: _expanded(value))
_converter.register_structure_hook_func(lambda t: t == tuple[str, ...], _structure_strings)
