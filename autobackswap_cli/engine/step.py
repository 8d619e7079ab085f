"""The step protocol: what a step tells the engine, and the hooks the engine calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from ..images import ImageItem
from .report import RunReport


class Step:
    """Base class of a step. Subclasses set ``name`` and ``out_dir`` and override the hooks.

    A step either works item by item (``process`` then ``write``, both in a worker) or in batches with a model
    (``prepare`` in a worker, ``compute`` on a batch in the main process, ``write`` in a worker). Worker hooks must
    only use what the step object carried at construction (it is pickled to spawned workers); ``setup`` runs once
    in the main process after the workers have started (load models there).
    """

    name = "step"
    # True when ``compute`` (the model) is most of the work and the workers mostly wait for it: the main process
    # then keeps every core for torch's threads instead of leaving the workers theirs (a heavy model at 1 of 2
    # threads ran at 0.66x its floor). Fixed per step, so the thread count, and with it every output, does not
    # depend on timing.
    compute_bound = False
    out_dir: Path

    def outputs(self, item: ImageItem) -> list[Path]:
        """Files whose existence marks ``item`` as finished; none: it cannot be told (the item runs, e.g. to fail
        with its reason)."""
        raise NotImplementedError

    def plan_items(self, items: Sequence[ImageItem], mine: Sequence[ImageItem], shard) -> None:
        """Main process, before the plan and before workers start: all items, this shard's items and the shard
        (e.g. to group this shard's items into tar files). Nothing by default."""

    def known_finished(self, mine: Sequence[ImageItem]) -> set[str] | None:
        """Main process, after ``plan_items``: the keys of this shard's items the step knows are finished (from
        its own journal), so planning skips them without computing ``outputs`` (O(1) per item); None (the
        default): the engine checks each item's ``outputs``."""
        return None

    def setup(self) -> None:
        """Main-process preparation after workers exist (e.g. load the model)."""

    def process(self, item: ImageItem) -> Any:
        """Worker, for steps without ``compute``: all of one item's work but the writing; the result goes to
        ``write``."""
        raise NotImplementedError

    def prepare(self, item: ImageItem) -> Any:
        """Worker, for steps with ``compute``: read and prepare one item for its batch."""
        raise NotImplementedError

    compute: Callable[[list[Any]], list[Any]] | None = None
    """Main process, optional: a batch of ``prepare`` results -> one result per item."""

    def replicas(self) -> list["Step"]:
        """Copies of this step that ``compute`` side by side, one per device (e.g. one per GPU), each set up and
        fed whole batches on its own thread; just this step by default. A replica must give the bytes this step
        would for the same batch."""
        return [self]

    def write(self, item: ImageItem, result: Any) -> Any:
        """Worker: write the item's outputs; may return a small record for ``collect``."""
        raise NotImplementedError

    def collect(self, item: ImageItem, info: Any) -> None:
        """Main process: receives what ``write`` returned, in completion order."""

    def recorded_options(self) -> dict:
        """Step-specific options for the run record (device, model, ...)."""
        return {}

    def recorded_results(self) -> dict:
        """Step-specific results for the run record (e.g. quality against ground truth)."""
        return {}

    def finish(self, report: RunReport, items: Sequence[ImageItem]) -> None:
        """Main process, after the loop, with this shard's items (e.g. write a preview or a manifest);
        ``report.shard`` says which shard ran."""
