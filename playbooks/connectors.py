"""Playbook action types that reach outside through `integrations` (DESIGN §3: playbooks -> integrations):
`slack.send_message` and `webhook.post`. Each renders its templates once, in `prepare`, so the text is stored
on the ActionRun and every retry sends the same words; `send` maps the integration's outcome onto the
executor's rules (429: rescheduled at Retry-After without an attempt; auth: dead, connection broken;
validation: dead with the provider's message; 5xx/network: retried; no answer to a non-idempotent post:
dead rather than risk a second message)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from integrations import delivery, hubspot_delivery
from integrations.clients import Outcome
from integrations.models import Provider
from integrations.services import NoConnection, connection_for
from integrations.templates import TemplateInvalid, render, template_errors
from playbooks.actions import (
    ActionContext,
    ActionType,
    Broken,
    Permanent,
    RateLimited,
    Retryable,
    TenantFacts,
    register,
)
from plgapp.models import Tenant

COLOR = re.compile(r"^(good|warning|danger|#[0-9A-Fa-f]{6})$")
SLACK_CHANNEL = re.compile(r"^[#@]?[A-Za-z0-9._-]{1,80}$")


def _raise_unless_ok(outcome: Outcome) -> Mapping[str, Any]:
    if outcome.kind == "ok":
        return outcome.body or {}
    if outcome.kind == "rate_limited":
        raise RateLimited(outcome.message, retry_after=outcome.retry_after)
    if outcome.kind == "auth":
        raise Broken(outcome.message)
    if outcome.kind == "invalid":
        raise Permanent(outcome.message)
    if outcome.kind == "ambiguous":  # maybe delivered: retried later, and the retry confirms before re-sending
        raise Retryable(f"{outcome.message}; checked with the provider before any resend",
                        retry_after=float(settings.PLAYBOOK_CONFIRM_DELAY_SECONDS))  # fmt: skip
    raise Retryable(outcome.message, retry_after=outcome.retry_after)


def template_context(context: ActionContext) -> dict[str, Any]:
    """What templates see: the account, user and membership of the run, with links to their pages."""
    slug = Tenant.objects.filter(pk=context.tenant_id).values_list("slug", flat=True).first() or ""
    from playbooks.models import Playbook

    name = Playbook.objects.for_tenant(context.tenant_id).filter(pk=context.playbook_id).values_list("name", flat=True)
    values: dict[str, Any] = {"playbook": {"name": name.first() or ""}, "membership": dict(context.membership or {})}
    if context.account is not None:
        values["account"] = {**context.account, "url": delivery.account_url(slug, context.account["id"])}
    if context.user is not None:
        values["user"] = {**context.user, "url": delivery.user_url(slug, context.user["id"])}
    else:
        values["user"] = {}
    return values


class PreviewNotFound(Exception):
    pass


def template_preview(*, tenant: Tenant, template: str, account_id: int | None, user_id: int | None) -> str:
    """`template` rendered for a chosen account and/or user of the tenant, as a message would be (the builder's
    live preview). Raises TemplateInvalid (what is wrong) or PreviewNotFound (no such account or user)."""
    from accounts.models import Membership
    from playbooks.selectors import account_data, user_data

    account = account_data(tenant, account_id) if account_id is not None else None
    user = user_data(tenant, user_id) if user_id is not None else None
    if (account_id is not None and account is None) or (user_id is not None and user is None):
        raise PreviewNotFound("no such account or user")
    membership: dict[str, Any] = {}
    if account_id is not None and user_id is not None:
        found = Membership.objects.for_tenant(tenant).filter(account_id=account_id, end_user_id=user_id)
        membership = dict(found.values_list("properties", flat=True).first() or {})
    context = ActionContext(tenant_id=tenant.pk, run_id=0, playbook_id=0, enrollment_id=0, action_id="preview",
                            params={}, account=account, user=user, membership=membership)  # fmt: skip
    values = template_context(context)
    values["playbook"] = {"name": "Preview"}
    return render(template, values)


def _connection_errors(params: Mapping[str, Any], facts: TenantFacts, provider: str) -> dict[str, str]:
    connection_id = params.get("connection_id")
    if connection_id is None:
        return {}
    try:
        connection_for(tenant_id=facts.tenant_id, provider=provider, connection_id=int(connection_id))
    except NoConnection as exc:
        return {"connection_id": str(exc)}
    return {}


def _connection_id(params: Mapping[str, Any]) -> dict[str, str]:
    value = params.get("connection_id")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        return {"connection_id": "the id (a number) of one of the tenant's connections"}
    return {}


# --- slack.send_message ------------------------------------------------------------------------------------


def _slack_params(params: Mapping[str, Any]) -> dict[str, str]:
    errors = _connection_id(params)
    unknown = set(params) - {"channel", "text", "color", "connection_id"}
    for key in sorted(unknown):
        errors[key] = "not a parameter of slack.send_message (channel, text, color, connection_id)"
    channel = params.get("channel")
    if not isinstance(channel, str) or not SLACK_CHANNEL.match(channel):
        errors["channel"] = "a channel id (C0123…) or name (#sales)"
    if not isinstance(params.get("text"), str) or not params["text"].strip():
        errors["text"] = "the message, a template such as {{ account.name }} is a PQA"
    color = params.get("color")
    if color is not None and (not isinstance(color, str) or not COLOR.match(color)):
        errors["color"] = "good, warning, danger or a hex colour like #2EB67D"
    return errors


def _slack_tenant_params(params: Mapping[str, Any], facts: TenantFacts) -> dict[str, str]:
    errors = _connection_errors(params, facts, Provider.SLACK)
    problem = template_errors(params.get("text"), facts.properties, obj=facts.obj)
    if problem:
        errors["text"] = problem
    return errors


def _slack_prepare(context: ActionContext) -> dict[str, Any]:
    try:
        text = render(str(context.params["text"]), template_context(context))
    except TemplateInvalid as exc:
        raise Permanent(f"the message template cannot be rendered: {exc}") from None
    return {"channel": context.params["channel"], "text": text, "color": context.params.get("color"),
            "connection_id": context.params.get("connection_id"),
            "marker": f"plgrun{context.run_id}"}  # fmt: skip


def _slack_send(request: Mapping[str, Any], context: ActionContext) -> Mapping[str, Any]:
    return _raise_unless_ok(
        delivery.slack_post(
            tenant_id=context.tenant_id,
            connection_id=request.get("connection_id"),
            channel=str(request["channel"]),
            text=str(request["text"]),
            color=request.get("color"),
            run_id=context.run_id,
            marker=request.get("marker"),
        )
    )


def _slack_confirm(request: Mapping[str, Any], context: ActionContext) -> Mapping[str, Any] | None:
    """After a worker died mid-post: the message if Slack has it (found by the marker in its metadata), else None.
    Requests prepared before markers existed cannot be confirmed: Permanent, so they end dead as before."""
    marker = request.get("marker")
    if not marker:
        raise Permanent("the request carries no marker: delivery cannot be confirmed")
    try:
        found = delivery.slack_find(tenant_id=context.tenant_id, connection_id=request.get("connection_id"),
                                    channel=str(request["channel"]), marker=str(marker))  # fmt: skip
    except delivery.LookupFailed as exc:
        raise Retryable(exc.message) from None
    return {**found, "confirmed": True} if found else None


SLACK_SEND_MESSAGE = ActionType(
    name="slack.send_message",
    send=_slack_send,
    idempotent=False,
    targets=frozenset({"entity", "users"}),
    prepare=_slack_prepare,
    confirm=_slack_confirm,
    params_errors=_slack_params,
    tenant_params_errors=_slack_tenant_params,
    description="Post a message to a Slack channel (text template, optional colour bar).",
    params_schema={
        "channel": {"type": "slack_channel", "required": True},
        "text": {"type": "template", "required": True},
        "color": {"type": "choice", "choices": ["good", "warning", "danger"], "required": False},
        "connection_id": {"type": "connection", "provider": "slack", "required": False},
    },
)


# --- webhook.post ------------------------------------------------------------------------------------------


def _webhook_params(params: Mapping[str, Any]) -> dict[str, str]:
    errors = _connection_id(params)
    for key in sorted(set(params) - {"event", "data", "connection_id"}):
        errors[key] = "not a parameter of webhook.post (event, data, connection_id)"
    if not isinstance(params.get("event", "playbook.action"), str):
        errors["event"] = "a name for the receiver, e.g. pqa.qualified"
    data = params.get("data", {})
    if not isinstance(data, dict) or not all(isinstance(value, str) for value in data.values()):
        errors["data"] = 'an object of text templates, e.g. {"owner": "{{ account.properties.owner }}"}'
    return errors


def _webhook_tenant_params(params: Mapping[str, Any], facts: TenantFacts) -> dict[str, str]:
    errors = _connection_errors(params, facts, Provider.WEBHOOK)
    for key, template in (params.get("data") or {}).items():
        problem = template_errors(template, facts.properties, obj=facts.obj)
        if problem:
            errors[f"data.{key}"] = problem
    return errors


def _webhook_prepare(context: ActionContext) -> dict[str, Any]:
    values = template_context(context)
    try:
        data = {key: render(str(template), values) for key, template in (context.params.get("data") or {}).items()}
    except TemplateInvalid as exc:
        raise Permanent(f"a data template cannot be rendered: {exc}") from None
    payload = {
        "event": context.params.get("event", "playbook.action"),
        "idempotency_key": f"run-{context.run_id}",  # receivers drop repeats: retries are safe
        "playbook": values["playbook"], "action": context.action_id,
        "account": values.get("account"), "user": values.get("user") or None,
        "membership": values["membership"] or None, "data": data,
    }  # fmt: skip
    return {"connection_id": context.params.get("connection_id"), "payload": payload}


def _webhook_send(request: Mapping[str, Any], context: ActionContext) -> Mapping[str, Any]:
    return _raise_unless_ok(
        delivery.webhook_deliver(
            tenant_id=context.tenant_id,
            connection_id=request.get("connection_id"),
            payload=dict(request["payload"]),
            run_id=context.run_id,
        )
    )


WEBHOOK_POST = ActionType(
    name="webhook.post",
    send=_webhook_send,
    idempotent=True,
    targets=frozenset({"entity", "users"}),
    prepare=_webhook_prepare,
    params_errors=_webhook_params,
    tenant_params_errors=_webhook_tenant_params,
    description="POST JSON to the tenant's webhook, signed with HMAC-SHA256 and a timestamp.",
    params_schema={
        "event": {"type": "text", "required": False},
        "data": {"type": "templates", "required": False},
        "connection_id": {"type": "connection", "provider": "webhook", "required": False},
    },
)

# --- HubSpot ------------------------------------------------------------------------------------------------

LIST_ID = re.compile(r"^\d{1,20}$")
PRIORITIES = ("LOW", "MEDIUM", "HIGH")


def _list_params(params: Mapping[str, Any]) -> dict[str, str]:
    errors = _connection_id(params)
    for key in sorted(set(params) - {"list_id", "connection_id"}):
        errors[key] = "not a parameter (list_id, connection_id)"
    if not LIST_ID.match(str(params.get("list_id", ""))):
        errors["list_id"] = "the id of a MANUAL or SNAPSHOT HubSpot list (a number)"
    return errors


def _hubspot_tenant_params(params: Mapping[str, Any], facts: TenantFacts) -> dict[str, str]:
    errors = _connection_errors(params, facts, Provider.HUBSPOT)
    for key in ("subject", "body", "owner_email"):
        if key in params:
            problem = template_errors(params[key], facts.properties, obj=facts.obj)
            if problem:
                errors[key] = problem
    return errors


def _list_prepare(context: ActionContext) -> dict[str, Any]:
    email = (context.user or {}).get("email")
    if not email:
        raise Permanent("the user has no email: HubSpot contacts are found by email")
    return {
        "list_id": str(context.params["list_id"]),
        "email": email,
        "connection_id": context.params.get("connection_id"),
    }


def _list_sender(add: bool) -> Any:
    def send(request: Mapping[str, Any], context: ActionContext) -> Mapping[str, Any]:
        return _raise_unless_ok(
            hubspot_delivery.list_change(
                tenant_id=context.tenant_id, connection_id=request.get("connection_id"),
                list_id=str(request["list_id"]), email=str(request["email"]), add=add, run_id=context.run_id,
            )
        )  # fmt: skip

    return send


def _list_type(name: str, add: bool) -> ActionType:
    return ActionType(
        name=name,
        send=_list_sender(add),
        idempotent=True,  # list membership is a desired state
        targets=frozenset({"users"}),
        prepare=_list_prepare,
        params_errors=_list_params,
        tenant_params_errors=_hubspot_tenant_params,
        description=(
            "Add each user (by email; created as a contact when missing) to a HubSpot list."
            if add
            else "Remove each user from a HubSpot list."
        ),
        params_schema={
            "list_id": {"type": "hubspot_list", "required": True},
            "connection_id": {"type": "connection", "provider": "hubspot", "required": False},
        },
    )


def _task_params(params: Mapping[str, Any]) -> dict[str, str]:
    errors = _connection_id(params)
    for key in sorted(set(params) - {"subject", "body", "due_in_days", "owner_email", "priority", "connection_id"}):
        errors[key] = "not a parameter (subject, body, due_in_days, owner_email, priority, connection_id)"
    if not isinstance(params.get("subject"), str) or not params["subject"].strip():
        errors["subject"] = "the task's title, a template such as Call {{ account.name }}"
    for key in ("body", "owner_email"):
        if key in params and not isinstance(params[key], str):
            errors[key] = "a text template"
    days = params.get("due_in_days", 1)
    if isinstance(days, bool) or not isinstance(days, int | float) or not 0 <= days <= 365:
        errors["due_in_days"] = "days from the moment the task is created, 0-365"
    if params.get("priority", "MEDIUM") not in PRIORITIES:
        errors["priority"] = "LOW, MEDIUM or HIGH"
    return errors


def _involved_emails(context: ActionContext) -> list[str]:
    """The users this enrollment's main actions reached: the contacts the task is about."""
    from accounts.models import EndUser
    from playbooks.models import ActionPhase, ActionRun, RunStatus

    users = ActionRun.objects.for_tenant(context.tenant_id).filter(
        enrollment_id=context.enrollment_id, phase=ActionPhase.MAIN, status=RunStatus.SUCCEEDED,
        end_user_id__isnull=False,
    ).values_list("end_user_id", flat=True)  # fmt: skip
    emails = EndUser.objects.for_tenant(context.tenant_id).filter(pk__in=list(users)).values_list("email", flat=True)
    return sorted({email for email in emails if email})


