"""The playbook engine (DESIGN §9): lifecycle, entry, goal vs timeout, the action outbox and its executor.

Every step is safe to run twice or concurrently:
- entry inserts an Enrollment under a partial unique index (one active per playbook and entity) inside a
  savepoint — never check-then-insert — and queues the main actions in the same transaction;
- ActionRun rows carry a unique idempotency key (enrollment, phase, action, user), inserted with
  ON CONFLICT DO NOTHING: an action is queued at most once however often evaluation runs;
- goal vs timeout is one compare-and-set on the enrollment status (`UPDATE … WHERE status='active'`); the goal
  is re-checked just before the timeout actions are queued;
- the executor claims a run with a conditional UPDATE and a lease; expired leases are recovered by the sweep.
Time is passed in (`now`), so sweeps can run as of any instant (`manage.py run_sweeps --now`).
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache, partial
from typing import Any

import redis
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, Max, OuterRef, Q
from django.utils import timezone

from playbooks import actions as action_types
from playbooks.catalogue import catalogue_get
from playbooks.definition import Action, Definition, DefinitionInvalid, in_holdout, parse
from playbooks.dispatch import evaluation_hint, evaluation_unhint, runs_schedule_and_release
from playbooks.evaluation import condition_check, entity_model, matching_ids, members_matching
from playbooks.models import (
    DUE_STATUSES,
    ActionPhase,
    ActionRun,
    Enrollment,
    EnrollmentGroup,
    EnrollmentStatus,
    InFlightPolicy,
    Playbook,
    PlaybookStatus,
    PlaybookVersion,
    RunStatus,
    idempotency_key,
)
from playbooks.selectors import action_context
from plgapp.models import Tenant, User
from signals.processing import round_changes

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
BACKOFF_MAX_SECONDS = 3600.0
ENTRY_BATCH = 1000
RUNS_PER_TASK = 50  # enrollments per executor task after a big entry
DEADLINE_BATCH = 500
IN_FLIGHT_RUNS = (RunStatus.WAITING, RunStatus.PENDING, RunStatus.FAILED)


class PlaybookInvalid(ValueError):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


class TransitionRefused(ValueError):
    pass


# --- definitions and lifecycle -------------------------------------------------------------------------------


def definition_validate(*, tenant: Tenant, raw: Any) -> Definition:
    """Parse a definition, checking every condition against the tenant's data catalogue."""
    catalogue = catalogue_get(tenant=tenant)
    facts = action_types.TenantFacts(tenant_id=tenant.pk, obj="account", properties=catalogue.properties)
    try:
        return parse(raw, check_condition=condition_check(tenant, catalogue), facts=facts)
    except DefinitionInvalid as exc:
        raise PlaybookInvalid({f"definition.{path}": message for path, message in exc.fields.items()}) from None


@lru_cache(maxsize=512)
def _definition_of(version_id: int, tenant_id: int) -> Definition:
    # Versions are immutable, and were validated when published: parse once per process.
    raw = PlaybookVersion.objects.for_tenant(tenant_id).values_list("definition", flat=True).get(pk=version_id)
    return parse(raw, check_condition=lambda condition, path, scope: {})


def version_definition(version: PlaybookVersion) -> Definition:
    return _definition_of(version.pk, version.tenant_id)


def playbook_create(*, tenant: Tenant, name: str, definition: Any, created_by: User | None, now: datetime) -> Playbook:
    parsed = definition_validate(tenant=tenant, raw=definition)
    with transaction.atomic():
        if Playbook.objects.for_tenant(tenant).filter(name=name).exists():
            raise PlaybookInvalid({"name": f"a playbook named {name!r} already exists"})
        playbook = Playbook.objects.for_tenant(tenant).create(
            name=name, object=parsed.object, created_by=created_by, created_at=now, updated_at=now
        )
        version = PlaybookVersion.objects.for_tenant(tenant).create(
            playbook=playbook, number=1, definition=definition, created_by=created_by, created_at=now
        )
        playbook.current_version = version
        playbook.save(update_fields=["current_version"])
    return playbook


