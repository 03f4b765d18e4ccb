"""`swarm.views_converged`: when a swarm's views let everyone draw and be drawn."""

from __future__ import annotations

from dmoa_p2p.swarm import JOINED_PEERS, views_converged


def ring(n: int, width: int) -> dict[str, list[str]]:
    """Member i holds the `width` members after it: everyone held, no one stray."""
    names = [f"p{i}" for i in range(n)]
    return {names[i]: [names[(i + j) % n] for j in range(1, width + 1)] for i in range(n)}


def test_a_small_swarm_converges_only_when_everyone_holds_everyone() -> None:
    assert views_converged(ring(5, 4))
    assert not views_converged(ring(5, 3))


def test_a_stray_peer_or_an_unheld_member_is_not_converged() -> None:
    views = ring(20, JOINED_PEERS)
    assert views_converged(views)
    assert not views_converged({**views, "p0": [*views["p0"], "stranger"]})
    # p3 dropped from every view that held it, p12 in its place
    unheld = {m: [p if p != "p3" else "p12" for p in view] for m, view in views.items()}
    assert all(len(set(view)) >= JOINED_PEERS for view in unheld.values())
    assert not views_converged(unheld)


def test_short_members_are_tolerated_up_to_the_allowance_but_never_an_empty_one() -> None:
    views = ring(20, JOINED_PEERS)
    views["p1"] = views["p1"][:3]
    views["p2"] = views["p2"][:1]
    assert not views_converged(views)
    assert not views_converged(views, short_allowed=1)
    assert views_converged(views, short_allowed=2)
    views["p2"] = []
    assert not views_converged(views, short_allowed=5)
