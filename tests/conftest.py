"""Fixtures for every test: the testing kit's (dmoa_p2p.testing.fixtures)."""

pytest_plugins = ["dmoa_p2p.testing.fixtures"]
