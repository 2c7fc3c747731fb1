"""Feedback reports: a PDF (and HTML) per student, the class summary and the gradebook.

The inputs are the plain JSON dicts of DESIGN.md (a Grade, the evidence.json of each
notebook plus its `run_dir`, the reference's expected metrics), so re-rendering needs no
re-execution. The Python here only gathers and cleans data and draws charts (matplotlib,
Agg, PNG data URIs); all layout is in the jinja2 templates under `templates/`, rendered
with autoescaping, so anything a student wrote prints as text.

    render_student(grade, evidence=..., reference=..., dataset_stats=..., problems=...,
                   out_dir=OUT, name="陳偉")      -> OUT/feedback/<id>.pdf (+ .html)
    render_summary(grades, runs={id: evidence}, out_dir=OUT)   -> OUT/summary.pdf (+ .html)
    write_gradebook(grades, out_dir=OUT)        -> [OUT/grades.csv, OUT/moodle_grades.csv]
"""

from __future__ import annotations

from grader.report.gradebook import write_gradebook
from grader.report.student import render_student
from grader.report.summary import render_summary

__all__ = ["render_student", "render_summary", "write_gradebook"]
