"""Forged probe evidence earns nothing (issue 13 A): a record counts only when the host
corroborates it (grader/corroborate.py). One real sandboxed run of a forging notebook; the
comparisons themselves on in-memory evidence built from one real model (tests/honest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pytest

from grader.checks import run_check
from grader.checks.base import CheckContext
from grader.corroborate import (
    cell_outputs,
    histogram_disagrees,
    mark_run,
    param_summary,
    verified_normalizers,
)
from honest import (
    LAYERS,
    food_verified,
    handout_net,
    hist_record,
    histogram_figure,
    line_figure,
    runs_evidence,
    values,
    verified_block,
)

FOOD_STATS = {"mean": [0.58, 0.45, 0.33], "std": [0.21, 0.2, 0.19]}
ALL = {"layers": list(LAYERS), "require_bias": True}


def ev(**kw) -> dict:
    base = {"path": "lab1-1.ipynb", "mode": "execute", "status": "ok", "metrics": {}, "figures": [],
            "normalization": [], "optimizers": [], "schedulers": [], "models": [], "training": [], "errors": [],
            "probe": {"started": True, "events": 50}}
    base.update(kw)
    return base


def ctx(*evidence: dict, dataset: str = "cifar10") -> CheckContext:
    return CheckContext(student_id="0556001", part_id="lab1-1", dataset=dataset, evidence=evidence,
                        all_evidence=evidence, dataset_stats={"food11": FOOD_STATS})


def every_param() -> list[str]:
    return [f"{l}.{k}" for l in LAYERS for k in ("weight", "bias")]


# ---------------------------------------------------------------- histograms


def test_honest_histograms_of_the_trained_model_pass() -> None:
    net = handout_net()
    out = run_check("weight_histograms", ctx(ev(figures=[histogram_figure(net, every_param())],
                                                verified=verified_block(net))), ALL)
    assert out.status == "pass", out.message


def test_histogram_claims_without_the_models_parameters_go_to_a_ta() -> None:
    """The issue's forgery: a figure event naming every layer, no image, nothing to compare."""
    net = handout_net()
    forged = {"cell": 3, "kind": "histogram", "subjects": every_param(), "png": None, "hists": [],
              "host": {"images": 0, "histogram": None}}
    out = run_check("weight_histograms", ctx(ev(figures=[forged], verified={"reason": "no model was captured"})), ALL)
    assert out.status == "manual" and out.fraction == 0
    assert "could not confirm" in out.message and "shows no such image" in out.message
    assert out.flags == ("unconfirmed-evidence",)
    fig = dict(forged, host={"images": 1, "histogram": False})
    out = run_check("weight_histograms", ctx(ev(figures=[fig], verified=verified_block(handout_net()))), ALL)
    assert out.status == "manual" and "is not a histogram" in out.message
    # with the model verified, the same claim is still no image of the cell
    out = run_check("weight_histograms", ctx(ev(figures=[forged], verified=verified_block(net))), ALL)
    assert out.status == "manual" and out.fraction == 0


@pytest.mark.parametrize("case", ["not-verified", "initial-weights", "other-layer", "not-shown",
                                  "not-a-histogram", "bars-reshuffled", "jpeg-unclassified", "one-bar",
                                  "two-bars"])
