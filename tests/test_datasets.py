"""The paper's data sets as distributed: miniature Waterbirds and Spawrious replicas (synthetic images placed as the
data sets place them, Waterbirds' metadata.csv in its exact columns, the reference masks.csv rows by id and by
path), through the commands a user runs: --metadata / --class-level on label, segment, inpaint, compose,
train-classifier and evaluate."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from autobackswap_cli.compose import BackSwapDataset
from autobackswap_cli.engine import Dataset, DatasetLayout
from autobackswap_cli.labels import grid_from_string, read_grid
from autobackswap_cli.pipeline import PipelineOptions
from conftest import cli, run_record

SIZE, GRID = 48, 8
PLACES = {"0": (70, 140, 60), "1": (50, 90, 200)}  # land green, water blue
BIRDS = {"0": (200, 60, 40), "1": (240, 240, 240)}  # landbird red, waterbird white
SPECIES = {"001.Black_footed_Albatross": "1", "002.Laysan_Albatross": "1", "010.Red_winged_Blackbird": "0", "020.Yellow_breasted_Chat": "0"}
WATERBIRDS_ARGS = ("--class-names", "landbird,waterbird", "--group-names", "land,water")


def _scene(path: Path, bg: tuple, fg: tuple, box: tuple[int, int, int, int], masks: Path | None = None, rel: str = "") -> str:
    """An image: a flat place with a rectangle 'animal' on it; its true mask under ``masks``; its P x P grid as
    the reference writes it."""
    image = Image.new("RGB", (SIZE, SIZE), bg)
    ImageDraw.Draw(image).rectangle(box, fill=fg)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=95) if path.suffix == ".jpg" else image.save(path)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[box[1] : box[3] + 1, box[0] : box[2] + 1] = 255
    if masks is not None:
        out = (masks / rel).with_suffix(".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(out)
    cell = SIZE // GRID
    return "".join("1" if mask[i * cell : (i + 1) * cell, j * cell : (j + 1) * cell].mean() >= 0.25 * 255 else "0" for i in range(GRID) for j in range(GRID))


@pytest.fixture(scope="module")
def waterbirds(tmp_path_factory) -> Path:
    """waterbird_complete95_forest2water2/: images/<species>/<file>.jpg, metadata.csv (Waterbirds' columns), the
    reference masks.csv (info = img_id), true masks (truth/, mirroring images/). 32 images: 16 train, 16 test,
    every (class, place) group in both splits."""
    root = tmp_path_factory.mktemp("wb") / "waterbird_complete95_forest2water2"
    rows, masks_rows, img_id = [], [], 0
    for species, y in SPECIES.items():
        for i in range(8):
            img_id += 1
            place, split = str(i % 2), "0" if i < 4 else "2"
            rel = f"{species}/{species.split('.')[1]}_{i:04d}_{img_id}.jpg"
            x0 = 8 + 3 * (i % 3)
            grid = _scene(root / "images" / rel, PLACES[place], BIRDS[y], (x0, 14, x0 + 22, 38), root / "truth", rel)
            rows.append([img_id, rel, y, split, place, f"/{'b/bamboo_forest' if place == '0' else 'o/ocean'}/{img_id:08d}.jpg"])
            if i % 3 == 0:
                masks_rows.append([img_id, grid])
    with open(root / "metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows([["img_id", "img_filename", "y", "split", "place", "place_filename"], *rows])
    with open(root / "masks.csv", "w", newline="") as f:
        csv.writer(f).writerows([["info", "mask"], *masks_rows])
    return root


BREEDS, LOCATIONS = ("bulldog", "corgi", "dachshund", "labrador"), {"0": ("snow", "desert"), "1": ("jungle", "beach")}
LOCATION_COLOURS = {"snow": (235, 235, 245), "desert": (210, 180, 110), "jungle": (30, 110, 40), "beach": (120, 190, 230)}
BREED_COLOURS = {"bulldog": (120, 80, 40), "corgi": (220, 140, 50), "dachshund": (60, 30, 20), "labrador": (230, 200, 120)}


@pytest.fixture(scope="module")
def spawrious(tmp_path_factory) -> Path:
    """spawrious224/m2m/<env>/<location>/<breed>/<location>_<breed>_<i>.png (32 images, 4 breeds) and the reference
    masks.csv naming images by path ('/0/snow/labrador/snow_labrador_0.png'), plus true masks (../truth/, mirroring m2m/)."""
    root = tmp_path_factory.mktemp("sp") / "spawrious224"
    masks_rows = []
    for env, locations in LOCATIONS.items():
        for location in locations:
            for b, breed in enumerate(BREEDS):
                for i in range(2):
                    rel = f"{env}/{location}/{breed}/{location}_{breed}_{i}.png"
                    grid = _scene(root / "m2m" / rel, LOCATION_COLOURS[location], BREED_COLOURS[breed], (6 + 4 * b, 10 + 6 * i, 30 + 4 * b, 40),
                                  root.parent / "truth", rel)
                    if i == 0:
                        masks_rows.append([f"/{rel}", grid])
    with open(root / "masks.csv", "w", newline="") as f:
        csv.writer(f).writerows([["info", "mask"], *masks_rows])
    return root


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _grids_match(labels: Path, masks_csv: Path, path_of) -> int:
    """Every row of the reference file has its exact grid in LABELS; the number of rows."""
    rows = _rows(masks_csv)
    for row in rows:
        assert np.array_equal(read_grid(labels / Path(path_of(row["info"])).with_suffix(".png"), GRID), grid_from_string(row["mask"])), row["info"]
    return len(rows)


# --------------------------------------------------------------------------- Waterbirds


def test_waterbirds_masks_csv_imports_every_row_by_its_img_id_and_exports_ids_back(waterbirds, tmp_path):
    images, meta = waterbirds / "images", waterbirds / "metadata.csv"
    result = cli("label", images, "-o", tmp_path / "none", "--from-csv", waterbirds / "masks.csv", "--no-progress", expect=2)
    assert "labels none of the images" in " ".join(result.output.split())  # without the table, ids name nothing
    cli("label", images, "-o", tmp_path / "labels", "--from-csv", waterbirds / "masks.csv", "--metadata", meta, "--no-progress")
    by_id = {r["img_id"]: r["img_filename"] for r in _rows(meta)}
    assert _grids_match(tmp_path / "labels", waterbirds / "masks.csv", by_id.__getitem__) == 12
    assert run_record(tmp_path / "labels")["counts"]["done"] == 12 and len(list((tmp_path / "labels").rglob("*.png"))) == 12
    assert run_record(tmp_path / "labels")["options"]["layout"] == {"class_level": 1, "metadata": str(meta)}
    cli("label", images, "-o", tmp_path / "labels", "--metadata", meta, "--export-csv", tmp_path / "export.csv", "--no-progress")
    assert sorted(map(tuple, (r.values() for r in _rows(tmp_path / "export.csv")))) == sorted(map(tuple, (r.values() for r in _rows(waterbirds / "masks.csv"))))


def test_waterbirds_compose_files_each_composite_under_its_class_and_a_classifier_sees_two(waterbirds, tmp_path):
    images, meta = waterbirds / "images", waterbirds / "metadata.csv"
    train = ("--metadata", meta, "--split", "train", *WATERBIRDS_ARGS)
    cli("inpaint", images, waterbirds / "truth", "-o", tmp_path / "bg", "--method", "pyramid", "--workers", "0", "--no-progress", *train)
    backgrounds = sorted(p.relative_to(tmp_path / "bg").as_posix() for p in (tmp_path / "bg").rglob("*.jpg"))
    assert backgrounds == sorted(r["img_filename"] for r in _rows(meta) if r["split"] == "0")  # mirrors images/, train rows only
    out = tmp_path / "out"
    cli("compose", images, waterbirds / "truth", tmp_path / "bg", "-o", out, "--per-image", "2", "--bg-from", "other-class", "--workers", "0",
        "--no-progress", *train)
    truth = {r["img_filename"]: r for r in _rows(meta)}
    manifest = _rows(out / "manifest.csv")
    assert len(manifest) == 32 and sorted(p.name for p in out.iterdir() if p.is_dir()) == ["landbird", "waterbird"]
    for row in manifest:
        source = truth[row["foreground"]]
        cls = ("landbird", "waterbird")[int(source["y"])]
        assert row["output"].startswith(f"{cls}/{row['foreground'].split('/')[0]}/") and (out / row["output"]).is_file()
        assert row["foreground_class"] == cls and row["foreground_group"] == ("land", "water")[int(source["place"])]
        assert row["background_class"] != cls and row["background_group"] in ("land", "water")
    assert run_record(out)["options"]["layout"]["split"] == "train"
    cli("train-classifier", out, "-o", tmp_path / "m.safetensors", "--epochs", 1, "--image-size", 32, "--no-progress")
    record = json.loads((tmp_path / "m.safetensors.json").read_text())
    assert record["classes"] == ["landbird", "waterbird"] and record["counts"]["images"] == 32
    cli("train-classifier", images, "-o", tmp_path / "direct.safetensors", "--epochs", 1, "--image-size", 32, "--no-progress", *train)
    assert json.loads((tmp_path / "direct.safetensors.json").read_text())["classes"] == ["landbird", "waterbird"]


def test_waterbirds_evaluate_reports_the_four_groups_and_the_worst(waterbirds, tmp_path):
    images, meta = waterbirds / "images", waterbirds / "metadata.csv"
    test = ("--metadata", meta, "--split", "test", *WATERBIRDS_ARGS)
    cli("inpaint", images, waterbirds / "truth", "-o", tmp_path / "bg", "--method", "pyramid", "--workers", "0", "--no-progress", *test)
    cli("train-classifier", images, "-o", tmp_path / "m.safetensors", "--epochs", 1, "--image-size", 32, "--no-progress", *test[:3], "train", *test[4:])
    result = cli("evaluate", images, "--masks", waterbirds / "truth", "--backgrounds", tmp_path / "bg", "--model", tmp_path / "m.safetensors",
                 "--json", tmp_path / "r.json", "--no-progress", *test)
    report = json.loads((tmp_path / "r.json").read_text())
    (model,) = report["models"]
    assert report["images"]["total"] == 16 and report["groups_from"] == "metadata metadata.csv"
    groups = {(g["class"], g["background"]): g for g in model["groups"]}
    assert sorted(groups) == [("landbird", "land"), ("landbird", "water"), ("waterbird", "land"), ("waterbird", "water")]
    assert all(g["images"] == 4 for g in groups.values())
    assert model["worst_group"]["accuracy"] == min(g["accuracy"] for g in groups.values())
    assert "worst-group accuracy" in result.output and "waterbird on land" in result.output


# --------------------------------------------------------------------------- Spawrious


def test_spawrious_path_rows_import_and_land_in_the_breed_classes(spawrious, tmp_path):
    m2m = spawrious / "m2m"
    cli("label", m2m, "-o", tmp_path / "labels", "--from-csv", spawrious / "masks.csv", "--class-level", 3, "--count", 8, "--no-progress")
    assert len(list((tmp_path / "labels").rglob("*.png"))) == 8  # 2 per breed: stratified over breeds, not environments
    assert sorted({p.parent.name for p in (tmp_path / "labels").rglob("*.png")}) == list(BREEDS)
    cli("label", spawrious, "-o", tmp_path / "all", "--from-csv", spawrious / "masks.csv", "--class-level", 4, "--no-progress")  # DATA one level up
    assert _grids_match(tmp_path / "all" / "m2m", spawrious / "masks.csv", lambda info: info.lstrip("/")) == 16
    cli("label", spawrious, "-o", tmp_path / "all", "--class-level", 4, "--export-csv", tmp_path / "export.csv", "--no-progress")
    exported = {r["info"]: r["mask"] for r in _rows(tmp_path / "export.csv")}
    assert exported == {f"/m2m{r['info']}": r["mask"] for r in _rows(spawrious / "masks.csv")}  # the leading '/' kept


def test_spawrious_segment_mirrors_compose_files_by_breed_and_a_classifier_sees_four(spawrious, tiny_checkpoint, tmp_path):
    m2m = spawrious / "m2m"
    cli("segment", m2m, "-m", tiny_checkpoint, "-o", tmp_path / "masks", "--refine", "none", "--class-level", 3, "--workers", "0", "--no-progress")
    assert sorted(p.relative_to(tmp_path / "masks").with_suffix("").as_posix() for p in (tmp_path / "masks").rglob("*.png")) == \
        sorted(p.relative_to(m2m).with_suffix("").as_posix() for p in m2m.rglob("*.png"))
    out = tmp_path / "out"
    cli("compose", m2m, spawrious.parent / "truth", spawrious.parent / "truth", "-o", out, "--only-fg", "--class-level", 3, "--workers", "0", "--no-progress")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == list(BREEDS)
    assert (out / "labrador/0/snow/snow_labrador_0__only-fg.png").is_file()
    cli("train-classifier", out, "-o", tmp_path / "m.safetensors", "--epochs", 1, "--image-size", 32, "--no-progress")
    assert json.loads((tmp_path / "m.safetensors.json").read_text())["classes"] == list(BREEDS)
    dataset = BackSwapDataset(Dataset(m2m, DatasetLayout(class_level=3)), spawrious.parent / "truth", spawrious.parent / "truth")
    assert dataset.classes == list(BREEDS) and len(dataset) == 32
    assert dataset.targets[[str(it.rel) for it in dataset.items].index("1/beach/corgi/beach_corgi_1.png")] == 1


def test_a_class_level_deeper_than_an_image_leaves_it_out_with_a_warning(spawrious, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(spawrious / "m2m", data)
    shutil.copy(data / "0/snow/corgi/snow_corgi_0.png", data / "0/loose.png")
    result = cli("label", data, "-o", tmp_path / "labels", "--from-csv", spawrious / "masks.csv", "--class-level", 3, "--no-progress")
    assert "1 image(s) of DATA lie less than 3 folder(s) deep" in " ".join(result.output.split()) and "0/loose.png" in result.output


# --------------------------------------------------------------------------- bad tables


def _table(tmp_path: Path, waterbirds: Path, edit) -> Path:
    lines = (waterbirds / "metadata.csv").read_text().splitlines()
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(edit(lines)) + ("\n" if lines else ""))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda lines: [lines[0].replace("img_filename", "file_name"), *lines[1:]], "bad.csv line 1: no path column"),
    (lambda lines: [lines[0], lines[1].replace("001.", "/elsewhere/001."), *lines[2:]], "bad.csv line 2: /elsewhere/001."),
    (lambda lines: [lines[0], lines[1].replace("001.", "../001."), *lines[2:]], "bad.csv line 2: ../001."),
    (lambda lines: [*lines, lines[3].replace(lines[3].split(",")[0] + ",", "999,", 1)], "bad.csv line 34: 001.Black_footed_Albatross"),
    (lambda lines: [], "bad.csv: empty file"),
    (lambda lines: lines[:1], "bad.csv: no rows"),
    (lambda lines: [lines[0], lines[1].replace(",1,0,", ",,0,", 1), *lines[2:]], "bad.csv line 2: no class"),
])
def test_a_bad_table_is_one_error_naming_file_and_line_and_writes_nothing(waterbirds, tmp_path, edit, message):
    table = _table(tmp_path, waterbirds, edit)
    out = tmp_path / "out"
    result = cli("compose", waterbirds / "images", waterbirds / "truth", waterbirds / "truth", "-o", out, "--metadata", table, "--no-progress", expect=2)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in " ".join(result.output.split()), result.output
    assert not out.exists()


def test_rows_without_files_files_without_rows_and_unknown_ids_are_warnings_naming_them(waterbirds, tmp_path):
    table = _table(tmp_path, waterbirds, lambda lines: [*lines[:-1], "900,001.Black_footed_Albatross/ghost.jpg,1,0,1,/o/ocean/x.jpg"])
    (tmp_path / "m.csv").write_text((waterbirds / "masks.csv").read_text() + "12345," + "0" * 64 + "\n")
    result = cli("label", waterbirds / "images", "-o", tmp_path / "labels", "--from-csv", tmp_path / "m.csv", "--metadata", table, "--no-progress")
    text = " ".join(result.output.split())
    assert "1 image(s) of DATA have no row in bad.csv; left out: 020.Yellow_breasted_Chat/" in text
    assert "1 row(s) of bad.csv name no image file in DATA: line 33 (001.Black_footed_Albatross/ghost)" in text
    assert "1 row(s) of m.csv name no image in DATA: line 14 (12345, not an id of the metadata)" in text
    cli("label", waterbirds / "images", "-o", tmp_path / "x", "--split", "test", expect=2)  # --split needs a table
    result = cli("label", waterbirds / "images", "-o", tmp_path / "x", "--class-level", 2, "--metadata", table, expect=2)
    assert "either --class-level" in result.output and not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- records, replay, resume


def test_a_runs_layout_is_recorded_and_replayed_by_config(tmp_path):
    layout = DatasetLayout(metadata="meta.csv", split="train", class_names="landbird,waterbird")
    record = {"step": "run", "options": {**PipelineOptions(layout=layout).recorded()}}
    (tmp_path / "autobackswap.json").write_text(json.dumps(record))
    replayed = PipelineOptions.from_record(tmp_path / "autobackswap.json")
    assert replayed.layout == layout
    assert replayed.with_flags({"split": "test"}).layout == DatasetLayout(metadata="meta.csv", split="test", class_names="landbird,waterbird")


def test_compose_resumes_from_its_journal_and_redoes_a_deleted_composite(waterbirds, tmp_path):
    images, meta = waterbirds / "images", waterbirds / "metadata.csv"
    out = tmp_path / "out"
    args = ("compose", images, waterbirds / "truth", waterbirds / "truth", "-o", out, "--per-image", "2", "--workers", "0", "--no-progress", "--metadata", meta)
    cli(*args)
    first = (out / "manifest.csv").read_text()
    assert len(list(out.glob(".autobackswap-journal-*.csv"))) == 1
    cli(*args)
    assert run_record(out)["counts"]["skipped"] == 32 and (out / "manifest.csv").read_text() == first
    victim = out / _rows(out / "manifest.csv")[5]["output"]
    victim.unlink()
    cli(*args)
    assert run_record(out)["counts"]["done"] == 1 and victim.is_file() and (out / "manifest.csv").read_text() == first
