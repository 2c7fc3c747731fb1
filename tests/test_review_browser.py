"""`dllab review OUT` end to end, in a real browser: the server as a TA runs it (a subprocess of
`python -m grader.cli review`), the system's Chromium driven by Playwright, keyboard first.

One graded LAB01 folder (four of the handout's samples, graded in saved mode: no kernels) is
made once; each test that must start from an undecided class gets its own copy and its own
server, so the tests do not depend on their order. Set DLLAB_REVIEW_SHOTS=<folder> to keep
screenshots of the queue and of a decision page there.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
except ImportError:  # pragma: no cover - the skip below says it
    sync_playwright = None  # type: ignore[assignment]

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright (Python) is not installed: pip install playwright"),
    pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium on PATH (`chromium`): apt-get install chromium"),
]

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "browser-test-token-0123456789"
STUDENTS = {"0556001", "0556002", "0556004", "0556007"}
WHO_KEY = "dllab-review-who"  # review.js keeps the reviewer's name under this localStorage key
TIMEOUT_MS = 20_000


# --------------------------------------------------------------------------- the graded folder


def _png(width: int = 4, height: int = 3) -> bytes:
    """A small valid RGB PNG (grey pixels)."""
    raw = b"".join(b"\x00" + b"\x80\x80\x80" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


FIGURE = "lab1-1.ipynb/figures/fig-0001.png"
FIGURE_BYTES = _png()


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT of `dllab grade` on 0556001, 0556002, 0556004 and 0556007 (LAB01 samples, saved mode),
    with one figure under runs/0556001/ for the file route. Never decided in: servers get copies."""
    from grader.cli import main
    from grader.rubric import builtin_rubric, load_rubric
    from grader.samples import lab1_samples, write_archive

    subs = tmp_path_factory.mktemp("subs")
    deadline = load_rubric(builtin_rubric("lab1")).deadline.timestamp()
    for s in lab1_samples(epochs=1):
        if s.student_id in STUDENTS:
            write_archive(s, subs, mtime=deadline - 3600 + s.late_days * 86400)
    out = tmp_path_factory.mktemp("graded") / "out"
    assert main(["grade", str(subs), "--lab", "lab1", "--mode", "saved", "--out", str(out)]) == 0
    fig = out / "runs" / "0556001" / FIGURE
    fig.parent.mkdir(parents=True, exist_ok=True)
    fig.write_bytes(FIGURE_BYTES)
    return out


