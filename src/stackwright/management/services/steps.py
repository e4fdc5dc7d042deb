"""The steps a job is made of, and how their outcomes are recorded and replayed.

A job that does more than one transaction's work is a generator: it yields steps and
receives their outcomes (`answer = yield AgentStep(...)`); a failed step is thrown into it
as the exception, where it may compensate with further steps. The executor
(`services/jobs.py`) runs each step and records its outcome in the job's row:

- `DbStep(fn, *args)`: `fn(ctx, *args)` in one write transaction with a fresh context;
  that same transaction records the outcomes of the steps before it and which step comes
  next, so a job's changes and its progress never disagree.
- `AgentStep(host, request, timeout, settle)`: one call to one host's agent through the
  gateway, outside any transaction. Its answer is recorded by the next transaction.
- `WaitStep(fn, *args)`: `fn(waiter, *args)` outside any transaction, for waits that look
  at the database (read-only) and the agents between sleeps; its result is recorded like an
  agent's answer. It must be safe to run again.
A job whose result is a read (the VM as its last step left it) returns `Result(fn, *args)`:
the executor reads it in the transaction that records the job's end, not in a step of its own.

Between steps the generator may only compute: it holds ids and plain values, never rows of
a closed session. After a restart (or on another engine) the executor runs the generator
again from the start and feeds it the recorded outcomes, so it reaches the same point
without repeating anything; an agent step whose outcome was never recorded is first
settled by asking the host (`settle`), and sent again only when the host says it was not
done.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from typing import Any

from stackwright.protocol import codec
from stackwright.protocol import messages as m

from .. import errors
from ..errors import ApiError, CloudRuntimeError, ResourceUnavailable
from .gateway import CONNECT_WAIT, AgentAbsent, CallLost, HostRef


@dataclasses.dataclass(frozen=True)
class _Call:
    """`fn` and the arguments it is called with after its first one: `Kind(fn, *args)`."""
    fn: Callable[..., Any]
    args: tuple = ()

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "args", args)


class DbStep(_Call):
    """`fn(ctx, *args)` in a write transaction of its own."""


# settle(ask) -> the answer the request would have given if it was already carried out, or None
# to send it; `ask(request)` sends a read-only request to the same host.
Settle = Callable[[Callable[[m.Request], m.Answer]], "m.Answer | None"]


@dataclasses.dataclass(frozen=True)
class AgentStep:
    host: HostRef
    request: m.Request
    timeout: float
    settle: Settle | None = None
    connect_wait: float = CONNECT_WAIT     # 0: an agent not connected now is skipped (AgentAbsent)


class WaitStep(_Call):
    """`fn(waiter, *args)` outside any transaction."""


class Result(_Call):
    """What a job returns when its result is a read: `fn(ctx, *args)` in the transaction that
    records the job's end (its last database step's, or the one recording its last agent
    answer), instead of a database step of its own that only reads."""


Step = DbStep | AgentStep | WaitStep
Steps = Generator[Step, Any, Any]


class StepFailed(Exception):
    """An unexpected failure of a step, as replayed from the record (not an ApiError)."""


# --- settling agent steps whose outcome was not recorded ----------------------------------


def settle_by(query: m.Request, done: Callable[[m.Answer], bool]) -> Settle:
    """Settle a request by asking the host `query` (read-only): done when `done(answer)`; a host
    that does not know what was asked about has not done it."""
    def settle(ask: Callable[[m.Request], m.Answer]) -> m.Answer | None:
        try:
            answer = ask(query)
        except (AgentAbsent, CallLost):
            raise           # the host could not say
        except ResourceUnavailable:
            return None
        return answer if done(answer) else None

    return settle


def settle_guest(name: str, *done: m.VmState) -> Settle:
    """Settle a guest request by the guest's state on the host: done when it is in `done`."""
    return settle_by(m.QueryVm(name=name), lambda answer: answer.state in done)


# --- recording outcomes -------------------------------------------------------------------


def record_value(value: Any) -> dict:
    """A step's successful outcome as JSON: protocol objects keep their type."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"message": type(value).__name__, "value": codec.encode_as(value, type(value))}
    if isinstance(value, HostRef):
        return {"host": list(value)}
    return {"value": value}


def record_error(error: BaseException) -> dict:
    if isinstance(error, ApiError):
        return {"error": type(error).__name__, "text": error.text, "errorcode": error.errorcode,
                "cserrorcode": error.cserrorcode}
    return {"error": None, "text": str(error) or type(error).__name__}


def replay(outcome: dict) -> tuple[bool, Any]:
    """(True, value) or (False, exception) from a recorded outcome."""
    if "error" in outcome:
        cls = getattr(errors, outcome["error"] or "", None)
        if cls is None:
            from . import gateway

            cls = getattr(gateway, outcome["error"] or "", None)
        if isinstance(cls, type) and issubclass(cls, ApiError):
            return False, cls(outcome["text"], errorcode=outcome.get("errorcode"),
                              cserrorcode=outcome.get("cserrorcode"))
        if outcome["error"]:
            return False, CloudRuntimeError(outcome["text"], errorcode=outcome.get("errorcode"))
        return False, StepFailed(outcome["text"])
    if "message" in outcome:
        return True, codec.decode(_message_type(outcome["message"]), outcome["value"])
    if "host" in outcome:
        return True, HostRef(*outcome["host"])
    return True, outcome["value"]


def _message_type(name: str) -> type:
    cls = getattr(m, name, None)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ValueError(f"unknown recorded message type {name}")
    return cls
