"""``usage-collector serve``: run one collection cycle every interval, in the foreground.

The scheduler is APScheduler 3.x's ``BlockingScheduler`` with an in-memory job store: the checkpoint in the
sink is the real state, so the scheduler keeps none (``shared/reference/delivery-semantics.md`` §5). One job,
an interval trigger, and these job options:

* ``coalesce=True`` — when several runs were missed (the process was suspended, the host slept, a cycle
  overran), they are collapsed into **one** run, not replayed back to back.
* ``max_instances=1`` — a cycle never overlaps the previous one; a run that comes due while a cycle is still
  going is skipped (APScheduler logs "maximum number of running instances reached").
* ``misfire_grace_time=None`` — a late run still runs, however late (APScheduler's default of 1 s would drop
  it; see agronholm/apscheduler#296).

The first cycle starts after a random delay in ``[0, jitter]`` so that many collectors restarted together do
not hit the API in the same second; later cycles follow every ``interval`` from there.

Stopping: SIGTERM or SIGINT sets the stop event that is passed to the cycle and pauses the scheduler (no run
comes due any more, so APScheduler never logs "maximum number of running instances reached" while the last
cycle winds down). The collector checks the event between windows, so the window being written finishes and
its checkpoint lands; no new cycle starts. ``serve`` then shuts the scheduler down, logs "stopped" and returns
``0``; "stopped" is its last line: a cycle it gave up on (below) logs nothing after it. If the cycle has not
finished within ``stop_timeout`` seconds (or a second signal arrives) it returns :data:`EXIT_STOP_TIMEOUT`
without waiting further: the cycle runs in a daemon thread, so the process can exit; the unfinished window is
re-read by the next run (its checkpoint did not move).
Keep ``stop_timeout`` below systemd's ``TimeoutStopSec=`` and Kubernetes' ``terminationGracePeriodSeconds``.

Example::

    from usage_collector.schedule import serve
    rc = serve(lambda stop: collector_for(stop).run_cycle(), interval=300, jitter=30)
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
import types
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from threading import TIMEOUT_MAX
from typing import Any

from apscheduler.executors.base import BaseExecutor, run_job
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.base import STATE_STOPPED
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from .clock import Clock, SystemClock
from .errors import ConfigError

__all__ = [
    "EXIT_OK",
    "EXIT_STOP_TIMEOUT",
    "JOB_ID",
    "Server",
    "serve",
]

log = logging.getLogger(__name__)

#: ``serve`` stopped cleanly: no cycle was running, or the running one finished its window.
EXIT_OK = 0
#: ``serve`` stopped but the running cycle did not finish within ``stop_timeout`` (or a second signal came).
EXIT_STOP_TIMEOUT = 1
#: The id of the one APScheduler job.
JOB_ID = "usage-collector-cycle"

#: Job options; see the module docstring.
JOB_DEFAULTS: dict[str, Any] = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}

#: How often the idle scheduler wakes up so that Python can run a pending signal handler (seconds).
SIGNAL_POLL = 0.2

Cycle = Callable[[threading.Event], object]
SchedulerFactory = Callable[..., BlockingScheduler]


class _DaemonThreadExecutor(BaseExecutor):  # type: ignore[misc]
    """Runs each job in its own daemon thread.

    APScheduler's ``ThreadPoolExecutor`` uses ``concurrent.futures`` workers, which the interpreter joins at
    exit: a cycle stuck in a network call would then keep the process alive past ``stop_timeout``. A daemon
    thread does not. ``max_instances`` is enforced by :class:`BaseExecutor` as usual.
    """

    def __init__(self) -> None:
        super().__init__()
        self._threads: set[threading.Thread] = set()
        self._threads_lock = threading.Lock()
        #: Called in the job's thread after its last record (APScheduler's "executed" included).
        self.after_job: Callable[[], None] = lambda: None

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        def target() -> None:
            try:
                events = run_job(job, job._jobstore_alias, run_times, self._logger.name)
            except BaseException as exc:  # pragma: no cover - run_job catches the job's own errors
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, events)
            finally:
                with self._threads_lock:
                    self._threads.discard(threading.current_thread())
                self.after_job()

        thread = threading.Thread(target=target, name="usage-collector-cycle", daemon=True)
        with self._threads_lock:
            self._threads.add(thread)
        thread.start()

    def shutdown(self, wait: bool = True) -> None:
        if not wait:
            return
        with self._threads_lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join()


class _SignalFriendlyScheduler(BlockingScheduler):  # type: ignore[misc]
    """``BlockingScheduler`` whose idle wait wakes up every :data:`SIGNAL_POLL` seconds.

    Python runs signal handlers in the main thread only, between bytecodes, and a main thread blocked in
    ``threading.Event.wait(timeout)`` is *not* woken by a signal on Linux (the wait ends only at its
    timeout: measured here with CPython 3.11). ``BlockingScheduler`` waits on an event until the next run,
    i.e. up to a whole interval, so SIGTERM would be handled minutes late and systemd/Kubernetes would
    SIGKILL the process. This loop is APScheduler 3.x's ``_main_loop`` with the wait cut into short slices;
    ``_process_jobs`` still runs only when a job is due or the scheduler is woken, as before.
    """

    def _main_loop(self) -> None:
        wait_seconds: float | None = TIMEOUT_MAX
        while self.state != STATE_STOPPED:
            self._wait(wait_seconds)
            self._event.clear()
            wait_seconds = self._process_jobs()

    def _wait(self, seconds: float | None) -> None:
        deadline = time.monotonic() + (TIMEOUT_MAX if seconds is None else seconds)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._event.wait(min(remaining, SIGNAL_POLL)):
                return


class Server:
    """The scheduler of ``usage-collector serve``; :func:`serve` is the usual entry point.

    Tests use the pieces directly: :attr:`scheduler` (a real ``BlockingScheduler``, woken with
    ``scheduler.wakeup()``), :meth:`job` (the function the scheduler runs), :meth:`request_stop` and
    :attr:`cycles_started`/:attr:`cycles_finished`.

    Args:
        cycle: one collection cycle; it receives the stop event and should return soon after it is set,
            after the window in progress has been written and checkpointed.
        interval: seconds between cycle starts (> 0).
        jitter: the first cycle starts after a random delay in ``[0, jitter]`` seconds.
        clock: time source for the first start time (a fake clock in tests).
        rng: ``rng(a, b)`` returns a float in ``[a, b]`` (default :func:`random.uniform`).
        stop_event: the event passed to ``cycle``; a new one by default. Setting it stops the server.
        stop_timeout: after a stop is requested, how long to wait for the running cycle to finish.
        scheduler_factory: builds the scheduler from APScheduler keyword arguments (default
            a ``BlockingScheduler`` that notices signals within :data:`SIGNAL_POLL` seconds).

    Raises:
        ConfigError: ``interval``, ``jitter`` or ``stop_timeout`` out of range.
    """

    def __init__(
        self,
        cycle: Cycle,
        *,
        interval: float,
        jitter: float = 0.0,
        clock: Clock | None = None,
        rng: Callable[[float, float], float] = random.uniform,
        stop_event: threading.Event | None = None,
        stop_timeout: float = 60.0,
        scheduler_factory: SchedulerFactory | None = None,
    ) -> None:
        if not interval > 0:
            raise ConfigError(f"--interval: must be more than 0 seconds (got {interval!r})")
        if not jitter >= 0:
            raise ConfigError(f"--jitter: must be 0 or more seconds (got {jitter!r})")
        if not stop_timeout >= 0:
            raise ConfigError(f"stop timeout: must be 0 or more seconds (got {stop_timeout!r})")
        self.cycle = cycle
        self.interval = float(interval)
        self.jitter = float(jitter)
        self.clock = clock or SystemClock()
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.stop_timeout = float(stop_timeout)
        #: Cycles that began / returned (or raised); for status lines and tests.
        self.cycles_started = 0
        self.cycles_finished = 0
        self._lock = threading.Lock()  # orders "a cycle begins" against "a stop is requested"
        self._idle = threading.Event()  # set while no cycle is running
        self._idle.set()
        self._force = threading.Event()  # a second signal: stop waiting for the cycle
        self._exit_code = EXIT_OK
        self._mute: _OnlyThread | None = None  # set while an abandoned cycle winds down after "stopped"

        delay = min(max(rng(0.0, self.jitter), 0.0), self.jitter) if self.jitter else 0.0
        self.first_run = datetime.fromtimestamp(self.clock.now() + delay, UTC)
        factory = scheduler_factory or _SignalFriendlyScheduler
        executor = _DaemonThreadExecutor()
        executor.after_job = self._after_job
        #: The APScheduler scheduler (not yet started).
        self.scheduler: BlockingScheduler = factory(
            timezone=UTC,
            jobstores={"default": MemoryJobStore()},
            executors={"default": executor},
            job_defaults=dict(JOB_DEFAULTS),
        )
        self.scheduler.add_job(
            self.job,
            IntervalTrigger(seconds=self.interval, start_date=self.first_run, timezone=UTC),
            id=JOB_ID,
            name="usage-collector cycle",
            next_run_time=self.first_run,
            replace_existing=True,
            **JOB_DEFAULTS,
        )

    # --- the job ----------------------------------------------------------------------------------
    def job(self) -> None:
        """One scheduled run: the cycle, unless a stop was requested. Never raises (a failed cycle is logged
        and the next one runs at the next interval)."""
        with self._lock:
            if self.stop_event.is_set():
                log.info("stop requested: not starting another cycle")
                return
            self._idle.clear()
            self.cycles_started += 1
            number = self.cycles_started
        log.info("cycle %d starting", number)
        try:
            self.cycle(self.stop_event)
        except Exception:
            log.exception("cycle %d failed; the next cycle runs at the next interval", number)
        else:
            log.info("cycle %d finished", number)
        finally:
            with self._lock:
                self.cycles_finished += 1
                self._idle.set()

    def _after_job(self) -> None:
        """A job's thread is done logging: if it was a cycle given up on, "stopped" may be followed again."""
        with self._lock:
            if self._mute is not None and self._idle.is_set():
                self._mute.remove()
                self._mute = None

    # --- stopping ---------------------------------------------------------------------------------
    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask the server to stop: the running cycle sees the stop event and finishes its window; no new
        cycle starts. A second request stops waiting for the running cycle. Safe to call from a signal
        handler (it only sets events)."""
        if self.stop_event.is_set():
            self._force.set()
            return
        log.info("%s: finishing the current window, then stopping (again to stop now)", reason)
        self.stop_event.set()
        try:
            self.scheduler.pause()  # no run comes due while the last cycle winds down
        except Exception:  # SchedulerNotRunningError: not started yet, or already stopped
            log.debug("scheduler not running", exc_info=True)

    def _stopper(self) -> None:
        """Waits for the stop event, then for the running cycle (bounded), then shuts the scheduler down."""
        self.stop_event.wait()
        with self._lock:  # a cycle that got past its stop check has cleared _idle by now
            pass
        deadline = time.monotonic() + self.stop_timeout
        finished = self._idle.is_set()
        while not finished and not self._force.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            finished = self._idle.wait(min(remaining, 0.05))
        if not finished:
            self._exit_code = EXIT_STOP_TIMEOUT
            log.error(
                "the running cycle did not finish within %.0fs; exiting without it (its window is re-read "
                "next run: the checkpoint did not move)",
                self.stop_timeout,
            )
        try:
            # wait=True joins the executor's threads: only when nothing is running, so it returns at once.
            self.scheduler.shutdown(wait=finished)
        except Exception:  # SchedulerNotRunningError: start() failed or already stopped
            log.debug("scheduler already stopped", exc_info=True)

    # --- running ----------------------------------------------------------------------------------
    def run(self) -> int:
        """Start the scheduler and block until a stop is requested and handled.

        Returns:
            :data:`EXIT_OK`, or :data:`EXIT_STOP_TIMEOUT` when the running cycle did not finish in time.
        """
        log.info(
            "serving: a cycle every %s (first at %s, jitter %s)",
            _human(self.interval),
            self.first_run.strftime("%Y-%m-%dT%H:%M:%SZ"),
            _human(self.jitter),
        )
        stopper = threading.Thread(target=self._stopper, name="usage-collector-stopper", daemon=True)
        stopper.start()
        try:
            self.scheduler.start()  # blocks until shutdown
        finally:
            if self.scheduler.state != STATE_STOPPED:  # start() raised
                self.stop_event.set()
                self._force.set()
            self.stop_event.set()  # lets the stopper finish if start() returned on its own
            stopper.join(self.stop_timeout + 5.0)
        log.info("stopped after %d cycle(s)", self.cycles_finished)
        with self._lock:
            if not self._idle.is_set():  # a cycle given up on: nothing it logs may follow "stopped"
                self._mute = _OnlyThread(threading.get_ident())
        return self._exit_code


def serve(
    cycle: Cycle,
    *,
    interval: float,
    jitter: float = 0.0,
    clock: Clock | None = None,
    rng: Callable[[float, float], float] = random.uniform,
    stop_event: threading.Event | None = None,
    install_signal_handlers: bool = True,
    stop_timeout: float = 60.0,
    scheduler_factory: SchedulerFactory | None = None,
) -> int:
    """Run ``cycle(stop_event)`` every ``interval`` seconds until SIGTERM/SIGINT (or ``stop_event``).

    Args:
        cycle: one collection cycle; see :class:`Server`.
        interval: seconds between cycle starts.
        jitter: random delay in ``[0, jitter]`` seconds before the first cycle.
        clock: time source (tests).
        rng: random source for the jitter (tests).
        stop_event: passed to ``cycle``; setting it stops ``serve``.
        install_signal_handlers: handle SIGTERM and SIGINT (only possible in the main thread; the previous
            handlers are restored on return).
        stop_timeout: how long to wait for the running cycle after a stop request; keep it below
            ``TimeoutStopSec=`` / ``terminationGracePeriodSeconds``.
        scheduler_factory: builds the APScheduler scheduler (tests).

    Returns:
        :data:`EXIT_OK` (0) after a graceful stop; :data:`EXIT_STOP_TIMEOUT` (1) if the running cycle did not
        finish within ``stop_timeout`` or a second signal cut the wait short.

    Raises:
        ConfigError: ``interval`` or ``jitter`` out of range.
    """
    server = Server(
        cycle,
        interval=interval,
        jitter=jitter,
        clock=clock,
        rng=rng,
        stop_event=stop_event,
        stop_timeout=stop_timeout,
        scheduler_factory=scheduler_factory,
    )
    previous: dict[signal.Signals, Any] = {}
    if install_signal_handlers:
        if threading.current_thread() is threading.main_thread():

            def on_signal(signum: int, frame: types.FrameType | None) -> None:
                server.request_stop(f"received {signal.Signals(signum).name}")

            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, on_signal)
        else:
            log.warning("serve: not in the main thread, so SIGTERM/SIGINT are not handled here")
    try:
        return server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _OnlyThread(logging.Filter):
    """Installed on the root logger's handlers: lets through only the records of one thread (``serve``'s),
    so a cycle that was given up on stays silent after "stopped" until it ends (then it is removed)."""

    def __init__(self, thread: int) -> None:
        super().__init__()
        self.thread = thread
        self.handlers = list(logging.getLogger().handlers)
        for handler in self.handlers:
            handler.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread

    def remove(self) -> None:
        for handler in self.handlers:
            handler.removeFilter(self)


def _human(seconds: float) -> str:
    """``300`` -> ``"5m"``, ``90`` -> ``"90s"``, ``7200`` -> ``"2h"``."""
    td = timedelta(seconds=seconds)
    total = td.total_seconds()
    for unit, size in (("h", 3600), ("m", 60)):
        if total >= size and total % size == 0:
            return f"{int(total // size)}{unit}"
    return f"{total:g}s"
