"""What a user sees while a step runs and after: the progress bar and the summary."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from .errors import LEFT_OUT_KINDS
from .record import RUN_RECORD
from .report import RunReport

console = Console(stderr=True, soft_wrap=True)


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} it/s" if speed else "-- it/s", style="progress.data.speed")


LOG_INTERVAL_S = float(os.environ.get("AUTOBACKSWAP_LOG_INTERVAL", "30"))  # seconds between log lines
_log_json: Path | None = Path(os.environ["AUTOBACKSWAP_LOG_JSON"]) if os.environ.get("AUTOBACKSWAP_LOG_JSON") else None


def log_json_to(path: Path | None) -> None:
    """Also write progress as JSON lines to ``path`` (``--log-json``), for dashboards."""
    global _log_json
    _log_json = Path(path) if path else None


def log_json_path() -> Path | None:
    """The file ``--log-json`` appends to, if any (an output every command checks against its inputs)."""
    return _log_json


def make_progress(transient: bool = False, enabled: bool = True) -> RunProgress:
    """What every long loop reports progress through (items/s, counts, ETA): a live bar on a terminal, plain
    periodic lines when stderr is a log (SLURM, Ray, ``make``), JSON lines to ``--log-json``. ``enabled=False``
    (``--no-progress``) silences the bar and the lines, not the JSON log."""
    bar = None
    if enabled and console.is_terminal:
        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
                       TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                       console=console, transient=transient)
    return RunProgress(bar, lines=enabled and not console.is_terminal, json_path=_log_json)


@dataclass
class _Task:
    description: str
    total: float | None
    status: str = ""
    completed: float = 0
    started: float = field(default_factory=time.monotonic)
    last_line: float = field(default_factory=time.monotonic)


class RunProgress:
    """The progress of one loop, told three ways (any may be off): ``bar`` (rich, live), ``lines`` (a plain line
    when a task starts, every ``LOG_INTERVAL_S`` and at the end) and ``json_path`` (the same as JSON lines)."""

    def __init__(self, bar: Progress | None, lines: bool, json_path: Path | None):
        self.bar, self.lines, self.json_path = bar, lines, json_path
        self.console = bar.console if bar is not None else console
        self.tasks: dict[int, _Task] = {}

    def __enter__(self) -> RunProgress:
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
        for task in self.tasks.values():
            self._tell(task, "end")

    def add_task(self, description: str, total: float | None = None, status: str = "", **_) -> int:
        task_id = self.bar.add_task(description, total=total, status=status) if self.bar is not None else len(self.tasks)
        self.tasks[task_id] = task = _Task(description, total, status)
        self._tell(task, "start")
        return task_id

    def update(self, task_id: int, advance: float = 0, status: str | None = None, total: float | None = None) -> None:
        if self.bar is not None:
            self.bar.update(task_id, advance=advance, **({"status": status} if status is not None else {}),
                            **({"total": total} if total is not None else {}))
        task = self.tasks[task_id]
        task.completed += advance
        task.status = status if status is not None else task.status
        task.total = total if total is not None else task.total
        if time.monotonic() - task.last_line >= LOG_INTERVAL_S:
            self._tell(task, "progress")

    def _tell(self, task: _Task, event: str) -> None:
        if not (self.lines or self.json_path):
            return
        task.last_line = now = time.monotonic()
        elapsed = now - task.started
        rate = task.completed / elapsed if elapsed > 0 and task.completed else 0.0
        left = (task.total - task.completed) / rate if rate and task.total else None
        status = Text.from_markup(task.status).plain if task.status else ""
        if self.lines:
            self.console.print(_line(task, event, rate, elapsed, left, status), markup=False, highlight=False)
        if self.json_path:
            row = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "task": task.description, "event": event,
                   "done": task.completed, "total": task.total, "per_s": round(rate, 3), "elapsed_s": round(elapsed, 3),
                   "eta_s": round(left, 1) if left is not None else None, "status": status}
            try:
                with open(self.json_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
            except OSError as exc:
                self.console.print(f"[yellow]warning:[/] --log-json {self.json_path}: {exc.strerror or exc}; no more JSON lines")
                self.json_path = None


def _line(task: _Task, event: str, rate: float, elapsed: float, left: float | None, status: str) -> str:
    """One plain log line, e.g. ``segment: 450/600 (75%) · 41.3/s · 0:00:10 elapsed · ETA 0:00:03 · done 450``."""
    if event == "start":
        return f"{task.description}: started" + (f", {task.total:g} to do" if task.total is not None else "")
    counts = f"{task.completed:g}/{task.total:g}" + (f" ({100 * task.completed / task.total:.0f}%)" if task.total else "") \
        if task.total is not None else f"{task.completed:g}"
    parts = [f"{task.description}: {'ended at ' if event == 'end' else ''}{counts}", f"{rate:,.1f}/s",
             f"{timedelta(seconds=round(elapsed))} elapsed"]
    if left is not None and event != "end":
        parts.append(f"ETA {timedelta(seconds=round(left))}")
    return " · ".join(parts + ([status] if status else []))


def status_text(report: RunReport) -> str:
    parts = [f"done {report.done}"]
    if report.skipped:
        parts.append(f"skipped {report.skipped}")
    if report.failures:
        parts.append(f"[red]failed {report.failed}[/]")
    for kind, label in LEFT_OUT_KINDS.items():
        if report.left_out.get(kind):
            parts.append(f"[yellow]{label} {len(report.left_out[kind])}[/]")
    return " · ".join(parts)


def _left_out_text(report: RunReport) -> str:
    """``, no foreground: 3 images, low confidence: 1 image`` (nothing when none was left out)."""
    counts = [(label, len(report.left_out.get(kind, ()))) for kind, label in LEFT_OUT_KINDS.items()]
    return "".join(f", {label}: {n} image{'s' if n != 1 else ''}" for label, n in counts if n)


def print_summary(report: RunReport) -> None:
    """One line of counts (with ``no foreground: N images`` / ``low confidence: N images`` when a step left images
    out for that: no failure), the names of those images, and a table of failures with their reasons."""
    colour = "green" if report.ok else ("yellow" if not report.failures else "red")
    console.print(
        f"[{colour}]{report.step}[/]: {report.done} done, {report.skipped} skipped (already finished), "
        f"{report.failed} failed{_left_out_text(report)} of {report.total} in {report.wall_time_s:.1f}s -> {report.out_dir}"
    )
    for kind, label in LEFT_OUT_KINDS.items():
        names = sorted(report.left_out.get(kind, ()))
        if names:
            more = f" ... and {len(names) - 10} more (the run record lists them all)" if len(names) > 10 else ""
            console.print(f"[yellow]{label}[/] (left out, not failures): {', '.join(map(shortened, names[:10]))}{more}")
    if report.failures:
        table = Table(title=f"{report.failed} failed item(s)", show_lines=False)
        table.add_column("item")
        table.add_column("reason")
        for f in report.failures[:50]:
            table.add_row(shortened(f["item"]), shortened(f["reason"]))
        console.print(table)
        if report.failed > 50:
            console.print(f"... and {report.failed - 50} more: see {Path(report.out_dir) / RUN_RECORD}")


def shortened(text: str, limit: int = 160) -> str:
    """A name or reason cut for the terminal (the record keeps it whole): the table's layout time grows with the
    square of a cell's length, and an 80 KB name took 40 s."""
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 2 + 3:]}"
