"""Ctrl-C and a scheduler's SIGTERM: how a run is told to stop.

Inside ``stop_on_signals()`` SIGINT, SIGTERM and SIGHUP raise ``Interrupted`` in the main thread, so every step,
trainer and the labelling server ends the same way: finished outputs kept, the record says "interrupted", and the
CLI exits with 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM). A signal that was ignored when the
process started (``nohup``, a background job) stays ignored.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

RESUME_HINT = "finished items are kept; run the same command again to resume"
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived. ``hint`` is what the user can do next; the exit code is 128 + the signal number."""

    def __init__(self, signum: int = signal.SIGINT, hint: str = RESUME_HINT):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.hint = int(signum), hint

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def as_interrupted(exc: KeyboardInterrupt, hint: str | None = None) -> Interrupted:
    """``exc`` as an ``Interrupted`` (a bare KeyboardInterrupt is Ctrl-C), with ``hint`` when given."""
    out = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
    if hint is not None:
        out.hint = hint
    return out


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn stop signals into ``Interrupted`` while the block runs (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in STOP_SIGNALS:
        current = signal.getsignal(sig)
        if current is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, _raise_interrupted)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def signals_deferred() -> Iterator[list[int]]:
    """Hold stop signals while the block runs (e.g. while a run that is already stopping writes its record):
    they are noted in the yielded list instead of interrupting the cleanup."""
    noted: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return
    previous = {}
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, lambda signum, frame: noted.append(signum))
    try:
        yield noted
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