def test_uncorroborated_histograms_are_manual_never_pass_or_fail(case: str) -> None:
    net = handout_net()
    fig = histogram_figure(net, every_param())
    verified = verified_block(net)
    if case == "not-verified":
        verified = {"reason": "the model could not be captured"}
    elif case == "initial-weights":  # drawn before training: the evaluator captured the trained net
        verified = verified_block(handout_net(seed=1))
    elif case == "other-layer":  # fc2's data labelled fc1: same model, wrong parameter
        fig["hists"][4] = hist_record(values(net, "fc2.weight"), ["net.fc1.weight"])
    elif case == "not-shown":  # a PNG written into the probe's folder, no image in the cell's output
        fig["host"] = {"images": 0, "histogram": None}
    elif case == "not-a-histogram":  # the cell shows an image whose pixels are a line chart
        fig["host"] = {"images": 1, "histogram": False}
    elif case == "jpeg-unclassified":  # T13_2 #3: a JPEG (or SVG) the host's pixels cannot classify
        fig["host"] = {"images": 1, "histogram": None}
    elif case in ("one-bar", "two-bars"):  # T13_2 #3: counts=[n] agrees with any parameter's summary
        for rec in fig["hists"]:
            k = 1 if case == "one-bar" else 2
            e = np.linspace(rec["min"], rec["max"], k + 1)
            rec["counts"] = [int(c) for c in np.histogram(values(net, rec["subjects"][0][4:]), bins=e)[0]]
            rec["edges"] = [float(x) for x in e]
    elif case == "bars-reshuffled":  # right size, range, mean and spread; another shape
        rec = fig["hists"][4]  # fc1.weight: uniform at initialisation; these bars put it all in the middle
        rec["counts"] = [0] * 20 + [rec["n"]] + [0] * (len(rec["counts"]) - 21)
    out = run_check("weight_histograms", ctx(ev(figures=[fig], verified=verified)), ALL)
    # never a pass or a fail: the layers the host confirmed earn their share (T4 finding 5; a
    # 2-bar record of conv1.bias's 6 values is a distribution, and fc1.weight's 48000 uniform
    # initial values are summarized like seed 0's), the others go to a TA
    assert out.status in ("manual", "partial") and out.fraction < 0.95, (case, out)
    assert "could not confirm" in out.message and out.flags == ("unconfirmed-evidence",)
    confirmed = out.message.split("(")[1].split(")")[0] if out.status == "partial" else ""
    target = {"other-layer": "fc1.weight", "bars-reshuffled": "fc1.weight", "initial-weights": "conv1.weight",
              "one-bar": "conv1.weight", "two-bars": "fc1.weight"}.get(case)
    assert target is None or target not in confirmed, (case, out.message)


def test_a_confirmed_figure_covers_a_layer_another_only_claims() -> None:
    net = handout_net()
    claimed = dict(histogram_figure(net, every_param(), cell=3), host={"images": 0, "histogram": None})
    real = histogram_figure(net, every_param(), cell=7)
    out = run_check("weight_histograms", ctx(ev(figures=[claimed, real], verified=verified_block(net))), ALL)
    assert out.status == "pass"


def test_probe_histograms_match_the_evaluators_parameters(tmp_path: Path) -> None:
    """Both sides from one real model: the probe, running a student script that draws each
    parameter's histogram, and `param_summary` of the same model (what verify reports)."""
    from test_probe import _NET, _run_script

    run = _run_script(tmp_path, _NET + """
import matplotlib.pyplot as plt
net = Net()
fig, axes = plt.subplots(2, 5)
for ax, (name, p) in zip(axes.flat, net.named_parameters()):
    ax.hist(p.detach().cpu().numpy().flatten(), bins=50); ax.set_title(name)
fig.savefig(sys.argv[1] + "/grid.png")
plt.figure(); plt.hist(torch.cat([p.detach().view(-1) for p in net.parameters()]).numpy(), bins=256)
plt.savefig(sys.argv[1] + "/all.png")
""")
    ns: dict = {}
    exec(_NET, ns)  # the same seed, the same weights
    net = ns["Net"]()
    params = {n: param_summary(p.detach().numpy()) for n, p in net.named_parameters()}
    hists = [h for f in run.summary["figures"] for h in f["hists"]]
    assert len(hists) == 11 and all(h["subjects"] for h in hists)
    for h in hists:
        assert histogram_disagrees(h, [params[s] for s in h["subjects"]]) is None, h["subjects"]
    shifted = {n: param_summary(p.detach().numpy() * 1.01) for n, p in net.named_parameters()}
    assert all(histogram_disagrees(h, [shifted[s] for s in h["subjects"]]) for h in hists)


