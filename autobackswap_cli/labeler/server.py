"""The local web server behind the labelling page (standard library only).

Routes (``<rel>`` is an image's path below DATA, e.g. ``cow/0001.jpg``, URL-encoded):

    GET  /                  the page            GET  /static/<file>     its script and style
    GET  /api/session       images, progress, where to resume
    GET  /api/image/<rel>   the image's bytes (TIFF is converted to PNG for the browser)
    GET  /api/grid/<rel>    {"grid": P x P, "source": saved|model|empty, "state": ...}
    PUT  /api/grid/<rel>    {"grid": P x P, "base": P x P (optional)} -> the saved grid, progress
    POST /api/skip/<rel>    leave the image out -> the session

Only the selected images of DATA, their grids in LABELS and the files of static/ are
reachable. Anything else - traversal, unknown names, symlinks leading out, bad JSON,
grids of the wrong size or with other values, bodies over 1 MiB - gets a 4xx and
changes nothing. Requests that change something must be ``application/json``, which
a foreign web page cannot send without the browser asking first (no CORS is offered);
on a loopback address the Host header must be a loopback name (no DNS rebinding).
"""

from __future__ import annotations

import getpass
import json
import mimetypes
import os
import socket
import sys
import threading
import time
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..engine import StepError, as_interrupted, console, write_run_record
from ..images import encode_image, read_image
from .store import LabelStore, RequestError

STATIC_DIR = Path(__file__).with_name("static")
MAX_BODY = 1 << 20
DEFAULT_PORT = 8765
BROWSER_FORMATS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


