"""The action-type registry: what a playbook action can do, and the contract its handler keeps (DESIGN §9).

An action type is registered once (integrations register Slack/HubSpot/webhook types when their app loads;
tests register their own). The executor runs a run in two steps:

1. `prepare(context) -> request` — once, before the first attempt: render templates, resolve targets. The
   request is stored on the ActionRun, so every retry sends exactly the same thing.
2. `send(request, context) -> response` — each attempt. It raises `RateLimited(retry_after)` for a 429 (the
   attempt is not counted), `Retryable(message, retry_after=None)` for a 5xx / network error, `Permanent`
   for a provider's refusal (4xx validation: the run fails for good), `Broken` when the credentials are
   bad (the run fails, not retried; the connection is to be marked broken by the integration).

`idempotent` says whether `send` may be repeated after an ambiguous crash (a run found in `sending` with its
lease expired): list membership is desired state, so yes; a Slack post or a task create is not — such a run
is re-sent only if `confirm(request, context)` finds it was not delivered (it returns the provider's response
when it was, None when it was not). Without `confirm`, an ambiguous non-idempotent run ends dead: one missed
message rather than two.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class ActionError(Exception):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class RateLimited(ActionError):
    """429: try again after `retry_after` seconds; does not use up an attempt."""


class Retryable(ActionError):
    """5xx, timeout, connection error: retried with backoff (never before `retry_after`)."""


class Permanent(ActionError):
    """The provider refused the request as it is (validation): failed for good."""


class Broken(ActionError):
    """Authentication/authorization failed: the connection needs a person; failed for good."""


@dataclass(frozen=True)
class ActionContext:
    """What a handler may read: plain data, no ORM objects (handlers may run in another process)."""

    tenant_id: int
    run_id: int
    playbook_id: int
    enrollment_id: int
    action_id: str
    params: Mapping[str, Any]
    account: Mapping[str, Any] | None = None
    user: Mapping[str, Any] | None = None
    membership: Mapping[str, Any] | None = None


def _no_errors(params: Mapping[str, Any]) -> dict[str, str]:
    return {}


def _as_request(context: ActionContext) -> dict[str, Any]:
    return {"params": dict(context.params)}


@dataclass(frozen=True)
class TenantFacts:
    """What an action type may check its params against when a playbook is saved (plain data)."""

    tenant_id: int
    obj: str  # the playbook's object: "account" or "user"
    properties: Mapping[str, Mapping[str, str]]  # entity -> property key -> type (the data catalogue)


@dataclass(frozen=True)
class ActionType:
    name: str
    send: Callable[[Mapping[str, Any], ActionContext], Mapping[str, Any]]
    idempotent: bool
    targets: frozenset[str] = frozenset({"entity"})  # "entity" (the enrolled account/user) and/or "users"
    prepare: Callable[[ActionContext], dict[str, Any]] = _as_request
    confirm: Callable[[Mapping[str, Any], ActionContext], Mapping[str, Any] | None] | None = None
    params_errors: Callable[[Mapping[str, Any]], dict[str, str]] = _no_errors
    # Checks needing the tenant (templates against its catalogue, a named connection): when params_errors passed.
    tenant_params_errors: Callable[[Mapping[str, Any], TenantFacts], dict[str, str]] | None = None
    description: str = ""
    params_schema: Mapping[str, Any] = field(default_factory=dict)  # for the builder UI: {name: {"type", ...}}


_REGISTRY: dict[str, ActionType] = {}


def register(action_type: ActionType) -> None:
    _REGISTRY[action_type.name] = action_type


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def get(name: str) -> ActionType | None:
    return _REGISTRY.get(name)


def registered() -> dict[str, ActionType]:
    return dict(_REGISTRY)


# --- built-in: log ---------------------------------------------------------------------------------------


def _log_send(request: Mapping[str, Any], context: ActionContext) -> Mapping[str, Any]:
    import logging

    # "message" is a LogRecord attribute: as an `extra` key it would make every enabled log call fail.
    logging.getLogger("playbooks.actions.log").info(
        "playbook action (log)",
        extra={"tenant": context.tenant_id, "playbook": context.playbook_id, "run": context.run_id,
               "action": context.action_id, "text": request.get("params", {}).get("message", "")},
    )  # fmt: skip
    return {"logged": True}


def _log_params(params: Mapping[str, Any]) -> dict[str, str]:
    message = params.get("message", "")
    return {} if isinstance(message, str) else {"message": "message is a text"}


LOG = ActionType(
    name="log",
    send=_log_send,
    idempotent=True,
    targets=frozenset({"entity", "users"}),
    params_errors=_log_params,
    description="Write a line to the application log (dry runs).",
    params_schema={"message": {"type": "text", "required": False}},
)
register(LOG)