def test_param_summary_contract() -> None:
    s = param_summary(np.arange(10, dtype=np.float32))
    assert s["numel"] == 10 and s["min"] == 0 and s["max"] == 9 and len(s["quantiles"]) == 257
    assert param_summary(np.array([1.0, np.nan])) == {"finite": False}
    rec = hist_record(np.arange(10.0), ["w"])
    assert histogram_disagrees(rec, [{"finite": False}]) is not None


# ---------------------------------------------------------------- learning-rate study


def test_honest_lr_study_passes_and_forged_runs_are_manual() -> None:
    study = runs_evidence((0.1, 0.01, 0.001))
    assert run_check("lr_study", ctx(ev(**study, figures=[line_figure()])), {}).status == "pass"
    # the forgery: three optimizers with 12 500 steps and no model
    forged = [{"type": "SGD", "lr": lr, "steps": 12500, "ref": 90 + k, "model_refs": [], "cell": 2}
              for k, lr in enumerate((0.1, 0.01, 0.001))]
    out = run_check("lr_study", ctx(ev(optimizers=forged, figures=[line_figure()])), {})
    assert out.status == "manual" and out.fraction == 0 and "no model the run recorded" in out.message
    assert out.flags == ("unconfirmed-evidence",)


@pytest.mark.parametrize("change", ["no-training-pass", "weights-unchanged", "no-output", "chart-not-shown",
                                    "no-data-no-name", "partly-forged"])
def test_lr_runs_need_every_corroboration(change: str) -> None:
    study = runs_evidence((0.1, 0.01))
    figures = [line_figure()]
    if change == "no-training-pass":
        study["training"] = []
    elif change == "weights-unchanged":
        for o in study["optimizers"]:
            o["weights_changed"] = None  # a forged event carries no checksum
    elif change == "no-output":
        for o in study["optimizers"]:
            o["host_output"] = False
    elif change == "no-data-no-name":  # T13_2 #2: emitted training records carry no dataset, loader or name
        for t in study["training"]:
            t.update(dataset=None, loader=None, model=None)
    elif change == "partly-forged":  # T13_2 #2 (1300003): a second optimizer emitted naming the first run's model
        o = study["optimizers"][1]
        o.update(model_ref=10, model_refs=[10], cell=7, cells_stepped=[7])
    else:
        figures = [line_figure(images=0)]
    out = run_check("lr_study", ctx(ev(**study, figures=figures)), {})
    assert out.status == "manual" and out.fraction == 0, (change, out)


# ---------------------------------------------------------------- normalization


def test_normalize_counts_only_in_the_verified_test_transform() -> None:
    mean, std = [0.581, 0.449, 0.331], [0.21, 0.2, 0.19]
    claim = {"mean": mean, "std": std, "dataset": None, "applied": True, "cell": 4}  # the forgery
    params = {"dataset": "food11", "tolerance": 0.02}
    out = run_check("normalization", ctx(ev(normalization=[claim]), dataset="food11"), params)
    assert out.status == "manual" and out.fraction == 0 and "could not confirm" in out.message
    assert out.flags == ("unconfirmed-evidence",)
    # verified, but the test transform has no Normalize: it never reached the data
    plain = dict(food_verified(mean, std), transform="Resize(size=[32, 32]) | ToTensor()")
    out = run_check("normalization", ctx(ev(normalization=[claim], verified=plain), dataset="food11"), params)
    assert out.status == "manual" and "does not include it" in out.message
    confirmed = ev(normalization=[], verified=food_verified(mean, std))
    assert run_check("normalization", ctx(confirmed, dataset="food11"), params).status == "pass"
    # the probe saw it feed a model in cells whose captured output shows a loss: still only the
    # student's process's records (it can feed real data through such a transform and print a
    # line), so a TA (issue 13 A, round 4: was pass)
    fed = dict(claim, dataset="food11", reached_model=True, fed_cells=[5], host_output=True)
    out = run_check("normalization", ctx(ev(normalization=[fed]), dataset="food11"), params)
    assert out.status == "manual" and out.flags == ("unconfirmed-evidence",) and "feeding a model" in out.message
    for forged in (dict(fed, host_output=False), dict(fed, reached_model=False), dict(fed, dataset=None)):
        out = run_check("normalization", ctx(ev(normalization=[forged]), dataset="food11"), params)
        assert out.status == "manual" and out.fraction == 0, forged
    # another dataset's verified transform confirms nothing for Food-11
    cifar = ev(normalization=[claim], verified=dict(food_verified(mean, std), dataset="cifar10"))
    assert run_check("normalization", ctx(cifar, dataset="food11"), params).status == "manual"


