"""Fresh scores through a real Celery worker (issue 4, "done means"): ingestion writes dirty marks and sends a
hint after commit; the worker's processing recomputes rollups and rescores exactly the changed accounts, users
and memberships. Nobody here calls scoring: the test only ingests and watches the Score rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import Account, DirtyEntity, EndUser, Membership
from plgapp.models import Tenant
from scoring.generator import generate
from scoring.models import Score, ScoreKind
from tests.conftest import TenantWorld
from tests.test_ingest_journy import Journy
from tests.workers import Worker, start_worker

DEADLINE_SECONDS = 60


@pytest.fixture
def worker() -> Iterator[Worker]:
    """A worker on the queues that processing and scoring use (ingest, scoring), like `make run` starts."""
    process = start_worker("scoring", "ingest,scoring")
    yield process
    output = process.stop()
    assert process.returncode in (0, -15), output


def within_deadline(condition: Callable[[], bool], worker: Worker, what: str) -> float:
    """Seconds until `condition` holds, polling; fails after DEADLINE_SECONDS or if the worker died."""
    began = time.monotonic()
    while time.monotonic() - began < DEADLINE_SECONDS:
        assert worker.poll() is None, "the worker stopped"
        if condition():
            return time.monotonic() - began
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {DEADLINE_SECONDS} s")


def scores(tenant: Tenant, kind: str) -> QuerySet[Score]:
    return Score.objects.for_tenant(tenant).filter(kind=kind)


def everything_scored(tenant: Tenant) -> bool:
    """No change waits to be processed, and every user has a health score, every trial a conversion score, every
    customer a churn score, every current membership a champion score, each with reasons."""
    if DirtyEntity.objects.for_tenant(tenant).exists():
        return False
    accounts = Account.objects.for_tenant(tenant)
    expected = {
        ScoreKind.HEALTH: set(EndUser.objects.for_tenant(tenant).values_list("pk", flat=True)),
        ScoreKind.CONVERSION: set(accounts.filter(stage="Trial").values_list("pk", flat=True)),
        ScoreKind.CHURN: set(accounts.filter(stage="Customer").values_list("pk", flat=True)),
        ScoreKind.CHAMPION: set(
            Membership.objects.for_tenant(tenant).filter(left_at__isnull=True).values_list("pk", flat=True)
        ),
    }
    for kind, ids in expected.items():
        scored = set(scores(tenant, kind).exclude(reasons=[]).values_list("entity_id", flat=True))
        if scored != ids:
            return False
    return True


def computed_at(tenant: Tenant, kind: str, entity_id: int) -> datetime | None:
    return scores(tenant, kind).filter(entity_id=entity_id).values_list("computed_at", flat=True).first()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_new_events_rescore_their_account_user_and_membership_through_the_worker_within_a_minute(
    tenant_a: TenantWorld, worker: Worker
) -> None:
    tenant = tenant_a.tenant
    now = timezone.now()
    # Given a generated tenant, ingested while the worker runs: every account and user gets its scores.
    generate(tenant, accounts=40, seed=21, days=75, end=now - timedelta(minutes=5), now=now)
    settled = within_deadline(lambda: everything_scored(tenant), worker, "scores for the generated tenant")
    # A user in a trial who has been quiet, and their membership there.
    membership = min(
        Membership.objects.for_tenant(tenant).filter(left_at__isnull=True, account__stage="Trial"),
        key=lambda m: scores(tenant, ScoreKind.HEALTH).get(entity_id=m.end_user_id).value,
    )
    user, account = membership.end_user, membership.account
    changed = ((ScoreKind.HEALTH, user.pk), (ScoreKind.CONVERSION, account.pk), (ScoreKind.CHAMPION, membership.pk))
    before = {kind: scores(tenant, kind).get(entity_id=pk) for kind, pk in changed}

    # When they work in the account: the events of the last minute arrive through the ingestion API ...
    identification = {"user": {"userId": user.external_id}, "account": {"accountId": account.external_id}}

    def send(calls: list[tuple[str, datetime]]) -> datetime:
        sent_at = timezone.now()
        response = Journy(tenant_a).batch(
            [{"type": "track", "identification": identification, "name": name, "triggeredAt": at.isoformat()}
             for name, at in calls]
        )  # fmt: skip
        assert response.status_code == 200, response.content
        return sent_at

    def rescored_since(sent_at: datetime) -> bool:
        return not DirtyEntity.objects.for_tenant(tenant).exists() and all(
            (at := computed_at(tenant, kind, pk)) is not None and at >= sent_at for kind, pk in changed
        )

    moment = timezone.now()
    first = send([("report_created", moment - timedelta(seconds=n)) for n in range(40)])

    # Then the worker rescores them within a minute: newer scores, with reasons, that count the new work.
    latency = within_deadline(lambda: rescored_since(first), worker, "rescoring after the first request")
    after = {kind: scores(tenant, kind).get(entity_id=score.entity_id) for kind, score in before.items()}
    for score in after.values():
        assert score.reasons
        assert all({"feature", "text", "direction", "weight"} <= set(reason) for reason in score.reasons)
    assert after[ScoreKind.HEALTH].value > before[ScoreKind.HEALTH].value  # today's work counts today
    assert after[ScoreKind.CHAMPION].value > before[ScoreKind.CHAMPION].value

    # ... and so they are again when more arrives a moment later (an SDK flushing every half second).
    second = send([("alert_created", moment), ("login", timezone.now())])
    again = within_deadline(lambda: rescored_since(second), worker, "rescoring after the second request")
    print(f"generated tenant scored {settled:.1f} s after its last call; new events rescored in {latency:.1f} s, "
          f"and {again:.1f} s")  # fmt: skip

    # Nothing else was rescored: only the user, their accounts, and the memberships of those accounts.
    accounts = set(Membership.objects.for_tenant(tenant).filter(end_user=user).values_list("account_id", flat=True))
    memberships = set(
        Membership.objects.for_tenant(tenant).filter(account_id__in=accounts).values_list("pk", flat=True)
    )
    rescored = set(Score.objects.for_tenant(tenant).filter(computed_at__gte=first).values_list("kind", "entity_id"))
    expected = {(ScoreKind.HEALTH, user.pk)} | {(ScoreKind.CHAMPION, pk) for pk in memberships}
    expected |= {(kind, pk) for kind in (ScoreKind.CONVERSION, ScoreKind.CHURN) for pk in accounts}
    assert rescored <= expected
    assert {(ScoreKind.HEALTH, user.pk), (ScoreKind.CONVERSION, account.pk)} <= rescored
