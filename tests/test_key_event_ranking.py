"""A tenant that names no key events gets its most frequent events (scoring/config.py). When only some entities
are loaded (a processing round) that ranking is a whole-tenant aggregate: seconds on a big tenant, so a round asks
for it once, and an answer that cost much is kept a hundred times as long as it took; a small tenant's is never
kept; a new event name is counted at once."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from scoring.models import ScoreKind
from scoring.services import scoring_history
from signals import features
from signals.features import key_events_of, name_totals
from signals.models import DailyRollup, EventName
from tests.conftest import TenantWorld

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
SINCE = date(2026, 9, 1)
COLUMNS = ["account_id", "end_user_id", "name", "day", "count"]


def _account_events(world: TenantWorld, *rows: tuple[int, str, int]) -> None:
    DailyRollup.objects.copy(
        world.tenant, COLUMNS, [(account, 0, name, date(2026, 11, 19), n) for account, name, n in rows]
    )


def test_a_small_tenants_ranking_is_counted_afresh_every_time(tenant_a: TenantWorld) -> None:
    _account_events(tenant_a, (1, "opened", 3))
    assert name_totals(tenant_a.tenant, since=SINCE) == {"opened": 3}

    _account_events(tenant_a, (2, "opened", 5))

    assert name_totals(tenant_a.tenant, since=SINCE) == {"opened": 8}


def test_a_ranking_that_cost_much_is_kept_a_hundred_times_as_long_as_it_took_until_a_new_event_name_comes(
    tenant_a: TenantWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = itertools.count(step=0.12)  # every count takes 0.12 s, as a big tenant's aggregate would take seconds
    monkeypatch.setattr(features, "perf_counter", lambda: next(clock))
    _account_events(tenant_a, (1, "opened", 3), (2, "report_created", 1))
    first = name_totals(tenant_a.tenant, since=SINCE)
    _account_events(tenant_a, (4, "report_created", 5))

    again = name_totals(tenant_a.tenant, since=SINCE)
    other_window = name_totals(tenant_a.tenant, since=date(2026, 11, 1))
    EventName.objects.for_tenant(tenant_a.tenant).create(name="alert_created", first_day=date(2026, 11, 19))
    _account_events(tenant_a, (3, "alert_created", 2))
    with_a_new_name = name_totals(tenant_a.tenant, since=SINCE)

    assert first == again == {"opened": 3, "report_created": 1}  # kept: more of the same names wait
    assert other_window == {"opened": 3, "report_created": 6}  # kept per window
    assert with_a_new_name == {"opened": 3, "report_created": 6, "alert_created": 2}  # a new name: counted at once
    client = redis.Redis.from_url(settings.REDIS_URL)
    left = client.ttl(cache.make_key(f"name-totals:{tenant_a.tenant.pk}:{SINCE}:0"))
    assert 11 <= left <= 12  # 100 x 0.12 s


def test_a_processing_round_counts_the_tenants_events_once(tenant_a: TenantWorld) -> None:
    _account_events(tenant_a, (1, "opened", 3), (2, "report_created", 5))
    history = scoring_history(
        tenant=tenant_a.tenant, kinds=(ScoreKind.CONVERSION, ScoreKind.CHURN, ScoreKind.CHAMPION), now=NOW,
        accounts=[1],
    )  # fmt: skip

    with CaptureQueriesContext(connection) as queries:
        rankings = [key_events_of(history, []) for _kind in ("conversion", "churn", "champion")]

    assert rankings == [["report_created", "opened"]] * 3  # the whole tenant's, not only account 1's
    assert sum("GROUP BY name" in query["sql"] for query in queries.captured_queries) == 1
