"""Where a lab's datasets appear inside the sandbox (grader.pipeline._mounts)."""

from __future__ import annotations

from types import SimpleNamespace

from grader.pipeline import _mounts


def test_a_dataset_copy_named_otherwise_is_mounted_under_its_usual_folder_name(tmp_path):
    """A Kaggle download kept in dogs-vs-cats/ still appears where the handout's code looks:
    /tmp/datasets-nctu/cats-vs-dogs and ./data/cats-vs-dogs."""
    host = tmp_path / "dogs-vs-cats"
    host.mkdir()
    rubric = SimpleNamespace(datasets={"catsdogs": SimpleNamespace(mount=["/tmp/datasets-nctu"])})
    mounts = _mounts(rubric, {"catsdogs": str(host)})
    inside = sorted(m.relative or m.inside for m in mounts)
    assert inside == ["/tmp/datasets-nctu/cats-vs-dogs", "data/cats-vs-dogs"]
    assert {m.host for m in mounts} == {str(host)}
