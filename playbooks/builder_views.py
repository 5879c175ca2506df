"""The marketers' pages: playbook list, the visual builder (entry → main actions → goal + timeout → goal reached /
goal not reached), and results. The builder is a server-rendered form edited by HTMX round trips
(`playbooks.builder`); every round trip validates against the tenant's catalogue and counts the matches."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.contrib import messages
from django.core.cache import cache
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from integrations.models import Connection, ConnectionMode, ConnectionStatus
from integrations.pickers import PickerError, hubspot_lists_of, slack_channels
from integrations.templates import TemplateInvalid
from playbooks import actions as action_types
from playbooks import builder
from playbooks import conditions as c
from playbooks.catalogue import TYPE_OPS, Catalogue, catalogue_get
from playbooks.connectors import PreviewNotFound, template_preview
from playbooks.evaluation import preview
from playbooks.models import ActionRun, Enrollment, InFlightPolicy, Playbook, PlaybookStatus, PlaybookVersion, RunStatus
from playbooks.selectors import playbook_results
from playbooks.services import (
    PlaybookInvalid,
    TransitionRefused,
    definition_validate,
    playbook_create,
    playbook_publish,
    playbook_transition,
    run_retry,
)
from plgapp.models import User
from plgapp.roles import Capability
from plgapp.tenancy import TenantAccess
from plgapp.views import tenant_page
from scoring.pqls import PqlFilters, pql_page

OP_LABELS = {
    "eq": "is", "neq": "is not", "in": "is one of", "not_in": "is none of", "gt": ">", "gte": "≥", "lt": "<",
    "lte": "≤", "contains": "contains", "starts_with": "starts with", "exists": "is set", "not_exists": "is not set",
    "within_last_days": "within the last … days", "more_than_days_ago": "more than … days ago",
}  # fmt: skip
PARAM_LABELS = {"list_id": "HubSpot list", "due_in_days": "Due in (days)", "owner_email": "Owner email (template)",
                "text": "Message (template)", "subject": "Subject (template)", "body": "Body (template)"}  # fmt: skip
PHASE_TITLES = {"actions": "Main actions", "on_goal": "Goal reached", "on_timeout": "Goal not reached"}
SCOPE_ENTITIES = {"account": ("account",), "user": ("user",), "users_where": ("user", "membership")}


@dataclass
class Node:
    """One condition node as the template draws it."""

    path: str
    kind: str  # group | rule | event | not
    mode: str = ""
    children: list[Node] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    value_type: str = "str"
    value_text: str = ""
    ops: list[tuple[str, str]] = field(default_factory=list)
    field_type: str | None = None
    error: str = ""
    needs_value: bool = True


def _errors_at(errors: dict[str, str], path: str) -> str:
    return " ".join(message for key, message in errors.items() if key == path)


def _value_type(field_type: str | None, op: str) -> str:
    if op in ("in", "not_in"):
        return "numlist" if field_type == "number" else "list"
    if op in c.RELATIVE_OPS or field_type == "number":
        return "num"
    if field_type == "boolean":
        return "bool"
    return "str"


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def condition_view(raw: Any, path: str, catalogue: Catalogue, errors: dict[str, str]) -> Node:
    if isinstance(raw, dict) and any(key in raw for key in builder.GROUP_KEYS):
        mode = "all" if "all" in raw else "any"
        items: list[Any] = raw[mode] if isinstance(raw.get(mode), list) else []
        children = [condition_view(item, f"{path}/{mode}/{n}", catalogue, errors) for n, item in enumerate(items)]
        return Node(path, "group", mode=mode, children=children, error=_errors_at(errors, path))
    if isinstance(raw, dict) and "not" in raw:
        return Node(path, "not", children=[condition_view(raw["not"], f"{path}/not", catalogue, errors)],
                    error=_errors_at(errors, path))  # fmt: skip
    raw = raw if isinstance(raw, dict) else {}
    node_errors = " ".join(m for key, m in errors.items() if key == path or key.startswith(path + "/"))
    op = str(raw.get("op", "eq"))
    if "event" in raw:
        return Node(path, "event", raw=raw, ops=[(o, OP_LABELS[o]) for o in c.EVENT_OPS], value_type="num",
                    value_text=_text(raw.get("value")), error=node_errors)  # fmt: skip
    field_type = None
    try:
        field_type = catalogue.field_type(c.field_ref(str(raw.get("field", ""))))
    except (c.ConditionInvalid, ValueError, KeyError):
        field_type = None
    allowed = TYPE_OPS.get(field_type or "", frozenset(c.OPS))
    ops = [(o, OP_LABELS[o]) for o in c.OPS if o in allowed]
    return Node(path, "rule", raw=raw, ops=ops, field_type=field_type, value_type=_value_type(field_type, op),
                value_text=_text(raw.get("value")), error=node_errors,
                needs_value=op not in c.PRESENCE_OPS)  # fmt: skip


@dataclass
class ActionView:
    path: str
    raw: dict[str, Any]
    type: action_types.ActionType | None
    params: list[dict[str, Any]]
    users_where: Node | None
    target: str
    error: str


def _param_inputs(action: dict[str, Any], path: str, kind: action_types.ActionType | None,
                  errors: dict[str, str], pickers: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    params: dict[str, Any] = action["params"] if isinstance(action.get("params"), dict) else {}
    schema = dict(kind.params_schema) if kind is not None else {}
    inputs = []
    for name, spec in schema.items():
        if spec.get("type") in ("connection", "templates"):
            continue  # the tenant's one connection per provider is used; webhook data is edited via the API
        value = params.get(name, "")
        label = PARAM_LABELS.get(name, name.replace("_", " ").capitalize())
        inputs.append({
            "name": name, "label": label, "spec": spec,
            "value": _text(value) if not isinstance(value, dict) else json.dumps(value),
            "input": f"v:{'optnum' if spec.get('type') == 'number' else 'optstr'}:{path}/params/{name}",
            "error": " ".join(m for key, m in errors.items() if key == f"{path}/params/{name}"),
            "choices": spec.get("choices", []) if spec.get("type") == "choice" else pickers.get(spec.get("type"), []),
            "preview": spec.get("type") == "template",
        })  # fmt: skip
    return inputs


def _own_keys(path: str) -> set[str]:
    return {f"{path}/{key}" for key in ("id", "type", "target")}


def action_views(definition: dict[str, Any], phase: str, catalogue: Catalogue, errors: dict[str, str],
                 pickers: dict[str, Any]) -> list[ActionView]:  # fmt: skip
    views = []
    for n, action in enumerate(definition.get(phase) or []):
        path = f"{phase}/{n}"
        if not isinstance(action, dict):
            continue
        kind = action_types.get(str(action.get("type", "")))
        where = action.get("users_where")
        views.append(ActionView(
            path=path, raw=action, type=kind, params=_param_inputs(action, path, kind, errors, pickers),
            users_where=condition_view(where, f"{path}/users_where", catalogue, errors) if where is not None else None,
            target=str(action.get("target", "entity")),
            error=" ".join(m for key, m in errors.items() if key == path or key in _own_keys(path)),
        ))  # fmt: skip
    return views


def _pickers(access: TenantAccess) -> dict[str, Any]:
    """Channels and lists from the tenant's working connections, for the action forms' pickers."""
    found: dict[str, Any] = {"slack_channel": [], "hubspot_list": []}
    connections = Connection.objects.for_tenant(access.tenant).exclude(status=ConnectionStatus.BROKEN)
    for connection in connections.order_by("mode", "pk"):  # live before sandbox
        kind = {"slack": "slack_channel", "hubspot": "hubspot_list"}.get(connection.provider)
        if kind is None or found[kind]:
            continue
        # Every builder round trip draws the pickers: ask the provider once a minute, not on every change.
        key = f"builder:pickers:{connection.tenant_id}:{connection.pk}:{connection.created_at.timestamp()}"
        choices = cache.get(key)
        if choices is None:
            try:
                choices = (
                    [f"#{ch['name']}" for ch in slack_channels(connection)]
                    if kind == "slack_channel"
                    else [(str(li["id"]), li["name"]) for li in hubspot_lists_of(connection)]
                )
            except PickerError:
                continue
            cache.set(key, choices, PICKER_CACHE_SECONDS)
        found[kind] = choices
    found["sandbox"] = connections.filter(mode=ConnectionMode.SANDBOX).exists()
    return found


PICKER_CACHE_SECONDS = 60


def _general(errors: dict[str, str]) -> dict[str, str]:
    """Errors not about one input of the form (shown at the top)."""
    return {key: message for key, message in errors.items() if "/" not in key and key not in ("entry", "goal")}


def _flat_errors(exc: PlaybookInvalid) -> dict[str, str]:
    """ "definition.entry.all.0.value" → "entry/all/0/value" (the builder's paths)."""
    return {key.removeprefix("definition.").replace(".", "/"): message for key, message in exc.fields.items()}


def _context(request: HttpRequest, access: TenantAccess, definition: dict[str, Any], *, playbook: Playbook | None,
             name: str, validate: bool, full_page: bool = False) -> dict[str, Any]:  # fmt: skip
    catalogue = catalogue_get(tenant=access.tenant)
    errors: dict[str, str] = {}
    if validate:
        try:
            definition_validate(tenant=access.tenant, raw=builder.saved_form(definition))
        except PlaybookInvalid as exc:
            errors = _flat_errors(exc)
    obj = str(definition.get("object", "account"))
    matches: dict[str, Any] | None = None
    if not any(key == "entry" or key.startswith("entry/") for key in errors) and definition["entry"].get(
        "all", definition["entry"].get("any")
    ):
        try:
            matches = preview(
                tenant=access.tenant, obj=obj, condition=definition["entry"], now=timezone.now(), sample=5
            )
        except PlaybookInvalid:
            matches = None
        else:
            matches["labels"] = [row.get("name") or row.get("email") or row.get("external_id") or row["id"]
                                 for row in matches["sample"]]  # fmt: skip
    pickers = _pickers(access)
    scope_fields = {
        scope: [(name, catalogue.field_type(c.field_ref(name)) or "text") for name in catalogue.fields(entities)]
        for scope, entities in SCOPE_ENTITIES.items()
    }
    preview_accounts = []  # the page's account picker sits outside the form: not redrawn by round trips
    if full_page:
        page = pql_page(tenant=access.tenant, filters=PqlFilters(), cursor=None, limit=15, now=timezone.now())
        preview_accounts = [row.account for row in page.rows]
    return {
        "definition": definition,
        "definition_json": json.dumps(definition),
        "playbook": playbook,
        "name": name,
        "obj": obj,
        "entry": condition_view(definition["entry"], "entry", catalogue, errors),
        "goal": condition_view(definition["goal"], "goal", catalogue, errors) if "goal" in definition else None,
        "phases": [
            (phase, PHASE_TITLES[phase], action_views(definition, phase, catalogue, errors, pickers))
            for phase in builder.PHASES
            if phase == "actions" or "goal" in definition
        ],
        "errors": errors,
        "general_errors": _general(errors),
        "matches": matches,
        "fields": scope_fields[obj],
        "user_fields": scope_fields["users_where"],
        "events": sorted(catalogue.events),
        "action_types": [
            t
            for name, t in sorted(action_types.registered().items())
            if name in builder.ACTION_DEFAULTS and name != "log"
        ],
        "user_action_ids": [a.get("id") for a in definition.get("actions") or [] if a.get("target") == "users"],
        "pickers": pickers,
        "preview_accounts": preview_accounts,
        "can_edit": access.can(Capability.EDIT_PLAYBOOKS),
        "policies": InFlightPolicy.choices,
    }


def _playbook(access: TenantAccess, playbook_id: int) -> Playbook:
    playbook = (
        Playbook.objects.for_tenant(access.tenant).filter(pk=playbook_id).select_related("current_version").first()
    )
    if playbook is None:
        raise Http404("No such playbook")
    return playbook


@require_safe
@tenant_page()
def playbooks_page(request: HttpRequest, access: TenantAccess) -> HttpResponse:
    playbooks = list(Playbook.objects.for_tenant(access.tenant).select_related("current_version").order_by("name"))
    rows = [{"playbook": p, "results": playbook_results(tenant=access.tenant, playbook=p)} for p in playbooks]
    return render(request, "playbooks/list.html", {"rows": rows, "can_edit": access.can(Capability.EDIT_PLAYBOOKS)})


@require_safe
@tenant_page(read=Capability.EDIT_PLAYBOOKS, write=Capability.EDIT_PLAYBOOKS)
def builder_new(request: HttpRequest, access: TenantAccess) -> HttpResponse:
    obj = "user" if request.GET.get("object") == "user" else "account"
    context = _context(request, access, builder.skeleton(obj), playbook=None, name="", validate=False, full_page=True)
    return render(request, "playbooks/builder.html", context)


@require_safe
@tenant_page(read=Capability.EDIT_PLAYBOOKS, write=Capability.EDIT_PLAYBOOKS)
def builder_edit(request: HttpRequest, access: TenantAccess, playbook_id: int) -> HttpResponse:
    playbook = _playbook(access, playbook_id)
    assert playbook.current_version is not None
    definition = builder.normalized(playbook.current_version.definition)
    context = _context(request, access, definition, playbook=playbook, name=playbook.name, validate=True,
                       full_page=True)  # fmt: skip
    context["versions"] = (
        PlaybookVersion.objects.for_tenant(access.tenant).filter(playbook=playbook).order_by("-number")
    )
    return render(request, "playbooks/builder.html", context)


@require_POST
@tenant_page(read=Capability.EDIT_PLAYBOOKS, write=Capability.EDIT_PLAYBOOKS)
def builder_update(request: HttpRequest, access: TenantAccess) -> HttpResponseBase:
    """One round trip: apply the form and the structural edit, validate, count; then save if asked."""
    playbook_id = request.POST.get("playbook", "")
    playbook = _playbook(access, int(playbook_id)) if playbook_id.isdigit() else None
    name = request.POST.get("name", "").strip()
    try:
        inputs = [(key, value) for key, value in request.POST.items() if isinstance(value, str)]
        definition = builder.edit(request.POST.get("definition", ""), inputs, request.POST.get("op"))
    except builder.EditInvalid as exc:
        return HttpResponse(f"This edit cannot be applied: {exc}. Reload the page.", status=400)
    save = request.POST.get("save")
    if save:
        return _save(request, access, definition, playbook=playbook, name=name, how=save)
    context = _context(request, access, definition, playbook=playbook, name=name, validate=True)
    return render(request, "playbooks/_builder.html", context)


def _save(request: HttpRequest, access: TenantAccess, definition: dict[str, Any], *, playbook: Playbook | None,
          name: str, how: str) -> HttpResponseBase:  # fmt: skip
    stored, now = builder.saved_form(definition), timezone.now()
    user = request.user if isinstance(request.user, User) else None
    errors: dict[str, str] = {}
    if not name:
        errors["name"] = "give the playbook a name (it shows in results and messages)"
    else:
        try:
            if playbook is None:
                playbook = playbook_create(tenant=access.tenant, name=name, definition=stored, created_by=user,
                                           now=now)  # fmt: skip
            else:
                policy = request.POST.get("in_flight_policy", InFlightPolicy.KEEP)
                playbook = playbook_publish(
                    tenant=access.tenant,
                    playbook_id=playbook.pk,
                    definition=stored,
                    name=name,
                    in_flight_policy=policy,
                    created_by=user,
                    now=now,
                )
            if how == "activate" and playbook.status != PlaybookStatus.ACTIVE:
                playbook_transition(tenant=access.tenant, playbook_id=playbook.pk, action="activate", now=now)
        except PlaybookInvalid as exc:
            errors = _flat_errors(exc)
        except TransitionRefused as exc:
            errors = {"status": str(exc)}
    if errors:
        context = _context(request, access, definition, playbook=playbook, name=name, validate=True)
        context["errors"] = {**context["errors"], **errors}
        context["general_errors"] = _general(context["errors"])
        return render(request, "playbooks/_builder.html", context, status=400)
    assert playbook is not None
    messages.success(request, f"Saved “{playbook.name}” (version {playbook.current_version.number})"  # type: ignore[union-attr]
                              + (" and activated it." if how == "activate" else " as a draft."))  # fmt: skip
    target = reverse("playbook-results", kwargs={"tenant_slug": access.tenant.slug, "playbook_id": playbook.pk})
    response = HttpResponse(status=204)
    response["HX-Redirect"] = target
    return response if getattr(request, "htmx", False) else redirect(target)


@require_POST
@tenant_page(read=Capability.EDIT_PLAYBOOKS, write=Capability.EDIT_PLAYBOOKS)
def playbook_transition_view(request: HttpRequest, access: TenantAccess, playbook_id: int) -> HttpResponseBase:
    playbook = _playbook(access, playbook_id)
    action = request.POST.get("action", "")
    try:
        playbook = playbook_transition(tenant=access.tenant, playbook_id=playbook.pk, action=action, now=timezone.now())
    except (TransitionRefused, PlaybookInvalid) as exc:
        messages.error(request, f"Could not {action} “{playbook.name}”: {exc}")
    else:
        messages.success(request, f"“{playbook.name}” is now {playbook.get_status_display().lower()}.")
    return redirect("playbook-results", tenant_slug=access.tenant.slug, playbook_id=playbook.pk)


@require_POST
@tenant_page(read=Capability.EDIT_PLAYBOOKS, write=Capability.EDIT_PLAYBOOKS)
def builder_text_preview(request: HttpRequest, access: TenantAccess) -> HttpResponse:
    """A message template rendered for the chosen account, as it would be sent (the live preview)."""
    template = request.POST.get(request.POST.get("template_field", ""), "")
    if not template.strip():
        return HttpResponse("")
    account = request.POST.get("preview_account", "")
    if not account.isdigit():
        return HttpResponse('<span class="muted">Choose an account to preview with.</span>')
    try:
        text = template_preview(tenant=access.tenant, template=template, account_id=int(account), user_id=None)
    except PreviewNotFound:
        return HttpResponse('<span class="error">That account is gone.</span>')
    except TemplateInvalid as exc:
        return render(request, "playbooks/_text_preview.html", {"error": str(exc)})
    return render(request, "playbooks/_text_preview.html", {"text": text})


RUNS_PAGE = 50
CHART_DAYS = 30


def _daily(access: TenantAccess, playbook: Playbook) -> list[Any]:
    """Entered, goal reached and timed out per day over the last 30 days (counted in the database)."""
    from datetime import timedelta

    from django.db.models import Count
    from django.db.models.functions import TruncDay

    from plgapp.charts import Series

    since = timezone.now() - timedelta(days=CHART_DAYS)
    enrollments = Enrollment.objects.for_tenant(access.tenant).filter(playbook=playbook)

    def per_day(queryset: Any, column: str) -> list[tuple[Any, float]]:
        rows = queryset.filter(**{f"{column}__gte": since}).annotate(day=TruncDay(column)).values("day")
        return [(row["day"], float(row["n"])) for row in rows.annotate(n=Count("pk")).order_by("day")]

    return [
        Series("Entered", per_day(enrollments, "entered_at"), "series-1"),
        Series("Goal reached", per_day(enrollments.filter(status="goal_reached"), "ended_at"), "series-3"),
        Series("Timed out", per_day(enrollments.filter(status="timed_out"), "ended_at"), "series-2"),
    ]


@require_safe
@tenant_page()
def playbook_results_page(request: HttpRequest, access: TenantAccess, playbook_id: int) -> HttpResponse:
    from plgapp.charts import line_chart

    playbook = _playbook(access, playbook_id)
    results = playbook_results(tenant=access.tenant, playbook=playbook)
    series = _daily(access, playbook)
    peak = max([value for s in series for _day, value in s.points] or [1.0])
    runs = ActionRun.objects.for_tenant(access.tenant).filter(playbook=playbook)
    status = request.GET.get("status", "")
    if status in RunStatus.values:
        runs = runs.filter(status=status)
    page = Paginator(runs.order_by("-updated_at", "-pk"), RUNS_PAGE).get_page(request.GET.get("page"))
    context = {
        "playbook": playbook,
        "results": results,
        "chart": line_chart(series, y_max=max(peak, 1.0), percent=False, title=f"{playbook.name}, daily"),
        "page": page,
        "status": status,
        "statuses": RunStatus.choices,
        "can_edit": access.can(Capability.EDIT_PLAYBOOKS),
        "significant": results["p_value"] is not None and results["p_value"] < 0.05,
    }
    return render(request, "playbooks/results.html", context)


@require_POST
@tenant_page(read=Capability.EDIT_PLAYBOOKS, write=Capability.EDIT_PLAYBOOKS)
def run_retry_view(request: HttpRequest, access: TenantAccess, playbook_id: int, run_id: int) -> HttpResponseBase:
    playbook = _playbook(access, playbook_id)
    if not ActionRun.objects.for_tenant(access.tenant).filter(pk=run_id, playbook=playbook).exists():
        raise Http404("No such action run")
    try:
        run_retry(tenant=access.tenant, run_id=run_id, now=timezone.now())
    except TransitionRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Run {run_id} queued again with a fresh attempt budget.")
    return redirect(f"{reverse('playbook-results', args=[access.tenant.slug, playbook.pk])}#runs")