def playbook_publish(
    *,
    tenant: Tenant,
    playbook_id: int,
    definition: Any,
    in_flight_policy: str = InFlightPolicy.KEEP,
    name: str | None = None,
    created_by: User | None,
    now: datetime,
) -> Playbook:
    """A new immutable version becomes current. Running enrollments keep their version (default) or exit."""
    parsed = definition_validate(tenant=tenant, raw=definition)
    if in_flight_policy not in InFlightPolicy.values:
        raise PlaybookInvalid({"in_flight_policy": 'is "keep" or "exit"'})
    with transaction.atomic():
        playbook = Playbook.objects.for_tenant(tenant).select_for_update().get(pk=playbook_id)
        if playbook.status == PlaybookStatus.ARCHIVED:
            raise TransitionRefused("an archived playbook cannot change")
        if parsed.object != playbook.object:
            raise PlaybookInvalid({"definition.object": f"this playbook is about {playbook.object}s; it cannot change"})
        if name is not None and name != playbook.name:
            if Playbook.objects.for_tenant(tenant).filter(name=name).exclude(pk=playbook.pk).exists():
                raise PlaybookInvalid({"name": f"a playbook named {name!r} already exists"})
            playbook.name = name
        latest = PlaybookVersion.objects.for_tenant(tenant).filter(playbook=playbook).aggregate(n=Max("number"))["n"]
        version = PlaybookVersion.objects.for_tenant(tenant).create(
            playbook=playbook, number=(latest or 0) + 1, definition=definition, in_flight_policy=in_flight_policy,
            created_by=created_by, created_at=now,
        )  # fmt: skip
        playbook.current_version = version
        playbook.updated_at = now
        playbook.save(update_fields=["current_version", "name", "updated_at"])
        if in_flight_policy == InFlightPolicy.EXIT:
            _exit_enrollments(tenant, playbook, now, reason=f"version {version.number} published",
                              keep_version=version.pk)  # fmt: skip
    return playbook


def _exit_enrollments(tenant: Tenant, playbook: Playbook, now: datetime, *, reason: str,
                      keep_version: int | None = None) -> int:  # fmt: skip
    enrollments = Enrollment.objects.for_tenant(tenant).filter(playbook=playbook, status=EnrollmentStatus.ACTIVE)
    if keep_version is not None:
        enrollments = enrollments.exclude(version_id=keep_version)
    ids = list(enrollments.values_list("pk", flat=True))
    Enrollment.objects.for_tenant(tenant).filter(pk__in=ids, status=EnrollmentStatus.ACTIVE).update(
        status=EnrollmentStatus.EXITED, ended_at=now, exit_reason=reason
    )
    ActionRun.objects.for_tenant(tenant).filter(enrollment_id__in=ids, status__in=IN_FLIGHT_RUNS).update(
        status=RunStatus.SKIPPED, error=f"enrollment exited: {reason}", updated_at=now, completed_at=now
    )
    return len(ids)


TRANSITIONS = {
    "activate": ({PlaybookStatus.DRAFT, PlaybookStatus.PAUSED}, PlaybookStatus.ACTIVE),
    "pause": ({PlaybookStatus.ACTIVE}, PlaybookStatus.PAUSED),
    "archive": ({PlaybookStatus.DRAFT, PlaybookStatus.ACTIVE, PlaybookStatus.PAUSED}, PlaybookStatus.ARCHIVED),
}


def playbook_transition(*, tenant: Tenant, playbook_id: int, action: str, now: datetime) -> Playbook:
    """draft → active ⇄ paused → archived. Pausing holds entries and sends; archiving exits every enrollment."""
    allowed, target = TRANSITIONS[action]
    with transaction.atomic():
        playbook = Playbook.objects.for_tenant(tenant).select_for_update().get(pk=playbook_id)
        if playbook.status == target:
            return playbook
        if playbook.status not in allowed:
            raise TransitionRefused(f"a {playbook.status} playbook cannot be {target}")
        playbook.status = target
        playbook.updated_at = now
        if target == PlaybookStatus.ACTIVE and playbook.activated_at is None:
            playbook.activated_at = now
        playbook.save(update_fields=["status", "updated_at", "activated_at"])
        if target == PlaybookStatus.ARCHIVED:
            _exit_enrollments(tenant, playbook, now, reason="playbook archived")
        if target == PlaybookStatus.ACTIVE:
            tenant_id, pk = tenant.pk, playbook.pk
            transaction.on_commit(lambda: _enqueue_evaluation(tenant_id, pk, None))
    return playbook


