"""The one exception type the CLI turns into a one-line message and exit code 2.

A `GraderError` means the grader itself is misconfigured or was called wrongly (a bad
rubric, a missing dataset folder, an unknown lab). A bad *submission* is never an
exception: it becomes a result that carries the reason.

Every `GraderError` survives pickling, whatever its constructor takes: a worker process (the
local pool, a rescore pool, a Dask worker through cloudpickle) sends it back to the batch,
which must see the same error, not a dead worker. `Exception`'s own pickling calls the class
with `self.args`, which a subclass that passes a built message to `super().__init__` (like
`RubricError(source, problems)`) cannot take; so the constructor's own arguments are kept
and the copy is rebuilt from them.
"""

from __future__ import annotations

from typing import Any


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], kwargs: dict[str, Any]) -> BaseException:
    return cls(*args, **kwargs)


class GraderError(Exception):
    """A configuration or usage error, shown to the user as one line."""

    def __new__(cls, *args: Any, **kwargs: Any) -> GraderError:
        self = super().__new__(cls, *args)
        self._init_args = (args, kwargs)  # what `__reduce__` rebuilds the copy from
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        args, kwargs = self.__dict__.get("_init_args", (self.args, {}))
        state = {k: v for k, v in self.__dict__.items() if k != "_init_args"}
        return _rebuild, (type(self), args, kwargs), state or None


class DatasetError(GraderError):
    """A dataset folder is missing or not in the expected on-disk format."""
