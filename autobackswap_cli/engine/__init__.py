"""The engine: the one loop every step runs through, and what it shares with the steps.

Rooms (img2dataset style), one role each:

* ``errors``   StepError (whole run, exit 2), FailFast, the one-line reason of a failed item, LeftOut (an
  item left out, counted apart by kind: no foreground, low confidence; no failure);
* ``options``  RunOptions (workers, batch size, shard, overwrite), CommonOptions (those and what the item steps
  share: device, precision, seed, preview, files_from), shards from --shard / torchrun / SLURM, devices and precision;
* ``layout``   the class rule (``DatasetLayout``: a folder level or a metadata table), the active one;
* ``folder``   ``run_on_folder``: an item step's command (scan, check, run with the shared options);
* ``scan``     the reader: ``prepare_items`` scans DATA; ``read_items`` reads items in the main process,
  collecting failures (trainers, evaluate);
* ``step``     the step protocol: ``process`` or ``prepare``/``compute``, then ``write``, and the hooks around;
* ``workers``  worker processes: start, the calls they run, stop;
* ``loop``     ``run_step``: plan (shard, skip finished), drive the items, write the record once;
* ``lock``     one run at a time per output folder (or shard);
* ``record``   the run record ``autobackswap.json``: one writer for every step and trainer;
* ``report``   ``RunReport``: what a run did (counts, failures, how it ended);
* ``signals``  Ctrl-C / SIGTERM / SIGHUP become ``Interrupted`` (exit 128 + signal);
* ``progress`` the progress bar and the summary.

Steps never copy the loop: they subclass ``Step`` and call ``run_step``.
"""

from .errors import LEFT_OUT_KINDS, FailFast, LeftOut, LowConfidence, NoForeground, StepError, failure_reason
from .loop import run_step
from .options import (PRECISIONS, CommonOptions, RunOptions, Shard, available_cores, default_workers, parse_shard, resolve_device, resolve_devices,
                      resolve_precision, resolve_shard, shard_from_env)
from .progress import console, make_progress, print_summary
from .report import RunReport
from .record import (RUN_RECORD, build_record, model_record_path, record_interrupted_training, record_path, status_of,
                     write_run_record)
from .signals import Interrupted, as_interrupted, stop_on_signals
from .layout import DatasetLayout, metadata_table
from .scan import Dataset, as_dataset, check_outputs, prepare_items, read_items
from .step import Step
from .folder import run_on_folder

__all__ = [
    "FailFast", "LEFT_OUT_KINDS", "LeftOut", "LowConfidence", "NoForeground", "StepError", "failure_reason", "RunReport", "run_step", "PRECISIONS",
    "CommonOptions", "RunOptions", "Shard",
    "available_cores", "default_workers", "parse_shard", "resolve_device", "resolve_devices", "resolve_precision", "resolve_shard",
    "shard_from_env", "console", "make_progress", "print_summary", "RUN_RECORD", "build_record",
    "model_record_path", "record_interrupted_training", "record_path", "Interrupted", "as_interrupted", "stop_on_signals", "status_of", "write_run_record",
    "prepare_items", "check_outputs", "read_items", "Step",
    "Dataset", "DatasetLayout", "as_dataset", "metadata_table", "run_on_folder",
]
