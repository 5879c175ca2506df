"""The seed's Trial PQA playbook on the real stack: two real Celery workers racing, triggers from ingestion,
deadlines by `manage.py run_sweeps --now`, deliveries observed in Redis by the action types the workers load
(PLAYBOOK_ACTION_MODULES=tests.playbook_recorder). Exactly once: every expected delivery, nothing twice."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts.models import DirtyEntity
from playbooks.models import ActionRun, Enrollment, EnrollmentStatus, RunStatus
from playbooks.services import playbook_create, playbook_transition
from playbooks.tasks import playbook_evaluate_task
from signals.tasks import dirty_entities_sweep
from tests import playbook_recorder
from tests.conftest import TenantWorld
from tests.test_playbook_engine import TRIAL_PQA, account_id, pqa_world, score, stage, user_id  # noqa: F401 - fixture
from tests.workers import Worker
from tests.workers import start_worker as start_any_worker

SEED = json.loads(json.dumps(TRIAL_PQA).replace('"test.', '"rec.'))
WAIT_SECONDS = 60


def start_worker(name: str, **env: str) -> Worker:
    return start_any_worker(name, "ingest,scoring,playbooks,actions", PLAYBOOK_ACTION_MODULES="tests.playbook_recorder",
                            **env)  # fmt: skip


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started = [start_worker("one"), start_worker("two")]
    yield started
    for worker in started:
        print(worker.stop()[-5000:])  # shown when the test fails


def wait_for(condition: Callable[[], bool], seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds} s")


def settle(world: TenantWorld) -> None:
    """Wait until the workers processed the fixture's ingestion (which rescores everyone by the rules), then
    put back the scores the scenario is about."""
    dirty_entities_sweep.apply_async()
    wait_for(lambda: not DirtyEntity.objects.for_tenant(world.tenant).exists())
    time.sleep(0.5)  # the last batch's scores are written in the same transaction that clears its marks
    for name, value in (("acme", 0.9), ("beta", 0.5), ("gamma", 0.95)):
        score(world, "conversion", "account", account_id(world, name), value)
    for email, value in (("alice@acme.test", 0.8), ("bob@acme.test", 0.9), ("carol@acme.test", 0.3)):
        score(world, "health", "user", user_id(world, email), value)


def deliveries(world: TenantWorld) -> Counter[tuple[str, str | None, str | None]]:
    return Counter((item["action"], item["account"], item["user"]) for item in playbook_recorder.sent(world.tenant.pk))


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_trial_pqa_playbook_runs_end_to_end_exactly_once_with_two_workers(
    pqa_world: TenantWorld,  # noqa: F811 - the fixture imported above
    workers: list[Worker],
) -> None:
    world = pqa_world
    settle(world)
    playbook = playbook_create(tenant=world.tenant, name="Trial PQA", definition=SEED, created_by=None,
                               now=timezone.now())  # fmt: skip
    playbook_transition(tenant=world.tenant, playbook_id=playbook.pk, action="activate", now=timezone.now())
    expected_entry = Counter({("notify", "acme", None): 1, ("add-pqls", "acme", "alice@acme.test"): 1})

    wait_for(lambda: deliveries(world) == expected_entry)
    # Evaluation again and again, on both workers at once: nobody enters twice, nothing is sent twice.
    for _ in range(10):
        playbook_evaluate_task.apply_async(args=(world.tenant.pk, playbook.pk))
    time.sleep(2)
    assert deliveries(world) == expected_entry

    # Converting (ingested like any stage change) reaches the goal: the clean-up targets exactly the users added.
    stage(world, "acme", "Customer", timezone.now())
    dirty_entities_sweep.apply_async()  # as beat would, should this process's hint have been throttled
    expected_goal = expected_entry + Counter({("cleanup", "acme", "alice@acme.test"): 1})
    wait_for(lambda: deliveries(world) == expected_goal)

    # beta qualifies later; 21 days on (simulated by run_sweeps --now), it times out and gets the task.
    score(world, "conversion", "account", account_id(world, "beta"), 0.8)
    playbook_evaluate_task.apply_async(args=(world.tenant.pk, playbook.pk))
    expected_beta = expected_goal + Counter({("notify", "beta", None): 1, ("add-pqls", "beta", "bob@acme.test"): 1})
    wait_for(lambda: deliveries(world) == expected_beta)
    later = timezone.now() + timedelta(days=21, minutes=5)
    for _ in range(2):  # replaying the same instant twice changes nothing the second time
        call_command("run_sweeps", "--now", later.isoformat(), "--tenant", world.tenant.slug, stdout=io.StringIO())

    assert deliveries(world) == expected_beta + Counter({("task", "beta", None): 1})
    statuses = dict(Enrollment.objects.for_tenant(world.tenant).values_list("entity_id", "status"))
    assert statuses == {account_id(world, "acme"): EnrollmentStatus.GOAL_REACHED,
                        account_id(world, "beta"): EnrollmentStatus.TIMED_OUT}  # fmt: skip
    assert set(ActionRun.objects.for_tenant(world.tenant).values_list("status", flat=True)) == {RunStatus.SUCCEEDED}


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_between_claim_and_completion_sends_nothing_twice(
    pqa_world: TenantWorld,  # noqa: F811 - the fixture imported above
) -> None:
    world = pqa_world
    slow = start_worker("slow", PLAYBOOK_RECORDER_SLOW="30")
    try:
        settle(world)
        playbook = playbook_create(tenant=world.tenant, name="Trial PQA", definition=SEED, created_by=None,
                                   now=timezone.now())  # fmt: skip
        playbook_transition(tenant=world.tenant, playbook_id=playbook.pk, action="activate", now=timezone.now())
        runs = ActionRun.objects.for_tenant(world.tenant)
        # Inside the provider call: claimed, and its request stored (a run killed before that sent nothing, and is
        # rightly retried; on a loaded machine the claim alone was seen first).
        wait_for(lambda: runs.filter(status=RunStatus.SENDING).exclude(request={}).exists())
        slow.kill()  # the worker dies inside a provider call
    finally:
        slow.stop()
    claimed = runs.get(status=RunStatus.SENDING)

    # After the lease, the sweep decides: an idempotent add is sent again, an ambiguous message is not.
    out = io.StringIO()
    after_lease = timezone.now() + timedelta(minutes=3)
    call_command("run_sweeps", "--now", after_lease.isoformat(), "--tenant", world.tenant.slug, stdout=out)
    call_command("run_sweeps", "--now", after_lease.isoformat(), "--tenant", world.tenant.slug, stdout=out)

    claimed.refresh_from_db()
    sent = deliveries(world)
    outcomes: dict[str, Any] = {run.action_id: run.status for run in runs}
    if claimed.action_id == "notify":
        assert claimed.status == RunStatus.DEAD
        assert sent[("notify", "acme", None)] == 0
    else:
        assert claimed.status == RunStatus.SUCCEEDED
    assert all(count == 1 for count in sent.values()), sent
    assert sent[("add-pqls", "acme", "alice@acme.test")] == 1, outcomes