# --- evaluation: entry and goal --------------------------------------------------------------------------------


@dataclass
class Evaluated:
    entered: list[int]
    goal_reached: list[int]


def playbook_evaluate(*, tenant: Tenant, playbook_id: int, now: datetime, entity_ids: Sequence[int] | None = None,
                      schedule_here: bool = False) -> Evaluated:  # fmt: skip
    """Enroll matching entities (all, or `entity_ids`) and close the enrollments whose goal is met. With
    `schedule_here` (the evaluation of changes), a small entry's runs go to the executor's schedule right after
    commit instead of through one more task: one queue wait less between an event and its action."""
    playbook = Playbook.objects.for_tenant(tenant).select_related("current_version").filter(pk=playbook_id).first()
    if playbook is None or playbook.status != PlaybookStatus.ACTIVE or playbook.current_version is None:
        return Evaluated([], [])
    goal_reached = _goals_check(tenant, playbook, now, entity_ids)
    entered: list[int] = []
    for batch in _entry_batches(tenant, playbook, now, entity_ids):
        # Earlier passes of these entities, in one query (re-entries number on from them).
        previous = dict(
            Enrollment.objects.for_tenant(tenant).filter(playbook=playbook, entity_id__in=batch)
            .order_by().values("entity_id").annotate(last=Max("sequence")).values_list("entity_id", "last")
        )  # fmt: skip
        enrollments = []
        for entity_id in batch:
            enrollment_id = _enroll(tenant, playbook, playbook.current_version, entity_id, now,
                                    sequence=previous.get(entity_id, 0) + 1)  # fmt: skip
            if enrollment_id is not None:
                entered.append(entity_id)
                enrollments.append(enrollment_id)
        if schedule_here and 0 < len(enrollments) <= RUNS_PER_TASK:
            transaction.on_commit(partial(_schedule_entered, tenant, enrollments))
            continue
        for start in range(0, len(enrollments), RUNS_PER_TASK):  # workers share a big entry
            chunk = enrollments[start : start + RUNS_PER_TASK]
            transaction.on_commit(partial(_enqueue_runs, tenant.pk, chunk))
    return Evaluated(entered, goal_reached)


def _entry_batches(tenant: Tenant, playbook: Playbook, now: datetime,
                   entity_ids: Sequence[int] | None) -> Iterable[list[int]]:  # fmt: skip
    version = playbook.current_version
    assert version is not None
    definition = version_definition(version)
    model = entity_model(playbook.object)
    blocked = Enrollment.objects.for_tenant(tenant).filter(playbook=playbook, entity_id=OuterRef("pk"))
    if definition.reentry == "never":
        blocking = blocked
    else:
        blocking = blocked.filter(Q(status=EnrollmentStatus.ACTIVE) | Q(ended_at__gt=now - definition.reentry_gap))
    candidates = model.objects.for_tenant(tenant).exclude(Exists(blocking))
    if entity_ids is not None:
        candidates = candidates.filter(pk__in=list(entity_ids))
    last = 0
    while True:
        batch = matching_ids(
            tenant, playbook.object, definition.entry, now, candidates.filter(pk__gt=last).order_by("pk"), ENTRY_BATCH
        )
        if not batch:
            return
        yield batch
        last = batch[-1]


