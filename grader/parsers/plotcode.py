"""Which parameters a notebook's histograms show, read from its code with `ast` (nothing runs).

In saved mode the probe is absent, so a stored figure is attributed from the source of the
cell that displayed it and of the functions that cell calls (a `def plot_weights(model)` in
an earlier cell, called every epoch). The code is followed as far as it can be read:

* models: `net = Net()` with `class Net(nn.Module)` assigning `self.conv1 = nn.Conv2d(...)`
  gives `net`'s parameter names (`conv1.weight`, `conv1.bias`, ...), through `nn.Sequential`
  and the model's own sub-modules;
* data: `net.conv1.weight.detach().cpu().numpy().flatten()`, `w = ...` assigned earlier,
  `state_dict()['conv1.weight']`, `getattr(net, name)`, loops over `named_parameters()`,
  `parameters()`, `named_modules()`, `state_dict().items()`, lists, `zip` and `enumerate`;
* calls: `hist`, `histplot`, `distplot`, `kdeplot`, `np.histogram`, ... are histograms;
  `plot`, `imshow`, `scatter`, `bar`, ... are other plots.

What cannot be read (an imported helper, data of unknown origin) is counted, never guessed:
the caller treats such a figure as uncertain and leaves it to a TA.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .codevalues import (MODEL_CHAIN, NOT_PARAM, UNKNOWN, DictData, Key, Model, ModelReader, Params, Seq,
                         StateDict, Strs, Tup, all_params, last_name, name_filter, named, param_of, sub_model,
                         union, union_items)

_MAX_SOURCE = 200_000  # characters of code per cell; more is not a hand-written cell
_MAX_DEPTH = 4  # nested calls of the notebook's own functions followed
_MAX_NODES = 200_000  # ast nodes visited per notebook: a bound on hostile code

HIST_CALLS = {"hist", "histplot", "distplot", "displot", "kdeplot", "ecdfplot", "histogram", "histc",
              "hist2d"}
OTHER_CALLS = {"plot", "imshow", "scatter", "bar", "barh", "matshow", "pcolormesh", "pcolor", "contour",
               "contourf", "heatmap", "lineplot", "scatterplot", "errorbar", "fill_between", "stem",
               "pie", "boxplot", "violinplot", "semilogy", "semilogx", "loglog", "show_image",
               "make_grid", "stackplot", "barplot", "regplot", "relplot"}
# Methods and functions that keep the data they are given (views, copies, conversions).
_SAME_DATA = {"detach", "cpu", "cuda", "numpy", "flatten", "view", "reshape", "ravel", "clone", "tolist",
              "float", "double", "abs", "squeeze", "unsqueeze", "to", "contiguous", "flat", "data",
              "array", "asarray", "concatenate", "cat", "stack", "hstack", "vstack", "tensor",
              "from_numpy", "copy", "astype", "values", "T", "transpose", "permute", "half", "norm",
              "list", "sorted", "tuple"}
# Classes that hold whatever data they are given.
_DATA_CLASSES = {"DataFrame", "Series", "Tensor", "FloatTensor", "Parameter"}
_MAGIC = re.compile(r"^(\s*)[%!].*$", re.MULTILINE)
# Modules whose functions are known not to draw a model (so a call of theirs is not opaque).
_NON_PLOTTING = {"torch", "nn", "F", "optim", "np", "numpy", "os", "time", "copy", "pickle", "json", "math",
                 "random", "torchvision", "transforms", "datasets", "sys", "shutil", "glob", "pd"}


# ---------------------------------------------------------------- what a cell plots

@dataclass
class CellPlots:
    """What one cell's code (and the notebook functions it calls) plots."""

    hist: int = 0
    """Histogram (distribution) calls."""
    other: int = 0
    """Calls that draw something else (lines, images, bars, ...)."""
    subjects: set[str] = field(default_factory=set)
    """Parameter names the histograms show ('conv1.weight')."""
    unnamed: set[str] = field(default_factory=set)
    """Models whose parameters are shown but whose parameter names could not be read."""
    unresolved: int = 0
    """Histogram calls whose data could not be traced."""
    not_params: int = 0
    """Histogram calls whose data is traced to something that is not a parameter."""
    opaque: int = 0
    """Calls of functions defined outside the notebook, given a model or its parameters."""
    readable: bool = True
    """False when the cell's code could not be parsed at all."""

    @property
    def certain(self) -> bool:
        """Every histogram's data was traced and nothing unread could have drawn one."""
        return self.readable and not self.unresolved and not self.unnamed and not self.opaque


