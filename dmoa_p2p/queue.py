"""The bounded queue in front of a node's LLM, fair among origins, with estimates of its load."""

from __future__ import annotations

import collections
import math
import statistics
from collections.abc import Callable, Sequence
from typing import Literal

import attrs
import trio

from dmoa_p2p.backends import (
    Backend,
    ChatMessage,
    Generation,
    GenerationParams,
    StreamingBackend,
    TextCallback,
)

# Why a queue refused a prompt: all its slots are taken; peers' tasks hold every slot not
# reserved for this node's own users; this one peer holds as many as one peer may.
QueueFullCause = Literal["queue_full", "peers_share_full", "origin_share_full"]


class QueueFull(Exception):
    """The queue, or the share of it the asker may hold, is full; try again later.

    `cause` says which (see `QueueFullCause`); the message says it in words. The wait is
    `retry_after_s` alone, not in the message: whoever passes the refusal on states it in
    its own terms (whole seconds in HTTP's Retry-After, seconds on the wire), and a message
    quoted in a trace or in another refusal must not contradict that.
    """

    def __init__(
        self, cause: QueueFullCause, reason: str, capacity: int, retry_after_s: float
    ) -> None:
        super().__init__(reason)
        self.cause: QueueFullCause = cause
        self.reason = reason
        self.capacity = capacity
        self.retry_after_s = retry_after_s


