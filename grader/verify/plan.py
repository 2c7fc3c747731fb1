"""Where the evaluated test split is on this host: the lab's read-only dataset folders only.

The kernel names the dataset its model was evaluated on by sandbox paths; `plan` maps them onto
the lab's mounts. Data the student's code could have changed (anything under /tmp/work) is never
used, and the host reads the split itself (grader.verify.data): labels never enter the
evaluator's sandbox.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from grader import sandbox
from grader.dataset_id import class_index
from grader.datasets import DatasetSpec, registry
from grader.verify.spec import NotVerified


def _rebuilt() -> str:
    """"A, B and C": the datasets whose test split the grader rebuilds, those torchvision reads first."""
    specs = sorted(registry.verified(), key=lambda s: bool(s.verifier and s.verifier.split_dirs))
    titles = [s.title for s in specs]
    return ", ".join(titles[:-1]) + " and " + titles[-1] if len(titles) > 1 else "".join(titles)


def _mount_of(path: str, mounts: Mapping[str, str]) -> tuple[str, str] | None:
    """(sandbox mount point, host folder) of the read-only mount holding `path`, if any."""
    p = PurePosixPath(os.path.normpath(path))
    best = None
    for inside, host in mounts.items():
        target = PurePosixPath(inside if inside.startswith("/") else os.path.normpath(f"{sandbox.CWD}/{inside}"))
        if (p == target or target in p.parents) and (best is None or len(str(target)) > len(best[0])):
            best = (str(target), host)
    return best


def _host_path(path: str, mounts: Mapping[str, str]) -> Path | None:
    found = _mount_of(path, mounts)
    if found is None:
        return None
    rest = PurePosixPath(os.path.normpath(path)).relative_to(found[0])
    return Path(found[1]) / rest


def plan(job_spec: Mapping[str, Any], *, mounts: Mapping[str, str], dataset_hint: str | None,
         workdir: str = "") -> dict[str, Any]:
    """The evaluation's job: which dataset, its host folder (`root`: the dataset's own folder
    for one torchvision reads, CIFAR-10 or MNIST; the split folder for one read as files, Food-11), the transform, the model-output -> class mapping and the
    sample to cross-check. `mounts` are the lab's; `workdir` is the notebook's folder, where
    the run had them again as its `./data` (grader.sandbox.place_mounts): data read there is the
    lab's too."""
    placed = sandbox.place_mounts(mounts, workdir=workdir, submission=None).mounts
    ds = job_spec["dataset"]
    cls = ds["class"]
    job: dict[str, Any] = {"steps": job_spec["steps"],
                           "flatten_input": bool(job_spec["model"].get("flatten_input")),
                           "sample_keys": job_spec["sample"]["keys"],
                           "sample_preds": job_spec["sample"]["preds"]}
    by_class = registry.by_torchvision_class(cls)
    as_files = registry.read_as_files(dataset_hint)
    if by_class is not None:
        if ds["train"] is not False:
            raise NotVerified(f"the model was evaluated on {cls}'s training split, not its test split")
        if ds["root"] is None:
            raise NotVerified(f"the {cls} test split has no root folder the grader can find")
        where = f"{ds['root'].rstrip('/')}/{by_class.folder}"
        host = _host_path(where, placed)
        if host is None or not host.is_dir():
            raise NotVerified(f"the test data was read from {where}, which is not one of the lab's "
                              f"read-only dataset folders")
        job.update(kind=by_class.name, root=str(host), split="test", mapping=list(range(len(by_class.classes))))
    elif (cls == "ImageFolder" or ds.get("custom")) and as_files is not None:
        job.update(_as_files(as_files, ds, placed, sample=job_spec["sample"]))
    elif ds.get("custom"):
        raise NotVerified(f"the test data is read by the notebook's own {cls} class"
                          + (f" from {ds['files_dir']}" if ds.get("files_dir") else "")
                          + (f" ({dataset_hint})" if dataset_hint else "")
                          + f"; the grader rebuilds only {_rebuilt()} test splits")
    else:
        article = "an" if cls[:1].upper() in "AEIOU" else "a"
        raise NotVerified(f"the test data is {article} {cls}"
                          + (f" of {dataset_hint}" if dataset_hint else "")
                          + f"; the grader rebuilds only {_rebuilt()} test splits")
    if ds.get("subset"):
        job["note"] = "the notebook evaluated a subset; the whole test split was used"
    return job


