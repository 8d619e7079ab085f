"""Outputs byte-identical across refactors: a small pipeline (sample data, labels, segmenter, segment, inpaint,
compose, and compose with classes from a --metadata table into tar shards) makes the files pinned in
tests/golden_outputs.json, made by the commit before the refactor of issue 37 (e5e54fd)."""

from __future__ import annotations

import json
from pathlib import Path

from golden_outputs import digests, run_pipeline

PINNED = Path(__file__).with_name("golden_outputs.json")


def test_the_pipeline_makes_the_pinned_files_byte_for_byte(tmp_path):
    made, pinned = digests(run_pipeline(tmp_path)), json.loads(PINNED.read_text())
    assert sorted(made) == sorted(pinned), f"files made: {sorted(set(made) - set(pinned))}, missing: {sorted(set(pinned) - set(made))}"
    changed = sorted(name for name in pinned if made[name] != pinned[name])
    assert not changed, (f"{len(changed)} of {len(pinned)} output files differ from the pinned ones: {changed[:10]}. If the change is "
                         "meant, regenerate the pins (see tests/golden_outputs.py) and say why in the commit.")
    assert any(name.startswith("from_table/") and name.endswith(".tar") for name in pinned) and len(pinned) > 60