# --------------------------------------------------------------------------- the server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """One `dllab review` subprocess on its own copy of the graded folder."""

    out: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def http(self, path: str, *, body: Any = None, token: bool = True, cookie: bool = False) -> tuple[int, bytes]:
        """(status, body) of a GET (or a POST of JSON `body`), with the token header or none, and
        with the token's cookie (as a browser that opened the token URL sends it) or none.
        `path` goes on the wire as given (no normalising of `..`)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="GET" if body is None else "POST")
        if token:
            req.add_header("X-Review-Token", TOKEN)
        if cookie:
            req.add_header("Cookie", f"dllab-review-{self.port}={TOKEN}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def status(self) -> dict[str, Any]:
        code, body = self.http("/api/status")
        assert code == 200, body
        return json.loads(body)

    def wait_rendered(self, students: set[str], *, timeout: float = 90.0) -> dict[str, Any]:
        """Polls /api/status until no render runs or waits and every one of `students` was rendered."""
        end = time.monotonic() + timeout
        while True:
            s = self.status()
            if s["running"] is None and not s["pending"] and students <= set(s["rendered"]):
                assert s["error"] is None, s["error"]
                return s
            assert time.monotonic() < end, f"the background re-render did not finish: {s}\n{self.log.read_text()}"
            time.sleep(0.3)


def _start(graded: Path, folder: Path) -> Server:
    out = folder / "out"
    shutil.copytree(graded, out, symlinks=True)
    port = _free_port()
    log = folder / "server.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("DLLAB_REVIEW_TOKEN", None)
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "grader.cli", "review", str(out), "--port", str(port),
                                 "--token", TOKEN, "--who", "ta-default"], cwd=ROOT, env=env,
                                stdout=fh, stderr=subprocess.STDOUT)
    server = Server(out=out, port=port, proc=proc, log=log)
    end = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            pytest.fail(f"`dllab review` exited ({proc.returncode}):\n{log.read_text()}")
        try:
            if server.http("/api/status")[0] == 200:
                return server
        except OSError:
            pass
        if time.monotonic() > end:
            proc.kill()
            pytest.fail(f"`dllab review` did not answer within 30 s:\n{log.read_text()}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def servers(graded: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Server]]:
    """name -> a server on its own copy of `graded` (started on first use, one per name)."""
    started: dict[str, Server] = {}

    def get(name: str) -> Server:
        if name not in started:
            started[name] = _start(graded, tmp_path_factory.mktemp(f"review-{name}"))
        return started[name]

    yield get
    for s in started.values():
        s.proc.terminate()
    for s in started.values():
        try:
            s.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def open_ta(browser: Browser) -> Iterator[Callable[..., Page]]:
    """(server, who) -> a page in a fresh browser context (one TA), logged in with the token.
    Every dialog (alert, confirm) any page opens is recorded in `page.dialogs` and dismissed."""
    contexts: list[BrowserContext] = []

    def make(server: Server, who: str) -> Page:
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(ctx)
        ctx.set_default_timeout(TIMEOUT_MS)
        ctx.add_init_script(f"localStorage.setItem({json.dumps(WHO_KEY)}, {json.dumps(who)});")
        page = ctx.new_page()
        page.dialogs = []  # type: ignore[attr-defined]
        page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))  # type: ignore[attr-defined]
        page.goto(f"{server.url}/?token={TOKEN}")
        assert "token=" not in page.url, "the token stays in the address bar"
        return page

    yield make
    for ctx in contexts:
        ctx.close()


# --------------------------------------------------------------------------- helpers


def _entry(url: str) -> tuple[str, str, str]:
    """(kind, student, key) of a decision page's URL."""
    m = re.search(r"/decide/(item|flag)/([^/?]+)/([^/?]+)", url)
    assert m, f"not a decision page: {url}"
    return m.group(1), m.group(2), m.group(3)


def _press_and_wait(page: Page, key: str) -> None:
    """Presses `key` and waits for the page it leads to (a save navigates to the next pending)."""
    before = page.url
    page.keyboard.press(key)
    page.wait_for_url(lambda u: u != before)
    page.wait_for_load_state("load")


def _progress(page: Page) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+) of (\d+) decided", page.locator("#progress").inner_text().strip())
    assert m, page.locator("#progress").inner_text()
    return int(m.group(1)), int(m.group(2))


