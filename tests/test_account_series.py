"""A live load reads account-level rollups from the accounts' series (docs/adr/0022-account-series.md): what it
gives must be what grouping the rollup rows gives, for the whole tenant and for a few accounts; a series that does
not reach back far enough sends the load to the rows themselves."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from django.db import connection

from accounts.models import Membership
from plgapp.models import Tenant
from plgapp.services import tenant_create
from scoring.generator import generate
from scoring.models import ScoreKind
from scoring.services import SCORING_LOOKBACK_DAYS, scoring_history, working_settings
from signals import features as feature_loading
from signals.features import Rollups, Scope, account_features, key_events_of
from signals.models import AccountSeries, PairActivity
from signals.processing import dirty_entities_process
from tests.chaos.run import PAIR_ACTIVITY_ORACLE, SERIES_ORACLE

pytestmark = pytest.mark.django_db

T = datetime(2026, 5, 20, 10, 30, tzinfo=UTC)
SINCE = (T - timedelta(days=SCORING_LOOKBACK_DAYS)).date()


@pytest.fixture
def tenant() -> Tenant:
    tenant = tenant_create(name="Series", slug="series")
    generate(tenant, accounts=12, seed=5, days=45, end=T - timedelta(hours=3), now=T)
    dirty_entities_process(tenant_id=tenant.pk)
    return tenant


def rows(rollups: Rollups) -> list[tuple[int, str, int, int]]:
    """The rollup rows as (account, name, day, count), in one order (a load's arrays come in any order)."""
    names = rollups.names
    return sorted(
        zip(rollups.entity.tolist(), [names[n] for n in rollups.name.tolist()], rollups.day.tolist(),
            rollups.count.tolist(), strict=True)
    )  # fmt: skip


def from_rows(tenant: Tenant, since: date, scope: Scope | None = None) -> Rollups:
    return feature_loading._rollups(tenant, {"account": since}, scope)["account"]


def loaded(tenant: Tenant, since: date, scope: Scope | None = None) -> Rollups:
    series = feature_loading._account_series(tenant, since, scope)
    assert series is not None
    return series


def test_series_give_the_rows_that_grouping_the_rollups_gives(tenant: Tenant) -> None:
    whole = loaded(tenant, SINCE)
    assert rows(whole) == rows(from_rows(tenant, SINCE))
    assert len(whole.count) > 100
    assert whole.names == sorted(set(whole.names))
    assert whole.entity.dtype == whole.name.dtype == whole.day.dtype == whole.count.dtype == np.int64

    later = SINCE + timedelta(days=140)  # only some of the days: the older rows of each series are left out
    assert rows(loaded(tenant, later)) == rows(from_rows(tenant, later))
    assert len(rows(from_rows(tenant, later))) < len(rows(whole))

    some = sorted(set(whole.entity.tolist()))[::3]
    scope = Scope(accounts=tuple(some))
    mine = loaded(tenant, SINCE, scope)
    assert set(mine.entity.tolist()) == set(some)
    assert rows(mine) == rows(from_rows(tenant, SINCE, scope))


def test_kept_latest_days_give_the_active_members_that_probing_the_rollups_gives(tenant: Tenant) -> None:
    memberships = set(Membership.objects.for_tenant(tenant).values_list("account_id", "end_user_id"))
    latest = PairActivity.objects.for_tenant(tenant).order_by("-last_day").values_list("last_day", flat=True)[0]
    assert latest == (T - timedelta(hours=3)).date()

    def pairs(found: tuple[np.ndarray, np.ndarray]) -> set[tuple[int, int]]:
        return set(zip(found[0].tolist(), found[1].tolist(), strict=True))

    counts = []
    for day in (latest.toordinal() + 1, latest.toordinal() + 20, latest.toordinal() + 40, latest.toordinal()):
        kept = pairs(feature_loading._active_pairs_kept(tenant, day, None))
        probed = pairs(feature_loading._active_pairs(tenant, day, None))
        assert kept & memberships == probed, day
        counts.append(len(probed))
        some = Scope(accounts=tuple(sorted({account for account, _user in probed})[::2]))
        assert pairs(feature_loading._active_pairs_kept(tenant, day, some)) & memberships == pairs(
            feature_loading._active_pairs(tenant, day, some)
        )
    assert counts[0] > counts[1] > counts[2]  # fewer members active as the window moves past the last activity


def features_of(history: Any, tenant: Tenant) -> dict[str, list[float]]:
    settings = working_settings(tenant=tenant)
    ids = sorted(set(history.account_rollups.entity.tolist()))
    raw = account_features(history, ids, T, settings, key_events_of(history, settings["key_events"]))
    return {name: values.tolist() for name, values in raw.numbers.items()}


def test_a_live_load_reads_the_series_and_computes_the_features_the_rows_give(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[date] = []
    account_series = feature_loading._account_series

    def recorded(tenant: Tenant, since: date, scope: Scope | None) -> Rollups | None:
        read.append(since)
        return account_series(tenant, since, scope)

    monkeypatch.setattr(feature_loading, "_account_series", recorded)
    from_series = scoring_history(tenant=tenant, kinds=[ScoreKind.CONVERSION, ScoreKind.CHURN], now=T)
    assert read == [SINCE]
    monkeypatch.setattr(feature_loading, "_account_series", lambda *_args: None)  # as if no series reached back
    from_the_rows = scoring_history(tenant=tenant, kinds=[ScoreKind.CONVERSION, ScoreKind.CHURN], now=T)

    assert rows(from_series.account_rollups) == rows(from_the_rows.account_rollups)
    assert from_series.levels == from_the_rows.levels == ("account",)
    assert from_series.active_pairs.keys() == from_the_rows.active_pairs.keys()
    features = features_of(from_series, tenant)
    assert features == features_of(from_the_rows, tenant)
    assert features["events_30d"]
    assert max(features["events_30d"]) > 0


def test_a_series_that_starts_after_the_loads_first_day_sends_the_load_to_the_rows(tenant: Tenant) -> None:
    """A score at an instant long before an account's latest rows: its series no longer holds what that needs."""
    series = AccountSeries.objects.for_tenant(tenant)
    first = series.order_by("account_id").first()
    assert first is not None
    series.filter(pk=first.pk).update(since=SINCE + timedelta(days=1))

    assert feature_loading._account_series(tenant, SINCE, None) is None
    assert feature_loading._account_series(tenant, SINCE + timedelta(days=1), None) is not None
    history = scoring_history(tenant=tenant, kinds=[ScoreKind.CONVERSION], now=T)
    assert rows(history.account_rollups) == rows(from_rows(tenant, SINCE))


def test_another_tenants_series_are_not_read(tenant: Tenant) -> None:
    other = tenant_create(name="Other", slug="other")
    generate(other, accounts=4, seed=6, days=20, end=T - timedelta(hours=3), now=T)
    dirty_entities_process(tenant_id=other.pk)

    mine, theirs = loaded(tenant, SINCE), loaded(other, SINCE)

    assert set(mine.entity.tolist()).isdisjoint(theirs.entity.tolist())
    assert rows(theirs) == rows(from_rows(other, SINCE))


def oracle(statement: str, tenant: Tenant) -> int:
    with connection.cursor() as cursor:
        cursor.execute(statement, {"t": tenant.pk})
        return cursor.fetchone()[0]


def test_the_chaos_oracles_find_series_and_latest_days_that_differ_from_their_rows(tenant: Tenant) -> None:
    """The chaos run decodes the series in SQL on its own: it must agree with the processor, and see a change."""
    assert oracle(SERIES_ORACLE, tenant) == 0
    assert oracle(PAIR_ACTIVITY_ORACLE, tenant) == 0

    series = AccountSeries.objects.for_tenant(tenant).order_by("account_id")
    first = series.first()
    assert first is not None
    series.filter(pk=first.pk).update(packed=bytes(first.packed)[16:])  # one row fewer
    PairActivity.objects.for_tenant(tenant).filter(
        pk=PairActivity.objects.for_tenant(tenant).order_by("pk").values_list("pk", flat=True)[0]
    ).update(last_day=date(2020, 1, 1))

    assert oracle(SERIES_ORACLE, tenant) == 1
    assert oracle(PAIR_ACTIVITY_ORACLE, tenant) == 2  # the kept day is missing, a wrong one is there
