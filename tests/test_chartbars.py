"""The bars of a captured histogram image, read from its pixels and matched with the probe's
records (grader/chartbars.py, corroborate.mark_run; issue 13 A, T13_3 #3). Every image here
is a real matplotlib (or seaborn) rendering of a real model's parameters, made the way the
inline backend makes what the kernel client captures; the records are what the probe writes
of the same calls (rec_figures._bars, with the edges plt.hist returned)."""

from __future__ import annotations

import base64
import functools
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import nbformat
import numpy as np
import pytest

from grader.chartbars import assign, read_panels, record_profile
from grader.checks import run_check
from grader.corroborate import MAX_BAR_READS, mark_run
from grader.probe.rec_figures import _bars
from honest import handout_net, verified_block
from test_corroborate import ALL, ctx, ev


@functools.lru_cache(maxsize=1)
def _net() -> Any:
    """The handout CNN with its weights moved off their uniform start, as training does."""
    import torch

    net = handout_net(0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * p.std() * 0.7)
    return net


def _params() -> dict[str, np.ndarray]:
    return {n: p.detach().cpu().numpy().flatten() for n, p in _net().named_parameters()}


def _record(name: str, data: np.ndarray, bins: Any = 50, drawn: Any = None) -> dict[str, Any]:
    """What the probe records of one histogram of `data` that it attributes to `name`."""
    w = np.asarray(data, dtype=np.float64).reshape(-1)
    return {"subjects": [name], "n": int(w.size), "min": float(w.min()), "max": float(w.max()),
            "mean": float(w.mean()), "std": float(w.std()), **_bars(np, w, bins, drawn)}


