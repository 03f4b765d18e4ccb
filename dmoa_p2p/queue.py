"""The bounded FCFS queue in front of a node's LLM, with online estimates of its load."""

from __future__ import annotations

import collections
import statistics
from collections.abc import Callable, Sequence

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


class QueueFull(Exception):
    """The queue holds `capacity` prompts already; try again later."""

    def __init__(self, capacity: int, retry_after_s: float) -> None:
        super().__init__(
            f"the model's queue is full ({capacity} prompts); retry in {retry_after_s:.1f} s"
        )
        self.capacity = capacity
        self.retry_after_s = retry_after_s


@attrs.frozen
class Served:
    generation: Generation
    queue_wait_s: float
    service_s: float


@attrs.define
class _Job:
    messages: Sequence[ChatMessage]
    params: GenerationParams
    enqueued_at: float
    on_text: TextCallback | None = None
    done: trio.Event = attrs.field(factory=trio.Event)
    result: Served | None = None
    error: BaseException | None = None


class RateWindow:
    """Events per second from the last `count` events, none older than `max_age_s`.

    Counting events rather than seconds keeps enough samples whatever the rate. Unbiased for
    Poisson events in both cases: while the window is not full, count / time observed; once
    full, the time back to its oldest event spans `count` gaps, and (count − 1) / span is the
    unbiased rate for such a Gamma-distributed span.
    """

    def __init__(self, clock: Callable[[], float], count: int, max_age_s: float) -> None:
        self._clock = clock
        self.max_age_s = max_age_s
        self._times: collections.deque[float] = collections.deque(maxlen=count)
        self._started = clock()

    def observe(self) -> None:
        self._times.append(self._clock())

    @property
    def rate(self) -> float | None:
        now = self._clock()
        while self._times and self._times[0] < now - self.max_age_s:
            self._times.popleft()
        if len(self._times) == self._times.maxlen:
            return (len(self._times) - 1) / max(now - self._times[0], 1e-9)
        span = min(self.max_age_s, now - self._started)
        return len(self._times) / span if span > 0 else None


class LoadEstimator:
    """Service time mean and variance, and the users' prompt rates, over recent windows.

    The mean and variance are those of the last `service_window` service times (which follows
    a model whose speed drifts). Prompt rates come from the last `arrival_window` prompts:
    `arrival_rate` counts every prompt users send (what admission must judge), and
    `admitted_rate` those admitted (what loads this device). Admission compares the busiest
    device's utilisation against ρ_max, and the maximum of a few noisy estimates is biased
    upwards, so short windows would make a swarm refuse work it could do.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        service_window: int = 64,
        arrival_window: int = 64,
        max_age_s: float = 600.0,
    ) -> None:
        self._services: collections.deque[float] = collections.deque(maxlen=service_window)
        self._offered = RateWindow(clock, arrival_window, max_age_s)
        self._admitted = RateWindow(clock, arrival_window, max_age_s)

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
        return statistics.variance(self._services) if len(self._services) > 1 else 0.0

    @property
    def arrival_rate(self) -> float | None:
        """User prompts per second, refused ones included."""
        return self._offered.rate

    @property
    def admitted_rate(self) -> float | None:
        """User prompts per second that admission let through."""
        return self._admitted.rate


class InferenceQueue:
    """One LLM, one prompt at a time, first come first served, at most `capacity` held."""

    def __init__(self, backend: Backend, capacity: int) -> None:
        self.backend = backend
        self.capacity = capacity
        self.load = LoadEstimator(trio.current_time)
        self._waiting: collections.deque[_Job] = collections.deque()
        self._wakeup = trio.Event()
        self._in_service = 0
        self.served = 0
        self.failed = 0

    @property
    def length(self) -> int:
        """Prompts waiting plus the one being served."""
        return len(self._waiting) + self._in_service

    def retry_after_s(self) -> float:
        mean = self.load.mean_service_s or 1.0
        return max(0.1, mean * self.length)

    async def submit(
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        on_text: TextCallback | None = None,
    ) -> Served:
        """Queue a prompt and wait for its answer; raise QueueFull at capacity.

        With `on_text`, the answer's text is also passed to it piece by piece while the model
        produces it (in one piece at the end for backends that cannot stream). Calls may go
        on after the asker gave up mid-answer, so `on_text` must tolerate that.
        """
        if self.length >= self.capacity:
            raise QueueFull(self.capacity, self.retry_after_s())
        job = _Job(messages, params, trio.current_time(), on_text)
        self._waiting.append(job)
        self._wakeup.set()
        try:
            await job.done.wait()
        finally:
            if not job.done.is_set() and job in self._waiting:
                # the asker gave up while waiting: don't spend the model on it
                self._waiting.remove(job)
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve queued prompts until cancelled."""
        task_status.started()
        while True:
            if not self._waiting:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                continue
            job = self._waiting.popleft()
            self._in_service = 1
            try:
                await self._serve(job)
            finally:
                self._in_service = 0

    async def _serve(self, job: _Job) -> None:
        started = trio.current_time()
        try:
            generation = await self._generate(job)
        except Exception as exc:  # the asker gets the error; the queue keeps serving
            self.failed += 1
            job.error = exc
        else:
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
