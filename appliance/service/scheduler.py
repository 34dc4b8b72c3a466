"""One engine, one generation at a time: a bounded queue in front of one engine worker thread.

The event loop submits :class:`Job` s; the worker thread runs ``generator.generate`` for one job at a
time and hands each event back to the loop with ``call_soon_threadsafe``. Cancellation is a
``threading.Event`` the generation loop checks once per token (``should_stop``), so a running job
stops within one token; a queued job that is cancelled leaves the queue at once and is skipped by the
worker. Prefix reuse needs nothing here: the Generator keeps the engine's KV cache between calls.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from appliance.errors import (
    ApplianceError,
    DeadlineExceeded,
    EngineError,
    QueueFull,
    ServiceUnavailable,
)
from appliance.generation.types import Finished, GenerationEvent, GenerationOptions, Message, TextDelta
from appliance.service.metrics import ServiceMetrics

__all__ = ["ChatGenerator", "Job", "Scheduler"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class ChatGenerator(Protocol):
    """What the scheduler needs from appliance.generation.loop.Generator."""

    def generate(
        self,
        messages: Sequence[Message],
        options: GenerationOptions,
        *,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[GenerationEvent]: ...

    def refuse_unfittable(self, messages: Sequence[Message], options: GenerationOptions) -> None:
        """Raise ContextOverflow for what can never fit, cheaply (it runs on the event loop)."""


class _End:
    """Marks the end of a job's event stream."""


_END = _End()
Item = GenerationEvent | ApplianceError | _End


@dataclass(eq=False)
class Job:
    """One chat request, from submission to its last event."""

    messages: tuple[Message, ...]
    options: GenerationOptions
    deadline: float  # time.monotonic()
    timeout_s: float
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    submitted: float = field(default_factory=time.monotonic)
    state: str = "queued"  # queued | running | done
    cancel_event: threading.Event = field(default_factory=threading.Event)
    items: asyncio.Queue[Item] = field(default_factory=asyncio.Queue)
    stop_error: ApplianceError | None = None  # why a running job was cut short (instead of its Finished)

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()


