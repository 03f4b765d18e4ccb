"""`bench overlay` on a small real swarm: both variants deliver everything; the CLI prints JSON."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dmoa_p2p.bench import BARE, DMOA, VARIANTS, OverlayBenchResult, run_overlay_bench
from dmoa_p2p.bench._traffic import BareTraffic, DmoaTraffic, bench_presence, envelope_bytes
from dmoa_p2p.cli import cli
from dmoa_p2p.identity import NodeIdentity

pytestmark = pytest.mark.integration

NODES = 3
MESSAGES = 40
ROUNDS = 2


def check_result(result: OverlayBenchResult, nodes: int, messages: int, rounds: int) -> None:
    # the publisher's own copy is not a delivery
    expected = messages * (nodes - 1)
    assert [run.variant for run in result.runs] == [BARE, DMOA, DMOA, BARE][: 2 * rounds]
    for variant in VARIANTS:
        summary = result.summary(variant)
        assert len(summary.runs) == rounds
        assert summary.deliveries == summary.expected_deliveries == expected
        for run in summary.runs:
            assert run.deliveries == run.expected_deliveries
            assert 0 < run.p50_latency_ms <= run.p99_latency_ms
            assert run.cpu_ms_per_delivery > 0
            assert run.deliveries_per_s > 0
    assert result.all_delivered
    assert result.cpu_ratio > 0
    assert len(result.round_ratios) == rounds


async def test_both_variants_deliver_every_message_to_every_receiver() -> None:
    result = await run_overlay_bench(NODES, MESSAGES, warmup=6, rounds=ROUNDS)
    check_result(result, NODES, MESSAGES, ROUNDS)
    assert result.settings.window == NODES
    assert result.settings.payload_bytes == envelope_bytes()
    report = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert report["variants"][DMOA]["deliveries"] == MESSAGES * (NODES - 1)
    assert report["pass"] == (report["cpu_per_delivery_ratio"] <= report["target_ratio"])


def test_cli_prints_one_json_object() -> None:
    args = ["bench", "overlay", "--nodes", "3", "--messages", "20", "--warmup", "0"]
    outcome = CliRunner().invoke(cli, [*args, "--rounds", "2", "--json"])
    assert outcome.exit_code == 0, outcome.output
    report = json.loads(outcome.stdout)
    assert set(report["variants"]) == {BARE, DMOA}
    for variant in VARIANTS:
        assert report["variants"][variant]["deliveries"] == 20 * 2
        assert report["variants"][variant]["p50_latency_ms"] > 0
    assert report["target_ratio"] == 1.10
    assert report["pass"] == (report["cpu_per_delivery_ratio"] <= report["target_ratio"])
    assert "accept-all" in report["bare_means"]


def test_cli_refuses_more_rounds_than_messages() -> None:
    outcome = CliRunner().invoke(cli, ["bench", "overlay", "--messages", "3", "--rounds", "4"])
    assert outcome.exit_code == 2
    assert "--rounds" in outcome.output


def test_variants_carry_equal_payloads_and_dmoa_really_gates() -> None:
    identity = NodeIdentity.generate()
    addr = f"/ip4/127.0.0.1/tcp/40000/p2p/{identity.peer_id}"
    dmoa = DmoaTraffic([identity], [bench_presence(identity, (addr,))])
    bare = BareTraffic(envelope_bytes())
    message_id, data = dmoa.make(0)
    bare_id, bare_data = bare.make(0)
    assert len(data) == len(bare_data)
    assert dmoa.message_id(data) == message_id and bare.message_id(bare_data) == bare_id
    validate = dmoa.validator(0)
    tampered = data[:-1] + bytes([data[-1] ^ 1])  # the last byte is in the signature
    relay = NodeIdentity.generate().peer_id  # relayed: GossipSub's signature is not the author's
    assert not validate(relay, tampered)
    assert validate(identity.peer_id, data)
    assert not validate(identity.peer_id, data)  # a replay
    assert dict(dmoa.gates[0].rejections) and dmoa.gates[0].accepted == 1
