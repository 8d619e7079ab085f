"""One run at a time per output folder (or shard): a second run into the same place is refused, not mixed."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import StepError
from .options import Shard


def lock_path(out_dir: Path, shard: Shard = Shard()) -> Path:
    """The lock file of an output folder; shards of one folder run side by side, so each has its own."""
    return Path(out_dir) / f".autobackswap{shard.file_suffix}.lock"


@contextmanager
def output_lock(out_dir: Path, shard: Shard = Shard()) -> Iterator[None]:
    """Hold the output folder's lock while the body runs. The operating system drops it when the process ends,
    however it ends, so a killed run never leaves a stale lock. (No lock where ``fcntl`` is missing: Windows.)"""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    path = lock_path(out_dir, shard)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StepError(f"cannot write into {out_dir}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StepError(f"another autobackswap run is writing into {out_dir}; wait for it to finish, "
                            f"or write somewhere else") from None
        yield  # the file stays empty, so two finished runs leave byte-identical folders
    finally:
        os.close(fd)