def _enroll(tenant: Tenant, playbook: Playbook, version: PlaybookVersion, entity_id: int, now: datetime, *,
            sequence: int) -> int | None:  # fmt: skip
    """Enroll one entity and queue its main actions, in one savepoint: the enrollment's id, or None when
    another evaluation enrolled it first. The caller hands the enrollment to the executor after commit."""
    definition = version_definition(version)
    group = (
        EnrollmentGroup.CONTROL
        if in_holdout(playbook.pk, entity_id, definition.holdout_percent)
        else EnrollmentGroup.TREATMENT
    )
    try:
        with transaction.atomic():
            enrollment = Enrollment.objects.for_tenant(tenant).create(
                playbook=playbook, version=version, entity_id=entity_id, sequence=sequence, group=group,
                entered_at=now, deadline_at=now + definition.timeout if definition.timeout else None,
            )  # fmt: skip
            _queue_phase(tenant, enrollment, definition, ActionPhase.MAIN, now)
            if definition.goal is None and definition.timeout is None:
                Enrollment.objects.for_tenant(tenant).filter(pk=enrollment.pk).update(
                    status=EnrollmentStatus.EXITED, ended_at=now, exit_reason="no goal or timeout: done after entry"
                )
    except IntegrityError:
        return None  # another evaluation enrolled it first (one active per playbook and entity, or sequence)
    return enrollment.pk


def _goals_check(tenant: Tenant, playbook: Playbook, now: datetime, entity_ids: Sequence[int] | None) -> list[int]:
    """Close active enrollments whose goal holds now (each by compare-and-set); returns their entity ids."""
    reached: list[int] = []
    active = Enrollment.objects.for_tenant(tenant).filter(playbook=playbook, status=EnrollmentStatus.ACTIVE)
    if entity_ids is not None:
        active = active.filter(entity_id__in=list(entity_ids))
    by_version: dict[int, list[tuple[int, int]]] = {}
    for pk, version_id, entity_id in active.values_list("pk", "version_id", "entity_id"):
        by_version.setdefault(version_id, []).append((pk, entity_id))
    for version_id, enrollments in by_version.items():
        definition = _definition_of(version_id, tenant.pk)
        if definition.goal is None:
            continue
        model = entity_model(playbook.object)
        ids = [entity_id for _pk, entity_id in enrollments]
        met = set(
            matching_ids(tenant, playbook.object, definition.goal, now,
                         model.objects.for_tenant(tenant).filter(pk__in=ids).order_by("pk"), len(ids))
        )  # fmt: skip
        for pk, entity_id in enrollments:
            if entity_id in met and _close(tenant, pk, EnrollmentStatus.GOAL_REACHED, now):
                reached.append(entity_id)
    return reached


def _close(tenant: Tenant, enrollment_id: int, status: str, now: datetime) -> bool:
    """The compare-and-set that decides goal vs timeout once; queues that phase's actions."""
    with transaction.atomic():
        closed = (
            Enrollment.objects.for_tenant(tenant)
            .filter(pk=enrollment_id, status=EnrollmentStatus.ACTIVE)
            .update(status=status, ended_at=now)
        )
        if not closed:
            return False
        enrollment = Enrollment.objects.for_tenant(tenant).select_related("version").get(pk=enrollment_id)
        definition = version_definition(enrollment.version)
        phase = ActionPhase.GOAL if status == EnrollmentStatus.GOAL_REACHED else ActionPhase.TIMEOUT
        _queue_phase(tenant, enrollment, definition, phase, now)
    tenant_id = tenant.pk
    transaction.on_commit(lambda: _enqueue_runs(tenant_id, [enrollment_id]))
    return True


def deadlines_process(*, tenant: Tenant, now: datetime) -> int:
    """Enrollments past their deadline: goal re-checked first, then timed out. Rows are claimed with
    FOR UPDATE SKIP LOCKED, so concurrent sweepers split the work."""
    done = 0
    while True:
        with transaction.atomic():
            due = list(
                Enrollment.objects.for_tenant(tenant)
                .filter(status=EnrollmentStatus.ACTIVE, deadline_at__lte=now)
                .select_for_update(skip_locked=True)
                .order_by("deadline_at")
                .values_list("pk", "playbook_id", "version_id", "entity_id")[:DEADLINE_BATCH]
            )
            if not due:
                return done
            objects = dict(Playbook.objects.for_tenant(tenant).filter(pk__in={d[1] for d in due})
                           .values_list("pk", "object"))  # fmt: skip
            for pk, playbook_id, version_id, entity_id in due:
                definition = _definition_of(version_id, tenant.pk)
                obj = objects[playbook_id]
                goal_met = definition.goal is not None and bool(
                    matching_ids(tenant, obj, definition.goal, now,
                                 entity_model(obj).objects.for_tenant(tenant).filter(pk=entity_id), 1)
                )  # fmt: skip
                _close(tenant, pk, EnrollmentStatus.GOAL_REACHED if goal_met else EnrollmentStatus.TIMED_OUT, now)
                done += 1


