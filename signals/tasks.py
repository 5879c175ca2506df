"""Downstream processing of changed entities (DESIGN §2): hints after commit, plus a sweep for lost hints."""

from __future__ import annotations

import logging

from celery import shared_task

from signals.processing import dirty_entities_drain, tenants_with_dirty_entities
from signals.services import processing_hint, processing_hint_taken

# A run that finds the tenant held looks again this much later. Under a steady stream of writes that look is what
# follows each drain: the waiting look keeps writes from queueing another task, and the run's own successor with
# it, so the tenant's marks wait up to this long after every drain. 0.5 s of it was a third of the event -> Slack
# p95; a look costs a few milliseconds of a worker process (docs/benchmarks.md).
PROCESSING_RECHECK_SECONDS = 0.2
# A run drains for about this long, then queues its successor and returns: under a steady stream of writes the
# marks never run out, and a process that drained without end would leave evaluations and actions queued behind
# it (seconds of event -> Slack latency, docs/benchmarks.md).
DRAIN_SECONDS = 1.0

logger = logging.getLogger(__name__)


@shared_task(name="signals.tasks.dirty_entities_process")
def dirty_entities_process_task(tenant_id: int) -> int:
    processing_hint_taken(tenant_id)
    drained = dirty_entities_drain(tenant_id=tenant_id, wait=False, seconds=DRAIN_SECONDS)
    if drained.busy:
        # Another run (or an ingestion merge) holds the tenant: look again shortly rather than hold this worker
        # process on its lock. If that was another run draining, the flag makes this a single cheap task.
        processing_hint(tenant_id, delay=PROCESSING_RECHECK_SECONDS)
    elif drained.stopped:
        processing_hint(tenant_id)  # at the back of the queue: what was queued meanwhile goes first
    return drained.cleared


@shared_task(name="signals.tasks.dirty_entities_sweep")
def dirty_entities_sweep() -> None:
    """Recover hints lost with Redis or a worker: every tenant with pending marks gets one."""
    for tenant_id in tenants_with_dirty_entities():
        dirty_entities_process_task.apply_async(args=(tenant_id,))
