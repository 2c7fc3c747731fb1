"""What an expression in a notebook's code holds, as far as `ast` can tell (see plotcode).

Values: a `Model` (a module, with its parameter names when its class could be read),
`Params` (parameter data), `Seq` (something looped over), `Tup`, `Strs` (string constants),
`Key` (the names that go with parameters), `StateDict`, `DictData`, and the two ends:
`UNKNOWN` (cannot be traced) and `NOT_PARAM` (traced, and not a parameter).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MODEL_CHAIN = {"to", "cuda", "cpu", "float", "double", "half", "train", "eval", "requires_grad_"}
# torch.nn layers that own parameters, and whether their bias exists by default.
_LAYERS = {"Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
           "Linear", "LazyLinear", "LazyConv2d", "Bilinear", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
           "LayerNorm", "GroupNorm", "Embedding", "PReLU"}
_NO_BIAS = {"Embedding", "PReLU"}
# Calls assigned to `self.x` in a model's __init__ that build no sub-module.
_NOT_MODULES = {"device", "tensor", "zeros", "ones", "randn", "rand", "arange", "int", "float", "len", "range",
                "list", "dict", "tuple", "get", "max", "min", "sqrt", "prod"}


@dataclass(frozen=True)
class Model:
    """A module: the root model `root` seen at `prefixes` ('' the root itself, '*' any sub-module)."""

    root: str
    params: tuple[str, ...] | None
    """Every parameter name of the root model, when its definition could be read."""
    prefixes: frozenset[str] = frozenset({""})


@dataclass(frozen=True)
class Params:
    """Parameter data: named parameters, or every parameter of a model whose names are unknown."""

    names: frozenset[str] = frozenset()
    unnamed: frozenset[str] = frozenset()
    """Roots whose parameters (all, or all '.weight'/.bias' when suffixed: 'net:weight') are shown."""


@dataclass(frozen=True)
class Seq:
    """An iterable whose elements are `item` (a loop over it binds `item`)."""

    item: Any


@dataclass(frozen=True)
class Tup:
    """A tuple of values (unpacked by `for name, p in ...`)."""

    items: tuple[Any, ...]


@dataclass(frozen=True)
class Strs:
    """String constants (a layer name looped over, a state_dict key)."""

    values: frozenset[str]


@dataclass(frozen=True)
class Key:
    """The name that goes with each parameter in `for name, p in net.named_parameters()`."""

    names: frozenset[str]


@dataclass(frozen=True)
class StateDict:
    """`model.state_dict()`: keys are parameter names."""

    model: Model


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


class _NotParam:
    def __repr__(self) -> str:
        return "NOT_PARAM"


UNKNOWN = _Unknown()
"""Data the code does not let us trace (a function's argument nobody passed, an import)."""
NOT_PARAM = _NotParam()
"""Data traced to something that is not a model parameter (images, numbers, strings)."""


def last_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


class ModelReader:
    """Parameter names of the models a notebook defines, read from their classes."""

    def __init__(self) -> None:
        self.classes: dict[str, ast.ClassDef] = {}
        self._param_cache: dict[str, tuple[str, ...] | None] = {}

    def forget_models(self) -> None:
        """A class was (re)defined: parameter names read before may be stale."""
        self._param_cache.clear()

    def class_params(self, name: str, depth: int = 0) -> tuple[str, ...] | None:
        """Parameter names of a model class defined in the notebook, when they can be read."""
        if name in self._param_cache:
            return self._param_cache[name]
        cls = self.classes.get(name)
        if cls is None or depth > 3:
            return None
        self._param_cache[name] = None  # a cycle reads as unknown
        init = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
        names: list[str] = []
        known = init is not None
        for node in ast.walk(init) if init is not None else ():
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                t = node.targets[0]
                if not (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"):
                    continue
                call_name = last_name(node.value.func) if isinstance(node.value, ast.Call) else None
                if call_name == "Parameter":
                    names.append(t.attr)
                    continue
                sub = self.module_params(node.value, depth + 1)
                if sub is None and call_name is not None and call_name not in _NOT_MODULES:
                    known = False  # a sub-module we cannot read
                names += [f"{t.attr}.{p}" for p in sub or ()]
        result = tuple(names) if known and names else None
        self._param_cache[name] = result
        return result

    def module_params(self, node: ast.AST, depth: int = 0) -> tuple[str, ...] | None:
        """Parameter names (relative) of a module built by `node`; () for one without any."""
        if not isinstance(node, ast.Call):
            return None
        name = last_name(node.func)
        if name in _LAYERS:
            no_bias = name in _NO_BIAS or any(k.arg == "bias" and isinstance(k.value, ast.Constant)
                                              and k.value.value is False for k in node.keywords)
            return ("weight",) if no_bias else ("weight", "bias")
        if name == "Sequential":
            out: list[str] = []
            for i, arg in enumerate(node.args):
                sub = self.module_params(arg, depth + 1)
                if sub is None:
                    return None
                out += [f"{i}.{p}" for p in sub]
            return tuple(out)
        if name in self.classes:
            return self.class_params(name, depth)
        if name and name[:1].isupper():
            return () if name in ("ReLU", "Dropout", "MaxPool2d", "AvgPool2d", "Flatten", "Softmax",
                                  "LogSoftmax", "Sigmoid", "Tanh", "Identity", "AdaptiveAvgPool2d",
                                  "LeakyReLU", "ELU", "GELU", "Dropout2d") else None
        return None

    def model_of_call(self, node: ast.Call) -> Model | None:
        """`Net()`, `Net().to(device)`, `nn.Sequential(...)`: the model it builds."""
        while (isinstance(node.func, ast.Attribute) and node.func.attr in MODEL_CHAIN
               and isinstance(node.func.value, ast.Call)):
            node = node.func.value
        name = last_name(node.func)
        if name in self.classes or name in ("Sequential",) or name in _LAYERS:
            return Model(root=name or "?", params=self.module_params(node))
        if name and re.fullmatch(r"(?:resnet|vgg|alexnet|densenet|mobilenet|efficientnet|lenet)\w*", name,
                                 re.IGNORECASE):
            return Model(root=name, params=None)
        return None


def sub_model(m: Model, attr: str) -> Model:
    prefixes = frozenset(f"{p}{attr}." if p != "*" else "*" for p in m.prefixes)
    return Model(m.root, m.params, prefixes)


def param_of(m: Model, attr: str) -> Params:
    """`.weight` / `.bias` of (sub-)modules of `m`."""
    names: set[str] = set()
    unnamed: set[str] = set()
    for p in m.prefixes:
        if p == "*":
            if m.params is None:
                unnamed.add(f"{m.root}:{attr}")
            else:
                names.update(n for n in m.params if n.rsplit(".", 1)[-1] == attr)
        else:
            names.add(f"{p}{attr}")  # the code names it; trust it over our reading of the class
    return Params(frozenset(names), frozenset(unnamed))


def all_params(m: Model) -> Params:
    if m.params is None:
        return Params(unnamed=frozenset({m.root}))
    if m.prefixes == frozenset({""}) or "*" in m.prefixes:
        return Params(frozenset(m.params))
    return Params(frozenset(n for n in m.params if any(n.startswith(p) for p in m.prefixes)))


def union(values: Iterable[Any]) -> Any:
    """What a list of data holds together (a histogram of [w1, w2] shows both)."""
    names: set[str] = set()
    unnamed: set[str] = set()
    unknown = False
    for v in values:
        if isinstance(v, Params):
            names |= v.names
            unnamed |= v.unnamed
        elif isinstance(v, Model):
            p = all_params(v)
            names |= p.names
            unnamed |= p.unnamed
        elif v is UNKNOWN:
            unknown = True
    if names or unnamed:
        return Params(frozenset(names), frozenset(unnamed))
    return UNKNOWN if unknown else NOT_PARAM


def named(params: Params) -> Tup:
    """(name, parameter) as `named_parameters()` yields them."""
    return Tup((Key(params.names) if params.names else NOT_PARAM, params))


def string_test(test: ast.expr) -> tuple[str, Any] | None:
    """(variable, predicate on a parameter name) for "'weight' in name", "name.endswith('bias')", ..."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = string_test(test.operand)
        return (inner[0], lambda n, f=inner[1]: not f(n)) if inner else None
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        left, op, right = test.left, test.ops[0], test.comparators[0]
        if isinstance(op, (ast.In, ast.NotIn)) and isinstance(left, ast.Constant) and isinstance(left.value, str) \
                and isinstance(right, ast.Name):
            word = left.value
            return (right.id, (lambda n: word in n) if isinstance(op, ast.In) else (lambda n: word not in n))
        if isinstance(op, (ast.Eq, ast.NotEq)):
            name, const = (left, right) if isinstance(left, ast.Name) else (right, left)
            if isinstance(name, ast.Name) and isinstance(const, ast.Constant) and isinstance(const.value, str):
                word = const.value
                return (name.id, (lambda n: n == word) if isinstance(op, ast.Eq) else (lambda n: n != word))
    if (isinstance(test, ast.Call) and isinstance(test.func, ast.Attribute) and isinstance(test.func.value, ast.Name)
            and test.func.attr in ("endswith", "startswith") and len(test.args) == 1
            and isinstance(test.args[0], ast.Constant) and isinstance(test.args[0].value, str)):
        word, attr = test.args[0].value, test.func.attr
        return (test.func.value.id, lambda n: getattr(n, attr)(word))
    return None


def name_filter(test: ast.expr, env: Mapping[str, Any], *, negate: bool) -> dict[str, Any] | None:
    """Bindings narrowed by a test on a parameter's name, or None when the test is not one.

    The name variable and the parameter variable that came with it (same names) are both
    narrowed, so that `plt.hist(p)` under `if 'weight' in name:` shows only the weights.
    """
    found = string_test(test)
    if found is None:
        return None
    var, pred = found
    key = env.get(var)
    if not isinstance(key, Key):
        return None
    keep = frozenset(n for n in key.names if bool(pred(n)) != negate)
    out: dict[str, Any] = {var: Key(keep)}
    for k, v in env.items():
        if isinstance(v, Params) and v.names == key.names and not v.unnamed:
            out[k] = Params(keep)
    return out


@dataclass(frozen=True)
class DictData:
    keys: tuple[Any, ...]
    values: tuple[Any, ...]


def union_items(items: list[Any]) -> Any:
    """One value standing for every element of a list (loops bind each in turn)."""
    if not items:
        return NOT_PARAM
    if all(isinstance(i, Strs) for i in items):
        return Strs(frozenset().union(*[i.values for i in items]))
    if all(isinstance(i, Model) for i in items) and len({(i.root, i.params) for i in items}) == 1:
        return Model(items[0].root, items[0].params, frozenset().union(*[i.prefixes for i in items]))
    if all(isinstance(i, Tup) for i in items) and len({len(i.items) for i in items}) == 1:
        return Tup(tuple(union_items([i.items[k] for i in items]) for k in range(len(items[0].items))))
    return union(items)
