"""Consumers of dirty-entity marks (DESIGN §2). Each capability that derives data from changed entities
registers a processor with an order: daily rollups first (`signals.rollups`, order 10), then whatever
reads them (features and scores, playbook triggers; default order 100). A batch of marks goes to every
processor in order, in one transaction, and a mark is cleared only after all of them handled it.

What keeps this correct without slowing ingestion down (ADR 0005):
- marks are claimed with row locks (`FOR UPDATE SKIP LOCKED`, in id order); an ingestion request that
  re-marks a claimed entity waits for the batch to commit (its `ON CONFLICT DO UPDATE` takes the row lock),
  then writes a fresh mark, so its events are seen by the next round;
- a mark is deleted only if its `marked_at` is unchanged;
- one batch per tenant at a time (`tenant_processing_lock`, a transaction-level advisory lock), so two
  workers never recompute overlapping rollup buckets at once. Ingestion takes the same lock before it
  deletes the rollup rows of merged or deleted entities.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from django.db import transaction

from accounts.models import DirtyEntity
from plgapp.models import Tenant

logger = logging.getLogger(__name__)
Processor = Callable[[Tenant, list[tuple[str, int]]], None]
PROCESSORS: list[Processor] = []  # in run order
DEFAULT_ORDER = 100
# Marks per round. Each round's processors pay fixed costs (the rescore ranks the new scores among the tenant's
# stored ones, playbooks look up who is affected), so under load bigger rounds go further: 500 -> 2,000 took the
# event -> Slack benchmark's processing from ~830 to ~1,900 events/s (docs/benchmarks.md). A round holds its marks'
# row locks until it commits (~1 s at 2,000 on 2 cores): an ingestion re-marking one of them waits that long.
CLAIM_BATCH = 2000
# Advisory-lock class of dirty-entity processing ("plgp"); the second key is the tenant id.
PROCESSING_LOCK = 0x706C6770

_orders: dict[Processor, int] = {}


def register(processor: Processor, *, order: int = DEFAULT_ORDER) -> Processor:
    """Add a processor. Lower `order` runs first; equal orders run in registration order."""
    _orders[processor] = order
    if processor not in PROCESSORS:
        PROCESSORS.append(processor)
    PROCESSORS.sort(key=lambda item: _orders.get(item, DEFAULT_ORDER))  # stable sort
    return processor


def tenant_processing_lock(tenant: Tenant | int) -> None:
    """Wait for this tenant's processing lock and hold it until the current transaction ends."""
    DirtyEntity.objects.sql(tenant, "SELECT pg_advisory_xact_lock(%(lock)s, %(tenant)s)", {"lock": PROCESSING_LOCK})


def tenant_processing_lock_try(tenant: Tenant | int) -> bool:
    """Take this tenant's processing lock if it is free (held until the current transaction ends)."""
    rows = DirtyEntity.objects.sql(
        tenant, "SELECT pg_try_advisory_xact_lock(%(lock)s, %(tenant)s)", {"lock": PROCESSING_LOCK}
    )
    return bool(rows[0][0])


def tenants_with_dirty_entities() -> list[int]:
    # System sweep across tenants: which tenants have work waiting (ids only).
    return list(DirtyEntity.objects.unscoped().values_list("tenant_id", flat=True).distinct())


def dirty_entities_process(*, tenant_id: int, wait: bool = True) -> int | None:
    """Hand this tenant's marks to the processors; returns how many marks were cleared. With `wait=False`, returns
    None at once when another run holds the tenant (it goes on until no mark is left) instead of queueing behind
    it — a worker process blocked on that lock serves nothing else (docs/benchmarks.md, event -> Slack)."""
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None or not PROCESSORS:
        return 0
    cleared = 0
    first = True
    while True:
        with transaction.atomic():
            if first and not wait:
                if not tenant_processing_lock_try(tenant):
                    return None
            else:
                tenant_processing_lock(tenant)
            first = False
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
            cleared += _marks_clear(tenant, [(pk, marked_at) for pk, _type, _id, marked_at in marks])


def _marks_clear(tenant: Tenant, marks: list[tuple[int, datetime]]) -> int:
    # One statement for the batch. A mark re-set while we worked (newer marked_at) stays for the next round.
    deleted = DirtyEntity.objects.sql(
        tenant,
        """
        DELETE FROM accounts_dirtyentity AS d
         USING unnest(%(ids)s::bigint[], %(ats)s::timestamptz[]) AS m(id, marked_at)
         WHERE d.tenant_id = %(tenant)s AND d.id = m.id AND d.marked_at = m.marked_at
        RETURNING d.id
        """,
        {"ids": [pk for pk, _at in marks], "ats": [at for _pk, at in marks]},
    )
    return len(deleted)
