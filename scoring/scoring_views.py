"""Scoring → models (version, AUC, lift, calibration, feature importance, score distribution, retrain now), signal
discovery, and the scoring settings (stage mapping, key events, size segments, milestones)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.db import transaction
from django.db.models import Count, F, IntegerField
from django.db.models.functions import Cast, Floor, Least
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from plgapp.charts import bar_chart, calibration_chart
from plgapp.roles import Capability
from plgapp.tenancy import TenantAccess
from plgapp.views import tenant_page
from scoring.config import ConfigInvalid
from scoring.discovery import discovery_report
from scoring.models import ModelStatus, ModelVersion, Score
from scoring.services import LEARNED_KINDS, model_version_start, settings_get, settings_set
from scoring.tasks import model_train_task
from signals.models import Signal, SignalEntity, SignalKind

VERSIONS_SHOWN = 6


def _distribution(access: TenantAccess, kind: str) -> list[tuple[str, float]]:
    """How many entities score in each tenth: 0-10 %, 10-20 % … (counted in the database)."""
    bucket = Least(Cast(Floor(F("value") * 10), IntegerField()), 9)
    rows = (
        Score.objects.for_tenant(access.tenant)
        .filter(kind=kind)
        .annotate(bucket=bucket)
        .values("bucket")
        .annotate(n=Count("id"))
    )
    counts = {row["bucket"]: row["n"] for row in rows}
    return [(f"{b * 10}-{b * 10 + 10}%", float(counts.get(b, 0))) for b in range(10)]


def _model(access: TenantAccess, kind: str) -> dict[str, Any]:
    versions = list(
        ModelVersion.objects.for_tenant(access.tenant).filter(kind=kind).defer("artifact").order_by("-version")
    )[:VERSIONS_SHOWN]
    active = next((v for v in versions if v.status == ModelStatus.ACTIVE), None)
    shown = active or next((v for v in versions if v.report), None)
    report = shown.report if shown is not None else {}
    curve = [(point["predicted"], point["observed"]) for point in report.get("calibration_curve", [])]
    importances = list((report.get("feature_importances") or {}).items())[:10]
    return {
        "kind": kind,
        "versions": versions,
        "active": active,
        "shown": shown,
        "training": any(v.status == ModelStatus.TRAINING for v in versions),
        "calibration": calibration_chart(curve, title=f"{kind} calibration"),
        "importance": bar_chart(
            [(name, max(value, 0.0)) for name, value in importances],
            title=f"{kind}: AUC lost when each feature is shuffled",
        ),
        "distribution": bar_chart(_distribution(access, kind), title=f"{kind} scores by tenth"),
    }


def _settings_context(access: TenantAccess, settings: dict[str, Any]) -> dict[str, Any]:
    segments = settings["size_segments"]
    return {
        "stages": {group: ", ".join(names) for group, names in settings["stages"].items()},
        "key_events": ", ".join(settings["key_events"]),
        "segment_property": segments["property"],
        "segments": "\n".join(
            f"{s['name']}, {'' if s.get('max') is None else s['max']}, {s['activation_threshold']}"
            for s in segments["segments"]
        ),
        "milestones": json.dumps(settings["milestones"], indent=2),
        "signals": list(Signal.objects.for_tenant(access.tenant).order_by("key")),
    }


def _render(request: HttpRequest, access: TenantAccess, *, form: dict[str, Any] | None = None,
            errors: dict[str, str] | None = None, status: int = 200) -> HttpResponse:  # fmt: skip
    settings = settings_get(tenant=access.tenant)
    context = {
        "models": [_model(access, kind) for kind in LEARNED_KINDS],
        "form": form or _settings_context(access, settings),
        "errors": errors or {},
        "can_manage": access.can(Capability.MANAGE_TENANT),
        "can_edit_signals": access.can(Capability.EDIT_PLAYBOOKS),
        "signal_post": request.POST if request.method == "POST" and "kind" in request.POST else {},
        "signal_kinds": SignalKind.choices,
        "signal_entities": SignalEntity.choices,
    }
    return render(request, "scoring/scoring.html", context, status=status)


@require_safe
@tenant_page()
def scoring_page(request: HttpRequest, access: TenantAccess) -> HttpResponse:
    return _render(request, access)


def _names(raw: str) -> list[str]:
    return [name.strip() for name in raw.split(",") if name.strip()]


def _segments(raw: str, errors: dict[str, str]) -> list[dict[str, Any]]:
    segments = []
    for number, line in enumerate((line for line in raw.splitlines() if line.strip()), start=1):
        parts = [part.strip() for part in line.split(",")]
        try:
            name, bound, threshold = parts
            segments.append({"name": name, "max": float(bound) if bound else None,
                             "activation_threshold": float(threshold)})  # fmt: skip
        except ValueError:
            errors["size_segments.segments"] = (
                f"line {number}: write “name, largest size (empty on the last), activation threshold 0-1”"
            )
    return segments


@require_POST
@tenant_page(read=Capability.MANAGE_TENANT, write=Capability.MANAGE_TENANT)
def scoring_settings_view(request: HttpRequest, access: TenantAccess) -> HttpResponse:
    post = request.POST
    errors: dict[str, str] = {}
    raw = settings_get(tenant=access.tenant)
    raw["stages"] = {group: _names(post.get(f"stages_{group}", "")) for group in ("trial", "paying", "churned")}
    raw["key_events"] = _names(post.get("key_events", ""))
    raw["size_segments"] = {"property": post.get("segment_property", "").strip(),
                            "segments": _segments(post.get("segments", ""), errors)}  # fmt: skip
    try:
        raw["milestones"] = json.loads(post.get("milestones") or "[]")
    except json.JSONDecodeError as exc:
        errors["milestones"] = f"not valid JSON: {exc.msg} (line {exc.lineno})"
    if not errors:
        try:
            settings_set(tenant=access.tenant, raw=raw, now=timezone.now())
        except ConfigInvalid as exc:
            errors = exc.fields
    if errors:
        form = {
            "stages": {g: post.get(f"stages_{g}", "") for g in ("trial", "paying", "churned")},
            "key_events": post.get("key_events", ""), "segment_property": post.get("segment_property", ""),
            "segments": post.get("segments", ""), "milestones": post.get("milestones", ""),
            "signals": list(Signal.objects.for_tenant(access.tenant).order_by("key")),
        }  # fmt: skip
        return _render(request, access, form=form, errors=errors, status=400)
    messages.success(request, "Scoring settings saved. Scores use them from the next rescore; retrain to learn them.")
    return redirect("scoring", tenant_slug=access.tenant.slug)


@require_POST
@tenant_page(read=Capability.MANAGE_TENANT, write=Capability.MANAGE_TENANT)
def retrain_view(request: HttpRequest, access: TenantAccess) -> HttpResponseBase:
    kind = request.POST.get("kind", "")
    if kind not in LEARNED_KINDS:
        messages.error(request, f"Unknown model {kind!r}: choose one of {', '.join(LEARNED_KINDS)}.")
        return redirect("scoring", tenant_slug=access.tenant.slug)
    version = model_version_start(tenant=access.tenant, kind=kind, now=timezone.now())
    tenant_id, version_id = access.tenant.pk, version.pk
    transaction.on_commit(lambda: model_train_task.apply_async(args=(tenant_id, version_id)))
    messages.success(
        request, f"Training {kind} version {version.version}: it becomes active if it beats the current one."
    )
    return redirect("scoring", tenant_slug=access.tenant.slug)


@require_safe
@tenant_page()
def discovery_view(request: HttpRequest, access: TenantAccess) -> HttpResponse:
    """Signal discovery for one model (loaded on demand: it builds the training set)."""
    kind = request.GET.get("kind", "conversion")
    if kind not in LEARNED_KINDS:
        kind = "conversion"
    report = discovery_report(tenant=access.tenant, kind=kind, now=timezone.now())
    return render(request, "scoring/_discovery.html", {"report": report, "kind": kind})


SIGNAL_INPUTS = ("key", "name", "entity_type", "kind", "event", "window_days", "property", "numerator", "denominator")


def _signal_data(post: Any) -> dict[str, Any]:
    """The signal form as the API's serializer takes it: empty fields left out, the weight as {kind: w}."""
    data: dict[str, Any] = {name: post.get(name, "").strip() for name in SIGNAL_INPUTS if post.get(name, "").strip()}
    if post.get("equals", "").strip():
        data["equals"] = post["equals"].strip()
    weight_kind, weight = post.get("weight_kind", ""), post.get("weight", "").strip()
    if weight_kind and weight:
        data["weights"] = {weight_kind: weight}
    return data


