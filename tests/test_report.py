"""Feedback PDFs, the class summary and the gradebook, rendered from plain JSON dicts and
read back with poppler (pdftotext, pdffonts) the way a student or a TA would see them."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from pathlib import Path

import pytest

from grader.report import render_student, render_summary, write_gradebook

pytestmark = pytest.mark.skipif(shutil.which("pdftotext") is None or shutil.which("pdffonts") is None,
                                reason="poppler-utils not installed")

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
HOSTILE = '<script>alert("x")</script></div><b>bold</b>'

# --------------------------------------------------------------------------- builders


def item(iid: str, status: str, points: float, max_: float, message: str, **extra: object) -> dict:
    return {"id": iid, "title": iid.replace("-", " "), "status": status, "points": points, "max": max_,
            "message": message, "overridden": False, "comment": "", **extra}


def grade(sid: str, *, w: float = 18, pc: float = 16, ran: float = 5, food: float = 12, lr: float = 2,
          bonus: float = 5, late_days: int = 0, flags: tuple[str, ...] = (), messages: dict | None = None,
          manual_status: str = "manual", comment: str = "") -> dict:
    msg = {"weights": "Weight histograms are shown for every layer.",
           "per-class": "Accuracy is reported for all 10 classes.",
           "ran": "The notebook ran from top to bottom.", "food": "Food-11 test loss and accuracy are reported.",
           "lr": "Three learning rates were compared."} | (messages or {})
    st = lambda p, m: "pass" if p == m else ("fail" if p == 0 else "partial")  # noqa: E731
    p1 = [item("lab1-1-weights", st(w, 18), w, 18, msg["weights"]),
          item("lab1-1-per-class", st(pc, 16), pc, 16, msg["per-class"]),
          item("lab1-1-ran", st(ran, 5), ran, 5, msg["ran"])]
    p2 = [item("lab1-2-test-metrics", st(food, 12), food, 12, msg["food"])]
    p3 = [item("lab1-3-experiments", st(lr, 2), lr, 2, msg["lr"]),
          item("lab1-3-justification", manual_status, 0 if manual_status == "manual" else 3, 3,
               "A TA grades this item by hand after reading your work.",
               evidence=["TA hint (report_sections): pass: report mentions learning rate"],
               comment=comment, overridden=manual_status != "manual")]
    parts = [{"id": "lab1-1", "title": "LAB 1-1: train a CNN on CIFAR-10", "max": 39, "items": p1},
             {"id": "lab1-2", "title": "LAB 1-2: train on Food-11", "max": 12, "items": p2},
             {"id": "lab1-3", "title": "LAB 1-3: tune the learning rate", "max": 5, "items": p3}]
    for p in parts:
        p["points"] = sum(i["points"] for i in p["items"])
    penalty = 10.0 * late_days
    earned = sum(p["points"] for p in parts) + bonus
    return {"student_id": sid, "lab": "lab1", "max": 56, "total": max(0.0, earned - penalty), "parts": parts,
            "bonus": {"id": "bonus", "title": "Bonus: normalize Food-11", "points": bonus, "max": 5,
                      "items": [item("bonus-normalization", st(bonus, 5), bonus, 5, "Food-11 normalized.")]},
            "late": {"minutes_late": late_days * 1440, "days_late": late_days, "penalty_points": penalty,
                     "source": "lms"},
            "flags": sorted(set(flags) | ({"late"} if late_days else set())
                            | ({"manual-pending"} if manual_status == "manual" else set()))}


def figure_png(path: Path, seed: int) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    import random
    rnd = random.Random(seed)
    fig = Figure(figsize=(3, 2), dpi=60)
    FigureCanvasAgg(fig)
    fig.add_subplot().hist([rnd.gauss(0, 1) for _ in range(300)], bins=20)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


def evidence(run_dir: Path, path: str, *, status: str = "ok", acc: float | None = 0.61, dataset: str = "cifar10",
             figures: int = 3, errors: list | None = None, reason: str = "", lr_study: bool = False,
             hostile: bool = False) -> dict:
    figs = []
    for k in range(figures):
        rel = f"figures/fig-{k:04d}.png"
        figure_png(run_dir / rel, k)
        figs.append({"cell": 6, "kind": "histogram", "subjects": [f"conv{k + 1}.weight"],
                     "title": HOSTILE if hostile else f"conv{k + 1}.weight", "png": rel})
    if hostile:
        figs.append({"cell": 7, "kind": "histogram", "subjects": ["x"], "png": "../../../../etc/passwd"})
    per_class = {c: round(0.4 + 0.05 * i, 3) for i, c in enumerate(CLASSES)} if acc is not None else {}
    ev = {"path": path, "mode": "execute", "status": status, "reason": reason, "duration_s": 42.5,
          "run_dir": str(run_dir),
          "metrics": {"dataset": dataset, "test_accuracy": acc, "test_loss": 1.1 if acc is not None else None,
                      "per_class_accuracy": per_class},
          "figures": figs,
          "normalization": [{"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "dataset": dataset, "split": "train"}],
          "optimizers": [{"type": "SGD", "lr": 0.001, "momentum": 0.9, "weight_decay": 0, "steps": 2500, "ref": 1}],
          "schedulers": [], "models": [{"class": "Net", "num_outputs": 10, "parameters": 62006}],
          "errors": errors or [],
          "verified": {"test_accuracy": (acc or 0) - 0.002, "per_class_accuracy": per_class, "test_images": 10000}
          if acc is not None else {"reason": "the notebook never finished training"}}
    if lr_study:
        ev["optimizers"] = [{"type": "SGD", "lr": lr, "steps": 500, "ref": i} for i, lr in enumerate([0.1, 0.01, 0.001])]
        ev["schedulers"] = [{"type": "StepLR", "params": {"step_size": 1, "gamma": 0.5}, "steps": 2, "optimizer_ref": 0}]
        ev["metrics"]["curves"] = {"test_acc": [[1, 0.1], [2, 0.1], [1, 0.5], [2, 0.59], [1, 0.3], [2, 0.4]]}
    return ev


REFERENCE = {
    "parts": {
        "lab1-1": {"title": "LAB 1-1", "dataset": "cifar10", "summary": {
            "test_accuracy": {"mean": 0.63, "std": 0.01, "min": 0.62, "max": 0.64, "n": 3},
            "test_loss": {"mean": 1.05, "std": 0.02, "n": 3},
            "per_class_accuracy": {c: {"mean": 0.6, "std": 0.05} for c in CLASSES}}},
        "lab1-3": {"title": "LAB 1-3", "dataset": "cifar10", "summary": {
            "configs": [{"name": "lr0.01-step", "lr": 0.01, "schedule": "StepLR(1, 0.5)",
                         "test_accuracy": {"mean": 0.6, "std": 0.01}}], "best": "lr0.01-step"}},
    },
    "provenance": {"device": "cpu", "torch": "2.3.0", "seeds": [0, 1, 2], "datasets": {}},
}
STATS = {"cifar10": {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]},
         "food11": {"mean": [0.55, 0.45, 0.34], "std": [0.23, 0.24, 0.24]}}

TRACEBACK = "\n".join(["Traceback (most recent call last):"] + [f"  frame {i}" for i in range(60)]
                      + ["\x1b[0;31mRuntimeError\x1b[0m: mat1 and mat2 shapes cannot be multiplied (4x400 and 256x120)"])


def cohort(root: Path) -> dict[str, dict]:
    """good, partial, broken and hostile submissions: grade, evidence, problems, name."""
    runs = root / "runs"
    return {
        "0556001": {"grade": grade("0556001", manual_status="pass", comment="Clear LR study, well argued."),
                    "evidence": [evidence(runs / "0556001/lab1-1", "lab1-1.ipynb"),
                                 evidence(runs / "0556001/lab1-3", "lab1-3.ipynb", figures=0, lr_study=True)],
                    "problems": [], "name": "陳偉"},
        "0556002": {"grade": grade("0556002", w=9, pc=8, late_days=1,
                                   messages={"weights": "Histograms found for conv1, conv2 only: add fc1, fc2, fc3."}),
                    "evidence": [evidence(runs / "0556002/lab1-1", "lab1-1.ipynb", acc=0.41, figures=2)],
                    "problems": [], "name": "Lin Mei"},
        "0556003": {"grade": grade("0556003", w=0, pc=0, ran=0, food=0, lr=0, bonus=0, flags=("notebook-error",),
                                   messages={"ran": "Cell 7 raised RuntimeError: mat1 and mat2 shapes cannot be multiplied.",
                                             "food": "No notebook for LAB 1-2 was found in the zip."}),
                    "evidence": [evidence(runs / "0556003/lab1-1", "lab1-1.ipynb", status="error", acc=None, figures=0,
                                          reason="cell 7 raised RuntimeError",
                                          errors=[{"cell": 7, "ename": "RuntimeError",
                                                   "evalue": "mat1 and mat2 shapes cannot be multiplied",
                                                   "source": "\n".join(f"x{i} = net(x)" for i in range(80)),
                                                   "traceback": TRACEBACK}])],
                    "problems": [{"code": "no-notebook", "message": "no notebook for LAB 1-2 (lab1-2*.ipynb)",
                                  "path": None}], "name": None},
        "0556004": {"grade": grade("0556004", w=0, pc=0, ran=0, food=0, lr=0, bonus=0, flags=("sandbox-limit",),
                                   messages={"ran": f"Your notebook printed {HOSTILE} and was killed."}),
                    "evidence": [evidence(runs / "0556004/lab1-1", "lab1-1 " + HOSTILE + ".ipynb", status="killed",
                                          reason="memory limit", acc=None, figures=1, hostile=True,
                                          errors=[{"cell": 3, "ename": "<MemoryError>", "evalue": HOSTILE,
                                                   "source": "while True:\n    a.append('" + "x" * 500 + "')",
                                                   "traceback": "\x00\x07 " + HOSTILE}])],
                    "problems": [{"code": "junk", "message": "file " + HOSTILE, "path": "../" + HOSTILE}],
                    "name": "</h1><script>x()</script>"},
    }


def pdftotext(path: Path) -> str:
    out = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout
    return " ".join(out.split())  # layout wraps lines; compare on single spaces


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("out")
    students = cohort(out)
    for sid, s in students.items():
        render_student(s["grade"], evidence=s["evidence"], reference=REFERENCE, dataset_stats=STATS,
                       problems=s["problems"], out_dir=out, name=s["name"])
    grades = [s["grade"] for s in students.values()]
    render_summary(grades, runs={sid: s["evidence"] for sid, s in students.items()}, out_dir=out)
    write_gradebook(grades, out_dir=out)
    return out, students


# --------------------------------------------------------------------------- student PDFs


def test_every_student_gets_a_pdf_and_an_html_with_id_and_total(rendered: tuple[Path, dict]) -> None:
    out, students = rendered
    for sid, s in students.items():
        text = pdftotext(out / "feedback" / f"{sid}.pdf")
        assert sid in text
        total = f"{s['grade']['total']:g}"
        assert f"{total} / 56" in text, (sid, total)
        assert (out / "feedback" / f"{sid}.html").read_text().count(sid) >= 1


def test_good_report_shows_scores_messages_and_ta_comment(rendered: tuple[Path, dict]) -> None:
    out, _ = rendered
    text = pdftotext(out / "feedback" / "0556001.pdf")
    assert "Weight histograms are shown for every layer." in text
    assert "Clear LR study, well argued." in text
    assert "18 / 18" in text and "LAB 1-1: train a CNN on CIFAR-10" in text
    assert "Learning-rate study" in text and "lr0.01-step" in text
    assert "Printed versus verified" in text and "61.00 %" in text and "60.80 %" in text
    # the TA's hint for a manual item is for the summary only
    assert "TA hint" not in text


def test_cjk_name_renders_with_a_cjk_font(rendered: tuple[Path, dict]) -> None:
    out, _ = rendered
    pdf = out / "feedback" / "0556001.pdf"
    assert "陳偉" in pdftotext(pdf)
    fonts = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert "CJK" in fonts, fonts
    # a report without Chinese text does not carry a CJK font at all (that is what keeps it fast)
    plain = subprocess.run(["pdffonts", str(out / "feedback" / "0556002.pdf")],
                           capture_output=True, text=True, check=True).stdout
    assert "CJK" not in plain


def test_partial_report_explains_what_is_missing_and_the_late_penalty(rendered: tuple[Path, dict]) -> None:
    out, _ = rendered
    text = pdftotext(out / "feedback" / "0556002.pdf")
    assert "Histograms found for conv1, conv2 only: add fc1, fc2, fc3." in text
    assert "9 / 18" in text and "PARTIAL" in text
    assert "Late penalty: 1 day(s) late" in text and "−10" in text


def test_broken_report_shows_failing_cell_with_truncated_source_and_traceback(rendered: tuple[Path, dict]) -> None:
    out, _ = rendered
    text = pdftotext(out / "feedback" / "0556003.pdf")
    assert "Cell 7 raised RuntimeError" in text
    assert "mat1 and mat2 shapes cannot be multiplied (4x400 and 256x120)" in text
    assert "x0 = net(x)" in text and "x79 = net(x)" not in text
    assert "truncated: 40 more line(s)" in text
    assert "No notebook for LAB 1-2 was found in the zip." in text and "no-notebook" in text
    html = (out / "feedback" / "0556003.html").read_text()
    assert "\x1b" not in html  # ANSI colours are stripped


def test_hostile_strings_print_as_text_and_killed_reason_shows(rendered: tuple[Path, dict]) -> None:
    out, _ = rendered
    text = pdftotext(out / "feedback" / "0556004.pdf")
    assert "memory limit" in text and "KILLED" in text
    assert '<script>alert("x")</script></div><b>bold</b>' in text
    assert "</h1><script>x()</script>" in text
    html = (out / "feedback" / "0556004.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "\x00" not in html
    # the figure path that points outside the run folder is not read
    assert "1 figure(s) could not be read" in text


def test_figures_are_embedded_so_the_pdf_stands_alone(rendered: tuple[Path, dict]) -> None:
    out, _ = rendered
    html = (out / "feedback" / "0556001.html").read_text()
    assert html.count('src="data:image/png;base64,') >= 5  # 3 thumbnails, per-class chart, LR study
    assert "figures/fig-0000.png" not in html
    images = subprocess.run(["pdfimages", "-list", str(out / "feedback" / "0556001.pdf")],
                            capture_output=True, text=True).stdout if shutil.which("pdfimages") else ""
    if images:
        assert len(images.strip().splitlines()) - 2 >= 5


def test_html_only_when_pdf_is_off(tmp_path: Path) -> None:
    s = cohort(tmp_path)["0556002"]
    path = render_student(s["grade"], evidence=s["evidence"], reference=None, dataset_stats={},
                          problems=[], out_dir=tmp_path, pdf=False)
    assert path == tmp_path / "feedback" / "0556002.html" and path.is_file()
    assert not (tmp_path / "feedback" / "0556002.pdf").exists()
    assert "no reference for this dataset" in path.read_text()


def test_minimal_grade_renders(tmp_path: Path) -> None:
    path = render_student({"student_id": "0556099", "lab": "lab1", "total": 0, "max": 100, "parts": []},
                          evidence=[], reference=None, dataset_stats={}, problems=[], out_dir=tmp_path)
    text = pdftotext(path)
    assert "0556099" in text and "No notebook or script of yours was run" in text


def test_unsafe_student_id_gets_a_safe_file_name_inside_feedback(tmp_path: Path) -> None:
    """Issue 13 E: an id that cannot be a file name is that student's problem, not the batch's:
    the feedback is written under the id's safe name, inside feedback/, and shows the id."""
    from grader.safename import safe_name

    path = render_student({"student_id": "../x", "parts": []}, evidence=[], reference=None, dataset_stats={},
                          problems=[], out_dir=tmp_path, pdf=False)
    assert path.parent == tmp_path / "feedback" and path.name == f"{safe_name('../x')}.html"
    assert path.name.startswith("x--") and "../x" in path.read_text()
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [path.name]