# --- the outbox ---------------------------------------------------------------------------------------------


def _queue_phase(tenant: Tenant, enrollment: Enrollment, definition: Definition, phase: str, now: datetime) -> None:
    control = enrollment.group == EnrollmentGroup.CONTROL
    rows: list[ActionRun] = []
    for action in definition.phase(phase):
        for user_id, status, depends_on in _targets(tenant, enrollment, action, now):
            rows.append(
                ActionRun(
                    tenant=tenant, enrollment=enrollment, playbook_id=enrollment.playbook_id, phase=phase,
                    action_id=action.id, action_type=action.type, end_user_id=user_id,
                    idempotency_key=idempotency_key(enrollment.pk, phase, action.id, user_id),
                    status=RunStatus.SUPPRESSED if control else status, depends_on_id=depends_on,
                    next_attempt_at=now, created_at=now, updated_at=now,
                    completed_at=now if control else None,
                )
            )  # fmt: skip
    ActionRun.objects.for_tenant(tenant).bulk_create(rows, ignore_conflicts=True)


def _targets(tenant: Tenant, enrollment: Enrollment, action: Action,
             now: datetime) -> list[tuple[int | None, str, int | None]]:  # fmt: skip
    """(end user id or None, initial status, run it waits for) per run of one action."""
    if action.target == "entity":
        return [(None, RunStatus.PENDING, None)]
    if action.target == "users":
        condition = action.users_where if action.users_where is not None else {"all": []}
        return [(user_id, RunStatus.PENDING, None)
                for user_id in members_matching(tenant, enrollment.entity_id, condition, now)]  # fmt: skip
    sources = ActionRun.objects.for_tenant(tenant).filter(
        enrollment=enrollment, phase=ActionPhase.MAIN, action_id=action.source, end_user_id__isnull=False
    )
    targets: list[tuple[int | None, str, int | None]] = []
    for source_id, user_id, status in sources.values_list("pk", "end_user_id", "status"):
        if status == RunStatus.SUCCEEDED:
            targets.append((user_id, RunStatus.PENDING, None))
        elif status in (RunStatus.WAITING, RunStatus.PENDING, RunStatus.SENDING, RunStatus.FAILED):
            targets.append((user_id, RunStatus.WAITING, source_id))  # decided when that run ends
    return targets


def _backoff_base() -> float:
    return float(settings.PLAYBOOK_BACKOFF_BASE_SECONDS)


def _backoff(attempts: int, retry_after: float | None) -> timedelta:
    seconds = min(BACKOFF_MAX_SECONDS, _backoff_base() * 2 ** max(attempts - 1, 0))
    seconds = seconds * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not security
    return timedelta(seconds=max(seconds, retry_after or 0.0))


