"""Scoring operations: settings, training a model version, (re)scoring entities with reasons, champions.

Kinds: conversion and churn (accounts), health (users) are learned per tenant once it has labels
(until then, and whenever a trained model does not beat it, a transparent rule-based score stands);
champion (a user within one account) is a transparent weighted score by design.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import Max

from accounts.models import Account, EndUser, EntityType, Membership
from plgapp.models import Tenant
from scoring import config as scoring_config
from scoring.datasets import eligible, features, horizon_days, midnight, training_set
from scoring.learn import NotEnoughLabels, Trained, grades, percentiles, train
from scoring.models import (
    ENTITY_OF_KIND,
    ModelStatus,
    ModelVersion,
    Score,
    ScoredEntity,
    ScoreHistory,
    ScoreKind,
    ScoringSettings,
)
from scoring.qualification import qualification
from scoring.reasons import PEERS, pick, render
from scoring.rules import rule_scores, signal_components
from signals.features import (
    WINDOWS,
    FeatureSpec,
    History,
    RawFeatures,
    key_events_of,
    load_history,
    members_as_of,
    membership_activity,
    properties_as_of,
)

logger = logging.getLogger(__name__)
LEARNED_KINDS = (ScoreKind.CONVERSION, ScoreKind.CHURN, ScoreKind.HEALTH)
HISTORY_MIN_CHANGE = 0.01
SCORING_LOOKBACK_DAYS = max(WINDOWS) + 70  # the longest window, plus the trend's previous 30 days, plus slack


# --- settings ---------------------------------------------------------------------------------------


def settings_get(*, tenant: Tenant) -> dict[str, Any]:
    stored = ScoringSettings.objects.for_tenant(tenant).values_list("settings", flat=True).first()
    return scoring_config.merged(stored)


def working_settings(*, tenant: Tenant) -> dict[str, Any]:
    """The settings scoring runs with: the stored settings plus the tenant's signal definitions."""
    from signals.models import Signal

    settings = settings_get(tenant=tenant)
    settings["signals"] = [signal.as_definition() for signal in Signal.objects.for_tenant(tenant).order_by("key")]
    return settings


def settings_set(*, tenant: Tenant, raw: Any, now: datetime) -> dict[str, Any]:
    """Validate and store a whole settings document (raises ConfigInvalid with field messages)."""
    settings = scoring_config.validate(raw)
    ScoringSettings.objects.for_tenant(tenant).update_or_create(defaults={"settings": settings, "updated_at": now})
    return settings


# --- model versions --------------------------------------------------------------------------------------


@dataclass
class Artifact:
    trained: Trained
    spec: FeatureSpec
    key_events: list[str]


_artifacts: dict[tuple[int, str, int], Artifact] = {}


def _artifact(version: ModelVersion) -> Artifact:
    key = (version.tenant_id, version.kind, version.version)
    if key not in _artifacts:
        raw = ModelVersion.objects.for_tenant(version.tenant_id).values_list("artifact", flat=True).get(pk=version.pk)
        assert raw is not None, "an active version always has its artifact"
        _artifacts[key] = pickle.loads(bytes(raw))  # noqa: S301 - written by model_train, never by a client
    return _artifacts[key]


def active_version(*, tenant: Tenant, kind: str) -> ModelVersion | None:
    return (
        ModelVersion.objects.for_tenant(tenant).filter(kind=kind, status=ModelStatus.ACTIVE).defer("artifact").first()
    )


def model_version_start(*, tenant: Tenant, kind: str, now: datetime) -> ModelVersion:
    """A new version in status "training" (visible at once; the training runs in a task)."""
    if kind not in LEARNED_KINDS:
        raise ValueError(f"{kind} is a transparent score; only {', '.join(LEARNED_KINDS)} are trained")
    with transaction.atomic():
        versions = ModelVersion.objects.for_tenant(tenant).select_for_update()
        latest = versions.filter(kind=kind).aggregate(latest=Max("version"))["latest"] or 0
        return ModelVersion.objects.for_tenant(tenant).create(kind=kind, version=latest + 1, created_at=now)


def _candidates(tenant: Tenant, kind: str) -> list[int]:
    model = EndUser if kind == ScoreKind.HEALTH else Account
    return list(model.objects.for_tenant(tenant).order_by("pk").values_list("pk", flat=True))


def _baseline(kind: str, tables: Sequence[RawFeatures]) -> np.ndarray:
    """The rule score of every training row, computed within its own snapshot."""
    return np.concatenate(
        [rule_scores(kind, table.numbers, len(table.ids), signal_components(table.describe, kind)).values
         for table in tables]
    )  # fmt: skip


