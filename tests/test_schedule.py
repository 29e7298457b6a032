"""``usage-collector serve``: APScheduler wiring, coalescing, no overlap, graceful stop.

The scheduler is the real APScheduler ``BlockingScheduler``, running in a background thread; only its notion
of "now" is fake. APScheduler 3.x reads the time with ``datetime.now(tz)`` in ``apscheduler.schedulers.base``,
so the tests replace that module's ``datetime`` with one that reads a :class:`FakeClock`, then move the clock
and call the public ``scheduler.wakeup()``. Nothing waits for real intervals; every wait below is on an
event with a short timeout.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import apscheduler.schedulers.base as aps_base
import pytest
from apscheduler.events import (
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_SUBMITTED,
    EVENT_SCHEDULER_STARTED,
    SchedulerEvent,
)
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from usage_collector.clock import FakeClock
from usage_collector.errors import ConfigError
from usage_collector.schedule import EXIT_OK, EXIT_STOP_TIMEOUT, JOB_ID, Server, _human, serve

pytestmark = pytest.mark.timeout(20)

T0 = 1_760_486_400.0  # 2026-10-15T00:00:00Z
INTERVAL = 300.0
WAIT = 5.0  # upper bound for any event wait; normally they take milliseconds


def at(seconds_after_t0: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds_after_t0, UTC)


class Recorder:
    """Collects scheduler events so a test can wait for the n-th one of a kind."""

    def __init__(self) -> None:
        self.events: list[SchedulerEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: SchedulerEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def of(self, code: int) -> list[Any]:
        with self._cond:
            return [e for e in self.events if e.code == code]

    def wait_for(self, code: int, count: int = 1) -> list[Any]:
        with self._cond:
            ok = self._cond.wait_for(lambda: len([e for e in self.events if e.code == code]) >= count, WAIT)
        assert ok, f"timed out waiting for {count} event(s) {code}; got {[e.code for e in self.events]}"
        return self.of(code)


class Harness:
    """A :class:`Server` on a fake clock, its scheduler running in a background thread."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cycle: Callable[[threading.Event], object], **kw: Any):
        self.clock = FakeClock(T0)
        clock = self.clock

        class FakeDatetime(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
                return datetime.fromtimestamp(clock.now(), tz or UTC)

        monkeypatch.setattr(aps_base, "datetime", FakeDatetime)
        kw.setdefault("interval", INTERVAL)
        kw.setdefault("stop_timeout", WAIT)
        self.server = Server(cycle, clock=self.clock, **kw)
        self.recorder = Recorder()
        self.server.scheduler.add_listener(self.recorder)
        self.rc: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.rc = self.server.run()

    def start(self) -> Harness:
        self.thread.start()
        self.recorder.wait_for(EVENT_SCHEDULER_STARTED)
        return self

    def advance(self, seconds: float) -> None:
        """Move the fake clock and let the scheduler look at its jobs again."""
        self.clock.advance(seconds)
        self.server.scheduler.wakeup()

    def stop(self) -> int:
        if not self.server.stop_event.is_set():  # a second request would mean "stop now"
            self.server.request_stop("test")
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "serve did not return"
        assert self.rc is not None
        return self.rc


class Windows:
    """A fake cycle that "writes" windows and checks the stop event between them, like the collector."""

    def __init__(self, windows: int = 3) -> None:
        self.windows = windows
        self.calls: list[float] = []  # fake time at which each cycle began
        self.checkpoints: list[tuple[int, int]] = []  # (cycle, window) whose checkpoint landed
        self.active = 0
        self.max_active = 0
        self.gates: dict[tuple[int, int], threading.Event] = {}  # (cycle, window) -> released when set
        self.entered: dict[tuple[int, int], threading.Event] = {}
        self.clock: FakeClock | None = None
        self._lock = threading.Lock()

    def gate(self, cycle: int, window: int) -> tuple[threading.Event, threading.Event]:
        """Make window ``window`` of cycle ``cycle`` block until the returned release event is set."""
        self.gates[(cycle, window)] = threading.Event()
        self.entered[(cycle, window)] = threading.Event()
        return self.entered[(cycle, window)], self.gates[(cycle, window)]

    def __call__(self, stop: threading.Event) -> None:
        with self._lock:
            self.calls.append(self.clock.now() if self.clock else 0.0)
            number = len(self.calls)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            for w in range(self.windows):
                if stop.is_set():
                    return
                if (number, w) in self.gates:
                    self.entered[(number, w)].set()
                    assert self.gates[(number, w)].wait(WAIT)
                self.checkpoints.append((number, w))  # the window was written and its checkpoint moved
        finally:
            with self._lock:
                self.active -= 1


@pytest.fixture
def windows() -> Windows:
    return Windows()


def start(monkeypatch: pytest.MonkeyPatch, cycle: Windows, **kw: Any) -> Harness:
    h = Harness(monkeypatch, cycle, **kw)
    cycle.clock = h.clock
    return h.start()


# --- wiring --------------------------------------------------------------------------------------------


def test_the_job_coalesces_never_overlaps_and_is_never_dropped_as_misfired(windows: Windows) -> None:
    server = Server(windows, interval=INTERVAL, jitter=30, clock=FakeClock(T0), rng=lambda a, b: 12.5)
    job = server.scheduler.get_job(JOB_ID)
    assert isinstance(server.scheduler, BlockingScheduler)
    assert job.coalesce is True
    assert job.max_instances == 1
    assert job.misfire_grace_time is None
    assert isinstance(job.trigger, IntervalTrigger)
    assert job.trigger.interval.total_seconds() == INTERVAL
    assert job.next_run_time == at(12.5)  # the random start jitter
    assert isinstance(server.scheduler._jobstores["default"], MemoryJobStore)


def test_jitter_is_clamped_to_its_range_and_zero_jitter_starts_at_once(windows: Windows) -> None:
    assert Server(windows, interval=60, jitter=10, clock=FakeClock(T0), rng=lambda a, b: 99).first_run == at(10)
    assert Server(windows, interval=60, jitter=10, clock=FakeClock(T0), rng=lambda a, b: -5).first_run == at(0)
    assert Server(windows, interval=60, clock=FakeClock(T0)).first_run == at(0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"interval": 0}, "--interval"),
        ({"interval": -5}, "--interval"),
        ({"interval": 60, "jitter": -1}, "--jitter"),
        ({"interval": 60, "stop_timeout": -1}, "stop timeout"),
    ],
    ids=["zero-interval", "negative-interval", "negative-jitter", "negative-stop-timeout"],
)
def test_bad_intervals_are_config_errors(windows: Windows, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Server(windows, **kwargs)


@pytest.mark.parametrize(("seconds", "text"), [(300, "5m"), (90, "90s"), (7200, "2h"), (0.5, "0.5s"), (0, "0s")])
def test_human_durations(seconds: float, text: str) -> None:
    assert _human(seconds) == text


# --- behaviour on a fake clock -------------------------------------------------------------------------


def test_first_cycle_after_the_jitter_then_every_interval(monkeypatch: pytest.MonkeyPatch, windows: Windows) -> None:
    h = start(monkeypatch, windows, jitter=30, rng=lambda a, b: 17.0)
    h.advance(16.0)  # not yet due
    h.advance(1.0)  # due now
    first = h.recorder.wait_for(EVENT_JOB_SUBMITTED, 1)[0]
    assert first.scheduled_run_times == [at(17)]
    h.recorder.wait_for(EVENT_JOB_EXECUTED, 1)
    h.advance(INTERVAL)
    second = h.recorder.wait_for(EVENT_JOB_SUBMITTED, 2)[1]
    assert second.scheduled_run_times == [at(17 + INTERVAL)]
    h.recorder.wait_for(EVENT_JOB_EXECUTED, 2)
    assert h.stop() == EXIT_OK
    assert windows.calls == [T0 + 17, T0 + 17 + INTERVAL]


def test_missed_runs_coalesce_into_one(monkeypatch: pytest.MonkeyPatch, windows: Windows) -> None:
    h = start(monkeypatch, windows)
    h.recorder.wait_for(EVENT_JOB_EXECUTED, 1)  # the first cycle runs at once (no jitter)
    # The process was suspended (or the host slept) for ten intervals and a half.
    h.advance(10.5 * INTERVAL)
    submitted = h.recorder.wait_for(EVENT_JOB_SUBMITTED, 2)[1]
    assert submitted.scheduled_run_times == [at(10 * INTERVAL)]  # ten missed runs -> one run
    h.recorder.wait_for(EVENT_JOB_EXECUTED, 2)
    # The schedule continues from there; no backlog is replayed.
    h.advance(0.5 * INTERVAL)
    assert h.recorder.wait_for(EVENT_JOB_SUBMITTED, 3)[2].scheduled_run_times == [at(11 * INTERVAL)]
    h.recorder.wait_for(EVENT_JOB_EXECUTED, 3)
    assert h.stop() == EXIT_OK
    assert len(windows.calls) == 3
    assert len(h.recorder.of(EVENT_JOB_EXECUTED)) == 3


def test_an_overrunning_cycle_neither_overlaps_nor_piles_up(monkeypatch: pytest.MonkeyPatch, windows: Windows) -> None:
    entered, release = windows.gate(1, 1)
    h = start(monkeypatch, windows)
    assert entered.wait(WAIT)  # cycle 1 is busy in its second window
    # It overruns: 5.5 intervals pass, then 1 more. Each time the scheduler finds the job due, it skips it
    # (max_instances=1) -- one skip per wake-up, with the missed run times coalesced into one.
    h.advance(5.5 * INTERVAL)
    skipped = h.recorder.wait_for(EVENT_JOB_MAX_INSTANCES, 1)
    assert skipped[0].scheduled_run_times == [at(5 * INTERVAL)]
    h.advance(INTERVAL)
    skipped = h.recorder.wait_for(EVENT_JOB_MAX_INSTANCES, 2)
    assert skipped[1].scheduled_run_times == [at(6 * INTERVAL)]
    assert windows.calls == [T0]  # still only the first cycle
    release.set()
    h.recorder.wait_for(EVENT_JOB_EXECUTED, 1)
    # Once it finished, the next run is the next regular one: not an immediate burst of catch-up runs.
    h.advance(INTERVAL)
    assert h.recorder.wait_for(EVENT_JOB_SUBMITTED, 2)[1].scheduled_run_times == [at(7 * INTERVAL)]
    h.recorder.wait_for(EVENT_JOB_EXECUTED, 2)
    assert h.stop() == EXIT_OK
    assert windows.calls == [T0, T0 + 7.5 * INTERVAL]
    assert windows.max_active == 1
    assert len(h.recorder.of(EVENT_JOB_MAX_INSTANCES)) == 2


def test_stop_lets_the_running_window_finish_and_starts_no_new_cycle(
    monkeypatch: pytest.MonkeyPatch, windows: Windows
) -> None:
    entered, release = windows.gate(1, 1)
    h = start(monkeypatch, windows)
    assert entered.wait(WAIT)  # cycle 1 is writing window 1 of 0..2
    h.server.request_stop("SIGTERM (test)")
    assert h.server.stop_event.is_set()
    # Time passes while the window finishes: the next run comes due but must not start a cycle.
    h.advance(2 * INTERVAL)
    assert h.thread.is_alive()  # serve waits for the running window
    release.set()
    assert h.stop() == EXIT_OK
    # Window 1 completed and its checkpoint landed; window 2 never started; no second cycle ran.
    assert windows.checkpoints == [(1, 0), (1, 1)]
    assert windows.calls == [T0]
    assert h.server.cycles_started == h.server.cycles_finished == 1


def test_a_failing_cycle_is_logged_and_the_next_one_still_runs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def cycle(stop: threading.Event) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("elasticsearch is down")

    h = Harness(monkeypatch, cycle).start()
    h.recorder.wait_for(EVENT_JOB_EXECUTED, 1)  # the job wrapper caught the error: EXECUTED, not ERROR
    h.advance(INTERVAL)
    h.recorder.wait_for(EVENT_JOB_EXECUTED, 2)
    assert h.stop() == EXIT_OK
    assert len(calls) == 2
    assert "cycle 1 failed" in caplog.text


def test_stop_gives_up_on_a_cycle_that_ignores_the_stop_event(monkeypatch: pytest.MonkeyPatch) -> None:
    stuck, release = threading.Event(), threading.Event()

    def cycle(stop: threading.Event) -> None:
        stuck.set()
        release.wait(WAIT)  # a network call that does not look at the stop event

    h = Harness(monkeypatch, cycle, stop_timeout=0.05).start()
    assert stuck.wait(WAIT)
    t = time.monotonic()
    assert h.stop() == EXIT_STOP_TIMEOUT
    assert time.monotonic() - t < 2.0
    release.set()


def test_a_second_stop_request_stops_waiting_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    stuck, release = threading.Event(), threading.Event()

    def cycle(stop: threading.Event) -> None:
        stuck.set()
        release.wait(WAIT)

    h = Harness(monkeypatch, cycle, stop_timeout=60).start()
    assert stuck.wait(WAIT)
    h.server.request_stop("SIGTERM")
    h.server.request_stop("SIGINT")  # e.g. Ctrl-C twice
    t = time.monotonic()
    assert h.stop() == EXIT_STOP_TIMEOUT
    assert time.monotonic() - t < 2.0
    release.set()


# --- real signals, real clock --------------------------------------------------------------------------


@pytest.fixture
def restore_signals() -> Iterator[None]:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, h in before.items():
        signal.signal(s, h)


@pytest.mark.usefixtures("restore_signals")
def test_sigterm_finishes_the_window_and_serve_returns_0() -> None:
    if threading.current_thread() is not threading.main_thread():  # pragma: no cover
        pytest.skip("signal handlers can only be installed in the main thread")
    sentinel = signal.getsignal(signal.SIGTERM)
    started = threading.Event()
    done: list[int] = []
    interrupted: list[int] = []

    def cycle(stop: threading.Event) -> None:
        started.set()
        for w in range(1000):
            if stop.is_set():
                interrupted.append(w)
                return
            time.sleep(0.002)  # "write" window w
            done.append(w)

    def send_sigterm() -> None:
        assert started.wait(WAIT)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=send_sigterm, daemon=True)
    killer.start()
    t = time.monotonic()
    rc = serve(cycle, interval=3600, jitter=0, stop_timeout=WAIT)
    elapsed = time.monotonic() - t
    killer.join(WAIT)
    assert rc == EXIT_OK
    assert interrupted and done and interrupted[0] == done[-1] + 1  # stopped between windows, none cut short
    assert len(done) < 1000
    assert elapsed < 3.0
    assert signal.getsignal(signal.SIGTERM) is sentinel  # the previous handler is back


