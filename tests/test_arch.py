"""Architecture from the model itself (issue 17): the probe's graph reading (grader/probe/rec_arch.py)
of residual blocks, plain blocks, SE gates and projection shortcuts, on in-process models; the
functional test (grader/verify/arch_eval.py) in-process and once through the sandbox; the probe's
teardown in a fresh interpreter and the host's reading of it (grader/verify/arch.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from test_probe import _run_script

from grader.execute import SandboxLimits, SandboxSpec
from grader.probe import rec_arch as A
from grader.verify import arch as H
from grader.verify import arch_eval as E

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "resnet"))
from archmodels import Block, Net  # noqa: E402

torch.set_num_threads(1)


def _read(model: torch.nn.Module) -> tuple[dict, dict]:
    torch.manual_seed(0)
    model.train()
    model(torch.randn(8, 3, 16, 16))  # running statistics that are not 0 and 1
    return A.analyze(model.eval(), (3, 16, 16))


def _blocks(rec: dict) -> dict[str, dict]:
    return {b["name"]: b for b in rec["blocks"]}


def test_a_resnet_has_identity_skips_and_projections_exactly_where_the_map_shrinks() -> None:
    rec, _ = _read(Net())
    b = _blocks(rec)
    assert list(b) == ["layer1.0", "layer2.0", "layer3.0"] and rec["graph"] == "fx"
    assert b["layer1.0"]["kind"] == "residual" and b["layer1.0"]["shortcut"] == "identity"
    assert not b["layer1.0"]["shrinks"] and b["layer2.0"]["shrinks"]
    assert b["layer2.0"]["projection"] == {"kernel": 1, "stride": 2, "bn": True}
    assert b["layer3.0"]["in_shape"] == [32, 8, 8] and b["layer3.0"]["out_shape"] == [64, 4, 4]
    assert b["layer1.0"]["zero"] == ["bn2.weight", "bn2.bias"]
    # stem + 2 convs per block + the FC: a ResNet-8; the projections are not counted
    assert rec["depth"] == 8
    assert rec["params"] == sum(p.numel() for p in Net().parameters())


def test_a_resnet_without_skips_has_plain_blocks() -> None:
    rec, _ = _read(Net(skip=False))
    assert [(b["kind"], b["shortcut"], b["residual"]) for b in rec["blocks"]] == [("plain", "none", False)] * 3


def test_an_se_block_with_its_sigmoid_gate_and_one_without() -> None:
    rec, _ = _read(Net(se="sigmoid"))
    gate = rec["blocks"][1]["gate"]
    assert rec["blocks"][1]["kind"] == "se" and rec["blocks"][1]["shortcut"] == "projection"
    assert gate["sigmoid"] is True and gate["pool"] == "AdaptiveAvgPool2d" and gate["activation"] == "relu"
    assert [f["module"] for f in gate["fc"]] == ["se.fc1", "se.fc2"] and gate["hidden"] == 8
    assert gate["position"] == "branch" and gate["force"] == {"weight": "se.fc2.weight", "bias": "se.fc2.bias"}
    rec, _ = _read(Net(se="none"))
    assert all(b["kind"] == "se" and b["gate"]["sigmoid"] is False for b in rec["blocks"])


def test_a_projection_where_the_map_keeps_its_size() -> None:
    rec, _ = _read(Net(wrong_proj=True))
    first = rec["blocks"][0]
    assert first["shortcut"] == "projection" and first["projection"]["stride"] == 1 and first["shrinks"] is False


class _ShapeTest(Block):
    """A block whose forward branches on shapes: fx cannot trace it, torch.export can."""

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        if x.shape[1] != out.shape[1]:
            return torch.relu(out + self.shortcut(x))
        return torch.relu(out + x)


def test_a_block_fx_cannot_trace_is_read_from_torch_export() -> None:
    net = Net()
    net.layer2 = torch.nn.Sequential(_ShapeTest(16, 32, 2))
    rec, _ = _read(net)
    b = _blocks(rec)["layer2.0"]
    assert b["graph"] == "export" and b["kind"] == "residual" and b["projection"]["stride"] == 2
    assert b["zero"] == ["bn2.weight", "bn2.bias"] and any("fx" in e for e in rec["graph_errors"])


def _job(rec: dict) -> dict:
    fmt = {"script": "torchscript", "trace": "torchscript", "export": "export"}
    return {"blocks": [{"id": b["files"]["block"][:-3], "files": b["files"],
                        "format": {p: fmt[k] for p, k in b["format"].items()}, "in_shape": b["in_shape"],
                        "zero": b["zero"], "force": (b["gate"] or {}).get("force")} for b in rec["blocks"]]}


@pytest.mark.parametrize("kw, skips, gates", [
    ({}, ["identity", "projection", "projection"], [None] * 3),
    ({"skip": False}, ["none"] * 3, [None] * 3),
    ({"se": "sigmoid"}, ["identity", "projection", "projection"], ["sigmoid"] * 3),
    ({"se": "none"}, ["identity", "projection", "projection"], ["no-sigmoid"] * 3),
])
def test_the_functional_test_in_process(tmp_path: Path, kw: dict, skips: list, gates: list) -> None:
    rec, kept = _read(Net(**kw))
    A.capture(str(tmp_path), "a0", rec, kept, 1 << 24)
    result = E.test_blocks(_job(rec), str(tmp_path))
    got = [H.verdict(b, e) for b, e in zip(rec["blocks"], result["blocks"])]
    assert [v["skip"] for v in got] == skips and [v["gate"] for v in got] == gates, got


_TRAIN = """
import torch, torch.nn as nn
sys.path.insert(0, {fixtures!r})
from archmodels import Net
torch.set_num_threads(1)
torch.manual_seed(0)
x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
nets = {{"resnet": Net(), "plain": Net(skip=False), "se": Net(se="none")}}
for net in nets.values():
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
del nets["plain"]  # gone at the end: read from the weights the probe kept
print(sys.modules["_dllab_probe"].export_architecture(sys.argv[1] + "/verify"))
"""


@pytest.fixture(scope="module")
def teardown(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("arch")
    _run_script(root, _TRAIN.format(fixtures=str(Path(__file__).parent / "fixtures" / "resnet")),
                caps={"architecture": 1})
    return root


def test_the_teardown_reads_each_trained_model_and_the_host_proves_it(teardown: Path) -> None:
    models = H.measure(run_dir=teardown, probe_dir=teardown, spec=SandboxSpec(sandbox="none"),
                       limits=SandboxLimits(), timeout_s=120)
    assert isinstance(models, list) and len(models) == 3, models
    resnet, plain, se = models
    assert [b["kind"] for b in plain["blocks"]] == ["plain"] * 3
    assert [f["skip"] for f in plain["functional"].values()] == ["none"] * 3
    assert [f["skip"] for f in resnet["functional"].values()] == ["identity", "projection", "projection"]
    assert [f["gate"] for f in se["functional"].values()] == ["no-sigmoid"] * 3
    assert "made it give a constant" in plain["functional"]["layer1.0"]["how"]
    assert resnet["depth"] == 8 and resnet["optimizer"] is not None


def test_the_host_refuses_a_malformed_record_and_odd_file_names(teardown: Path, tmp_path: Path) -> None:
    doc = json.loads((teardown / "verify" / "arch.json").read_text())
    doc["models"][0]["blocks"][0]["files"]["block"] = "../../etc/passwd"
    doc["models"][0]["blocks"][1]["kind"] = "wormhole"
    (tmp_path / "verify").mkdir()
    (tmp_path / "verify" / "arch.json").write_text(json.dumps(doc))
    models = H.read_arch(tmp_path / "verify" / "arch.json")
    assert models[0]["blocks"][0]["files"] == {} and models[0]["blocks"][1]["kind"] is None
    (tmp_path / "verify" / "arch.json").write_text("[1, 2]")
    assert "malformed" in H.measure(run_dir=tmp_path, probe_dir=tmp_path, spec=SandboxSpec(sandbox="none"),
                                    limits=SandboxLimits())["reason"]


def test_the_functional_test_runs_in_the_sandbox(teardown: Path) -> None:
    from grader import sandbox

    try:
        sandbox.check_bwrap()
    except Exception as exc:  # noqa: BLE001 - pragma: no cover, depends on the host
        pytest.skip(f"bubblewrap unusable here: {exc}")
    for p in (teardown, teardown / "verify", *(teardown / "verify").iterdir()):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    models = H.measure(run_dir=teardown, probe_dir=teardown, spec=SandboxSpec(sandbox="bwrap"),
                       limits=SandboxLimits(), timeout_s=120)
    assert [f["skip"] for f in models[1]["functional"].values()] == ["none"] * 3, models[1]
    assert "functional_reason" not in models[0]


# ---------------------------------------------------------------- the check kind


def _arch(tmp_path: Path, net: torch.nn.Module, tested: bool = True) -> dict:
    """Run.architecture of `net` as the host builds it: read, captured, tested in-process."""
    rec, kept = _read(net)
    A.capture(str(tmp_path), "a0", rec, kept, 1 << 24)
    doc = tmp_path / "verify"
    doc.mkdir(exist_ok=True)
    (doc / "arch.json").write_text(json.dumps(A.clean({"version": 1, "models": [{"optimizer": 1, **rec}]})))
    model = H.read_arch(doc / "arch.json")[0]
    if tested:
        result = E.test_blocks(_job(rec), str(tmp_path))
        model["functional"] = {b["name"]: H.verdict(b, e) for b, e in zip(model["blocks"], result["blocks"])}
    else:
        model["functional"], model["functional_reason"] = {}, "no time was left"
    return H.for_run({"architecture": [model]}, 1)


def _check(arch: dict, **params):
    from grader.checks.base import CheckContext
    from grader.checks.resarch import residual_architecture

    ev = {"path": "resnet.ipynb", "runs": [{"name": "run 1", "status": "trained", "cells": [7], "architecture": arch}]}
    return residual_architecture(CheckContext(student_id="s", part_id="resnet", dataset="cifar10", evidence=[ev]),
                                 {"min_blocks": 3, **params})


def test_the_check_passes_a_resnet_and_fails_one_without_skips(tmp_path: Path) -> None:
    out = _check(_arch(tmp_path, Net()), max_params=100000, max_depth=14)
    assert out.status == "pass" and "confirmed by the grader's functional test" in out.message and not out.flags
    out = _check(_arch(tmp_path, Net(skip=False)))
    assert out.status == "fail" and "3 of 3 blocks have no skip" in out.message
    assert "layer1.0, layer2.0, layer3.0" in out.message and "made it give a constant" in out.message
    assert "In[7]" in out.message


def test_graph_only_is_said_and_flagged(tmp_path: Path) -> None:
    out = _check(_arch(tmp_path, Net(skip=False), tested=False))
    assert out.status == "fail" and "the functional test did not run (no time was left)" in out.message
    out = _check(_arch(tmp_path, Net(), tested=False))
    assert out.status == "pass" and out.flags == ("unconfirmed-evidence",)


def test_a_projection_where_the_map_keeps_its_size_is_partial(tmp_path: Path) -> None:
    out = _check(_arch(tmp_path, Net(wrong_proj=True)))
    assert out.status == "partial" and out.fraction == 0.5
    assert "layer1.0 keeps its map (16x16x16 -> 16x16x16) but has a projection shortcut" in out.message
    assert _check(_arch(tmp_path, Net(wrong_proj=True)), projection=False).status == "pass"


def test_se_needs_its_sigmoid(tmp_path: Path) -> None:
    assert _check(_arch(tmp_path, Net(se="sigmoid")), kind="se", se_every_block=True).status == "pass"
    out = _check(_arch(tmp_path, Net(se="none")), kind="se")
    assert out.status == "fail" and "has no sigmoid" in out.message and "scaled the features by" in out.message
    out = _check(_arch(tmp_path, Net()), kind="se")
    assert out.status == "fail" and "No SE block was found" in out.message


def test_nothing_read_goes_to_a_ta() -> None:
    assert _check({"reason": "its model's architecture was not captured"}).status == "manual"
    assert _check({"blocks": [{"name": "b", "kind": None}], "functional": {}}).status == "manual"


def test_the_run_comparison_factor_se() -> None:
    from grader.checks.runcompare import _signature

    se = {"blocks": [{"name": "layer1.0", "gate": {"sigmoid": True}}]}
    assert _signature({"architecture": se})["se"] == "SE-ResNet"
    assert _signature({"architecture": {"blocks": [{"name": "layer1.0", "gate": None}]}})["se"] == "ResNet"
    assert _signature({})["se"] is None


def test_run_records_carry_the_architecture_of_their_model() -> None:
    from grader.evidence_model import validate
    from grader.runrecords import _architecture

    ev = {"architecture": [{"optimizer": 3, "blocks": [], "depth": 8}]}
    assert _architecture(ev, 3) == {"blocks": [], "depth": 8}
    assert "not captured" in _architecture(ev, 4)["reason"]
    assert _architecture({"architecture": None}, 3) == {}
    assert validate({"path": "a.ipynb", "mode": "execute", "status": "ok", **ev})["architecture"] == ev["architecture"]


def test_the_references_read_as_resnet_8_and_se_resnet_8() -> None:
    # the reference's SE indexes its gate (w[:, :, None, None]) and holds SE as a module of its own
    from labs.resnet.reference.common import ResNet

    plain, _ = A.analyze(ResNet((16, 32, 64), False, 4).eval(), (3, 32, 32))
    se, _ = A.analyze(ResNet((16, 32, 64), True, 4).eval(), (3, 32, 32))
    assert [b["shortcut"] for b in plain["blocks"]] == ["identity", "projection", "projection"]
    assert [(b["kind"], b["gate"]["sigmoid"], b["gate"]["position"]) for b in se["blocks"]] == [("se", True, "branch")] * 3
    assert plain["depth"] == se["depth"] == 8 and (plain["params"], se["params"]) == (78042, 80870)
