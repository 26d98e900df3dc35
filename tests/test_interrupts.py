"""A Ctrl-C that arrives while a storage call runs is raised once the call has returned, never inside it."""

from __future__ import annotations

import signal
import threading

import pytest

from autoprune.interrupts import calls_held_back, held_back


@pytest.fixture(autouse=True)
def _python_handler():
    """Each test starts with Python's own SIGINT handler and leaves the one it found."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_a_ctrl_c_during_a_held_back_call_is_raised_once_the_call_has_returned():
    steps = []

    @held_back
    def outer():
        inner()
        steps.append("outer ended")
        return "result"

    @held_back
    def inner():
        signal.raise_signal(signal.SIGINT)
        steps.append("inner ended")

    with pytest.raises(KeyboardInterrupt):
        outer()
    assert steps == ["inner ended", "outer ended"]  # not raised when the inner call returned: the outer still ran
    with pytest.raises(KeyboardInterrupt):  # outside any call a Ctrl-C is raised at once, as Python's handler does
        signal.raise_signal(signal.SIGINT)
    assert outer.__wrapped__ is not None and outer.__name__ == "outer"


def test_a_call_without_a_ctrl_c_returns_its_result_and_raises_its_own_errors():
    @held_back
    def double(x):
        if x < 0:
            raise ValueError("negative")
        return 2 * x

    assert double(3) == 6
    with pytest.raises(ValueError, match="negative"):
        double(-1)
    with pytest.raises(KeyboardInterrupt):  # nothing pending was left behind
        signal.raise_signal(signal.SIGINT)


def test_a_programs_own_sigint_handler_is_kept():
    caught = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))

    @held_back
    def call():
        signal.raise_signal(signal.SIGINT)
        return "done"

    assert call() == "done" and caught == [signal.SIGINT]


def test_calls_from_other_threads_run_as_they_are():
    results = []

    @calls_held_back(["value"])
    class Store:
        def value(self):
            return threading.current_thread().name

    thread = threading.Thread(target=lambda: results.append(Store().value()), name="beat")
    thread.start()
    thread.join()
    assert results == ["beat"] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert Store().value() == "MainThread"