def _as_files(spec: DatasetSpec, ds: Mapping[str, Any], mounts: Mapping[str, str], *,
              sample: Mapping[str, Any]) -> dict[str, Any]:
    """The job for a held-out split of a dataset read as image files (Food-11's evaluation or
    validation split), read from its read-only mount, for an ImageFolder or a notebook's own
    dataset class over its image files."""
    verifier = spec.verifier
    assert verifier is not None, "registry.read_as_files gives verified datasets"
    custom = bool(ds.get("custom"))
    if ds.get("default_loader") is False:
        raise NotVerified("the test ImageFolder uses its own image loader, which the grader cannot rebuild")
    split = next((verifier.split_dirs[PurePosixPath(p).name.lower()] for p in (ds.get("files_dir"), ds.get("root"))
                  if p and PurePosixPath(p).name.lower() in verifier.split_dirs), None)
    if split is None:
        what = f"the notebook's own {ds['class']} class" if custom else "the evaluated ImageFolder"
        where = ds.get("files_dir") or ds.get("root") or "several folders"
        held_out = " or ".join(verifier.split_names)
        raise NotVerified(f"{what} reads {where}, which is not {spec.title}'s {held_out} split")
    mounted = [(inside, host) for inside, host in mounts.items() if (Path(host) / split).is_dir()
               and (Path(host) / spec.train_split).is_dir()]
    if ds.get("files_dir"):  # prefer the mount the images really came from
        mounted.sort(key=lambda m: _mount_of(ds["files_dir"], {m[0]: m[1]}) is None)
    if not mounted:
        raise NotVerified(f"{spec.title} is not mounted, so the test split cannot be read independently")
    host = mounted[0][1]
    classes = spec.classes
    if custom:  # its labels are whatever its __getitem__ returns: read them, not its names
        mapping = _label_mapping(spec, sample, ds["class"], len(classes))
    else:
        mapping = []
        for name in ds["classes"]:
            index = class_index(name, classes)
            if index is None:
                raise NotVerified(f"the test dataset's class {name!r} is not a {spec.title} class")
            mapping.append(index)
    if len(mapping) != len(classes) or sorted(mapping) != list(range(len(classes))):
        raise NotVerified(f"the test dataset has {len(mapping)} classes that do not map one to one "
                          f"onto {spec.title}'s {len(classes)}")
    job = {"kind": spec.name, "root": str(Path(host) / split), "split": verifier.split_names[split],
           "mapping": mapping}
    if custom:  # nothing but the cross-check shows that its images were read as the evaluator reads them
        job["require_sample"] = True
    return job


def _label_mapping(spec: DatasetSpec, sample: Mapping[str, Any], cls: str, n_classes: int) -> list[int]:
    """Model output -> the dataset's class, from the labels a notebook's own dataset gave the
    sampled files (Food-11's `<class>_<n>.jpg`): the identity when every label is its file's
    class, else the one-to-one map the labels show for all classes."""
    pattern = spec.file_pattern
    if pattern is None or not pattern.groups:
        raise NotVerified(f"{spec.title}'s file names do not carry the class, so the labels of the notebook's "
                          f"own {cls} class cannot be matched with them")
    pairs: dict[int, int] = {}
    for key, label in zip(sample["keys"], sample.get("labels") or []):
        m = pattern.match(key) if isinstance(key, str) else None
        if m is None or label is None:
            continue
        if pairs.setdefault(label, int(m.group(1))) != int(m.group(1)):
            raise NotVerified(f"the notebook's own {cls} class gives label {label} to images of two "
                              f"{spec.title} classes, so its labels cannot be matched with {spec.title}'s")
    if not pairs:
        raise NotVerified(f"the labels of the notebook's own {cls} class could not be matched with "
                          f"{spec.title}'s file names")
    if all(label == c for label, c in pairs.items()):
        return list(range(n_classes))
    if sorted(pairs) == list(range(n_classes)) and sorted(pairs.values()) == list(range(n_classes)):
        return [pairs[label] for label in range(n_classes)]
    raise NotVerified(f"the notebook's own {cls} class numbers {spec.title}'s classes differently, and the "
                      f"sampled test images do not show the label of every class")
