"""Trust, round three: names from tables are not paths, the journal is data, nothing inside OUT is overwritten, every
table read back is decoded as such, values are checked where they are given, signals leave nothing behind."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
from pathlib import Path

import pytest

from autobackswap_cli.images import TEMP_PREFIX
from conftest import cli, cli_background, cli_subprocess, run_record, wait_until


def _hashes(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for f in folders for p in sorted(Path(f).rglob("*")) if p.is_file()}


def _compose_args(sample: Path, out: Path, *extra) -> list:
    return ["compose", sample / "train", sample / "masks/train", sample / "backgrounds/train", "-o", out, "--workers", "1", "--no-progress", *extra]


def _table(sample: Path, path: Path, value_of, header: str = "img_filename,y") -> Path:
    rows = [header] + [f"{p.relative_to(sample / 'train')},{value_of(p)}" for p in sorted((sample / "train").rglob("*.jpg"))]
    path.write_text("\n".join(rows) + "\n")
    return path


def _files_outside(root: Path, out: Path) -> list[Path]:
    """Files under ``root`` that are not under ``out`` and were not there before (the caller's snapshot)."""
    return [p for p in root.rglob("*") if p.is_file() and out not in p.parents]


# ----------------------------------------------------------------- names are not paths


@pytest.mark.parametrize("value", ["../../escape", "/tmp/abs-escape", ".", "..", "a/b", "manifest.csv", "autobackswap.json", "bad\x01name"])
def test_a_class_from_a_table_that_is_not_a_folder_name_is_refused(small_sample, tmp_path, value):
    table = _table(small_sample, tmp_path / "meta.csv", lambda p: value)
    out = tmp_path / "work" / "out"
    before = {p for p in tmp_path.rglob("*")}
    result = cli(*_compose_args(small_sample, out, "--metadata", table), expect=2)
    text = " ".join(result.output.split())
    assert "meta.csv line 2" in text and "cannot be used" in text
    assert not out.exists() and {p for p in tmp_path.rglob("*")} == before  # nothing written anywhere


def test_class_names_that_are_paths_are_refused(small_sample, tmp_path):
    classes = {"cross": 0, "disc": 1, "triangle": 2}
    table = _table(small_sample, tmp_path / "meta.csv", lambda p: classes[p.parent.name])
    result = cli(*_compose_args(small_sample, tmp_path / "out", "--metadata", table, "--class-names", "../x,b,c"), expect=2)
    assert "--class-names" in result.output and "path separator" in " ".join(result.output.split())
    assert not (tmp_path / "out").exists() and not (tmp_path / "x").exists()


def test_a_class_folder_named_like_an_output_file_is_refused(small_sample, tmp_path):
    data = tmp_path / "data"
    (data / "manifest.csv").mkdir(parents=True)
    (data / "manifest.csv" / "a.jpg").write_bytes(next((small_sample / "train").rglob("*.jpg")).read_bytes())
    (data / "ok").mkdir()
    (data / "ok" / "b.jpg").write_bytes(next((small_sample / "train").rglob("*.jpg")).read_bytes())
    result = cli("compose", data, small_sample / "masks/train", small_sample / "backgrounds/train", "-o", tmp_path / "out", "--no-progress", expect=2)
    assert "manifest.csv" in result.output and "cannot be used" in " ".join(result.output.split())


# ----------------------------------------------------------------- nothing inside OUT is overwritten


@pytest.mark.parametrize("option", ["--metadata", "--files-from"])
def test_an_input_table_inside_the_output_folder_is_refused(small_sample, tmp_path, option):
    out = tmp_path / "out"
    cli(*_compose_args(small_sample, out))
    manifest = out / "manifest.csv"
    before = manifest.read_bytes()
    result = cli(*_compose_args(small_sample, out, option, manifest), expect=2)
    text = " ".join(result.output.split())
    assert str(manifest) in text and "inside the output folder" in text
    assert manifest.read_bytes() == before


@pytest.mark.parametrize("flag", ["--preview", "--log-json"])
def test_a_single_file_output_onto_a_finished_output_inside_out_is_refused(small_sample, tmp_path, flag):
    out = tmp_path / "out"
    cli(*_compose_args(small_sample, out))
    target = sorted(out.rglob("*.jpg"))[0]
    before = _hashes(out)
    args = _compose_args(small_sample, out, "--preview", target) if flag == "--preview" else ["--log-json", target, *_compose_args(small_sample, out)]
    result = cli_subprocess(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(target) in " ".join((result.stdout + result.stderr).split())
    assert _hashes(out) == before
    assert cli(*_compose_args(small_sample, out, "--preview", out / "preview.png")).exit_code == 0  # beside the class folders: fine
    result = cli(*_compose_args(small_sample, out, "--preview", out / "manifest.csv"), expect=2)
    assert "manifest.csv" in result.output


def test_segment_preview_onto_one_of_its_masks_is_refused(small_sample, tiny_checkpoint, tmp_path):
    out = tmp_path / "masks"
    cli("segment", small_sample / "train", "-m", tiny_checkpoint, "-o", out, "--workers", "1", "--no-progress")
    mask = sorted(out.rglob("*.png"))[0]
    before = mask.read_bytes()
    cli("segment", small_sample / "train", "-m", tiny_checkpoint, "-o", out, "--preview", mask, "--no-progress", expect=2)
    assert mask.read_bytes() == before


# ----------------------------------------------------------------- the journal is data, not a command


def _journal(out: Path) -> Path:
    (journal,) = out.glob(".autobackswap-journal-*.csv")
    return journal


@pytest.mark.parametrize("forged", ["/etc/passwd", "../outside/x.jpg"])
def test_a_journal_line_naming_outputs_the_item_would_not_have_is_ignored(small_sample, tmp_path, forged):
    out = tmp_path / "out"
    cli(*_compose_args(small_sample, out))
    journal = _journal(out)
    lines = journal.read_text().splitlines()
    key, count, *fields = lines[0].split(",")
    victim = out / fields[0]
    fields[0] = forged
    journal.write_text("\n".join([",".join([key, count, *fields]), *lines[1:]]) + "\n")
    victim.unlink()  # the item's real composite is gone: only the forged line says it is finished
    result = cli(*_compose_args(small_sample, out))
    assert "1 line(s) of the journal" in " ".join(result.output.split())
    record = run_record(out)
    assert record["counts"]["done"] == 1 and record["results"]["journal_lines_ignored"] == 1
    assert victim.exists()  # made again
    manifest = (out / "manifest.csv").read_text()
    assert forged not in manifest and str(victim.relative_to(out)) in manifest


def test_a_journal_that_is_a_symlink_is_not_followed(small_sample, tmp_path):
    out = tmp_path / "out"
    cli(*_compose_args(small_sample, out))
    journal = _journal(out)
    outside = tmp_path / "outside.csv"
    outside.write_text("precious\n")
    journal.unlink()
    journal.symlink_to(outside)
    sorted(out.rglob("*.jpg"))[0].unlink()
    cli(*_compose_args(small_sample, out))
    assert outside.read_text() == "precious\n"
    assert journal.is_file() and not journal.is_symlink()


def test_a_journal_that_is_a_folder_is_one_clear_error(small_sample, tmp_path):
    out = tmp_path / "out"
    cli(*_compose_args(small_sample, out))
    journal = _journal(out)
    journal.unlink()
    journal.mkdir()
    result = cli(*_compose_args(small_sample, out), expect=2)
    assert "journal" in result.output and "not a file" in " ".join(result.output.split())


# ----------------------------------------------------------------- tables are decoded as such


def test_a_metadata_table_that_is_not_utf8_is_one_error_naming_file_and_line(small_sample, tmp_path):
    table = _table(small_sample, tmp_path / "meta.csv", lambda p: p.parent.name)
    lines = table.read_bytes().split(b"\n")
    lines[3] = lines[3] + b"\xe9"  # one Latin-1 byte on line 4
    table.write_bytes(b"\n".join(lines))
    result = cli(*_compose_args(small_sample, tmp_path / "out", "--metadata", table), expect=2)
    assert "meta.csv line 4" in result.output and "UTF-8" in result.output
    utf16 = tmp_path / "meta16.csv"
    utf16.write_bytes(_table(small_sample, tmp_path / "plain.csv", lambda p: p.parent.name).read_text().encode("utf-16"))
    result = cli(*_compose_args(small_sample, tmp_path / "out", "--metadata", utf16), expect=2)
    assert "UTF-16" in result.output and "Traceback" not in result.output


def test_a_table_with_a_long_field_is_read(small_sample, tmp_path):
    table = _table(small_sample, tmp_path / "meta.csv", lambda p: p.parent.name, header="img_filename,y,notes")
    text = table.read_text().splitlines()
    text[1] += "," + "x" * 200_000  # a 200 KB field
    table.write_text("\n".join(text) + "\n")
    cli(*_compose_args(small_sample, tmp_path / "out", "--metadata", table))
    assert run_record(tmp_path / "out")["counts"]["failed"] == 0


def test_label_from_csv_that_is_not_utf8_is_one_error(small_sample, tmp_path):
    table = tmp_path / "masks.csv"
    table.write_bytes(b"info,mask\ncross/caf\xe9.jpg," + b"0" * 64 + b"\n")
    result = cli("label", small_sample / "train", "--from-csv", table, "-o", tmp_path / "labels", "--no-progress", expect=2)
    assert "masks.csv line 2" in result.output and "UTF-8" in result.output


# ----------------------------------------------------------------- values are checked where they are given


def test_a_fill_colour_out_of_range_is_refused_before_any_work(small_sample, tmp_path):
    result = cli(*_compose_args(small_sample, tmp_path / "out", "--only-fg", "--fill", "300,0,0"), expect=2)
    assert "--fill" in result.output and "0..255" in result.output
    assert not list((tmp_path / "out").rglob("*.jpg")) if (tmp_path / "out").exists() else True


def test_a_misspelt_config_section_is_an_error_naming_it(small_sample, tmp_path):
    config = tmp_path / "work.json"
    config.write_text(json.dumps({"step": "run", "options": {"Compose": {"per_image": 2}}}))
    result = cli("run", small_sample / "train", "--labels", small_sample / "labels", "-o", tmp_path / "w", "--config", config, expect=2)
    assert "'Compose'" in result.output and "unknown section" in result.output


def _with_weights(source: Path, target: Path, change) -> Path:
    """A copy of a safetensors segmenter with its first floating tensor changed by ``change(header_entry, bytes)``."""
    data = source.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    body = bytearray(data[8 + size :])
    name = next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32")
    header, body = change(header, name, body)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    target.write_bytes(struct.pack("<Q", len(encoded)) + encoded + bytes(body))
    return target


def test_a_segmenter_with_nan_or_mistyped_weights_is_refused(small_sample, tiny_checkpoint, tmp_path):
    def nan(header, name, body):
        start = header[name]["data_offsets"][0]
        body[start : start + 4] = struct.pack("<f", float("nan"))
        return header, body

    def int8(header, name, body):
        header[name]["dtype"] = "I8"
        start, end = header[name]["data_offsets"]
        count = (end - start) // 4
        header[name]["data_offsets"] = [start, start + count]  # the tensor's bytes as int8, the rest left in place
        shift = (end - start) - count
        for other in header.values():
            if isinstance(other, dict) and "data_offsets" in other and other["data_offsets"][0] >= end:
                other["data_offsets"] = [other["data_offsets"][0] - shift, other["data_offsets"][1] - shift]
        del body[start + count : end]
        return header, body

    for name, change, said in (("nan", nan, "NaN"), ("int8", int8, "I8")):
        bad = _with_weights(tiny_checkpoint, tmp_path / f"{name}.safetensors", change)
        result = cli("segment", small_sample / "train", "-m", bad, "-o", tmp_path / f"masks-{name}", "--no-progress", expect=2)
        assert said in result.output, result.output
        assert not list((tmp_path / f"masks-{name}").rglob("*.png")) if (tmp_path / f"masks-{name}").exists() else True


def test_truth_that_matches_no_image_is_a_warning_with_the_count(small_sample, tiny_checkpoint, tmp_path):
    empty = tmp_path / "truth"
    empty.mkdir()
    result = cli("segment", small_sample / "train", "-m", tiny_checkpoint, "-o", tmp_path / "masks", "--truth", empty, "--workers", "1", "--no-progress")
    text = " ".join(result.output.split())
    assert "no mask there for 24 of the 24 images" in text and "no IoU was computed" in text
    assert any("--truth" in w for w in run_record(tmp_path / "masks")["warnings"])


# ----------------------------------------------------------------- signals leave nothing behind


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_run_leaves_no_temporary_folder(tmp_path, sig):
    data, temp = tmp_path / "data", tmp_path / "tmp"
    temp.mkdir()
    cli("sample-data", data, "--size", "64", "--train-per-class", "80", "--test-per-group", "1", "--labelled", "3")
    out = tmp_path / "out"
    proc = cli_background("inpaint", data / "train", data / "masks/train", "-o", out, "--workers", "2", "--method", "texture",
                          env={"TMPDIR": str(temp)})
    wait_until(proc, lambda: len(list(out.rglob("*.jpg"))) >= 10)
    os.killpg(proc.pid, sig)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    assert not list(temp.iterdir()), list(temp.rglob("*"))
    assert not list(out.rglob(TEMP_PREFIX + "*"))
