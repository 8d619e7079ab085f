"""The one loop every step runs through.

    items -> shard -> skip finished -> load in workers -> batch -> compute -> write in workers

Roles (img2dataset style):

* **reader**   ``prepare_items`` scans the input ImageFolder (leaving out an output
  folder that sits inside it) and reports empty classes and stray files;
* **distributor** ``Shard`` picks this process's share (``--shard K/N``, torchrun's
  RANK/WORLD_SIZE or a SLURM array) and ``run_step`` drops finished items;
* **worker**   ``Step.load`` (decode, resize) and ``Step.write`` (encode, atomic write)
  run in worker processes; ``Step.compute`` runs batched in the main process (the
  model). A step without ``compute`` runs load+write fused in the worker;
* **writer**   ``Step.write`` writes through ``images.write_*_atomic``; the run record
  ``autobackswap.json`` is written last and lists counts, failures and options.

Steps never copy this loop: they subclass ``Step`` and call ``run_step``.
"""

from __future__ import annotations

import importlib.machinery
import json
import multiprocessing as mp
import os
import platform
import signal
import sys
import time
import traceback
from collections import deque
from contextlib import contextmanager
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from . import __version__
from .images import FolderScan, ImageError, ImageItem, is_inside, remove_stale_temp_files, scan_image_folder

console = Console(stderr=True, soft_wrap=True)

RUN_RECORD = "autobackswap.json"


class StepError(Exception):
    """A problem with the whole run (bad arguments, missing folders): reported, exit code 2."""


class FailFast(Exception):
    """Raised with ``--fail-fast`` at the first failed item."""


# --------------------------------------------------------------------------- options


def available_cores() -> int:
    """CPU cores this process may run on (respects taskset / container CPU sets)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """Worker processes for decode/encode: one per core (at most 16). The main process
    mostly waits — on the workers, or on the GPU — so it needs no core of its own
    (measured: on 2 cores, 2 workers segment ~1.5x faster than 1)."""
    return max(1, min(16, available_cores()))


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1
    source: str = "none"

    def select(self, items: Sequence[Any]) -> list[Any]:
        return list(items[self.index :: self.count])

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """Parse ``K/N`` (0 <= K < N)."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise StepError(f"--shard wants K/N with whole numbers, e.g. 0/4; got {text!r}") from None
    if n < 1 or not 0 <= k < n:
        raise StepError(f"--shard K/N needs 0 <= K < N; got {text!r}")
    return Shard(k, n, "--shard")


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard:
    """The shard a launcher asked for: torchrun (RANK/WORLD_SIZE) or a SLURM job array."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env and "RANK" in env and int(env["WORLD_SIZE"]) > 1:
        return Shard(int(env["RANK"]), int(env["WORLD_SIZE"]), "torchrun")
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        count = int(env["SLURM_ARRAY_TASK_COUNT"])
        index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        if count > 1:
            if not 0 <= index < count:
                raise StepError(f"SLURM array task {index} is outside 0..{count - 1}; set --shard K/N explicitly")
            return Shard(index, count, "slurm")
    return Shard()


def resolve_shard(text: str | None) -> Shard:
    return parse_shard(text) if text else shard_from_env()


@dataclass
class RunOptions:
    """Options the engine itself understands, shared by every step."""

    workers: int = field(default_factory=default_workers)
    batch_size: int = 16
    shard: Shard = field(default_factory=Shard)
    overwrite: bool = False
    fail_fast: bool = False
    progress: bool = True

    def record(self) -> dict:
        d = asdict(self)
        d["shard"] = self.shard.label
        d.pop("progress")
        return d


def resolve_device(name: str = "auto"):
    """``auto|cpu|cuda|cuda:N|mps`` -> torch.device. A device that is not there is an error."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise StepError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise StepError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    if name == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise StepError("--device mps: Apple MPS is not available on this machine")
        return torch.device("mps")
    raise StepError(f"--device {name!r} is not one of auto, cpu, cuda, cuda:N, mps")


PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # --precision -> torch dtype name


def resolve_precision(precision: str, device_type: str) -> str:
    """``auto`` -> fp16 on CUDA, fp32 elsewhere; anything but auto/fp32/fp16/bf16 is an error."""
    if precision == "auto":
        return "fp16" if device_type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise StepError(f"--precision must be auto, fp32, fp16 or bf16; got {precision!r}")
    return precision


# --------------------------------------------------------------------------- reading the input


def prepare_items(data_dir: Path, out_dir: Path | None = None, extra_outputs: Sequence[Path] = ()) -> tuple[list[ImageItem], list[str]]:
    """Scan DATA for a step; returns its items and warnings for the run record.

    An output folder inside DATA is left out of the scan (and said so); an output
    folder equal to DATA is refused, since inputs are never modified.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise StepError(f"input folder not found: {data_dir}")
    warnings: list[str] = []
    outputs = [p for p in [out_dir, *extra_outputs] if p is not None]
    for out in outputs:
        if Path(out).resolve() == data_dir.resolve():
            raise StepError(f"output {out} is the input folder itself; choose another folder (inputs are never modified)")
        if is_inside(Path(out), data_dir):
            warnings.append(f"output folder {out} is inside the input folder {data_dir}; it is left out of the input")
    scan: FolderScan = scan_image_folder(data_dir, exclude=outputs)
    for cls in scan.empty_classes:
        warnings.append(f"class folder '{cls}' has no images; it is skipped")
    if scan.skipped_files:
        shown = ", ".join(scan.skipped_files[:5]) + (" ..." if len(scan.skipped_files) > 5 else "")
        warnings.append(f"{len(scan.skipped_files)} file(s) without an image extension were ignored: {shown}")
    if not scan.items:
        raise StepError(f"no images found in {data_dir} (expected DATA/<class>/<image>.jpg|png|...)")
    for w in warnings:
        console.print(f"[yellow]warning:[/] {w}")
    return scan.items, warnings


# --------------------------------------------------------------------------- the step protocol


class Step:
    """Base class of a step. Subclasses set ``name`` and override the hooks.

    ``load`` and ``write`` run in worker processes and must only use what the
    step object carried at construction (it is pickled to spawned workers);
    ``setup`` runs once in the main process after the workers have started
    (load models there); ``compute`` runs in the main process on batches.
    """

    name = "step"
    out_dir: Path

    def outputs(self, item: ImageItem) -> list[Path]:
        """Files whose existence marks ``item`` as finished."""
        raise NotImplementedError

    def setup(self) -> None:
        """Main-process preparation after workers exist (e.g. load the model)."""

    def load(self, item: ImageItem) -> Any:
        """Worker: read and prepare one item."""
        return item

    compute: Callable[[list[Any]], list[Any]] | None = None
    """Main process, optional: a batch of ``load`` results -> one result per item."""

    def write(self, item: ImageItem, result: Any) -> Any:
        """Worker: write the item's outputs; may return a small record for ``collect``."""
        raise NotImplementedError

    def collect(self, item: ImageItem, info: Any) -> None:
        """Main process: receives what ``write`` returned, in completion order."""

    def record(self) -> dict:
        """Step-specific options for the run record (device, model, ...)."""
        return {}

    def results(self) -> dict:
        """Step-specific results for the run record (e.g. quality against ground truth)."""
        return {}

    def finish(self, report: "RunReport", items: Sequence[ImageItem]) -> None:
        """Main process, after the loop, with this shard's items (e.g. write a preview or a manifest)."""


# --------------------------------------------------------------------------- worker side

_WORKER_STEP: Step | None = None


def _init_worker(step: Step) -> None:
    """Worker start: remember the step, leave Ctrl-C to the main process, one thread per worker."""
    global _WORKER_STEP
    _WORKER_STEP = step
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process coordinates Ctrl-C
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2

    cv2.setNumThreads(1)  # parallel regions on cores other processes use stall (measured)
    _keep_freed_memory_for_reuse()


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


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ImageError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _call(fn: Callable, *args) -> tuple[bool, Any]:
    try:
        return True, fn(*args)
    except Exception as exc:  # one bad item must not stop the run
        if os.environ.get("AUTOBACKSWAP_DEBUG"):
            traceback.print_exc()
        return False, _reason(exc)