@contextmanager
def _probe() -> Iterator[list[dict[str, Any]]]:
    """Records each Axes.hist of a parameter's values as the probe does (the drawn edges)."""
    from matplotlib.axes import Axes

    got: list[dict[str, Any]] = []
    orig = Axes.hist
    params = _params()

    def hist(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
        out = orig(self, x, *args, **kwargs)
        w = np.asarray(x, dtype=np.float64).reshape(-1)
        for name, p in params.items():
            if p.size == w.size and np.allclose(p, w):
                got.append(_record(name, w, kwargs.get("bins"), out[1]))
        return out

    Axes.hist = hist  # type: ignore[method-assign]
    try:
        yield got
    finally:
        Axes.hist = orig  # type: ignore[method-assign]


def _shown(draw: Callable[[Any, dict[str, np.ndarray]], None]) -> tuple[list[bytes], list[dict[str, Any]]]:
    """(the PNGs the inline backend would send for the figures `draw` leaves open, the probe's records)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from IPython.core.pylabtools import print_figure

    plt.close("all")
    with _probe() as records:
        draw(plt, _params())
    pngs = [print_figure(plt.figure(n), "png", bbox_inches="tight") for n in plt.get_fignums()]
    plt.close("all")
    return pngs, records


def _graded(pngs: list[bytes], records: list[dict[str, Any]], *, cell: int = 1) -> tuple[Any, dict[str, Any]]:
    """mark_run over a notebook whose cell In[cell] showed `pngs` and whose probe recorded one
    histogram figure of `records` there, then the weight-histogram check on that evidence."""
    from grader.samples import notebook

    nb = notebook(*["plt.show()"] * cell, title="t")
    nb.cells[cell].update(execution_count=cell, outputs=[
        nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(p).decode()}) for p in pngs])
    fig = {"cell": cell, "kind": "histogram", "subjects": [s for r in records for s in r["subjects"]],
           "hists": records}
    e = ev(figures=[fig], verified=verified_block(_net()))
    mark_run(e, nb)
    return run_check("weight_histograms", ctx(e), ALL), fig


def _sample_cell(plt: Any, params: dict[str, np.ndarray]) -> None:
    from grader.samples import cells

    net = _net()
    exec(cells.WEIGHT_HISTS.replace("plt.show()", ""), {"plt": plt, "net": net})


def _per_layer(bins: Any, **kw: Any) -> Callable[[Any, dict[str, np.ndarray]], None]:
    def draw(plt: Any, params: dict[str, np.ndarray]) -> None:
        for name, w in params.items():
            plt.figure()
            plt.hist(w, bins=bins, **kw)
            plt.title(name)
    return draw


def _grids(plt: Any, params: dict[str, np.ndarray]) -> None:
    names = list(params)
    for group in (names[0::2], names[1::2]):  # weights, then biases: 3 x 2, one left empty
        fig, axes = plt.subplots(3, 2, figsize=(8, 9))
        for ax, name in zip(axes.flat, group):
            ax.hist(params[name], bins=30, color="C2", edgecolor="black")
            ax.set_title(name)
        axes.flat[-1].axis("off")
        fig.tight_layout()


def _labelled(plt: Any, params: dict[str, np.ndarray]) -> None:
    fig, axes = plt.subplots(2, 5, figsize=(20, 7))
    for ax, (name, w) in zip(axes.flat, params.items()):
        ax.hist(w, bins=40, color="tab:orange", alpha=0.8)
        ax.set_title(f"{name} ({w.size} values)")
        ax.set_xlabel("value")
        ax.set_ylabel("count")
        ax.grid(True)
    fig.suptitle("Weight distributions after training")
    fig.tight_layout()


HONEST = {
    "sample-grid": _sample_cell,
    "per-layer-auto": _per_layer("auto"),
    "grids-3x2": _grids,
    "density": _per_layer(50, density=True),
    "log-y": _per_layer(50, log=True),
    "step": _per_layer(40, histtype="step"),
    "white-edges": _per_layer(25, edgecolor="white", linewidth=1.2),
    "labels-grid": _labelled,
}


@pytest.mark.parametrize("style", sorted(HONEST))
def test_honest_histograms_of_every_style_pass(style: str) -> None:
    pngs, records = _shown(HONEST[style])
    assert len(records) == 10
    out, fig = _graded(pngs, records)
    assert fig["host"]["matched"] == list(range(10)), (fig["host"], out.message)
    assert out.status == "pass", out.message


def test_seaborn_histplot_with_its_white_bar_edges_passes() -> None:
    import seaborn as sns

    def draw(plt: Any, params: dict[str, np.ndarray]) -> None:
        for name, w in params.items():
            plt.figure()
            sns.histplot(w)  # bins='auto', white edges: the probe records numpy's 'auto' bars
            plt.title(name)

    pngs, _ = _shown(draw)
    records = [_record(name, w, None) for name, w in _params().items()]
    out, fig = _graded(pngs, records)
    assert fig["host"]["matched"] == list(range(10)) and out.status == "pass", (fig["host"], out.message)


# ---------------------------------------------------------------- attacks


def _forged() -> list[dict[str, Any]]:
    """Records of the real parameters, computed with np.histogram, as student code can emit them."""
    return [_record(name, w, 50) for name, w in _params().items()]


def _assert_to_a_ta(out: Any, fig: dict[str, Any], matched: list[int]) -> None:
    assert fig["host"]["matched"] == matched, fig["host"]
    assert out.status == "manual" and out.fraction == 0, out.message
    assert "unconfirmed-evidence" in out.flags


def test_random_panels_titled_like_the_layers_confirm_no_forged_record() -> None:
    """T13_3 #3 (1400001, RAND_HIST): 2 x 5 panels of np.random.randn, then records of the real
    parameters: no record matches a panel, the item goes to a TA saying so."""
    def draw(plt: Any, params: dict[str, np.ndarray]) -> None:
        rng = np.random.default_rng(3)
        fig, axes = plt.subplots(2, 5, figsize=(18, 6))
        for ax, (name, w) in zip(axes.flat, params.items()):
            ax.hist(rng.standard_normal(w.size), bins=50)
            ax.set_title(name)
        fig.tight_layout()

    pngs, _ = _shown(draw)
    assert len(read_panels(pngs[0]) or []) == 10  # the panels are read: they do not match
    out, fig = _graded(pngs, _forged())
    _assert_to_a_ta(out, fig, [])
    assert "the bars in the image the grader captured do not match the recorded data of conv1.weight" in out.message


def test_one_input_pixel_histogram_confirms_no_forged_layer() -> None:
    """T13_2 #3 / T13_3 #3 (1300002): one histogram of input pixels, records of every layer."""
    def draw(plt: Any, params: dict[str, np.ndarray]) -> None:
        plt.figure()
        plt.hist(np.random.default_rng(4).uniform(-1, 1, 3 * 32 * 32 * 4), bins=30)
        plt.title("pixels")

    pngs, _ = _shown(draw)
    out, fig = _graded(pngs, _forged())
    _assert_to_a_ta(out, fig, [])


def test_one_real_panel_serves_one_record_only() -> None:
    """The real histogram of conv1.weight, claimed by five records (conv1.weight's own, then
    four more of the same data and of the other layers): it confirms one record."""
    params = _params()

    def draw(plt: Any, params: dict[str, np.ndarray]) -> None:
        plt.figure()
        plt.hist(params["conv1.weight"], bins=50)

    pngs, _ = _shown(draw)
    records = [_record("conv1.weight", params["conv1.weight"])] * 5
    out, fig = _graded(pngs, records)
    assert fig["host"]["matched"] == [0]
    out, fig = _graded(pngs, _forged())
    assert fig["host"]["matched"] == [0]  # conv1.weight's record; the other nine have no panel
    # the confirmed layer earns its share (T4 finding 5); the nine others go to a TA
    assert out.status == "partial" and out.fraction == pytest.approx(0.1) and "unconfirmed-evidence" in out.flags
    assert "confirmed for 1 of 10 (conv1.weight)" in out.message and "conv2.weight" in out.message


def test_the_real_histogram_of_conv1_does_not_stand_for_conv2() -> None:
    params = _params()

    def draw(plt: Any, params: dict[str, np.ndarray]) -> None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        axes[0].hist(params["conv1.weight"], bins=50)
        axes[1].hist(params["conv1.weight"], bins=50)  # shown again, titled conv2
        axes[1].set_title("conv2.weight")

    pngs, _ = _shown(draw)
    records = [_record("conv1.weight", params["conv1.weight"]), _record("conv2.weight", params["conv2.weight"])]
    _, fig = _graded(pngs, records)
    assert fig["host"]["matched"] == [0] and fig["host"]["panels"] == 2


# ---------------------------------------------------------------- the reader's edges


def test_unreadable_images_and_old_evidence_go_to_a_ta() -> None:
    params = _params()
    assert read_panels(b"not a png") is None
    pngs, _ = _shown(lambda plt, p: (plt.figure(), plt.plot(np.sin(np.arange(50) / 5.0))))
    assert read_panels(pngs[0]) == []  # a line chart: no histogram panel
    out, fig = _graded([b"\x89PNG\r\n\x1a\n broken"], _forged())
    assert fig["host"]["panels"] is None and out.status == "manual" and out.fraction == 0
    assert "could not recognize a histogram" in out.message
    # seaborn's darkgrid theme draws no frame: a histogram, honest, whose bars are not read
    import matplotlib.pyplot as plt

    with plt.style.context("seaborn-v0_8-darkgrid"):
        pngs, records = _shown(_per_layer(50))
    out, fig = _graded(pngs, records)
    assert fig["host"]["panels"] == 0 and fig["host"]["histogram"] is True
    assert out.status == "manual" and out.fraction == 0 and "found no histogram panel it can read" in out.message
    # evidence.json from before the bars were read: no "matched", never a pass on a rescore
    pngs, records = _shown(HONEST["sample-grid"])
    out, fig = _graded(pngs, records)
    assert out.status == "pass"
    e = ev(figures=[dict(fig, host={"images": 1, "histogram": True})], verified=verified_block(_net()))
    out = run_check("weight_histograms", ctx(e), ALL)
    assert out.status == "manual" and out.fraction == 0 and "predates" in out.message, out.message
    assert record_profile([0, 2, 0], [0.0, 1.0, 2.0, 3.0], 4).tolist() == [2, 2, 2, 2]
    assert record_profile([1], [1.0, 0.0], 3) is None
    assert params  # the model the renders came from


def test_assign_gives_each_panel_to_one_record() -> None:
    assert assign([[0], [0], [0, 1]]) == [0, None, 1]
    assert assign([[0, 1], [0]]) == [1, 0]
    assert assign([[], [2]]) == [None, 2]


def test_bar_reads_are_bounded_per_run() -> None:
    """At most MAX_BAR_READS captured PNGs are read per run; past that a cell's bars are not
    read (panels None: a TA looks), cells naming a parameter first."""
    from grader.samples import notebook

    pngs, records = _shown(_per_layer(50))
    cells = MAX_BAR_READS // 10 + 2
    nb = notebook(*["plt.show()"] * cells, title="t")
    outputs = [nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(p).decode()}) for p in pngs]
    figures = []
    for k in range(1, cells + 1):
        nb.cells[k].update(execution_count=k, outputs=outputs)
        figures.append({"cell": k, "kind": "histogram", "subjects": ["conv1.weight"], "hists": records})
    e = ev(figures=figures)
    mark_run(e, nb)
    panels = [f["host"]["panels"] for f in e["figures"]]
    assert panels[:MAX_BAR_READS // 10] == [10] * (MAX_BAR_READS // 10) and panels[-1] is None


_T4_COUNTS = [5, 2, 3, 2, 1, 4, 3, 1, 5, 2, 1, 3, 4, 2, 2, 5, 1, 4, 3, 4, 1, 5, 5, 3, 2, 0, 4, 6, 0, 1]
_T4_EDGES = np.linspace(-0.0897884294, 0.10367322, 31)


def test_jagged_small_tensor_with_edges_log_density_and_grid_is_read() -> None:
    """T4 1420004: `ax.hist(p, bins=30, density=True, log=True, color='orange',
    edgecolor='black')` with a grid, in a 2 x 5 grid; the trained fc2.bias (84 values) has bars
    that jump between tall and short ones. Its panel as the host captured it (tests/data, cut
    from the executed notebook's PNG: bars 4-5 columns of orange between 3 columns of edge line)
    is read as those bars: the edge line between two bars belongs half to each (read all as the
    shorter bar, every tall bar lost 3 columns, and the panel matched nothing); rendered here
    again, every layer's panel is its record's."""
    from grader.chartbars import profile_agrees

    png = (Path(__file__).parent / "data" / "t4_1420004_fc2_bias.png").read_bytes()
    panels = read_panels(png)
    assert panels is not None and len(panels) == 1
    assert profile_agrees(panels[0], _T4_COUNTS, _T4_EDGES)
    shuffled = list(reversed(_T4_COUNTS))  # the same bars in another order: not this panel
    assert not profile_agrees(panels[0], shuffled, _T4_EDGES)

    jagged = np.repeat((_T4_EDGES[:-1] + _T4_EDGES[1:]) / 2, _T4_COUNTS)
    params = dict(_params(), **{"fc2.bias": jagged})

    def draw(plt: Any, _: dict[str, np.ndarray]) -> None:
        fig, axes = plt.subplots(2, 5, figsize=(18, 6))
        for ax, (name, w) in zip(axes.flat, params.items()):
            ax.hist(w, bins=30, density=True, log=True, color="orange", edgecolor="black")
            ax.set_title(name)
            ax.grid(True)
        plt.tight_layout()

    pngs, _ = _shown(draw)
    panels = read_panels(pngs[0])
    assert panels is not None and len(panels) == 10
    records = [_record(name, w, 30) for name, w in params.items()]
    fits = [[k for k, p in enumerate(panels) if profile_agrees(p, r["counts"], r["edges"])] for r in records]
    assert all(k in fit for k, fit in enumerate(fits)), fits
    assert None not in assign(fits) and fits[7] == [7]
