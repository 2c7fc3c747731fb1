"""The review application over HTTP (Starlette's test client) on a LAB01 class graded in saved mode:
the token, paths kept inside OUT, the queue and its filters, saving, escaping, and re-rendering a
student's grade and PDF from a decision."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from grader.review.app import Review, inside

TOKEN = "test-token-123"
H = {"X-Review-Token": TOKEN}
IDS = {"0556001", "0556002", "0556004", "0556007"}


def graded_class(folder: Path, ids: set[str] = IDS) -> Path:
    """LAB01 samples graded in saved mode (no kernel: a few seconds); returns OUT."""
    from grader.cli import main
    from grader.rubric import builtin_rubric, load_rubric
    from grader.samples import lab1_samples, write_archive

    subs = folder / "subs"
    subs.mkdir(parents=True)
    deadline = load_rubric(builtin_rubric("lab1")).deadline.timestamp()
    for s in lab1_samples(epochs=1):
        if s.student_id in ids:
            write_archive(s, subs, mtime=deadline - 3600 + s.late_days * 86400)
    out = folder / "out"
    assert main(["grade", str(subs), "--lab", "lab1", "--mode", "saved", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return graded_class(tmp_path_factory.mktemp("review"))


@pytest.fixture()
def out(graded: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "out"
    shutil.copytree(graded, copy, symlinks=True)
    # the settings name the original OUT: rescoring a copy must write into the copy
    s = json.loads((copy / "settings.json").read_text())
    s = json.loads(json.dumps(s).replace(str(graded), str(copy)))
    (copy / "settings.json").write_text(json.dumps(s))
    return copy


def _client(out: Path) -> tuple[Review, TestClient]:
    review = Review(out, token=TOKEN, who="ta-default", render=False)
    client = TestClient(review.app())
    assert client.get(f"/?token={TOKEN}", follow_redirects=False).status_code == 303  # sets the cookie
    return review, client


def test_every_request_needs_the_token(out: Path) -> None:
    review = Review(out, token=TOKEN, render=False)
    c = TestClient(review.app())
    assert c.get("/").status_code == 403
    assert c.get("/?token=wrong").status_code == 403
    assert c.get("/files/0556001/lab1-1.ipynb/figures/fig-0001.png").status_code == 403
    assert c.post("/api/decide", json={}).status_code == 403
    r = c.get(f"/?token={TOKEN}&status=all", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?status=all"  # the token leaves the URL
    assert "httponly" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
    assert c.get("/").status_code == 200  # the cookie
    # a POST needs the header: another site's form riding on the cookie is refused
    assert c.post("/api/decide", json={"kind": "item"}).status_code == 403
    assert c.post("/api/decide", headers=H, json={"kind": "item"}).status_code == 400


def test_paths_outside_the_students_runs_are_refused(out: Path, tmp_path: Path) -> None:
    _, c = _client(out)
    figures = out / "runs" / "0556001" / "lab1-1.ipynb" / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
    (figures / "fig-0009.png").write_bytes(png)
    r = c.get("/files/0556001/lab1-1.ipynb/figures/fig-0009.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content == png
    (out / "secret.png").write_bytes(b"\x89PNG")
    (out / "runs" / "0556001" / "link.png").symlink_to(out / "secret.png")
    for bad in ["../../settings.json", "..%2F..%2Fsettings.json", "%2e%2e/%2e%2e/secret.png", "/etc/passwd",
                "%2Fetc%2Fpasswd", "link.png", "submission.json", "../0556002/submission.json"]:
        assert c.get(f"/files/0556001/{bad}").status_code == 404, bad
    assert c.get("/files/nobody/x.png").status_code == 404
    assert c.get("/static/..%2F..%2Fgrader%2Fcli.py").status_code == 404
    assert inside(out / "runs", "0556001/../0556002/submission.json") is None
    assert inside(out / "runs", "0556001/submission.json") == (out / "runs" / "0556001" / "submission.json").resolve()


def test_the_queue_lists_manual_items_and_flags_with_progress(out: Path) -> None:
    _, c = _client(out)
    page = c.get("/").text
    assert "lab1-3-justification" in page and "0 of " in page
    only = c.get("/?item=lab1-3-justification").text
    assert only.count('class="row pending"') == 4  # one per student
    flagged = c.get("/?flag=bad-name").text
    assert "0556007" in flagged and "0556001" not in flagged.split("<tbody>")[1]


def test_a_saved_decision_counts_and_is_escaped(out: Path) -> None:
    review, c = _client(out)
    total = len(review.queue())
    evil = '<img src=x onerror=alert(1)><script>alert(2)</script>'
    r = c.post("/api/decide", headers=H, json={"kind": "item", "student_id": "0556001", "key": "lab1-3-justification",
                                                "action": "set", "points": "2", "comment": evil, "who": "<b>ta</b>",
                                                "base": None})
    assert r.status_code == 200, r.text
    assert f"1 of {total} decided" in c.get("/?status=all").text
    page = c.get("/decide/item/0556001/lab1-3-justification").text
    assert evil not in page and "&lt;img src=x onerror=alert(1)&gt;" in page and "<b>ta</b>" not in page
    assert review.renderer.snapshot()["pending"] == ["0556001"]  # re-rendering is queued
    # a stale base is a conflict naming who saved
    r = c.post("/api/decide", headers=H, json={"kind": "item", "student_id": "0556001", "key": "lab1-3-justification",
                                                "action": "set", "points": 1, "who": "ta2", "base": None})
    assert r.status_code == 409 and r.json()["conflict"]["who"] == "<b>ta</b>"


def test_bad_saves_say_why(out: Path) -> None:
    _, c = _client(out)
    base = {"kind": "item", "student_id": "0556001", "key": "lab1-3-justification", "who": "t", "base": None}
    cases = [({"action": "set", "points": 7}, "outside 0..3"), ({"action": "keep"}, "waits for a TA's points"),
             ({"action": "set", "points": "two"}, "must be a number"), ({"student_id": "nobody", "action": "set"},
                                                                         "no such student"),
             ({"kind": "flag", "key": "late", "action": "reviewed"}, "has no flag")]
    for change, why in cases:
        r = c.post("/api/decide", headers=H, json={**base, **change})
        assert r.status_code == 400 and why in r.json()["error"], (change, r.text)
    assert c.post("/api/decide", headers={**H, "content-type": "application/json"}, content=b"{nope").status_code == 400


def test_decision_pages_for_items_flags_and_unknowns(out: Path) -> None:
    _, c = _client(out)
    page = c.get("/decide/item/0556001/lab1-3-justification").text
    assert 'id="decide"' in page and "How the initial learning rate" in page and 'data-manual="yes"' in page
    assert c.get("/decide/flag/0556007/bad-name").status_code == 200
    assert c.get("/decide/item/0556001/no-such-item").status_code == 404
    assert c.get("/decide/item/nobody/lab1-3-justification").status_code == 404
    # any item of a student can be decided from its page, even one the queue does not list
    graded_item = json.loads((out / "grades" / "0556001.json").read_text())["parts"][0]["items"][0]["id"]
    assert c.get(f"/decide/item/0556001/{graded_item}").status_code == 200


def test_a_decision_re_renders_the_grade_and_the_pdf(out: Path) -> None:
    review, c = _client(out)
    r = c.post("/api/decide", headers=H, json={"kind": "item", "student_id": "0556004", "key": "lab1-3-justification",
                                                "action": "set", "points": 2.5, "comment": "Clear lr study",
                                                "who": "ta1", "base": None})
    assert r.status_code == 200
    before = json.loads((out / "grades" / "0556004.json").read_text())["total"]
    review.renderer.run(["0556004"], full=False)
    grade = json.loads((out / "grades" / "0556004.json").read_text())
    item = next(i for p in grade["parts"] for i in p["items"] if i["id"] == "lab1-3-justification")
    assert item["points"] == 2.5 and item["overridden"] and grade["total"] == pytest.approx(before + 2.5)
    text = subprocess.run(["pdftotext", str(out / "feedback" / "0556004.pdf"), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert "Clear lr study" in text
    assert "0556004" in (out / "grades.csv").read_text()


def test_a_decision_the_server_could_not_render_is_rendered_at_the_next_start(out: Path) -> None:
    review, c = _client(out)
    assert review.stale == set()
    r = c.post("/api/decide", headers=H, json={"kind": "item", "student_id": "0556002", "key": "lab1-3-justification",
                                                "action": "set", "points": 1, "who": "t", "base": None})
    assert r.status_code == 200
    # the server stops before its background render: the next one re-scores that student
    again = Review(out, token=TOKEN, render=False)
    assert again.stale == {"0556002"} and again.renderer.snapshot()["pending"] == ["0556002"]
    again.renderer.run(["0556002"], full=False)
    assert Review(out, token=TOKEN, render=False).stale == set()


def test_keep_is_refused_once_a_ta_gave_points_to_an_item_its_check_handed_over(out: Path) -> None:
    review, c = _client(out)
    handed = next(e for e in review.queue() if e.kind == "item" and e.status == "manual"
                  and e.key not in review.hand_graded)
    body = {"kind": "item", "student_id": handed.student_id, "key": handed.key, "who": "t"}
    first = c.post("/api/decide", headers=H, json={**body, "action": "set", "points": 1, "base": None}).json()["saved"]
    review.renderer.run([handed.student_id], full=False)  # the grade now shows the TA's points (status not manual)
    r = c.post("/api/decide", headers=H, json={**body, "action": "keep", "base": first["id"]})
    assert r.status_code == 400 and "waits for a TA's points" in r.json()["error"]
    page = c.get(handed.path).text
    assert 'id="keep"' not in page and 'id="before"' in page and "before any TA's decision" in page


def test_a_save_that_cannot_be_written_says_so_in_json(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    review, c = _client(out)

    def refuse(*_a: object, **_k: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(review.store, "_write", refuse)
    r = c.post("/api/decide", headers=H, json={"kind": "item", "student_id": "0556001", "key": "lab1-3-justification",
                                                "action": "set", "points": 1, "who": "t", "base": None})
    assert r.status_code == 500 and "cannot be written (Read-only file system)" in r.json()["error"]


def test_a_hand_edit_of_overrides_yaml_while_serving_is_taken_in_and_strangers_are_said(out: Path) -> None:
    review, c = _client(out)
    c.post("/api/decide", headers=H, json={"kind": "item", "student_id": "0556001", "key": "lab1-3-justification",
                                           "action": "set", "points": 1, "who": "t", "base": None})
    text = (out / "overrides.yaml").read_text().replace("points: 1.0", "points: 2.5")
    (out / "overrides.yaml").write_text(text + "- {student_id: '0556999', item_id: lab1-3-justification, points: 1}\n")
    page = c.get("/?status=all").text
    assert "0556999" in page and "not graded in this folder" in page
    assert review.store.latest()[("item", "0556001", "lab1-3-justification")].points == 2.5
    assert "0556001" in review.renderer.snapshot()["pending"]


def test_a_closed_terminal_stops_the_server_and_frees_its_port(out: Path) -> None:
    import signal
    import socket
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "grader.cli", "review", str(out), "--port", str(port),
                             "--token", TOKEN], stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/api/release", data=b"{}",
                                                              headers=H), timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError(proc.stderr.read() if proc.poll() is not None else "the server never answered")
        time.sleep(1)  # the release's rescore is running in its own child
        proc.send_signal(signal.SIGHUP)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with socket.socket() as s:  # nothing left holding the port
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
