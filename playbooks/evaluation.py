"""Where the engine meets the condition language: which entities match a condition (SQL backend), which
members of an account match `users_where`, the validator bound to a tenant's catalogue, preview counts,
and which playbooks a change can affect."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from typing import Any

from django.db.models import QuerySet

from accounts.models import Account, EndUser, EntityType, Membership
from integrations.templates import template_reads_scores
from playbooks import catalogue as data_catalogue
from playbooks.compiler import condition_filter
from playbooks.conditions import ConditionInvalid, entities_read, events_read, reads_scores
from playbooks.conditions import parse as condition_parse
from playbooks.models import Enrollment, EnrollmentStatus, Playbook, PlaybookStatus, PlaybookVersion
from plgapp.models import Tenant
from signals.processing import RoundChanges

ConditionCheck = Any


def entity_model(obj: str) -> type[Account] | type[EndUser]:
    return Account if obj == "account" else EndUser


def condition_check(tenant: Tenant, catalogue: data_catalogue.Catalogue | None = None) -> ConditionCheck:
    """A (raw condition, path, scope) -> {path: message} check against this tenant's catalogue."""
    catalogue = catalogue or data_catalogue.catalogue_get(tenant=tenant)

    def check(raw: Any, path: str, scope: str) -> dict[str, str]:
        errors = data_catalogue.condition_errors(raw, catalogue, scope=scope)
        return {f"{path}.{key}" if key else path: message for key, message in errors.items()}

    return check


def matching_ids(tenant: Tenant, obj: str, raw: Any, now: datetime, candidates: QuerySet[Any], limit: int) -> list[int]:
    """Ids (ascending) of `candidates` (a tenant-scoped queryset of the playbook's object) matching `raw`."""
    condition = condition_parse(raw)
    matches = candidates.filter(condition_filter(condition, tenant=tenant, root=obj, now=now))
    return list(matches.order_by("pk").values_list("pk", flat=True)[:limit])


def members_matching(tenant: Tenant, account_id: int, raw: Any, now: datetime) -> list[int]:
    """User ids of the account's current members whose user and membership match `raw` (users_where)."""
    condition = condition_parse(raw)
    memberships = Membership.objects.for_tenant(tenant).filter(account_id=account_id, left_at__isnull=True)
    matches = memberships.filter(condition_filter(condition, tenant=tenant, root="membership", now=now))
    return list(matches.order_by("end_user_id").values_list("end_user_id", flat=True))


def preview(*, tenant: Tenant, obj: str, condition: Any, now: datetime, sample: int) -> dict[str, Any]:
    """How many entities match `condition` now, and a sample of them."""
    from playbooks.services import PlaybookInvalid

    errors = condition_check(tenant)(condition, "entry", obj)
    if errors:
        raise PlaybookInvalid(errors)
    try:
        parsed = condition_parse(condition)
    except ConditionInvalid as exc:
        raise PlaybookInvalid({f"entry.{key}": value for key, value in exc.errors.items()}) from None
    model = entity_model(obj)
    matches = model.objects.for_tenant(tenant).filter(condition_filter(parsed, tenant=tenant, root=obj, now=now))
    fields = ("pk", "external_id", "name", "domain", "stage") if obj == "account" else ("pk", "external_id", "email",
                                                                                          "stage")  # fmt: skip
    rows = list(matches.order_by("pk").values(*fields)[:sample])
    return {
        "count": matches.count(),
        "sample": [{**{key: value for key, value in row.items() if key != "pk"}, "id": str(row["pk"])} for row in rows],
    }


@dataclass(frozen=True)
class Reads:
    """What a playbook's entry and goal conditions read: the entity families ("account", "user", "membership")
    and the event names whose events alone can move them (None: any event can — a score, activation, a seen
    time). `scores`: whether anything of the playbook — those conditions, its actions' `users_where` or their
    templates — reads what a rescore writes; such a playbook is evaluated only after the round's rescore."""

    families: frozenset[str]
    events: frozenset[str] | None
    scores: bool = False


@lru_cache(maxsize=1024)
def _reads_of(version_id: int, tenant_id: int) -> Reads:
    # Versions are immutable: read once per process, like their parsed definitions.
    definition = PlaybookVersion.objects.for_tenant(tenant_id).values_list("definition", flat=True).get(pk=version_id)
    reads = Reads(frozenset(), frozenset())
    for raw in (definition.get("entry"), definition.get("goal")):
        condition = _parsed(raw)
        if condition is not None:
            reads = _joined(reads, Reads(frozenset(entities_read(condition)), events_read(condition),
                                         reads_scores(condition)))  # fmt: skip
    if not reads.scores and _actions_read_scores(definition):
        reads = replace(reads, scores=True)
    return reads