def test_serve_outside_the_main_thread_installs_no_handlers(caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()
    ran = threading.Event()
    result: list[int] = []

    def cycle(s: threading.Event) -> None:
        ran.set()

    def target() -> None:
        result.append(serve(cycle, interval=3600, stop_event=stop, install_signal_handlers=True, stop_timeout=1))

    th = threading.Thread(target=target, daemon=True)
    th.start()
    assert ran.wait(WAIT)
    stop.set()  # an external stop event works like a signal
    th.join(WAIT)
    assert result == [EXIT_OK]
    assert "not in the main thread" in caplog.text


def test_after_a_stop_no_run_comes_due_and_nothing_logs_after_stopped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    stuck, release, ended = threading.Event(), threading.Event(), threading.Event()

    def cycle(stop: threading.Event) -> None:
        stuck.set()
        release.wait(WAIT)  # a request in flight that does not look at the stop event
        logging.getLogger("usage_collector.collector").error("late record of the abandoned cycle")
        ended.set()

    h = Harness(monkeypatch, cycle, stop_timeout=0.2).start()
    assert stuck.wait(WAIT)
    h.server.request_stop("SIGTERM")
    h.advance(3 * INTERVAL)  # runs come due while the cycle winds down: none is submitted, none is skipped
    assert h.stop() == EXIT_STOP_TIMEOUT
    assert not h.recorder.of(EVENT_JOB_MAX_INSTANCES) and len(h.recorder.of(EVENT_JOB_SUBMITTED)) == 1
    release.set()
    assert ended.wait(WAIT)
    time.sleep(0.1)  # the cycle's last lines (its job's "finished") are written now, or never
    messages = [r.getMessage() for r in caplog.records]
    assert messages[-1].startswith("stopped after"), messages[-3:]
    assert not any("maximum number of running instances" in m for m in messages)
    assert h.server._mute is None  # the filter is gone once the abandoned cycle ended
