"""Consumers of dirty-entity marks (DESIGN §2). Each capability that derives data from changed entities
registers a processor with an order: daily rollups first (`signals.rollups`, order 10), then whatever
reads them (features and scores, playbook triggers; default order 100). A batch of marks goes to every
processor in order, and a mark is cleared only after all of them handled it, in the round's last transaction.
A round is one transaction unless a processor asks for its own (`after_commit`): the work before it is then
committed first, so what reacts to that work (a task queued on commit) does not wait for the slow part
(ADR 0028). Every processor recomputes from stored data, so a round that stops between its transactions is
redone whole by the next one: the marks are still there.

What keeps this correct without slowing ingestion down (ADR 0005, ADR 0014):
- marks are read without row locks (in id order): ingestion never waits for a round. A re-mark always moves
  `marked_at` forward (`entities_mark_dirty`), in the same transaction as its events;
- a mark is deleted only if its `marked_at` is unchanged, so an entity re-marked while the round worked
  keeps its mark and the next round sees its events; the delete skips marks a request holds at that moment
  (it is renewing them), so a round never waits for a request;
- rounds go round the marks in id order, so marks renewed round after round cannot starve the others;
- one batch per tenant at a time (`tenant_processing_lock`, a transaction-level advisory lock), so two
  workers never recompute overlapping rollup buckets at once. Ingestion takes the same lock before it
  deletes the rollup rows of merged or deleted entities.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
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
# event -> Slack benchmark's processing from ~830 to ~1,900 events/s (docs/benchmarks.md).
CLAIM_BATCH = 2000
# Advisory-lock class of dirty-entity processing ("plgp"); the second key is the tenant id.
PROCESSING_LOCK = 0x706C6770

_orders: dict[Processor, int] = {}
_after_commit: set[Processor] = set()


@dataclass
class RoundChanges:
    """What changed for the entities of the round under way, beyond their ids: which ones changed more than
    events (their marks' `fields_changed`), and — filled in by the rollup processor — the event names whose
    daily counts it recomputed for each entity (before and after: new, moved and deleted events). Processors
    that react to changes (playbooks) skip what cannot concern them."""

    fields_changed: set[tuple[str, int]] = field(default_factory=set)
    event_names: dict[tuple[str, int], set[str]] = field(default_factory=dict)

    def names_of(self, entity_type: str, entity_id: int) -> set[str]:
        return self.event_names.get((entity_type, entity_id), set())


_round: ContextVar[RoundChanges | None] = ContextVar("processing_round", default=None)


def round_changes() -> RoundChanges | None:
    """The changes of the processing round under way; None outside one (callers then assume anything changed)."""
    return _round.get()


def register(processor: Processor, *, order: int = DEFAULT_ORDER, after_commit: bool = False) -> Processor:
    """Add a processor. Lower `order` runs first; equal orders run in registration order. `after_commit`: the
    processor and those after it run in a new transaction, once the round's earlier work is committed."""
    _orders[processor] = order
    if after_commit:
        _after_commit.add(processor)
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


def dirty_entities_process(*, tenant_id: int, wait: bool = True, seconds: float | None = None) -> int | None:
    """Hand this tenant's marks to the processors, round after round until none is left; returns how many marks
    were cleared. With `wait=False` it never queues behind another holder of the tenant (another run, or an
    ingestion merge): None at once when the tenant is held, and it stops between rounds when it is taken. A worker
    process blocked on that lock serves nothing else (docs/benchmarks.md, event -> Slack)."""
    drained = dirty_entities_drain(tenant_id=tenant_id, wait=wait, seconds=seconds)
    return None if drained.busy and not drained.cleared else drained.cleared


@dataclass(frozen=True)
class Drained:
    cleared: int = 0
    busy: bool = False  # the tenant was held by someone else when this run asked: the caller looks again shortly
    stopped: bool = False  # the time was up with marks left: the caller hands the rest to a new run


# Where this process's next round starts, per tenant: rounds go round the marks in id order. A mark renewed while
# a round works keeps its id, so without this a steady stream re-marking as many entities as a round holds would
# have every round take the same lowest ids and leave the marks behind them waiting while the stream lasts.
_claim_after: dict[int, int] = {}


def dirty_entities_drain(
    *, tenant_id: int, wait: bool = True, seconds: float | None = None, on_hold: Callable[[], None] | None = None
) -> Drained:
    """`dirty_entities_process`, told why it stopped. `seconds` bounds a run (checked between rounds), so that a
    worker draining a busy tenant gives its process back to queued evaluations and actions now and then.
    `on_hold`: called once, when the run first holds the tenant."""
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None or not PROCESSORS:
        return Drained()
    deadline = None if seconds is None else time.monotonic() + seconds
    cleared = 0
    first = True
    while True:
        if not first and deadline is not None and time.monotonic() >= deadline:
            return Drained(cleared, stopped=True)
        marks: list[tuple[int, str, int, datetime, bool]] = []
        changes = RoundChanges()
        phases = _phases()
        for number, phase in enumerate(phases):
            with transaction.atomic():
                # Each transaction takes the tenant again: between two of them someone else may hold it (an
                # ingestion merge, or another run that found it free); this round's marks then wait for a later one.
                if wait:
                    tenant_processing_lock(tenant)
                elif not tenant_processing_lock_try(tenant):
                    return Drained(cleared, busy=True)
                if number == 0:
                    if first and on_hold is not None:
                        on_hold()
                    first = False
                    marks = _marks_claim(tenant)
                    if not marks:
                        return Drained(cleared)
                    changes = RoundChanges(fields_changed={(kind, pk) for _pk, kind, pk, _at, changed in marks
                                                           if changed})  # fmt: skip
                entities = [(entity_type, entity_id) for _pk, entity_type, entity_id, _at, _changed in marks]
                token = _round.set(changes)
                try:
                    for processor in phase:
                        processor(tenant, entities)
                finally:
                    _round.reset(token)
                if number == len(phases) - 1:
                    cleared += _marks_clear(tenant, [(pk, marked_at) for pk, _type, _id, marked_at, _ch in marks])


def _phases() -> list[list[Processor]]:
    """The processors in order, cut before each one registered `after_commit`: one transaction per part."""
    phases: list[list[Processor]] = [[]]
    for processor in PROCESSORS:
        if processor in _after_commit and phases[-1]:
            phases.append([])
        phases[-1].append(processor)
    return phases


def _marks_claim(tenant: Tenant) -> list[tuple[int, str, int, datetime, bool]]:
    """Up to CLAIM_BATCH marks, read without locks (ADR 0014), from where this process's last round stopped."""
    pending = DirtyEntity.objects.for_tenant(tenant).order_by("pk")
    fields = ("pk", "entity_type", "entity_id", "marked_at", "fields_changed")
    after = _claim_after.get(tenant.pk, 0)
    marks = list(pending.filter(pk__gt=after)[:CLAIM_BATCH].values_list(*fields))
    if len(marks) < CLAIM_BATCH and after:  # wrap around
        marks += pending.filter(pk__lte=after)[: CLAIM_BATCH - len(marks)].values_list(*fields)
    _claim_after[tenant.pk] = marks[-1][0] if marks else 0
    return marks


def _marks_clear(tenant: Tenant, marks: list[tuple[int, datetime]]) -> int:
    """Delete the marks unchanged since the claim, in one statement. A mark renewed while we worked (newer
    marked_at) stays for the next round; so does one a request is renewing right now (its row is locked: SKIP
    LOCKED), so a round never waits for a request — requests lock their marks in their own order, and waiting here
    could deadlock with one. A request may wait for this round's commit, which follows at once."""
    deleted = DirtyEntity.objects.sql(
        tenant,
        """
        WITH unchanged AS (
            SELECT d.id
              FROM accounts_dirtyentity AS d
              JOIN unnest(%(ids)s::bigint[], %(ats)s::timestamptz[]) AS m(id, marked_at)
                ON d.id = m.id AND d.marked_at = m.marked_at
             WHERE d.tenant_id = %(tenant)s
               FOR UPDATE OF d SKIP LOCKED
        )
        DELETE FROM accounts_dirtyentity
         WHERE tenant_id = %(tenant)s AND id IN (SELECT id FROM unchanged)
        RETURNING id
        """,
        {"ids": [pk for pk, _at in marks], "ats": [at for _pk, at in marks]},
    )
    return len(deleted)
