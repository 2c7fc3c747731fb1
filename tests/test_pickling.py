"""Every exception the grader defines survives pickling, so a worker process (the local pool,
a rescore pool, Dask through cloudpickle) hands the batch the error it raised: a rubric error
inside a worker reaches the CLI as a rubric error (exit 2), never as a dead worker."""

from __future__ import annotations

import importlib
import io
import inspect
import json
import pickle
import pkgutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import grader
from grader.batch import Progress, in_worker, run_local
from grader.errors import GraderError
from grader.pipeline import GradeSettings
from grader.rubric import Problem, RubricError

import intake_fixtures as fx

# Sample constructor arguments for every exception class defined under grader.*. A class
# missing here fails `test_every_exception_class_is_in_the_table`: add it with its arguments.
SAMPLES: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "grader.errors.GraderError": (("a usage error",), {}),
    "grader.errors.DatasetError": (("no folder /data/cifar10",), {}),
    "grader.rubric.RubricError": (("lab1.yaml", [Problem("parts[0].items[1].points", 12, "not a number"),
                                                 Problem("", None, "no parts")]), {}),
    "grader.rubric._DuplicateKey": (("parts[0]", 7, "id"), {}),
    "grader.labs.LabError": (("labs/x: no lab.yaml",), {}),
    "grader.jsondepth.TooDeep": ((150, 100), {}),
    "grader.execute._LimitHit": (("timeout", "the run took more than 600 s"), {}),
    "grader.evidence_model.InvalidEvidence": (("figures.0.kind: Input should be 'line'",), {}),
    "grader.evidence._Invalid": (("events[3].cell is not an integer",), {}),
    "grader.intake.extract._TooLarge": ((), {}),
    "grader.intake.extract._WriteFailed": (("disk full",), {}),
    "grader.kernelmsg.UndecodableMessage": (("nested too deep",), {"depth": 140}),
    "grader.nbread.UnreadableNotebook": (("not JSON",), {}),
    "grader.probe.rec_export._Refusal": (("the model has a hook",), {}),
    "grader.verify.spec.NotVerified": (("no test split",), {}),
    "grader.verify.host.OutOfTime": (("the evaluator ran past 60 s",), {}),
    "grader.instruments.InstrumentError": (("the instrument 'x' is not trained",), {}),
}


def _exception_classes() -> dict[str, type[BaseException]]:
    """Every BaseException subclass defined in a module of the grader package (nested ones too)."""
    found: dict[str, type[BaseException]] = {}
    failed: list[str] = []
    for info in pkgutil.walk_packages(grader.__path__, "grader.", onerror=failed.append):
        module = importlib.import_module(info.name)
        todo = [c for _, c in inspect.getmembers(module, inspect.isclass)]
        while todo:
            cls = todo.pop()
            if cls.__module__ != module.__name__:
                continue
            todo += [c for _, c in inspect.getmembers(cls, inspect.isclass) if c is not cls
                     and c.__qualname__.startswith(cls.__qualname__ + ".")]
            if issubclass(cls, BaseException):
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    assert not failed, f"packages that did not import: {failed}"
    return found


CLASSES = _exception_classes()


def test_every_exception_class_is_in_the_table() -> None:
    assert len(CLASSES) >= 15, "the walk found too few classes: it is not walking the package"
    missing = sorted(set(CLASSES) - set(SAMPLES))
    assert not missing, f"exception classes without sample arguments in SAMPLES (add them): {missing}"
    gone = sorted(set(SAMPLES) - set(CLASSES))
    assert not gone, f"SAMPLES names classes that no longer exist: {gone}"


def _plain_dumps(obj: object) -> bytes:
    """pickle.dumps without copyreg's reducers: importing Dask installs tblib's for every
    exception class, which would hide a class that cannot pickle itself (a worker of the local
    pool has not imported Dask)."""
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf)
    pickler.dispatch_table = {}
    pickler.dump(obj)
    return buf.getvalue()


