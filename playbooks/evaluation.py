"""Where the engine meets the condition language: which entities match a condition (SQL backend), which
members of an account match `users_where`, the validator bound to a tenant's catalogue, preview counts,
and which playbooks a change can affect."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from accounts.models import Account, EndUser, EntityType, Membership
from playbooks import catalogue as data_catalogue
from playbooks.compiler import condition_filter
from playbooks.conditions import ConditionInvalid, entities_read
from playbooks.conditions import parse as condition_parse
from playbooks.models import Playbook, PlaybookStatus
from plgapp.models import Tenant

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


def _families(raw_conditions: Sequence[Any]) -> set[str]:
    """Which entity families conditions read: "account", "user", "membership" (fields, scores, events)."""
    families: set[str] = set()
    for raw in raw_conditions:
        if raw is None:
            continue
        try:
            condition = condition_parse(raw)
        except ConditionInvalid:
            continue
        families |= entities_read(condition)
    return families


def affected_playbooks(tenant: Tenant, entities: list[tuple[str, int]]) -> dict[int, list[int]]:
    """{active playbook id: entity ids to evaluate} for these changed entities — only playbooks whose
    conditions read what can have changed (an account change: account fields, scores and events; a user
    change: user fields and, for account playbooks, the user's accounts through users_where or scores)."""
    accounts = sorted({pk for entity_type, pk in entities if entity_type == EntityType.ACCOUNT})
    users = sorted({pk for entity_type, pk in entities if entity_type == EntityType.USER})
    if not accounts and not users:
        return {}
    user_accounts = sorted(
        set(Membership.objects.for_tenant(tenant).filter(end_user_id__in=users).values_list("account_id", flat=True))
    )
    targets: dict[int, list[int]] = {}
    playbooks = (
        Playbook.objects.for_tenant(tenant).filter(status=PlaybookStatus.ACTIVE).select_related("current_version")
    )
    for playbook in playbooks:
        if playbook.current_version is None:
            continue
        definition = playbook.current_version.definition
        families = _families([definition.get("entry"), definition.get("goal")])
        if playbook.object == "account":
            # Account conditions read account fields, scores (which user activity moves) and events.
            ids = set(accounts) if families & {"account"} else set()
            if users and families & {"account"}:
                ids |= set(user_accounts)
        else:
            ids = set(users) if families & {"user"} else set()
        if ids:
            targets[playbook.pk] = sorted(ids)
    return targets
