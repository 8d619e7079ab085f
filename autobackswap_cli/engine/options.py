"""Options the engine understands for every step: workers, batch size, the shard, devices and precision."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

from .errors import StepError


def available_cores() -> int:
    """CPU cores this process may run on (respects taskset / container CPU sets)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """Worker processes for decode/encode: one per core (at most 16). The main process
    mostly waits — on the workers, or on the GPU — so it needs no core of its own
    (measured: on 2 cores, 2 workers segment ~1.5x faster than 1)."""
    return max(1, min(16, available_cores()))


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1
    source: str = "none"

    def select(self, items: Sequence[Any]) -> list[Any]:
        return list(items[self.index :: self.count])

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def file_suffix(self) -> str:
        """What a per-shard file adds to its name (``.shard-K-of-N``; nothing without shards), so that parallel
        shards of one folder never write the same record, manifest or lock."""
        return f".shard-{self.index}-of-{self.count}" if self.count > 1 else ""


def parse_shard(text: str) -> Shard:
    """Parse ``K/N`` (0 <= K < N)."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise StepError(f"--shard wants K/N with whole numbers, e.g. 0/4; got {text!r}") from None
    if n < 1 or not 0 <= k < n:
        raise StepError(f"--shard K/N needs 0 <= K < N; got {text!r}")
    return Shard(k, n, "--shard")


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard:
    """The shard a launcher asked for: torchrun (RANK/WORLD_SIZE) or a SLURM job array."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env and "RANK" in env and int(env["WORLD_SIZE"]) > 1:
        return Shard(int(env["RANK"]), int(env["WORLD_SIZE"]), "torchrun")
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        count = int(env["SLURM_ARRAY_TASK_COUNT"])
        index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        if count > 1:
            if not 0 <= index < count:
                raise StepError(f"SLURM array task {index} is outside 0..{count - 1}; set --shard K/N explicitly")
            return Shard(index, count, "slurm")
    return Shard()


def resolve_shard(text: str | None) -> Shard:
    return parse_shard(text) if text else shard_from_env()


@dataclass
class RunOptions:
    """Options the engine itself understands, shared by every step."""

    workers: int = field(default_factory=default_workers)
    batch_size: int = 16
    shard: Shard = field(default_factory=Shard)
    overwrite: bool = False
    fail_fast: bool = False
    progress: bool = True
    executor: str = "local"  # or "ray": the items as a Ray Data pipeline (engine.ray_executor)
    ray_address: str | None = None  # a running Ray cluster; None: a local instance
    gpus_per_worker: float = 0.0  # Ray: GPUs each model actor asks for

    def record(self) -> dict:
        """The engine's options as a run record holds them (a subclass's own fields are not the engine's)."""
        d = {f.name: getattr(self, f.name) for f in fields(RunOptions)}
        d["shard"] = self.shard.label
        d.pop("progress")
        if self.executor == "local":
            d.pop("ray_address"), d.pop("gpus_per_worker")
        return d


@dataclass
class CommonOptions(RunOptions):
    """The options the item steps share, declared once: the engine's (``RunOptions``: workers, batch size, shard,
    overwrite, fail-fast, progress, executor and Ray) and those each step reads from its own options by the same
    name (device, precision, seed, preview) or gives the scan (files_from). The command line declares each of them
    once (``cli._SHARED``) and hands a command one object; a library caller builds one, passes it to ``run_step``
    (it is the ``RunOptions``) and builds a step's options with ``into``. A command that takes only some of them
    gets the defaults for the others."""

    device: str = "auto"  # auto, cpu, cuda, cuda:N, cuda:N,M,... or mps
    precision: str = "auto"  # a model's arithmetic: auto (fp16 on CUDA, else fp32), fp32, fp16, bf16
    seed: int = 0
    preview: str | None = None  # a PNG grid of results
    files_from: str | None = None  # the images listed in this file (paths under DATA) instead of a scan of DATA

    def into(self, options_class: type, **values: Any) -> Any:
        """An ``options_class`` (a step's or trainer's options dataclass) whose fields named like a shared option
        take its value here, the rest ``values`` (which also override shared ones) or their defaults."""
        mine = {f.name for f in fields(self)}
        shared = {f.name: getattr(self, f.name) for f in fields(options_class) if f.name in mine}
        return options_class(**{**shared, **values})


def launcher_local_rank(env: Mapping[str, str] | None = None) -> int | None:
    """This process's rank on its machine when a launcher started several per machine: torchrun's ``LOCAL_RANK``,
    or SLURM's ``SLURM_LOCALID`` in a step of several tasks. None otherwise."""
    env = os.environ if env is None else env
    if "LOCAL_RANK" in env:
        return int(env["LOCAL_RANK"])
    if "SLURM_LOCALID" in env and int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or 1) > 1:
        return int(env["SLURM_LOCALID"])
    return None


def resolve_device(name: str = "auto"):
    """``auto|cpu|cuda|cuda:N|mps`` -> torch.device. A device that is not there is an error. Under torchrun or a
    multi-task SLURM step, ``cuda`` (and ``auto`` on a CUDA machine) is the GPU this process's local rank names."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return resolve_device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise StepError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
        dev = torch.device(name)
        count = torch.cuda.device_count()
        if dev.index is None and (rank := launcher_local_rank()) is not None:
            return torch.device("cuda", rank % count)
        if dev.index is not None and dev.index >= count:
            raise StepError(f"--device {name}: only {count} CUDA device(s) present")
        return dev
    if name == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise StepError("--device mps: Apple MPS is not available on this machine")
        return torch.device("mps")
    raise StepError(f"--device {name!r} is not one of auto, cpu, cuda, cuda:N, cuda:N,M,..., mps")


def resolve_devices(name: str = "auto", gpus: int | None = None) -> list:
    """The devices a step with a model runs replicas on: every visible GPU for ``cuda`` (or ``auto`` on a CUDA
    machine; the first ``gpus`` of them when given), the listed ones for ``cuda:0,2``, one device otherwise. Under
    torchrun or a multi-task SLURM step, the one GPU of this process's local rank."""
    import torch

    name = (name or "auto").strip().lower()
    if name.startswith("cuda:") and "," in name:
        devices = [resolve_device(f"cuda:{index.strip()}") for index in name[len("cuda:"):].split(",")]
        if len(set(devices)) < len(devices):
            raise StepError(f"--device {name}: a GPU is listed twice")
        return devices[:gpus] if gpus else devices
    first = resolve_device(name)
    one_named = first.index is not None and name not in ("cuda", "auto")
    if first.type != "cuda" or one_named or launcher_local_rank() is not None:
        return [first]
    count = torch.cuda.device_count()
    if gpus is not None and gpus > count:
        raise StepError(f"--gpus {gpus}: only {count} CUDA device(s) present")
    return [torch.device("cuda", i) for i in range(gpus or count)]


PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # --precision -> torch dtype name


def resolve_precision(precision: str, device_type: str) -> str:
    """``auto`` -> fp16 on CUDA, fp32 elsewhere; anything but auto/fp32/fp16/bf16 is an error."""
    if precision == "auto":
        return "fp16" if device_type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise StepError(f"--precision must be auto, fp32, fp16 or bf16; got {precision!r}")
    return precision