def model_train(*, tenant: Tenant, version_id: int, now: datetime) -> ModelVersion:
    """Train the version: on success it becomes active if it beats the rule baseline, and rescoring follows."""
    version = ModelVersion.objects.for_tenant(tenant).defer("artifact").get(pk=version_id)
    kind = version.kind
    try:
        settings = working_settings(tenant=tenant)
        history = load_history(tenant)
        key_events = key_events_of(history, settings["key_events"])
        earliest = _earliest(history)
        dataset = training_set(history, settings, kind, now, _candidates(tenant, kind), key_events, earliest)
        if not dataset.tables:
            raise NotEnoughLabels("no snapshot with labels yet: the history is shorter than the horizon")
        spec = FeatureSpec.fit(dataset.tables)
        fitted = train(
            dataset.matrix(spec), dataset.labels, dataset.snapshot_of_row, spec.columns,
            _baseline(kind, dataset.tables),
        )  # fmt: skip
    except NotEnoughLabels as exc:
        version.status, version.error, version.trained_at = ModelStatus.REJECTED, str(exc), now
        version.save(update_fields=["status", "error", "trained_at"])
        return version
    except Exception as exc:
        logger.exception("training failed", extra={"tenant": tenant.pk, "kind": kind, "version": version.version})
        version.status, version.error = ModelStatus.FAILED, f"{type(exc).__name__}: {exc}"
        version.save(update_fields=["status", "error"])
        return version
    assert fitted.trained is not None
    metrics = fitted.metrics
    beats = metrics["auc"] == metrics["auc"] and metrics["auc"] > (metrics["baseline_auc"] or 0)
    version.metrics = metrics
    version.report = {
        **fitted.report,
        "snapshots": [at.date().isoformat() for at in dataset.snapshots],
        "key_events": key_events,
        "horizon_days": horizon_days(settings, kind),
        "columns": spec.columns,
    }
    version.algorithm = fitted.trained.algorithm
    version.artifact = pickle.dumps(Artifact(trained=fitted.trained, spec=spec, key_events=key_events))
    version.trained_at = now
    if not beats:
        version.status = ModelStatus.REJECTED
        version.error = f"AUC {metrics['auc']} does not beat the rule baseline's {metrics['baseline_auc']}"
        version.save()
        return version
    with transaction.atomic():
        ModelVersion.objects.for_tenant(tenant).filter(kind=kind, status=ModelStatus.ACTIVE).update(
            status=ModelStatus.RETIRED
        )
        version.status = ModelStatus.ACTIVE
        version.save()
    scores_refresh(tenant=tenant, kind=kind, now=now)
    version.scored_at = now
    version.save(update_fields=["scored_at"])
    return version


def _earliest(history: History) -> datetime | None:
    days = list(history.first_day.values())
    if not days:
        return None
    from datetime import UTC, date, time

    return datetime.combine(date.fromordinal(min(days)), time(0), tzinfo=UTC)


# --- scoring -------------------------------------------------------------------------------------------


@dataclass
class Computed:
    ids: list[int]
    values: np.ndarray
    reasons: list[list[dict[str, Any]]]
    model_version: int | None
    rule_based: bool
    details: list[dict[str, Any]] | None = None  # account kinds: activation and PQA (scoring.qualification)


def _compute(tenant: Tenant, kind: str, history: History, settings: dict[str, Any], ids: list[int],
             now: datetime) -> Computed:  # fmt: skip
    version = active_version(tenant=tenant, kind=kind)
    peers = PEERS.get(kind, "peers")
    if version is not None:
        artifact = _artifact(version)
        raw = features(history, settings, kind, now, ids, artifact.key_events)
        x = artifact.spec.matrix(raw)
        values = artifact.trained.predict(x)
        groups, contributions = artifact.trained.contributions(x)
        reasons = []
        for row in range(len(ids)):
            candidates = []
            for slot, g in enumerate(groups):
                name = artifact.trained.group_names[g]
                describe, value = _describe(artifact.spec, raw, name, row)
                median = artifact.trained.positive_medians.get(name)
                text = render(name, value, describe, median=median, peers=peers)
                candidates.append((name, float(contributions[row, slot]), text))
            reasons.append(pick(candidates))
        return Computed(ids, values, reasons, version.version, False, _details(kind, raw, settings))
    key_events = key_events_of(history, settings["key_events"])
    raw = features(history, settings, kind, now, ids, key_events)
    scores = rule_scores(kind, raw.numbers, len(ids), signal_components(raw.describe, kind))
    medians = {name: float(np.nanmedian(raw.numbers[name])) if len(ids) else 0.0 for name in scores.features}
    reasons = []
    for row in range(len(ids)):
        candidates = []
        for slot, name in enumerate(scores.features):
            value = float(raw.numbers[name][row])
            text = render(name, value, raw.describe.get(name, {}), median=medians[name], peers="peers")
            candidates.append((name, float(scores.contributions[row, slot]), text))
        reasons.append(pick(candidates))
    return Computed(ids, scores.values, reasons, None, True, _details(kind, raw, settings))


