"""`autobp view [DIR]`: a local web server that shows the runs and sweeps in DIR as their HTML reports do, live.

Pages are the report's own (autobp.tools.html_run and html_sweep build them, section by section), with plotly.js and
the updater live.js loaded from this server. Every 1.5 s the page asks `/api/state` for a version of each section (a
digest of summary.json, the status as `autobp runs` decides it, sweep.yaml, trials.csv, …) and rebuilds the sections
whose version changed; and asks `/api/tail?file=LOG&from=OFFSET` for the rows appended to each log its charts follow
since the byte offset it holds: the server reads from there to the end of the last complete line (never the whole
file), and the page appends the rows to its traces. A log replaced (a resumed run rewrites its logs) is noticed by
its file id, and the sections drawn from it are rebuilt.

Read-only and local: it binds 127.0.0.1 unless told otherwise, answers only GET, serves only run and sweep
directories and logs under DIR (a path with `..`, an absolute path or one that resolves out of DIR through a
symlink is refused), and sends a Content-Security-Policy that forbids the page any request outside the server.
"""

from __future__ import annotations

import html
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from autobp.common.errors import AutobpError, ConfigError, DataError

DEFAULT_PORT = 8765
LOOPBACK = "127.0.0.1"
LOCAL_NAMES = ("127.0.0.1", "localhost")  # Host headers a loopback server answers (a guard against DNS rebinding)
LIVE_SCRIPT = Path(__file__).with_name("live.js")
SCRIPTS = ('<link rel="icon" href="data:,"><script src="/static/plotly.min.js"></script>'
           '<script src="/static/live.js" defer></script>')  # fmt: skip
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
LISTING = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>autobp view: {title}</title><style>{style}</style>{scripts}</head>
<body><h1>Runs and sweeps in <code>{title}</code></h1><p class="explain">Newest first, as <code>autobp runs</code>
lists them; the list and every page follow the runs as they train. <span id="live-problem" class="note"></span></p>
<table id="runs"><thead><tr><th>name</th><th>kind</th><th>status</th><th>date</th><th>epochs</th><th>best</th></tr>
</thead><tbody></tbody></table><ul id="notes" class="note"></ul></body></html>
"""


class Refused(Exception):
    """A request the server does not answer: `status` says why (403 outside DIR, 404 not there, 400 malformed)."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class View:
    """What the server shows: the run and sweep directories under `root`."""

    root: Path
    listed: dict[Path, Any] = field(default_factory=dict)  # the runs already read for the list, by their files

    def resolve(self, relative: str, must_exist: bool = True) -> Path:
        """A path under the root, from its URL form; anything that would leave the root is refused."""
        if "\x00" in relative or "\\" in relative or relative.startswith("/") or ".." in relative.split("/"):
            raise Refused(HTTPStatus.FORBIDDEN, f"{relative}: only paths inside the served folder are shown")
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root):
            raise Refused(HTTPStatus.FORBIDDEN, f"{relative}: leads out of the served folder (a symlink?)")
        if must_exist and not path.exists():
            raise Refused(HTTPStatus.NOT_FOUND, f"{relative}: no such run or sweep (any more)")
        return path

    def listing(self) -> dict[str, Any]:
        """The runs and sweeps, newest first, as `autobp runs` lists them, with the address of each page."""
        from autobp.tools.compare import list_runs

        listed, notes = list_runs(self.root, self.listed)
        runs = []
        for entry in listed:
            path = Path(entry.path).resolve()
            if not path.is_relative_to(self.root):
                notes.append(f"skipped {entry.name}: it leads out of the served folder (a symlink?)")
                continue
            runs.append({"name": entry.name, "kind": entry.kind, "status": entry.status, "best": entry.best,
                         "date": entry.date.strftime("%Y-%m-%d %H:%M:%S"), "epochs": entry.epochs,
                         "href": self._address(path)})  # fmt: skip
        return {"runs": runs, "notes": notes}

    def context(self, relative: str) -> Any:
        """The report's context of a run or sweep directory, its trials linked to their pages here."""
        from autobp.rundir.reader import is_run_dir
        from autobp.sweeps.record import is_sweep_dir
        from autobp.tools.html_run import RunContext
        from autobp.tools.html_sweep import SweepContext

        path = self.resolve(relative)
        if is_sweep_dir(path):
            return SweepContext(path, self._address)
        if is_run_dir(path):
            return RunContext(path)
        raise Refused(HTTPStatus.NOT_FOUND, f"{relative}: neither a run directory nor a sweep directory")

    def page(self, relative: str) -> str:
        from autobp.tools.html_page import page

        context = self.context(relative)
        return page(context, SCRIPTS, self._relative(context))

    def section(self, relative: str, section_id: str) -> str:
        from autobp.tools.html_page import section_html

        context = self.context(relative)
        section = next((s for s in context.sections if s.id == section_id), None)
        if section is None:
            raise Refused(HTTPStatus.NOT_FOUND, f"{section_id}: no such section")
        return section_html(section, context, live=True)

    def state(self, relative: str) -> dict[str, Any]:
        context = self.context(relative)
        return {"versions": {section.id: context.version(section) for section in context.sections}}

    def tail(self, files: list[str], offsets: list[str]) -> list[dict[str, Any]]:
        """The rows appended to each log since its offset (only the logs a run appends to, only under the root)."""
        from autobp.rundir.reader import APPENDED_LOGS, read_appended

        if len(files) != len(offsets) or not all(offset.isdigit() for offset in offsets):
            raise Refused(HTTPStatus.BAD_REQUEST, "give one whole-number `from` per `file`")
        answers = []
        for relative, offset in zip(files, offsets):
            path = self.resolve(relative, must_exist=False)
            if path.name not in APPENDED_LOGS:
                raise Refused(HTTPStatus.FORBIDDEN, f"{relative}: only the logs {', '.join(APPENDED_LOGS)} are read")
            if not path.is_file():
                answers.append({"file": relative, "missing": True})
                continue
            appended = read_appended(path, int(offset))
            answers.append({"file": relative, "file_id": appended.file_id, "start": appended.start,
                            "end": appended.end, "columns": appended.columns, "rows": appended.rows,
                            "notes": appended.notes})  # fmt: skip
        return answers

    def index(self) -> str:
        from autobp.tools.html_page import STYLE

        return LISTING.format(title=html.escape(str(self.root)), style=STYLE, scripts=SCRIPTS)

    def _address(self, directory: Path) -> str:
        """The page of a run or sweep directory here ('' for one that leads out of the root)."""
        path = directory.resolve()
        return "/page/" + quote(path.relative_to(self.root).as_posix()) if path.is_relative_to(self.root) else ""

    def _relative(self, context: Any) -> str:
        path = getattr(context, "run_dir", None) or context.sweep_dir
        return path.resolve().relative_to(self.root).as_posix()


