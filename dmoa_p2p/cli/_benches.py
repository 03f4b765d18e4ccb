"""The `bench` group with every benchmark command registered on it."""

from __future__ import annotations

from dmoa_p2p.cli import _bench_backend, _bench_http, _bench_moa
from dmoa_p2p.cli._bench import bench

REGISTERED = (_bench_backend, _bench_http, _bench_moa)  # each adds its commands to `bench`

__all__ = ["REGISTERED", "bench"]
