"""Freshness with a real Celery worker: ingestion marks what changed, the worker's processing recomputes rollups
and rescores exactly those entities — scores with reasons for every account and user of a generated tenant,
and new events reflected in their scores within a minute, without anyone calling scoring directly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Account, EndUser, Membership
from scoring.generator import generate
from scoring.models import Score, ScoreKind
from signals.calls import AccountRef, Track, UserRef
from signals.services import calls_ingest
from signals.tasks import dirty_entities_sweep
from tests.conftest import TenantWorld
from tests.test_celery import PROJECT_ROOT, _test_database_url

DEADLINE_SECONDS = 60


@pytest.fixture
def worker() -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ, DATABASE_URL=_test_database_url(), CELERY_TASK_ALWAYS_EAGER="false", LOG_FORMAT="console")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "plgapp", "worker", "--queues", "ingest,scoring", "--pool", "solo",
         "--concurrency", "1", "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    yield process
    process.terminate()
    output, _ = process.communicate(timeout=30)
    assert process.returncode in (0, -15), output.decode(errors="replace")


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes]) -> float:
    began = time.monotonic()
    while time.monotonic() - began < DEADLINE_SECONDS:
        assert process.poll() is None, "the worker stopped"
        if condition():
            return time.monotonic() - began
        time.sleep(0.25)
    raise AssertionError(f"not within {DEADLINE_SECONDS} s")


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_scores_follow_new_events_within_a_minute_through_a_real_worker(
    tenant_a: TenantWorld, worker: subprocess.Popen[bytes]
) -> None:
    tenant = tenant_a.tenant
    now = timezone.now()
    generate(tenant, accounts=25, seed=11, days=45, end=now, now=now)
    dirty_entities_sweep.apply_async()  # what beat does every minute, in case the last hint was throttled
    scores = Score.objects.for_tenant(tenant)
    users = EndUser.objects.for_tenant(tenant).count()
    members = Membership.objects.for_tenant(tenant).filter(left_at__isnull=True).count()

    settled = wait_for(lambda: scores.filter(kind=ScoreKind.HEALTH).count() == users
                       and scores.filter(kind=ScoreKind.CHAMPION).count() == members, worker)  # fmt: skip
    trials = Account.objects.for_tenant(tenant).filter(stage="Trial").count()
    customers = Account.objects.for_tenant(tenant).filter(stage="Customer").count()
    wait_for(lambda: scores.filter(kind=ScoreKind.CONVERSION).count() == trials
             and scores.filter(kind=ScoreKind.CHURN).count() == customers, worker)  # fmt: skip
    assert not scores.filter(reasons=[]).exists()

    membership = (
        Membership.objects.for_tenant(tenant)
        .filter(left_at__isnull=True)
        .select_related("account", "end_user")
        .filter(account__stage="Trial")
        .first()
    )
    assert membership is not None
    before = scores.get(kind=ScoreKind.HEALTH, entity_id=membership.end_user_id).computed_at
    time.sleep(1.1)  # past the one-hint-a-second throttle of this process
    sent_at = timezone.now()
    user = UserRef(external_id=membership.end_user.external_id)
    account = AccountRef(external_id=membership.account.external_id)
    burst = [Track(name="report_created", at=sent_at - timedelta(minutes=n), user=user, account=account)
             for n in range(30)]  # fmt: skip
    assert calls_ingest(tenant=tenant, calls=list(enumerate(burst)), now=sent_at).rejected == []

    latency = wait_for(
        lambda: (
            scores.get(kind=ScoreKind.HEALTH, entity_id=membership.end_user_id).computed_at > before
            and scores.get(kind=ScoreKind.CONVERSION, entity_id=membership.account_id).computed_at >= sent_at
            and scores.get(kind=ScoreKind.CHAMPION, entity_id=membership.pk).computed_at >= sent_at
        ),
        worker,
    )
    print(f"generated tenant scored {settled:.1f} s after the last call; new events rescored in {latency:.1f} s")
    health = scores.get(kind=ScoreKind.HEALTH, entity_id=membership.end_user_id)
    assert health.reasons