def _handler(view: View, static: dict[str, bytes], hosts: tuple[str, ...] | None) -> type[BaseHTTPRequestHandler]:
    """A request handler answering GET (and HEAD) from `view`; `hosts`, if given, are the only Host names answered."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "autobp-view"
        # Stopping joins the request threads (daemon threads killed at exit can abort the interpreter); a client
        # that goes silent mid-request is dropped after this many seconds rather than holding the stop.
        timeout = 5

        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            try:
                self._check_host()
                status, kind, body = _route(view, static, self.path)
            except Refused as refused:
                status, kind, body = refused.status, "text/plain", str(refused).encode()
            except (AutobpError, OSError) as err:  # a file that vanished or broke between two reads
                status, kind, body = HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain", str(err).encode()
            self._answer(status, kind, body)

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

        def _check_host(self) -> None:
            name = (self.headers.get("Host") or "").rpartition(":")[0] or self.headers.get("Host", "")
            if hosts is not None and name not in hosts:
                raise Refused(HTTPStatus.FORBIDDEN, f"Host {name!r}: this server answers only {', '.join(hosts)}")

        def _answer(self, status: HTTPStatus, kind: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "max-age=3600" if kind == "text/javascript" else "no-store")
            for name, value in SECURITY_HEADERS.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the standard library's signature)
            """Quiet: the terminal shows the address and the stop, not every request."""

    return Handler


def _route(view: View, static: dict[str, bytes], target: str) -> tuple[HTTPStatus, str, bytes]:
    url = urlsplit(target)
    query = parse_qs(url.query)
    route, _, rest = url.path.lstrip("/").partition("/")
    rest = unquote(rest)
    if url.path == "/":
        return HTTPStatus.OK, "text/html", view.index().encode()
    if route == "static" and rest in static:
        return HTTPStatus.OK, "text/javascript", static[rest]
    if route == "page":
        return HTTPStatus.OK, "text/html", view.page(rest.rstrip("/")).encode()
    api: dict[str, Callable[[], Any]] = {
        "runs": view.listing,
        "state": lambda: view.state(_one(query, "page")),
        "tail": lambda: view.tail(query.get("file", []), query.get("from", [])),
    }
    if route == "api" and rest == "section":
        return HTTPStatus.OK, "text/html", view.section(_one(query, "page"), _one(query, "id")).encode()
    if route == "api" and rest in api:
        from autobp.common.text import to_json

        return HTTPStatus.OK, "application/json", to_json(api[rest](), indent=None).encode()
    raise Refused(HTTPStatus.NOT_FOUND, f"{url.path}: no such page")


def _one(query: dict[str, list[str]], name: str) -> str:
    values = query.get(name, [""])
    return values[0]


def open_view(directory: Path) -> View:
    """The view of a folder: it must exist, and plotly (the `report` extra) must be installed."""
    from autobp.tools.html_page import plotly_objects

    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory; pass the folder your runs are in (output.dir)")
    plotly_objects()
    return View(directory.resolve())


def serve(directory: Path, host: str, port: int, say: Callable[[str, bool], None]) -> None:
    """Serve `directory` until Ctrl-C or SIGTERM; `say(text, err)` prints the address and warnings."""
    from plotly.offline import get_plotlyjs

    view = open_view(directory)
    static = {"plotly.min.js": get_plotlyjs().encode(), "live.js": LIVE_SCRIPT.read_bytes()}
    loopback = host in LOCAL_NAMES
    try:
        server = ThreadingHTTPServer((host, port), _handler(view, static, LOCAL_NAMES if loopback else None))
    except OSError as exc:
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc}); choose another "
                          "port with --port (0 picks a free one)") from None  # fmt: skip
    if not loopback:
        say(f"warning: --host {host}: anyone who can reach this machine at that address can read these runs", True)
    # SIGINT set too, as train sets it: a view started with SIGINT ignored (a script's background job) still stops.
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        say(f"autobp view: serving {view.root} at http://{host}:{server.server_port}/ (Ctrl-C to stop)", False)
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say("autobp view: stopped", True)


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt

