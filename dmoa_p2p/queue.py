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


class LoadEstimator:
    """Service time mean and variance, and user-prompt arrival rate, over recent windows.

    Both windows count events rather than seconds, so every estimate rests on enough samples
    whatever the rates: the mean and variance are those of the last `service_window` service
    times (which follows a model whose speed drifts), and the arrival rate comes from the last
    `arrival_window` user prompts, none older than `max_age_s`. Admission compares the
    busiest device's utilisation against ρ_max, and the maximum of a few noisy estimates is
    biased upwards, so short windows would make a swarm refuse work it could do.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        service_window: int = 64,
        arrival_window: int = 64,
        max_age_s: float = 600.0,
    ) -> None:
        self._clock = clock
        self.max_age_s = max_age_s
        self._services: collections.deque[float] = collections.deque(maxlen=service_window)
        self._arrivals: collections.deque[float] = collections.deque(maxlen=arrival_window)
        self._started = clock()

    def observe_service(self, seconds: float) -> None:
        self._services.append(seconds)

    def observe_arrival(self) -> None:
        self._arrivals.append(self._clock())

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
        """Prompts per second: unbiased for Poisson arrivals in both of its cases."""
        now = self._clock()
        while self._arrivals and self._arrivals[0] < now - self.max_age_s:
            self._arrivals.popleft()
        if len(self._arrivals) == self._arrivals.maxlen:
            # a full window: the time back to its oldest arrival spans `maxlen` gaps, and
            # (count - 1) / span is the unbiased rate for a Gamma-distributed span
            return (len(self._arrivals) - 1) / max(now - self._arrivals[0], 1e-9)
        span = min(self.max_age_s, now - self._started)
        if span <= 0:
            return None
        return len(self._arrivals) / span


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
