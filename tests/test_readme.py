"""The README's Python example runs as written (one epoch, in-process loading, to keep the suite fast)."""

from __future__ import annotations

import json
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


def _readme_commands() -> list[list[str]]:
    """Every `autobackswap ...` command line of the README's bash blocks, continuation lines joined, as tokens."""
    import shlex

    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("autobackswap "):
                commands.append(shlex.split(line.replace("$", "")))
    return commands


def test_every_readme_command_and_option_exists():
    """Each `autobackswap STEP --option` the README shows is a command whose --help names that option."""
    from conftest import cli

    commands = _readme_commands()
    assert len(commands) > 30
    helps: dict[str, str] = {}
    for tokens in commands:
        step = tokens[1] if not tokens[1].startswith("--") else tokens[3]  # `autobackswap --log-json FILE STEP ...`
        if step not in helps:
            result = cli(step, "--help")
            helps[step] = result.output
        for token in tokens[2:]:
            option = token.split("=")[0]
            if option.startswith("--") and option != "--log-json":
                assert option in helps[step], f"`autobackswap {step}` has no {option} (README: {' '.join(tokens)})"


def test_the_readme_is_a_manual():
    """Under 500 lines, and no dated measurement: figures live in benchmarks/README.md and docs/decisions.md."""
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) < 500
    assert not re.search(r"20\d\d-\d\d-\d\d", text), "a dated figure in the README"


def test_model_cards_name_the_installed_weights():
    """The sha256 the README's model cards give are those of the weight files installed."""
    import hashlib

    from autobackswap_cli.segmenter import efficientnet_lite

    text = (REPO / "README.md").read_text()
    for path in (REPO / "autobackswap_cli/segmenter/weights/u2netp.safetensors", efficientnet_lite.weights_file()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"`{digest}`" in text, f"the README's model card does not give {path.name}'s sha256 {digest}"


def test_benchmarks_readme_is_generated_from_the_results():
    """benchmarks/README.md is what benchmarks/report.py makes of benchmarks/results/*.json."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import report
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    assert (REPO / "benchmarks/README.md").read_text() == report.render()
    results = REPO / "benchmarks/results/real_photos.json"
    if results.is_file():  # the README's results table is report.py's too
        readme = (REPO / "README.md").read_text()
        block = readme[readme.index(report.README_START) + len(report.README_START) : readme.index(report.README_END)]
        assert block.strip() == report.headline(json.loads(results.read_text())).strip()
