"""``--executor ray``: a step's items as a Ray Data pipeline, on a local Ray instance or a cluster.

    items still to do -> read & prepare (CPU tasks) -> compute (an actor pool; each actor holds one model and asks
    for ``--gpus-per-worker`` GPUs) -> write (CPU tasks, the same atomic writer) -> back to the driver

The driver is this process: it counts, collects (manifests, tar shards) and writes the run record exactly as the
local executor does, so resume (finished items are filtered out before the job), failures, the summary and the
outputs are the same. Ray retries a task whose worker was lost, and restarts a lost actor.
Needs the ``[ray]`` extra (``pip install 'autobackswap-cli[ray]'``).
"""

from __future__ import annotations

import inspect
import pickle
import signal
import threading
import warnings
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Sequence

from ..images import ImageItem
from .errors import StepError
from .options import RunOptions, available_cores
from .signals import STOP_SIGNALS
from .step import Step
from .workers import call_safely, compute_batch

# A task whose worker died runs again this many times (Ray Data's own default is forever: an image that always kills
# its worker would never end the run).
TASK_RETRIES = 3


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        return False
    return True


def _connect(address: str | None) -> bool:
    """Connect to ``address`` (a running cluster) or start a local instance; True when this call started it."""
    if not ray_available():
        raise StepError("--executor ray needs Ray: pip install 'autobackswap-cli[ray]' (or pip install 'ray[data]')")
    import ray

    if ray.is_initialized():
        return False
    ours = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} if threading.current_thread() is threading.main_thread() else {}
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    else:
        ray.init(num_cpus=available_cores(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    for sig, handler in ours.items():  # ray.init takes SIGTERM (exit 15, a crash dump, no record): give it back
        if handler is not None:
            signal.signal(sig, handler)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.execution_options.preserve_order = False
    return True


def _item(row: dict) -> ImageItem:
    return ImageItem(PurePosixPath(row["rel"]), Path(row["root"]), row["label"], row["group"], row["level"])


def _process(row: dict, step: Step) -> dict:
    """Ray task: ``process`` then ``write`` for steps without a model."""
    ok, value = call_safely(step.process, _item(row))
    if ok:
        ok, value = call_safely(step.write, _item(row), value)
    return {"index": row["index"], "ok": ok, "value": pickle.dumps(value)}


def _prepare(row: dict, step: Step) -> dict:
    """Ray task: read and prepare one item for its batch (CPU)."""
    ok, value = call_safely(step.prepare, _item(row))
    return {**row, "ok": ok, "value": pickle.dumps(value)}


class _Compute:
    """Ray actor: one model replica (``setup`` once), ``compute`` on each batch; items that failed earlier pass."""

    def __init__(self, step: Step):
        self.step = step
        self.step.setup()

    def __call__(self, batch: dict) -> dict:
        prepared = [i for i, ok in enumerate(batch["ok"]) if ok]
        results = compute_batch(self.step, [(i, pickle.loads(batch["value"][i])) for i in prepared])
        ok, value = list(batch["ok"]), list(batch["value"])
        for i, done, result in results:
            ok[i], value[i] = done, pickle.dumps(result)
        return {**batch, "ok": ok, "value": value, "computed": [i in prepared for i in range(len(ok))]}


def _write(row: dict, step: Step) -> dict:
    """Ray task: write one computed item with the step's own (atomic) writer."""
    if not (row["ok"] and row["computed"]):
        return {"index": row["index"], "ok": row["ok"], "value": row["value"]}
    ok, value = call_safely(step.write, _item(row), pickle.loads(row["value"]))
    return {"index": row["index"], "ok": ok, "value": pickle.dumps(value)}


def _task_retries() -> dict:
    return {"max_retries": TASK_RETRIES}


def _actor_restarts() -> dict:
    return {"max_restarts": TASK_RETRIES, "max_task_retries": TASK_RETRIES}


def _pipeline(ds, step: Step, options: RunOptions):
    """read & prepare (tasks) -> compute (an actor pool, GPUs per actor) -> write (tasks); or process+write tasks."""
    import ray

    bounded = "ray_remote_args_fn" in inspect.signature(ds.map).parameters  # gone in Ray 2.64: Ray's defaults then
    task = {"fn_kwargs": {"step": step}, **({"ray_remote_args_fn": _task_retries} if bounded else {})}
    if step.compute is None:
        return ds.map(_process, **task)
    gpus = options.gpus_per_worker
    actors = max(1, int(ray.cluster_resources().get("GPU", 0) // gpus)) if gpus else 1
    ds = ds.map(_prepare, **task)
    ds = ds.map_batches(_Compute, fn_constructor_args=(step,), batch_size=options.batch_size, batch_format="numpy",
                        concurrency=actors, num_gpus=gpus or None, **({"ray_remote_args_fn": _actor_restarts} if bounded else {}))
    return ds.map(_write, **task)


def run_on_ray(step: Step, todo: Sequence[ImageItem], options: RunOptions, finished: Callable[[ImageItem, bool, Any], None]) -> None:
    """Run ``todo`` through ``step`` on Ray; ``finished(item, ok, value)`` is called in this process for each
    item as its result arrives (the local executor's bookkeeping)."""
    started_here = _connect(options.ray_address)
    import ray

    try:
        rows = [{"index": i, "rel": str(item.rel), "root": str(item.root), "label": item.label, "group": item.group, "level": item.level}
                for i, item in enumerate(todo)]
        ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * available_cores())))
        with warnings.catch_warnings():  # bounded retries are only given through a deprecated argument (Ray 2.60)
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = _pipeline(ds, step, options)
        for row in ds.iter_rows():
            finished(todo[int(row["index"])], bool(row["ok"]), pickle.loads(row["value"]))
    finally:
        if started_here:
            ray.shutdown()
