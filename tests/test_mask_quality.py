"""Knowing where the masks fail: segment's confidences (MASKS/mask_quality.csv), compose leaving the failures out,
label --pick uncertain, and the preview of the least confident masks."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autobackswap_cli.images import read_mask, read_mask_text, scan_image_folder
from autobackswap_cli.formats.mask_quality import CONFIDENCE_NOTE, DEFAULT_MIN_CONFIDENCE, QUALITY_FILE, read_mask_quality
from autobackswap_cli.segmenter.confidence import mask_confidence
from autobackswap_cli.segmenter.predict import preview_items
from autobackswap_cli.segmenter.refine import upsample_probabilities
from conftest import SAMPLE_DATA, cli, run_record


def _table(masks: Path) -> dict[str, str]:
    with open(masks / QUALITY_FILE, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["image", "confidence"]
    return {image: value for image, value in rows[1:]}


def _confidence(probs: np.ndarray, saliency: np.ndarray | None, looked_again: bool = False, refined: np.ndarray | None = None) -> float:
    coarse = upsample_probabilities(probs, 96, 96)
    refined = coarse if refined is None else upsample_probabilities(refined, 96, 96)
    return mask_confidence(probs, coarse, refined, looked_again, saliency)


def test_confidence_ranks_broken_masks_below_good_ones():
    """The failures the real-photo benchmark shows, drawn: the object lost (a few unsure pixels, found on a second
    look), specks instead of an object, another thing taken unsurely instead of the salient object, an empty mask.
    Each scores below compose's default threshold, a clean cut-out of the salient object above it."""
    yy, xx = np.mgrid[:40, :40]
    disc = lambda y, x, r: (yy - y) ** 2 + (xx - x) ** 2 < r * r  # noqa: E731
    salient = disc(20, 20, 10).astype(np.float32)  # what stands out in the image: the object
    good = np.where(disc(20, 20, 10), 0.97, 0.02).astype(np.float32)
    rng = np.random.default_rng(0)
    broken = {
        "lost": (np.where(disc(5, 5, 2), 0.6, np.where(disc(5, 5, 6), 0.3, 0.02)).astype(np.float32), {"looked_again": True}),
        "specks": (np.where(rng.random((40, 40)) < 0.05, 0.7, np.where(rng.random((40, 40)) < 0.3, 0.3, 0.02)).astype(np.float32), {}),
        "another thing": (np.where(disc(30, 30, 5), 0.7, np.where(disc(30, 30, 10), 0.3, 0.02)).astype(np.float32), {}),
        "empty": (np.full((40, 40), 0.02, np.float32), {}),
    }
    sure = _confidence(good, salient)
    assert sure > 0.95
    for name, (probs, kind) in broken.items():
        assert _confidence(probs, salient, **kind) < DEFAULT_MIN_CONFIDENCE <= sure, name
    assert _confidence(good, salient, looked_again=True) < sure  # needing a second look is itself a warning sign
    assert _confidence(good, None) > DEFAULT_MIN_CONFIDENCE  # a model without a saliency map (patch backbones)
    assert _confidence(broken["empty"][0], salient) == 0.0


def test_segment_writes_one_confidence_per_mask(small_sample, tiny_checkpoint, tmp_path):
    out = tmp_path / "masks"
    result = cli("segment", small_sample / "train", "-m", tiny_checkpoint, "-o", out, "--workers", "1", "--no-progress")
    table = _table(out)
    images = sorted(str(p.relative_to(small_sample / "train")) for p in (small_sample / "train").rglob("*.jpg"))
    assert sorted(table) == images  # one row per image, by its path under DATA
    for image, value in table.items():
        assert 0.0 <= float(value) <= 1.0
        assert read_mask_text(out / Path(image).with_suffix(".png"))[CONFIDENCE_NOTE] == value  # the mask carries its own
    record = run_record(out)
    assert record["results"]["mask_quality"]["images"] == len(images)
    assert record["options"]["min_confidence"]["value"] == 0.6
    assert "mask confidence:" in result.output


def test_resumed_and_sharded_segment_leave_one_complete_table(small_sample, tiny_checkpoint, tmp_path):
    data = small_sample / "train"
    cli("segment", data, "-m", tiny_checkpoint, "-o", tmp_path / "once", "--workers", "1", "--no-progress")
    expected = (tmp_path / "once" / QUALITY_FILE).read_bytes()
    # resumed: a first run over one shard's images (as a run stopped part way leaves them), then the whole run
    cli("segment", data, "-m", tiny_checkpoint, "-o", tmp_path / "resumed", "--shard", "1/3", "--workers", "1", "--no-progress")
    (tmp_path / "resumed" / QUALITY_FILE).unlink()  # killed before its table was written: the masks still know
    result = cli("segment", data, "-m", tiny_checkpoint, "-o", tmp_path / "resumed", "--workers", "1", "--no-progress")
    assert run_record(tmp_path / "resumed")["counts"]["skipped"] > 0 and "skipped" in result.output
    assert (tmp_path / "resumed" / QUALITY_FILE).read_bytes() == expected
    # sharded: three shards into one folder merge into one table
    for k in (1, 2, 0):
        cli("segment", data, "-m", tiny_checkpoint, "-o", tmp_path / "sharded", "--shard", f"{k}/3", "--workers", "1", "--no-progress")
    assert (tmp_path / "sharded" / QUALITY_FILE).read_bytes() == expected