class Scheduler:
    """Owns the engine worker thread and the queue; all public methods run on the event loop."""

    def __init__(
        self,
        *,
        queue_size: int,
        metrics: ServiceMetrics,
        on_change: Callable[[int, int], None] | None = None,
    ) -> None:
        self.queue_size = queue_size
        self.metrics = metrics
        self._on_change = on_change
        self._generator: ChatGenerator | None = None
        self._waiting: dict[str, Job] = {}
        self._running: Job | None = None
        self._inbox: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._progress_at = time.monotonic()  # written by the engine thread at each step of a job
        self._thread = threading.Thread(target=self._work, name="llm-engine", daemon=True)
        self._thread.start()

    # -- state ---------------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def busy(self) -> bool:
        return self._running is not None

    def stalled_for(self) -> float:
        """Seconds the running job has gone without progress (0 when nothing runs)."""
        if self._running is None:
            return 0.0
        return max(0.0, time.monotonic() - self._progress_at)

    def fail_all(self, error: ApplianceError) -> None:
        """End every job with ``error`` from the loop side (the engine thread may never answer again)."""
        for job in [*self._waiting.values(), *([self._running] if self._running else [])]:
            job.cancel_event.set()
            job.items.put_nowait(error)
            job.items.put_nowait(_END)
        self._waiting.clear()
        self._running = None
        self._changed()

    @property
    def generator(self) -> ChatGenerator | None:
        return self._generator

    def _changed(self) -> None:
        self.metrics.queue_depth.set(len(self._waiting))
        self.metrics.running.set(1 if self._running else 0)
        if self._running is None and not self._waiting:
            self._idle.set()
        else:
            self._idle.clear()
        if self._on_change:
            self._on_change(1 if self._running else 0, len(self._waiting))

    # -- the worker thread ---------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            task = self._inbox.get()
            if task is None:
                return
            try:
                task()
            except BaseException:  # a task must never kill the only engine thread
                log.exception("engine task failed")

    async def run_on_engine_thread(self, func: Callable[[], T]) -> T:
        """Run ``func`` on the engine thread (model loading must happen where the engine runs)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()

        def task() -> None:
            try:
                result = func()
            except BaseException as exc:
                loop.call_soon_threadsafe(_set_exception, fut, exc)
            else:
                loop.call_soon_threadsafe(_set_result, fut, result)

        self._inbox.put(task)
        return await fut

    def set_generator(self, generator: ChatGenerator | None) -> None:
        """The generator new jobs run on; None while no model is loaded (models on demand)."""
        self._generator = generator

    # -- submitting and consuming --------------------------------------------------------------
    def submit(self, messages: Sequence[Message], options: GenerationOptions, *, timeout_s: float) -> Job:
        """Queue a generation. QueueFull when the queue is full, ServiceUnavailable when not ready."""
        if self._generator is None:
            raise ServiceUnavailable("the model is not loaded yet", hint="retry when GET /health answers 200")
        if (self._running is not None or self._waiting) and len(self._waiting) >= self.queue_size:
            self.metrics.rejected.inc()
            raise QueueFull(
                f"busy: one request is generating and {len(self._waiting)} are waiting "
                f"(scheduler.queue_size is {self.queue_size})",
                hint="retry after the Retry-After seconds, or raise scheduler.queue_size",
            )
        self._loop = asyncio.get_running_loop()
        job = Job(
            messages=tuple(messages),
            options=options,
            deadline=time.monotonic() + timeout_s,
            timeout_s=timeout_s,
        )
        self._waiting[job.id] = job
        self._changed()
        generator = self._generator
        self._inbox.put(lambda: self._run(job, generator))
        return job

    def cancel(self, job: Job) -> None:
        """Stop a job: a queued one leaves the queue now, a running one stops within one token."""
        job.cancel_event.set()
        if self._waiting.pop(job.id, None) is not None:
            job.state = "done"
            self._changed()

    async def events(self, job: Job) -> AsyncIterator[GenerationEvent]:
        """The job's events; an ApplianceError from the engine side is raised here."""
        while True:
            item = await job.items.get()
            if isinstance(item, _End):
                return
            if isinstance(item, ApplianceError):
                raise item
            yield item

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def cancel_all(self, error: ApplianceError | None = None) -> None:
        """Cancel every job; with ``error`` each one ends with it, so that its client is told why
        (a queued one before any text, a running one instead of a final record that looks complete)."""
        for job in list(self._waiting.values()):
            if error is not None:
                job.items.put_nowait(error)
            self.cancel(job)
        if self._running is not None:
            self._running.stop_error = error
            self._running.cancel_event.set()

    def shutdown(self) -> None:
        self.cancel_all()
        self._inbox.put(None)

    # -- engine-thread side --------------------------------------------------------------------
    def _post(self, job: Job, item: Item) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(job.items.put_nowait, item)

    def _started(self, job: Job) -> None:
        self._progress_at = time.monotonic()
        self._waiting.pop(job.id, None)
        self._running = job
        job.state = "running"
        self._changed()

    def _finished(self, job: Job) -> None:
        if self._running is job:
            self._running = None
        job.state = "done"
        self._changed()

    def _run(self, job: Job, generator: ChatGenerator) -> None:
        assert self._loop is not None
        if job.cancelled:  # left the queue already; the loop side removed it
            self._post(job, _END)
            return
        if time.monotonic() > job.deadline:
            self._loop.call_soon_threadsafe(self._waiting.pop, job.id, None)
            self._loop.call_soon_threadsafe(self._changed)
            self._post(job, _deadline_error(job, queued=True))
            self._post(job, _END)
            return
        self._loop.call_soon_threadsafe(self._started, job)

        def should_stop() -> bool:  # asked at every token and every prefill chunk: that is progress
            now = time.monotonic()
            self._progress_at = now
            return job.cancel_event.is_set() or now > job.deadline

        last = job.submitted
        first = True
        try:
            self._progress_at = time.monotonic()
            for event in generator.generate(job.messages, job.options, should_stop=should_stop):
                self._progress_at = time.monotonic()
                if isinstance(event, TextDelta):
                    now = time.monotonic()
                    (self.metrics.ttft if first else self.metrics.token_latency).observe(now - last)
                    first, last = False, now
                elif isinstance(event, Finished):
                    self._account(event)
                    if event.done_reason == "cancelled" and not job.cancelled:
                        self._post(job, _deadline_error(job, queued=False))
                        continue
                    if event.done_reason == "cancelled" and job.stop_error is not None:
                        self._post(job, job.stop_error)
                        continue
                self._post(job, event)
        except ApplianceError as exc:
            self._post(job, exc)
        except Exception as exc:
            log.exception("generation failed", extra={"REQUEST_ID": job.id})
            self._post(job, EngineError(f"generation failed: {type(exc).__name__}: {exc}"))
        finally:
            self._loop.call_soon_threadsafe(self._finished, job)
            self._post(job, _END)

    def _account(self, event: Finished) -> None:
        t = event.timings
        self.metrics.generations.labels(event.done_reason).inc()
        self.metrics.tokens_in.inc(t.prompt_eval_count)
        self.metrics.tokens_reused.inc(t.reused_tokens)
        self.metrics.tokens_out.inc(t.eval_count)


def _deadline_error(job: Job, *, queued: bool) -> DeadlineExceeded:
    where = "while waiting in the queue" if queued else "while generating"
    return DeadlineExceeded(
        f"the request's deadline of {job.timeout_s:g} s passed {where}",
        hint="send a shorter request or raise scheduler.request_timeout_s",
    )


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
