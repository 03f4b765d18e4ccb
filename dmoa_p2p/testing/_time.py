"""Time for tests under trio's MockClock: a wall clock that follows it, and polling waits."""

from __future__ import annotations

from collections.abc import Callable

import trio

EPOCH = 1.8e9  # the wall clock message gates see: trio's (virtual) clock plus a fixed epoch


def wall_clock() -> float:
    """Seconds since the Unix epoch as the nodes see them: `EPOCH` plus trio's clock."""
    return EPOCH + trio.current_time()


async def wait_for(
    condition: Callable[[], bool], timeout_s: float = 30.0, *, poll_s: float = 0.1
) -> None:
    """Return once `condition()` holds, checked every `poll_s`; TooSlowError after `timeout_s`."""
    with trio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling other tasks' state is the point
            await trio.sleep(poll_s)