def _masks_with_quality(sample: Path, root: Path, low: list[str]) -> Path:
    """A copy of the sample's true masks with a mask_quality.csv that calls ``low`` probably wrong."""
    masks = root / "masks"
    shutil.copytree(sample / "masks/train", masks)
    images = sorted(str(p.relative_to(sample / "train")) for p in (sample / "train").rglob("*.jpg"))
    with open(masks / QUALITY_FILE, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "confidence"])
        writer.writerows((image, "0.1000" if image in low else "0.9500") for image in images)
    return masks


def test_compose_leaves_out_masks_probably_wrong_and_their_backgrounds(small_sample, tmp_path):
    low = ["cross/cross_0001.jpg", "disc/disc_0002.jpg", "triangle/triangle_0003.jpg"]
    assert all((small_sample / "train" / image).exists() for image in low)
    masks = _masks_with_quality(small_sample, tmp_path, low)
    out = tmp_path / "out"
    result = cli("compose", small_sample / "train", masks, small_sample / "backgrounds/train", "-o", out, "--per-image", "3",
                 "--workers", "1", "--no-progress")
    record = run_record(out)
    assert record["counts"]["low_confidence"] == 3 and record["counts"]["failed"] == 0
    assert record["low_confidence"] == sorted(low)
    assert record["options"]["min_confidence"] == 0.6 and record["options"]["min_confidence_from"] == "default"
    assert record["results"]["backgrounds_left_out_low_confidence"] == 3
    assert "low confidence: 3 images" in " ".join(result.output.split())
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert rows and not {r["foreground"] for r in rows} & set(low)  # no cut-out of a wrong mask...
    assert not {Path(r["background"]).with_suffix("").as_posix() for r in rows} & {Path(i).with_suffix("").as_posix() for i in low}  # ...nor its background
    # --min-confidence 0 keeps every image; a rerun into the same folder makes the ones left out before
    cli("compose", small_sample / "train", masks, small_sample / "backgrounds/train", "-o", out, "--per-image", "3",
        "--min-confidence", "0", "--workers", "1", "--no-progress")
    assert run_record(out)["counts"]["low_confidence"] == 0


def test_compose_without_a_quality_table_leaves_nothing_out_and_says_so(small_sample, tmp_path):
    out = tmp_path / "out"
    result = cli("compose", small_sample / "train", small_sample / "masks/train", small_sample / "backgrounds/train", "-o", out,
                 "--workers", "1", "--no-progress")
    assert run_record(out)["counts"]["low_confidence"] == 0
    assert "no mask_quality.csv" in " ".join(result.output.split())


@pytest.mark.parametrize("content, where", [
    ("image,confidence\ncross/cross_0000.jpg,0.5\ncross/cross_0001.jpg,high\n", "line 3"),
    ("image,confidence\ncross/cross_0000.jpg,1.7\n", "line 2"),
    ("path,score\ncross/cross_0000.jpg,0.5\n", "line 1"),
    ("image,confidence\ncross/cross_0000.jpg\n", "line 2"),
])
def test_a_malformed_quality_table_is_one_clear_error(small_sample, tmp_path, content, where):
    masks = tmp_path / "masks"
    shutil.copytree(small_sample / "masks/train", masks)
    (masks / QUALITY_FILE).write_text(content)
    result = cli("compose", small_sample / "train", masks, small_sample / "backgrounds/train", "-o", tmp_path / "out", "--no-progress", expect=2)
    text = " ".join(result.output.split())
    assert QUALITY_FILE in text and where in text and "Traceback" not in text
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.jpg"))


def test_segment_preview_shows_the_least_confident_masks_first(small_sample, tiny_checkpoint, tmp_path):
    out = tmp_path / "masks"
    cli("segment", small_sample / "train", "-m", tiny_checkpoint, "-o", out, "--preview", tmp_path / "p.png", "--workers", "1", "--no-progress")
    assert np.asarray(Image.open(tmp_path / "p.png")).shape[0] > 100
    items = scan_image_folder(small_sample / "train").items
    scores = read_mask_quality(out)
    shown = preview_items(items, scores, "least-confident", 5)
    assert [scores[str(it.rel)] for it in shown] == sorted(scores.values())[:5]
    spread = preview_items(items, scores, "spread", 5)
    assert len({it.cls for it in spread}) == 3  # the other order: every class