def _details(kind: str, raw: RawFeatures, settings: dict[str, Any]) -> list[dict[str, Any]] | None:
    return qualification(raw, settings) if ENTITY_OF_KIND[ScoreKind(kind)] == ScoredEntity.ACCOUNT else None


def _describe(spec: FeatureSpec, raw: RawFeatures, name: str, row: int) -> tuple[dict[str, Any], float]:
    if name in spec.categories:
        category = raw.categories.get(name, [None] * len(raw.ids))[row]
        return {**spec.describe.get(name, {}), "value": category or "unknown"}, 0.0
    numbers = raw.numbers.get(name)
    value = float(numbers[row]) if numbers is not None else float("nan")
    return spec.describe.get(name, {}), value


def scores_refresh(*, tenant: Tenant, kind: str, now: datetime, entity_ids: Iterable[int] | None = None) -> int:
    """(Re)score every entity of `kind`, or only `entity_ids`; returns how many scores were written."""
    if kind == ScoreKind.CHAMPION:
        return champions_refresh(tenant=tenant, now=now, account_ids=entity_ids)
    settings = working_settings(tenant=tenant)
    history = load_history(tenant, since=(midnight(now) - timedelta(days=SCORING_LOOKBACK_DAYS)).date())
    full = entity_ids is None
    candidates = _candidates(tenant, kind) if full else sorted(set(entity_ids or ()))
    # Every user has a health score, even one first seen today (training rows need history; a score does not).
    ids = candidates if kind == ScoreKind.HEALTH else eligible(history, settings, kind, now, candidates)
    computed = _compute(tenant, kind, history, settings, ids, now)
    return _write(tenant, kind, ENTITY_OF_KIND[ScoreKind(kind)], computed, now, candidates=candidates, full=full)


def _write(tenant: Tenant, kind: str, entity_type: str, computed: Computed, now: datetime, *,
           candidates: Sequence[int], full: bool) -> int:  # fmt: skip
    scores = Score.objects.for_tenant(tenant).filter(kind=kind)
    previous = {
        entity_id: (value, grade, computed_at)
        for entity_id, value, grade, computed_at in scores.filter(
            **({} if full else {"entity_id__in": list(candidates)})
        ).values_list("entity_id", "value", "grade", "computed_at")
    }
    if full:
        population = computed.values
    else:
        others = scores.exclude(entity_id__in=computed.ids).values_list("value", flat=True)
        population = np.concatenate([np.fromiter(others, dtype=float), computed.values])
    ranks = percentiles(computed.values, population)
    grade = grades(ranks)
    rows, history = [], []
    for n, pk in enumerate(computed.ids):
        value = float(computed.values[n])
        rows.append(
            Score(
                tenant=tenant, kind=kind, entity_type=entity_type, entity_id=pk, value=value,
                percentile=int(ranks[n]), grade=int(grade[n]), reasons=computed.reasons[n],
                model_version=computed.model_version, rule_based=computed.rule_based, computed_at=now,
                details=computed.details[n] if computed.details is not None else {},
            )
        )  # fmt: skip
        before = previous.get(pk)
        if (
            before is None
            or abs(before[0] - value) >= HISTORY_MIN_CHANGE
            or before[1] != int(grade[n])
            or (before[2].date() != now.date())
        ):
            history.append(
                ScoreHistory(
                    tenant=tenant, kind=kind, entity_type=entity_type, entity_id=pk, value=value,
                    grade=int(grade[n]), model_version=computed.model_version, computed_at=now,
                )
            )  # fmt: skip
    with transaction.atomic():
        stale = set(previous) - set(computed.ids)
        if full:
            scores.exclude(entity_id__in=computed.ids).delete()
        elif stale:
            scores.filter(entity_id__in=stale).delete()
        Score.objects.for_tenant(tenant).bulk_create(
            rows,
            batch_size=2000,
            update_conflicts=True,
            unique_fields=["tenant", "kind", "entity_type", "entity_id"],
            update_fields=[
                "value",
                "percentile",
                "grade",
                "reasons",
                "model_version",
                "rule_based",
                "computed_at",
                "details",
            ],
        )
        ScoreHistory.objects.for_tenant(tenant).bulk_create(history, batch_size=2000)
    return len(rows)


# --- champions ------------------------------------------------------------------------------------------


