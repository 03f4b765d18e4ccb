"""The NAT lab as a fixture, and the skip of `netns` tests where namespaces are not allowed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dmoa_p2p.testing.netlab import NatKind, NatLab, open_lab, unavailable_reason


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("netns") and (reason := unavailable_reason()):
        pytest.skip(reason)


@pytest.fixture
def nat_lab(request: pytest.FixtureRequest) -> Iterator[NatLab]:
    """A freshly built lab, removed afterwards. Its routers' kinds come by indirect
    parametrization, one kind for both or a pair (nat1, nat2):
    `@pytest.mark.parametrize("nat_lab", [NatKind.RESET], indirect=True)`; else
    port-preserving."""
    param = getattr(request, "param", NatKind.PORT_PRESERVING)
    nat1, nat2 = (param, param) if isinstance(param, NatKind) else param
    with open_lab(nat1=NatKind(nat1), nat2=NatKind(nat2)) as lab:
        yield lab