def _faint_set(root: Path) -> tuple[Path, Path, set[str]]:
    """12 sample images (4 a class) and 6 more in which the object is nearly faded into its background (2 a class),
    with their true masks; returns DATA, the masks and the faint images' keys."""
    data, truth, faint = root / "data", root / "truth", set()
    for cls in ("cross", "disc", "triangle"):
        for k, image in enumerate(sorted((SAMPLE_DATA / "train" / cls).glob("*.jpg"))[:6]):
            mask_path = SAMPLE_DATA / "masks/train" / cls / f"{image.stem}.png"
            pixels = np.asarray(Image.open(image).convert("RGB"), np.float32)
            if k >= 4:  # faded: 15 % object, 85 % the clean background behind it
                alpha = np.asarray(Image.open(mask_path), np.float32)[..., None] / 255 * 0.85
                clean = np.asarray(Image.open(SAMPLE_DATA / "backgrounds/train" / cls / image.name).convert("RGB"), np.float32)
                pixels = pixels * (1 - alpha) + clean * alpha
                faint.add(f"{cls}/{image.stem}")
            (data / cls).mkdir(parents=True, exist_ok=True)
            (truth / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.round().astype(np.uint8)).save(data / cls / f"{image.stem}.png")
            shutil.copy(mask_path, truth / cls / mask_path.name)
    return data, truth, faint


def test_pick_uncertain_picks_the_images_a_weak_segmenter_gets_wrong(tmp_path):
    """The weak segmenter: U^2-Net-p as shipped, no label learnt (an untrained u2netp checkpoint). It finds the
    objects that stand out and loses those faded into their background; --pick uncertain must pick those."""
    from autobackswap_cli.segmenter.model import build_segmenter, save_checkpoint

    data, truth, faint = _faint_set(tmp_path)
    seg = tmp_path / "u2netp.safetensors"
    save_checkpoint(seg, build_segmenter("u2netp", 16), image_size=160, options={}, metrics={})
    labels = tmp_path / "labels"
    cli("label", data, "--from-masks", truth, "--count", "3", "-o", labels, "--no-progress")
    first = {str(p.relative_to(labels).with_suffix("")) for p in labels.rglob("*.png")}
    masks = tmp_path / "masks"
    cli("segment", data, "-m", seg, "-o", masks, "--workers", "1", "--no-progress")
    iou = {}
    for image in _table(masks):
        t, m = read_mask(truth / Path(image).with_suffix(".png")) >= 0.5, read_mask(masks / Path(image).with_suffix(".png")) >= 0.5
        iou[str(Path(image).with_suffix(""))] = (t & m).sum() / max(1, (t | m).sum())
    assert np.mean([iou[k] for k in faint]) < np.mean([iou[k] for k in set(iou) - faint]) - 0.3  # the segmenter is weak there
    result = cli("label", data, "--from-masks", truth, "--count", "9", "--segmenter", seg, "--pick", "uncertain", "-o", labels,
                 "--workers", "1", "--no-progress")
    assert "--pick uncertain" in result.output
    labelled = {str(p.relative_to(labels).with_suffix("")) for p in labels.rglob("*.png")}
    assert first <= labelled and len(labelled) == 9  # topped up to 9: the first three stay
    picked = labelled - first
    assert len(picked & faint) >= len(faint - first) - 1  # (nearly) every faint image not labelled yet
    assert np.mean([iou[k] for k in picked]) < np.mean([iou[k] for k in set(iou) - labelled]) - 0.2


def test_pick_uncertain_needs_a_segmenter_and_a_count(small_sample, tmp_path):
    result = cli("label", small_sample / "train", "--from-masks", small_sample / "masks/train", "--pick", "uncertain", "-o", tmp_path / "l",
                 "--no-progress", expect=2)
    assert "--segmenter" in result.output


def test_the_labelling_page_serves_the_picked_images_first(small_sample, tmp_path):
    """With --pick uncertain the page's session holds the images labelled so far, then the picks (least confident
    first), and resumes at the first pick."""
    from autobackswap_cli.engine import prepare_items
    from autobackswap_cli.labeler.store import LabelStore

    data, labels = small_sample / "train", tmp_path / "labels"
    cli("label", data, "--from-masks", small_sample / "masks/train", "--count", "3", "-o", labels, "--no-progress")
    items, _ = prepare_items(data, labels)
    done = sorted(str(p.relative_to(labels).with_suffix(".jpg")) for p in labels.rglob("*.png"))
    picks = [str(it.rel) for it in items if str(it.rel) not in done][:4][::-1]
    store = LabelStore(data, labels, items, first=picks)
    page = store.summary()
    order = [image["rel"] for image in page["images"]]
    assert order[: len(done)] == done and order[len(done):] == picks
    assert order[page["resume"]] == picks[0]
    assert LabelStore(data, labels, items).summary()["images"][len(done)]["rel"] == picks[0]  # the saved session keeps them first