def run_execute(*, tenant: Tenant, run_id: int, now: datetime) -> str | None:
    """Claim a due run with a lease, prepare its request once, send it, record the outcome. Returns the new
    status, or None when the run was not due (already claimed, done, paused, or not yet time)."""
    playbook_id = ActionRun.objects.for_tenant(tenant).filter(pk=run_id).values_list("playbook_id", flat=True).first()
    if playbook_id is None:
        return None
    if not Playbook.objects.for_tenant(tenant).filter(pk=playbook_id, status=PlaybookStatus.ACTIVE).exists():
        return None  # gone, or paused: the run waits
    # The claim filters on the run's own columns only: PostgreSQL re-checks those on the newest row version
    # when a concurrent claim committed first (a join would turn the filter into a subquery it does not re-check).
    claimed = (
        ActionRun.objects.for_tenant(tenant)
        .filter(pk=run_id, status__in=DUE_STATUSES, next_attempt_at__lte=now)
        .update(
            status=RunStatus.SENDING,
            lease_until=now + timedelta(seconds=settings.PLAYBOOK_LEASE_SECONDS),
            attempts=F("attempts") + 1,
            updated_at=now,
        )
    )
    if not claimed:
        _not_yet(tenant, run_id, now)
        return None
    run = ActionRun.objects.for_tenant(tenant).get(pk=run_id)
    action_type = action_types.get(run.action_type)
    if action_type is None:
        return _finish(tenant, run, RunStatus.DEAD, now, error=f"action type {run.action_type!r} is not installed")
    context = action_context(tenant=tenant, run=run)
    try:
        if not run.request:
            run.request = action_type.prepare(context)
            ActionRun.objects.for_tenant(tenant).filter(pk=run.pk, status=RunStatus.SENDING).update(request=run.request)
        elif run.attempts > 1 and not action_type.idempotent and action_type.confirm is not None:
            # A counted attempt before this one may have been delivered (a timeout): ask before sending again.
            delivered = action_type.confirm(run.request, context)
            if delivered is not None:
                return _finish(tenant, run, RunStatus.SUCCEEDED, now, response=dict(delivered))
        response = action_type.send(run.request, context)
    except action_types.RateLimited as exc:
        retry_after = exc.retry_after if exc.retry_after is not None else _backoff_base()
        return _retry(tenant, run, now, exc.message, timedelta(seconds=retry_after), count_attempt=False)
    except (action_types.Permanent, action_types.Broken) as exc:
        return _finish(tenant, run, RunStatus.DEAD, now, error=f"{type(exc).__name__}: {exc.message}")
    except action_types.Retryable as exc:
        return _retry(tenant, run, now, exc.message, _backoff(run.attempts, exc.retry_after))
    except Exception as exc:  # a handler bug or an unexpected error: retried, and visible
        logger.exception("action failed", extra={"tenant": tenant.pk, "run": run.pk, "type": run.action_type})
        return _retry(tenant, run, now, f"{type(exc).__name__}: {exc}", _backoff(run.attempts, None))
    return _finish(tenant, run, RunStatus.SUCCEEDED, now, response=dict(response))


def _retry(tenant: Tenant, run: ActionRun, now: datetime, error: str, delay: timedelta, *,
           count_attempt: bool = True) -> str:  # fmt: skip
    if count_attempt and run.attempts >= MAX_ATTEMPTS:
        return _finish(tenant, run, RunStatus.DEAD, now, error=f"gave up after {run.attempts} attempts: {error}")
    updated = ActionRun.objects.for_tenant(tenant).filter(pk=run.pk, status=RunStatus.SENDING).update(
        status=RunStatus.FAILED, error=error, next_attempt_at=now + delay, lease_until=None, updated_at=now,
        attempts=F("attempts") if count_attempt else F("attempts") - 1,
    )  # fmt: skip
    if updated:
        tenant_id, run_id = tenant.pk, run.pk
        transaction.on_commit(lambda: _enqueue_run_later(tenant_id, run_id, delay))
    return RunStatus.FAILED


def _finish(tenant: Tenant, run: ActionRun, status: str, now: datetime, *, error: str = "",
            response: dict[str, Any] | None = None) -> str:  # fmt: skip
    with transaction.atomic():
        updated = (
            ActionRun.objects.for_tenant(tenant)
            .filter(pk=run.pk, status=RunStatus.SENDING)
            .update(
                status=status, error=error, response=response or {}, lease_until=None, updated_at=now, completed_at=now
            )
        )
        if updated:
            _release_dependents(tenant, run.pk, succeeded=status == RunStatus.SUCCEEDED, now=now)
    return status


def _release_dependents(tenant: Tenant, run_id: int, *, succeeded: bool, now: datetime) -> None:
    """users_from runs waiting on this one: sent to the same user if it succeeded, skipped otherwise."""
    waiting = ActionRun.objects.for_tenant(tenant).filter(depends_on_id=run_id, status=RunStatus.WAITING)
    if succeeded:
        ids = list(waiting.values_list("pk", flat=True))
        if ids:
            ActionRun.objects.for_tenant(tenant).filter(pk__in=ids, status=RunStatus.WAITING).update(
                status=RunStatus.PENDING, next_attempt_at=now, updated_at=now
            )
            tenant_id = tenant.pk
            transaction.on_commit(lambda: _enqueue_run_ids(tenant_id, ids))
    else:
        waiting.update(status=RunStatus.SKIPPED, error="the action it targets the users of did not succeed",
                       updated_at=now, completed_at=now)  # fmt: skip