def _shot(page: Page, name: str) -> None:
    folder = os.environ.get("DLLAB_REVIEW_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def _overrides(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    rows = yaml.safe_load((out / "overrides.yaml").read_text()) or []
    return {(r["student_id"], r["item_id"]): r for r in rows}


def _flat(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------- tests


def test_keyboard_decisions_are_kept_and_rendered(servers: Callable[[str], Server],
                                                  open_ta: Callable[..., Page]) -> None:
    """Three decisions with the keyboard only; kept after a reload; in overrides.yaml and in the
    re-rendered feedback PDF."""
    server = servers("keyboard")
    page = open_ta(server, "Tanya")
    decided, total = _progress(page)
    assert decided == 0 and total >= 3

    comment = "Second conv layer missing; see the summary cell."
    typed = ["7", "4", "9.5"]
    seen: list[tuple[str, str, str]] = []
    _press_and_wait(page, "Enter")  # the queue's first pending row
    for i, pts in enumerate(typed):
        entry = _entry(page.url)
        assert entry[0] == "item", f"the first pending entries are items: {entry}"
        assert entry not in seen, "Enter led back to an item already decided"
        seen.append(entry)
        page.keyboard.type(pts)  # the points field has the focus
        if i == 1:
            page.keyboard.press("Escape")
            page.keyboard.press("c")
            page.keyboard.type(comment)
            _press_and_wait(page, "Control+Enter")
        else:
            _press_and_wait(page, "Enter")
    assert not page.dialogs  # type: ignore[attr-defined]

    page.goto(f"{server.url}/")
    assert _progress(page) == (3, total)
    page.goto(f"{server.url}/?status=decided")
    rows = page.locator("#queue tr.row")
    assert rows.count() == 3
    text = _flat(page.locator("#queue").inner_text())
    for (kind, sid, key), pts in zip(seen, typed):
        assert re.search(rf"{sid} {re.escape(key)} .*?{re.escape(pts)} pts by Tanya", text), text
    page.goto(f"{server.url}/?status=all")
    _shot(page, "queue.png")

    kind, sid, key = seen[1]
    page.goto(f"{server.url}/decide/{kind}/{sid}/{key}")
    assert re.search(r"Decided by Tanya at .* 4 points", _flat(page.locator("#current").inner_text()))
    assert page.locator("#points").input_value() == "4"
    assert page.locator("#comment").input_value() == comment
    _shot(page, "decision.png")

    rows_by_key = _overrides(server.out)
    assert set(rows_by_key) == {(s, k) for _, s, k in seen}
    for (_, s, k), pts in zip(seen, typed):
        assert rows_by_key[(s, k)]["points"] == float(pts)
    assert rows_by_key[(sid, key)]["comment"] == comment

    server.wait_rendered({s for _, s, _ in seen})
    grade = json.loads((server.out / "grades" / f"{sid}.json").read_text())
    item = next(it for p in grade["parts"] + [grade.get("bonus") or {"items": []}] for it in p["items"]
                if it["id"] == key)
    assert item["points"] == 4.0
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed: the feedback PDF's text is not checked")
    pdf = server.out / "feedback" / f"{sid}.pdf"
    text = _flat(subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                                check=True).stdout)
    assert _flat(comment) in text, text
    assert re.search(r"\b4(\.0+)? ?/ ?10\b", text), f"the item's 4 / 10 is not in the PDF:\n{text}"


def test_two_tas_conflict(servers: Callable[[str], Server], open_ta: Callable[..., Page]) -> None:
    """Two TAs open one item; the second save is refused and shows the first TA's; "Save mine over
    it" then saves; the history shows both."""
    server = servers("shared")
    path = "/decide/item/0556004/lab1-3-experiments"
    alice, bob = open_ta(server, "Alice"), open_ta(server, "Bob")
    alice.goto(server.url + path)
    bob.goto(server.url + path)

    alice.keyboard.type("1")
    _press_and_wait(alice, "Enter")

    bob.keyboard.type("2")
    bob.keyboard.press("Enter")
    box = bob.locator("#conflict")
    box.wait_for(state="visible")
    assert "Alice" in bob.locator("#conflict-who").inner_text()
    assert "1 points" in bob.locator("#conflict-what").inner_text()
    assert _entry(bob.url)[1:] == ("0556004", "lab1-3-experiments"), "a refused save must not leave the page"
    assert _overrides(server.out)[("0556004", "lab1-3-experiments")]["points"] == 1.0

    before = bob.url
    bob.locator("#conflict-mine").click()
    bob.wait_for_url(lambda u: u != before)
    assert _overrides(server.out)[("0556004", "lab1-3-experiments")]["points"] == 2.0

    bob.goto(server.url + path)
    history = [_flat(t) for t in bob.locator(".history li").all_inner_texts()]
    assert len(history) == 2, history
    assert re.search(r"Alice · set 1$", history[0]) and re.search(r"Bob · set 2$", history[1]), history
    assert "Decided by Bob" in bob.locator("#current").inner_text()
    assert not alice.dialogs and not bob.dialogs  # type: ignore[attr-defined]


def test_token_and_paths(servers: Callable[[str], Server]) -> None:
    """No token, no page, no save, no figure; with it, nothing outside the student's runs folder."""
    server = servers("shared")
    fig = f"/files/0556001/{FIGURE}"
    assert server.http("/", token=False)[0] == 403
    assert server.http(fig, token=False)[0] == 403
    assert server.http("/decide/item/0556001/lab1-2-model", token=False)[0] == 403
    code, _ = server.http("/api/decide", token=False, body={"kind": "item", "student_id": "0556001",
                                                             "key": "lab1-2-model", "action": "set", "points": 1})
    assert code == 403
    # the cookie opens pages, but a save needs the header: another site cannot post through the cookie
    assert server.http("/", token=False, cookie=True)[0] == 200
    code, _ = server.http("/api/decide", token=False, cookie=True, body={
        "kind": "item", "student_id": "0556001", "key": "lab1-2-model", "action": "set", "points": 1})
    assert code == 403
    assert not (server.out / "overrides.yaml").is_file() or ("0556001", "lab1-2-model") not in _overrides(server.out)
    assert server.http("/?token=wrong", token=False)[0] == 403

    code, body = server.http(fig)
    assert code == 200 and body == FIGURE_BYTES
    settings = (server.out / "settings.json").read_bytes()
    escapes = [
        "/files/0556001/../../settings.json",
        "/files/0556001/%2e%2e/%2e%2e/settings.json",
        "/files/0556001/%2E%2E%2F%2E%2E%2Fsettings.json",
        "/files/0556001/..%2f..%2fsettings.json",
        "/files/0556001/lab1-1.ipynb/../../../settings.json",
        f"/files/0556001/{server.out / 'settings.json'}",
        "/files/0556001/%2F" + "%2F".join((server.out / "settings.json").parts[1:]),
        f"/files/0556001/..%2F0556002%2F..%2F0556001%2F{FIGURE.replace('/', '%2F')}",  # `..` even when it lands inside
        "/files/0556001/%2e%2e/0556001/" + FIGURE,
        f"/files/..%2F0556001/{FIGURE}",
        "/files/0556001/" + "/".join([".."] * 12) + "/etc/passwd",
    ]
    for path in escapes:
        code, body = server.http(path)
        assert code == 404, f"{path}: {code} {body[:200]!r}"
        assert body != settings and b"rubric_path" not in body, path

    # a link inside the runs folder that points out of it is refused too
    link = server.out / "runs" / "0556001" / "lab1-1.ipynb" / "figures" / "out.png"
    link.symlink_to(server.out / "runs" / "0556002" / "submission.json")
    try:
        assert server.http("/files/0556001/lab1-1.ipynb/figures/out.png")[0] == 404
    finally:
        link.unlink()


def test_student_text_is_escaped(servers: Callable[[str], Server], open_ta: Callable[..., Page]) -> None:
    """A comment and a reviewer name that are HTML show as text, after a reload; no dialog fires."""
    server = servers("shared")
    who = '<script>alert("who")</script>'
    comment = "<img src=x onerror=alert(1)>"
    page = open_ta(server, who)
    path = "/decide/item/0556001/lab1-3-justification"
    page.goto(server.url + path)
    page.keyboard.type("1")
    page.keyboard.press("Escape")
    page.keyboard.press("c")
    page.keyboard.type(comment)
    _press_and_wait(page, "Control+Enter")

    page.goto(server.url + path)
    page.wait_for_load_state("load")
    assert page.locator("#comment").input_value() == comment
    history = _flat(page.locator(".history li").text_content() or "")  # one record: the list is folded
    assert comment in history and who in history, history
    assert who in page.locator("#current").inner_text()
    assert page.locator('img[src="x"]').count() == 0
    assert page.locator("script").count() == 1  # review.js only
    html = page.content()
    assert "&lt;img src=x onerror=alert(1)&gt;" in html

    page.goto(f"{server.url}/?status=decided&q=0556001")
    assert who in page.locator("#queue").inner_text()
    assert page.locator("#queue script").count() == 0
    page.wait_for_timeout(300)
    assert page.dialogs == []  # type: ignore[attr-defined]


def test_release_after_every_decision(graded: Path, servers: Callable[[str], Server],
                                      open_ta: Callable[..., Page]) -> None:
    """A TA decides every pending entry of the class with the keyboard; the release page says all
    is decided; its button re-renders; grades.csv carries the decided points."""
    server = servers("release")
    page = open_ta(server, "Rel")
    _, total = _progress(page)
    points = {"lab1-2-model": "6", "lab1-3-experiments": "2", "lab1-3-justification": "1.5"}
    done: dict[tuple[str, str, str], str] = {}
    _press_and_wait(page, "Enter")
    while "/decide/" in page.url:
        entry = _entry(page.url)
        assert entry not in done, f"{entry} came back after it was decided"
        form = page.locator("#decide")
        if entry[0] == "flag":
            page.keyboard.press("Escape")
            _press_and_wait(page, "r")
            done[entry] = "reviewed"
        elif form.get_attribute("data-manual") == "yes" or entry[2] in points:
            pts = points.get(entry[2], "1")
            page.keyboard.type(pts)
            _press_and_wait(page, "Enter")
            done[entry] = pts
        else:  # an item whose check has points to keep
            page.keyboard.press("Escape")
            _press_and_wait(page, "K")
            done[entry] = "keep"
        assert len(done) <= total, "more pages than entries"
    assert len(done) == total
    assert _progress(page) == (total, total)
    assert "every entry is decided" in page.locator("main").inner_text()

    page.goto(f"{server.url}/release")
    assert _flat(page.locator("#undecided-count").inner_text()) == f"Every one of the {total} entries is decided."
    pdfs = {sid: (server.out / "feedback" / f"{sid}.pdf").stat().st_mtime_ns for sid in STUDENTS}
    page.locator("#release").focus()
    page.keyboard.press("Enter")
    page.locator('#release-status[data-done="yes"]').wait_for(timeout=120_000)
    assert "released at" in page.locator("#release-status").inner_text()
    assert all((server.out / "feedback" / f"{sid}.pdf").stat().st_mtime_ns > t for sid, t in pdfs.items())

    with (server.out / "grades.csv").open(newline="") as fh:
        book = {r["student_id"]: r for r in csv.DictReader(fh)}
    for (kind, sid, key), what in done.items():
        if kind != "item" or what == "keep":
            continue
        grade = json.loads((server.out / "grades" / f"{sid}.json").read_text())
        item = next(it for p in grade["parts"] + [grade.get("bonus") or {"items": []}] for it in p["items"]
                    if it["id"] == key)
        assert item["points"] == float(what), (sid, key, item)
    # the part columns of the gradebook add the decided points (lab1-3 is the two decided items alone)
    for sid in STUDENTS:
        decided_l13 = sum(float(w) for (k, s, key), w in done.items()
                          if k == "item" and s == sid and key.startswith("lab1-3-") and w != "keep")
        assert float(book[sid]["lab1-3"]) == pytest.approx(decided_l13), (sid, book[sid])
    # a student on time: the total grows by the points given to items that had none
    was = json.loads((graded / "grades" / "0556001.json").read_text())
    added = sum(float(w) for (k, s, _), w in done.items() if k == "item" and s == "0556001" and w != "keep")
    assert not (was.get("late") or {}).get("penalty_points") and float(book["0556001"]["total"]) == pytest.approx(was["total"] + added)
    assert not page.dialogs  # type: ignore[attr-defined]


def test_flag_page_enter_marks_reviewed(servers: Callable[[str], Server], open_ta: Callable[..., Page]) -> None:
    """On a flag's page, Enter (the first key the page's footer names: "Enter or r reviewed & next") marks
    the flag reviewed and opens the next pending entry, as it saves an item's points."""
    server = servers("shared")
    page = open_ta(server, "Fran")
    path = "/decide/flag/0556007/late"
    page.goto(server.url + path)
    assert "Enter or r reviewed & next" in _flat(page.locator("#keys").inner_text())
    page.keyboard.press("Enter")
    try:
        page.wait_for_url(lambda u: path not in u, timeout=2_000)
    except Exception:  # noqa: BLE001 - the assertion below says what happened
        pass
    assert path not in page.url, (
        f"Enter on a flag page did not save: the focus is in the comment "
        f"({page.evaluate('document.activeElement.id')!r}), which now holds "
        f"{page.locator('#comment').input_value()!r}")
    code, body = server.http("/?status=decided&flag=late")
    assert code == 200 and b"reviewed" in body