def _parsed(raw: Any) -> Any:
    if raw is None:
        return None
    try:
        return condition_parse(raw)
    except ConditionInvalid:
        return None


def _actions_read_scores(definition: dict[str, Any]) -> bool:
    """Whether an action of any phase picks its users by a score, or shows one in a text parameter (every text
    parameter is a template)."""
    for phase in ("actions", "on_goal", "on_timeout"):
        for action in definition.get(phase) or ():
            users_where = _parsed(action.get("users_where"))
            if users_where is not None and reads_scores(users_where):
                return True
            if any(template_reads_scores(value) for value in (action.get("params") or {}).values()):
                return True
    return False


def _joined(one: Reads, other: Reads) -> Reads:
    events = None if one.events is None or other.events is None else one.events | other.events
    return Reads(one.families | other.families, events, one.scores or other.scores)


def _moved(reads: Reads, entity: tuple[str, int], changes: RoundChanges | None) -> bool:
    """Whether what changed for this entity in the round can move conditions that read `reads`."""
    if changes is None or reads.events is None or entity in changes.fields_changed:
        return True
    return not reads.events.isdisjoint(changes.names_of(*entity))


def affected_playbooks(
    tenant: Tenant, entities: list[tuple[str, int]], changes: RoundChanges | None = None, *,
    scores: bool | None = None,
) -> dict[int, list[int]]:  # fmt: skip
    """{active playbook id: entity ids to evaluate} for these changed entities — only playbooks whose
    conditions read what can have changed (an account change: account fields, scores and events; a user
    change: user fields and, for account playbooks, the user's accounts through users_where or scores).
    With the round's `changes`, an entity whose only change is events is left out of every playbook that
    reads none of those events' names (a page view re-checks no playbook about reports).
    `scores`: only the playbooks that read scores (True) or only those that do not (False); None: all."""
    accounts = sorted({pk for entity_type, pk in entities if entity_type == EntityType.ACCOUNT})
    users = sorted({pk for entity_type, pk in entities if entity_type == EntityType.USER})
    if not accounts and not users:
        return {}
    playbooks = list(
        Playbook.objects.for_tenant(tenant).filter(status=PlaybookStatus.ACTIVE, current_version__isnull=False)
        .values_list("pk", "object", "current_version_id")
    )  # fmt: skip
    reads = {pk: _reads_of(version_id, tenant.pk) for pk, _obj, version_id in playbooks}
    # Enrollments pinned to an older version check that version's goal: its reads count too.
    older = (
        Enrollment.objects.for_tenant(tenant)
        .filter(status=EnrollmentStatus.ACTIVE, playbook_id__in=list(reads))
        .exclude(version_id__in=[version_id for _pk, _obj, version_id in playbooks])
        .values_list("playbook_id", "version_id")
        .distinct()
    )
    for pk, version_id in older:
        reads[pk] = _joined(reads[pk], _reads_of(version_id, tenant.pk))
    if scores is not None:  # this pass's half of the playbooks (ADR 0028): the other pass looks up the rest
        playbooks = [playbook for playbook in playbooks if reads[playbook[0]].scores == scores]
    if not playbooks:
        return {}
    account_readers = [reads[pk] for pk, obj, _v in playbooks if obj == "account" and "account" in reads[pk].families]
    # A user's accounts matter only to account playbooks that its change can move.
    moving_users = [pk for pk in users if any(_moved(r, (EntityType.USER, pk), changes) for r in account_readers)]
    user_accounts: dict[int, list[int]] = {}
    for user_id, account_id in (
        Membership.objects.for_tenant(tenant)
        .filter(end_user_id__in=moving_users)
        .values_list("end_user_id", "account_id")
    ):
        user_accounts.setdefault(user_id, []).append(account_id)
    targets: dict[int, list[int]] = {}
    for pk, obj, _version in playbooks:
        read = reads[pk]
        if obj == "account":
            # Account conditions read account fields, scores (which user activity moves) and events.
            if "account" not in read.families:
                continue
            ids = {a for a in accounts if _moved(read, (EntityType.ACCOUNT, a), changes)}
            for user_id in users:
                if _moved(read, (EntityType.USER, user_id), changes):
                    ids.update(user_accounts.get(user_id, ()))
        else:
            ids = {u for u in users if "user" in read.families and _moved(read, (EntityType.USER, u), changes)}
        if ids:
            targets[pk] = sorted(ids)
    return targets