class LabelerServer(ThreadingHTTPServer):
    """A threading HTTP server that hands every request to one ``LabelStore``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, store: LabelStore, host: str = "127.0.0.1", port: int = 0):
        self.store = store
        self.static_files = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()}
        self.loopback_only = host in LOOPBACK_NAMES or host.startswith("127.")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.address_family = family
        super().__init__((host, port), LabelerHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else (f"[{host}]" if ":" in host else host)
        return f"http://{shown}:{port}/"


class LabelerHandler(BaseHTTPRequestHandler):
    server: LabelerServer
    protocol_version = "HTTP/1.1"
    server_version = "autobackswap-label"
    timeout = 60

    # ------------------------------------------------------------------ dispatch

    def do_GET(self) -> None:
        self._dispatch(self._get)

    def do_PUT(self) -> None:
        self._dispatch(self._put)

    def do_POST(self) -> None:
        self._dispatch(self._post)

    def _refuse_method(self) -> None:
        self._dispatch(self._not_allowed)

    do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    def _not_allowed(self, path: str) -> None:
        raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not supported")

    def _dispatch(self, handler) -> None:
        try:
            self._check_host()
            if self.command in ("PUT", "POST"):
                self._check_origin()
            handler(urlsplit(self.path).path)
        except RequestError as exc:
            self.close_connection |= self.command != "GET"  # a body left unread must not be taken for a request
            self._send_json({"error": str(exc)}, exc.status)
        except Exception as exc:  # a bug: answer, log, keep serving
            console.print(f"[red]labeler error[/] on {self.command} {self.path}: {type(exc).__name__}: {exc}")
            self.close_connection = True
            self._send_json({"error": f"{type(exc).__name__}: {exc}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _check_host(self) -> None:
        if not self.server.loopback_only:
            return
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        if host not in LOOPBACK_NAMES:
            raise RequestError(HTTPStatus.FORBIDDEN, f"unexpected Host header {self.headers.get('Host')!r}")

    def _check_origin(self) -> None:
        """Writes come from this page only: a browser names the page that sends a request in ``Origin`` (else
        ``Referer``); another site's page is refused. Clients that send neither (scripts, curl) are not browsers."""
        own = (self.headers.get("Host") or "").lower()
        for header in ("Origin", "Referer"):
            value = self.headers.get(header)
            if value is None:
                continue
            parts = urlsplit(value)
            if parts.scheme != "http" or parts.netloc.lower() != own:
                raise RequestError(HTTPStatus.FORBIDDEN, f"writes are only accepted from this page; {header} is {value!r}")
            return

    @staticmethod
    def _route(path: str, prefix: str) -> str | None:
        """The URL-decoded rest of ``path`` after ``prefix``, or None when it does not start with it."""
        if not path.startswith(prefix):
            return None
        try:
            return unquote(path[len(prefix) :], errors="strict")
        except UnicodeDecodeError as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"bad URL encoding: {exc}") from exc

    # ------------------------------------------------------------------ routes

    def _get(self, path: str) -> None:
        store = self.server.store
        if path in ("/", "/index.html"):
            return self._send_file(self.server.static_files["index.html"])
        if (name := self._route(path, "/static/")) is not None:
            if name not in self.server.static_files:
                raise RequestError(HTTPStatus.NOT_FOUND, f"no such file: {name!r}")
            return self._send_file(self.server.static_files[name])
        if path == "/api/session":
            return self._send_json(store.summary())
        if (rel := self._route(path, "/api/image/")) is not None:
            return self._send_image(store.image_path(rel))
        if (rel := self._route(path, "/api/grid/")) is not None:
            return self._send_json(store.get_grid(rel))
        raise RequestError(HTTPStatus.NOT_FOUND, f"no such page: {path!r}")

    def _put(self, path: str) -> None:
        if (rel := self._route(path, "/api/grid/")) is None:
            raise RequestError(HTTPStatus.NOT_FOUND, f"cannot PUT {path!r}")
        self.server.store.item(rel)  # refuse bad paths before reading the body
        self._send_json(self.server.store.put_grid(rel, self._read_json()))

    def _post(self, path: str) -> None:
        if (rel := self._route(path, "/api/skip/")) is None:
            raise RequestError(HTTPStatus.NOT_FOUND, f"cannot POST {path!r}")
        self.server.store.item(rel)
        self._read_json()
        self._send_json(self.server.store.skip(rel))

    # ------------------------------------------------------------------ bodies

    def _read_json(self) -> object:
        """The request's JSON body (at most ``MAX_BODY`` bytes); a body that is not JSON, or nests deeper than the
        parser allows, is a 400."""
        if (self.headers.get("Content-Type") or "").split(";")[0].strip().lower() != "application/json":
            raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "the body must be application/json")
        length_header = self.headers.get("Content-Length")
        if length_header is None or self.headers.get("Transfer-Encoding"):
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required")
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length_header!r}")
        if length > MAX_BODY:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body of {length} bytes is over the limit of {MAX_BODY}")
        raw = self.rfile.read(length)
        if len(raw) != length:
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body ended early")
        try:
            return json.loads(raw.decode("utf-8")) if raw else {}
        except (UnicodeDecodeError, ValueError) as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"bad JSON: {exc}") from exc
        except RecursionError:  # the parser's own limit on nesting: a hostile body, not a server fault
            raise RequestError(HTTPStatus.BAD_REQUEST, "bad JSON: nested too deeply") from None

    def _send(self, body: bytes, content_type: str, status: int = HTTPStatus.OK, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, payload: object, status: int = HTTPStatus.OK) -> None:
        self._send(json.dumps(payload).encode(), "application/json", status)

    def _send_file(self, path: Path) -> None:
        self._send(path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream")

    def _send_image(self, path: Path) -> None:
        if path.suffix.lower() in BROWSER_FORMATS:
            body, kind = path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        else:
            body, kind = encode_image(read_image(path), ".png"), "image/png"
        self._send(body, kind, cache="private, max-age=3600")

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        """Quiet: the terminal shows the URL and the summary, not every request."""


# --------------------------------------------------------------------------- running it


def bind(store: LabelStore, host: str, port: int | None) -> LabelerServer:
    """A server on ``port``; with no port, the default one, or any free one when that is taken."""
    try:
        return LabelerServer(store, host, DEFAULT_PORT if port is None else port)
    except OSError as exc:
        if port is None:
            return LabelerServer(store, host, 0)
        raise StepError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def browser_available() -> bool:
    """A graphical browser can be opened here (never a text browser in the terminal of a headless box)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        webbrowser.get()
        return True
    except webbrowser.Error:
        return False


def serve(store: LabelStore, host: str = "127.0.0.1", port: int | None = None, open_browser: bool = True) -> dict:
    """Serve the page until Ctrl-C or SIGTERM; write the run record ("interrupted": the server has no other end),
    print the counts, then raise the interrupt for the exit code (130 / 143). Without a signal (the server was
    shut down by code) return the record."""
    started = time.time()
    server = bind(store, host, port)
    bound_port = server.server_address[1]
    for note in store.notes:
        console.print(f"[yellow]note:[/] {note}")
    progress = store.summary()["progress"]
    console.print(f"labelling {progress['total']} images ({progress['done']} done) into {store.labels_dir}"
                  + (" - pre-filled by the segmenter" if store.predictor else ""))
    console.print(f"open [bold]{server.url}[/]")
    console.print((f"on a remote box, forward the port from your computer first:  ssh -L {bound_port}:127.0.0.1:{bound_port} "
                   f"{getpass.getuser()}@{socket.gethostname()}"))
    console.print("Ctrl-C stops the server; every change is already saved.")
    if open_browser and browser_available():
        threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()
    stopped: KeyboardInterrupt | None = None
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt as exc:
        stopped = exc
    finally:
        server.server_close()
    record = store.run_record(started, interrupted=stopped is not None)
    write_run_record(store.labels_dir / "autobackswap.json", record)
    counts = record["counts"]
    console.print((f"[green]label[/]: {counts['done']} of {counts['total']} images labelled in this selection, {counts['labelled_in_folder']} label "
                   f"file(s) in {store.labels_dir}"))
    if stopped is not None:
        raise as_interrupted(stopped, hint="every label is saved; run the same command again to go on labelling") from None
    return record
