"""One node per data directory: an exclusive lock held while the node runs."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from dmoa_p2p.config import ConfigError

LOCK_FILE_NAME = "node.lock"


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold `data_dir`'s lock for the block; ConfigError if another process holds it.

    Two nodes on one directory would share a key (and the swarm would drop one of them) and
    a control socket (the second would delete the first's when it stops). The lock is
    released by the kernel however the process ends, so a crash leaves nothing to clean up.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise ConfigError(
                f"a node is already running with data directory {data_dir} (pid {holder}); "
                "stop it, or give this one its own --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
