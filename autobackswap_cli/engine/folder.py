"""One folder in, one folder out: what every item step's command does with the shared options."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from .loop import run_step
from .report import RunReport
from .options import CommonOptions
from .scan import Dataset, as_dataset, prepare_items
from .step import Step


def run_on_folder(data: Dataset | Path, out: Path, make_step: Callable[[], Step], common: CommonOptions,
                  other_inputs: Sequence[Path | None] = ()) -> RunReport:
    """Scan DATA (or take its list), check that no output (OUT, ``common.preview``) lands on an input (DATA,
    ``other_inputs``), then build the step (``make_step``: only once the inputs are checked) and run it with
    ``common``; returns its report."""
    data = as_dataset(data)
    items, warnings = prepare_items(data, out, other_inputs=other_inputs, output_files=[("--preview", common.preview)])
    return run_step(make_step(), items, common, warnings, layout=data.layout)