def leases_recover(*, tenant: Tenant, now: datetime) -> int:
    """Runs stuck in `sending` past their lease (a worker died mid-call): idempotent ones are retried;
    others only if the provider confirms they were not delivered, else they end dead (never sent twice)."""
    recovered = 0
    stuck = ActionRun.objects.for_tenant(tenant).filter(status=RunStatus.SENDING, lease_until__lt=now)
    for run in stuck.order_by("pk")[:DEADLINE_BATCH]:
        action_type = action_types.get(run.action_type)
        if action_type is not None and action_type.idempotent:
            _retry(tenant, run, now, "the worker stopped during the call; retrying (idempotent)", timedelta())
        elif action_type is not None and not run.request:  # the request is stored before it is sent: none went out
            _retry(tenant, run, now, "the worker stopped before sending; retrying", timedelta())
        elif action_type is not None and action_type.confirm is not None:
            try:
                delivered = action_type.confirm(run.request, action_context(tenant=tenant, run=run))
            except action_types.Permanent as exc:
                _finish(
                    tenant, run, RunStatus.DEAD, now, error=f"delivery cannot be confirmed ({exc.message}): not re-sent"
                )
            except action_types.ActionError as exc:
                _retry(tenant, run, now, f"could not confirm delivery: {exc.message}", _backoff(run.attempts, None))
            else:
                if delivered is not None:
                    _finish(tenant, run, RunStatus.SUCCEEDED, now, response=dict(delivered))
                else:
                    _retry(tenant, run, now, "not delivered before the worker stopped; retrying", timedelta())
        else:
            unconfirmed = "the worker stopped during the call and delivery cannot be confirmed: not re-sent"
            _finish(tenant, run, RunStatus.DEAD, now, error=unconfirmed)
        recovered += 1
    return recovered


def run_retry(*, tenant: Tenant, run_id: int, now: datetime) -> ActionRun:
    """Re-drive a dead run: pending again with a fresh attempt budget."""
    updated = (
        ActionRun.objects.for_tenant(tenant)
        .filter(pk=run_id, status=RunStatus.DEAD)
        .update(
            status=RunStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            lease_until=None,
            updated_at=now,
            completed_at=None,
        )
    )
    run = ActionRun.objects.for_tenant(tenant).get(pk=run_id)
    if not updated:
        raise TransitionRefused(f"only dead runs can be retried; this one is {run.status}")
    tenant_id = tenant.pk
    transaction.on_commit(lambda: _enqueue_run_ids(tenant_id, [run_id]))
    return run


def due_runs(*, tenant: Tenant, now: datetime, limit: int = 1000) -> list[int]:
    return list(
        ActionRun.objects.for_tenant(tenant)
        .filter(status__in=DUE_STATUSES, next_attempt_at__lte=now, playbook__status=PlaybookStatus.ACTIVE)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )


# --- triggers and sweeps -------------------------------------------------------------------------------------


def changes_process(tenant: Tenant, entities: list[tuple[str, int]], *, scores: bool | None = None) -> None:
    """Dirty-marks processor: evaluate the active playbooks these changes can affect, in a task after commit
    (never inline in ingestion's processing). It runs twice a round (playbooks/apps.py): after the rollups for
    the playbooks that read no score (`scores=False`), whose evaluation then need not wait for the rescore, and
    after the rescore for those that do (`scores=True`)."""
    from playbooks.evaluation import affected_playbooks

    targets = affected_playbooks(tenant, entities, round_changes(), scores=scores)
    tenant_id = tenant.pk
    for playbook_id, ids in targets.items():
        transaction.on_commit(functools.partial(_enqueue_evaluation, tenant_id, playbook_id, ids))


