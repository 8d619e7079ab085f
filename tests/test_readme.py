"""The README's Python example runs as written (one epoch, in-process loading, to keep the suite fast)."""

from __future__ import annotations

import re

from conftest import REPO


def test_backswapdataset_training_example_runs(monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    example = next(b for b in blocks if "BackSwapDataset" in b)
    assert "range(10)" in example and "num_workers=2" in example
    monkeypatch.chdir(REPO)
    namespace: dict = {}
    exec(example.replace("range(10)", "range(1)").replace("num_workers=2", "num_workers=0"), namespace)
    assert len(namespace["dataset"]) == 180 and namespace["dataset"].classes == ["cross", "disc", "triangle"]
    assert 0 < namespace["loss"].item() < 10  # a finite cross-entropy: the batches reached the model
