"""Worker processes: how they start, what they run, and how they are stopped.

``prepare``/``process`` and ``write`` of a step run here; the main process keeps the model (``compute``).
"""

from __future__ import annotations

import importlib.machinery
import multiprocessing as mp
import os
import select
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterable

from ..images import ImageItem
from .errors import STOPPING_ERRNOS, RunStopper, failure_reason
from .options import available_cores
from .signals import STOP_SIGNALS
from .step import Step

_WORKER_STEP: Step | None = None
STOP_GRACE_S = 5.0  # how long a stopping run lets workers finish the call they are in before killing them


def _init_worker(step: Step, main_pid: int) -> None:
    """Worker start: remember the step, leave stop signals to the main process, die with it, one thread per worker."""
    global _WORKER_STEP
    _WORKER_STEP = step
    # Ctrl-C and a scheduler's SIGTERM reach the whole process group; the main process stops the workers itself,
    # after the call they are in, so none dies half-way through sending a result (that hangs the pool).
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    threading.Thread(target=_exit_when_gone, args=(main_pid,), name="exit-with-main", daemon=True).start()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2

    cv2.setNumThreads(1)  # parallel regions on cores other processes use stall (measured)
    _keep_freed_memory_for_reuse()


def _exit_when_gone(main_pid: int) -> None:
    """End this worker as soon as the run's main process is gone, even by ``kill -9``: otherwise workers, the fork
    server and the resource tracker wait forever for work, holding the caller's pipes (``... | cat`` never ends)."""
    try:
        pidfd = os.pidfd_open(main_pid)  # Linux: readable when the process ends
        select.select([pidfd], [], [])
    except (AttributeError, OSError):  # elsewhere: ask once a second
        while _alive(main_pid):
            time.sleep(1.0)
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _keep_freed_memory_for_reuse() -> None:
    """Let glibc keep freed image-sized buffers instead of returning them to the OS.

    A fresh worker otherwise maps and unmaps every large array (each image, mask and
    float buffer), paying ~1500 page faults per image (measured) — a third of a segment
    worker's time. With a 32 MiB mmap threshold and a 256 MiB trim threshold the buffers
    are reused; a worker then holds at most that much idle memory.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
    libc.mallopt(m_trim_threshold, 256 * 1024 * 1024)


def _worker_context(step: Step):
    """How worker processes start. Never a plain fork of this process: a fork taken after
    OpenCV or torch started their thread pools deadlocks in the child (seen with cv2).
    A fork server (a clean process that imported the step's module once) starts workers
    fast where it exists; elsewhere they are spawned.
    """
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__, type(step).__module__])
        return ctx
    return mp.get_context("spawn")


@contextmanager
def _workers_skip_main_module(step: Step):
    """While workers start, make multiprocessing treat the caller's script as a ``-m`` module,
    which new processes do not re-run. Otherwise every worker of every run re-imports the
    script — and, say, torch with it (measured: 1.1 s per run) — and a script without an
    ``if __name__ == "__main__":`` guard would run itself again in each worker. Skipped when
    the step's class is defined in the script: workers then need it.
    """
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None or type(step).__module__ == "__main__":
        yield
        return
    main.__spec__ = importlib.machinery.ModuleSpec("__main__", None)
    try:
        yield
    finally:
        main.__spec__ = None


def call_safely(fn: Callable, *args) -> tuple[bool, Any]:
    """``(True, fn(*args))``, or ``(False, reason)`` when it raised: one bad item must not stop the run. A write
    that the file system refuses is a ``RunStopper`` reason: the next would fail alike."""
    try:
        return True, fn(*args)
    except OSError as exc:
        if exc.errno in STOPPING_ERRNOS:
            return False, RunStopper(failure_reason(exc))
        return False, failure_reason(exc)
    except Exception as exc:
        if os.environ.get("AUTOBACKSWAP_DEBUG"):
            traceback.print_exc()
        return False, failure_reason(exc)


def work_prepare(step: Step | None, item: ImageItem):
    return call_safely((step or _WORKER_STEP).prepare, item)


def work_write(step: Step | None, item: ImageItem, result: Any):
    return call_safely((step or _WORKER_STEP).write, item, result)


def work_process_and_write(step: Step | None, item: ImageItem):
    s = step or _WORKER_STEP
    ok, value = call_safely(s.process, item)
    if not ok:
        return ok, value
    return call_safely(s.write, item, value)


def compute_batch(step: Step, batch: list) -> Iterable[tuple[ImageItem, bool, Any]]:
    """Run ``compute`` on a batch of (item, prepared) pairs: (item, ok, result or reason) per item. If the batch
    fails, each item is retried alone to isolate the culprit. The loop and the Ray executor both compute through it."""
    if not batch:
        return []
    items = [b[0] for b in batch]
    payloads = [b[1] for b in batch]
    try:
        results = step.compute(payloads)
        return [(it, True, r) for it, r in zip(items, results)]
    except Exception as exc:
        if len(batch) == 1:
            return [(items[0], False, failure_reason(exc))]
    out = []
    for it, p in zip(items, payloads):
        ok, value = call_safely(step.compute, [p])
        out.append((it, ok, value[0] if ok else value))
    return out


class InlineExecutor:
    """Stands in for the process pool when ``--workers 0``: runs calls at submit time."""

    def __init__(self, step: Step):
        self.step = step

    def submit(self, fn, step_arg, *args) -> Future:
        fut: Future = Future()
        fut.set_result(fn(self.step, *args))
        return fut

    def shutdown(self, *a, **k) -> None:
        pass


def start_executor(step: Step, workers: int) -> tuple[Any, Step | None]:
    """A pool of ``workers`` started processes (or the inline stand-in for 0), and the step argument its calls
    take (None in workers: they hold the step since they started)."""
    if not workers:
        return InlineExecutor(step), step
    with _workers_skip_main_module(step):
        executor = ProcessPoolExecutor(max_workers=workers, mp_context=_worker_context(step), initializer=_init_worker,
                                       initargs=(step, os.getpid()))
        try:
            # Start every worker now (one submit each, before any can be idle), so their start-up
            # cost is not counted against the first batch.
            for f in [executor.submit(os.getpid) for _ in range(workers)]:
                f.result()
        except BaseException:
            stop_executor(executor)
            raise
    return executor, None


def stop_executor(executor: Any, grace_s: float = STOP_GRACE_S) -> None:
    """Stop the workers (interrupt, failure): calls not started are cancelled, calls running may finish within
    ``grace_s``; a worker still busy after that is killed. Killing only as a last resort matters: a worker killed
    while it sends a result leaves the pool's manager thread waiting forever for the rest of the message."""
    if not isinstance(executor, ProcessPoolExecutor):
        return
    procs = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + grace_s
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(timeout=2)


def share_cores_with_workers(workers: int) -> int | None:
    """Leave the cores the workers use to them: torch's own threads in this process would
    otherwise compete with them and stall (spinning threads on oversubscribed cores).
    Returns the previous thread count to restore, or None when nothing was changed."""
    torch = sys.modules.get("torch")
    if torch is None or workers == 0:
        return None
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, min(previous, available_cores() - workers)))
    return previous


def restore_torch_threads(previous: int | None) -> None:
    if previous is not None:
        sys.modules["torch"].set_num_threads(previous)



def remove_process_temp_dir() -> None:
    """Remove this process's multiprocessing temporary folder (``$TMPDIR/pymp-*``: the fork server's listener
    socket). Python removes it at a normal exit; a command stopped by a signal ends with ``os._exit``, which skips
    that, so it calls this first."""
    import shutil

    tempdir = mp.current_process()._config.get("tempdir")  # where multiprocessing.util.get_temp_dir() made it
    if tempdir:
        shutil.rmtree(tempdir, ignore_errors=True)