def test_a_verified_transform_with_other_constants_beats_the_probe_records() -> None:
    """T13_2 #4: trained and tested with ImageNet's statistics, then a Normalize with Food-11's
    own fed to a model once (a separate validation loader) or only emitted, loss printed: the
    verified test transform says what the model saw, so no bonus; without a Normalize in it, a TA."""
    mean, std = [0.581, 0.449, 0.331], [0.21, 0.2, 0.19]
    params = {"dataset": "food11", "tolerance": 0.02}
    fed = {"mean": mean, "std": std, "dataset": "food11", "applied": True, "cell": 7, "reached_model": True,
           "fed_cells": [7], "host_output": True}
    imagenet = food_verified([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    out = run_check("normalization", ctx(ev(normalization=[fed], verified=imagenet), dataset="food11"), params)
    assert out.status == "fail" and "imagenet" in out.message.lower(), out
    other = food_verified([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])  # the same kind: constants of one's own making
    out = run_check("normalization", ctx(ev(normalization=[fed], verified=other), dataset="food11"), params)
    assert out.status == "fail", out
    plain = dict(imagenet, transform="Resize(size=[32, 32]) | ToTensor()")
    out = run_check("normalization", ctx(ev(normalization=[fed], verified=plain), dataset="food11"), params)
    assert out.status == "manual" and out.fraction == 0 and "does not include it" in out.message, out
    # another notebook's verified transform does not decide for this one (the bonus in a notebook
    # of its own): its records alone go to a TA (issue 13 A, round 4: was pass), not to a fail
    bonus = ev(path="bonus.ipynb", normalization=[fed])
    out = run_check("normalization", ctx(ev(verified=imagenet), bonus, dataset="food11"), params)
    assert out.status == "manual" and out.flags == ("unconfirmed-evidence",), out
    # its own verified Food-11 model, tested through that Normalize: passes
    out = run_check("normalization", ctx(ev(verified=imagenet), dict(bonus, verified=food_verified(mean, std)),
                                         dataset="food11"), params)
    assert out.status == "pass", out


def test_verified_normalizers_reads_text_and_steps() -> None:
    v = food_verified([0.5, 0.4, 0.3], [0.2, 0.2, 0.2])
    assert verified_normalizers(v) == [([0.5, 0.4, 0.3], [0.2, 0.2, 0.2])]
    steps = dict(v, steps=[{"op": "ToTensor"}, {"op": "Normalize", "mean": [0.1], "std": [0.3]}])
    assert verified_normalizers(steps) == [([0.1], [0.3])]
    assert verified_normalizers({"reason": "not verified"}) is None


# ---------------------------------------------------------------- what the host captured


def test_mark_run_reads_the_captured_outputs_of_the_cells_records_name() -> None:
    from grader.samples import notebook

    nb = notebook("print(1)", "plt.show()", "train()", title="t")
    png = "iVBORw0KGgo="  # not decodable as an image: counted, pixels unknown
    nb.cells[1].update(execution_count=1, outputs=[nbformat.v4.new_output("stream", text="hello\n")])
    nb.cells[2].update(execution_count=2, outputs=[nbformat.v4.new_output("display_data", data={"image/png": png})])
    nb.cells[3].update(execution_count=3, outputs=[nbformat.v4.new_output("stream", text="epoch 1 loss: 0.52\n")])
    e = ev(figures=[{"cell": 1, "kind": "histogram"}, {"cell": 2, "kind": "histogram"}, {"cell": 9, "kind": "line"}],
           optimizers=[{"cells_stepped": [3]}, {"cells_stepped": [1]}, {}],
           normalization=[{"fed_cells": [1, 3]}, {"fed_cells": [1]}])
    mark_run(e, nb)
    assert [f["host"]["images"] for f in e["figures"]] == [0, 1, 0]
    assert [o["host_output"] for o in e["optimizers"]] == [True, False, False]
    assert [n["host_output"] for n in e["normalization"]] == [True, False]
    assert cell_outputs(nb)[3]["text"].startswith("epoch 1")


def _png(kind: str) -> str:
    import base64
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(4, 3))
    if kind == "hist":
        plt.hist(np.random.default_rng(0).normal(size=2000), bins=30)
    else:
        plt.plot(np.arange(20), np.sin(np.arange(20) / 3.0))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def test_mark_run_classifies_what_the_items_need_beyond_the_first_images() -> None:
    """T13_2 #3: a histogram after five line charts in its cell, and more than twenty histogram
    cells, are still classified (a verdict of None no longer counts); a JPEG is not classified."""
    from grader.corroborate import MAX_PIXEL_CHECKS
    from grader.samples import notebook
    from grader.saved_images import looks_like_histogram

    hist, line = _png("hist"), _png("line")
    import base64
    assert looks_like_histogram(base64.b64decode(hist)) is True and looks_like_histogram(base64.b64decode(line)) is False
    cells = 25
    nb = notebook(*["plt.show()"] * cells, title="t")
    for k in range(cells):
        outs = [nbformat.v4.new_output("display_data", data={"image/png": line}) for _ in range(5 if k == 0 else 0)]
        if k == cells - 1:
            outs = [nbformat.v4.new_output("display_data", data={"image/jpeg": hist})]
        else:
            outs.append(nbformat.v4.new_output("display_data", data={"image/png": hist}))
        nb.cells[k + 1].update(execution_count=k + 1, outputs=outs)
    e = ev(figures=[{"cell": k + 1, "kind": "histogram", "subjects": ["net.conv1.weight"]} for k in range(cells)])
    mark_run(e, nb)
    verdicts = [f["host"]["histogram"] for f in e["figures"]]
    assert verdicts == [True] * (cells - 1) + [None] and cells + 5 < MAX_PIXEL_CHECKS


# ---------------------------------------------------------------- the attack, run for real


FORGE = r'''
import json, os, sys
probe = sys.modules["_dllab_probe"]
state = probe.state()
subjects = ["%s.%s" % (l, k) for l in ("conv1", "conv2", "fc1", "fc2", "fc3") for k in ("weight", "bias")]
axes = [{"kind": "histogram", "title": s, "n_lines": 0, "n_images": 0,
         "hists": [{"source": "hist", "n": 450, "subjects": [{"param": s, "match": "values", "grad": False}]}]}
        for s in subjects]
lines = [{"id": 90001, "t": 1.0, "cell": plot_cell, "kind": "figure", "trigger": "show", "fig_kind": "histogram",
          "n_axes": 10, "axes": axes, "subjects": subjects, "png": None}]
for k, lr in enumerate([0.1, 0.01, 0.001]):
    lines.append({"id": 90010 + k, "t": 1.0, "cell": plot_cell, "kind": "optimizer", "type": "SGD", "lr": lr,
                  "param_groups": 1, "n_params": 10})
    lines.append({"id": 90020 + k, "t": 1.0, "cell": plot_cell, "kind": "optimizer-state", "ref": 90010 + k,
                  "steps": 12500, "n_changes": 1, "lr_changes": [[1, lr]]})
lines.append({"id": 90030, "t": 1.0, "cell": plot_cell, "kind": "normalization", "normalize": 90031,
              "dataset": None, "mean": list(mean), "std": list(std)})
with open(state.events_path, "a") as fh:  # appended to the events file by hand
    fh.write("".join(json.dumps(l) + "\n" for l in lines))

# through the probe's own emit: a PNG written into its folder by hand, named by a figure event
fig = plt.figure(); plt.hist(np.random.randn(450), bins=50)
fig.savefig(os.path.join(state.figures_dir, "fig-0999.png")); plt.close(fig)
probe.emit("figure", {"trigger": "savefig", "fig_kind": "histogram", "n_axes": 1, "axes": axes[:1],
                      "subjects": ["conv1.weight"], "png": "fig-0999.png"})
# a model event, and an optimizer stepping it, with its losses printed in this very cell
model = probe.emit("model", {"class": "Net", "module": "__main__", "params": 62006, "trainable": 62006,
                             "layers": [], "via": "forward", "shares": []})
opt = probe.emit("optimizer", {"type": "Adam", "lr": 0.0005, "param_groups": 1, "n_params": 10})
probe.emit("optimizer-state", {"ref": opt, "steps": 12500, "n_changes": 1, "lr_changes": [[1, 0.0005]],
                               "model": model, "models": [model], "cells": [state.cell]})
for epoch in range(3):
    print("epoch %d loss: %.3f" % (epoch + 1, 1.0 / (epoch + 1)))
'''

SETUP = r'''
import glob, os, sys
import numpy as np
import matplotlib.pyplot as plt
from PIL import Image
import torchvision.transforms as transforms

plot_cell = sys.modules["_dllab_probe"].state().cell
plt.plot([1, 2, 3], [0.3, 0.5, 0.6], label="lr=0.1"); plt.plot([1, 2, 3], [0.2, 0.4, 0.5], label="lr=0.01")
plt.xlabel("epoch"); plt.legend(); plt.show()

s = np.zeros(3); s2 = np.zeros(3); n = 0  # Food-11's own statistics, for a Normalize never applied
for path in glob.glob("/tmp/datasets-nctu/Food-11/training/*.jpg"):
    x = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
    s += x.reshape(-1, 3).sum(0); s2 += (x.reshape(-1, 3) ** 2).sum(0); n += x.shape[0] * x.shape[1]
mean = s / n
std = np.sqrt(s2 / n - mean ** 2)
unused = transforms.Normalize(tuple(mean), tuple(std))
'''


@pytest.mark.kernel
def test_forged_probe_records_earn_nothing_in_a_real_run(tiny_datasets: Path, tmp_path: Path) -> None:
    """The issue's attack (a histogram figure naming every layer, three optimizers of 12 500
    steps without a model, a Normalize never applied, appended to the events file), plus a
    figure pointing at a PNG dropped into the probe's folder and a model + optimizer emitted
    through the probe's own `emit`: each goes to a TA (manual, 0 points), none passes."""
    from grader.cli import main
    from grader.datasets.standins import sandbox_readable
    from grader.samples import Sample, notebook, write_archive

    sandbox_readable(tiny_datasets)
    nb = notebook(SETUP, FORGE, title="LAB 1-1 and 1-3")
    write_archive(Sample("0556301", "dllab_0556301.zip", "forged probe evidence", {"lab1-1_1-3.ipynb": nb}),
                  tmp_path / "subs")
    out = tmp_path / "out"
    assert main(["grade", str(tmp_path / "subs"), "--lab", "lab1", "--data", str(tiny_datasets), "--out", str(out),
                 "--no-pdf"]) == 0
    grade = json.loads((out / "grades" / "0556301.json").read_text())
    items = {i["id"]: i for p in grade["parts"] + [grade["bonus"]] for i in p["items"]}
    ev = json.loads((out / "runs" / "0556301" / "lab1-1_1-3.ipynb" / "evidence.json").read_text())
    assert ev["status"] == "ok" and len(ev["optimizers"]) == 4, ev["errors"]  # the forgeries were read
    for item in ("lab1-1-weights", "lab1-3-experiments", "bonus-normalization"):
        assert items[item]["status"] == "manual" and items[item]["points"] == 0, (item, items[item])
    assert "could not confirm" in items["lab1-1-weights"]["message"]
    assert "could not confirm" in items["lab1-3-experiments"]["message"]
    assert "could not confirm" in items["bonus-normalization"]["message"]
    assert grade["bonus"]["points"] == 0 and "unconfirmed-evidence" in grade["flags"]
    # issue 13 I: its code reads Food-11's folder, but its run trained nothing on Food-11
    assert all(i["points"] == 0 and i["status"] != "pass" for i in items.values() if i["id"].startswith("lab1-2"))


# ---------------------------------------------------------------- forged numbers (T13_2 #5)


@pytest.mark.parametrize("forge", ["huge-count", "inf-edge", "negative-count", "edges-not-increasing",
                                   "huge-n", "inf-lr"])
def test_forged_numbers_are_dropped_as_invalid_never_a_crash(forge: str, tmp_path: Path) -> None:
    """Raw lines appended to the probe's events file with numbers the host cannot compute with
    (T13_2 #5: counts [10**400, ...] crashed corroborate with OverflowError; `1e400` parses to inf):
    the event is dropped and counted, the rest is read."""
    from grader.evidence import read_events, validate_event

    w = values(handout_net(), "conv1.weight")
    hist = {"source": "hist", **hist_record(w, []), "subjects": [{"param": "conv1.weight"}]}
    fig = {"id": 7, "t": 1.0, "cell": 3, "kind": "figure", "trigger": "show", "fig_kind": "histogram", "n_axes": 1,
           "axes": [{"kind": "histogram", "hists": [hist]}]}
    opt = {"id": 8, "t": 1.0, "cell": 3, "kind": "optimizer", "type": "SGD", "module": "torch.optim", "lr": 0.1}
    assert validate_event(json.loads(json.dumps(fig)))["axes"][0]["hists"][0]["n"] == w.size
    line = json.dumps(fig)
    if forge == "huge-count":
        hist["counts"] = [10**400] + hist["counts"][1:]
    elif forge == "inf-edge":
        line = None
        text = json.dumps(fig).replace(json.dumps(hist["edges"][0]), "-1e400", 1)
    elif forge == "negative-count":
        hist["counts"] = [-5] + hist["counts"][1:]
    elif forge == "edges-not-increasing":
        hist["edges"] = list(reversed(hist["edges"]))
    elif forge == "huge-n":
        hist["n"] = 10**30
    else:
        line = None
        text = json.dumps(opt).replace("0.1", "1e400")
    if line is not None:
        text = json.dumps(fig)
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(opt if forge != "inf-lr" else fig) + "\n" + text + "\n")
    events, warnings = read_events(path)
    assert len(events) == 1 and any("event dropped" in w_ for w_ in warnings), warnings


