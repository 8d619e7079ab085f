"""What goes wrong, and how it is told: run-level errors, the one-line reason of a failed item, and the one
per-item outcome that is not a failure (no foreground)."""

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


class NoForeground(ImageError):
    """Raised by a step for an item whose mask holds no foreground (at the step's threshold): there is nothing to
    make of it. Not a failure: the engine counts and lists it apart (``counts.no_foreground`` and
    ``no_foreground`` in the run record, "no foreground: N images" in the summary), it leaves the exit code at 0
    and ``--fail-fast`` goes on. It writes no output, so a rerun checks the item again (a mask read, no work): a
    mask segmented anew with a foreground is then used, and an empty one is counted again, never retried as a
    failure. An ``ImageError``: code that only knows those still leaves the item out."""


class NoForegroundReason(str):
    """The reason of an item a step left out with ``NoForeground``: a ``str``, as every item reason, whose type
    says it is no failure (it travels back from workers and Ray tasks like ``RunStopper``)."""


def failure_reason(exc: BaseException) -> str:
    """The one line a user reads for a failed item: an image problem as it was said, else the exception's type and
    first line. For ``NoForeground``, a ``NoForegroundReason``."""
    if isinstance(exc, NoForeground):
        return NoForegroundReason(str(exc))
    if isinstance(exc, ImageError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
        name = os.fsencode(exc.filename2 or exc.filename or "")
        longest = max((len(part) for part in name.split(b"/")), default=0)
        return (f"output name too long for the file system ({longest} bytes in one name; most allow 255): shorten the "
                f"input's name ({os.path.basename(os.fsdecode(name))[:60]}...)")
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