def sweep(*, tenant: Tenant, now: datetime) -> dict[str, int]:
    """The periodic pass (every minute, or `run_sweeps --now`): deadlines, every active playbook's entry and
    goals (time-dependent conditions and lost triggers), runs waiting on finished runs, expired leases."""
    figures = {"timed_out_or_goal": deadlines_process(tenant=tenant, now=now), "entered": 0, "goal_reached": 0}
    for playbook_id in (
        Playbook.objects.for_tenant(tenant).filter(status=PlaybookStatus.ACTIVE).values_list("pk", flat=True)
    ):
        evaluated = playbook_evaluate(tenant=tenant, playbook_id=playbook_id, now=now)
        figures["entered"] += len(evaluated.entered)
        figures["goal_reached"] += len(evaluated.goal_reached)
    figures["released"] = _waiting_release(tenant, now)
    figures["leases_recovered"] = leases_recover(tenant=tenant, now=now)
    return figures


def _waiting_release(tenant: Tenant, now: datetime) -> int:
    """Catch-up for waiting runs whose source ended while the release was lost."""
    finished = ActionRun.objects.for_tenant(tenant).filter(
        status=RunStatus.WAITING, depends_on__status__in=[RunStatus.SUCCEEDED, RunStatus.DEAD, RunStatus.SKIPPED,
                                                           RunStatus.SUPPRESSED]
    )  # fmt: skip
    released = 0
    for source_id, source_status in finished.values_list("depends_on_id", "depends_on__status").distinct():
        with transaction.atomic():
            _release_dependents(tenant, source_id, succeeded=source_status == RunStatus.SUCCEEDED, now=now)
        released += 1
    return released


# --- task hand-off (by name: tasks import services, not the reverse) -------------------------------------------


def _send(name: str, args: tuple[Any, ...], **options: Any) -> None:
    from celery import current_app

    current_app.send_task(name, args=args, **options)


def _enqueue_evaluation(tenant_id: int, playbook_id: int, entity_ids: list[int] | None) -> None:
    """Changed entities join the playbook's waiting set, and one task evaluates them all (`evaluation_hint`);
    without Redis the ids travel in the message. Either way the minutely sweep catches what a lost one missed."""
    if entity_ids is not None:
        try:
            if evaluation_hint(tenant_id, playbook_id, entity_ids):
                try:
                    _send("playbooks.tasks.playbook_evaluate_waiting", (tenant_id, playbook_id))
                except Exception:
                    evaluation_unhint(tenant_id, playbook_id)
                    raise
            return
        except redis.RedisError as exc:
            logger.warning("evaluation not coalesced: ids sent in the message", extra={"error": str(exc)})
    _send("playbooks.tasks.playbook_evaluate", (tenant_id, playbook_id, entity_ids))


def _schedule_entered(tenant: Tenant, enrollment_ids: list[int]) -> None:
    """What `enrollment_runs_execute` does, in the evaluating task after its commit."""
    runs = enrollment_due_runs(tenant=tenant, enrollment_ids=enrollment_ids, now=timezone.now())
    runs_schedule_and_release(tenant.pk, runs)


def _enqueue_runs(tenant_id: int, enrollment_ids: list[int]) -> None:
    _send("playbooks.tasks.enrollment_runs_execute", (tenant_id, enrollment_ids))


def _enqueue_run_ids(tenant_id: int, run_ids: list[int]) -> None:
    runs_schedule_and_release(tenant_id, run_ids)


def _enqueue_run_later(tenant_id: int, run_id: int, delay: timedelta) -> None:
    runs_schedule_and_release(tenant_id, [run_id], time.time() + max(delay.total_seconds(), 0.0))


def _not_yet(tenant: Tenant, run_id: int, now: datetime) -> None:
    """A task for a run that is waiting to be retried came early (released twice, or a retry moved it later
    meanwhile): schedule it for the moment it is due instead of leaving it to the minutely sweep."""
    due = (
        ActionRun.objects.for_tenant(tenant)
        .filter(pk=run_id, status__in=DUE_STATUSES, next_attempt_at__gt=now)
        .values_list("next_attempt_at", flat=True)
        .first()
    )
    if due is not None:
        runs_schedule_and_release(tenant.pk, [run_id], due)


def enrollment_due_runs(*, tenant: Tenant, enrollment_ids: Sequence[int], now: datetime) -> list[int]:
    return list(
        ActionRun.objects.for_tenant(tenant)
        .filter(enrollment_id__in=list(enrollment_ids), status__in=DUE_STATUSES, next_attempt_at__lte=now)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
