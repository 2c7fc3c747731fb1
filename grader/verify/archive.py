"""What kind of file the captured `model.pt` is, told from its bytes before anything loads it.

The file is written by student code (it shares the kernel with the probe), so `spec.json`'s claim
about it is not trusted. Two formats are accepted, both loaded only inside the evaluator's
sandbox, which holds no labels:

- **TorchScript** (`torch.jit.script`/`trace`): a zip of TorchScript code and tensors. It is
  restricted code, run by TorchScript's own interpreter (no Python, no imports), but code all
  the same, and `torch.jit.load`'s C++ reader is no security boundary: that is why it runs
  only in the sandbox. A plain `torch.save` pickle zip (no `code/`) is refused.
- **torch.export programs** (`torch.export.save`): accepted only when nothing in the archive
  is pickled or native. `torch.export.load` unpickles payloads marked `use_pickle` (and
  custom or opaque constants) with `weights_only=False`, loads AOTInductor shared libraries,
  falls back to full unpickling for sample inputs, resolves any `torch.*` attribute named as
  a graph target and parses shape expressions with sympy (`eval`). So: weights and constants
  must be raw bytes, sample inputs may only rebuild tensors (read as pickle opcodes, never
  run), graph targets must be ATen/prims operators or `_operator` arithmetic, and shape
  expressions plain arithmetic on shape symbols.

Anything else is refused with the reason, and the verification goes to the TA: never a fail.
"""

from __future__ import annotations

import io
import json
import pickletools
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grader.verify.spec import NotVerified

MAX_MEMBERS = 20_000
MAX_JSON_BYTES = 64 << 20
_TARGET = re.compile(r"^(torch\.ops\.(aten|prims)\.[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?"
                     r"|_operator\.(getitem|add|sub|mul|floordiv|truediv|mod|neg|pow|eq|ne|lt|le|gt|ge|and_|or_))$")
_SYMBOL = re.compile(r"^[a-z]\d+$")  # s0, u1: shape symbols
_SYM_FUNCS = {"FloorDiv", "CeilDiv", "ModularIndexing", "Mod", "PythonMod", "CleanDiv", "Max", "Min",
              "Abs", "Where", "CeilToInt", "FloorToInt", "TruncToInt", "RoundToInt", "IntTrueDiv",
              "FloatTrueDiv", "PowByNatural", "ToFloat", "Eq", "Ne", "True", "False", "oo",
              # sympy's srepr: Symbol('s31', positive=True, integer=True)
              "Symbol", "Integer", "Rational", "Add", "Mul", "Pow", "positive", "negative", "nonnegative",
              "integer", "real", "finite", "Infinity", "NegativeInfinity", "IntInfinity", "NegativeIntInfinity"}
_TENSOR_GLOBALS = {"torch._utils _rebuild_tensor_v2", "torch._utils _rebuild_parameter",
                   "collections OrderedDict", "torch device"} | {
    f"torch {t}Storage" for t in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char",
                                  "Byte", "Bool")}
_EXPORT_FILES = re.compile(r"^(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
                           r"|models/model\.json|data/sample_inputs/model\.pt"
                           r"|data/weights/(weight_\d+|model_weights_config\.json)"
                           r"|data/constants/(tensor_\d+|model_constants_config\.json))$")