def _task_prepare(context: ActionContext) -> dict[str, Any]:
    values = template_context(context)
    try:
        rendered = {key: render(str(context.params[key]), values) if key in context.params else ""
                    for key in ("subject", "body", "owner_email")}  # fmt: skip
    except TemplateInvalid as exc:
        raise Permanent(f"a task template cannot be rendered: {exc}") from None
    account = context.account or {}
    due = timezone.now() + timedelta(days=float(context.params.get("due_in_days", 1)))
    task = {
        "subject": rendered["subject"].strip() or "Follow up", "body": rendered["body"],
        "owner_email": rendered["owner_email"].strip() or None, "due": due.isoformat(),
        "priority": context.params.get("priority", "MEDIUM"),
        "company": {"domain": account["domain"], "name": account.get("name") or ""} if account.get("domain") else None,
        "contacts": _involved_emails(context),
        "marker": f"plgrun{context.run_id}",  # found by search: a retry confirms instead of creating again
    }  # fmt: skip
    return {"connection_id": context.params.get("connection_id"), "task": task}


def _task_send(request: Mapping[str, Any], context: ActionContext) -> Mapping[str, Any]:
    return _raise_unless_ok(
        hubspot_delivery.task_create(
            tenant_id=context.tenant_id,
            connection_id=request.get("connection_id"),
            task=dict(request["task"]),
            run_id=context.run_id,
        )
    )