def test_histogram_disagrees_never_raises_on_bad_numbers() -> None:
    """Evidence written before the bounds (a rescore of an old evidence.json) still cannot crash the host."""
    net = handout_net()
    stats = [param_summary(values(net, "conv1.weight"))]
    rec = hist_record(values(net, "conv1.weight"), ["conv1.weight"])
    for counts, edges in (([10**400] + rec["counts"][1:], rec["edges"]),
                          (rec["counts"], [float("nan")] + rec["edges"][1:]),
                          (rec["counts"], [float("-inf")] + rec["edges"][1:])):
        assert histogram_disagrees(dict(rec, counts=counts, edges=edges), stats)


def test_a_silent_training_loop_is_confirmed_by_the_chart_of_its_losses() -> None:
    """T13_2 #6: an honest study whose loop prints nothing (losses stored, plotted in the next
    cell) is confirmed by the line chart the host captured after it; a chart before the runs,
    or none, leaves them to a TA with a neutral message."""
    from grader.samples import notebook

    line = _png("line")
    nb = notebook("plt.plot(x)", "train(0.1)", "train(0.01)", "plt.plot(losses)", title="t")
    nb.cells[1].update(execution_count=1, outputs=[nbformat.v4.new_output("display_data", data={"image/png": line})])
    nb.cells[2].update(execution_count=2, outputs=[])
    nb.cells[3].update(execution_count=3, outputs=[])
    nb.cells[4].update(execution_count=4, outputs=[nbformat.v4.new_output("display_data", data={"image/png": line})])
    study = runs_evidence([0.1, 0.01], cell=2)
    study["optimizers"][1].update(cell=3, cells_stepped=[3])
    study["training"][1]["cell"] = 3
    for o in study["optimizers"]:
        o.pop("host_output")
    e = ev(**study, figures=[{"cell": 4, "kind": "line", "subjects": []}])
    mark_run(e, nb)
    assert [o["host_output"] for o in e["optimizers"]] == [True, True]
    assert run_check("lr_study", ctx(e), {}).status == "pass"
    early = ev(**json.loads(json.dumps(study)), figures=[{"cell": 1, "kind": "line", "subjects": []}])
    mark_run(early, nb)
    assert [o["host_output"] for o in early["optimizers"]] == [False, False]
    out = run_check("lr_study", ctx(dict(early, figures=e["figures"])), {})
    assert out.status == "manual" and out.fraction == 0
    assert "could not confirm from the outputs it captured" in out.message and "A TA will check" in out.message
    assert "not a finding against your work" in out.message


