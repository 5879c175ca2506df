"""Consumers of dirty-entity marks. Each later capability (rollups, features, scores, playbook
triggers) registers a processor; a mark is cleared only after every processor has handled it.

Until a processor is registered (the scoring issue adds the first), marks stay in place, so the
work they stand for is not lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import transaction

from accounts.models import DirtyEntity
from plgapp.models import Tenant

logger = logging.getLogger(__name__)
Processor = Callable[[Tenant, list[tuple[str, int]]], None]
PROCESSORS: list[Processor] = []
CLAIM_BATCH = 500


def register(processor: Processor) -> Processor:
    PROCESSORS.append(processor)
    return processor


def tenants_with_dirty_entities() -> list[int]:
    # System sweep across tenants: which tenants have work waiting (ids only).
    return list(DirtyEntity.objects.unscoped().values_list("tenant_id", flat=True).distinct())


def dirty_entities_process(*, tenant_id: int) -> int:
    """Hand this tenant's marks to the processors; returns how many marks were cleared."""
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None or not PROCESSORS:
        return 0
    cleared = 0
    while True:
        with transaction.atomic():
            marks = list(
                DirtyEntity.objects.for_tenant(tenant)
                .order_by("pk")
                .select_for_update(skip_locked=True)[:CLAIM_BATCH]
                .values_list("pk", "entity_type", "entity_id", "marked_at")
            )
            if not marks:
                return cleared
            entities = [(entity_type, entity_id) for _pk, entity_type, entity_id, _at in marks]
            for processor in PROCESSORS:
                processor(tenant, entities)
            for pk, _type, _id, marked_at in marks:
                # A mark re-set while we worked (newer marked_at) stays for the next round.
                cleared += DirtyEntity.objects.for_tenant(tenant).filter(pk=pk, marked_at=marked_at).delete()[0]
