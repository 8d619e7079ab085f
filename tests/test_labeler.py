"""The labelling page's server, in-process: selection and resume, saving, merging, refusals, model pre-fill."""

from __future__ import annotations

import http.client
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from autobackswap_cli.engine import StepError, prepare_items
from autobackswap_cli.labeler.server import LabelerServer
from autobackswap_cli.labeler.store import SESSION_FILE, LabelStore
from autobackswap_cli.labels import read_grid, read_labels_info

P = 8  # the small_sample grid


def make_store(data: Path, labels: Path, **kwargs) -> LabelStore:
    items, _ = prepare_items(data, labels)
    return LabelStore(data, labels, items, **kwargs)


@contextmanager
def running(store: LabelStore):
    """The labelling server on a free loopback port, in a background thread."""
    server = LabelerServer(store, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def call(server: LabelerServer, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, object]:
    """One raw HTTP request (the path is sent exactly as given); returns (status, decoded JSON or bytes)."""
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        headers = {"Content-Type": "application/json", **(headers or {})}
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    is_json = (resp.getheader("Content-Type") or "").startswith("application/json")
    return resp.status, json.loads(data) if is_json else data


def files_under(*roots: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for root in roots for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def labels(tmp_path) -> Path:
    return tmp_path / "labels"


# --------------------------------------------------------------------------- selection and resume


def test_selection_is_stratified_interleaved_and_kept_on_resume(small_sample, labels):
    store = make_store(small_sample / "train", labels, count=6, seed=1)
    images = store.session.images
    assert len(images) == 6 and len(set(images)) == 6
    assert [im.split("/")[0] for im in images] == ["cross", "disc", "triangle"] * 2  # any prefix is balanced
    assert json.loads((labels / SESSION_FILE).read_text())["images"] == images
    assert read_labels_info(labels).grid == 16 and read_labels_info(labels).method == "interactive"

    again = make_store(small_sample / "train", labels, count=6, seed=99)
    assert again.session.images == images
    assert any("seed 1" in note for note in again.notes)

    more = make_store(small_sample / "train", labels, count=9, seed=1)
    assert more.session.images[:6] == images and len(more.session.images) == 9
    assert sorted(i.split("/")[0] for i in more.session.images[6:]) == ["cross", "disc", "triangle"]
    assert make_store(small_sample / "train", labels).session.images == more.session.images  # no --count: as saved

    (labels / SESSION_FILE).write_text("{broken")
    with pytest.raises(StepError, match="damaged"):
        make_store(small_sample / "train", labels)


def test_resume_starts_at_the_first_unfinished_image(small_sample, labels):
    store = make_store(small_sample / "train", labels, count=6, grid=P)
    first, second = store.session.images[:2]
    store.put_grid(first, {"grid": np.full((P, P), 255).tolist()})
    partial = np.full((P, P), 128)
    partial[0, 0] = 0
    store.put_grid(second, {"grid": partial.tolist()})

    resumed = make_store(small_sample / "train", labels, count=6).summary()
    assert resumed["resume"] == 1
    assert [im["state"] for im in resumed["images"][:3]] == ["done", "partial", "todo"]
    assert resumed["progress"]["done"] == 1 and resumed["progress"]["total"] == 6
    assert read_labels_info(labels).count == 2


def test_skip_leaves_the_image_out_and_adds_one_of_its_class(small_sample, labels):
    store = make_store(small_sample / "train", labels, count=3, grid=P)
    skipped = store.session.images[0]
    summary = store.skip(skipped)
    assert [im["state"] for im in summary["images"]][0] == "skipped"
    assert len(summary["images"]) == 4 and summary["images"][3]["cls"] == skipped.split("/")[0]
    assert summary["progress"]["total"] == 3 and summary["resume"] == 1
    assert make_store(small_sample / "train", labels, count=3).session.skipped == [skipped]


# --------------------------------------------------------------------------- the HTTP API


def test_page_session_grid_and_image_round_trip(small_sample, labels):
    store = make_store(small_sample / "train", labels, count=3, grid=P)
    rel = store.session.images[0]
    with running(store) as server:
        status, page = call(server, "GET", "/")
        assert status == 200 and b"app.js" in page
        assert call(server, "GET", "/static/app.js")[0] == 200
        status, session = call(server, "GET", "/api/session")
        assert status == 200 and session["grid"] == P and session["progress"] == {"done": 0, "total": 3, "classes": {"cross": [0, 1], "disc": [0, 1],
                                                                                                                     "triangle": [0, 1]}}
        status, image = call(server, "GET", f"/api/image/{rel}")
        assert status == 200 and image == (small_sample / "train" / rel).read_bytes()
        status, got = call(server, "GET", f"/api/grid/{rel}")
        assert got["source"] == "empty" and np.all(np.asarray(got["grid"]) == 128)

        grid = np.zeros((P, P), int)
        grid[2:5, 3:6] = 255
        status, saved = call(server, "PUT", f"/api/grid/{rel}", {"grid": grid.tolist()})
        assert status == 200 and saved["state"] == "done" and saved["progress"]["done"] == 1
    on_disk = read_grid(labels / f"{Path(rel).with_suffix('')}.png", P)
    assert np.array_equal(on_disk, grid)
    assert not list(labels.rglob(".abs-tmp-*"))


def test_unlabelling_everything_removes_the_file(small_sample, labels):
    store = make_store(small_sample / "train", labels, count=3, grid=P)
    rel = store.session.images[0]
    one = np.full((P, P), 128)
    one[1, 1] = 255
    store.put_grid(rel, {"grid": one.tolist()})
    path = labels / f"{Path(rel).with_suffix('')}.png"
    assert path.exists()
    store.put_grid(rel, {"grid": np.full((P, P), 128).tolist(), "base": one.tolist()})
    assert not path.exists() and store.summary()["images"][0]["state"] == "todo"


TRAVERSALS = [
    ("GET", "/api/image/../../../../etc/passwd"),
    ("GET", "/api/image/%2e%2e/%2e%2e/%2e%2e/etc/passwd"),
    ("GET", "/api/image/..%2f..%2f..%2fetc%2fpasswd"),
    ("GET", "/api/image/%2Fetc%2Fpasswd"),
    ("GET", "/api/image//etc/passwd"),
    ("GET", "/api/image/cross/..%5c..%5csecret.jpg"),
    ("GET", "/api/image/cross/%00.jpg"),
    ("GET", "/api/image/%ff%fe.jpg"),
    ("GET", "/api/grid/../labels.json"),
    ("GET", "/static/../store.py"),
    ("GET", "/static/%2e%2e%2fstore.py"),
    ("GET", "/../../etc/passwd"),
    ("PUT", "/api/grid/../../outside.png"),
    ("PUT", "/api/grid/%2e%2e%2f%2e%2e%2foutside.png"),
    ("PUT", "/api/grid/cross/../../../outside.png"),
    ("POST", "/api/skip/../../outside.png"),
]


@pytest.mark.parametrize("method,path", TRAVERSALS)
def test_traversal_is_refused_and_changes_nothing(small_sample, tmp_path, method, path):
    data = small_sample / "train"
    labels = tmp_path / "work" / "labels"
    store = make_store(data, labels, count=3, grid=P)
    before = files_under(tmp_path, data)
    with running(store) as server:
        status, body = call(server, method, path, {"grid": np.zeros((P, P), int).tolist()} if method != "GET" else None)
    assert 400 <= status < 500, (status, body)
    assert b"root:" not in (body if isinstance(body, bytes) else json.dumps(body).encode())
    assert files_under(tmp_path, data) == before


def test_symlinks_leading_out_are_refused(tmp_path, small_sample):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.jpg"
    secret.write_bytes((small_sample / "train/cross/cross_0000.jpg").read_bytes())
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    (data / "a" / "real.jpg").write_bytes(secret.read_bytes())
    os.symlink(secret, data / "a" / "link.jpg")
    labels = tmp_path / "labels"
    labels.mkdir()
    os.symlink(outside, labels / "a")  # LABELS/a leads out of LABELS
    store = make_store(data, labels, grid=P)
    before = files_under(outside)
    with running(store) as server:
        assert call(server, "GET", "/api/image/a/link.jpg")[0] == 403
        assert call(server, "GET", "/api/image/a/real.jpg")[0] == 200
        assert call(server, "PUT", "/api/grid/a/real.jpg", {"grid": np.zeros((P, P), int).tolist()})[0] == 403
    assert files_under(outside) == before


MALFORMED = {
    "bad json": b"{not json",
    "not utf-8": b"\xff\xfe{}",
    "not an object": b"[1, 2, 3]",
    "no grid": b'{"cells": []}',
    "too few rows": json.dumps({"grid": [[0] * P] * (P - 1)}).encode(),
    "too long rows": json.dumps({"grid": [[0] * (P + 1)] * P}).encode(),
    "flat list": json.dumps({"grid": [0] * (P * P)}).encode(),
    "value 1": json.dumps({"grid": [[1] * P] * P}).encode(),
    "value 127": json.dumps({"grid": [[127] * P] * P}).encode(),
    "value 256": json.dumps({"grid": [[256] * P] * P}).encode(),
    "strings": json.dumps({"grid": [["255"] * P] * P}).encode(),
    "floats": json.dumps({"grid": [[255.0] * P] * P}).encode(),
    "booleans": json.dumps({"grid": [[True] * P] * P}).encode(),
    "bad base": json.dumps({"grid": [[0] * P] * P, "base": [[0] * 3] * 3}).encode(),
    "lists nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
    "objects nested 100,000 deep": b'{"grid": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001,
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_saves_are_refused_and_change_nothing(small_sample, labels, name):
    store = make_store(small_sample / "train", labels, count=3, grid=P)
    rel = store.session.images[0]
    before = files_under(labels)
    with running(store) as server:
        status, body = call(server, "PUT", f"/api/grid/{rel}", MALFORMED[name], {"Content-Type": "application/json"})
        assert status == 400, body
        assert call(server, "GET", "/api/session")[1]["progress"]["done"] == 0
    assert files_under(labels) == before


def test_wrong_requests_get_4xx(small_sample, labels):
    store = make_store(small_sample / "train", labels, count=3, grid=P)
    rel = store.session.images[0]
    good = json.dumps({"grid": np.zeros((P, P), int).tolist()})
    before = files_under(labels)
    with running(store) as server:
        host, port = server.server_address[:2]
        assert call(server, "PUT", f"/api/grid/{rel}", good, {"Content-Type": "text/plain"})[0] == 415
        assert call(server, "PUT", f"/api/grid/{rel}", good, {"Content-Type": "application/jsonp"})[0] == 415
        own = f"http://{host}:{port}"
        for header, value in (("Origin", "http://evil.example"), ("Origin", "null"), ("Referer", "http://evil.example/page")):
            status, body = call(server, "PUT", f"/api/grid/{rel}", good, {"Content-Type": "application/json", header: value})
            assert status == 403 and "only accepted from this page" in body["error"]
        assert call(server, "POST", f"/api/skip/{rel}", "{}", {"Content-Type": "application/json", "Origin": "http://evil.example"})[0] == 403
        assert files_under(labels) == before  # nothing written by the refused requests
        assert call(server, "PUT", f"/api/grid/{rel}", good, {"Content-Type": "application/json; charset=utf-8", "Origin": own, "Referer": own + "/"})[0] == 200
        before = files_under(labels)
        assert call(server, "PUT", f"/api/grid/{rel}", good, {"Content-Type": "application/json", "Host": "evil.example:80"})[0] == 403
        assert call(server, "GET", "/api/session", headers={"Host": "rebound.example"})[0] == 403
        assert call(server, "DELETE", f"/api/grid/{rel}")[0] == 405
        assert call(server, "GET", "/api/grid/cross/not_there.jpg")[0] == 404
        assert call(server, "GET", "/nope")[0] == 404
        for headers, expected in (({"Content-Length": str(50 << 20)}, 413), ({"Content-Length": "-5"}, 400), ({}, 411)):
            conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.putrequest("PUT", f"/api/grid/{rel}")
            conn.putheader("Content-Type", "application/json")
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders()
            response = conn.getresponse()
            assert response.status == expected and response.getheader("Connection") == "close"  # the unread body is dropped
            conn.close()
    assert files_under(labels) == before


# --------------------------------------------------------------------------- two tabs at once


def test_concurrent_saves_lose_nothing(small_sample, labels):
    """Two 'tabs' paint one image cell by cell (each merging onto its last confirmed grid), two more save other images."""
    store = make_store(small_sample / "train", labels, count=6, grid=P)
    shared, *others = store.session.images[:3]
    errors: list[str] = []

    def tab(port: int, rel: str, cells: list[tuple[int, int]], value: int, merge: bool) -> None:
        mine = np.full((P, P), 128, int)
        base = mine.copy()
        for r, c in cells:
            mine[r, c] = value
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            body = {"grid": mine.tolist(), **({"base": base.tolist()} if merge else {})}
            conn.request("PUT", f"/api/grid/{rel}", body=json.dumps(body), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            reply = json.loads(resp.read())
            conn.close()
            if resp.status != 200:
                errors.append(f"{rel}: {resp.status} {reply}")
                return
            base = np.asarray(reply["grid"])
            mine = base.copy()  # a tab shows what the server merged, like the page does

    top = [(r, c) for r in range(P // 2) for c in range(P)]
    bottom = [(r, c) for r in range(P // 2, P) for c in range(P)]
    with running(store) as server:
        port = server.server_address[1]
        threads = [
            threading.Thread(target=tab, args=(port, shared, top, 255, True)),
            threading.Thread(target=tab, args=(port, shared, bottom, 0, True)),
            threading.Thread(target=tab, args=(port, others[0], top + bottom, 255, False)),
            threading.Thread(target=tab, args=(port, others[1], bottom, 0, False)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors
    grid_of = lambda rel: read_grid(labels / f"{Path(rel).with_suffix('')}.png", P)  # noqa: E731
    expected = np.zeros((P, P), np.uint8)
    expected[: P // 2] = 255
    assert np.array_equal(grid_of(shared), expected)
    assert np.all(grid_of(others[0]) == 255)
    assert np.all(grid_of(others[1])[P // 2 :] == 0) and np.all(grid_of(others[1])[: P // 2] == 128)
    assert store.summary()["progress"]["done"] == 2
    assert read_labels_info(labels).count == 3


# --------------------------------------------------------------------------- model pre-fill


def test_segmenter_prefills_and_next_accepts_it(small_sample, labels, tiny_checkpoint):
    store = make_store(small_sample / "train", labels, count=3, segmenter=tiny_checkpoint)
    assert store.grid == P  # adopted from the checkpoint
    rel = store.session.images[0]
    with running(store) as server:
        assert call(server, "GET", "/api/session")[1]["assisted"] is True
        status, got = call(server, "GET", f"/api/grid/{rel}")
        prediction = np.asarray(got["grid"])
        assert status == 200 and got["source"] == "model" and got["state"] == "todo"
        assert set(np.unique(prediction)) <= {0, 255}
        assert not list(labels.rglob("*.png"))  # nothing is written before the person says so
        status, saved = call(server, "PUT", f"/api/grid/{rel}", {"grid": prediction.tolist(), "base": prediction.tolist()})
        assert status == 200 and saved["state"] == "done"
    assert np.array_equal(read_grid(labels / f"{Path(rel).with_suffix('')}.png", P), prediction)


def test_segmenter_grid_must_match(small_sample, labels, tiny_checkpoint):
    with pytest.raises(StepError, match="8x8"):
        make_store(small_sample / "train", labels, grid=16, segmenter=tiny_checkpoint)
