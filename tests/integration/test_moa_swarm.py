"""MoA queries on real py-libp2p swarms on 127.0.0.1 with the fake backend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.swarm import open_inprocess_swarm, open_process_swarm
from dmoa_p2p.testing import wait_for

pytestmark = pytest.mark.integration
FAKE = {"backend": "fake", "backend_options": {"service_time": "0.05"}}


@pytest.mark.parametrize("gossip", ["direct", "pubsub"])
async def test_a_two_by_two_query_makes_the_right_calls_on_the_right_nodes(
    tmp_path: Path, gossip: str
) -> None:
    async with open_inprocess_swarm(5, tmp_path, presence_interval_s=0.5, gossip=gossip,
                                    **FAKE) as swarm:
        await swarm.wait_converged(timeout_s=20)
        origin = swarm.nodes[0]
        with trio.fail_after(30):
            answer = await origin.ask(QueryRequest("Why is the sky blue?", 2, 2))
        trace = answer.trace
        assert len(trace.calls) == (2 + 1) * 2 + 1
        everyone = {n.peer_id for n in swarm.nodes}
        for layer in trace.layers:
            assert layer.missing == ()
            assert len(set(layer.asked)) == 2 and set(layer.asked) <= everyone - {origin.peer_id}
            nodes = sorted(c.node for c in trace.calls if c.layer == layer.layer)
            assert nodes == sorted([origin.peer_id, *layer.asked])
        assert [(c.node, c.role) for c in trace.calls if c.layer == 3] == [
            (origin.peer_id, "aggregator")
        ]
        # each helper's own queue served exactly the tasks it was asked for
        for node in swarm.nodes[1:]:
            asked = sum(node.peer_id in layer.asked for layer in trace.layers)
            assert node.queue.served == asked


async def test_a_node_killed_mid_query_does_not_stall_it(tmp_path: Path) -> None:
    config = {"backend": "fake", "backend_options": {"service_time": "2.0"}}
    async with open_inprocess_swarm(4, tmp_path, presence_interval_s=0.5, **config) as swarm:
        await swarm.wait_converged(timeout_s=20)
        origin = swarm.nodes[0]
        victim = swarm.nodes[3]
        async with trio.open_nursery() as nursery:

            async def kill_soon() -> None:
                await wait_for(lambda: victim.queue.length == 1)  # it computes its task
                await swarm.stop(3)

            nursery.start_soon(kill_soon)
            with trio.fail_after(30):
                answer = await origin.ask(QueryRequest("Hi", 1, 3, layer_timeout_s=120.0))
        (layer,) = answer.trace.layers
        # noticed as gone, not waited for until the 120 s layer deadline
        assert [(m.node, m.reason) for m in layer.missing] == [
            (victim.peer_id, "left during the layer")
        ]
        assert len(layer.answered) == 3  # the origin and the two survivors
        assert answer.text


def test_swarm_command_answers_with_a_trace_in_json(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dmoa_p2p", "swarm", "--nodes", "3", "--backend", "fake",
         "-o", "service_time=0.05", "--ask", "What is MoA?", "-M", "1", "-k", "2", "--json",
         "--base-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["answer"].startswith("[fake ")
    calls = answer["trace"]["calls"]
    assert len(calls) == 4
    assert {"node", "layer", "role", "queue_wait_s", "service_s"} <= set(calls[0])
    assert [c["role"] for c in calls].count("aggregator") == 1
    # the aggregation is the "final" step, not layer M+1
    assert [(c["layer"], c["role"]) for c in calls if c["layer"] != 1] == [("final", "aggregator")]
    assert (answer["finish_reason"], answer["truncated"]) == ("stop", False)


async def test_ask_command_talks_to_a_running_node(tmp_path: Path) -> None:
    node_args = ["--backend", "fake", "-o", "service_time=0.05"]
    async with open_process_swarm(3, tmp_path, node_args=node_args) as swarm:
        await swarm.wait_converged(timeout_s=60)
        data_dir = str(swarm.members[1].data_dir)
        result = await trio.run_process(
            [sys.executable, "-m", "dmoa_p2p", "ask", "Hello?", "-M", "1", "-k", "2",
             "--json", "--data-dir", data_dir],
            capture_stdout=True,
        )
        trace = json.loads(result.stdout)["trace"]
        assert trace["origin"] == swarm.members[1].peer_id
        assert len(trace["calls"]) == 4, (trace["notes"], trace["layers"])
        assert trace["calls"][-1]["layer"] == "final"
        bad = await trio.run_process(
            [sys.executable, "-m", "dmoa_p2p", "ask", "Hello?", "--strategy", "nope",
             "--data-dir", data_dir],
            capture_stderr=True, check=False,
        )
        assert bad.returncode == 1
        assert b"no strategy plugin named 'nope'; available:" in bad.stderr
