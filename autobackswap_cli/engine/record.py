"""The run record (``autobackswap.json``): ONE writer for every step and trainer. What later steps read back from
one (the thresholds a MASKS folder's segmenter chose) is ``autobackswap_cli.mask_thresholds``."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..images import write_bytes_atomic
from .layout import DatasetLayout
from .options import Shard

RUN_RECORD = "autobackswap.json"


def build_record(step: str, *, status: str, options: dict, counts: dict, wall_time_s: float, failures: list[dict] = (),
                 started: datetime | None = None, error: str | None = None, layout: DatasetLayout | None = None, **extra) -> dict:
    """A run record: what ran (step, package version, options), how it ended (status, counts, failures) and how
    long it took. ``extra`` adds step-specific sections (results, shard, warnings, metrics, ...). The options hold
    the data layout that placed the items in classes (``layout``: ``--class-level`` / ``--metadata``)."""
    options = {**options, "layout": options.get("layout") or (layout or DatasetLayout()).recorded()}
    finished = datetime.now(timezone.utc)
    return {
        "step": step,
        "package_version": __version__,
        "status": status,
        "started": (started or finished).isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "wall_time_s": round(float(wall_time_s), 3),
        "options": options,
        "counts": counts,
        **({"error": error} if error else {}),
        **extra,
        "failures": list(failures),
        "python": platform.python_version(),
    }


def write_run_record(path: Path, record: dict) -> None:
    """Write a record atomically (a reader never sees half of one)."""
    write_bytes_atomic(path, (json.dumps(record, indent=2, default=str) + "\n").encode())


def model_record_path(model: Path) -> Path:
    """Where a trainer's run record goes: beside its model file (``model.safetensors.json``)."""
    return Path(model).with_name(Path(model).name + ".json")


def record_interrupted_training(model: Path, step: str, exc: KeyboardInterrupt, *, options: dict, counts: dict,
                                wall_time_s: float, failures: list[dict] = ()) -> BaseException:
    """A trainer stopped by Ctrl-C / SIGTERM before saving ``model``: write its record ("interrupted", no model)
    and return the exception to raise, with what the user can do next."""
    from .signals import as_interrupted

    kept = f"; the model already at {model} (from an earlier run) is untouched" if Path(model).exists() else ""
    write_run_record(model_record_path(model), build_record(step, status="interrupted", options=options, counts=counts,
                                                            wall_time_s=wall_time_s, failures=failures, model=None))
    return as_interrupted(exc, hint=f"no model was saved{kept}; run the same command again to train from the start")


def status_of(failures: int, interrupted: bool = False, error: str | None = None) -> str:
    """completed | completed with failures | interrupted | failed (the run stopped on an error)."""
    if error:
        return "failed"
    return "interrupted" if interrupted else ("completed with failures" if failures else "completed")


def record_path(out_dir: Path, shard: Shard) -> Path:
    """Where a step's record goes: one per shard, so parallel shards never write the same file."""
    return Path(out_dir) / f"autobackswap{shard.file_suffix}.json"  # RUN_RECORD without shards
