"""GPU against CPU, side by side in one run: images/s of `segment`, `inpaint` (the classical default and a tiny
diffusers pipeline) and `train-segmenter`, with fp32 / fp16 / bf16 where the step has a precision.

Run: ``python benchmarks/gpu.py`` (``make gpu-check`` runs it after the ``cuda`` tests; a few minutes on one GPU).
Without CUDA it measures the CPU rows only and says so. Nothing is downloaded: the images are generated, the
segmenter is trained here, the diffusers pipeline is a tiny random one built locally (tests/tiny_models.py).

Each figure is the step's own wall time from its run record (the model load and workers' start included), for
``--images`` images of ``--size`` px; the ratio column is against the CPU row of the same step.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from autobackswap_cli.sample_data import SampleSpec, generate  # noqa: E402


def cli(*args) -> dict:
    """Run one command in a child process (as a user would); its run record."""
    args = [str(a) for a in args]
    result = subprocess.run([sys.executable, "-m", "autobackswap_cli", *args, "--no-progress"], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"failed: autobackswap {' '.join(args)}\n{result.stderr[-2000:]}")
    out = Path(args[args.index("-o") + 1])
    record = out / "autobackswap.json" if out.is_dir() else out.with_name(out.name + ".json")
    return json.loads(record.read_text())


def rate(record: dict, images: int) -> float:
    return images / max(record["wall_time_s"], 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=600, help="images per measured run")
    parser.add_argument("--size", type=int, default=256, help="image side in px")
    parser.add_argument("--diffusers-images", type=int, default=48, help="images for the diffusers rows (slow on a CPU)")
    args = parser.parse_args()

    import torch

    cuda = torch.cuda.is_available()
    devices = ["cpu"] + (["cuda"] if cuda else [])
    print(f"machine: {os.cpu_count()} CPU cores; " + (f"GPU {torch.cuda.get_device_name(0)}" if cuda else "no CUDA device: GPU rows not measured"))
    print(f"torch {torch.__version__}; {args.images} images of {args.size} px\n")
    rows: list[tuple[str, str, float]] = []

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        per_class = max(1, args.images // 3)
        generate(tmp / "data", SampleSpec(seed=1, size=args.size, train_per_class=per_class, test_per_group=1, labelled=120, grid=8))
        data, labels, n = tmp / "data/train", tmp / "data/labels", 3 * per_class

        # train-segmenter: the same labels and epochs on each device
        for device in devices:
            t0 = time.perf_counter()
            record = cli("train-segmenter", data, labels, "-o", tmp / f"seg-{device}.safetensors", "--epochs", 10, "--patience", 10, "--device", device)
            epochs = record["metrics"]["epochs_run"]
            labelled = record["counts"]["used"]
            rows.append(("train-segmenter", f"{device} fp32", labelled * epochs / (time.perf_counter() - t0)))
        segmenter = tmp / "seg-cpu.safetensors"

        # segment: CPU (default workers) against CUDA in each precision
        for device, precision in [("cpu", "fp32")] + [("cuda", p) for p in ("fp32", "fp16", "bf16") if cuda]:
            record = cli("segment", data, "-m", segmenter, "-o", tmp / f"masks-{device}-{precision}", "--device", device, "--precision", precision,
                         "--batch-size", 64 if device == "cuda" else 16)
            rows.append(("segment", f"{device} {precision}", rate(record, n)))
        masks = tmp / "masks-cpu-fp32"

        # inpaint: the classical default runs on the CPU wherever it is (the GPU does not take part)
        record = cli("inpaint", data, masks, "-o", tmp / "bg-texture")
        rows.append(("inpaint --method texture", "cpu", rate(record, n)))

        # inpaint with a (tiny) diffusion pipeline: CPU against CUDA
        try:
            from tiny_models import build_tiny_inpaint_pipeline

            pipeline = build_tiny_inpaint_pipeline(tmp / "pipeline")
        except ImportError as exc:
            print(f"diffusers rows skipped: {exc} (carry the wheels: see the README's Development section)")
            pipeline = None
        if pipeline is not None:
            few = tmp / "few"
            for cls in sorted(p.name for p in data.iterdir()):
                (few / cls).mkdir(parents=True)
                for f in sorted((data / cls).iterdir())[: args.diffusers_images // 3]:
                    shutil.copy(f, few / cls / f.name)
            m = 3 * (args.diffusers_images // 3)
            for device, precision in [("cpu", "fp32")] + [("cuda", p) for p in ("fp32", "fp16", "bf16") if cuda]:
                record = cli("inpaint", few, masks, "-o", tmp / f"bg-diff-{device}-{precision}", "--method", "diffusers", "--model", pipeline,
                             "--steps", 10, "--resolution", 256, "--device", device, "--precision", precision, "--batch-size", 8)
                rows.append(("inpaint --method diffusers (tiny)", f"{device} {precision}", rate(record, m)))

    cpu_rate = {step: r for step, where, r in rows if where.startswith("cpu")}
    print(f"{'step':36} {'device':12} {'images/s':>10} {'x CPU':>7}")
    for step, where, r in rows:
        print(f"{step:36} {where:12} {r:10.1f} {r / cpu_rate[step]:7.2f}")
    print("\n(train-segmenter: labelled images x epochs per second; the rest: images per second of the step's wall time)")


if __name__ == "__main__":
    main()
