"""A NAT lab in network namespaces: a bridge as the internet, public hosts, homes behind NAT."""

from __future__ import annotations

import contextlib
import enum
import functools
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import trio

# Every namespace of a lab is named `<prefix>-<host>`, the prefix `dmoalab<owner pid>-<4 hex>`:
# random, so that labs running side by side never collide, and naming its owner, so that a
# later lab can tell a crashed run's leftovers (owner gone) from a running neighbour's lab.
MARK = "dmoalab"
_PREFIX = re.compile(rf"^{MARK}(\d+)-[0-9a-f]{{4}}-")

# The "internet" is 198.51.100.0/24 (RFC 5737, documentation only: routed nowhere real).
INTERNET_HOSTS = {"relay": "198.51.100.10", "pub": "198.51.100.30"}
ROUTERS = {"nat1": "198.51.100.21", "nat2": "198.51.100.22"}
# each router's home network: the router is .1 on it, its one home host .2
HOME_LANS = {"nat1": ("peer1", "10.1.0"), "nat2": ("peer2", "10.2.0")}
BRIDGE_HOST = "inet"  # holds the bridge; no address of its own
HOSTS = (BRIDGE_HOST, *INTERNET_HOSTS, *ROUTERS, *(peer for peer, _ in HOME_LANS.values()))
# interface names inside the lab's namespaces (the kernel allows at most 15 characters)
BRIDGE, WAN, LAN, ETH = "br0", "wan", "lan", "eth0"

COMMAND_TIMEOUT_S = 10.0  # one ip/iptables call takes milliseconds; more means a hung kernel
STOP_GRACE_S = 10.0  # a node stopping on SIGTERM drains and closes within a few seconds


class NatKind(enum.StrEnum):
    """How a home router treats traffic; all are stateful (inbound NEW connections dropped)."""

    # MASQUERADE keeps the source port where it can; unsolicited SYNs to the router are
    # dropped silently: the NAT TCP hole punching works through
    PORT_PRESERVING = "port_preserving"
    # as above, but the router's kernel answers unsolicited SYNs with a reset (no INPUT drop)
    RESET = "reset"
    # MASQUERADE --random-fully: a new random port for every connection (symmetric NAT)
    SYMMETRIC = "symmetric"


class LabError(Exception):
    """The lab could not be built, used or removed; says which command failed and why."""


def _tool(name: str) -> str | None:
    # root's tools live in sbin, which a CI job's PATH may lack
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def command(argv: Sequence[str], timeout_s: float = COMMAND_TIMEOUT_S) -> str:
    """Run one command (ip, iptables) in the root namespace; its stdout, or LabError with its
    stderr."""
    tool = _tool(argv[0]) or argv[0]
    try:
        done = subprocess.run(
            [tool, *argv[1:]], capture_output=True, text=True, timeout=timeout_s, check=True
        )
    except FileNotFoundError as exc:
        raise LabError(f"`{argv[0]}` is not installed (apt-get install iproute2 iptables)") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`{' '.join(argv)}` did not finish within {timeout_s:g} s") from exc
    except subprocess.CalledProcessError as exc:
        raise LabError(
            f"`{' '.join(argv)}` failed (exit {exc.returncode}): {exc.stderr.strip()}"
        ) from exc
    return done.stdout


@functools.cache
def unavailable_reason() -> str | None:
    """Why the lab cannot be built here (None if it can); checked once per test session."""
    if os.geteuid() != 0:
        return "the NAT lab needs root (network namespaces and iptables)"
    for tool in ("ip", "iptables", "conntrack"):
        if _tool(tool) is None:
            return f"the NAT lab needs `{tool}`: apt-get install iproute2 iptables conntrack"
    probe = f"{MARK}{os.getpid()}-0000-probe"
    try:
        command(["ip", "netns", "add", probe])
    except LabError as exc:
        return f"network namespaces are not permitted here: {exc}"
    try:
        command(["ip", "netns", "exec", probe, _tool("iptables") or "iptables", "-t", "nat", "-S"])
    except LabError as exc:
        return f"iptables cannot manage NAT inside a namespace here: {exc}"
    finally:
        command(["ip", "netns", "del", probe])
    return None


