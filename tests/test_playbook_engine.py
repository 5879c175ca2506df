"""The playbook engine on the real database, time injected: the seed's Trial PQA playbook end to end,
exactly-once entry and actions, goal vs timeout, users_from, holdouts, re-entry, versions, retries, leases."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from accounts.models import Account, EndUser
from playbooks import actions as action_types
from playbooks.actions import ActionContext, ActionType, Permanent, RateLimited, Retryable
from playbooks.models import ActionRun, Enrollment, EnrollmentGroup, EnrollmentStatus, PlaybookStatus, RunStatus
from playbooks.selectors import playbook_results
from playbooks.services import (
    MAX_ATTEMPTS,
    deadlines_process,
    due_runs,
    leases_recover,
    playbook_create,
    playbook_evaluate,
    playbook_publish,
    playbook_transition,
    run_execute,
    run_retry,
    sweep,
)
from plgapp import rls
from scoring.models import Score
from signals.calls import AccountRef, AddUsers, MemberChange, UpsertAccount, UpsertUser, UserRef, parse_properties
from signals.services import calls_ingest
from tests.conftest import TenantWorld

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=settings.PLAYBOOK_LEASE_SECONDS)


# --- action types registered by the tests ------------------------------------------------------------------------


@dataclass
class Recorder:
    sent: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)  # (action, user email, request)
    failures: dict[str, list[Exception]] = field(default_factory=dict)  # action id -> errors to raise, in order
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, request: Mapping[str, Any], context: ActionContext) -> Mapping[str, Any]:
        with self.lock:
            pending = self.failures.get(context.action_id)
            if pending:
                raise pending.pop(0)
            email = context.user["email"] if context.user else None
            self.sent.append((context.action_id, email, dict(request)))
            return {"ok": True, "n": len(self.sent)}

    def of(self, action_id: str) -> list[str | None]:
        return sorted((email for action, email, _r in self.sent if action == action_id), key=str)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recording = Recorder()
    names = {"test.notify": False, "test.list_add": True, "test.list_remove": True, "test.task": False}
    for name, idempotent in names.items():
        action_types.register(ActionType(name=name, send=recording.send, idempotent=idempotent,
                                         targets=frozenset({"entity", "users"})))  # fmt: skip
    yield recording
    for name in names:
        action_types.unregister(name)


TRIAL_PQA: dict[str, Any] = {
    "object": "account",
    "entry": {"all": [{"field": "account.stage", "op": "eq", "value": "Trial"},
                      {"field": "account.score.conversion", "op": "gt", "value": 0.75}]},
    "reentry": "never",
    "actions": [
        {"id": "notify", "type": "test.notify", "params": {"channel": "#sales"}},
        {"id": "add-pqls", "type": "test.list_add", "target": "users",
         "users_where": {"all": [{"field": "user.score.health", "op": "gt", "value": 0.5},
                                 {"field": "membership.role", "op": "in", "value": ["Admin", "Owner"]}]},
         "params": {"list_id": "123"}},
    ],
    "goal": {"field": "account.stage", "op": "eq", "value": "Customer"},
    "timeout": {"days": 21},
    "on_goal": [{"id": "cleanup", "type": "test.list_remove", "target": "users_from:add-pqls",
                 "params": {"list_id": "123"}}],
    "on_timeout": [{"id": "task", "type": "test.task", "params": {"subject": "Call them"}}],
}  # fmt: skip


def ingest(world: TenantWorld, calls: list[Any], at: datetime) -> None:
    result = calls_ingest(tenant=world.tenant, calls=list(enumerate(calls)), now=at)
    assert result.rejected == []


def stage(world: TenantWorld, account: str, value: str, at: datetime) -> None:
    ingest(world, [UpsertAccount(account=AccountRef(external_id=account), at=at,
                                 properties=parse_properties({"stage": value}, "p"))], at)  # fmt: skip


def score(world: TenantWorld, kind: str, entity_type: str, pk: int, value: float) -> None:
    Score.objects.for_tenant(world.tenant).update_or_create(
        kind=kind, entity_type=entity_type, entity_id=pk,
        defaults={"value": value, "percentile": 50, "grade": 3, "reasons": [], "computed_at": T0},
    )  # fmt: skip


def account_id(world: TenantWorld, external_id: str) -> int:
    return Account.objects.for_tenant(world.tenant).get(external_id=external_id).pk


def user_id(world: TenantWorld, email: str) -> int:
    return EndUser.objects.for_tenant(world.tenant).get(email=email).pk


@pytest.fixture
def pqa_world(tenant_a: TenantWorld) -> TenantWorld:
    """acme (Trial, conversion 0.9): alice Owner (healthy), bob Member here but Owner of beta (healthy), carol
    Admin (unhealthy). beta (Trial, conversion 0.5): bob Owner. gamma (Customer, 0.95)."""
    calls: list[Any] = []
    for name, stage_name in (("acme", "Trial"), ("beta", "Trial"), ("gamma", "Customer")):
        calls.append(
            UpsertAccount(
                account=AccountRef(external_id=name),
                at=T0 - timedelta(days=3),
                properties=parse_properties({"stage": stage_name, "name": name.title()}, "p"),
            )
        )
    for email in ("alice@acme.test", "bob@acme.test", "carol@acme.test"):
        calls.append(UpsertUser(user=UserRef(email=email), at=T0 - timedelta(days=3)))

    def member(email: str, role: str) -> MemberChange:
        return MemberChange(user=UserRef(email=email), properties=parse_properties({"role": role}, "p"))

    calls.append(
        AddUsers(
            account=AccountRef(external_id="acme"),
            at=T0 - timedelta(days=3),
            users=(
                member("alice@acme.test", "Owner"),
                member("bob@acme.test", "Member"),
                member("carol@acme.test", "Admin"),
            ),
        )
    )
    calls.append(AddUsers(account=AccountRef(external_id="beta"), at=T0 - timedelta(days=3),
                          users=(member("bob@acme.test", "Owner"),)))  # fmt: skip
    ingest(tenant_a, calls, T0 - timedelta(days=3))
    for name, value in (("acme", 0.9), ("beta", 0.5), ("gamma", 0.95)):
        score(tenant_a, "conversion", "account", account_id(tenant_a, name), value)
    for email, value in (("alice@acme.test", 0.8), ("bob@acme.test", 0.9), ("carol@acme.test", 0.3)):
        score(tenant_a, "health", "user", user_id(tenant_a, email), value)
    return tenant_a


def active_playbook(world: TenantWorld, definition: dict[str, Any] = TRIAL_PQA, name: str = "Trial PQA") -> int:
    playbook = playbook_create(tenant=world.tenant, name=name, definition=definition, created_by=None, now=T0)
    playbook_transition(tenant=world.tenant, playbook_id=playbook.pk, action="activate", now=T0)
    return playbook.pk


def deliver(world: TenantWorld, now: datetime) -> list[str | None]:
    return [run_execute(tenant=world.tenant, run_id=pk, now=now) for pk in due_runs(tenant=world.tenant, now=now)]


# --- the seed playbook ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_trial_pqa_playbook_enrolls_notifies_adds_the_right_users_and_cleans_up_on_goal(
    pqa_world: TenantWorld, recorder: Recorder
) -> None:
    world = pqa_world
    playbook_id = active_playbook(world)

    evaluated = playbook_evaluate(tenant=world.tenant, playbook_id=playbook_id, now=T0)
    deliver(world, T0)

    assert evaluated.entered == [account_id(world, "acme")]
    assert recorder.of("notify") == [None]
    # Owner or Admin *in acme* with health > 0.5: alice; not bob (Owner only elsewhere), not carol (unhealthy).
    assert recorder.of("add-pqls") == ["alice@acme.test"]

    # Evaluating again, and sweeping, enrolls nobody twice and sends nothing twice.
    playbook_evaluate(tenant=world.tenant, playbook_id=playbook_id, now=T0 + timedelta(minutes=1))
    sweep(tenant=world.tenant, now=T0 + timedelta(minutes=2))
    deliver(world, T0 + timedelta(minutes=2))
    assert len(recorder.sent) == 2

    stage(world, "acme", "Customer", T0 + timedelta(days=2))
    playbook_evaluate(tenant=world.tenant, playbook_id=playbook_id, now=T0 + timedelta(days=2),
                      entity_ids=[account_id(world, "acme")])  # fmt: skip
    deliver(world, T0 + timedelta(days=2))

    assert recorder.of("cleanup") == ["alice@acme.test"]
    enrollment = Enrollment.objects.for_tenant(world.tenant).get()
    assert enrollment.status == EnrollmentStatus.GOAL_REACHED
    # The deadline passing later changes nothing: goal vs timeout was decided once.
    deadlines_process(tenant=world.tenant, now=T0 + timedelta(days=30))
    deliver(world, T0 + timedelta(days=30))
    assert recorder.of("task") == []
    results = playbook_results(tenant=world.tenant, playbook=enrollment.playbook)
    assert (results["entered"], results["goal_reached"], results["timed_out"], results["sent"]) == (1, 1, 0, 3)


@pytest.mark.django_db
def test_an_account_that_does_not_convert_times_out_after_21_days_and_gets_the_timeout_action(
    pqa_world: TenantWorld, recorder: Recorder
) -> None:
    world = pqa_world
    playbook_id = active_playbook(world)
    score(world, "conversion", "account", account_id(world, "beta"), 0.8)
    playbook_evaluate(tenant=world.tenant, playbook_id=playbook_id, now=T0)

    sweep(tenant=world.tenant, now=T0 + timedelta(days=20, hours=23))
    assert Enrollment.objects.for_tenant(world.tenant).filter(status=EnrollmentStatus.ACTIVE).count() == 2

    sweep(tenant=world.tenant, now=T0 + timedelta(days=21, minutes=1))
    deliver(world, T0 + timedelta(days=21, minutes=1))

    assert sorted(Enrollment.objects.for_tenant(world.tenant).values_list("status", flat=True)) == [
        EnrollmentStatus.TIMED_OUT,
        EnrollmentStatus.TIMED_OUT,
    ]
    assert recorder.of("task") == [None, None]
    assert recorder.of("cleanup") == []


@pytest.mark.django_db
def test_the_goal_is_rechecked_just_before_the_timeout_fires(pqa_world: TenantWorld, recorder: Recorder) -> None:
    world = pqa_world
    playbook_id = active_playbook(world)
    playbook_evaluate(tenant=world.tenant, playbook_id=playbook_id, now=T0)
    deliver(world, T0)
    # Converted, but no evaluation ran (a lost trigger) before the deadline.
    stage(world, "acme", "Customer", T0 + timedelta(days=20))

    deadlines_process(tenant=world.tenant, now=T0 + timedelta(days=21, minutes=1))
    deliver(world, T0 + timedelta(days=21, minutes=1))

    assert Enrollment.objects.for_tenant(world.tenant).get().status == EnrollmentStatus.GOAL_REACHED
    assert recorder.of("task") == []
    assert recorder.of("cleanup") == ["alice@acme.test"]


@pytest.mark.django_db
def test_goal_actions_for_users_wait_for_the_add_they_undo(pqa_world: TenantWorld, recorder: Recorder) -> None:
    world = pqa_world
    playbook_id = active_playbook(world)
    recorder.failures["add-pqls"] = [Retryable("HubSpot 503")]
    playbook_evaluate(tenant=world.tenant, playbook_id=playbook_id, now=T0)
    deliver(world, T0)  # the add fails once and waits for its retry
    stage(world, "acme", "Customer", T0 + timedelta(minutes=5))
    playbook_evaluate(tenant=world.tenant, playbook_id=playbook_id, now=T0 + timedelta(minutes=5))

    cleanup = ActionRun.objects.for_tenant(world.tenant).get(action_id="cleanup")
    assert cleanup.status == RunStatus.WAITING
    deliver(world, T0 + timedelta(hours=2))  # the add succeeds; the clean-up is released and sent after it
    deliver(world, T0 + timedelta(hours=2))

    assert [action for action, _email, _r in recorder.sent] == ["notify", "add-pqls", "cleanup"]


# --- exactly once under concurrency --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_evaluations_racing_enroll_once_and_queue_each_action_once(
    pqa_world: TenantWorld, recorder: Recorder
) -> None:
    world = pqa_world
    playbook_id = active_playbook(world)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def evaluate() -> None:
        try:
            barrier.wait()
            rls.tenant_enter(world.tenant.pk)  # as the evaluation task does
            playbook_evaluate(tenant=world.tenant, playbook_id=playbook_id, now=T0)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=evaluate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert Enrollment.objects.for_tenant(world.tenant).count() == 1
    assert ActionRun.objects.for_tenant(world.tenant).count() == 2

    runs = due_runs(tenant=world.tenant, now=T0)

    def execute(run_id: int) -> None:
        try:
            barrier.wait()
            rls.tenant_enter(world.tenant.pk)  # as the executor task does
            run_execute(tenant=world.tenant, run_id=run_id, now=T0)
        finally:
            connection.close()

    for run_id in runs:
        racers = [threading.Thread(target=execute, args=(run_id,)) for _ in range(4)]
        for thread in racers:
            thread.start()
        for thread in racers:
            thread.join()
    assert sorted(action for action, _e, _r in recorder.sent) == ["add-pqls", "notify"]


@pytest.mark.django_db
def test_a_worker_killed_mid_call_retries_idempotent_actions_and_never_resends_others(
    pqa_world: TenantWorld, recorder: Recorder
) -> None:
    world = pqa_world
    playbook_id = active_playbook(world)
    playbook_evaluate(tenant=world.tenant, playbook_id=playbook_id, now=T0)
    # Both runs claimed by a worker that stored their requests (so they may have left) and died before recording
    # the outcome. (A run without a stored request never left: it is simply sent again.)
    for run in ActionRun.objects.for_tenant(world.tenant):
        ActionRun.objects.for_tenant(world.tenant).filter(pk=run.pk).update(
            status=RunStatus.SENDING, attempts=1, lease_until=T0 + LEASE, request={"params": {"prepared": True}}
        )

    assert leases_recover(tenant=world.tenant, now=T0 + timedelta(minutes=1)) == 0  # leases still running
    leases_recover(tenant=world.tenant, now=T0 + LEASE + timedelta(seconds=1))
    deliver(world, T0 + LEASE + timedelta(seconds=2))

    statuses = dict(ActionRun.objects.for_tenant(world.tenant).values_list("action_id", "status"))
    assert statuses == {"add-pqls": RunStatus.SUCCEEDED, "notify": RunStatus.DEAD}
    assert recorder.of("notify") == []
    notify = ActionRun.objects.for_tenant(world.tenant).get(action_id="notify")
    assert "not re-sent" in notify.error


# --- retries, rate limits, dead runs --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_429_waits_for_retry_after_without_using_an_attempt(pqa_world: TenantWorld, recorder: Recorder) -> None:
    world = pqa_world
    playbook_id = active_playbook(world)
    recorder.failures["notify"] = [RateLimited("slow down", retry_after=30)]
    playbook_evaluate(tenant=world.tenant, playbook_id=playbook_id, now=T0)
    notify = ActionRun.objects.for_tenant(world.tenant).get(action_id="notify")

    assert run_execute(tenant=world.tenant, run_id=notify.pk, now=T0) == RunStatus.FAILED
    notify.refresh_from_db()
    assert (notify.attempts, notify.next_attempt_at) == (0, T0 + timedelta(seconds=30))
    assert run_execute(tenant=world.tenant, run_id=notify.pk, now=T0 + timedelta(seconds=29)) is None
    assert run_execute(tenant=world.tenant, run_id=notify.pk, now=T0 + timedelta(seconds=30)) == RunStatus.SUCCEEDED


@pytest.mark.django_db
def test_failures_back_off_then_the_run_dies_and_can_be_redriven(pqa_world: TenantWorld, recorder: Recorder) -> None:
    world = pqa_world
    playbook_id = active_playbook(world)
    recorder.failures["notify"] = [Retryable("503") for _ in range(MAX_ATTEMPTS)]
    playbook_evaluate(tenant=world.tenant, playbook_id=playbook_id, now=T0)
    notify = ActionRun.objects.for_tenant(world.tenant).get(action_id="notify")

    now, delays = T0, []
    for _attempt in range(MAX_ATTEMPTS):
        assert run_execute(tenant=world.tenant, run_id=notify.pk, now=now) is not None
        notify.refresh_from_db()
        if notify.status == RunStatus.DEAD:
            break
        assert notify.next_attempt_at is not None
        delays.append((notify.next_attempt_at - now).total_seconds())
        now = notify.next_attempt_at

    assert notify.status == RunStatus.DEAD
    assert notify.attempts == MAX_ATTEMPTS
    assert delays[-1] > delays[0] * 4  # exponential, with jitter
    run_retry(tenant=world.tenant, run_id=notify.pk, now=now)
    assert run_execute(tenant=world.tenant, run_id=notify.pk, now=now) == RunStatus.SUCCEEDED


@pytest.mark.django_db
def test_a_refused_request_dies_at_once_with_the_providers_message(pqa_world: TenantWorld, recorder: Recorder) -> None:
    world = pqa_world
    playbook_id = active_playbook(world)
    recorder.failures["notify"] = [Permanent("channel_not_found")]
    playbook_evaluate(tenant=world.tenant, playbook_id=playbook_id, now=T0)
    notify = ActionRun.objects.for_tenant(world.tenant).get(action_id="notify")

    assert run_execute(tenant=world.tenant, run_id=notify.pk, now=T0) == RunStatus.DEAD
    notify.refresh_from_db()
    assert "channel_not_found" in notify.error


# --- holdout, re-entry, versions, lifecycle -----------------------------------------------------------------------


@pytest.mark.django_db
def test_the_holdout_group_is_enrolled_but_its_actions_are_suppressed(
    tenant_a: TenantWorld, recorder: Recorder
) -> None:
    calls = [UpsertAccount(account=AccountRef(external_id=f"a{n}"), at=T0 - timedelta(days=1),
                           properties=parse_properties({"stage": "Trial"}, "p")) for n in range(400)]  # fmt: skip
    ingest(tenant_a, calls, T0 - timedelta(days=1))
    definition = {"object": "account", "entry": {"field": "account.stage", "op": "eq", "value": "Trial"},
                  "actions": [{"id": "notify", "type": "test.notify"}], "timeout": {"days": 7},
                  "holdout_percent": 20}  # fmt: skip
    playbook_id = active_playbook(tenant_a, definition)

    playbook_evaluate(tenant=tenant_a.tenant, playbook_id=playbook_id, now=T0)
    deliver(tenant_a, T0)

    control = Enrollment.objects.for_tenant(tenant_a.tenant).filter(group=EnrollmentGroup.CONTROL).count()
    assert 50 <= control <= 110  # 20% of 400, within sampling tolerance
    suppressed = ActionRun.objects.for_tenant(tenant_a.tenant).filter(status=RunStatus.SUPPRESSED).count()
    assert suppressed == control
    assert len(recorder.sent) == 400 - control


@pytest.mark.django_db
def test_reentry_after_exit_waits_for_the_gap_and_never_means_never(pqa_world: TenantWorld, recorder: Recorder) -> None:
    world = pqa_world
    after_exit = {**TRIAL_PQA, "reentry": "after_exit", "reentry_gap": {"days": 10}, "on_goal": [],
                  "timeout": {"days": 5}, "on_timeout": []}  # fmt: skip
    again = active_playbook(world, after_exit, "Again")
    once = active_playbook(world, {**after_exit, "reentry": "never", "reentry_gap": None}, "Once")

    for day in (0, 6, 14, 16):
        now = T0 + timedelta(days=day)
        sweep(tenant=world.tenant, now=now)

    sequences = list(Enrollment.objects.for_tenant(world.tenant).filter(playbook_id=again).order_by("sequence")
                     .values_list("sequence", "entered_at"))  # fmt: skip
    # Entered day 0, timed out day 5 (swept day 6), gap of 10 days after the exit: back on day 16, not 14.
    assert sequences == [(1, T0), (2, T0 + timedelta(days=16))]
    assert Enrollment.objects.for_tenant(world.tenant).filter(playbook_id=once).count() == 1


@pytest.mark.django_db
def test_running_enrollments_keep_their_version_unless_the_new_one_exits_them(
    pqa_world: TenantWorld, recorder: Recorder
) -> None:
    world = pqa_world
    playbook_id = active_playbook(world)
    playbook_evaluate(tenant=world.tenant, playbook_id=playbook_id, now=T0)
    stricter_goal = {**TRIAL_PQA, "goal": {"field": "account.stage", "op": "eq", "value": "Enterprise"}}

    playbook_publish(tenant=world.tenant, playbook_id=playbook_id, definition=stricter_goal, created_by=None,
                     now=T0 + timedelta(hours=1))  # fmt: skip
    stage(world, "acme", "Customer", T0 + timedelta(hours=2))
    playbook_evaluate(tenant=world.tenant, playbook_id=playbook_id, now=T0 + timedelta(hours=2))

    enrollment = Enrollment.objects.for_tenant(world.tenant).get()
    assert enrollment.version.number == 1
    assert enrollment.status == EnrollmentStatus.GOAL_REACHED  # by version 1's goal

    score(world, "conversion", "account", account_id(world, "beta"), 0.9)
    playbook_evaluate(tenant=world.tenant, playbook_id=playbook_id, now=T0 + timedelta(hours=3))
    playbook_publish(tenant=world.tenant, playbook_id=playbook_id, definition=TRIAL_PQA, in_flight_policy="exit",
                     created_by=None, now=T0 + timedelta(hours=4))  # fmt: skip
    beta = Enrollment.objects.for_tenant(world.tenant).get(entity_id=account_id(world, "beta"))
    assert (beta.version.number, beta.status) == (2, EnrollmentStatus.EXITED)
    assert not ActionRun.objects.for_tenant(world.tenant).filter(enrollment=beta, status=RunStatus.PENDING).exists()


@pytest.mark.django_db
def test_paused_playbooks_enroll_nobody_and_hold_their_sends(pqa_world: TenantWorld, recorder: Recorder) -> None:
    world = pqa_world
    playbook_id = active_playbook(world)
    playbook_evaluate(tenant=world.tenant, playbook_id=playbook_id, now=T0)
    playbook_transition(tenant=world.tenant, playbook_id=playbook_id, action="pause", now=T0)
    score(world, "conversion", "account", account_id(world, "beta"), 0.9)

    assert playbook_evaluate(tenant=world.tenant, playbook_id=playbook_id, now=T0).entered == []
    assert deliver(world, T0) == []
    playbook_transition(tenant=world.tenant, playbook_id=playbook_id, action="activate", now=T0)
    deliver(world, T0)
    assert len(recorder.sent) == 2
    archived = playbook_transition(tenant=world.tenant, playbook_id=playbook_id, action="archive", now=T0)
    assert archived.status == PlaybookStatus.ARCHIVED
    assert not Enrollment.objects.for_tenant(world.tenant).filter(status=EnrollmentStatus.ACTIVE).exists()


@pytest.mark.django_db
def test_the_built_in_log_action_succeeds_with_info_logging_on(pqa_world: TenantWorld) -> None:
    definition = {**TRIAL_PQA, "actions": [{"id": "note", "type": "log", "params": {"message": "a PQA"}}],
                  "on_goal": [], "on_timeout": []}  # fmt: skip
    playbook_id = active_playbook(pqa_world, definition)
    playbook_evaluate(tenant=pqa_world.tenant, playbook_id=playbook_id, now=T0)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign,assignment]
    logger = logging.getLogger("playbooks.actions.log")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        assert deliver(pqa_world, T0) == [RunStatus.SUCCEEDED]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert [getattr(record, "text", None) for record in records] == ["a PQA"]
