"""Logging for the command line: quiet by default, -v and -vv for more, libp2p included."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

# (dmoa_p2p level, libp2p level) per -v count. libp2p logs ordinary events (a peer hanging
# up mid-handshake, streams reset at shutdown) as ERROR, so it stays silent by default.
_LEVELS = [
    (logging.WARNING, logging.CRITICAL),
    (logging.INFO, logging.ERROR),
    (logging.DEBUG, logging.INFO),
    (logging.DEBUG, logging.DEBUG),
]


def configure_logging(verbosity: int) -> None:
    """Send dmoa_p2p and libp2p logs to stderr; libp2p's logger does not propagate."""
    ours, theirs = _LEVELS[max(0, min(verbosity, len(_LEVELS) - 1))]
    handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    for name, level in (("dmoa_p2p", ours), ("libp2p", theirs)):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False
