"""`dllab review OUT`: the TA's queue of decisions, served in the browser (Starlette + uvicorn).

Pages: the queue (`/`, filterable by item, flag, status and student), one page per decision
(`/decide/<kind>/<student>/<item or flag>`: the rubric's text, the automatic hint, the evidence
side by side, the decision's history; keyboard-driven), and the release page (`/release`).
A save (`POST /api/decide`) goes to the decision store (grader.review.store), which rewrites
OUT/overrides.yaml; that student's grade and PDF and the class summary are then re-rendered in
the background (one thread; saves are never held up by it).

Access: every request needs the server's token (a random one unless given): in the URL the
server prints (`?token=`; it is then kept in an HTTP-only, same-site cookie and taken out of
the URL), in that cookie, or in an `X-Review-Token` header. A POST needs the header (the page's
script sends it), so another site cannot post through the TA's cookie. The server reads and
serves only OUT: figures and feedback PDFs by paths checked to stay inside their folders, and
every piece of student-controlled text is escaped by the templates (autoescape).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import threading
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import quote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from grader.errors import GraderError
from grader.review.queue import STATUSES, Entry, entries, load_grade, load_grades, select
from grader.review.store import MAX_COMMENT, Conflict, Decision, DecisionStore
from grader.safename import safe_name

Log = Callable[[str], None]
TOKEN_HEADER = "X-Review-Token"
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                "script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
                                "base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _utc() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- background re-rendering


class Renderer:
    """Re-scores students and re-renders their PDFs and the class summary in one background thread.

    Saves only enqueue; students saved while a render runs are rendered together next. `release()`
    re-renders everyone (`dllab rescore`). What happened is in `state` (JSON-able)."""

    def __init__(self, out: Path, *, log: Log = lambda s: None, start: bool = True) -> None:
        self.out = Path(out)
        self.log = log
        self._cv = threading.Condition()
        self._pending: set[str] = set()
        self._release = False
        self.state: dict[str, Any] = {"running": None, "running_ids": [], "pending": [], "done": 0, "error": None,
                                      "rendered": {}, "released_at": None, "release_running": False}
        if start:
            threading.Thread(target=self._loop, name="review-render", daemon=True).start()

    def enqueue(self, student_id: str) -> None:
        """Re-score and re-render `student_id` (and then the class summary) soon."""
        with self._cv:
            self._pending.add(student_id)
            self.state["pending"] = sorted(self._pending)
            self._cv.notify()

    def release(self) -> None:
        """Re-score and re-render every student, the gradebook and the class summary."""
        with self._cv:
            self._release = True
            self.state["release_running"] = True
            self._cv.notify()

    def idle(self) -> bool:
        """Whether nothing waits or runs."""
        with self._cv:
            return not self._pending and not self._release and self.state["running"] is None

    def snapshot(self) -> dict[str, Any]:
        """A copy of `state`."""
        with self._cv:
            return json.loads(json.dumps(self.state))

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._release:
                    self._cv.wait()
                full, self._release = self._release, False
                students, self._pending = sorted(self._pending), set()
                self.state.update(running="everyone" if full else ", ".join(students), pending=[],
                                  running_ids=students)
            try:
                self.run(students, full=full)
                with self._cv:
                    self.state["error"] = None
            except Exception as exc:  # noqa: BLE001 - shown on every page; the server keeps running
                with self._cv:
                    self.state["error"] = f"{type(exc).__name__}: {exc}"
                self.log("review: re-rendering failed:\n" + traceback.format_exc())
            finally:
                with self._cv:
                    self.state["running"], self.state["running_ids"] = None, []
                    if full:
                        self.state["release_running"] = False

    def run(self, students: list[str], *, full: bool) -> None:
        """One render, in this thread (the loop's body; tests call it directly)."""
        from grader import config
        from grader.rescore import finish, rescore_students

        if full:
            self._release_in_child()
            with self._cv:
                self.state["released_at"] = _utc()
                for g in load_grades(self.out):
                    self.state["rendered"][g["student_id"]] = self.state["released_at"]
            return
        settings = config.load(self.out)
        rescore_students(students, settings, workers=1)
        finish(self.out, load_grades(self.out), pdf=settings.pdf)
        now = _utc()
        with self._cv:
            for s in students:
                self.state["rendered"][s] = now
            self.state["done"] += len(students)


    def _release_in_child(self) -> None:
        """`dllab rescore OUT` in a child process of its own session: its workers never hold the
        server's listening socket (nothing is inherited), and stopping the server (a closed
        terminal, SIGTERM) lets a release that began finish writing, instead of leaving workers
        stuck. Raises GraderError with the rescore's last line when it fails."""
        import subprocess
        import sys

        done = subprocess.run([sys.executable, "-m", "grader.cli", "rescore", str(self.out), "--workers", "2"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True, check=False)
        if done.returncode != 0:
            lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise GraderError(lines[-1][:400] if lines else f"dllab rescore ended with status {done.returncode}")


# --------------------------------------------------------------------------- access


class TokenGate:
    """ASGI middleware: the token on every request (see the module docstring); security headers."""

    def __init__(self, app: ASGIApp, *, token: str, cookie: str) -> None:
        self.app, self.token, self.cookie = app, token, cookie

    def _ok(self, value: str | None) -> bool:
        return bool(value) and secrets.compare_digest(str(value).encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = request.query_params.get("token")
        header = request.headers.get(TOKEN_HEADER)
        if request.method in ("GET", "HEAD") and self._ok(given):
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + (("?" + urlencode(rest)) if rest else "")
            response: Response = RedirectResponse(target, status_code=303)
            response.set_cookie(self.cookie, self.token, httponly=True, samesite="strict", path="/")
        elif request.method in ("GET", "HEAD") and (self._ok(request.cookies.get(self.cookie)) or self._ok(header)):
            await self.app(scope, receive, _secure(send))
            return
        elif request.method == "POST" and self._ok(header):
            await self.app(scope, receive, _secure(send))
            return
        else:
            msg = ("This review server needs its token: open the URL that `dllab review` printed "
                   "(it ends in ?token=...).")
            response = JSONResponse({"error": msg}, status_code=403) if request.method != "GET" else \
                HTMLResponse(f"<!doctype html><title>Token needed</title><p>{msg}</p>", status_code=403)
        for k, v in SECURITY_HEADERS.items():
            response.headers[k] = v
        await response(scope, receive, send)


def _secure(send: Send) -> Send:
    async def wrapped(message: Mapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            have = {k.lower() for k, _ in headers}
            for k, v in SECURITY_HEADERS.items():
                if k.lower().encode() not in have:
                    headers.append((k.lower().encode(), v.encode()))
            message = {**message, "headers": headers}
        await send(message)
    return wrapped


def inside(base: Path, rel: str) -> Path | None:
    """`base/rel` when it is a file inside `base` (no `..`, no absolute path, no link out of it),
    else None."""
    if not rel or "\x00" in rel or rel.startswith(("/", "\\")):
        return None
    parts = rel.replace("\\", "/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    root = base.resolve()
    try:
        target = (root / Path(*parts)).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if not target.is_relative_to(root) or not target.is_file():
        return None
    return target


# --------------------------------------------------------------------------- the application


class Review:
    """The review of one graded output folder: its rubric, decisions, queue, pages and renderer."""

    def __init__(self, out: Path, *, token: str | None = None, who: str = "", port: int = 8000,
                 log: Log = lambda s: None, render: bool = True) -> None:
        """Raises GraderError when OUT is not a graded output folder (no settings.json, no grades)
        or its rubric or kept overrides file does not load."""
        from grader import config
        from grader.resources import resource_dir
        from grader.rubric import load_rubric

        self.out = Path(out).resolve()
        if not (self.out / "settings.json").is_file() or not (self.out / "grades").is_dir():
            raise GraderError(f"{out} is not a graded output folder (no settings.json or grades/): "
                              "run `dllab grade ... --out` first")
        settings = config.load(self.out)
        self.rubric = load_rubric(settings.rubric_path, base_dir=settings.lab_dir)
        self.items = {item.id: (part, item) for part, item in self.rubric.all_items()}
        self.hand_graded = frozenset(i for i, (_, it) in self.items.items() if it.check == "manual")
        try:
            self.store = DecisionStore(self.out, max_points={i: float(it.points) for i, (_, it) in self.items.items()})
        except OSError as exc:
            raise GraderError(f"cannot keep decisions in {self.out / 'review'}: {exc.strerror or exc} (the review "
                              "writes its decisions and overrides.yaml into OUT)") from None
        self.token = token or secrets.token_urlsafe(24)
        self.who = who
        self.cookie = f"dllab-review-{port}"
        self.renderer = Renderer(self.out, log=log, start=render)
        self.static = resource_dir("templates") / "review"
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(self.static)), autoescape=True,
                                      trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
        self.env.filters["q"] = lambda s: quote(str(s), safe="")
        self.env.filters["pts"] = lambda x: "" if x is None else f"{float(x):g}"
        self.stale = self.behind()
        for sid in sorted(self.stale):
            self.renderer.enqueue(sid)

    # -------------------------------------------------------------- data

    def behind(self) -> set[str]:
        """Students whose grade does not carry their decisions yet (a save the server could not
        re-render before it stopped, or an overrides file edited by hand): re-scored at start."""
        rows = {(r["student_id"], r["item_id"]): r for r in self.store.overrides()}
        stale = set()
        for sid, grade in self.grades().items():
            for part in list(grade.get("parts") or []) + ([grade["bonus"]] if grade.get("bonus") else []):
                for item in part.get("items") or []:
                    row = rows.get((sid, str(item.get("id"))))
                    want = (row["points"] is not None, row["points"] if row else None, row["comment"]) if row \
                        else (False, None, "")
                    has = (bool(item.get("overridden")), item.get("points") if item.get("overridden") else None,
                           str(item.get("comment") or ""))
                    if want != has:
                        stale.add(sid)
        return stale

    def refresh(self) -> None:
        """Takes in an overrides file edited by hand while the server runs, and re-renders the
        students it changed."""
        for sid in sorted(self.store.refresh()):
            self.renderer.enqueue(sid)

    def strangers(self) -> list[str]:
        """Student ids in the decisions that no grade in OUT has (a typo in a hand-edited file)."""
        known = set(self.grades())
        return sorted({r["student_id"] for r in self.store.overrides()} - known)

    def grades(self) -> dict[str, dict[str, Any]]:
        """student id -> grade."""
        return {g["student_id"]: g for g in load_grades(self.out)}

    def grade(self, student_id: object) -> dict[str, Any] | None:
        """One student's grade, or None for an id this folder does not grade."""
        return load_grade(self.out, student_id) if isinstance(student_id, str) and student_id else None

    def queue(self) -> list[Entry]:
        """Every entry, in queue order."""
        return entries(list(self.grades().values()), self.store.latest(), hand_graded=self.hand_graded)

    def undecided(self) -> list[Entry]:
        """What is still pending."""
        return [e for e in self.queue() if not e.decided]

    # -------------------------------------------------------------- pages

    def app(self) -> ASGIApp:
        """The ASGI application (token gate included)."""
        routes = [
            Route("/", self.page_queue),
            Route("/decide/{kind}/{sid}/{key}", self.page_decide),
            Route("/release", self.page_release),
            Route("/files/{sid}/{path:path}", self.file),
            Route("/feedback/{sid}", self.feedback),
            Route("/static/{name}", self.static_file),
            Route("/favicon.ico", lambda request: Response(status_code=204)),
            Route("/similarity.html", self.similarity_page),
            Route("/runs/{sid}/{path:path}", self.file),  # the similarity pages' figures (../runs/<id>/...)
            Route("/similarity/{name}", self.similarity_page),
            Route("/api/decide", self.api_decide, methods=["POST"]),
            Route("/api/release", self.api_release, methods=["POST"]),
            Route("/api/status", self.api_status),
        ]
        return TokenGate(Starlette(routes=routes), token=self.token, cookie=self.cookie)

    def _page(self, name: str, request: Request, status_code: int = 200, **context: Any) -> HTMLResponse:
        try:
            self.refresh()
            warning = ""
        except GraderError as exc:  # a hand edit that does not load: shown, the rest keeps working
            warning = str(exc)
        if not warning and (strangers := self.strangers()):
            warning = (f"overrides.yaml names student(s) not graded in this folder: {', '.join(strangers[:8])}"
                       f"{' …' if len(strangers) > 8 else ''} (their rows are kept, and apply to nobody)")
        st = self.renderer.snapshot()
        base = {"rendering": set(st["pending"]) | set(st["running_ids"]) | ({"*"} if st["release_running"] else set()),
                "token": self.token, "who": self.who, "lab": self.rubric.lab, "title": self.rubric.title,
                "status": st, "max_comment": MAX_COMMENT,
                "warning": warning}
        return HTMLResponse(self.env.get_template(name).render(**base, **context), status_code=status_code)

    @staticmethod
    def _filters(request: Request) -> dict[str, str]:
        q = request.query_params
        status = q.get("status", "pending")
        return {"item": q.get("item", "")[:200], "flag": q.get("flag", "")[:200],
                "status": status if status in STATUSES else "pending", "q": q.get("q", "")[:200]}

    async def page_queue(self, request: Request) -> Response:
        f = self._filters(request)
        everything = self.queue()
        shown = select(everything, item=f["item"], flag=f["flag"], status=f["status"], student=f["q"])
        scope = select(everything, item=f["item"], flag=f["flag"], student=f["q"])
        items = [(iid, it.title) for iid, (_, it) in self.items.items() if any(e.key == iid and e.kind == "item"
                                                                              for e in everything)]
        flags = sorted({e.key for e in everything if e.kind == "flag"})
        return self._page("queue.html.j2", request, entries=shown, filters=f, query=_query(f), items=items,
                          flags=flags, decided=sum(e.decided for e in scope), total=len(scope),
                          all_decided=sum(e.decided for e in everything), all_total=len(everything))

    async def page_decide(self, request: Request) -> Response:
        from grader.review.evidence import entry_evidence

        kind, sid, key = (request.path_params[k] for k in ("kind", "sid", "key"))
        grade = self.grade(sid)
        if kind not in ("item", "flag") or grade is None:
            return self._not_found(request, "No such student in this output folder.")
        latest = self.store.latest()
        found = entries([grade], latest, hand_graded=self.hand_graded)
        entry = next((e for e in found if (e.kind, e.key) == (kind, key)), None)
        if entry is None and kind == "item":
            entry = _any_item(grade, key, latest)
        if entry is None:
            return self._not_found(request, "No such item or flag in this student's grade.")
        f = self._filters(request)
        order = select(self.queue(), item=f["item"], flag=f["flag"], student=f["q"])
        prev_e, next_e, next_pending = _neighbours(order, entry)
        rubric_item = self.items.get(key, (None, None))[1] if kind == "item" else None
        try:
            evidence = entry_evidence(self.out, grade, item_id=key if kind == "item" else None,
                                      flag=key if kind == "flag" else None)
        except Exception as exc:  # noqa: BLE001 - the page still lets the TA decide
            evidence = {"error": f"the evidence could not be gathered: {type(exc).__name__}: {exc}"}
        student_items = [(p.get("id"), it) for p in list(grade.get("parts") or []) +
                         ([grade["bonus"]] if grade.get("bonus") else []) for it in p.get("items") or []]
        q = _query(f)
        return self._page(
            "decision.html.j2", request, entry=entry, grade=grade, rubric_item=rubric_item, evidence=evidence,
            files_base=f"/files/{quote(sid, safe='')}/", history=self.store.history(kind, sid, key),
            prev_url=prev_e.path + q if prev_e else "", next_url=next_e.path + q if next_e else "",
            next_pending_url=(next_pending.path + q) if next_pending else "/" + q,
            queue_url="/" + q, student_items=student_items, query=q,
            manual=self._hand_graded(grade, key) if kind == "item" else False,
            pair_url=self.similarity_url(sid, key.split(":", 1)[1]) if key.startswith("similar-to:") else "",
            feedback_exists=(self.out / "feedback" / f"{safe_name(sid)}.pdf").is_file())

    async def page_release(self, request: Request) -> Response:
        left = self.undecided()
        return self._page("release.html.j2", request, undecided=left, total=len(self.queue()))

    def _not_found(self, request: Request, msg: str) -> Response:
        return self._page("message.html.j2", request, status_code=404, message=msg)

    # -------------------------------------------------------------- files

    async def file(self, request: Request) -> Response:
        sid, rel = request.path_params["sid"], request.path_params["path"]
        if self.grade(sid) is None:
            return Response("not found", status_code=404)
        path = inside(self.out / "runs" / safe_name(sid), rel)
        kind = IMAGE_TYPES.get(path.suffix.lower()) if path else None
        if path is None or kind is None:
            return Response("refused: not an image inside this student's runs folder", status_code=404)
        return FileResponse(path, media_type=kind)

    async def feedback(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        if self.grade(sid) is None:
            return Response("not found", status_code=404)
        path = inside(self.out / "feedback", f"{safe_name(sid)}.pdf")
        if path is None:
            return Response("no feedback PDF yet", status_code=404)
        return FileResponse(path, media_type="application/pdf")

    async def similarity_page(self, request: Request) -> Response:
        """OUT/similarity.html and its side-by-side pages (written by `dllab similarity`, every
        student text in them escaped)."""
        name = request.path_params.get("name")
        path = inside(self.out / "similarity", name) if name else inside(self.out, "similarity.html")
        if path is None or path.suffix != ".html":
            return Response("no such page: run `dllab similarity OUT`", status_code=404)
        return FileResponse(path, media_type="text/html")

    def similarity_url(self, student_id: str, other: str) -> str:
        """The side-by-side page of a similar-to flag's pair, or empty."""
        from grader.similarity.core import RESULTS, pair_page_name

        try:
            pairs = json.loads((self.out / RESULTS).read_text(encoding="utf-8")).get("pairs") or []
        except (OSError, ValueError, AttributeError):
            return ""
        for p in pairs:
            if {p.get("a"), p.get("b")} == {student_id, other}:
                return "/similarity/" + quote(pair_page_name(str(p["a"]), str(p["b"])))
        return ""

    async def static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        types = {".js": "text/javascript", ".css": "text/css"}
        path = inside(self.static, name)
        if path is None or path.suffix not in types:
            return Response("not found", status_code=404)
        return FileResponse(path, media_type=types[path.suffix])

    # -------------------------------------------------------------- API

    async def api_decide(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "the request is not JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "expected a JSON object"}, status_code=400)
        kind, sid, key = body.get("kind"), body.get("student_id"), body.get("key")
        grade = self.grade(sid)
        if grade is None:
            return JSONResponse({"error": "no such student in this output folder"}, status_code=400)
        if kind == "flag" and key not in (grade.get("flags") or []) and not self.store.history("flag", sid, str(key)):
            return JSONResponse({"error": f"{sid}'s grade has no flag {str(key)[:60]!r}"}, status_code=400)
        action = body.get("action")
        if kind == "item" and action == "keep" and self._hand_graded(grade, str(key)):
            return JSONResponse({"error": "this item waits for a TA's points: give them (there are no automatic "
                                          "points to keep)"}, status_code=400)
        item = _any_item(grade, str(key), {}) if kind == "item" else None
        history = self.store.history(str(kind), sid, str(key))
        first = next((d for d in history if d.status_before), None)
        try:
            saved = self.store.decide(
                kind=str(kind), student_id=sid, key=str(key), action=str(action), points=body.get("points"),
                comment=body.get("comment") or "", who=str(body.get("who") or self.who), base=body.get("base") or None,
                # the check's own outcome, as the grade showed it before any decision
                # (unknown when the only earlier decisions came from an overrides file)
                status_before=(first.status_before if first else "" if history else item.status) if item else "",
                points_before=(first.points_before if first else None if history else item.points) if item else None)
        except GraderError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except OSError as exc:
            return JSONResponse({"error": f"not saved: the output folder cannot be written ({exc.strerror or exc}); "
                                          "your entry is still here"}, status_code=500)
        if isinstance(saved, Conflict):
            return JSONResponse({"conflict": _public(saved.current)}, status_code=409)
        if kind == "item":
            self.renderer.enqueue(sid)
        return JSONResponse({"saved": _public(saved)})

    def _hand_graded(self, grade: Mapping[str, Any], key: str) -> bool:
        """Whether the item has no automatic points to keep: graded by hand, or handed to a TA by
        its check (its status now, or before the first decision, is `manual`)."""
        rubric_item = self.items.get(key, (None, None))[1]
        current = _any_item(grade, key, {})
        before = {d.status_before for d in self.store.history("item", str(grade.get("student_id")), key)}
        return (rubric_item is not None and rubric_item.check == "manual") or "manual" in before or \
            (current is not None and current.status == "manual")

    async def api_release(self, request: Request) -> Response:
        try:
            self.refresh()
        except GraderError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        self.renderer.release()
        return JSONResponse({"started": True, "undecided": len(self.undecided())})

    async def api_status(self, request: Request) -> Response:
        return JSONResponse({**self.renderer.snapshot(), "undecided": len(self.undecided())})


def _public(d: Decision) -> dict[str, Any]:
    return {"id": d.id, "kind": d.kind, "student_id": d.student_id, "key": d.key, "action": d.action,
            "points": d.points, "comment": d.comment, "who": d.who, "when": d.when, "base": d.base}


def _query(f: Mapping[str, str]) -> str:
    kept = {k: v for k, v in f.items() if v and not (k == "status" and v == "pending")}
    return ("?" + urlencode(kept)) if kept else ""


def _any_item(grade: Mapping[str, Any], key: str, latest: Mapping[tuple[str, str, str], Decision]) -> Entry | None:
    """An entry for any item of the grade (one not in the queue can be decided too)."""
    for part in list(grade.get("parts") or []) + ([grade["bonus"]] if grade.get("bonus") else []):
        for item in part.get("items") or []:
            if str(item.get("id")) == key:
                return Entry("item", grade["student_id"], key, str(item.get("title", key)), str(part.get("id", "")),
                             "opened from the student's items", str(item.get("status")),
                             item.get("points"), item.get("max"), str(item.get("message") or ""),
                             latest.get(("item", grade["student_id"], key)))
    return None


def _neighbours(order: list[Entry], entry: Entry) -> tuple[Entry | None, Entry | None, Entry | None]:
    """(previous, next, next still pending after this one, wrapping) in the queue's order."""
    keys = [(e.kind, e.student_id, e.key) for e in order]
    me = (entry.kind, entry.student_id, entry.key)
    if me not in keys:
        pending = next((e for e in order if not e.decided), None)
        return None, order[0] if order else None, pending
    i = keys.index(me)
    rest = order[i + 1:] + order[:i]
    return (order[i - 1] if i > 0 else None, order[i + 1] if i + 1 < len(order) else None,
            next((e for e in rest if not e.decided), None))


def serve(out: Path, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None, who: str = "",
          log: Log = print) -> None:
    """Runs the review server until interrupted; prints its URL (with the token) first.

    Raises GraderError for a folder that is not graded, or a port already in use."""
    import socket

    import uvicorn

    review = Review(out, token=token, who=who, port=port, log=log)
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as exc:
        raise GraderError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another with --port)") from None
    finally:
        probe.close()
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    left = review.undecided()
    log(f"reviewing {review.out} ({review.rubric.lab}): {len(review.queue()) - len(left)} of "
        f"{len(review.queue())} decided")
    log(f"open http://{shown if ':' not in shown else f'[{shown}]'}:{port}/?token={review.token}")
    if host not in ("127.0.0.1", "localhost", "::1"):
        log(f"listening on {host}: anyone who can reach it needs the token above; keep it private")
    if review.store.taken_in:
        log(f"took in the overrides file's rows for {review.store.taken_in} student(s) as decisions; "
            "OUT/overrides.yaml is now written from the decisions")
    if review.stale:
        log(f"re-scoring {len(review.stale)} student(s) whose grade does not carry their decisions yet")
    # a closed terminal (SIGHUP) stops the server as Ctrl+C and SIGTERM do
    signal.signal(signal.SIGHUP, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    uvicorn.run(review.app(), host=host, port=port, log_level="warning")
