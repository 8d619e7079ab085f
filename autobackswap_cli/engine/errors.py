"""What goes wrong, and how it is told: run-level errors, the one-line reason of a failed item, and the one
per-item outcomes that are not failures (left out: no foreground, low confidence)."""

from __future__ import annotations

import errno
import os

from ..images import ImageError

# an item failing with one of these cannot be written, and neither can the next: the run stops
STOPPING_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR}


class StepError(Exception):
    """A problem with the whole run (bad arguments, missing folders): reported, exit code 2."""


class FailFast(Exception):
    """Raised with ``--fail-fast`` at the first failed item."""


class RunStopper(str):
    """The reason of an item failure that stops the whole run (the output cannot be written: disk full,
    read-only, no permission)."""


class LeftOut(ImageError):
    """Raised by a step for an item there is nothing good to make of: not a failure. The engine counts and lists it
    apart by its ``kind`` (``counts.<kind>`` and ``<kind>`` in the run record, "<label>: N images" in the
    summary), it leaves the exit code at 0 and ``--fail-fast`` goes on. It writes no output, so a rerun checks the
    item again (cheap: no work is done for it). An ``ImageError``: code that only knows those still leaves the
    item out."""

    kind = "left_out"
    label = "left out"


class NoForeground(LeftOut):
    """The item's mask holds no foreground (at the step's threshold): nothing to make of it. A mask segmented
    anew with a foreground is used by the next run; an empty one is counted again, never retried as a failure."""

    kind = "no_foreground"
    label = "no foreground"


class LowConfidence(LeftOut):
    """The item's mask is probably wrong (its confidence in MASKS/mask_quality.csv is below ``--min-confidence``):
    composing it would teach the background as the object, so it is left out."""

    kind = "low_confidence"
    label = "low confidence"


LEFT_OUT_KINDS = {cls.kind: cls.label for cls in (NoForeground, LowConfidence)}  # the kinds the record counts


class LeftOutReason(str):
    """The reason of an item a step left out (``LeftOut``): a ``str``, as every item reason, whose ``kind`` says
    which list it goes to (it travels back from workers and Ray tasks like ``RunStopper``)."""

    def __new__(cls, text: str, kind: str) -> "LeftOutReason":
        reason = super().__new__(cls, text)
        reason.kind = kind
        return reason

    def __reduce__(self):
        return (LeftOutReason, (str(self), self.kind))


def failure_reason(exc: BaseException) -> str:
    """The one line a user reads for a failed item: an image problem as it was said, else the exception's type and
    first line. For ``LeftOut``, a ``LeftOutReason``."""
    if isinstance(exc, LeftOut):
        return LeftOutReason(str(exc), exc.kind)
    if isinstance(exc, ImageError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
        name = os.fsencode(exc.filename2 or exc.filename or "")
        longest = max((len(part) for part in name.split(b"/")), default=0)
        return (f"output name too long for the file system ({longest} bytes in one name; most allow 255): shorten the "
                f"input's name ({os.path.basename(os.fsdecode(name))[:60]}...)")
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
