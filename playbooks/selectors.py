"""Reads of the playbook engine: handler contexts, results with significance, counters."""

from __future__ import annotations

import math
from typing import Any

from django.db.models import Count

from accounts.models import Account, EndUser, Membership
from playbooks.actions import ActionContext
from playbooks.models import ActionRun, Enrollment, EnrollmentGroup, EnrollmentStatus, Playbook, RunStatus
from plgapp.models import Tenant
from scoring.selectors import scores_by_entity


def account_data(tenant: Tenant, account_id: int) -> dict[str, Any] | None:
    account = Account.objects.for_tenant(tenant).filter(pk=account_id).first()
    if account is None:
        return None
    scores = scores_by_entity(tenant.pk, "account", [account.pk]).get(account.pk, {})
    return {
        "id": str(account.pk), "external_id": account.external_id, "name": account.name, "domain": account.domain,
        "stage": account.stage, "properties": dict(account.properties),
        "score": {kind: score["value"] for kind, score in scores.items()},
        "reasons": {kind: score["reasons"] for kind, score in scores.items()},
        "activation": (scores.get("conversion") or scores.get("churn") or {}).get("details", {}).get("activation"),
    }  # fmt: skip


def user_data(tenant: Tenant, user_id: int) -> dict[str, Any] | None:
    user = EndUser.objects.for_tenant(tenant).filter(pk=user_id).first()
    if user is None:
        return None
    scores = scores_by_entity(tenant.pk, "user", [user.pk]).get(user.pk, {})
    return {
        "id": str(user.pk), "external_id": user.external_id, "email": user.email, "stage": user.stage,
        "properties": dict(user.properties), "score": {kind: score["value"] for kind, score in scores.items()},
    }  # fmt: skip


def action_context(*, tenant: Tenant, run: ActionRun) -> ActionContext:
    """The account / user / membership a run is about, as plain data for the handler (and its templates)."""
    enrollment = Enrollment.objects.for_tenant(tenant).select_related("playbook", "version").get(pk=run.enrollment_id)
    account = user = membership = None
    if enrollment.playbook.object == "account":
        account = account_data(tenant, enrollment.entity_id)
        if run.end_user_id is not None:
            user = user_data(tenant, run.end_user_id)
            found = (
                Membership.objects.for_tenant(tenant)
                .filter(account_id=enrollment.entity_id, end_user_id=run.end_user_id)
                .values("properties", "joined_at", "left_at")
                .first()
            )
            membership = dict(found["properties"]) if found else None
    else:
        user = user_data(tenant, enrollment.entity_id)
    definition = enrollment.version.definition
    params: dict[str, Any] = {}
    for phase in ("actions", "on_goal", "on_timeout"):
        for action in definition.get(phase) or []:
            if action.get("id") == run.action_id:
                params = dict(action.get("params") or {})
    return ActionContext(
        tenant_id=tenant.pk, run_id=run.pk, playbook_id=enrollment.playbook_id, enrollment_id=enrollment.pk,
        action_id=run.action_id, params=params, account=account, user=user, membership=membership,
    )  # fmt: skip


# --- results ---------------------------------------------------------------------------------------------------


def two_proportion_p_value(successes_a: int, total_a: int, successes_b: int, total_b: int) -> float | None:
    """Two-sided p-value of a two-proportion z-test (None when a group is empty or rates are degenerate)."""
    if not total_a or not total_b:
        return None
    pooled = (successes_a + successes_b) / (total_a + total_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / total_a + 1 / total_b))
    if spread == 0:
        return None
    z = (successes_a / total_a - successes_b / total_b) / spread
    return math.erfc(abs(z) / math.sqrt(2))


def playbook_results(*, tenant: Tenant, playbook: Playbook) -> dict[str, Any]:
    """Counters of every path, and treatment vs control goal rates with significance (DESIGN §7)."""
    enrollments = Enrollment.objects.for_tenant(tenant).filter(playbook=playbook)
    by_group_status = {
        (group, status): count
        for group, status, count in enrollments.values_list("group", "status").annotate(n=Count("pk")).order_by()
    }

    def total(status: str | None = None, group: str | None = None) -> int:
        return sum(count for (g, s), count in by_group_status.items()
                   if (status is None or s == status) and (group is None or g == group))  # fmt: skip

    groups: dict[str, dict[str, Any]] = {}
    for group in (EnrollmentGroup.TREATMENT, EnrollmentGroup.CONTROL):
        entered = total(group=group)
        decided = total(EnrollmentStatus.GOAL_REACHED, group) + total(EnrollmentStatus.TIMED_OUT, group)
        reached = total(EnrollmentStatus.GOAL_REACHED, group)
        groups[str(group)] = {
            "entered": entered, "active": total(EnrollmentStatus.ACTIVE, group), "goal_reached": reached,
            "timed_out": total(EnrollmentStatus.TIMED_OUT, group), "exited": total(EnrollmentStatus.EXITED, group),
            "decided": decided, "goal_rate": round(reached / decided, 4) if decided else None,
        }  # fmt: skip
    treatment, control = groups["treatment"], groups["control"]
    runs = dict(
        ActionRun.objects.for_tenant(tenant).filter(playbook=playbook).values_list("status").annotate(n=Count("pk"))
        .order_by()
    )  # fmt: skip
    return {
        "entered": total(), "active": total(EnrollmentStatus.ACTIVE),
        "goal_reached": total(EnrollmentStatus.GOAL_REACHED), "timed_out": total(EnrollmentStatus.TIMED_OUT),
        "exited": total(EnrollmentStatus.EXITED), "suppressed": control["entered"],
        "treatment": treatment, "control": control,
        "p_value": two_proportion_p_value(treatment["goal_reached"], treatment["decided"], control["goal_reached"],
                                          control["decided"]),
        "actions": {status: runs.get(status, 0) for status in RunStatus.values},
        "sent": runs.get(RunStatus.SUCCEEDED, 0), "failed": runs.get(RunStatus.FAILED, 0),
        "dead": runs.get(RunStatus.DEAD, 0),
    }  # fmt: skip