@require_POST
@tenant_page(read=Capability.EDIT_PLAYBOOKS, write=Capability.EDIT_PLAYBOOKS)
def signal_create_view(request: HttpRequest, access: TenantAccess) -> HttpResponse:
    """Define a signal from the Scoring page; the same rules as POST /api/v1/signals/."""
    from signals.serializers import SignalSerializer
    from signals.services import SignalKeyTaken, signal_save

    serializer = SignalSerializer(data=_signal_data(request.POST), context={"tenant": access.tenant})
    errors: dict[str, str] = {}
    if serializer.is_valid():
        try:
            signal = signal_save(tenant=access.tenant, signal=None, data=serializer.validated_data, now=timezone.now())
        except SignalKeyTaken as exc:
            errors = {"key": str(exc)}
        else:
            messages.success(request, f"Signal “{signal.name}” added: models learn it at the next training.")
            return redirect(f"{reverse('scoring', args=[access.tenant.slug])}#signals")
    else:
        errors = {field: " ".join(str(m) for m in messages_) for field, messages_ in serializer.errors.items()}
    response = _render(request, access, errors={f"signal.{k}": v for k, v in errors.items()}, status=400)
    return response


@require_POST
@tenant_page(read=Capability.EDIT_PLAYBOOKS, write=Capability.EDIT_PLAYBOOKS)
def signal_delete_view(request: HttpRequest, access: TenantAccess, signal_id: int) -> HttpResponseBase:
    from signals.services import signal_delete

    signal = Signal.objects.for_tenant(access.tenant).filter(pk=signal_id).first()
    if signal is None:
        raise Http404("No such signal")
    signal_delete(tenant=access.tenant, signal=signal)
    messages.success(request, f"Signal “{signal.name}” removed.")
    return redirect(f"{reverse('scoring', args=[access.tenant.slug])}#signals")
