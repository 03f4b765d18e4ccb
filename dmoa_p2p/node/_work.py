"""Which peers a node has MoA work outstanding with: a task it sent or owes an answer to."""

from __future__ import annotations

from collections.abc import Callable

from dmoa_p2p.wire import Message, Proposal, Refusal, Task

# a connection stays in use this long after its last task was answered, so that the
# origin's next layer or the proposer's next task from the same origin needs no new dial
LINGER_S = 10.0
MAX_REMEMBERED = 4096  # open tasks, and answered peers; beyond it the ended are forgotten


class OutstandingWork:
    """A task is open from when it is sent or received until its proposal or refusal
    passes the other way; one never answered closes at its deadline."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._open: dict[str, dict[tuple[str, int], float]] = {}  # peer -> task -> deadline
        self._answered: dict[str, float] = {}  # peer -> when its last task was answered
        self._count = 0  # open tasks
        self._forgot_at = -float("inf")

    def passed(self, peer_id: str, message: Message) -> None:
        """`message` went to or came from `peer_id`, the other end of its task."""
        if isinstance(message, Task):
            if self._count >= MAX_REMEMBERED:
                self._forget_ended()
                if self._count >= MAX_REMEMBERED:
                    return  # under a flood: its connection may close, nothing grows
            tasks = self._open.setdefault(peer_id, {})
            key = (message.query_id, message.layer)
            self._count += key not in tasks
            tasks[key] = self._clock() + message.deadline_s
        elif isinstance(message, Proposal | Refusal) and self._end(peer_id, message):
            if len(self._answered) >= MAX_REMEMBERED:
                self._forget_ended()
            self._answered[peer_id] = self._clock()

    def unsent(self, peer_id: str, message: Message) -> None:
        """`message` never reached `peer_id`: a task it would have opened is not open."""
        if isinstance(message, Task):
            self._end(peer_id, message)

    def in_use(self, peer_id: str) -> bool:
        """Whether a task with `peer_id` is open, or was answered within LINGER_S."""
        now = self._clock()
        answered = self._answered.get(peer_id)
        if answered is not None and now - answered < LINGER_S:
            return True
        return any(deadline > now for deadline in self._open.get(peer_id, {}).values())

    def worked_with(self, peer_id: str) -> bool:
        """Whether `peer_id` had a task with this node (lately: the oldest are forgotten)."""
        return peer_id in self._open or peer_id in self._answered

    def _end(self, peer_id: str, message: Task | Proposal | Refusal) -> bool:
        """Close the task `message` belongs to; False if it was not open."""
        tasks = self._open.get(peer_id, {})
        if tasks.pop((message.query_id, message.layer), None) is None:
            return False
        self._count -= 1
        if not tasks:
            del self._open[peer_id]
        return True

    def _forget_ended(self) -> None:
        now = self._clock()
        if now - self._forgot_at < 1.0:  # a flood is not scanned once per message
            return
        self._forgot_at = now
        self._answered = {p: t for p, t in self._answered.items() if now - t < LINGER_S}
        for peer_id in list(self._open):
            tasks = {key: d for key, d in self._open[peer_id].items() if d > now}
            self._count -= len(self._open[peer_id]) - len(tasks)
            if tasks:
                self._open[peer_id] = tasks
            else:
                del self._open[peer_id]