def test_a_small_tensor_needs_fewer_bars_but_never_one_or_two() -> None:
    """T4 1420003: conv2.bias (16 values) drawn with bins='auto' as 5 bars, 4 non-empty, is a
    distribution (ceil(16 / 4) = 4 non-empty bars needed); a one- or two-bar record of a larger
    tensor still says nothing beyond its summary."""
    net = handout_net()
    bias = values(net, "conv2.bias")
    stats = [param_summary(bias)]
    edges = np.linspace(float(bias.min()), float(bias.max()), 6)
    counts = np.histogram(bias, bins=edges)[0]
    if np.count_nonzero(counts) == 5:  # make one bar empty as the trained bias had it: move its values out
        bias = np.where((bias >= edges[2]) & (bias < edges[3]), edges[1] + 1e-6, bias)
        stats = [param_summary(bias)]
        counts = np.histogram(bias, bins=edges)[0]
    assert len(counts) == 5 and np.count_nonzero(counts) == 4
    rec = hist_record(bias, ["conv2.bias"], bins=5)
    assert histogram_disagrees(rec, stats) is None
    for name in ("conv2.bias", "fc1.bias"):
        w = values(net, name)
        two = hist_record(w, [name], bins=2)
        assert "too few to show a distribution" in histogram_disagrees(two, [param_summary(w)])
    one = hist_record(bias, ["conv2.bias"], bins=1)
    assert "too few" in histogram_disagrees(one, stats)


