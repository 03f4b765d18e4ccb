"""Outstanding MoA work: which connections a node keeps open, and that load does not grow them."""

from __future__ import annotations

import pytest

from dmoa_p2p.node._work import LINGER_S, OutstandingWork
from dmoa_p2p.simulate import RunConfig
from dmoa_p2p.simulate import simulate as run
from dmoa_p2p.wire import ChatTurn, Proposal, Refusal, Task


def task(query_id: str, layer: int = 1, deadline_s: float = 60.0) -> Task:
    return Task(
        query_id=query_id,
        layer=layer,
        origin="o",
        recipient="p",
        messages=(ChatTurn(role="user", content="hi"),),
        max_tokens=8,
        temperature=0.0,
        seed=0,
        deadline_s=deadline_s,
    )


def proposal(query_id: str, layer: int = 1) -> Proposal:
    return Proposal(query_id, layer, "o", "p", "text", "m", 0.0, 1.0, 1, 1)


def test_a_task_keeps_its_peer_in_use_until_answered_then_for_the_linger() -> None:
    now = [0.0]
    work = OutstandingWork(lambda: now[0])
    assert not work.in_use("p") and not work.worked_with("p")
    work.passed("p", task("q1"))
    work.passed("p", task("q2"))
    now[0] = 30.0
    assert work.in_use("p") and work.worked_with("p")
    work.passed("p", proposal("q1"))
    work.passed("p", proposal("q1", layer=2))  # no such task: changes nothing
    work.passed("p", Refusal("q2", 1, "o", "p", "busy", None))
    now[0] = 30.0 + LINGER_S - 0.1
    assert work.in_use("p")
    now[0] = 30.0 + LINGER_S
    assert not work.in_use("p") and work.worked_with("p")
    assert not work.in_use("other")


def test_a_task_never_answered_stops_holding_its_peer_at_its_deadline() -> None:
    now = [0.0]
    work = OutstandingWork(lambda: now[0])
    work.passed("p", task("q", deadline_s=20.0))
    now[0] = 19.9
    assert work.in_use("p")
    now[0] = 20.0
    assert not work.in_use("p")


def test_a_task_that_could_not_be_sent_holds_nothing() -> None:
    work = OutstandingWork(lambda: 0.0)
    work.passed("p", task("q"))
    work.unsent("p", task("q"))
    assert not work.in_use("p")
    work.unsent("p", task("never sent"))  # changes nothing either


def test_what_is_remembered_is_bounded() -> None:
    now = [0.0]
    work = OutstandingWork(lambda: now[0])
    for i in range(10_000):
        now[0] = float(i)
        work.passed(f"p{i}", task(f"q{i}", deadline_s=1.0))
        work.passed(f"p{i}", proposal(f"q{i}"))
    assert sum(map(len, work._open.values())) == work._count == 0
    assert len(work._answered) <= 4096
    for i in range(10_000):  # a flood of tasks that stay open: at most MAX_REMEMBERED held
        work.passed(f"f{i}", task(f"f{i}", deadline_s=3600.0))
    assert sum(map(len, work._open.values())) == work._count == 4096


@pytest.mark.integration  # a minute of CPU: a loaded virtual swarm
def test_connections_under_moa_load_stay_near_the_neighbour_target() -> None:
    """30 nodes at 0.7 λ*: each task opens a connection to a peer drawn from the view; it is
    closed once answered, so a node holds its neighbours plus the tasks in flight, not one
    connection per peer it worked with lately (which grew to 14-27 here). And a proposer
    shuffled out of the view between the draw and its task is still dialled (that lost
    about one query in four its full set of proposals)."""
    config = RunConfig(
        alphas=(1.0,) * 30, layers=2, proposers=2, rate=0.7 / 7, duration_s=150, warmup_s=50
    )
    result = run(config)
    data = result.to_json()
    books = data["books"]
    assert books["failed"] == 0 and books["answered"] > 300, books
    assert books["incomplete"] <= 0.02 * books["answered"], books
    conn = data["connections"]
    assert conn["median"] <= 10 and conn["max"] <= 24, conn
