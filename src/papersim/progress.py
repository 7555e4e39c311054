"""Progress lines for long steps, so that a person can tell a working stage from a hung one.

    with Progress("encoding", total=len(texts), unit="texts") as progress:
        for batch in batches:
            ...
            progress.advance(len(batch))

writes `encoding 12,800/98,000 texts (1,020/s, ~1m23s left)` every `interval` seconds and a final
`encoding 98,000/98,000 texts done in 1m36s (1,021/s)`. The interval counts from the last line any step
wrote: a step that ends within it writes nothing, unless the process had already been quiet that long
(steps of a few seconds each, one after another, would otherwise add up to a long silence). A caller
names what the lines are about (`working_on("cranfield documents, trained encoder")`) without threading
a label through every function: the label is a context variable. Opaque calls that report no counts
(a third-party validation, a model conversion, faiss' training) get a `Heartbeat`, which speaks only
when nothing else did, and counts slower than the interval (a training step on a busy CPU) a ticking
Progress (`start_ticking`).

Lines go through `logging` ("papersim.progress", INFO); papersim.stage shows them on stderr with the
stage's name in front, which is where DVC and the retrain flow show a stage's output.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

LOGGER = logging.getLogger("papersim.progress")
INTERVAL_S = 5.0  # a line every 5 s: motion well within 10 s; a 10-minute step writes ~120 lines, not a bar a batch

Clock = Callable[[], float]  # seconds, monotonic
T = TypeVar("T")

_about: ContextVar[tuple[str, ...]] = ContextVar("papersim_progress_about", default=())
_LOCK = threading.Lock()
_last_line: dict[Clock, float] = {time.monotonic: time.monotonic()}  # per clock: when a line was last written


@contextmanager
def working_on(what: str) -> Iterator[None]:
    """Name what the progress lines written inside the block are about; nested names join with ": "."""
    token = _about.set((*_about.get(), what))
    try:
        yield
    finally:
        _about.reset(token)


def about(label: str) -> str:
    """`label` behind the names `working_on` gave the current block: "cranfield documents: encoding"."""
    return ": ".join((*_about.get(), label))


def duration(seconds: float) -> str:
    """4s, 1m23s, 2h05m: a person's estimate, not a measurement."""
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def rate(per_second: float) -> str:
    """1,020/s, 3.4/s, or 2.5s each for slow steps (a training step)."""
    if per_second >= 10:
        return f"{per_second:,.0f}/s"
    if per_second >= 1:
        return f"{per_second:.1f}/s"
    return f"{1 / per_second:.1f}s each" if per_second > 0 else ""


