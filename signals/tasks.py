"""Downstream processing of changed entities (DESIGN §2): hints after commit, plus a sweep for lost hints."""

from __future__ import annotations

import logging

from celery import shared_task

from signals.processing import dirty_entities_drain, tenants_with_dirty_entities
from signals.services import (
    processing_draining_end,
    processing_draining_start,
    processing_hand_over_to_run,
    processing_hint,
    processing_hint_taken,
)

# A task that finds the tenant held by something other than a processing run (an ingestion merge, or a run whose
# announcement Redis lost) looks again this much later. One held by a run leaves the hand-over to it (ADR 0025).
PROCESSING_RECHECK_SECONDS = 0.2
# A run drains for about this long, then queues its successor and returns: under a steady stream of writes the
# marks never run out, and a process that drained without end would leave evaluations and actions queued behind
# it (seconds of event -> Slack latency, docs/benchmarks.md).
DRAIN_SECONDS = 1.0

logger = logging.getLogger(__name__)


@shared_task(name="signals.tasks.dirty_entities_process")
def dirty_entities_process_task(tenant_id: int) -> int:
    processing_hint_taken(tenant_id)
    held: list[str | None] = []  # the token of this run's announcement, once it holds the tenant
    try:
        drained = dirty_entities_drain(
            tenant_id=tenant_id, wait=False, seconds=DRAIN_SECONDS,
            on_hold=lambda: held.append(processing_draining_start(tenant_id)),
        )  # fmt: skip
    finally:
        hinted = processing_draining_end(tenant_id, held[0]) if held else False
    if drained.busy:
        # Another run (or an ingestion merge) holds the tenant. A run hands over when it ends; anything else, look
        # again shortly rather than hold this worker process on its lock.
        if not processing_hand_over_to_run(tenant_id):
            processing_hint(tenant_id, delay=PROCESSING_RECHECK_SECONDS)
    elif drained.stopped or hinted:
        # At the back of the queue: what was queued meanwhile goes first. Also when this run found no marks left
        # but a write came while it ran: its marks may have come after the last claim.
        processing_hint(tenant_id, even_if_queued=True)
    return drained.cleared


@shared_task(name="signals.tasks.dirty_entities_sweep")
def dirty_entities_sweep() -> None:
    """Recover hints lost with Redis or a worker: every tenant with pending marks gets one."""
    for tenant_id in tenants_with_dirty_entities():
        dirty_entities_process_task.apply_async(args=(tenant_id,))
