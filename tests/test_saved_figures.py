"""Saved mode's figures: every stored image validated (issue 12 J2), every histogram attributed
from the notebook's code and pixels, and the uncertain ones left to a TA (issue 12 H)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from grader.checks import run_check
from grader.checks.base import CheckContext
from grader.collect import from_saved
from grader.parsers.plotcode import analyze_cells
from grader.saved_images import decode_image, looks_like_histogram

LAYERS = {"layers": ["conv1", "conv2", "fc1", "fc2", "fc3"], "require_bias": True}
TEST_LOG = "Test loss: 1.2345\nAccuracy of the network on the 10000 test images: 55 %\n"

MODEL = '''
import torch.nn as nn
import torch.nn.functional as F

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        return self.fc3(self.fc2(self.fc1(x)))

net = Net().to(device)
'''


def _figure(kind: str = "hist", fmt: str = "png") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rng = np.random.default_rng(1)
    fig = plt.figure()
    if kind == "hist":
        plt.hist(rng.normal(size=2000), bins=50)
    elif kind == "panels":
        for i in range(10):
            fig.add_subplot(2, 5, i + 1).hist(rng.normal(size=300 * (i + 1)), bins=40)
    elif kind == "line":
        plt.plot(np.exp(-np.arange(30) / 8) + rng.normal(scale=0.02, size=30))
    else:
        plt.imshow(rng.random((16, 16, 3)))
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _image(b64: str, mime: str = "image/png") -> nbformat.NotebookNode:
    return new_output("display_data", data={mime: b64, "text/plain": "<Figure size 640x480 with 1 Axes>"})


def _saved(tmp_path: Path, *cells: tuple[str, list]) -> dict:
    nb = new_notebook(cells=[new_code_cell(src, outputs=outs, execution_count=i + 1)
                             for i, (src, outs) in enumerate(cells)])
    path = tmp_path / "lab1-1.ipynb"
    nbformat.write(nb, path)
    return from_saved(path, "lab1-1.ipynb", run_dir=tmp_path / "run")


def _check(ev: dict, params: dict = LAYERS):
    ctx = CheckContext(student_id="0556001", part_id="lab1-1", dataset="cifar10", evidence=[ev], all_evidence=[ev])
    return run_check("weight_histograms", ctx, params)


# --- J2: a bad image payload is a warning, never a crash ------------------------------------

def test_corrupt_base64_png_is_kept_as_unreadable_with_a_warning(tmp_path: Path) -> None:
    # issue 12 round 2, finding 7: the corrupt image is a figure the student saved, not nothing
    good = _figure()
    ev = _saved(tmp_path, (MODEL, []), ("evaluate()", [new_output("stream", name="stdout", text=TEST_LOG)]),
                ("plt.hist(net.conv1.weight.detach().numpy().flatten())", [_image(good[:-7] + "!!*@")]),
                ("plt.hist(net.conv2.weight.detach().numpy().flatten())", [_image(good)]))
    assert ev["status"] == "ok" and ev["metrics"]["test_accuracy"] == pytest.approx(0.55)
    bad, fine = ev["figures"]
    assert (bad["cell"], bad["kind"], bad["png"], bad["uncertain"]) == (3, None, None, True)
    assert bad["unreadable"] == "the image data is not valid base64"
    assert fine["subjects"] == ["conv2.weight"] and "unreadable" not in fine
    assert ev["warnings"] == ["cell 3: an image output was skipped: the image data is not valid base64"]
    out = _check(ev, {"layers": ["conv1", "conv2"]})
    assert out.status == "manual" and "conv1.weight not found" in out.message
    assert "1 stored image(s) cannot be read" in out.message and "lab1-1.ipynb#cell 3" in out.evidence


@pytest.mark.parametrize(("payload", "mime", "why"), [
    (base64.b64encode(b"GIF89a" + b"\0" * 50).decode(), "image/png", "is not a PNG image"),
    (base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 20).decode(), "image/png", "cannot be decoded"),
    ("A" * 12_000_000, "image/png", "larger than 8 MiB"),
    (["iVBORw0KGgo", 7], "image/png", "not text"),
    ({"nested": "dict"}, "image/png", "not text"),
    (base64.b64encode(b"\x89PNG not a jpeg").decode(), "image/jpeg", "is not a JPEG image"),
])
def test_every_kind_of_bad_payload_is_refused(payload: object, mime: str, why: str) -> None:
    png, problem = decode_image(payload, mime)
    assert png is None and problem is not None and why in problem


def test_truncated_png_and_a_huge_one_do_not_stop_the_grade(tmp_path: Path) -> None:
    good = base64.b64decode(_figure())
    cut = base64.b64encode(good[: len(good) // 2]).decode()
    from PIL import Image

    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, format="PNG")  # 400 M pixels, a small file
    ev = _saved(tmp_path, ("plt.plot(losses)\nplt.show()", [
        _image(cut), _image(base64.b64encode(bomb.getvalue()).decode()), _image(_figure("line"))]))
    assert [(f["kind"], bool(f.get("unreadable"))) for f in ev["figures"]] == [
        (None, True), (None, True), ("line", False)]  # plt.plot: a line chart (issue 12 round 2, finding 10)
    assert any("cannot be decoded" in w for w in ev["warnings"])
    assert any("over the limit" in w for w in ev["warnings"])


def test_jpeg_figures_are_kept_as_png(tmp_path: Path) -> None:
    ev = _saved(tmp_path, (MODEL, []), ("plt.hist(net.fc1.weight.detach().numpy().ravel())",
                                        [_image(_figure(fmt="jpeg"), "image/jpeg")]))
    (fig,) = ev["figures"]
    assert fig["subjects"] == ["fc1.weight"]
    assert (tmp_path / "run" / fig["png"]).read_bytes().startswith(b"\x89PNG")


# --- H: histograms attributed from the code, then the pixels, else a TA ----------------------

HELPER = '''
def plot_weights(model, epoch):
    plt.figure()
    plt.hist(model.conv1.weight.detach().cpu().numpy().flatten(), bins=50)
    plt.title("conv1 after epoch %d" % epoch)
    plt.show()
'''
TRAIN_WITH_HELPER = '''
for epoch in range(3):
    for inputs, labels in trainloader:
        optimizer.zero_grad()
        loss = criterion(net(inputs), labels)
        loss.backward()
        optimizer.step()
    print('epoch %d loss %.3f' % (epoch + 1, loss.item()))
    plot_weights(net, epoch)
'''


def test_helper_function_called_every_epoch_is_attributed(tmp_path: Path) -> None:
    # the miss: plt.hist(net.conv1.weight...) drawn by a helper defined in an earlier cell
    ev = _saved(tmp_path, (MODEL, []), (HELPER, []), (TRAIN_WITH_HELPER, [_image(_figure())] * 3))
    assert {(f["kind"], tuple(f["subjects"]), f["attributed"], f["uncertain"]) for f in ev["figures"]} == {
        ("histogram", ("conv1.weight",), "static", False)}
    out = _check(ev, {"layers": ["conv1"]})
    assert out.status == "pass" and "read from the notebook's code" in out.message
    out = _check(ev)  # the rubric's five layers with biases: only conv1.weight was drawn
    assert out.status == "partial" and out.fraction == pytest.approx(0.1) and "fc3.bias" in out.message


@pytest.mark.parametrize("code", [
    "for name, p in net.named_parameters():\n    plt.figure()\n    plt.hist(p.data.cpu().numpy().ravel())\n"
    "    plt.title(name)\n    plt.show()",
    "fig, axes = plt.subplots(2, 5)\nfor ax, (name, param) in zip(axes.flat, net.named_parameters()):\n"
    "    ax.hist(param.detach().cpu().numpy().flatten(), bins=50)\n    ax.set_title(name)",
    "for layer in [net.conv1, net.conv2, net.fc1, net.fc2, net.fc3]:\n"
    "    for w in (layer.weight, layer.bias):\n        sns.histplot(w.detach().numpy().flatten())\n",
    "for k, v in net.state_dict().items():\n    plt.hist(v.cpu().numpy().flatten(), alpha=0.4, label=k)",
])
def test_every_parameter_looped_over_is_attributed(tmp_path: Path, code: str) -> None:
    ev = _saved(tmp_path, (MODEL, []), (code, [_image(_figure("panels"))]))
    (fig,) = ev["figures"]
    assert fig["kind"] == "histogram" and fig["attributed"] == "static" and not fig["uncertain"]
    assert len(fig["subjects"]) == 10
    assert _check(ev).status == "pass"


def test_a_name_filter_narrows_the_loop(tmp_path: Path) -> None:
    code = ("for name, p in net.named_parameters():\n    if 'bias' in name:\n        continue\n"
            "    plt.hist(p.detach().numpy().flatten())")
    ev = _saved(tmp_path, (MODEL, []), (code, [_image(_figure())]))
    assert ev["figures"][0]["subjects"] == ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight",
                                            "fc3.weight"]
    out = _check(ev)
    assert out.status == "partial" and out.fraction == pytest.approx(0.5) and "conv1.bias" in out.message


@pytest.mark.parametrize(("code", "image"), [
    # an imported helper draws the figure: the code cannot say which layer
    ("from utils import show_weights\nshow_weights(net)", "hist"),
    # data of unknown origin
    ("plt.hist(w, bins=50)", "hist"),
    # code that does not parse (a stray IPython construct), with a histogram-looking image
    ("for p in net.parameters()\n    plt.hist(p)", "hist"),
    # code that does not parse, with a figure the pixels cannot call a histogram
    ("for p in net.parameters()\n    plt.hist(p, histtype='step')", "line"),
    # a model whose class the notebook does not define: its parameter names are unknown
    ("net = torchvision.models.resnet18(num_classes=10)\nfor p in net.parameters():\n    plt.hist(p.detach())",
     "panels"),
])
def test_ambiguous_figures_go_to_a_ta_never_to_not_found(tmp_path: Path, code: str, image: str) -> None:
    ev = _saved(tmp_path, (MODEL, []), (code, [_image(_figure(image))]))
    (fig,) = ev["figures"]
    assert fig["uncertain"] is True
    out = _check(ev)
    assert out.status == "manual" and "a TA will look at lab1-1.ipynb#cell 2" in out.message
    assert "lab1-1.ipynb#cell 2" in out.evidence


def test_histograms_of_inputs_still_fail_and_other_plots_are_not_histograms(tmp_path: Path) -> None:
    inputs = ("images, labels = next(iter(testloader))\nfor c in range(3):\n"
              "    plt.hist(images[:, c].numpy().flatten(), bins=50)\n    plt.show()")
    curves = "plt.plot(losses)\nplt.title('training loss')\nplt.show()"
    ev = _saved(tmp_path, (MODEL, []), ("testloader = torch.utils.data.DataLoader(testset, batch_size=4)", []),
                (inputs, [_image(_figure())] * 3), (curves, [_image(_figure("line"))]))
    # the curve is a line chart, as the probe would call it (issue 12 round 2, finding 10)
    assert [(f["kind"], f["uncertain"]) for f in ev["figures"]] == [("histogram", False)] * 3 + [("line", False)]
    out = _check(ev)
    assert out.status == "fail" and "not any layer's parameters" in out.message


def test_pixels_decide_when_the_cell_draws_both_kinds(tmp_path: Path) -> None:
    code = ("plt.plot(losses)\nplt.show()\nplt.hist(net.fc3.weight.detach().numpy().flatten())\nplt.show()")
    ev = _saved(tmp_path, (MODEL, []), (code, [_image(_figure("line")), _image(_figure())]))
    assert [(f["kind"], f["subjects"]) for f in ev["figures"]] == [("other", []), ("histogram", ["fc3.weight"])]


# --- SVG figures (issue 12 round 2, finding 6): no pixels, read from the code ------------------

SVG_LOOP = ("%config InlineBackend.figure_format = 'svg'\nfig, axes = plt.subplots(2, 5, figsize=(18, 6))\n"
            "for ax, (name, param) in zip(axes.flat, net.named_parameters()):\n"
            "    ax.hist(param.detach().cpu().numpy().flatten(), bins=50)\n    ax.set_title(name)\nplt.show()")


def _svg(kind: str = "panels") -> str:
    return base64.b64decode(_figure(kind, fmt="svg")).decode()


def test_svg_histograms_are_read_from_their_code(tmp_path: Path) -> None:
    # 0000407: `figure_format = 'svg'` before the sample's histogram cell; execute mode passed
    ev = _saved(tmp_path, (MODEL, []), (SVG_LOOP, [_image(_svg(), "image/svg+xml")]))
    (fig,) = ev["figures"]
    assert (fig["kind"], fig["format"], fig["png"], fig["uncertain"]) == ("histogram", "svg", None, False)
    assert len(fig["subjects"]) == 10 and _check(ev).status == "pass"
    assert ev["warnings"] == []


def test_svg_the_code_cannot_explain_goes_to_a_ta(tmp_path: Path) -> None:
    # invented: an imported helper draws an SVG; no pixels to look at and no code to read
    ev = _saved(tmp_path, (MODEL, []), (("%config InlineBackend.figure_format = 'svg'\n"
                                         "from utils import show_weights\nshow_weights(net)"),
                                        [_image(_svg("hist").splitlines(keepends=True), "image/svg+xml")]))
    (fig,) = ev["figures"]
    assert fig["kind"] is None and fig["uncertain"] is True and "unreadable" not in fig
    out = _check(ev)
    assert out.status == "manual" and "lab1-1.ipynb#cell 2" in out.evidence


@pytest.mark.parametrize("payload", ["<html><body>not a figure</body></html>", _svg("hist")[:2000], ""])
def test_broken_svg_is_unreadable_not_a_crash(tmp_path: Path, payload: object) -> None:
    ev = _saved(tmp_path, (MODEL, []), (SVG_LOOP, [_image(payload, "image/svg+xml")]))  # type: ignore[arg-type]
    (fig,) = ev["figures"]
    assert fig["uncertain"] is True and fig["kind"] is None and fig["unreadable"]
    assert _check(ev).status == "manual"


def test_image_heuristic_tells_bars_from_lines_and_pictures() -> None:
    for kind, expected in (("hist", True), ("panels", True), ("line", False), ("image", False)):
        assert looks_like_histogram(base64.b64decode(_figure(kind))) is expected, kind
    assert looks_like_histogram(b"not a png") is None


def test_static_analysis_is_bounded_on_hostile_code() -> None:
    deep = "x = " + "(" * 5000 + "1" + ")" * 5000
    loop = "def f(m):\n    f(m)\n    plt.hist(m.conv1.weight)\nf(net)"
    got = analyze_cells([("code", MODEL), ("code", deep), ("code", loop), ("markdown", "# plt.hist(x)")])
    assert not got[1].readable and got[2].subjects == {"conv1.weight"} and 3 not in got


# --- the clean sample, executed, then graded in saved mode ----------------------------------

# The clean LAB 1-1 sample executed in the sandbox and then read in saved mode is checked in
# tests/test_pipeline.py (test_clean_sample_executed_then_graded_in_saved_mode_earns_the_histograms),
# on the notebook its batch already ran.


def _grade(ev: dict) -> dict:
    from grader.model import Submission
    from grader.pipeline import GradeSettings, grade_from_runs
    from grader.resources import resource_dir
    from grader.rubric import load_rubric

    rubric = load_rubric(resource_dir("labs") / "lab1" / "rubric.yaml")
    sub = Submission(student_id="0556001", source="dllab_0556001.zip", source_sha256=None, submitted_at=None,
                     submitted_at_source="unknown", work_dir="/nonexistent", files=(), problems=())
    return grade_from_runs(rubric, sub, [ev], settings=GradeSettings(rubric_path=Path("unused.yaml"),
                                                                      out=Path("/nonexistent")))


@pytest.mark.parametrize("payload", [
    "CUT",  # 0000601: the only histogram's base64 cut to a third
    "data:image/png;base64,",  # 0000602: a data-URI prefix before the base64
    12345,  # 0000425: a number where the base64 belongs (written here as its text)
    "WRONG-FORMAT",  # invented: a GIF stored under image/png
])
def test_corrupt_histogram_is_manual_with_a_visible_flag(tmp_path: Path, payload: object) -> None:
    from grader.report.student import FLAG_TEXT
    from grader.report.summary import _flag_legend, attention_reasons

    good = _figure("panels")
    image = {"CUT": good[: len(good) // 3], "data:image/png;base64,": "data:image/png;base64," + good,
             "WRONG-FORMAT": base64.b64encode(b"GIF89a" + b"\0" * 64).decode()}.get(payload, str(payload))
    ev = _saved(tmp_path, (MODEL, []), ("evaluate()", [new_output("stream", name="stdout", text=TEST_LOG)]),
                ("for name, p in net.named_parameters():\n    plt.hist(p.detach().numpy().flatten())",
                 [_image(image)]))
    grade = _grade(ev)
    weights = next(it for p in grade["parts"] for it in p["items"] if it["id"] == "lab1-1-weights")
    assert weights["status"] == "manual" and "cannot be read" in weights["message"]
    assert "unreadable-figure" in grade["flags"] and FLAG_TEXT["unreadable-figure"]
    reasons = attention_reasons(grade, [ev])
    assert any("the image in cell 3 cannot be read" in r for r in reasons)
    assert "unreadable-figure" not in reasons  # said precisely instead
    assert {"flag": "unreadable-figure", "text": FLAG_TEXT["unreadable-figure"]} in _flag_legend([grade])
    # the same notebook with the image intact: no flag, the histograms earn their points
    (tmp_path / "ok").mkdir()
    ok = _saved(tmp_path / "ok", (MODEL, []), ("evaluate()", [new_output("stream", name="stdout", text=TEST_LOG)]),
                ("for name, p in net.named_parameters():\n    plt.hist(p.detach().numpy().flatten())",
                 [_image(good)]))
    clean = _grade(ok)
    assert "unreadable-figure" not in clean["flags"]
    assert next(it for p in clean["parts"] for it in p["items"] if it["id"] == "lab1-1-weights")["status"] == "pass"


# --- saved-mode learning-rate study (issue 12 round 2, finding 10) ------------------------------

LR_STUDY = '''
results = {}
for lr in [0.1, 0.01, 0.001]:
    model = Net()
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    accs = []
    for epoch in range(2):
        for inputs, labels in trainloader:
            optimizer.zero_grad()
            criterion(model(inputs), labels).backward()
            optimizer.step()
        accs.append(evaluate(model))
        print('lr %g epoch %d test acc %.2f %%' % (lr, epoch + 1, 100 * accs[-1]))
    results[lr] = accs
'''
LR_LOG = "".join(f"lr {lr:g} epoch {e} test acc {a + e:.2f} %\n" for lr, a in ((0.1, 10), (0.01, 30), (0.001, 20))
                 for e in (1, 2))
LR_PLOT = ("for lr, accs in results.items():\n    plt.plot(range(1, len(accs) + 1), accs, label='lr=%g' % lr)\n"
           "plt.legend()\nplt.show()")
STUDY = {"min_runs": 2, "require_scheduler": False, "require_plot": True}


def _study(ev: dict):
    ctx = CheckContext(student_id="0556001", part_id="lab1-3", dataset="cifar10", evidence=[ev], all_evidence=[ev])
    return run_check("lr_study", ctx, STUDY)


def test_saved_lr_study_is_read_from_the_printed_rates_and_the_chart(tmp_path: Path) -> None:
    # 0000701: lr_study + LR_PLOT stored in lab1-3.ipynb failed "no optimizer that took a step"
    ev = _saved(tmp_path, (MODEL, []), (LR_STUDY, [new_output("stream", name="stdout", text=LR_LOG)]),
                (LR_PLOT, [_image(_figure("line"))]))
    assert [c["printed"] for c in ev["lr_settings"]] == [[0.001, 0.01, 0.1]]
    assert [f["kind"] for f in ev["figures"]] == ["line"]
    out = _study(ev)
    assert out.status == "pass" and "3 learning rate(s) printed by the runs (0.001, 0.01, 0.1)" in out.message
    assert "lab1-1.ipynb#cell 3" in out.evidence


def test_saved_lr_study_that_prints_no_rate_goes_to_a_ta(tmp_path: Path) -> None:
    # invented: the runs print only "epoch 1: train loss ..." (0000502's LAB 1-3): the code names
    # three rates and a chart is stored, but the outputs cannot say which ran
    log = "".join(f"epoch {e}: train loss {2.3 - e / 10:.3f}\n" for _ in range(3) for e in (1, 2))
    ev = _saved(tmp_path, (MODEL, []), (LR_STUDY.replace("print('lr %g epoch", "print('x %g epoch"),
                                        [new_output("stream", name="stdout", text=log)]),
                (LR_PLOT, [_image(_figure("line"))]))
    out = _study(ev)
    assert out.status == "manual" and "0.001, 0.01, 0.1" in out.message and "1 line chart" in out.message
    # one printed rate and no chart is not a study either, but the code suggests one: a TA
    one = _saved(tmp_path, (MODEL, []), (LR_STUDY, [new_output("stream", name="stdout", text=LR_LOG[:60])]))
    assert _study(one).status == "manual"
    # nothing printed, nothing set, nothing drawn: a plain fail
    none = _saved(tmp_path, (MODEL, []), ("train(net)", [new_output("stream", name="stdout", text="done\n")]))
    assert _study(none).status == "fail"


@pytest.mark.parametrize(("texts", "rates"), [
    (["lr 0.1 epoch 1 acc 10 %\nlr 0.1 epoch 2 acc 12 %\nlr 0.01 epoch 1 acc 30 %\n"], [0.01, 0.1]),
    # a scheduler's decayed rate printed each epoch is one run
    (["Epoch 1 lr=0.1 loss 2.0\nEpoch 2 lr=0.05 loss 1.8\nEpoch 3 lr=0.025 loss 1.7\n"], [0.1]),
    (["learning rate: 1e-3 -> acc 50%\n", "LR = .01\n", "lr_scheduler stepped 3 times\n"], [0.001, 0.01]),
    (["Learning rate 0.5 accuracy 61%\nbest lr 12\n"], [0.5]),
])
def test_printed_learning_rates(texts: list[str], rates: list[float]) -> None:
    from grader.parsers.lrs import printed_lrs

    assert printed_lrs(texts) == rates


def test_learning_rates_in_the_code() -> None:
    from grader.parsers.lrs import code_lrs

    assert code_lrs([LR_STUDY]) == [0.001, 0.01, 0.1]
    assert code_lrs([("%matplotlib inline\nopt = optim.Adam(net.parameters(), lr=3e-4)\nlearning_rates = (1, 0.5)\n"
                      "epochs = 10\nsched = StepLR(opt, step_size=30, gamma=0.1)")]) == [0.0003, 0.5, 1.0]
    assert code_lrs(["for p in net.parameters(:\n"]) == []


# --- a figure the notebook shows without a readable image (issue 12, re-test rt2 finding 4) -------

HIST_CODE = "fig = plt.figure(figsize=(18, 6))\nfor name, p in net.named_parameters():\n    plt.hist(p.detach().numpy().flatten())\nfig"


@pytest.mark.parametrize("case", ["figure-text", "figure-text-stream", "markdown-attachment"])
def test_a_figure_without_its_image_goes_to_a_ta_never_not_found(tmp_path: Path, case: str) -> None:
    test_cell = ("evaluate()", [new_output("stream", name="stdout", text=TEST_LOG)])
    if case == "markdown-attachment":  # 0001263: a screenshot pasted into a markdown cell
        nb = new_notebook(cells=[new_code_cell(MODEL, execution_count=1), new_code_cell(test_cell[0], outputs=test_cell[1],
                                                                                      execution_count=2)])
        md = nbformat.v4.new_markdown_cell("![hist.png](attachment:hist.png)")
        md["attachments"] = {"hist.png": {"image/png": _figure()}}
        nb.cells.append(md)
        path = tmp_path / "lab1-1.ipynb"
        nbformat.write(nb, path)
        ev = from_saved(path, "lab1-1.ipynb", run_dir=tmp_path / "run")
    else:  # 0001222: images stripped before saving, matplotlib's text left behind
        out = (new_output("execute_result", data={"text/plain": "<Figure size 1800x600 with 10 Axes>"}, execution_count=3)
               if case == "figure-text" else new_output("stream", name="stdout", text="<Figure size 640x480 with 1 Axes>\n"))
        ev = _saved(tmp_path, (MODEL, []), test_cell, (HIST_CODE, [out]))
    grade = _grade(ev)
    weights = next(it for p in grade["parts"] for it in p["items"] if it["id"] == "lab1-1-weights")
    assert weights["status"] == "manual" and "a TA will look" in weights["message"], weights["message"]
    assert "unreadable-figure" in grade["flags"]


def test_figure_text_beside_its_image_is_an_ordinary_figure(tmp_path: Path) -> None:
    out_text = new_output("execute_result", data={"text/plain": "<Figure size 1800x600 with 10 Axes>"}, execution_count=3)
    ev = _saved(tmp_path, (MODEL, []), ("evaluate()", [new_output("stream", name="stdout", text=TEST_LOG)]),
                (HIST_CODE, [_image(_figure("panels")), out_text]))
    assert not any(f.get("unreadable") for f in ev["figures"])
    assert "unreadable-figure" not in _grade(ev)["flags"]


def test_an_image_too_large_to_classify_is_left_to_a_ta() -> None:
    # 20 M pixels of one colour compress to a small PNG but decode to hundreds of MB: not
    # classified (None, so what it shows goes to a TA), and a real figure's size still is
    from PIL import Image

    from grader import saved_images

    def png(w: int, h: int) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (w, h), "white").save(buf, format="PNG")
        return buf.getvalue()

    big = png(5000, 4000)
    assert len(big) < 200_000 and 5000 * 4000 > saved_images.MAX_CLASSIFY_PIXELS
    assert looks_like_histogram(big) is None
    assert looks_like_histogram(png(3000, 2000)) is False  # a 300-dpi figure is still looked at
