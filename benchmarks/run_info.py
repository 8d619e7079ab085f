"""When and where a benchmark ran: written into every benchmark's JSON, printed by report.py beside its table."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone


def run_info() -> dict:
    """The date (UTC), the machine (CPU model and cores, any CUDA device) and the versions that made a figure."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "machine": f"{cpu}, {os.cpu_count()} cores" + (f", {gpu}" if gpu else ""),
            "python": platform.python_version(), "torch": torch.__version__}