def lab_namespaces() -> list[str]:
    """Names of every namespace that belongs to some lab (ours or another run's)."""
    names = (line.split()[0] for line in command(["ip", "netns", "list"]).splitlines() if line)
    return [name for name in names if _PREFIX.match(name)]


def _owner_gone(namespace: str) -> bool:
    match = _PREFIX.match(namespace)
    if match is None:
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process: alive
        return False
    return False


def _remove_namespaces(names: Sequence[str]) -> list[str]:
    """Delete `names`, first killing what still runs inside (only processes lab code started
    run there); the problems met, for one error at the end rather than leaks on the way."""
    problems: list[str] = []
    for name in names:
        with contextlib.suppress(LabError):  # a namespace deleted meanwhile has no pids
            for pid in command(["ip", "netns", "pids", name]).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        try:
            command(["ip", "netns", "del", name])
        except LabError as exc:
            problems.append(str(exc))
    return problems


class NatLab:
    """One built lab: its hosts by name (`relay`, `pub`, `nat1`, `peer1`, `nat2`, `peer2`,
    `inet`), each a network namespace, and the processes started in them."""

    def __init__(self, prefix: str, nat_kinds: Mapping[str, NatKind]) -> None:
        self.prefix = prefix
        self.nat_kinds = dict(nat_kinds)
        self._processes: list[subprocess.Popen[bytes]] = []

    def namespace(self, host: str) -> str:
        """The network namespace of `host`."""
        if host not in HOSTS:
            raise LabError(f"the lab has no host {host!r}; its hosts: {', '.join(HOSTS)}")
        return f"{self.prefix}-{host}"

    @staticmethod
    def ip(host: str) -> str:
        """The address `host` is reached at: on the internet for public hosts and routers (their
        WAN side), on its home network for a home host."""
        for peer, lan in HOME_LANS.values():
            if host == peer:
                return f"{lan}.2"
        addresses = INTERNET_HOSTS | ROUTERS
        if host not in addresses:
            raise LabError(f"{host!r} has no address of its own (it only holds the bridge)")
        return addresses[host]

    def _in(self, host: str, argv: Sequence[str]) -> list[str]:
        program = _tool(argv[0]) or argv[0]
        return [_tool("ip") or "ip", "netns", "exec", self.namespace(host), program, *argv[1:]]

    def run(
        self,
        host: str,
        argv: Sequence[str],
        *,
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` inside `host`'s namespace; its output goes to `log` (appended) or is
        dropped. The lab stops it (SIGTERM, then SIGKILL) when it is torn down."""
        with contextlib.ExitStack() as files:
            out = files.enter_context(log.open("ab")) if log else subprocess.DEVNULL
            process = subprocess.Popen(
                self._in(host, argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
            )
        self._processes.append(process)
        return process

    async def output(self, host: str, argv: Sequence[str], timeout_s: float = 10.0) -> str:
        """Run a short command inside `host`'s namespace and return its stdout; LabError if it
        fails, TooSlowError if it runs longer than `timeout_s` (it is killed then)."""
        with trio.fail_after(timeout_s):
            done = await trio.run_process(
                self._in(host, argv), capture_stdout=True, capture_stderr=True, check=False
            )
        if done.returncode != 0:
            raise LabError(
                f"`{' '.join(argv)}` in {host} failed (exit {done.returncode}): "
                f"{done.stderr.decode(errors='replace').strip()}"
            )
        return done.stdout.decode()

    def firewall(self, host: str) -> None:
        """Drop every new inbound connection to `host` (replies to its own still arrive): a
        public address behind a firewall, which only a real dial-back sees through."""
        rule = ["-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"]
        command(self._in(host, ["iptables", *rule]))

    def stop_processes(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop every process `run` started: SIGTERM, then SIGKILL after `grace_s` in all."""
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in self._processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def build(self) -> None:
        """Create the namespaces, the internet bridge, the home networks and their NAT rules."""
        for host in HOSTS:
            command(["ip", "netns", "add", self.namespace(host)])
            command(["ip", "-n", self.namespace(host), "link", "set", "lo", "up"])
        inet = self.namespace(BRIDGE_HOST)
        command(["ip", "-n", inet, "link", "add", BRIDGE, "type", "bridge"])
        command(["ip", "-n", inet, "link", "set", BRIDGE, "up"])
        for host, address in INTERNET_HOSTS.items():
            self._plug_into_internet(host, ETH, address)
        for router, address in ROUTERS.items():
            self._plug_into_internet(router, WAN, address)
            self._build_home(router)

    def _plug_into_internet(self, host: str, ifname: str, address: str) -> None:
        inet, ns = self.namespace(BRIDGE_HOST), self.namespace(host)
        # both ends are created right inside their namespaces, so names only need to be
        # unique within one lab; the bridge port is named after the host it serves
        command(f"ip link add {host} netns {inet} type veth peer name {ifname} netns {ns}".split())
        command(["ip", "-n", inet, "link", "set", host, "master", BRIDGE, "up"])
        command(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", ifname])
        command(["ip", "-n", ns, "link", "set", ifname, "up"])

    def _build_home(self, router: str) -> None:
        peer, lan = HOME_LANS[router]
        nat, home = self.namespace(router), self.namespace(peer)
        command(f"ip link add {LAN} netns {nat} type veth peer name {ETH} netns {home}".split())
        command(["ip", "-n", nat, "addr", "add", f"{lan}.1/24", "dev", LAN])
        command(["ip", "-n", nat, "link", "set", LAN, "up"])
        command(["ip", "-n", home, "addr", "add", f"{lan}.2/24", "dev", ETH])
        command(["ip", "-n", home, "link", "set", ETH, "up"])
        command(["ip", "-n", home, "route", "add", "default", "via", f"{lan}.1"])
        command(self._in(router, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]))
        for rule in _nat_rules(self.nat_kinds[router]):
            command(self._in(router, ["iptables", *rule]))

    def remove(self) -> None:
        """Stop the lab's processes and delete every namespace of its prefix (also those of a
        build that failed half-way); LabError if one could not be deleted."""
        self.stop_processes()
        mine = [name for name in lab_namespaces() if name.startswith(f"{self.prefix}-")]
        problems = _remove_namespaces(mine)
        if problems:
            raise LabError("the lab could not be removed completely: " + "; ".join(problems))


def _nat_rules(kind: NatKind) -> list[list[str]]:
    """The router's iptables rules for `kind`: NAT out of the WAN, and a stateful firewall."""
    random = " --random-fully" if kind is NatKind.SYMMETRIC else ""
    rules = [
        f"-t nat -A POSTROUTING -o {WAN} -j MASQUERADE{random}",
        # only replies reach the home network from the WAN
        f"-A FORWARD -i {WAN} -o {LAN} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"-A FORWARD -i {WAN} -o {LAN} -j DROP",
    ]
    if kind is not NatKind.RESET:
        # like a home router: unsolicited packets to the router itself vanish (no RST, no
        # ICMP), which TCP hole punching needs; without this rule the kernel resets them
        rules.append(f"-A INPUT -i {WAN} -m conntrack --ctstate NEW -j DROP")
    return [rule.split() for rule in rules]


def new_prefix() -> str:
    """A prefix no running lab uses: this process's id and 4 random hex digits."""
    return f"{MARK}{os.getpid()}-{secrets.token_hex(2)}"


@contextlib.contextmanager
def open_lab(
    nat1: NatKind = NatKind.PORT_PRESERVING, nat2: NatKind = NatKind.PORT_PRESERVING
) -> Iterator[NatLab]:
    """Build a lab whose routers are of the kinds given; always remove it on exit.

    Leftovers of labs whose owner process is gone (a run that was killed) go first.
    """
    stale = [name for name in lab_namespaces() if _owner_gone(name)]
    if problems := _remove_namespaces(stale):
        raise LabError("leftover lab namespaces could not be removed: " + "; ".join(problems))
    lab = NatLab(new_prefix(), {"nat1": nat1, "nat2": nat2})
    try:
        lab.build()
        yield lab
    finally:
        lab.remove()
