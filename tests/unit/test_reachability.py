"""Whether a node counts itself publicly reachable, from the addresses it listens on."""

from __future__ import annotations

import pytest

from dmoa_p2p.overlay._reachability import (
    concrete_addrs,
    interface_ips,
    is_private_ip,
    publicly_reachable,
)


@pytest.mark.parametrize(
    ("ip", "private"),
    [
        ("10.1.0.2", True),
        ("172.16.5.4", True),
        ("192.168.1.10", True),
        ("100.64.0.1", True),  # carrier-grade NAT
        ("127.0.0.1", True),
        ("169.254.1.1", True),
        ("::1", True),
        ("fd00::1", True),
        ("::ffff:10.0.0.1", True),
        ("not an ip", True),
        # documentation ranges: `ipaddress` calls them private, the NAT lab routes them
        ("198.51.100.10", False),
        ("192.0.2.2", False),
        ("172.32.0.1", False),
        ("100.128.0.1", False),
        ("2001:db8::1", False),
    ],
)
def test_private_addresses_are_those_the_internet_does_not_route(ip: str, private: bool) -> None:
    assert is_private_ip(ip) is private


def test_auto_reachability_is_public_if_any_listen_address_is() -> None:
    home, public = "/ip4/10.1.0.2/tcp/4001", "/ip4/198.51.100.10/tcp/4001"
    assert publicly_reachable("auto", [home]) is False
    assert publicly_reachable("auto", ["/ip4/127.0.0.1/tcp/0", "/ip6/::1/tcp/0"]) is False
    assert publicly_reachable("auto", [home, public]) is True
    assert publicly_reachable("public", [home]) is True
    assert publicly_reachable("private", [public]) is False
    with pytest.raises(ValueError, match="reachability must be one of"):
        publicly_reachable("sometimes", [public])


def test_a_wildcard_listen_address_counts_each_interface_address() -> None:
    ips = interface_ips()
    assert "127.0.0.1" in ips  # the loopback interface, on any Linux host
    expected = any(not is_private_ip(ip) for ip in ips)
    assert publicly_reachable("auto", ["/ip4/0.0.0.0/tcp/4001"]) is expected
    assert interface_ips(["no-such-interface"]) == []


def test_a_wildcard_listen_address_is_advertised_as_each_interfaces_address() -> None:
    addrs = ["/ip4/0.0.0.0/tcp/4001/p2p/me", "/ip4/198.51.100.7/tcp/4002/p2p/me"]
    assert concrete_addrs(addrs, ["127.0.0.1", "10.1.0.2", "198.51.100.7"]) == [
        "/ip4/10.1.0.2/tcp/4001/p2p/me",
        "/ip4/198.51.100.7/tcp/4001/p2p/me",
        "/ip4/127.0.0.1/tcp/4001/p2p/me",  # last: it reaches only this machine
        "/ip4/198.51.100.7/tcp/4002/p2p/me",
    ]
    assert concrete_addrs(addrs[1:], []) == addrs[1:]  # nothing to replace
    assert concrete_addrs(addrs[:1], []) == []  # no interface: no address, never 0.0.0.0
    assert "127.0.0.1" in interface_ips()  # this machine's loopback, read from the kernel
