"""Decoding what the sandboxed kernel sends: student-controlled JSON, read with a bound.

Every message from the kernel is decoded by jupyter_client's Session in the grader's process.
`bounded_unpack` is its unpacker with grader.jsondepth's nesting bound (a 20 000-deep display
would otherwise raise RecursionError, which nbclient reports as a dead kernel), and
`bounded_deserialize` makes a refused output cost only that output: it becomes a placeholder
in the cell that sent it. A refused message the run needs (a reply, a status) ends the run
(grader.driver.Runner._cells), with the reason.
"""

from __future__ import annotations

from typing import Any

from grader import jsondepth

__all__ = ["DROPPED", "OUTPUT_MESSAGES", "UndecodableMessage", "bounded_deserialize", "bounded_unpack",
           "dropped_text"]


class UndecodableMessage(Exception):
    """The kernel sent a message the grader cannot decode (nested too deep, not JSON): the
    run's reason says so; it is not the kernel's death. `detail` says what was wrong, `depth`
    how deeply it nested (levels) when that was the reason."""

    def __init__(self, detail: str, depth: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.depth = depth


def bounded_unpack(data: bytes | str) -> Any:
    """jupyter_client's JSON unpacker for messages from the kernel (student-controlled), with
    `grader.jsondepth`'s nesting bound: a 20 000-deep display would otherwise raise
    RecursionError in the grader, which nbclient reports as a dead kernel."""
    try:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        return jsondepth.loads(text)
    except jsondepth.TooDeep as exc:
        raise UndecodableMessage(str(exc)[:300], depth=exc.depth) from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise UndecodableMessage((str(exc).splitlines() or [type(exc).__name__])[0][:300]) from None


OUTPUT_MESSAGES = frozenset({"stream", "display_data", "execute_result", "update_display_data", "error",
                             "clear_output", "comm_open", "comm_msg", "comm_close"})
"""Kernel messages that only carry output (iopub): one whose content the grader refuses costs only
that content. Any other (execute_reply, status, ...) is needed to keep control of the run."""
DROPPED = "dllab_dropped"
"""Key of a message whose content was refused (`bounded_deserialize`): the UndecodableMessage."""


def dropped_text(exc: UndecodableMessage) -> str:
    """The placeholder output put in the cell instead of a refused output."""
    what = f"an output nested {exc.depth} levels deep" if exc.depth is not None else \
        f"an output the grader could not decode ({exc.detail[:200]})"
    return f"[dllab: {what} was dropped by the grader]\n"


def bounded_deserialize(session: Any) -> Any:
    """`session.deserialize` (jupyter_client's Session, its unpacker `bounded_unpack`) where an
    output message whose content cannot be decoded becomes a stderr stream holding a placeholder
    (`dropped_text`), marked with DROPPED: its header and parent header are the kernel's, so
    nbclient puts the placeholder in the cell that sent it. Anything else undecodable (a
    reply, a status, a header) raises UndecodableMessage: the run cannot go on without it."""
    original = session.deserialize

    def deserialize(msg_list: list[Any], content: bool = True, copy: bool = True) -> dict[str, Any]:
        try:
            return original(msg_list, content=content, copy=copy)
        except UndecodableMessage as exc:
            if not content:
                raise
            refused = exc
        # Again with the content left packed: the signature, checked (and remembered against
        # replays) by the first try, is let through once more.
        first = msg_list[0] if msg_list else b""
        signature = first if isinstance(first, bytes) else bytes(first.bytes)
        if session.auth is not None:
            session.digest_history.discard(signature)
        try:
            msg = original(msg_list, content=False, copy=copy)
        except Exception:  # noqa: BLE001 - its header is undecodable too: nobody to give it to
            raise refused from None
        finally:
            if session.auth is not None:
                session.digest_history.add(signature)
        if msg.get("msg_type") not in OUTPUT_MESSAGES:
            raise refused
        msg["header"] = dict(msg["header"], msg_type="stream")
        msg["msg_type"] = "stream"
        msg["content"] = {"name": "stderr", "text": dropped_text(refused)}
        msg["metadata"], msg["buffers"] = {}, []
        msg[DROPPED] = refused
        return msg

    return deserialize
