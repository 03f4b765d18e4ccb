"""The dial-back protocol's rules: what a request may ask, answers, rate limits, the verdict."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from dmoa_p2p.overlay._dialback_rules import (
    ALL_REQUESTS,
    ALL_WINDOW_S,
    DIALS_IN_FLIGHT,
    FIRST_RETRY_S,
    MAX_ADDRS,
    MAX_DIALS,
    MAX_REASON_BYTES,
    MAX_REQUEST_BYTES,
    PER_PEER_REQUESTS,
    PER_PEER_WINDOW_S,
    RECHECK_S,
    Answer,
    BadMessage,
    CheckSchedule,
    DialAddr,
    Outcome,
    RequestLimits,
    at_ip,
    choose_peers,
    encode_answer,
    encode_request,
    parse_answer_head,
    parse_request,
    verdict,
)

ME = "12D3KooWMe"


def test_a_request_names_tcp_addresses_of_the_requester_over_ipv4_or_ipv6() -> None:
    addrs = ["/ip4/198.51.100.30/tcp/4001", f"/ip6/2001:DB8::1/tcp/4001/p2p/{ME}"]
    body = encode_request(addrs)[2:]
    assert parse_request(body, ME) == [
        DialAddr("198.51.100.30", 4001),
        DialAddr("2001:db8::1", 4001),  # canonical form: what the socket reports
    ]
    # an IPv4-mapped IPv6 address is the IPv4 one; repeats are dialled once
    mapped = b"/ip6/::ffff:198.51.100.30/tcp/4001\n/ip4/198.51.100.30/tcp/4001"
    assert parse_request(mapped, ME) == [DialAddr("198.51.100.30", 4001)]
    assert DialAddr("2001:db8::1", 7).multiaddr == "/ip6/2001:db8::1/tcp/7"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "is not /ip4"),
        (b"/ip4/198.51.100.30/udp/4001/quic-v1", "is not /ip4"),
        (b"/dns4/example.org/tcp/4001", "is not /ip4"),
        (b"/ip4/198.51.100.30/tcp/4001/p2p/12D3KooWSomeoneElse", "names another peer"),
        (b"/ip4/198.51.100.300/tcp/4001", "is not an IP address"),
        (b"/ip4/2001:db8::1/tcp/4001", "is not a unicast /ip4"),
        (b"/ip4/0.0.0.0/tcp/4001", "is not a unicast"),
        (b"/ip4/224.0.0.1/tcp/4001", "is not a unicast"),
        (b"/ip6/fe80::1%eth0/tcp/4001", "is not a unicast /ip6"),  # a zone: local only
        (b"/ip4/198.51.100.30/tcp/0", "out of range"),
        (b"/ip4/198.51.100.30/tcp/65536", "out of range"),
        (b"/ip4/198.51.100.30/tcp/123456", "is not /ip4"),
        (b"\xff\xfe", "not UTF-8"),
        (b"\n".join([b"/ip4/198.51.100.30/tcp/1"] * (MAX_ADDRS + 1)), "addresses, not 1 to"),
        (b"/" * (MAX_REQUEST_BYTES + 1), "over 1024"),
    ],
)
def test_a_request_breaking_a_rule_is_refused_saying_which(body: bytes, why: str) -> None:
    with pytest.raises(BadMessage, match=why):
        parse_request(body, ME)


def test_a_request_too_large_to_send_is_not_sent() -> None:
    with pytest.raises(BadMessage, match="at most"):
        encode_request(["/ip4/198.51.100.30/tcp/1"] * (MAX_ADDRS + 1))
    assert len(encode_request(["/ip4/198.51.100.30/tcp/1"])) == 2 + 24


def test_answers_are_bounded_both_ways() -> None:
    encoded = encode_answer(Answer(Outcome.UNREACHABLE, "é" * MAX_REASON_BYTES))
    outcome, length = parse_answer_head(encoded[:3])
    assert outcome is Outcome.UNREACHABLE and length <= MAX_REASON_BYTES
    assert encoded[3:].decode() == "é" * (MAX_REASON_BYTES // 2)  # cut between characters
    assert parse_answer_head(encode_answer(Answer(Outcome.REACHABLE, "ok"))[:3]) == (
        Outcome.REACHABLE,
        2,
    )
    with pytest.raises(BadMessage, match="unknown outcome 9"):
        parse_answer_head(b"\x09\x00\x00")
    with pytest.raises(BadMessage, match="over"):
        parse_answer_head(b"\x01" + (MAX_REASON_BYTES + 1).to_bytes(2, "big"))
    with pytest.raises(BadMessage, match="cut short"):
        parse_answer_head(b"\x01")


def test_only_addresses_at_the_requesters_own_ip_are_dialled() -> None:
    addrs = [DialAddr("203.0.113.9", 1), *(DialAddr("198.51.100.30", p) for p in (1, 2, 3))]
    assert at_ip(addrs, "198.51.100.30") == [DialAddr("198.51.100.30", p) for p in (1, 2)]
    assert len(at_ip(addrs, "198.51.100.30")) == MAX_DIALS
    assert at_ip(addrs, "192.0.2.1") == []


@pytest.mark.parametrize(
    ("outcomes", "public"),
    [
        ("RR", True),
        ("RRU", True),
        ("UU", False),
        ("UUX", False),
        ("RUU", None),  # any confirmation: not private
        ("RU", None),
        ("R", None),
        ("U", None),
        ("RXX", None),  # refusals say nothing
        ("XXX", None),
        ("", None),
    ],
)
def test_a_verdict_needs_two_agreeing_peers(outcomes: str, public: bool | None) -> None:
    codes = {"R": Outcome.REACHABLE, "U": Outcome.UNREACHABLE, "X": Outcome.REFUSED}
    assert verdict(codes[c] for c in outcomes) is public


async def test_requests_are_limited_per_peer_and_in_all(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = RequestLimits()
    assert limits.admit("a") is None
    assert "already under way" in str(limits.admit("a"))  # one in flight per requester
    limits.release("a")
    for _ in range(PER_PEER_REQUESTS - 1):
        assert limits.admit("a") is None
        limits.release("a")
    assert f"{PER_PEER_REQUESTS} requests per" in str(limits.admit("a"))
    await trio.sleep(PER_PEER_WINDOW_S)
    assert limits.admit("a") is None  # the window moved on
    limits.release("a")
    await trio.sleep(ALL_WINDOW_S)
    # in flight in all
    for peer in range(DIALS_IN_FLIGHT):
        assert limits.admit(peer) is None
    assert "from all peers" in str(limits.admit("late"))
    for peer in range(DIALS_IN_FLIGHT):
        limits.release(peer)
    # requests per window in all
    for peer in range(DIALS_IN_FLIGHT, ALL_REQUESTS):
        assert limits.admit(peer) is None
        limits.release(peer)
    assert "from all peers" in str(limits.admit("late"))
    await trio.sleep(ALL_WINDOW_S)
    assert limits.admit("late") is None


async def test_checks_come_at_once_then_back_off_until_a_verdict_then_rarely(
    autojump_clock: trio.testing.MockClock,
) -> None:
    schedule = CheckSchedule()
    assert not schedule.due(1)  # one peer cannot make a verdict
    assert schedule.due(2)
    schedule.checked(decided=False)
    waits = []
    for _ in range(7):
        start = trio.current_time()
        while not schedule.due(2):  # noqa: ASYNC110 (polled, as the checker does)
            await trio.sleep(1)
        waits.append(trio.current_time() - start)
        schedule.checked(decided=False)
    assert waits == [FIRST_RETRY_S * 2**i for i in range(5)] + [RECHECK_S] * 2
    schedule.checked(decided=True)
    await trio.sleep(RECHECK_S - 1)
    assert not schedule.due(5)
    await trio.sleep(1)
    assert schedule.due(5)
    schedule.checked(decided=True)
    # alone, then with peers again: at once
    assert not schedule.due(0)
    assert schedule.due(2)


def test_peers_at_distinct_ips_are_asked_first_the_least_recently_asked_first() -> None:
    candidates = [("a1", "ip-a"), ("a2", "ip-a"), ("a3", "ip-a"), ("b1", "ip-b"), ("c1", "ip-c")]
    assert choose_peers(candidates, {}, 3) == ["a1", "b1", "c1"]
    assert choose_peers(candidates, {"a1": 5.0, "a2": 1.0}, 4) == ["a3", "b1", "c1", "a2"]
    assert choose_peers(candidates[:2], {}, 3) == ["a1", "a2"]
    assert choose_peers([], {}, 3) == []