@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("dumps", [_plain_dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_exception_round_trips(name: str, dumps: Any) -> None:
    args, kwargs = SAMPLES[name]
    error = CLASSES[name](*args, **kwargs)
    copy = pickle.loads(dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error) and copy.args == error.args
    assert vars(copy) == vars(error)


def test_rubric_error_keeps_its_problems() -> None:
    problems = [Problem("parts[0].items[1].points", 12, "not a number"), Problem("", None, "no parts")]
    copy = pickle.loads(_plain_dumps(RubricError("lab1.yaml", problems)))
    assert copy.source == "lab1.yaml" and copy.problems == tuple(problems)
    assert str(copy).startswith("lab1.yaml: 2 problems:") and "(line 12): not a number" in str(copy)


def test_a_rubric_error_crosses_dasks_error_path_whole() -> None:
    """What a Dask worker sends for a failed task (`error_message`, cloudpickle) and what the
    client raises from it (`clean_exception`): the same RubricError, so run_dask's
    `except GraderError: raise` stops the batch with the rubric's message. (Dask pickles
    exceptions through tblib, which rebuilt RubricError before GraderError could pickle
    itself; this keeps that path under test.)"""
    from distributed.core import clean_exception, error_message
    from distributed.protocol.serialize import Serialize

    error = RubricError("OUT/rubric.yaml", [Problem("parts", 1, "expected a list")])
    sent = {k: v.data if isinstance(v, Serialize) else v for k, v in error_message(error).items()}  # the bytes
    kind, copy, _ = clean_exception(**sent)
    assert kind is RubricError and isinstance(copy, RubricError)
    assert copy.problems == error.problems and str(copy) == str(error)


# ------------------------------------------------------------------ through a real worker process


@dataclass(frozen=True)
class FakeCandidate:
    student_id: str


def rubric_error_task(candidate: FakeCandidate, settings: GradeSettings) -> dict:
    """Stands in for grade_submission: student `bad` meets a rubric that no longer loads."""
    with open(settings.out / f"{candidate.student_id}.attempts", "a") as f:
        f.write("x")
    if candidate.student_id == "bad":
        raise RubricError("OUT/rubric.yaml", [Problem("parts[0].items[0].check", 4, "unknown check kind `acc`")])
    return {"student_id": candidate.student_id, "total": 1.0, "max": 100, "flags": []}


class _Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")
        self.lock = threading.Lock()  # no pickler takes it (tblib's, installed by Dask, neither)


def unpicklable_task(candidate: FakeCandidate, settings: GradeSettings) -> dict:
    raise _Unpicklable(1, 2)


def test_rubric_error_in_a_worker_process_reaches_the_batch(tmp_path: Path) -> None:
    settings = GradeSettings(rubric_path=tmp_path / "absent.yaml", out=tmp_path)
    progress = Progress(total=1, durations=[])
    with pytest.raises(RubricError) as caught:
        run_local([FakeCandidate("bad")], settings, workers=1, progress=progress, tick=lambda: None,
                  task=rubric_error_task)
    assert caught.value.source == "OUT/rubric.yaml" and "unknown check kind `acc`" in str(caught.value)
    assert (tmp_path / "bad.attempts").read_text() == "x", "not retried as a dead worker"
    assert not (tmp_path / "grades").exists(), "no grader-crash grade"


def test_an_unpicklable_error_is_sent_as_text_not_as_a_dead_worker() -> None:
    with pytest.raises(RuntimeError, match=r"_Unpicklable: 1/2 \(sent from the worker as text"):
        in_worker(unpicklable_task, FakeCandidate("x"), None)  # type: ignore[arg-type]
    with pytest.raises(RubricError):  # a picklable one is raised as it is
        in_worker(rubric_error_task, FakeCandidate("bad"), GradeSettings(rubric_path=Path("r"), out=Path("/tmp")))


def test_grade_command_reports_a_worker_rubric_error_with_exit_2(tmp_path: Path, capsys, monkeypatch) -> None:
    """The real grade_submission in a real worker process: OUT/rubric.yaml is edited into an
    invalid rubric after the batch started, so the worker's own load fails. The CLI prints the
    rubric's problem and exits 2; no grade says the worker died."""
    import grader.batch as batch
    from grader.cli import main

    inc = tmp_path / "in"
    fx.good_zip(inc, "0556001")
    out = tmp_path / "out"
    real, real_drain, drains = batch.run_local, batch._drain, []

    def edit_then_run(todo, settings, **kw):  # the TA edits OUT/rubric.yaml mid-batch
        settings.rubric_path.write_text("parts: 3\n")
        return real(todo, settings, **kw)

    def counted_drain(items, *a, **kw):  # a dead worker would be drained again, alone
        drains.append([c.student_id for c in items])
        return real_drain(items, *a, **kw)

    monkeypatch.setattr(batch, "run_local", edit_then_run)
    monkeypatch.setattr(batch, "_drain", counted_drain)
    code = main(["grade", str(inc), "--lab", "lab1", "--mode", "saved", "--out", str(out), "--no-pdf",
                 "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "rubric.yaml" in err and "parts" in err and "died" not in err
    assert drains == [["0556001"]], "the worker's error was taken for a dead worker and retried"
    grades = [json.loads(p.read_text()) for p in (out / "grades").glob("*.json")] if (out / "grades").is_dir() else []
    assert not any("grader-crash" in (g.get("flags") or []) for g in grades)


class FutureLabError(GraderError):
    """A future subclass with a constructor of its own and no pickling code."""

    def __init__(self, lab: str, n: int) -> None:
        super().__init__(f"{lab}: {n} problems")
        self.lab, self.n = lab, n


def test_grader_error_subclasses_without_their_own_pickling_still_round_trip() -> None:
    copy = pickle.loads(_plain_dumps(FutureLabError("lab4a", 3)))
    assert (copy.lab, copy.n, str(copy)) == ("lab4a", 3, "lab4a: 3 problems")
