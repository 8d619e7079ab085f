"""``RunReport``: what one run of a step did (counts, failures, items left out, how it ended). The loop fills it; the
summary, the run record and the callers read it."""

from __future__ import annotations

from dataclasses import dataclass, field

from .options import Shard


@dataclass
class RunReport:
    """One run of a step over one shard: its counts, failures and how it ended."""

    step: str
    out_dir: str
    total: int = 0  # items in this shard
    done: int = 0
    skipped: int = 0
    failures: list[dict] = field(default_factory=list)
    left_out: dict[str, list[str]] = field(default_factory=dict)  # kind (LEFT_OUT_KINDS) -> items left out: not failures
    warnings: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0
    interrupted: bool = False
    shard: Shard = field(default_factory=Shard)
    error: str | None = None  # what stopped the run (a dead worker, a full disk)

    @property
    def no_foreground(self) -> list[str]:
        """The items left out because their mask holds no foreground."""
        return self.left_out.setdefault("no_foreground", [])

    @property
    def low_confidence(self) -> list[str]:
        """The items left out because their mask's confidence is below the threshold."""
        return self.left_out.setdefault("low_confidence", [])

    def leave_out(self, item: str, kind: str) -> None:
        """Count ``item`` as left out (``kind``: a ``LEFT_OUT_KINDS`` name)."""
        self.left_out.setdefault(kind, []).append(item)

    @property
    def failed(self) -> int:
        """How many items failed."""
        return len(self.failures)

    @property
    def ok(self) -> bool:
        """No item failed and the run was not interrupted."""
        return not self.failures and not self.interrupted