def _parse(source: str) -> ast.Module | None:
    source = _MAGIC.sub(lambda m: m.group(1) + "pass", source[:_MAX_SOURCE])  # IPython magics
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _root_name(node: ast.AST) -> str | None:
    """The name an attribute chain starts from: `torch` for `torch.utils.data.DataLoader`."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


class _Notebook(ModelReader):
    """The notebook's classes, functions and top-level names, as the cells run in order."""

    def __init__(self) -> None:
        super().__init__()
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        self.env: dict[str, Any] = {}
        self.budget = _MAX_NODES


class _Walker:
    """Follows one cell's statements, resolving data and recording plot calls into `plots`."""

    def __init__(self, book: _Notebook, plots: CellPlots) -> None:
        self.book = book
        self.plots = plots
        self.stack: list[str] = []

    # ---- statements

    def block(self, body: Sequence[ast.stmt], env: dict[str, Any]) -> None:
        narrowed: dict[str, Any] = {}
        for stmt in body:
            self.book.budget -= 1
            if self.book.budget <= 0:
                self.plots.unresolved += 1
                break
            # "if 'bias' in name: continue": the rest of the loop sees only the other parameters
            if (isinstance(stmt, ast.If) and not stmt.orelse and len(stmt.body) == 1
                    and isinstance(stmt.body[0], ast.Continue)):
                keep = name_filter(stmt.test, env, negate=True)
                if keep is not None:
                    narrowed.update({k: v for k, v in env.items() if k in keep and k not in narrowed})
                    env.update(keep)
                    continue
            self.stmt(stmt, env)
        env.update(narrowed)

    def stmt(self, s: ast.stmt, env: dict[str, Any]) -> None:
        if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.book.functions[s.name] = s
            return
        if isinstance(s, ast.ClassDef):
            self.book.classes[s.name] = s
            self.book.forget_models()
            return
        if isinstance(s, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            value = s.value
            if value is not None:
                self.calls(value, env)
                data = self.resolve(value, env)
                targets = s.targets if isinstance(s, ast.Assign) else [s.target]
                for t in targets:
                    self.bind(t, data, value, env)
            return
        if isinstance(s, (ast.For, ast.AsyncFor)):
            self.calls(s.iter, env)
            self.bind(s.target, self.element(self.resolve(s.iter, env)), None, env)
            self.block(s.body, env)
            self.block(s.orelse, env)
            return
        if isinstance(s, (ast.With, ast.AsyncWith)):
            for item in s.items:
                self.calls(item.context_expr, env)
            self.block(s.body, env)
            return
        if isinstance(s, ast.If):
            self.calls(s.test, env)
            for part, negate in ((s.body, False), (s.orelse, True)):
                keep = name_filter(s.test, env, negate=negate)  # "if 'weight' in name:"
                saved = {k: env[k] for k in keep or {}}
                env.update(keep or {})
                self.block(part, env)
                env.update(saved)
            return
        if isinstance(s, ast.While):
            self.calls(s.test, env)
            self.block(s.body, env)
            self.block(s.orelse, env)
            return
        if isinstance(s, ast.Try):
            for part in (s.body, *[h.body for h in s.handlers], s.orelse, s.finalbody):
                self.block(part, env)
            return
        for child in ast.iter_child_nodes(s):
            if isinstance(child, ast.expr):
                self.calls(child, env)

    def bind(self, target: ast.AST, data: Any, value: ast.AST | None, env: dict[str, Any]) -> None:
        if isinstance(target, ast.Name):
            env[target.id] = data
        elif isinstance(target, (ast.Tuple, ast.List)):
            items: Sequence[Any]
            if isinstance(data, Tup) and len(data.items) == len(target.elts):
                items = data.items
            elif isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts):
                items = [self.resolve(v, env) for v in value.elts]
            else:
                items = [UNKNOWN if data is UNKNOWN else NOT_PARAM] * len(target.elts)
            for t, d in zip(target.elts, items):
                self.bind(t, d, None, env)

    # ---- calls

    def calls(self, node: ast.AST, env: dict[str, Any]) -> None:
        """Every call in an expression: plots recorded, the notebook's functions followed."""
        for sub in ast.walk(node):
            self.book.budget -= 1
            if isinstance(sub, ast.Call):
                self.call(sub, env)

    def call(self, node: ast.Call, env: dict[str, Any]) -> None:
        name = last_name(node.func)
        if name is None:
            return
        is_pandas_hist = (name == "plot" and any(k.arg == "kind" and isinstance(k.value, ast.Constant)
                                                 and k.value.value in ("hist", "kde") for k in node.keywords))
        if name in HIST_CALLS or is_pandas_hist:
            self.plots.hist += 1
            data = self.hist_data(node, env)
            if isinstance(data, Params):
                self.plots.subjects |= set(data.names)
                self.plots.unnamed |= set(data.unnamed)
            elif data is NOT_PARAM:
                self.plots.not_params += 1
            else:
                self.plots.unresolved += 1
            return
        if name in OTHER_CALLS or (name == "step" and _root_name(node.func) in ("plt", "pyplot")):
            self.plots.other += 1  # (optimizer.step() is no plot; plt.step() is)
            return
        if isinstance(node.func, ast.Name) and name in self.book.functions:
            self.follow(self.book.functions[name], node, env)
            return
        if isinstance(node.func, ast.Name):
            outside = (name not in _SAME_DATA and name not in env and name not in self.book.env
                       and not name[:1].isupper() and not hasattr(builtins, name))
        else:
            base = node.func.value
            outside = (isinstance(base, ast.Name) and base.id not in env and base.id not in self.book.env
                       and base.id not in _NON_PLOTTING and name not in _SAME_DATA and name not in MODEL_CHAIN)
        if outside:
            args = [self.resolve(a, env) for a in [*node.args, *[k.value for k in node.keywords]]]
            if any(isinstance(a, (Model, Params, StateDict)) for a in args):
                self.plots.opaque += 1  # a helper from elsewhere, given the model: it may plot it

    def hist_data(self, node: ast.Call, env: dict[str, Any]) -> Any:
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        target = None
        if isinstance(node.func, ast.Attribute) and last_name(node.func) == "hist" and not node.args \
                and not isinstance(node.func.value, ast.Name):
            target = node.func.value  # df.hist(), series.plot.hist()
        for key in ("x", "a", "data", "input"):
            if key in kw:
                target = kw[key]
                break
        if node.args:
            target = node.args[0]
        if target is None and isinstance(node.func, ast.Attribute):
            target = node.func.value  # pandas: df.plot(kind='hist'), s.hist()
            while isinstance(target, ast.Attribute) and target.attr == "plot":
                target = target.value
        return self.resolve(target, env) if target is not None else UNKNOWN

    def follow(self, fn: ast.FunctionDef | ast.AsyncFunctionDef, node: ast.Call, env: dict[str, Any]) -> None:
        """A call of a function the notebook defines: its body, with its arguments bound."""
        if fn.name in self.stack or len(self.stack) >= _MAX_DEPTH:
            return
        local = dict(self.book.env)
        params = [a.arg for a in (*fn.args.posonlyargs, *fn.args.args)]
        defaults = fn.args.defaults
        for name, default in zip(params[len(params) - len(defaults):], defaults):
            local[name] = self.resolve(default, env)
        for name in params:
            local.setdefault(name, UNKNOWN)
        for name, arg in zip(params, node.args):
            local[name] = self.resolve(arg, env)
        for k in node.keywords:
            if k.arg in params:
                local[k.arg] = self.resolve(k.value, env)
        for a in fn.args.kwonlyargs:
            local.setdefault(a.arg, UNKNOWN)
        self.stack.append(fn.name)
        try:
            self.block(fn.body, local)
        finally:
            self.stack.pop()

    # ---- data

    def resolve(self, node: ast.AST | None, env: Mapping[str, Any], depth: int = 0) -> Any:
        """What an expression holds: a Model, Params, Seq, Tup, Strs, StateDict, NOT_PARAM or UNKNOWN."""
        self.book.budget -= 1
        if node is None or depth > 40 or self.book.budget <= 0:
            return UNKNOWN
        r = lambda n: self.resolve(n, env, depth + 1)  # noqa: E731
        if isinstance(node, ast.Constant):
            return Strs(frozenset({node.value})) if isinstance(node.value, str) else NOT_PARAM
        if isinstance(node, ast.Name):
            return env.get(node.id, self.book.env.get(node.id, UNKNOWN))
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = [r(e) for e in node.elts]
            if items and all(isinstance(i, Strs) for i in items):
                return Seq(Strs(frozenset().union(*[i.values for i in items])))
            return Seq(union_items(items))
        if isinstance(node, ast.Dict):
            return DictData(tuple(r(k) for k in node.keys if k is not None), tuple(r(v) for v in node.values))
        if isinstance(node, (ast.ListComp, ast.GeneratorExp)):
            local = dict(env)
            for gen in node.generators:
                self.bind(gen.target, self.element(r(gen.iter)), None, local)
            return Seq(self.resolve(node.elt, local, depth + 1))
        if isinstance(node, ast.Starred):
            return r(node.value)
        if isinstance(node, ast.Attribute):
            base = r(node.value)
            if isinstance(base, Model):
                if node.attr in ("weight", "bias"):
                    return param_of(base, node.attr)
                return sub_model(base, node.attr)
            if isinstance(base, Params) and node.attr == "grad":
                return Params(frozenset(f"{n}.grad" for n in base.names))
            if isinstance(base, (Params, Seq)) and node.attr in _SAME_DATA:
                return base
            return base if base in (UNKNOWN, NOT_PARAM) else NOT_PARAM
        if isinstance(node, ast.Subscript):
            base = r(node.value)
            key = r(node.slice)
            if isinstance(base, Model):
                if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, int):
                    return sub_model(base, str(node.slice.value))
                return Model(base.root, base.params, frozenset({"*"}))
            if isinstance(base, StateDict):
                if isinstance(key, (Strs, Key)):
                    return Params(frozenset(key.values if isinstance(key, Strs) else key.names))
                return all_params(base.model)
            if isinstance(base, Seq):
                return base.item
            index = node.slice.value if isinstance(node.slice, ast.Constant) else None
            if isinstance(base, Tup) and isinstance(index, int):
                return base.items[index] if -len(base.items) <= index < len(base.items) else UNKNOWN
            if isinstance(base, DictData):
                return union(base.values)
            return base  # a slice of parameters is the parameters, of images still images
        if isinstance(node, ast.Call):
            return self.resolve_call(node, env, depth)
        if isinstance(node, (ast.BinOp,)):
            return union([r(node.left), r(node.right)])
        if isinstance(node, ast.IfExp):
            return union([r(node.body), r(node.orelse)])
        return UNKNOWN

    def resolve_call(self, node: ast.Call, env: Mapping[str, Any], depth: int) -> Any:
        r = lambda n: self.resolve(n, env, depth + 1)  # noqa: E731
        func = node.func
        name = last_name(func)
        model = self.book.model_of_call(node)
        if model is not None:
            return model
        root = _root_name(func)
        module_call = (isinstance(func, ast.Attribute) and root is not None  # np.ravel(w), torch.utils.data.X()
                       and root not in env and root not in self.book.env)
        if isinstance(func, ast.Attribute) and not module_call:
            base = r(func.value)
            if isinstance(base, Model):
                if name == "parameters":
                    return Seq(all_params(base))
                if name == "named_parameters":
                    return Seq(named(all_params(base)))
                if name in ("modules", "children"):
                    return Seq(Model(base.root, base.params, frozenset({"*"})))
                if name in ("named_modules", "named_children"):
                    return Seq(Tup((NOT_PARAM, Model(base.root, base.params, frozenset({"*"})))))
                if name == "state_dict":
                    return StateDict(base)
                if name in MODEL_CHAIN:
                    return base
                if name == "get_parameter" and node.args:
                    key = r(node.args[0])
                    return Params(frozenset(key.values)) if isinstance(key, Strs) else all_params(base)
                return NOT_PARAM  # net(x): outputs, not parameters
            if isinstance(base, StateDict):
                if name == "items":
                    return Seq(named(all_params(base.model)))
                if name == "values":
                    return Seq(all_params(base.model))
                if name == "keys":
                    return Seq(named(all_params(base.model)).items[0])
                if name == "get" and node.args:
                    key = r(node.args[0])
                    return Params(frozenset(key.values)) if isinstance(key, Strs) else all_params(base.model)
            if isinstance(base, DictData):
                if name == "items":
                    return Seq(Tup((union_items(list(base.keys)), union_items(list(base.values)))))
                if name == "values":
                    return Seq(union_items(list(base.values)))
                if name == "keys":
                    return Seq(union_items(list(base.keys)))
            if isinstance(base, Seq) and name in _SAME_DATA:
                return base
            if isinstance(base, Params) or base is UNKNOWN:
                return base  # w.flatten(), p.data.cpu().numpy(), w.mean(): still the same data
            if isinstance(base, (Strs, Tup)):
                return NOT_PARAM
            if base is NOT_PARAM and name not in _SAME_DATA:
                return NOT_PARAM
        if name == "getattr" and len(node.args) >= 2:
            base = r(node.args[0])
            key = r(node.args[1])
            if isinstance(base, Model) and isinstance(key, Strs):
                subs = [(param_of(base, k) if k in ("weight", "bias") else sub_model(base, k)) for k in key.values]
                if all(isinstance(s, Model) for s in subs):
                    return Model(base.root, base.params, frozenset().union(*[s.prefixes for s in subs]))
                return union(subs)
            return UNKNOWN
        if name == "zip":
            return Seq(Tup(tuple(self.element(r(a)) for a in node.args)))
        if name == "enumerate" and node.args:
            return Seq(Tup((NOT_PARAM, self.element(r(node.args[0])))))
        if name in ("list", "tuple", "sorted", "reversed", "iter") and node.args:
            return r(node.args[0])
        if name == "next" and node.args:
            return self.element(r(node.args[0]))
        if name in _SAME_DATA or (name and name in HIST_CALLS):
            args = [r(a) for a in node.args]
            return union(self.element(a) if isinstance(a, Seq) else a for a in args) if args else NOT_PARAM
        args = [r(a) for a in [*node.args, *[k.value for k in node.keywords]]]
        if any(isinstance(a, (Params, Model, StateDict)) for a in args):
            return union(a for a in args if isinstance(a, (Params, Model)))
        if name and name[:1].isupper() and name not in _DATA_CLASSES:
            return NOT_PARAM  # DataLoader(testset), CIFAR10(root, transform=t): never parameter data
        return UNKNOWN if any(a is UNKNOWN for a in args) else NOT_PARAM

    @staticmethod
    def element(data: Any) -> Any:
        """What a loop over `data` binds each time."""
        if isinstance(data, Seq):
            return data.item
        if isinstance(data, Strs):
            return data
        if isinstance(data, StateDict):
            return NOT_PARAM  # the keys
        if isinstance(data, DictData):
            return union_items(list(data.keys))
        if isinstance(data, Model):
            return Model(data.root, data.params, frozenset({"*"}))  # nn.Sequential / ModuleList
        return data if data in (UNKNOWN, NOT_PARAM) else (data if isinstance(data, Params) else NOT_PARAM)


def analyze_cells(sources: Sequence[tuple[str, str]]) -> dict[int, CellPlots]:
    """What each code cell plots, by cell index; `sources` is (cell_type, source) per cell.

    Cells are read in order, as they would run: a function or model defined in an earlier
    cell is known to later ones; a variable assigned at the top level stays bound.
    """
    book = _Notebook()
    out: dict[int, CellPlots] = {}
    for index, (kind, source) in enumerate(sources):
        if kind != "code":
            continue
        plots = CellPlots()
        tree = _parse(source if isinstance(source, str) else "")
        if tree is None:
            plots.readable = False
        else:
            try:
                _Walker(book, plots).block(tree.body, book.env)
            except RecursionError:
                plots.readable = False
        out[index] = plots
    return out
