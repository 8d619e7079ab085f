"""THE loop every step runs through.

    items -> shard -> skip finished -> (prepare -> batch -> compute | process) in workers -> write in workers

``run_step`` plans the run, starts the workers, drives the items through the step's hooks with a progress bar, and
writes the run record once, however the run ends. Each item ends done, failed (a reason), or left out with no
foreground or with a mask below the confidence threshold (a step raised ``LeftOut``: counted and listed apart by
kind, no failure; it has no outputs, so a rerun checks it again).
"""

from __future__ import annotations

import os
import queue
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from ..images import TEMP_PREFIX, FolderListing, ImageItem, remove_stale_temp_files
from .layout import DatasetLayout
from .errors import LEFT_OUT_KINDS, FailFast, LeftOutReason, RunStopper, StepError
from .lock import output_lock
from .options import RunOptions
from .progress import console, make_progress, shortened, status_text
from .record import build_record, record_path, status_of, write_run_record
from .report import RunReport
from .signals import Interrupted, as_interrupted, signals_deferred, stop_on_signals
from .step import Step
from .workers import (compute_batch, restore_torch_threads, share_cores_with_workers, start_executor, stop_executor, work_prepare,
                      work_process_and_write, work_write)


def run_step(step: Step, items: Sequence[ImageItem], options: RunOptions, warnings: Sequence[str] = (),
             layout: DatasetLayout | None = None) -> RunReport:
    """Run ``step`` over ``items`` (already scanned) and write the run record (``layout``: the class rule the items
    were placed by, for the record).

    Returns the report; the caller turns failures into the exit code. Ctrl-C / SIGTERM and ``--fail-fast`` raise
    after the record is written; a dead worker becomes a ``StepError``.
    """
    out_dir = Path(step.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise StepError(f"output {out_dir} is a file, not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StepError(f"cannot create the output folder {out_dir}: {exc.strerror or exc}") from None
    with output_lock(out_dir, options.shard):
        return _run_locked(step, out_dir, items, options, warnings, layout)


def _run_locked(step: Step, out_dir: Path, items: Sequence[ImageItem], options: RunOptions, warnings: Sequence[str],
                layout: DatasetLayout | None) -> RunReport:
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    _remove_leftover_temps(out_dir, options)
    report = RunReport(step=step.name, out_dir=str(out_dir), warnings=list(warnings), shard=options.shard)
    mine, todo = _plan(step, items, options, report)
    workers = max(0, int(options.workers)) if len(todo) >= 2 and options.executor == "local" else 0  # one item: no processes
    executor, error, drive = None, None, None
    with stop_on_signals():
        try:
            executor, step_arg = start_executor(step, workers)
            with make_progress(enabled=options.progress) as progress:
                drive = _Drive(step, options, report, executor, step_arg, progress, workers)
                drive.run(todo)
            step.finish(report, mine)
        except BaseException as exc:
            error = exc
    with signals_deferred() as noted:  # a second Ctrl-C must not cut the cleanup and the record short
        error = _stop_after(error, executor, report, out_dir)
        if report.interrupted:
            report.done += _written_uncounted(step, todo, drive.ended if drive else set())
        report.wall_time_s = time.perf_counter() - t0
        _write_record(step, report, options, started, out_dir, error, layout)
    if error is None and noted:
        error = Interrupted(noted[0])  # the run ended while the signal waited: still tell the caller
    if error is not None:
        error.report = report  # for the caller's summary
        raise error
    return report


def _written_uncounted(step: Step, todo: Sequence[ImageItem], ended: set[str]) -> int:
    """Items a stopped run wrote but never counted (a worker finished them while the stop came): the record
    counts what is on disk."""
    exists = FolderListing()
    return sum(1 for it in todo if it.key not in ended and _finished_earlier(step.outputs(it), exists))


def _stop_after(error: BaseException | None, executor: Any, report: RunReport, out_dir: Path) -> BaseException | None:
    """End the workers after the run ended (``error`` None: normally) and say in ``report`` how it ended.
    Returns the exception to raise: the one that ended the run, or a ``StepError`` for a dead worker."""
    if error is None:
        if executor is not None:
            executor.shutdown(wait=True)
        return None
    stop_executor(executor)
    if isinstance(error, KeyboardInterrupt):
        report.interrupted = True
        error = as_interrupted(error)
    elif isinstance(error, BrokenProcessPool):
        cause = error
        error = StepError(f"a worker process died ({cause}); often the system ran out of memory on a large image: "
                          f"rerun to continue where it stopped, with fewer --workers if it happens again")
        error.__cause__ = cause
        report.error = str(error)
    elif isinstance(error, StepError):  # e.g. the disk is full: nothing more can be written
        report.error = str(error)
    elif not isinstance(error, FailFast):  # e.g. setup() could not load its model: no record, the error as it is
        raise error
    remove_stale_temp_files(out_dir)
    return error


def _write_record(step: Step, report: RunReport, options: RunOptions, started: datetime, out_dir: Path,
                  error: BaseException | None, layout: DatasetLayout | None) -> None:
    try:
        write_run_record(record_path(out_dir, options.shard), _record(step, report, options, started, layout))
    except OSError as exc:
        if error is None:
            raise StepError(f"cannot write the run record into {out_dir}: {exc.strerror or exc}") from None
        console.print(f"[yellow]warning:[/] the run record could not be written either ({exc.strerror or exc})")


def _plan(step: Step, items: Sequence[ImageItem], options: RunOptions, report: RunReport) -> tuple[list, list]:
    """This shard's items, and those of them still to do (all with ``--overwrite``)."""
    mine = options.shard.select(items)
    step.plan_items(items, mine, options.shard)
    if options.overwrite or not _holds_outputs(Path(step.out_dir)):  # a fresh folder: nothing can be finished yet
        todo = list(mine)
    else:
        known = step.known_finished(mine)
        if known is not None:  # the step's own journal says which are finished: no outputs() to compute
            todo = [it for it in mine if it.key not in known]
        else:
            exists = FolderListing()
            todo = [it for it in mine if not _finished_earlier(step.outputs(it), exists)]
    report.total, report.skipped = len(mine), len(mine) - len(todo)
    return mine, todo


def _holds_outputs(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds anything but the engine's own files (lock, run records, temporary files)."""
    try:
        with os.scandir(out_dir) as entries:
            return any(not (e.name.startswith((".autobackswap", TEMP_PREFIX)) or (e.name.startswith("autobackswap") and e.name.endswith(".json")))
                       for e in entries)
    except OSError:
        return False


def _finished_earlier(outputs: list[Path], exists: FolderListing) -> bool:
    return bool(outputs) and all(exists(p) for p in outputs)


class _Drive:
    """Drives one run's items through the step's hooks: a window of work in flight, batches for ``compute``,
    the counts and the progress bar."""

    def __init__(self, step: Step, options: RunOptions, report: RunReport, executor: Any, step_arg: Step | None, progress, workers: int):
        self.step, self.options, self.report, self.progress = step, options, report, progress
        self.executor, self.step_arg, self.workers = executor, step_arg, workers
        self.window = max(4, 4 * max(1, workers), 2 * options.batch_size)
        self.task = None
        self.ended: set[str] = set()  # keys of the items whose outcome was counted

    def run(self, todo: list[ImageItem]) -> None:
        self.task = self.progress.add_task(self.step.name, total=len(todo), status=status_text(self.report))
        if not todo:
            return
        if self.options.executor == "ray":  # models load in Ray's actors, not here
            from .ray_executor import run_on_ray

            return run_on_ray(self.step, todo, self.options, self._finished)
        computers = _Computers(self.step.replicas() if self.step.compute is not None else [self.step])
        torch_threads = None if self.step.compute_bound else share_cores_with_workers(self.workers)
        try:
            if self.step.compute is None:
                self._run_per_item(todo)
            else:
                self._run_batched(todo, computers)
        finally:
            computers.close()
            restore_torch_threads(torch_threads)

    def _finished(self, item: ImageItem, ok: bool, value: Any) -> None:
        self.ended.add(item.key)
        if ok:
            self.report.done += 1
            self.step.collect(item, value)
        elif isinstance(value, LeftOutReason):  # counted and listed, no failure: --fail-fast goes on
            self.report.leave_out(str(item.rel), value.kind)
            if value.kind == "no_foreground":  # low confidence is told once, in the summary (there may be many)
                self.progress.console.print(f"[yellow]left out[/] {shortened(str(item.rel))}: {shortened(str(value))}")
        else:
            self.report.failures.append({"item": str(item.rel), "reason": str(value)})
            if isinstance(value, RunStopper):
                raise StepError(f"cannot write the output: {value} ({item.rel}); the run stopped. Free space or "
                                f"fix the folder, then run the same command again to continue")
            self.progress.console.print(f"[red]failed[/] {shortened(str(item.rel))}: {shortened(str(value))}")
            if self.options.fail_fast:
                raise FailFast(f"{item.rel}: {value}")
        self.progress.update(self.task, advance=1, status=status_text(self.report))

    def _submitted(self, source, fn, pending: deque) -> None:
        """Top up ``pending`` with (item, future) pairs from ``source`` up to the window."""
        while len(pending) < self.window:
            item = next(source, None)
            if item is None:
                return
            pending.append((item, self.executor.submit(fn, self.step_arg, item)))

    def _run_per_item(self, todo: list[ImageItem]) -> None:
        source, pending = iter(todo), deque()
        self._submitted(source, work_process_and_write, pending)
        while pending:
            item, fut = pending.popleft()
            ok, value = fut.result()
            self._submitted(source, work_process_and_write, pending)
            self._finished(item, ok, value)

    def _run_batched(self, todo: list[ImageItem], computers: _Computers) -> None:
        source, pending, computing, writes, batch = iter(todo), deque(), deque(), deque(), []
        self._submitted(source, work_prepare, pending)
        while pending:
            item, fut = pending.popleft()
            ok, value = fut.result()
            self._submitted(source, work_prepare, pending)
            if ok:
                batch.append((item, value))
            else:
                self._finished(item, False, value)
            if len(batch) >= self.options.batch_size or not pending:
                if batch:
                    computing.append(computers.submit(batch))
                batch = []
                self._computed(computing, writes, computers.parallel - 1)
        if batch:
            computing.append(computers.submit(batch))
        self._computed(computing, writes, 0)
        self._drain(writes, 0)

    def _computed(self, computing: deque, writes: deque, limit: int) -> None:
        """Send finished batches on to ``write`` (in the order they went in); wait while more than ``limit`` compute."""
        while computing and (len(computing) > limit or computing[0].done()):
            for item, ok, result in computing.popleft().result():
                if ok:
                    writes.append((item, self.executor.submit(work_write, self.step_arg, item, result)))
                else:
                    self._finished(item, False, result)
            self._drain(writes, self.window)

    def _drain(self, writes: deque, limit: int) -> None:
        """Count finished writes; wait for the oldest while more than ``limit`` are in flight."""
        while writes and (len(writes) > limit or writes[0][1].done()):
            item, fut = writes.popleft()
            ok, value = fut.result()
            self._finished(item, ok, value)


class _Computers:
    """``compute`` on the step's replicas: in line for one; for several (one per GPU), each batch on a thread that
    takes a free replica, so the devices work side by side. Results come back as futures, read in order."""

    def __init__(self, replicas: list[Step]):
        self.replicas, self.parallel = replicas, len(replicas)
        self.threads = ThreadPoolExecutor(self.parallel, thread_name_prefix="compute") if self.parallel > 1 else None
        self.free: queue.SimpleQueue = queue.SimpleQueue()
        for replica in replicas:
            replica.setup()
            self.free.put(replica)

    def submit(self, batch: list) -> Future:
        if self.threads is None:
            done: Future = Future()
            done.set_result(compute_batch(self.replicas[0], batch))
            return done
        return self.threads.submit(self._on_a_free_replica, batch)

    def _on_a_free_replica(self, batch: list) -> list:
        replica = self.free.get()
        try:
            return compute_batch(replica, batch)
        finally:
            self.free.put(replica)

    def close(self) -> None:
        if self.threads is not None:
            self.threads.shutdown(wait=False, cancel_futures=True)


def _remove_leftover_temps(out_dir: Path, options: RunOptions) -> None:
    """A killed run may have left temp files; a parallel shard may be writing right now, so with shards only old
    leftovers (an hour) are removed."""
    if options.shard.count == 1:
        remove_stale_temp_files(out_dir)
        return
    now = time.time()
    for tmp in out_dir.rglob(TEMP_PREFIX + "*"):
        try:
            if now - tmp.stat().st_mtime > 3600:
                tmp.unlink()
        except OSError:
            pass


def _record(step: Step, report: RunReport, options: RunOptions, started: datetime, layout: DatasetLayout | None) -> dict:
    return build_record(
        step.name,
        layout=layout,
        status=status_of(report.failed, report.interrupted, report.error),
        options={**options.record(), **step.recorded_options()},
        counts={"total": report.total, "done": report.done, "skipped": report.skipped, "failed": report.failed,
                **{kind: len(report.left_out.get(kind, ())) for kind in LEFT_OUT_KINDS}},
        wall_time_s=report.wall_time_s,
        failures=report.failures,
        **{kind: sorted(report.left_out.get(kind, ())) for kind in LEFT_OUT_KINDS},
        started=started,
        shard={"index": options.shard.index, "count": options.shard.count, "source": options.shard.source},
        error=report.error,
        results=step.recorded_results(),
        warnings=report.warnings,
    )
