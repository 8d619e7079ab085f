"""What a user sees while a step runs and after: the progress bar and the summary."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from .record import RUN_RECORD

if TYPE_CHECKING:
    from .loop import RunReport

console = Console(stderr=True, soft_wrap=True)


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} it/s" if speed else "-- it/s", style="progress.data.speed")


def make_progress(transient: bool = False, enabled: bool = True) -> Progress:
    """The progress bar style every long loop uses (items/s, counts, ETA)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=transient,
        disable=not enabled,
    )


def status_text(report: RunReport) -> str:
    parts = [f"done {report.done}"]
    if report.skipped:
        parts.append(f"skipped {report.skipped}")
    if report.failures:
        parts.append(f"[red]failed {report.failed}[/]")
    return " · ".join(parts)



def print_summary(report: RunReport) -> None:
    """One line of counts, and a table of failures with their reasons."""
    colour = "green" if report.ok else ("yellow" if not report.failures else "red")
    console.print(
        f"[{colour}]{report.step}[/]: {report.done} done, {report.skipped} skipped (already finished), "
        f"{report.failed} failed of {report.total} in {report.wall_time_s:.1f}s -> {report.out_dir}"
    )
    if report.failures:
        table = Table(title=f"{report.failed} failed item(s)", show_lines=False)
        table.add_column("item")
        table.add_column("reason")
        for f in report.failures[:50]:
            table.add_row(f["item"], f["reason"])
        console.print(table)
        if report.failed > 50:
            console.print(f"... and {report.failed - 50} more: see {Path(report.out_dir) / RUN_RECORD}")