def _task_confirm(request: Mapping[str, Any], context: ActionContext) -> Mapping[str, Any] | None:
    found = hubspot_delivery.task_confirm(tenant_id=context.tenant_id, connection_id=request.get("connection_id"),
                                          marker=str(request["task"]["marker"]))  # fmt: skip
    return {"task": found, "confirmed": True} if found else None


HUBSPOT_ADD_TO_LIST = _list_type("hubspot.add_to_list", add=True)
HUBSPOT_REMOVE_FROM_LIST = _list_type("hubspot.remove_from_list", add=False)
HUBSPOT_CREATE_TASK = ActionType(
    name="hubspot.create_task",
    send=_task_send,
    idempotent=False,
    targets=frozenset({"entity"}),
    prepare=_task_prepare,
    confirm=_task_confirm,
    params_errors=_task_params,
    tenant_params_errors=_hubspot_tenant_params,
    description="Create a HubSpot task for an owner, associated with the company and the users involved.",
    params_schema={
        "subject": {"type": "template", "required": True}, "body": {"type": "template", "required": False},
        "due_in_days": {"type": "number", "required": False}, "owner_email": {"type": "template", "required": False},
        "priority": {"type": "choice", "choices": list(PRIORITIES), "required": False},
        "connection_id": {"type": "connection", "provider": "hubspot", "required": False},
    },
)  # fmt: skip

for _type in (SLACK_SEND_MESSAGE, WEBHOOK_POST, HUBSPOT_ADD_TO_LIST, HUBSPOT_REMOVE_FROM_LIST, HUBSPOT_CREATE_TASK):
    register(_type)