# --------------------------------------------------------------------------- summary, gradebook


def test_summary_lists_everyone_and_who_needs_a_look(rendered: tuple[Path, dict]) -> None:
    out, students = rendered
    text = pdftotext(out / "summary.pdf")
    for sid, s in students.items():
        assert sid in text
    attention = text.split("Needs a TA's eye")[1].split("Notebook runs")[0]
    assert "0556001" not in attention  # clean run, manual item graded
    assert "0556002" in attention and "lab1-3-justification: to grade by hand" in attention
    assert "TA hint (report_sections)" in attention
    assert "lab1-1.ipynb: error" in attention and "killed (memory limit)" in attention
    html = (out / "summary.html").read_text()
    for sid in students:
        assert f'href="feedback/{sid}.pdf"' in html and f'href="feedback/{sid}.html"' in html
    assert "<script>" not in html


def test_grades_csv_one_row_per_student_with_part_columns(rendered: tuple[Path, dict]) -> None:
    out, students = rendered
    rows = list(csv.DictReader(io.StringIO((out / "grades.csv").read_text())))
    assert list(rows[0]) == ["student_id", "total", "max", "lab1-1", "lab1-2", "lab1-3", "bonus", "late_penalty", "flags",
                            "problems"]  # problems: what went wrong at intake (issue 12 K)
    assert [r["student_id"] for r in rows] == sorted(students)
    good = rows[0]
    assert (good["total"], good["max"], good["lab1-1"], good["bonus"]) == ("61", "56", "39", "5")
    assert rows[1]["late_penalty"] == "10" and "late" in rows[1]["flags"].split(";")


def test_moodle_csv_parses_with_id_grade_and_feedback(rendered: tuple[Path, dict]) -> None:
    out, students = rendered
    rows = list(csv.DictReader(io.StringIO((out / "moodle_grades.csv").read_text(encoding="utf-8"))))
    assert list(rows[0]) == ["ID number", "Grade", "Feedback", "Feedback file"]
    assert {r["ID number"]: float(r["Grade"]) for r in rows} == {
        sid: s["grade"]["total"] for sid, s in students.items()}
    assert all("\n" not in r["Feedback"] for r in rows)
    assert "Provisional: 1 item(s) wait for a TA." in rows[1]["Feedback"]
    assert rows[0]["Feedback file"] == "feedback/0556001.pdf"


def test_gradebook_keeps_one_row_per_student_and_blanks_crashed_grades(tmp_path: Path) -> None:
    a = grade("0556010")
    crashed = dict(grade("0556011"), total=0, error="kernel died", flags=["grader-crash"])
    write_gradebook([a, crashed, grade("0556010")], out_dir=tmp_path)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "moodle_grades.csv").read_text())))
    assert [r["ID number"] for r in rows] == ["0556010", "0556011"]
    assert rows[1]["Grade"] == "" and "TA" in rows[1]["Feedback"]
