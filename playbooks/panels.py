"""The playbooks panel of the account and user pages: the entity's enrollments (newest first) and, for each, its
action runs with their status and error — for a user page also the runs that targeted that user."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.http import HttpRequest

from accounts.panels import Panel
from playbooks.models import ActionRun, Enrollment
from plgapp.models import Tenant

MAX_ENROLLMENTS = 20


def playbooks_panel(request: HttpRequest, tenant: Tenant, entity_type: str, entity: Any) -> Panel | None:
    if entity_type not in ("account", "user"):
        return None
    enrollments = list(
        Enrollment.objects.for_tenant(tenant)
        .filter(entity_id=entity.pk, playbook__object=entity_type)
        .select_related("playbook", "version")
        .order_by("-entered_at")[:MAX_ENROLLMENTS]
    )
    runs = ActionRun.objects.for_tenant(tenant).filter(enrollment_id__in=[e.pk for e in enrollments])
    if entity_type == "user":  # also what account playbooks did to this person
        targeted = (
            ActionRun.objects.for_tenant(tenant)
            .filter(end_user_id=entity.pk)
            .exclude(enrollment_id__in=[e.pk for e in enrollments])
        )
        extra = list(targeted.select_related("enrollment__playbook").order_by("-created_at")[:50])
    else:
        extra = []
    by_enrollment: dict[int, list[ActionRun]] = defaultdict(list)
    for run in runs.order_by("created_at", "pk"):
        by_enrollment[run.enrollment_id].append(run)
    for enrollment in enrollments:
        enrollment.action_runs = by_enrollment.get(enrollment.pk, [])  # type: ignore[attr-defined]
    context = {"enrollments": enrollments, "targeted": extra}
    return Panel("Playbooks", "playbooks/_playbooks_panel.html", context, "playbooks")
