"""The labelling page in a real browser: headless Chromium (Debian's) driven by Playwright.

`make test` installs chromium when it is missing; Playwright never downloads a browser here.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from autobackswap_cli.labels import read_grid
from test_labeler import P, make_store, running

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"no Chromium at {CHROMIUM}: run `make browser` (installs Debian's chromium)")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    yield context.new_page()
    context.close()


def open_labeller(page, server) -> str:
    """Load the page and wait until it shows its first image; returns that image's rel path."""
    page.goto(server.url)
    page.wait_for_function("document.body.dataset.rel !== undefined", timeout=15000)
    return page.evaluate("document.body.dataset.rel")


def cell_centre(page, row: int, col: int) -> tuple[float, float]:
    box = page.locator("#overlay").bounding_box()
    return box["x"] + (col + 0.5) * box["width"] / P, box["y"] + (row + 0.5) * box["height"] / P


def drag(page, cells: list[tuple[int, int]], button: str = "left") -> None:
    page.mouse.move(*cell_centre(page, *cells[0]))
    page.mouse.down(button=button)
    for cell in cells[1:]:
        page.mouse.move(*cell_centre(page, *cell), steps=4)
    page.mouse.up(button=button)


def wait_for_grid(path: Path, expected: np.ndarray, timeout: float = 10.0) -> np.ndarray:
    """The grid on disk once it equals ``expected`` (or whatever is there when time runs out)."""
    deadline = time.monotonic() + timeout
    while True:
        grid = read_grid(path, P) if path.exists() else None
        if (grid is not None and np.array_equal(grid, expected)) or time.monotonic() > deadline:
            return grid
        time.sleep(0.05)


def label_file(labels: Path, rel: str) -> Path:
    return labels / f"{Path(rel).with_suffix('')}.png"


def test_painting_and_next_write_exactly_the_painted_patches(page, small_sample, tmp_path):
    labels = tmp_path / "labels"
    store = make_store(small_sample / "train", labels, count=3, grid=P)
    with running(store) as server:
        first = open_labeller(page, server)
        assert page.locator("#progress").inner_text() == "0/3 labelled"
        page.mouse.click(*cell_centre(page, 1, 1))  # one click: one patch
        drag(page, [(3, 2), (3, 5)])  # a drag along a row
        drag(page, [(6, 0), (6, 3)], button="right")  # right drag: background
        page.keyboard.press("Enter")
        page.wait_for_function(f"document.body.dataset.rel && document.body.dataset.rel !== {first!r}")
        second = page.evaluate("document.body.dataset.rel")

        expected = np.full((P, P), 128, np.uint8)
        expected[1, 1] = 255
        expected[3, 2:6] = 255
        expected[6, 0:4] = 0
        assert np.array_equal(wait_for_grid(label_file(labels, first), expected), expected)

        # Second image: a 3x3 brush, fill the rest as background, undo a stroke, next.
        page.keyboard.press("2")
        page.mouse.click(*cell_centre(page, 4, 4))  # 3x3 block around (4, 4)
        page.mouse.click(*cell_centre(page, 0, 7))  # clipped at the corner: (0..1, 6..7)
        page.keyboard.press("z")  # undo the corner
        page.keyboard.press("f")
        page.keyboard.press("n")
        expected = np.zeros((P, P), np.uint8)
        expected[3:6, 3:6] = 255
        assert np.array_equal(wait_for_grid(label_file(labels, second), expected), expected)
        page.wait_for_function("document.getElementById('progress').textContent === '1/3 labelled'")

        # Reloading resumes at the first unfinished image: the first one is only partly labelled.
        assert open_labeller(page, server) == first
    assert store.summary()["progress"]["done"] == 1


def test_a_prefilled_image_is_saved_by_next(page, small_sample, tmp_path, tiny_checkpoint):
    labels = tmp_path / "labels"
    store = make_store(small_sample / "train", labels, count=3, segmenter=tiny_checkpoint)
    with running(store) as server:
        first = open_labeller(page, server)
        predicted = np.asarray(store.get_grid(first)["grid"], np.uint8)
        page.mouse.click(*cell_centre(page, 2, 2))
        page.mouse.click(*cell_centre(page, 5, 5), button="right")
        page.keyboard.press("ArrowRight")
        page.wait_for_function(f"document.body.dataset.rel && document.body.dataset.rel !== {first!r}")
        second = page.evaluate("document.body.dataset.rel")
        page.keyboard.press("ArrowRight")  # accepted as predicted
        page.wait_for_function(f"document.body.dataset.rel && document.body.dataset.rel !== {second!r}")
        expected = predicted.copy()
        expected[2, 2], expected[5, 5] = 255, 0
        assert np.array_equal(wait_for_grid(label_file(labels, first), expected), expected)
        accepted = np.asarray(store.get_grid(second)["grid"], np.uint8)
        assert label_file(labels, second).exists() and set(np.unique(accepted)) <= {0, 255}


def test_traversal_urls_are_refused_in_the_browser(page, small_sample, tmp_path):
    labels = tmp_path / "labels"
    store = make_store(small_sample / "train", labels, count=3, grid=P)
    with running(store) as server:
        open_labeller(page, server)
        for path in ("api/image/..%2F..%2F..%2F..%2Fetc%2Fpasswd", "api/grid/..%2Flabeler.json", "static/..%2Fstore.py"):
            response = page.goto(server.url + path)
            assert 400 <= response.status < 500, (path, response.status)
            assert "root:" not in response.text()
        status = page.evaluate(
            """async () => (await fetch('/api/grid/..%2F..%2Fevil.png', {method: 'PUT',
                headers: {'Content-Type': 'application/json'}, body: JSON.stringify({grid: []})})).status"""
        )
        assert status == 400
    assert not (tmp_path / "evil.png").exists() and not list(labels.rglob("*.png"))