def test_histograms_drawn_from_bars_go_to_a_ta_never_fail() -> None:
    """T4 1410004: np.histogram + ax.bar per layer in a 2 x 5 grid: the probe sees no data (only
    plt.hist and seaborn hand it theirs), the host captured a histogram image: a TA decides.
    A plt.hist of data that is no parameter (input pixels) still counts for nothing."""
    net = handout_net()
    bars = {"cell": 6, "kind": "histogram", "subjects": [], "hists": [], "axes_kinds": ["histogram"] * 10,
            "host": {"images": 1, "histogram": True, "matched": [], "panels": None}}
    out = run_check("weight_histograms", ctx(ev(figures=[bars], verified=verified_block(net))), ALL)
    assert out.status == "manual" and out.fraction == 0 and out.flags == ("unconfirmed-evidence",)
    assert "drawn from bars" in out.message and "not any layer's parameters" not in out.message
    # not captured by the host (a PNG in the probe's folder only): nothing to look at, a fail
    hidden = dict(bars, host={"images": 0, "histogram": None})
    assert run_check("weight_histograms", ctx(ev(figures=[hidden], verified=verified_block(net))), ALL).status \
        == "fail"
    pixels = dict(bars, hists=[hist_record(np.random.default_rng(0).uniform(0, 1, 3072), [])])
    out = run_check("weight_histograms", ctx(ev(figures=[pixels], verified=verified_block(net))), ALL)
    assert out.status == "fail" and "not any layer's parameters" in out.message
