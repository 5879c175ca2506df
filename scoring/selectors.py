"""Reads of scores for other apps' representations (registered into accounts.scores_hook) and the API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.models import OuterRef, Subquery

from scoring.models import Score


def scores_by_entity(tenant_id: int, entity_type: str, ids: Sequence[int]) -> dict[int, dict[str, dict[str, Any]]]:
    """{entity id: {kind: SCORE}} for the given entities of one tenant."""
    found: dict[int, dict[str, dict[str, Any]]] = {}
    for score in Score.objects.for_tenant(tenant_id).filter(entity_type=entity_type, entity_id__in=list(ids)):
        found.setdefault(score.entity_id, {})[score.kind] = score.as_dict()
    return found


def score_value_expression(kind: str, entity_type: str) -> Subquery:
    """The current score value of the outer row (same tenant, this entity), for filtering and ordering."""
    # unscoped() + the outer row's tenant: the subquery can only see the tenant of the row it belongs to.
    return Subquery(
        Score.objects.unscoped()
        .filter(tenant_id=OuterRef("tenant_id"), kind=kind, entity_type=entity_type, entity_id=OuterRef("pk"))
        .values("value")[:1]
    )