class Progress:
    """Counts of one step, written at most every `interval` seconds of `clock`, and a final line when
    the step took longer than that. `start`: what an earlier run already did (resumed training): counted
    in the lines, not in the rate. `eta=False` for counts of unlike cost (settings tried: the first encodes,
    the last only fuses), whose rate would promise a wrong time left: the lines say the time so far."""

    def __init__(self, label: str, total: int | None = None, unit: str = "items", interval: float | None = None,
                 clock: Clock = time.monotonic, logger: logging.Logger = LOGGER, start: int = 0,
                 eta: bool = True) -> None:
        self.label, self.total, self.unit, self.eta = about(label), total, unit, eta
        self.interval = INTERVAL_S if interval is None else interval  # read when made: a test may lower it
        self.clock, self.logger = clock, logger
        self.count, self.start = start, start
        self.detail = ""  # appended to every line, e.g. the latest training loss
        self.started = clock()
        self.finished = False
        self._ticking: _Every | None = None
        with _LOCK:
            _last_line.setdefault(clock, self.started)  # a clock not seen before: quiet since now

    def advance(self, n: int = 1) -> None:
        self.count += n
        self.tick()

    def tick(self) -> None:
        """Write the counts if `interval` has passed since the last line (of any step); the last count is
        left to the final line."""
        now = self.clock()
        with _LOCK:
            if (self.finished or now - _last_line[self.clock] < self.interval
                    or self.total is not None and self.count >= self.total):
                return
            _last_line[self.clock] = now
        self._write(self.line(now))

    def start_ticking(self) -> None:
        """Lines also while a count takes longer than the interval (a training step on a busy CPU): `tick()`
        from a thread, every second, until `stop_ticking()` or `done()`."""
        self.stop_ticking()
        self._ticking = _Every(min(self.interval, 1.0), self.tick).start()

    def stop_ticking(self) -> None:
        if self._ticking is not None:
            self._ticking.stop()
            self._ticking = None

    def done(self) -> None:
        """The final line, only for a step long enough to have shown progress; once."""
        self.stop_ticking()
        now = self.clock()
        with _LOCK:
            if self.finished:
                return
            self.finished = True
            if now - self.started < self.interval:
                return
            _last_line[self.clock] = now
        self._write(self.final_line(now))

    def _counts(self) -> str:
        return f"{self.count:,}/{self.total:,} {self.unit}" if self.total is not None else f"{self.count:,} {self.unit}"

    def _rate(self, now: float) -> float:
        return (self.count - self.start) / max(now - self.started, 1e-9)

    def line(self, now: float) -> str:
        per_second, elapsed = self._rate(now), now - self.started
        if per_second <= 0 or not self.eta:
            parts = [f"{duration(elapsed)} so far"]
        elif self.total is None:
            parts = [rate(per_second), f"{duration(elapsed)} so far"]
        else:
            parts = [rate(per_second), f"~{duration(max(self.total - self.count, 0) / per_second)} left"]
        return f"{self.label} {self._counts()} ({', '.join(parts)}{self._detail()})"

    def final_line(self, now: float) -> str:
        per_second = self._rate(now) if self.eta else 0.0
        return (f"{self.label} {self._counts()} done in {duration(now - self.started)}"
                + (f" ({rate(per_second)}{self._detail()})" if per_second > 0 else ""))

    def _detail(self) -> str:
        return f"; {self.detail}" if self.detail else ""

    def _write(self, line: str) -> None:
        self.logger.info(line)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.stop_ticking()
        if kind is None:  # a failure speaks for itself: no "done" line
            self.done()


def track(items: Iterable[T], label: str, total: int | None = None, unit: str = "items",
          size: Callable[[T], int] | None = None, **options) -> Iterator[T]:
    """`items`, counting each one (`size(item)` of `unit`, 1 by default) once the caller is done with it;
    `total` defaults to len(items) when it has one and no `size` is given. `options`: Progress's."""
    if total is None and size is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(label, total, unit, **options) as progress:
        for item in items:
            yield item
            progress.advance(size(item) if size is not None else 1)


class _Every:
    """`action()` every `seconds` from a daemon thread, from start() until stop()."""

    def __init__(self, seconds: float, action: Callable[[], None]) -> None:
        self.seconds, self.action = seconds, action
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="papersim-progress", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            self.action()

    def start(self) -> "_Every":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()


class Heartbeat:
    """A line while an opaque call runs (one that reports no counts), from a background thread, whenever
    nothing else wrote one for `interval` seconds: `validating at step 60 (15s so far)`; nothing when the
    call ends sooner, nor while the steps inside it write their own lines. A context manager, or
    start()/stop() where the start and the end are seen in different places (a trainer's callbacks)."""

    def __init__(self, label: str, interval: float | None = None, clock: Clock = time.monotonic,
                 logger: logging.Logger = LOGGER) -> None:
        self.label, self.clock, self.logger = about(label), clock, logger
        self.interval = INTERVAL_S if interval is None else interval
        self.started = clock()
        self._every: _Every | None = None
        with _LOCK:
            _last_line.setdefault(clock, self.started)

    def beat(self) -> None:
        """Write the line if nothing was written for `interval` seconds (the thread calls this every second)."""
        now = self.clock()
        with _LOCK:
            if now - _last_line[self.clock] < self.interval:
                return
            _last_line[self.clock] = now
        self.logger.info(f"{self.label} ({duration(now - self.started)} so far)")

    def start(self) -> "Heartbeat":
        self.stop()
        self.started = self.clock()
        self._every = _Every(min(self.interval / 5, 1.0), self.beat).start()
        return self

    def stop(self) -> None:
        if self._every is not None:
            self._every.stop()
            self._every = None

    def __enter__(self) -> "Heartbeat":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