def _work_load(step: Step | None, item: ImageItem):
    return _call((step or _WORKER_STEP).load, item)


def _work_write(step: Step | None, item: ImageItem, result: Any):
    return _call((step or _WORKER_STEP).write, item, result)


def _work_fused(step: Step | None, item: ImageItem):
    s = step or _WORKER_STEP
    ok, value = _call(s.load, item)
    if not ok:
        return ok, value
    return _call(s.write, item, value)


class _InlineExecutor:
    """Stands in for the process pool when ``--workers 0``: runs calls at submit time."""

    def __init__(self, step: Step):
        self.step = step

    def submit(self, fn, step_arg, *args) -> Future:
        fut: Future = Future()
        fut.set_result(fn(self.step, *args))
        return fut

    def shutdown(self, *a, **k) -> None:
        pass


# --------------------------------------------------------------------------- the loop


@dataclass
class RunReport:
    step: str
    out_dir: str
    total: int = 0  # items in this shard
    done: int = 0
    skipped: int = 0
    failures: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0
    interrupted: bool = False

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.interrupted


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} it/s" if speed else "-- it/s", style="progress.data.speed")


def make_progress(transient: bool = False, enabled: bool = True) -> Progress:
    """The progress bar style every long loop uses (items/s, counts, ETA)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=transient,
        disable=not enabled,
    )


def _record_path(out_dir: Path, shard: Shard) -> Path:
    if shard.count > 1:
        return out_dir / f"autobackswap.shard-{shard.index}-of-{shard.count}.json"
    return out_dir / RUN_RECORD


PAPER_THRESHOLDS = {"loose": 0.1, "tight": 0.5}  # the paper's loose and tight masks, for masks that do not say better


def _recorded_thresholds(masks_dir: Path) -> dict:
    """The loose/tight thresholds that ``segment`` recorded in a MASKS folder ({} when it holds none):
    the values its segmenter chose on its validation labels."""
    try:
        record = json.loads((Path(masks_dir) / RUN_RECORD).read_text())
        thresholds = record["options"].get("thresholds") or {}
        return {k: float(thresholds[k]) for k in PAPER_THRESHOLDS if k in thresholds}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def mask_threshold(masks_dir: Path, name: str, given: float | None = None) -> tuple[float, str]:
    """The ``loose`` or ``tight`` threshold to apply to a MASKS folder, and where it came from: ``given`` (an
    option), else what ``segment`` recorded there (its segmenter's calibrated value), else the paper's."""
    if given is not None:
        return float(given), "option"
    recorded = _recorded_thresholds(masks_dir).get(name)
    if recorded is not None:
        return recorded, "masks' segmenter"
    return PAPER_THRESHOLDS[name], "default"


def write_run_record(path: Path, record: dict) -> None:
    from .images import write_bytes_atomic

    write_bytes_atomic(path, (json.dumps(record, indent=2, default=str) + "\n").encode())


def run_step(step: Step, items: Sequence[ImageItem], options: RunOptions, warnings: Sequence[str] = ()) -> RunReport:
    """Run ``step`` over ``items`` (already scanned) and write the run record.

    Returns the report; the caller turns failures into the exit code.
    """
    out_dir = Path(step.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    # A killed run may have left temp files; a parallel shard may be writing right now, so
    # with shards only old leftovers are removed.
    if options.shard.count == 1:
        remove_stale_temp_files(out_dir)
    else:
        _remove_old_temps(out_dir, max_age_s=3600)

    report = RunReport(step=step.name, out_dir=str(out_dir), warnings=list(warnings))
    mine = options.shard.select(items)
    report.total = len(mine)
    if options.overwrite:
        todo = list(mine)
    else:
        todo = [it for it in mine if not all(p.exists() for p in step.outputs(it))]
    report.skipped = len(mine) - len(todo)

    workers = max(0, int(options.workers))
    if len(todo) < 2:
        workers = 0  # not worth starting processes
    executor: Any
    if workers:
        with _workers_skip_main_module(step):
            executor = ProcessPoolExecutor(max_workers=workers, mp_context=_worker_context(step), initializer=_init_worker, initargs=(step,))
            # Start every worker now (one submit each, before any can be idle), so their start-up
            # cost is not counted against the first batch.
            for f in [executor.submit(os.getpid) for _ in range(workers)]:
                f.result()
    else:
        executor = _InlineExecutor(step)
    step_arg = None if workers else step

    old_term = signal.getsignal(signal.SIGTERM)

    def _on_term(signum, frame):
        raise KeyboardInterrupt

    in_main_thread = _is_main_thread()
    if in_main_thread:
        signal.signal(signal.SIGTERM, _on_term)

    progress = make_progress(enabled=options.progress)
    torch_threads = None
    try:
        with progress:
            task = progress.add_task(step.name, total=len(todo), status=_status(report))
            if todo:
                step.setup()
                torch_threads = _share_cores_with_workers(workers)

            def fail(item: ImageItem, reason: str) -> None:
                report.failures.append({"item": str(item.rel), "reason": reason})
                progress.console.print(f"[red]failed[/] {item.rel}: {reason}")
                if options.fail_fast:
                    raise FailFast(f"{item.rel}: {reason}")

            def finished(item: ImageItem, ok: bool, value: Any) -> None:
                if ok:
                    report.done += 1
                    step.collect(item, value)
                else:
                    fail(item, value)
                progress.update(task, advance=1, status=_status(report))

            window = max(4, 4 * max(1, workers), 2 * options.batch_size)
            source = iter(todo)
            pending: deque = deque()

            def fill(fn) -> None:
                while len(pending) < window:
                    item = next(source, None)
                    if item is None:
                        return
                    pending.append((item, executor.submit(fn, step_arg, item)))

            if step.compute is None:
                fill(_work_fused)
                while pending:
                    item, fut = pending.popleft()
                    ok, value = fut.result()
                    fill(_work_fused)
                    finished(item, ok, value)
            else:
                writes: deque = deque()

                def drain(limit: int) -> None:
                    while writes and (len(writes) > limit or writes[0][1].done()):
                        item, fut = writes.popleft()
                        ok, value = fut.result()
                        finished(item, ok, value)

                def flush(batch: list) -> None:
                    if not batch:
                        return
                    for item, ok, result in _compute_batch(step, batch):
                        if ok:
                            writes.append((item, executor.submit(_work_write, step_arg, item, result)))
                        else:
                            finished(item, False, result)
                    drain(window)

                batch: list = []
                fill(_work_load)
                while pending:
                    item, fut = pending.popleft()
                    ok, value = fut.result()
                    fill(_work_load)
                    if ok:
                        batch.append((item, value))
                    else:
                        finished(item, False, value)
                    if len(batch) >= options.batch_size or not pending:
                        flush(batch)
                        batch = []
                flush(batch)
                drain(0)
        step.finish(report, mine)
    except (KeyboardInterrupt, FailFast) as exc:
        report.interrupted = isinstance(exc, KeyboardInterrupt)
        _stop_executor(executor)
        remove_stale_temp_files(out_dir)
        report.wall_time_s = time.perf_counter() - t0
        write_run_record(_record_path(out_dir, options.shard), _record(step, report, options, started))
        raise
    except BrokenProcessPool as exc:
        _stop_executor(executor)
        report.wall_time_s = time.perf_counter() - t0
        write_run_record(_record_path(out_dir, options.shard), _record(step, report, options, started))
        raise StepError(
            f"a worker process died ({exc}); often the system ran out of memory on a large image: "
            f"rerun to continue where it stopped, with fewer --workers if it happens again"
        ) from exc
    except BaseException:  # e.g. setup() could not load its model: no worker may outlive the run
        _stop_executor(executor)
        raise
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, old_term)
        _restore_torch_threads(torch_threads)
    executor.shutdown(wait=True)
    report.wall_time_s = time.perf_counter() - t0
    write_run_record(_record_path(out_dir, options.shard), _record(step, report, options, started))
    return report


def _share_cores_with_workers(workers: int) -> int | None:
    """Leave the cores the workers use to them: torch's own threads in this process would
    otherwise compete with them and stall (spinning threads on oversubscribed cores).
    Returns the previous thread count to restore, or None when nothing was changed."""
    torch = sys.modules.get("torch")
    if torch is None or workers == 0:
        return None
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, min(previous, available_cores() - workers)))
    return previous


def _restore_torch_threads(previous: int | None) -> None:
    if previous is not None:
        sys.modules["torch"].set_num_threads(previous)


def _compute_batch(step: Step, batch: list) -> Iterable[tuple[ImageItem, bool, Any]]:
    """Run ``compute`` on a batch; if the batch fails, retry item by item to isolate the culprit."""
    items = [b[0] for b in batch]
    payloads = [b[1] for b in batch]
    try:
        results = step.compute(payloads)
        return [(it, True, r) for it, r in zip(items, results)]
    except Exception as exc:
        if len(batch) == 1:
            return [(items[0], False, _reason(exc))]
    out = []
    for it, p in zip(items, payloads):
        ok, value = _call(step.compute, [p])
        out.append((it, ok, value[0] if ok else value))
    return out


def _status(report: RunReport) -> str:
    parts = [f"done {report.done}"]
    if report.skipped:
        parts.append(f"skipped {report.skipped}")
    if report.failures:
        parts.append(f"[red]failed {report.failed}[/]")
    return " · ".join(parts)


def _stop_executor(executor: Any) -> None:
    if isinstance(executor, ProcessPoolExecutor):
        procs = list(getattr(executor, "_processes", {}).values())
        for p in procs:
            try:
                p.terminate()
            except Exception:
                pass
        for p in procs:
            p.join(timeout=5)
        executor.shutdown(wait=False, cancel_futures=True)


def _remove_old_temps(folder: Path, max_age_s: float) -> None:
    from .images import TEMP_PREFIX

    now = time.time()
    for tmp in folder.rglob(TEMP_PREFIX + "*"):
        try:
            if now - tmp.stat().st_mtime > max_age_s:
                tmp.unlink()
        except OSError:
            pass


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _record(step: Step, report: RunReport, options: RunOptions, started: datetime) -> dict:
    return {
        "step": step.name,
        "package_version": __version__,
        "status": "interrupted" if report.interrupted else ("completed with failures" if report.failures else "completed"),
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(report.wall_time_s, 3),
        "options": {**options.record(), **step.record()},
        "shard": {"index": options.shard.index, "count": options.shard.count, "source": options.shard.source},
        "counts": {"total": report.total, "done": report.done, "skipped": report.skipped, "failed": report.failed},
        "results": step.results(),
        "failures": report.failures,
        "warnings": report.warnings,
        "python": platform.python_version(),
    }


def print_summary(report: RunReport) -> None:
    """One line of counts, and a table of failures with their reasons."""
    colour = "green" if report.ok else ("yellow" if not report.failures else "red")
    console.print(
        f"[{colour}]{report.step}[/]: {report.done} done, {report.skipped} skipped (already finished), "
        f"{report.failed} failed of {report.total} in {report.wall_time_s:.1f}s -> {report.out_dir}"
    )
    if report.failures:
        table = Table(title=f"{report.failed} failed item(s)", show_lines=False)
        table.add_column("item")
        table.add_column("reason")
        for f in report.failures[:50]:
            table.add_row(f["item"], f["reason"])
        console.print(table)
        if report.failed > 50:
            console.print(f"... and {report.failed - 50} more: see {Path(report.out_dir) / RUN_RECORD}")
