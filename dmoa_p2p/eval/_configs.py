"""The configurations an evaluation compares: one model, MoA over the swarm, Self-MoA."""

from __future__ import annotations

import re

import attrs

from dmoa_p2p.eval._checks import EvalError

GRID_SHAPES = ((1, 1), (1, 2), (2, 2), (1, 3))  # (M, k) of the MoA configurations
GRID_STRATEGIES = ("raw", "augmented")
GRID_AGGREGATORS = ("moa", "dmoa-paper", "vote")
SELF_MOA_PROPOSALS = (2, 3, 4)  # k + 1 samples of the one model, for k = 1, 2, 3
_NAME = re.compile(
    r"^(?:one|m0|self-k(?P<self_k>\d)-(?P<self_agg>[a-z][a-z0-9-]*)"
    r"|m(?P<m>\d)k(?P<k>\d)-(?P<strategy>[a-z][a-z0-9_]*)-(?P<agg>[a-z][a-z0-9-]*))$"
)


@attrs.frozen
class Configuration:
    """How one answer is made.

    layers = 0: the target's model alone (the baseline every other is compared with);
    self_moa: that model sampled `proposers` + 1 times, then aggregated by `aggregator`;
    otherwise a MoA query of the swarm with M `layers` of k `proposers`."""

    layers: int
    proposers: int
    strategy: str = "local"
    aggregator: str = "moa"
    self_moa: bool = False

    @property
    def name(self) -> str:
        if self.self_moa:
            return f"self-k{self.proposers}-{self.aggregator}"
        if self.layers == 0:
            return "one"
        return f"m{self.layers}k{self.proposers}-{self.strategy}-{self.aggregator}"

    @property
    def is_baseline(self) -> bool:
        return self.layers == 0 and not self.self_moa

    @property
    def needs_swarm(self) -> bool:
        return self.layers > 0 and not self.self_moa

    def model_name(self) -> str:
        """The node API's model name for a MoA query (see the README's HTTP section)."""
        return (
            f"dmoa:layers={self.layers},proposers={self.proposers},"
            f"strategy={self.strategy},aggregator={self.aggregator}"
        )


BASELINE = Configuration(0, 0)


def parse_configuration(name: str) -> Configuration:
    """`one` (or `m0`), `m<M>k<K>-<strategy>-<aggregator>`, `self-k<K>-<aggregator>` (a
    strategy's name has no hyphen here: the first one ends it)."""
    found = _NAME.match(name.strip().lower())
    if found is None:
        raise EvalError(
            f"{name!r} is no configuration; use one, m<M>k<K>-<strategy>-<aggregator> "
            "(e.g. m1k2-augmented-moa) or self-k<K>-<aggregator> (e.g. self-k2-vote)"
        )
    if found["self_k"]:
        k = int(found["self_k"])
        if k < 1:
            raise EvalError(f"{name!r}: Self-MoA needs k >= 1 extra samples")
        return Configuration(0, k, "local", found["self_agg"], self_moa=True)
    if found["m"] is None:
        return BASELINE
    layers, proposers = int(found["m"]), int(found["k"])
    if layers < 1 or proposers < 1:
        raise EvalError(f"{name!r}: a MoA configuration needs M >= 1 and k >= 1")
    return Configuration(layers, proposers, found["strategy"], found["agg"])


def default_grid() -> list[Configuration]:
    """The issue's grid: one model; every (M, k) of `GRID_SHAPES` with each strategy and
    aggregator; Self-MoA with k = 1, 2, 3 and each aggregator."""
    grid = [BASELINE]
    for layers, proposers in GRID_SHAPES:
        for strategy in GRID_STRATEGIES:
            for aggregator in GRID_AGGREGATORS:
                grid.append(Configuration(layers, proposers, strategy, aggregator))
    for samples in SELF_MOA_PROPOSALS:
        for aggregator in GRID_AGGREGATORS:
            grid.append(Configuration(0, samples - 1, "local", aggregator, self_moa=True))
    return grid


def parse_configurations(text: str | None) -> list[Configuration]:
    """A comma-separated list of names (the baseline is added first if missing), or the
    default grid for None."""
    if text is None:
        return default_grid()
    chosen = [parse_configuration(part) for part in text.split(",") if part.strip()]
    if not chosen:
        raise EvalError("no configuration named")
    unique = list(dict.fromkeys(chosen))
    return unique if BASELINE in unique else [BASELINE, *unique]
