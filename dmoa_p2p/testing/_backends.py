"""The fake backend for swarms: one object per node, or the config that makes nodes load it."""

from __future__ import annotations

from typing import Any

from dmoa_p2p.backends.fake import FakeBackend


def fake_backends(
    n: int, mean_s: float = 0.2, distribution: str = "fixed", seed: int = 0
) -> list[FakeBackend]:
    """`n` fake backends with mean service time `mean_s`; backend i draws with seed `seed + i`."""
    return [FakeBackend(mean_s, distribution=distribution, seed=seed + i) for i in range(n)]


def fake_backend_config(mean_s: float, distribution: str = "fixed") -> dict[str, Any]:
    """NodeConfig fields that give a node the fake backend with these service times."""
    return {
        "backend": "fake",
        "backend_options": {"service_time": str(mean_s), "distribution": distribution},
    }
