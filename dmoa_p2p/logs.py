"""Logging for the command line: what the user must know by default, -v and -vv for more."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

# What a user must know at default verbosity (joined, lost all peers, bootstrap unreachable,
# model loaded): INFO records of this logger are shown with no -v at all.
EVENTS = "dmoa_p2p.events"
LIBP2P = "libp2p"
_OFF = logging.CRITICAL + 10

# (dmoa_p2p level, libp2p level) per -v count. libp2p logs ordinary events (a peer hanging
# up mid-handshake, streams reset at shutdown) as ERROR and ours cover what matters, so by
# default it says nothing at all.
_LEVELS = [
    (logging.WARNING, _OFF),
    (logging.INFO, logging.ERROR),
    (logging.DEBUG, logging.INFO),
    (logging.DEBUG, logging.DEBUG),
]
_TIME = "%H:%M:%S"

_installed: list[logging.Handler] = []
_libp2p_level: int | None = None  # None: configure_logging was never called


class LogFileError(Exception):
    """The log file cannot be opened for writing."""


class _Libp2pThreshold(logging.Filter):
    """Lets a libp2p record through only at libp2p's chosen level.

    A handler filter, because py-libp2p sets levels on some of its own loggers (its
    auto-connector logs INFO whatever its parent's level), and a child's records reach the
    parent's handlers without the parent's level being checked.
    """

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == LIBP2P or record.name.startswith(LIBP2P + "."):
            return record.levelno >= self.level
        return True


class _LineFormatter(logging.Formatter):
    """One record, one line: newlines inside a message are escaped, tracebacks only if asked."""

    def __init__(self, fmt: str, datefmt: str | None, tracebacks: bool) -> None:
        super().__init__(fmt, datefmt)
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage().replace("\n", "\\n")
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if record.exc_info and record.exc_info[1] is not None:
            if self.tracebacks:
                return f"{line}\n{self.formatException(record.exc_info)}"
            error = record.exc_info[1]
            line = f"{line} ({type(error).__name__}: {error})".replace("\n", "\\n")
        return line


class _UserFormatter(_LineFormatter):
    """Default output: the time and the message; a level only when something is wrong."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        time_ = self.formatTime(record, self.datefmt)
        if record.levelno >= logging.WARNING:
            return f"{time_} {record.levelname.lower()}: {record.message}"
        return f"{time_} {record.message}"


@contextlib.contextmanager
def events_hushed() -> Iterator[None]:
    """Keep the user's events (joined, lost all peers) off the screen meanwhile, errors
    aside: in a virtual swarm every one of a thousand nodes has them, none the user's."""
    events = logging.getLogger(EVENTS)
    level = events.level
    events.setLevel(logging.ERROR)
    try:
        yield
    finally:
        events.setLevel(level)


def configure_logging(verbosity: int, log_file: Path | None = None) -> None:
    """Send dmoa_p2p and libp2p logs to stderr (and to `log_file`, appended), one record per
    line; calling it again replaces the previous configuration. A negative `verbosity`
    (`-q`) keeps warnings and errors only, without the default notices. LogFileError if
    `log_file` cannot be written."""
    global _libp2p_level
    ours, theirs = _LEVELS[max(0, min(verbosity, len(_LEVELS) - 1))]
    file_handler = _open_log_file(log_file) if log_file is not None else None
    for handler in _installed:
        handler.close()
    _installed.clear()
    plain = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    stderr = logging.StreamHandler(sys.stderr)
    if verbosity <= 0:
        stderr.setFormatter(_UserFormatter("%(message)s", _TIME, tracebacks=False))
    else:
        stderr.setFormatter(_LineFormatter(plain, _TIME, tracebacks=verbosity >= 2))
    _installed.append(stderr)
    if file_handler is not None:
        file_handler.setFormatter(_LineFormatter(plain, None, tracebacks=verbosity >= 2))
        _installed.append(file_handler)
    for handler in _installed:
        handler.addFilter(_Libp2pThreshold(theirs))
    _libp2p_level = theirs
    ours_logger = logging.getLogger("dmoa_p2p")
    ours_logger.handlers = list(_installed)
    ours_logger.setLevel(ours)
    ours_logger.propagate = False
    events = logging.WARNING if verbosity < 0 else min(ours, logging.INFO)
    logging.getLogger(EVENTS).setLevel(events)
    claim_libp2p_logger()


def claim_libp2p_logger() -> None:
    """(Re)attach our handlers to the `libp2p` logger; call it after importing libp2p.

    `import libp2p` runs its `setup_logging()`, which clears the `libp2p` logger's handlers
    and sets it to WARNING without propagation, so Python's last-resort handler then prints
    its warnings raw on stderr, whatever was configured before. With LIBP2P_DEBUG set the
    user asked for libp2p's own logging: it is left alone. Without `configure_logging` (a
    library user, a test) libp2p's records go nowhere unless the caller attaches a handler.
    """
    if os.environ.get("LIBP2P_DEBUG"):
        return
    logger = logging.getLogger(LIBP2P)
    logger.propagate = False
    if _libp2p_level is None:
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())
        return
    logger.handlers = list(_installed)
    logger.setLevel(_libp2p_level)


def _open_log_file(path: Path) -> logging.Handler:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return logging.FileHandler(path, mode="a", encoding="utf-8")
    except OSError as exc:
        raise LogFileError(f"cannot write the log file {path}: {exc.strerror or exc}") from exc