def default_reserved(capacity: int) -> int:
    """Slots kept for the node's own users: a quarter, at least 1 (none in a one-slot queue,
    which could otherwise never serve a peer)."""
    return 0 if capacity <= 1 else max(1, capacity // 4)


def default_per_origin(capacity: int, reserved: int) -> int:
    """Slots one peer may hold: a quarter of the peers' share, at least 1."""
    return max(1, (capacity - reserved) // 4)


@attrs.frozen
class Served:
    generation: Generation
    queue_wait_s: float
    service_s: float


@attrs.define(eq=False)  # a job is itself: queues find and remove it by identity
class _Job:
    messages: Sequence[ChatMessage]
    params: GenerationParams
    enqueued_at: float
    origin: str | None
    on_text: TextCallback | None = None
    done: trio.Event = attrs.field(factory=trio.Event)
    result: Served | None = None
    error: BaseException | None = None
    serving: trio.CancelScope = attrs.field(factory=trio.CancelScope)  # its model call


class RateWindow:
    """Events per second from the last `count` events, none older than `max_age_s`, each
    weighed by exp(−age / `decay_s`), so that the rate falls with time and not only with
    new events: a burst followed by silence fades with time constant `decay_s`.

    Counting events rather than seconds keeps enough samples whatever the rate. Unbiased for
    Poisson events whatever `decay_s`. While the window is not full: the weighted count over
    the weighted time observed (by Campbell's theorem the weighted count's mean is λ times
    the weighted time). Once full: the window begins at its oldest event, and the other
    count − 1, given where it begins, lie uniformly in the span back to it, so their
    weighted count over the weighted span has the mean (count − 1) / span given the span,
    the unbiased rate for the Gamma-distributed span of `count` gaps. Events far closer
    together than `decay_s` weigh nearly 1 (the plain count, as admission needs under load);
    far apart, this is an exponentially weighted average over about `decay_s` seconds.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        count: int,
        max_age_s: float,
        decay_s: float = math.inf,
    ) -> None:
        if not decay_s > 0:
            raise ValueError(f"decay_s must be above 0, not {decay_s}")
        self._clock = clock
        self.max_age_s = max_age_s
        self.decay_s = decay_s
        self._times: collections.deque[float] = collections.deque(maxlen=count)
        self._started = clock()

    def observe(self) -> None:
        self._times.append(self._clock())

    @property
    def rate(self) -> float | None:
        now = self._clock()
        while self._times and self._times[0] < now - self.max_age_s:
            self._times.popleft()
        weights = [self._weight(now - at) for at in self._times]
        if len(self._times) == self._times.maxlen:
            span = self._weighted_time(now - self._times[0])
            return math.fsum(weights[1:]) / max(span, 1e-9)
        span = min(self.max_age_s, now - self._started)
        return math.fsum(weights) / self._weighted_time(span) if span > 0 else None

    def _weight(self, age: float) -> float:
        return math.exp(-age / self.decay_s)

    def _weighted_time(self, span: float) -> float:
        """The integral of the weight over the last `span` seconds."""
        if math.isinf(self.decay_s):
            return span
        return -self.decay_s * math.expm1(-span / self.decay_s)


class LoadEstimator:
    """Service time mean and variance, and the users' prompt rates, over recent windows.

    The mean and variance are those of the last `service_window` service times (which follows
    a model whose speed drifts). Prompt rates come from the last `arrival_window` prompts:
    `arrival_rate` counts every prompt users send (what admission must judge), and
    `admitted_rate` those admitted (what loads this device). Admission compares the busiest
    device's utilisation against ρ_max, and the maximum of a few noisy estimates is biased
    upwards, so short windows would make a swarm refuse work it could do. The rates fade
    with time constant `rate_decay_s` (see RateWindow): a swarm left idle after a burst
    does not go on looking loaded until `max_age_s` has passed.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        service_window: int = 64,
        arrival_window: int = 64,
        max_age_s: float = 600.0,
        rate_decay_s: float = 60.0,
    ) -> None:
        self._services: collections.deque[float] = collections.deque(maxlen=service_window)
        self._offered = RateWindow(clock, arrival_window, max_age_s, rate_decay_s)
        self._admitted = RateWindow(clock, arrival_window, max_age_s, rate_decay_s)

    def observe_service(self, seconds: float) -> None:
        self._services.append(seconds)

    def observe_arrival(self) -> None:
        """A user sent a prompt (admitted or not)."""
        self._offered.observe()

    def observe_admitted(self) -> None:
        self._admitted.observe()

    @property
    def service_samples(self) -> int:
        """How many service times the mean and variance rest on."""
        return len(self._services)

    @property
    def mean_service_s(self) -> float | None:
        return statistics.fmean(self._services) if self._services else None

    @property
    def service_var_s2(self) -> float | None:
        if not self._services:
            return None
        if len(self._services) < 2:
            return 0.0
        # in floats: statistics.variance's exact fractions cost 130 µs a call, 5 % of a
        # loaded n = 1000 simulation's CPU, for digits no estimate needs
        mean = statistics.fmean(self._services)
        return math.fsum((x - mean) ** 2 for x in self._services) / (len(self._services) - 1)

    @property
    def arrival_rate(self) -> float | None:
        """User prompts per second, refused ones included."""
        return self._offered.rate

    @property
    def admitted_rate(self) -> float | None:
        """User prompts per second that admission let through."""
        return self._admitted.rate


class InferenceQueue:
    """One LLM, one prompt at a time, at most `capacity` held, shared fairly among origins.

    A prompt's origin is None for this node's own users and a peer id for a peer's task.
    Peers' tasks together hold at most `capacity − reserved` slots, so the node's own users
    always find `reserved` free (a quarter by default, see `default_reserved`), and one peer
    at most `per_origin` (`default_per_origin`). Service is round robin over the origins that
    have prompts waiting (own users count as one origin), first come first served within an
    origin: a flooding peer delays another origin's next prompt by one service per turn.

    The order is work-conserving (the model never idles while a prompt waits), so Theorem 1's
    stability condition is unchanged; and since it does not look at service times, with iid
    service times and the same arrivals the number in system has the same law as under FCFS,
    hence the same mean (and, by Little's law, the same mean sojourn over all prompts). Only
    who waits changes. (In a swarm a layer's tasks go out when the previous layer is done,
    so arrivals do depend on the order: BENCHMARKS.md, "Fair share", measures that.)
    """

    def __init__(
        self,
        backend: Backend,
        capacity: int,
        reserved: int | None = None,
        per_origin: int | None = None,
    ) -> None:
        self.backend = backend
        self.capacity = capacity
        self.reserved = default_reserved(capacity) if reserved is None else reserved
        if not 0 <= self.reserved <= capacity:
            raise ValueError(f"reserved = {self.reserved} is not within 0..{capacity}")
        self.per_origin = (
            default_per_origin(capacity, self.reserved) if per_origin is None else per_origin
        )
        if self.per_origin < 1:
            raise ValueError(f"per_origin = {self.per_origin} must be at least 1")
        self.load = LoadEstimator(trio.current_time)
        self._waiting: dict[str | None, collections.deque[_Job]] = {}
        self._turns: collections.deque[str | None] = collections.deque()  # round-robin order
        self._held: collections.Counter[str | None] = collections.Counter()  # waiting + served
        self._length = 0
        self._wakeup = trio.Event()
        self.served = 0
        self.failed = 0
        self.abandoned = 0  # calls stopped mid-answer because their asker left

    @property
    def length(self) -> int:
        """Prompts waiting plus the one being served."""
        return self._length

    @property
    def peers_held(self) -> int:
        """Peers' tasks waiting or in service."""
        return self._length - self._held[None]

    def held_by(self, origin: str | None) -> int:
        """Prompts of `origin` (None: own users) waiting or in service."""
        return self._held[origin]

    def retry_after_s(self) -> float:
        mean = self.load.mean_service_s or 1.0
        return max(0.1, mean * self.length)

    async def submit(
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        on_text: TextCallback | None = None,
        *,
        origin: str | None = None,
    ) -> Served:
        """Queue a prompt of `origin` (None: this node's own users; else the peer's id) and
        wait for its answer; raise QueueFull when the queue or the origin's share is full.

        With `on_text`, the answer's text is also passed to it piece by piece while the model
        produces it (in one piece at the end for backends that cannot stream). Calls may go
        on after the asker gave up mid-answer, so `on_text` must tolerate that.
        """
        self._check_room(origin)
        job = _Job(messages, params, trio.current_time(), origin, on_text)
        self._hold(job)
        try:
            await job.done.wait()
        finally:
            # the asker gave up: a waiting prompt leaves the line, one being answered stops
            # (streaming backends stop between tokens), so the model moves on at once
            if not job.done.is_set() and self._withdraw(job):
                self._release(job)
            elif not job.done.is_set():
                job.serving.cancel()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def _check_room(self, origin: str | None) -> None:
        if self._length >= self.capacity:
            reason = f"the model's queue is full ({self.capacity} prompts)"
            raise QueueFull("queue_full", reason, self.capacity, self.retry_after_s())
        if origin is None:
            return
        share = self.capacity - self.reserved
        if self.peers_held >= share:
            reason = (
                f"this node's queue share for peers is full ({share} of {self.capacity} "
                f"slots; {self.reserved} are kept for its own users)"
            )
            raise QueueFull("peers_share_full", reason, self.capacity, self.retry_after_s())
        if self._held[origin] >= self.per_origin:
            reason = f"this node's queue share for peer {origin} is full ({self.per_origin} slots)"
            raise QueueFull("origin_share_full", reason, self.capacity, self.retry_after_s())

    def _hold(self, job: _Job) -> None:
        if job.origin not in self._waiting:
            self._waiting[job.origin] = collections.deque()
            self._turns.append(job.origin)
        self._waiting[job.origin].append(job)
        self._held[job.origin] += 1
        self._length += 1
        self._wakeup.set()

    def _withdraw(self, job: _Job) -> bool:
        """Take a waiting job out of its origin's line; False if it is not waiting."""
        jobs = self._waiting.get(job.origin)
        if jobs is None or job not in jobs:
            return False
        jobs.remove(job)
        if not jobs:
            del self._waiting[job.origin]
            self._turns.remove(job.origin)
        return True

    def _next(self) -> _Job:
        """The next origin's first job; that origin goes to the back of the line."""
        origin = self._turns.popleft()
        jobs = self._waiting[origin]
        job = jobs.popleft()
        if jobs:
            self._turns.append(origin)
        else:
            del self._waiting[origin]
        return job

    def _release(self, job: _Job) -> None:
        self._held[job.origin] -= 1
        if not self._held[job.origin]:
            del self._held[job.origin]  # memory stays bounded by the origins holding slots
        self._length -= 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve queued prompts until cancelled."""
        task_status.started()
        while True:
            if not self._turns:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                continue
            job = self._next()
            try:
                await self._serve(job)
            finally:
                self._release(job)

    async def _serve(self, job: _Job) -> None:
        started = trio.current_time()
        try:
            with job.serving:
                generation = await self._generate(job)
        except Exception as exc:  # the asker gets the error; the queue keeps serving
            self.failed += 1
            job.error = exc
        else:
            if job.serving.cancelled_caught:  # its asker left: nobody reads it; not timed
                self.abandoned += 1
                job.done.set()
                return
            service_s = trio.current_time() - started
            self.load.observe_service(service_s)
            self.served += 1
            job.result = Served(generation, started - job.enqueued_at, service_s)
        job.done.set()

    async def _generate(self, job: _Job) -> Generation:
        if job.on_text is None:
            return await self.backend.generate(job.messages, job.params)
        if isinstance(self.backend, StreamingBackend):
            return await self.backend.generate_stream(job.messages, job.params, job.on_text)
        generation = await self.backend.generate(job.messages, job.params)
        job.on_text(generation.text)
        return generation
