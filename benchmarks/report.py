"""Write benchmarks/README.md from the benchmarks' own JSON results (benchmarks/results/*.json).

Every table there is made by the benchmark script's own ``table`` function from the JSON that script wrote, with
the date and the machine it ran on, so a figure in the README cannot drift from what was run. Run it after a
benchmark:

    .venv/bin/python benchmarks/report.py          # or: make bench-report
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

# result file -> (title, command, what it measures)
BENCHMARKS = {
    "real_photos.json": (
        "The real-photo benchmark",
        "make bench-real",
        "Our defaults (`ours`: `autobackswap run`, 150 labels imported from true masks) beside the same masks composed "
        "without the confidence filter (`unfiltered`) and pasted plainly (`plain-paste`), the true-mask ceiling and two "
        "zero-label peers (GrabCut from the true box, u2netp), on real photographs: held-out objects (labelled, "
        "unlabelled and test images show disjoint objects; judged by a linear probe on ImageNet features) and repeated "
        "objects (judged by a small classifier over seeds). Mask IoU and ring on the unlabelled training images, the "
        "fill against the true background, worst-group accuracy of a classifier trained on each condition's "
        "composites, and how well the mask confidence tells the failed masks (AUROC; what the default threshold leaves "
        "out). *Ring*: the share of the pasted cut-out that is truly background."),
    "label_loop.json": (
        "Labels where the model is wrong",
        "make bench-labels",
        "The two-round labelling loop (75 labels at random, train, up to 150 by `label --pick uncertain`, train "
        "again) against 150 labels at random, same pool, on the held-out-object photos; figures over the images "
        "neither arm labelled. The pool is every training image, so labelled and scored images can show the same objects "
        "(the real-photo benchmark keeps them apart): IoU is higher here than there."),
    "compose_defaults.json": (
        "Compose and fill defaults, one ingredient at a time",
        "make bench-compose-defaults",
        "On the tuning sets (`--data-seed 1`), the same masks composed with one option swapped, judged by worst-group "
        "accuracy with paired seeds (the difference to the defaults cancels the judge's seed noise)."),
}


def section(name: str, result: dict) -> str:
    title, command, what = BENCHMARKS[name]
    run = result.get("run", {})
    lines = [f"## {title}", "", what, "", f"`{command}` — measured {run.get('date', '?')} on {run.get('machine', '?')} "
             f"(Python {run.get('python', '?')}, torch {run.get('torch', '?')}).", ""]
    if name == "real_photos.json":
        import real_photos

        lines.append(f"{result['labels']} labels, seeds {', '.join(map(str, result['seeds']))}, data seed {result['data_seed']}.\n")
        lines += [real_photos.table(variant, r) + "\n" for variant, r in result["variants"].items()]
    elif name == "label_loop.json":
        import label_loop

        lines.append(f"Data seed {result['data_seed']}.\n")
        lines.append(label_loop.table(result["variants"], result["labels"]))
    else:
        import compose_defaults

        lines.append(f"Seeds {', '.join(map(str, result['seeds']))}.\n")
        lines += [compose_defaults.table(variant, r) + "\n" for variant, r in result["variants"].items()]
    return "\n".join(lines).rstrip() + "\n"


README_START, README_END = "<!-- results: benchmarks/report.py -->", "<!-- end of results -->"
HEADLINE_CONDITIONS = {"ours": "ours (defaults)", "unfiltered": "ours, nothing left out", "u2netp": "u2netp, no labels",
                       "ceiling": "true masks (ceiling)"}


def headline(result: dict) -> str:
    """The README's one results table: the held-out-object variants of real_photos.json, ours beside the peer and the
    ceiling (mask IoU, ring, worst-group and mean accuracy of the judge), and how well the confidence finds failures."""
    lines = ["| variant | composites from | mask IoU | ring | worst group | mean acc. |", "|---|---|---:|---:|---:|---:|"]
    notes = []
    for variant, r in result["variants"].items():
        if variant not in ("instances", "instances-distractors"):
            continue
        for name, label in HEADLINE_CONDITIONS.items():
            c = r["conditions"].get(name)
            if c is None:
                continue
            num = lambda v: "–" if v is None else f"{(sum(v) / len(v) if isinstance(v, list) else v):.2f}"  # noqa: E731
            lines.append(f"| {variant} | {label} | {num(c.get('iou'))} | {num(c.get('halo'))} | {num(c.get('worst_group'))} | "
                         f"{num(c.get('mean_acc'))} |")
        confidence = r["conditions"].get("ours", {}).get("confidence")
        if confidence:
            notes.append((variant, confidence))
    if not notes:
        return "\n".join(lines)
    variants = ", ".join(variant for variant, _ in notes)
    auroc = " / ".join(f"{c['auroc']:.2f}" for _, c in notes)
    share = " / ".join(f"{c['left_out_share']:.1%}" for _, c in notes)
    caught = " / ".join(f"{c['failed_caught']} of {c['failed']}" for _, c in notes)
    return "\n".join(lines + ["", f"The mask confidence ({variants}) tells the failed masks (IoU < 0.5) from the rest with AUROC {auroc}; "
                               f"compose's default threshold leaves out {share} of the images, holding {caught} failed masks."])


def update_readme() -> bool:
    """Put ``headline`` of benchmarks/results/real_photos.json between the README's markers; whether it changed."""
    readme, path = HERE.parent / "README.md", RESULTS / "real_photos.json"
    text = readme.read_text()
    if not path.is_file() or README_START not in text:
        return False
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    new = text[:start] + "\n" + headline(json.loads(path.read_text())) + "\n" + text[end:]
    readme.write_text(new)
    return new != text


def render() -> str:
    """benchmarks/README.md's text, from the results there are."""
    parts = ["# Benchmark results", "",
             "Generated by `benchmarks/report.py` from `benchmarks/results/*.json` (each written by its benchmark with "
             "`--json`); do not edit by hand. What each default is and why: `docs/decisions.md`. Speed benchmarks "
             "(`make bench`: `segment.py`, `inpaint.py`, `compose.py`, `label_effort.py`, `background_reliance.py`, "
             "`scale.py`) print their tables when run.", ""]
    for name in BENCHMARKS:
        path = RESULTS / name
        if path.is_file():
            parts.append(section(name, json.loads(path.read_text())))
        else:
            parts.append(f"## {BENCHMARKS[name][0]}\n\nNo result yet: `{BENCHMARKS[name][1]}`.\n")
    return "\n".join(parts)


def main() -> None:
    (HERE / "README.md").write_text(render())
    print(f"wrote {HERE / 'README.md'}" + (" and the results table of README.md" if update_readme() else ""))


if __name__ == "__main__":
    main()