def model_format(path: Path) -> str:
    """`torchscript` or `export`, after the checks above; raises NotVerified with the reason."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS:
                raise NotVerified(f"the captured model file holds {len(infos)} entries, more than a model has")
            names = [i.filename for i in infos]
            tops = {n.split("/", 1)[0] for n in names}
            if len(tops) != 1 or any("/" not in n or ".." in n.split("/") for n in names):
                raise NotVerified("the captured model file is not a TorchScript or torch.export archive")
            top = tops.pop() + "/"
            inner = {n[len(top):]: i for n, i in zip(names, infos)}
            if "archive_format" in inner:
                _check_export(zf, inner, top)
                return "export"
            if "data.pkl" in inner and "constants.pkl" in inner and any(n.startswith("code/") for n in inner):
                return "torchscript"
            if "data.pkl" in inner:
                raise NotVerified("the captured model file is a pickled model (torch.save), which the grader "
                                  "does not load: unpickling it could run any code")
    except zipfile.BadZipFile:
        pass
    except (OSError, RuntimeError, ValueError) as exc:  # a zip with odd entries (encrypted, bad sizes)
        raise NotVerified(f"the captured model file cannot be read as an archive ({type(exc).__name__})") from None
    raise NotVerified("the captured model file is not a TorchScript or torch.export archive")


def _check_export(zf: zipfile.ZipFile, inner: dict[str, zipfile.ZipInfo], top: str) -> None:
    odd = sorted(n for n in inner if not _EXPORT_FILES.match(n))
    if odd:
        raise NotVerified(f"the exported program carries {odd[0]!r}, which the grader does not load "
                          f"(only raw weights and the program are)")
    if zf.read(top + "archive_format").strip() != b"pt2":
        raise NotVerified("the exported program's archive format is not pt2")
    for config in ("data/weights/model_weights_config.json", "data/constants/model_constants_config.json"):
        doc = _json(zf, inner, top + config) if config in inner else {"config": {}}
        entries = doc.get("config") if isinstance(doc, dict) else None
        if not isinstance(entries, dict):
            raise NotVerified(f"the exported program's {config.rsplit('/', 1)[1]} is malformed")
        for fqn, meta in entries.items():
            if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
                raise NotVerified(f"the exported program stores {str(fqn)[:80]!r} pickled (use_pickle), which the "
                                  f"grader does not load: unpickling it could run any code")
            if not re.fullmatch(r"(weight|tensor)_\d+", str(meta.get("path_name"))):
                raise NotVerified(f"the exported program stores {str(fqn)[:80]!r} as an object, not a tensor")
    if "models/model.json" not in inner:
        raise NotVerified("the exported program has no models/model.json")
    _check_graph(_json(zf, inner, top + "models/model.json"))
    if "data/sample_inputs/model.pt" in inner:
        if inner["data/sample_inputs/model.pt"].file_size > MAX_JSON_BYTES:
            raise NotVerified("the exported program's sample inputs are too large")
        _check_tensor_pickle(zf.read(top + "data/sample_inputs/model.pt"))


def _json(zf: zipfile.ZipFile, inner: dict[str, zipfile.ZipInfo], name: str) -> Any:
    if zf.getinfo(name).file_size > MAX_JSON_BYTES:
        raise NotVerified(f"the exported program's {name.rsplit('/', 1)[-1]} is too large")
    try:
        return json.loads(zf.read(name))
    except RecursionError:
        raise NotVerified(f"the exported program's {name.rsplit('/', 1)[-1]} is nested too deeply") from None
    except ValueError:
        raise NotVerified(f"the exported program's {name.rsplit('/', 1)[-1]} is not valid JSON") from None


def _walk(value: Any) -> Iterator[tuple[str, Any]]:
    """(key, value) of every dict entry, without recursion (the JSON may be deep)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                yield k, v
                stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)


def _check_graph(doc: Any) -> None:
    for key, value in _walk(doc):
        if key == "target" and isinstance(value, str) and not _TARGET.match(value):
            raise NotVerified(f"the exported program calls {value[:80]!r}, which the grader does not run "
                              f"(only ATen operators)")
        if key == "expr_str" and isinstance(value, str):
            value = re.sub(r"'[a-z]\d+'", "s0", value)  # quoted symbol names, nothing else quoted
            names = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", value)
            if (not re.fullmatch(r"[A-Za-z0-9_+\-*/%(), <>=!.]*", value) or "__" in value
                    or any(not (_SYMBOL.match(n) or n in _SYM_FUNCS) for n in names)):
                raise NotVerified(f"the exported program has a shape expression the grader does not "
                                  f"evaluate ({value[:80]!r})")


def _check_tensor_pickle(blob: bytes) -> None:
    """The sample inputs (a torch.save zip) may only rebuild tensors: its pickle's opcodes are
    read, never executed."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pkl) != 1:
                raise NotVerified("the exported program's sample inputs are not a tensor archive")
            if zf.getinfo(pkl[0]).file_size > MAX_JSON_BYTES:
                raise NotVerified("the exported program's sample inputs are too large")
            data = zf.read(pkl[0])
    except zipfile.BadZipFile:
        raise NotVerified("the exported program's sample inputs are not a tensor archive") from None
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(str(arg))
            elif op.name == "GLOBAL":
                _allowed_global(str(arg).replace("\n", " "))
            elif op.name == "STACK_GLOBAL":
                _allowed_global(" ".join(strings[-2:]))
            elif op.name in ("INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4"):
                raise NotVerified(f"the exported program's sample inputs build objects ({op.name}), not only "
                                  f"tensors, so they are not loaded")
    except ValueError:
        raise NotVerified("the exported program's sample inputs are not a valid pickle") from None


def _allowed_global(name: str) -> None:
    if name not in _TENSOR_GLOBALS:
        raise NotVerified(f"the exported program's sample inputs name {name[:80]!r}, not only tensors, "
                          f"so they are not loaded: unpickling them could run any code")
