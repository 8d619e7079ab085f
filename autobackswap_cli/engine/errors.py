"""What goes wrong, and how it is told: run-level errors and the one-line reason of a failed item."""

from __future__ import annotations

import errno

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


def failure_reason(exc: BaseException) -> str:
    """The one line a user reads for a failed item: an image problem as it was said, else the exception's type and
    first line."""
    if isinstance(exc, ImageError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