def champions_refresh(*, tenant: Tenant, now: datetime, account_ids: Iterable[int] | None = None) -> int:
    """Whom to call inside an account: share of the account's key activity (30 days), role weight, health."""
    settings = working_settings(tenant=tenant)
    history = load_history(tenant, since=(midnight(now) - timedelta(days=40)).date())
    key_events = key_events_of(history, settings["key_events"])
    members = members_as_of(history, now + timedelta(microseconds=1))
    full = account_ids is None
    accounts = sorted(members) if full else sorted(set(account_ids or ()) & set(members))
    memberships = [pk for account in accounts for pk, _user in members[account]]
    activity = membership_activity(history, memberships, now + timedelta(microseconds=1), key_events)
    weights = settings["champion"]["weights"]
    role_weights = settings["champion"]["role_weights"]
    users = [history.memberships[pk][1] for pk in memberships]
    health = dict(
        Score.objects.for_tenant(tenant)
        .filter(kind=ScoreKind.HEALTH, entity_id__in=users)
        .values_list("entity_id", "value")
    )
    team_events: dict[int, dict[str, float]] = {}
    for pk in memberships:
        totals = team_events.setdefault(history.memberships[pk][0], {})
        for event, count in activity[pk][2].items():
            totals[event] = totals.get(event, 0.0) + count
    total_weight = sum(weights.values()) or 1.0
    values, reasons = np.zeros(len(memberships)), []
    for n, pk in enumerate(memberships):
        mine, team, per_event = activity[pk]
        share = mine / team if team > 0 else 0.0
        role_name = properties_as_of(history, EntityType.MEMBERSHIP, pk, now + timedelta(microseconds=1)).get("role")
        role = float(role_weights.get(str(role_name or "").strip().lower(), 0.0))
        user_health = float(health.get(history.memberships[pk][1], 0.5))
        parts = {"share": share, "role": role, "health": user_health}
        values[n] = sum(weights[key] * parts[key] for key in parts) / total_weight
        candidates = []
        label = str(role_name).strip() if role_name else "no role"
        candidates.append(("role", weights["role"] * (role - 0.5) / total_weight, f"{label} in this account"))
        if per_event:
            top_event, top_count = max(per_event.items(), key=lambda item: item[1])
            team_count = team_events[history.memberships[pk][0]].get(top_event, 0.0)
            share_text = f"{round(100 * top_count / team_count) if team_count else 0}% of the team's {top_event}"
        else:
            share_text = "no key activity in this account in 30 days"
        candidates.append(("share", weights["share"] * (share - 0.25) / total_weight, share_text))
        candidates.append(
            ("health", weights["health"] * (user_health - 0.5) / total_weight,
             f"{round(user_health * 100)}% likely to be active in the coming weeks")
        )  # fmt: skip
        reasons.append(pick(candidates))
    computed = Computed(memberships, values, reasons, None, False)
    membership_candidates = memberships if full else _memberships_of(tenant, accounts)
    return _write(tenant, ScoreKind.CHAMPION, ScoredEntity.MEMBERSHIP, computed, now,
                  candidates=membership_candidates, full=full)  # fmt: skip


def _memberships_of(tenant: Tenant, accounts: Sequence[int]) -> list[int]:
    return list(Membership.objects.for_tenant(tenant).filter(account_id__in=accounts).values_list("pk", flat=True))


# --- what changed -> what to rescore -------------------------------------------------------------------------


def rescore_changed(tenant: Tenant, entities: list[tuple[str, int]], now: datetime) -> None:
    """Processor of dirty marks: rescore the accounts and users that changed, and their champions."""
    accounts = sorted({pk for entity_type, pk in entities if entity_type == EntityType.ACCOUNT})
    users = sorted({pk for entity_type, pk in entities if entity_type == EntityType.USER})
    if users:
        scores_refresh(tenant=tenant, kind=ScoreKind.HEALTH, now=now, entity_ids=users)
        accounts = sorted(
            set(accounts)
            | set(
                Membership.objects.for_tenant(tenant).filter(end_user_id__in=users).values_list("account_id", flat=True)
            )
        )
    if accounts:
        for kind in (ScoreKind.CONVERSION, ScoreKind.CHURN):
            scores_refresh(tenant=tenant, kind=kind, now=now, entity_ids=accounts)
        champions_refresh(tenant=tenant, now=now, account_ids=accounts)


def scores_refresh_all(*, tenant: Tenant, now: datetime) -> dict[str, int]:
    """Every kind, every entity (hourly): health first, since champions read it."""
    return {
        kind: scores_refresh(tenant=tenant, kind=kind, now=now)
        for kind in (ScoreKind.HEALTH, ScoreKind.CONVERSION, ScoreKind.CHURN, ScoreKind.CHAMPION)
    }
