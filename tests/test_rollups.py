"""Daily rollups: always equal to a GROUP BY of the raw events, whatever arrives in whatever order.

Traffic goes through the real ingestion doors (journy.io and Segment batches); processing is the real
`dirty_entities_process`. The reference is a plain SQL recompute from `signals_event`.
"""

from __future__ import annotations

import base64
import json
import random
import struct
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from accounts.models import Account, DirtyEntity, EndUser, EntityType
from accounts.services import DirtyMarks, entities_mark_dirty
from plgapp import rls
from plgapp.models import Tenant
from signals import processing
from signals import services as signals_services
from signals import tasks as signals_tasks
from signals.models import AccountSeries, DailyRollup, Event, EventName, PairActivity
from signals.processing import dirty_entities_process
from signals.rollups import ROLLUPS_ORDER, SERIES_DAYS, account_series_rebuild, rollups_process, rollups_recompute
from signals.tasks import dirty_entities_process_task, dirty_entities_sweep
from tests.conftest import TenantWorld
from tests.test_ingest_journy import Journy

Bucket = tuple[int, int, str, date, int]  # account_id, end_user_id, name, day, count

NAMES = ("signed_in", "widget_created", "report_run")
USERS = tuple(f"u{n}" for n in range(8))
ACCOUNTS = tuple(f"a{n}" for n in range(4))
DEVICES = ("d0", "d1", "d2")


# The registry the apps filled at start-up (the fixture below swaps in a private one for each test).
INSTALLED_PROCESSORS, INSTALLED_ORDERS = processing.PROCESSORS, processing._orders


def test_the_installed_rollup_processor_runs_before_processors_of_the_default_order() -> None:
    orders = [INSTALLED_ORDERS.get(item, processing.DEFAULT_ORDER) for item in INSTALLED_PROCESSORS]

    assert INSTALLED_ORDERS[rollups_process] == ROLLUPS_ORDER < processing.DEFAULT_ORDER
    assert orders == sorted(orders)


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch) -> list[processing.Processor]:
    """A private registry holding only the rollup processor: these tests are about rollups, not what
    later processors (scores) do with the marks."""
    processors: list[processing.Processor] = []
    monkeypatch.setattr(processing, "PROCESSORS", processors)
    monkeypatch.setattr(processing, "_orders", {})
    monkeypatch.setattr(processing, "_after_commit", set())
    processing.register(rollups_process, order=ROLLUPS_ORDER)
    return processors


def stored(tenant: Tenant) -> set[Bucket]:
    return set(DailyRollup.objects.for_tenant(tenant).values_list("account_id", "end_user_id", "name", "day", "count"))


def recomputed(tenant: Tenant) -> set[Bucket]:
    """The three levels straight from the raw events."""
    day = "(occurred_at AT TIME ZONE 'UTC')::date"
    rows = Event.objects.sql(
        tenant,
        f"""
        SELECT account_id, 0, name, {day}, count(*) FROM signals_event
         WHERE tenant_id = %(tenant)s AND account_id IS NOT NULL GROUP BY account_id, name, {day}
        UNION ALL
        SELECT 0, end_user_id, name, {day}, count(*) FROM signals_event
         WHERE tenant_id = %(tenant)s AND end_user_id IS NOT NULL GROUP BY end_user_id, name, {day}
        UNION ALL
        SELECT account_id, end_user_id, name, {day}, count(*) FROM signals_event
         WHERE tenant_id = %(tenant)s AND account_id IS NOT NULL AND end_user_id IS NOT NULL
         GROUP BY account_id, end_user_id, name, {day}
        """,  # noqa: S608 - a constant expression
        {},
    )
    return {(int(a), int(u), str(n), d, int(c)) for a, u, n, d, c in rows}


def series(tenant: Tenant) -> dict[int, tuple[date, set[Bucket]]]:
    """account id -> (since, its series' rows as account-level buckets), decoded here on their own."""
    names = dict(EventName.objects.for_tenant(tenant).values_list("pk", "name"))
    decoded = {}
    for account_id, since, packed in AccountSeries.objects.for_tenant(tenant).values_list(
        "account_id", "since", "packed"
    ):
        rows = {(account_id, 0, names[n], date.fromordinal(d), c) for n, d, c in struct.iter_unpack(">qii", packed)}
        decoded[account_id] = (since, rows)
    return decoded


def assert_series_equal_the_recent_account_rows(tenant: Tenant) -> None:
    """Every account with account-level rollups has a series, holding exactly its rows since the series' first
    day (its latest day with a row minus SERIES_DAYS); no other account has one."""
    account_rows = {bucket for bucket in stored(tenant) if bucket[0] and not bucket[1]}
    kept = series(tenant)
    assert set(kept) == {bucket[0] for bucket in account_rows}
    for account_id, (since, rows) in kept.items():
        mine = {bucket for bucket in account_rows if bucket[0] == account_id}
        assert since == max(bucket[3] for bucket in mine) - timedelta(days=SERIES_DAYS)
        assert rows == {bucket for bucket in mine if bucket[3] >= since}, account_id


def assert_pairs_latest_days_equal_their_rows(tenant: Tenant) -> None:
    """Every (account, user) pair with pair-level rows has its latest day kept, and no other pair."""
    latest: dict[tuple[int, int], date] = {}
    for account_id, user_id, _name, day, _count in stored(tenant):
        if account_id and user_id:
            latest[(account_id, user_id)] = max(day, latest.get((account_id, user_id), day))
    kept = PairActivity.objects.for_tenant(tenant).values_list("account_id", "end_user_id", "last_day")
    assert {(a, u): day for a, u, day in kept} == latest


def levels(buckets: set[Bucket]) -> set[str]:
    return {"account" if not u else "user" if not a else "pair" for a, u, _n, _d, _c in buckets}


def segment_batch(world: TenantWorld, messages: list[dict[str, Any]]) -> Any:
    auth = "Basic " + base64.b64encode(f"{world.write_key}:".encode()).decode()
    return Client().post(
        "/api/segment/v1/batch", json.dumps({"batch": messages}), content_type="application/json",
        HTTP_AUTHORIZATION=auth,
    )  # fmt: skip


# --- random traffic ----------------------------------------------------------------------------------


class Traffic:
    """Random calls for one tenant: events of users, accounts and users in accounts, on recent days and
    late (months back), with offsets that cross UTC midnight, repeated messageIds, anonymous devices."""

    def __init__(self, rng: random.Random, now: datetime) -> None:
        self.rng = rng
        self.now = now
        self.message_ids: list[str] = []
        self.sent = 0

    def when(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.6:  # the last few days
            at = self.now - timedelta(days=rng.randint(0, 4), seconds=rng.randint(0, 86_399))
        elif roll < 0.8:  # late: months back
            at = self.now - timedelta(days=rng.randint(30, 400), seconds=rng.randint(0, 86_399))
        else:  # a second either side of a UTC midnight
            midnight = datetime.combine(self.now.date() - timedelta(days=rng.randint(1, 3)), datetime.min.time(), UTC)
            at = midnight + timedelta(seconds=rng.choice([-1, 0, 1]))
        offset = timezone.get_fixed_timezone(rng.choice([0, 0, 120, -300]))  # same instant, other local day
        return at.astimezone(offset).isoformat()

    def message_id(self) -> str | None:
        roll = self.rng.random()
        if roll < 0.2 and self.message_ids:
            return self.rng.choice(self.message_ids)  # a retry: stored once
        if roll < 0.6:
            self.sent += 1
            self.message_ids.append(f"m-{self.sent}")
            return self.message_ids[-1]
        return None

    def journy_track(self) -> dict[str, Any]:
        rng = self.rng
        shape = rng.choice(["user", "account", "both", "both"])
        identification: dict[str, Any] = {}
        if shape in ("user", "both"):
            identification["user"] = {"userId": rng.choice(USERS)}
        if shape in ("account", "both"):
            identification["account"] = {"accountId": rng.choice(ACCOUNTS)}
        call = {"type": "track", "identification": identification, "name": rng.choice(NAMES)}
        call["triggeredAt"] = self.when()
        message_id = self.message_id()
        if message_id:
            call["messageId"] = message_id
        return call

    def journy_batch(self, size: int) -> list[dict[str, Any]]:
        rng = self.rng
        calls = []
        for _ in range(size):
            roll = rng.random()
            if roll < 0.8:
                calls.append(self.journy_track())
            elif roll < 0.9:
                calls.append(
                    {"type": "upsertUser", "identification": {"userId": rng.choice(USERS)},
                     "properties": {"plan": rng.choice(["free", "pro"])}}
                )  # fmt: skip
            else:
                calls.append(
                    {"type": "addUsers", "account": {"accountId": rng.choice(ACCOUNTS)},
                     "users": [{"identification": {"userId": rng.choice(USERS)}}]}
                )  # fmt: skip
        return calls

    def anonymous_batch(self, size: int) -> list[dict[str, Any]]:
        """Segment tracks of anonymous devices, some in an account (events with no user until a link)."""
        rng = self.rng
        messages = []
        for _ in range(size):
            message: dict[str, Any] = {
                "type": "track", "anonymousId": rng.choice(DEVICES), "event": rng.choice(NAMES),
                "timestamp": self.when(),
            }  # fmt: skip
            if rng.random() < 0.6:
                message["context"] = {"groupId": rng.choice(ACCOUNTS)}
            message_id = self.message_id()
            if message_id:
                message["messageId"] = f"seg-{message_id}"
            messages.append(message)
        return messages


def run_round(world: TenantWorld, traffic: Traffic, round_number: int) -> None:
    """One round of random traffic; rounds 1-4 also merge, link, and delete (each through the API)."""
    journy = Journy(world)
    rng = traffic.rng
    assert journy.batch(traffic.journy_batch(rng.randint(20, 40))).status_code == 200
    assert segment_batch(world, traffic.anonymous_batch(rng.randint(5, 10))).status_code == 200
    if round_number == 1:  # a user known by email only, with events in an account, turns out to be u1
        calls = [
            {"type": "track", "identification": {"user": {"email": "ann@x.test"}, "account": {"accountId": "a1"}},
             "name": "signed_in", "triggeredAt": traffic.when()} for _ in range(3)
        ]  # fmt: skip
        journy.batch([*calls, {"type": "track", "identification": {"user": {"userId": "u1"}}, "name": "signed_in"}])
        journy.upsert_user({"userId": "u1", "email": "ann@x.test"}, {})
        assert journy.users().filter(external_id__isnull=True).count() == 0
    if round_number == 2:  # an account known by domain only, with events, turns out to be a2
        calls = [
            {"type": "track", "identification": {"user": {"userId": "u2"}, "account": {"domain": "init.test"}},
             "name": "report_run", "triggeredAt": traffic.when()} for _ in range(3)
        ]  # fmt: skip
        journy.batch([*calls, {"type": "track", "identification": {"account": {"accountId": "a2"}}, "name": "x"}])
        journy.upsert_account({"accountId": "a2", "domain": "init.test"}, {})
        assert journy.accounts().filter(external_id__isnull=True).count() == 0
    if round_number == 3:  # a device's anonymous events go to a user
        journy.send("post", "/link", {"deviceId": "d1", "identification": {"userId": "u3"}})
        assert not journy.events().filter(device_id="d1", end_user_id__isnull=True).exists()
    if round_number == 4:  # a user with events in accounts is deleted, then an account with its users' events
        journy.batch(
            [{"type": "track", "identification": {"user": {"userId": "u4"}, "account": {"accountId": "a3"}},
              "name": "signed_in", "triggeredAt": traffic.when()}]
        )  # fmt: skip
        assert journy.send("delete", "/users", {"identification": {"userId": "u4"}}).status_code == 200
        assert journy.send("delete", "/accounts", {"identification": {"accountId": "a3"}}).status_code == 200
        assert not journy.users().filter(external_id="u4").exists()
        assert not journy.accounts().filter(external_id="a3").exists()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rollups_equal_a_recompute_from_raw_events_after_random_batches(
    tenant_a: TenantWorld, tenant_b: TenantWorld, seed: int
) -> None:
    now = timezone.now()
    traffic_a, traffic_b = Traffic(random.Random(seed), now), Traffic(random.Random(seed + 100), now)

    for round_number in range(6):
        run_round(tenant_a, traffic_a, round_number)
        run_round(tenant_b, traffic_b, round_number)  # the same ids in another tenant, interleaved
        if round_number % 2 == 0:
            continue  # marks pile up over two rounds, as when the worker is behind
        dirty_entities_process(tenant_id=tenant_a.tenant.pk)
        dirty_entities_process(tenant_id=tenant_b.tenant.pk)

        for world in (tenant_a, tenant_b):
            assert DirtyEntity.objects.for_tenant(world.tenant).count() == 0
            assert stored(world.tenant) == recomputed(world.tenant), f"round {round_number}"
            assert_event_names_registered(world.tenant)
            assert_series_equal_the_recent_account_rows(world.tenant)
            assert_pairs_latest_days_equal_their_rows(world.tenant)

    assert levels(stored(tenant_a.tenant)) == {"account", "user", "pair"}
    kept = series(tenant_a.tenant)  # some account has rows too old for its series
    assert any(b[3] < kept[b[0]][0] for b in stored(tenant_a.tenant) if b[0] and not b[1])
    for world in (tenant_a, tenant_b):  # the bulk rebuild writes what the processor wrote
        before = series(world.tenant)
        account_series_rebuild(tenant=world.tenant)
        assert series(world.tenant) == before
        assert_pairs_latest_days_equal_their_rows(world.tenant)


def assert_event_names_registered(tenant: Tenant) -> None:
    """Every name in the rollups is in the catalogue's registry, no later than its first day there (merged or
    deleted entities may have taken earlier rows away; a name once seen stays)."""
    first_days: dict[str, date] = {}
    for name, day in DailyRollup.objects.for_tenant(tenant).values_list("name", "day"):
        first_days[name] = min(day, first_days.get(name, day))
    registered = dict(EventName.objects.for_tenant(tenant).values_list("name", "first_day"))
    assert set(first_days) <= set(registered)
    assert all(registered[name] <= day for name, day in first_days.items())


def test_a_second_processing_of_the_same_buckets_changes_nothing(tenant_a: TenantWorld) -> None:
    traffic = Traffic(random.Random(7), timezone.now())
    for round_number in range(3):
        run_round(tenant_a, traffic, round_number)
    dirty_entities_process(tenant_id=tenant_a.tenant.pk)
    before = stored(tenant_a.tenant)

    # Every entity marked again over every day (a redelivered task, a sweep racing a hint).
    marks = DirtyMarks()
    for pk in EndUser.objects.for_tenant(tenant_a.tenant).values_list("pk", flat=True):
        marks.add_days(EntityType.USER, pk, date(2000, 1, 1), date(2100, 1, 1))
    for pk in Account.objects.for_tenant(tenant_a.tenant).values_list("pk", flat=True):
        marks.add_days(EntityType.ACCOUNT, pk, date(2000, 1, 1), date(2100, 1, 1))
    entities_mark_dirty(tenant=tenant_a.tenant, marks=marks, now=timezone.now())
    cleared = dirty_entities_process(tenant_id=tenant_a.tenant.pk)
    again = dirty_entities_process(tenant_id=tenant_a.tenant.pk)

    assert cleared == len(marks)
    assert again == 0
    assert stored(tenant_a.tenant) == before == recomputed(tenant_a.tenant)


def test_recomputing_the_same_range_twice_gives_the_same_rows(tenant_a: TenantWorld) -> None:
    traffic = Traffic(random.Random(11), timezone.now())
    run_round(tenant_a, traffic, 0)
    pks = EndUser.objects.for_tenant(tenant_a.tenant).values_list("pk", flat=True)
    users = [(pk, date(2000, 1, 1), date(2100, 1, 1)) for pk in pks]

    rollups_recompute(tenant=tenant_a.tenant, entity_type=EntityType.USER, ranges=users)
    first = stored(tenant_a.tenant)
    rollups_recompute(tenant=tenant_a.tenant, entity_type=EntityType.USER, ranges=users + users)

    assert first
    assert stored(tenant_a.tenant) == first
    assert levels(first) == {"user", "pair"}  # the account level is the accounts' marks' job


# --- marks and their day ranges --------------------------------------------------------------------------


def mark_of(tenant: Tenant, entity_type: str, external_id: str) -> tuple[date | None, date | None]:
    model = EndUser if entity_type == EntityType.USER else Account
    pk = model.objects.for_tenant(tenant).get(external_id=external_id).pk
    return (
        DirtyEntity.objects.for_tenant(tenant)
        .values_list("first_day", "last_day")
        .get(entity_type=entity_type, entity_id=pk)
    )


def test_marks_carry_the_utc_days_of_their_events_widened_by_later_requests(tenant_a: TenantWorld) -> None:
    journy = Journy(tenant_a)
    both = {"user": {"userId": "u1"}, "account": {"accountId": "a1"}}

    journy.track(both, "x", triggeredAt="2026-03-10T01:30:00+02:00")  # 2026-03-09 in UTC
    journy.track(both, "x", triggeredAt="2026-03-12T12:00:00Z")
    journy.track({"user": {"userId": "u1"}}, "x", triggeredAt="2025-12-31T23:59:59Z")  # late, user only
    journy.upsert_user({"userId": "u1"}, {"plan": "pro"})  # no events: does not narrow the range

    assert mark_of(tenant_a.tenant, EntityType.USER, "u1") == (date(2025, 12, 31), date(2026, 3, 12))
    assert mark_of(tenant_a.tenant, EntityType.ACCOUNT, "a1") == (date(2026, 3, 9), date(2026, 3, 12))


def test_a_re_mark_moves_marked_at_forward_even_when_its_clock_reads_earlier(tenant_a: TenantWorld) -> None:
    """The processor deletes a mark only if marked_at is unchanged: a re-mark must always change it."""
    user = EndUser.objects.for_tenant(tenant_a.tenant).create(external_id="u1")
    marks = DirtyMarks()
    marks.add(EntityType.USER, user.pk)
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    seen = []
    for at in (now, now, now - timedelta(seconds=5)):  # same microsecond, then a worker whose clock is behind
        entities_mark_dirty(tenant=tenant_a.tenant, marks=marks, now=at)
        seen.append(DirtyEntity.objects.for_tenant(tenant_a.tenant).get(entity_id=user.pk).marked_at)

    assert seen[0] == now
    assert seen[0] < seen[1] < seen[2]


def test_a_property_only_write_marks_for_processing_but_recomputes_no_rollups(tenant_a: TenantWorld) -> None:
    journy = Journy(tenant_a)
    journy.track({"user": {"userId": "u1"}}, "x", triggeredAt="2026-03-10T10:00:00Z")
    dirty_entities_process(tenant_id=tenant_a.tenant.pk)
    # A stale row the property write must not touch: only a day range recomputes buckets.
    DailyRollup.objects.for_tenant(tenant_a.tenant).update(count=99)

    journy.upsert_user({"userId": "u1"}, {"plan": "pro"})

    assert mark_of(tenant_a.tenant, EntityType.USER, "u1") == (None, None)
    assert dirty_entities_process(tenant_id=tenant_a.tenant.pk) == 1
    assert list(DailyRollup.objects.for_tenant(tenant_a.tenant).values_list("count", flat=True)) == [99]


def test_a_duplicate_message_id_recomputes_its_bucket_without_counting_twice(tenant_a: TenantWorld) -> None:
    journy = Journy(tenant_a)
    for _ in range(2):
        journy.track({"user": {"userId": "u1"}}, "paid", messageId="m-1", triggeredAt="2026-03-10T10:00:00Z")
        dirty_entities_process(tenant_id=tenant_a.tenant.pk)

    user = EndUser.objects.for_tenant(tenant_a.tenant).get()
    assert stored(tenant_a.tenant) == {(0, user.pk, "paid", date(2026, 3, 10), 1)}


# --- entities that move or go -------------------------------------------------------------------------


def test_a_merge_moves_the_losers_counts_to_the_survivor_and_forgets_the_loser(tenant_a: TenantWorld) -> None:
    journy = Journy(tenant_a)
    in_account = {"user": {"email": "ann@x.test"}, "account": {"accountId": "a1"}}
    journy.track(in_account, "x", triggeredAt="2026-03-10T10:00:00Z")
    journy.track({"user": {"userId": "u1"}}, "x", triggeredAt="2026-03-10T11:00:00Z")
    dirty_entities_process(tenant_id=tenant_a.tenant.pk)
    loser = EndUser.objects.for_tenant(tenant_a.tenant).get(email="ann@x.test").pk

    journy.upsert_user({"userId": "u1", "email": "ann@x.test"}, {})
    assert not DailyRollup.objects.for_tenant(tenant_a.tenant).filter(end_user_id=loser).exists()
    dirty_entities_process(tenant_id=tenant_a.tenant.pk)

    survivor = EndUser.objects.for_tenant(tenant_a.tenant).get().pk
    account = Account.objects.for_tenant(tenant_a.tenant).get().pk
    day = date(2026, 3, 10)
    assert stored(tenant_a.tenant) == {
        (account, 0, "x", day, 1),
        (0, survivor, "x", day, 2),
        (account, survivor, "x", day, 1),
    }


def test_linking_a_device_counts_its_anonymous_events_for_the_user(tenant_a: TenantWorld) -> None:
    segment_batch(
        tenant_a,
        [{"type": "track", "anonymousId": "d1", "event": "visited", "timestamp": "2026-03-10T10:00:00Z",
          "context": {"groupId": "a1"}}],
    )  # fmt: skip
    dirty_entities_process(tenant_id=tenant_a.tenant.pk)
    account = Account.objects.for_tenant(tenant_a.tenant).get().pk
    assert stored(tenant_a.tenant) == {(account, 0, "visited", date(2026, 3, 10), 1)}

    Journy(tenant_a).send("post", "/link", {"deviceId": "d1", "identification": {"userId": "u1"}})
    assert mark_of(tenant_a.tenant, EntityType.USER, "u1") == (date(2026, 3, 10), date(2026, 3, 10))
    dirty_entities_process(tenant_id=tenant_a.tenant.pk)

    user = EndUser.objects.for_tenant(tenant_a.tenant).get().pk
    assert stored(tenant_a.tenant) == {
        (account, 0, "visited", date(2026, 3, 10), 1),
        (0, user, "visited", date(2026, 3, 10), 1),
        (account, user, "visited", date(2026, 3, 10), 1),
    }


def test_deleting_a_user_drops_its_rollups_and_recounts_its_accounts(tenant_a: TenantWorld) -> None:
    journy = Journy(tenant_a)
    journy.track({"user": {"userId": "u1"}, "account": {"accountId": "a1"}}, "x", triggeredAt="2026-03-10T10:00:00Z")
    journy.track({"user": {"userId": "u2"}, "account": {"accountId": "a1"}}, "x", triggeredAt="2026-03-10T11:00:00Z")
    dirty_entities_process(tenant_id=tenant_a.tenant.pk)

    journy.send("delete", "/users", {"identification": {"userId": "u1"}})
    assert mark_of(tenant_a.tenant, EntityType.ACCOUNT, "a1") == (date(2026, 3, 10), date(2026, 3, 10))
    dirty_entities_process(tenant_id=tenant_a.tenant.pk)

    u2 = EndUser.objects.for_tenant(tenant_a.tenant).get().pk
    a1 = Account.objects.for_tenant(tenant_a.tenant).get().pk
    day = date(2026, 3, 10)
    assert stored(tenant_a.tenant) == {(a1, 0, "x", day, 1), (0, u2, "x", day, 1), (a1, u2, "x", day, 1)}


# --- delivery: hints, sweep, order, tenants -----------------------------------------------------------


def test_a_lost_hint_is_caught_by_the_sweep(tenant_a: TenantWorld, django_capture_on_commit_callbacks: Any) -> None:
    with (
        mock.patch.object(dirty_entities_process_task, "apply_async", side_effect=ConnectionError("broker down")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = Journy(tenant_a).track({"user": {"userId": "u1"}}, "x", triggeredAt="2026-03-10T10:00:00Z")
    assert response.status_code == 201
    assert not DailyRollup.objects.for_tenant(tenant_a.tenant).exists()  # no task ran

    sent: list[tuple[int, ...]] = []

    def deliver(args: tuple[int, ...], **_options: Any) -> None:  # the broker, then a worker, in-process
        sent.append(args)
        dirty_entities_process_task(*args)

    with mock.patch.object(dirty_entities_process_task, "apply_async", side_effect=deliver):
        dirty_entities_sweep()

    assert sent == [(tenant_a.tenant.pk,)]
    assert stored(tenant_a.tenant) == recomputed(tenant_a.tenant) != set()
    assert DirtyEntity.objects.for_tenant(tenant_a.tenant).count() == 0


def test_processing_one_tenant_never_touches_another(tenant_a: TenantWorld, tenant_b: TenantWorld) -> None:
    for world in (tenant_a, tenant_b):
        Journy(world).track({"user": {"userId": "u1"}, "account": {"accountId": "a1"}}, "x")

    dirty_entities_process(tenant_id=tenant_a.tenant.pk)

    a_rows = stored(tenant_a.tenant)
    assert a_rows == recomputed(tenant_a.tenant)
    assert len(a_rows) == 3
    a_user = EndUser.objects.for_tenant(tenant_a.tenant).get().pk
    a_account = Account.objects.for_tenant(tenant_a.tenant).get().pk
    assert {row[0] for row in a_rows} == {0, a_account}
    assert {row[1] for row in a_rows} == {0, a_user}
    assert not DailyRollup.objects.for_tenant(tenant_b.tenant).exists()
    assert DirtyEntity.objects.for_tenant(tenant_b.tenant).count() == 2


def test_processors_run_in_order_so_readers_see_fresh_rollups(
    tenant_a: TenantWorld, registry: list[processing.Processor]
) -> None:
    seen: list[tuple[str, int]] = []

    def reader(tenant: Tenant, entities: list[tuple[str, int]]) -> None:
        seen.extend(DailyRollup.objects.for_tenant(tenant).values_list("name", "count"))

    def late(tenant: Tenant, entities: list[tuple[str, int]]) -> None:
        seen.append(("late", len(entities)))

    processing.register(late, order=200)
    processing.register(reader)  # default order: after the rollups, before `late`
    Journy(tenant_a).track({"user": {"userId": "u1"}}, "x")

    dirty_entities_process(tenant_id=tenant_a.tenant.pk)

    assert registry == [rollups_process, reader, late]
    assert seen == [("x", 1), ("late", 1)]


@pytest.mark.django_db(transaction=True)
def test_a_processor_after_a_commit_finds_the_earlier_work_committed_and_a_round_cut_there_is_redone(
    tenant_a: TenantWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`after_commit` (ADR 0028): the rollups are committed — another connection sees them — before the later
    processor runs. If the tenant is taken in between, the round stops there and keeps its marks, so the next
    round recomputes the rollups (no change) and runs the later processor."""
    seen: list[int] = []

    def committed_rollups() -> int:
        counted: list[int] = []

        def count() -> None:
            try:
                with rls.tenant(tenant_a.tenant.pk):
                    counted.append(DailyRollup.objects.for_tenant(tenant_a.tenant).count())
            finally:
                connection.close()

        reader = threading.Thread(target=count)
        reader.start()
        reader.join(20)
        return counted[0]

    processing.register(lambda tenant, entities: seen.append(committed_rollups()), after_commit=True)
    Journy(tenant_a).track({"user": {"userId": "u1"}}, "x", triggeredAt="2026-03-10T10:00:00Z")
    answers = iter([True, False])  # free for the rollups, then someone takes the tenant; free again after
    monkeypatch.setattr(processing, "tenant_processing_lock_try", lambda tenant: next(answers, True))

    assert processing.dirty_entities_drain(tenant_id=tenant_a.tenant.pk, wait=False) == processing.Drained(busy=True)
    assert seen == []
    assert committed_rollups() == 1
    assert DirtyEntity.objects.for_tenant(tenant_a.tenant).count() == 1

    assert processing.dirty_entities_drain(tenant_id=tenant_a.tenant.pk, wait=False) == processing.Drained(1)
    assert seen == [1]
    assert stored(tenant_a.tenant) == recomputed(tenant_a.tenant)
    assert not DirtyEntity.objects.for_tenant(tenant_a.tenant).exists()


@pytest.mark.django_db(transaction=True)
def test_ingestion_never_waits_for_a_round_and_what_it_marks_meanwhile_is_processed_next(
    tenant_a: TenantWorld,
) -> None:
    """A round reads its marks without locking them: a request re-marking one of them while the round works
    answers at once, and its mark (newer marked_at) survives the round, so the next round counts its events."""
    journy = Journy(tenant_a)
    both = {"user": {"userId": "u1"}, "account": {"accountId": "a1"}}
    assert journy.track(both, "x", triggeredAt="2026-03-10T10:00:00Z").status_code == 201
    in_round, release = threading.Event(), threading.Event()
    rounds: list[int] = []

    def slow(tenant: Tenant, entities: list[tuple[str, int]]) -> None:
        rounds.append(len(entities))
        in_round.set()
        release.wait(20)

    processing.register(slow)
    errors: list[BaseException] = []

    def process() -> None:
        try:
            rls.tenant_enter(tenant_a.tenant.pk)  # as the processing task does
            dirty_entities_process(tenant_id=tenant_a.tenant.pk)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    worker = threading.Thread(target=process)
    worker.start()
    try:
        assert in_round.wait(20)
        began = time.monotonic()
        answer = journy.track(both, "x", triggeredAt="2026-03-10T11:00:00Z")
        answered_in = time.monotonic() - began
        assert answer.status_code == 201, answer.content
        assert worker.is_alive()  # the round is still holding, yet the request was answered
    finally:
        release.set()
        worker.join(30)
    assert errors == []
    assert answered_in < 5

    # The first round could not clear the marks the request renewed: the run went round again for them.
    assert rounds == [2, 2]
    assert stored(tenant_a.tenant) == recomputed(tenant_a.tenant)
    assert {row[4] for row in stored(tenant_a.tenant)} == {2}
    assert not DirtyEntity.objects.for_tenant(tenant_a.tenant).exists()


def _recorded(hints: list[tuple[int, float, bool]]) -> Callable[..., None]:
    def hint(tenant_id: int, *, delay: float = 0.0, even_if_queued: bool = False) -> None:
        hints.append((tenant_id, delay, even_if_queued))

    return hint


def test_a_run_gives_the_worker_back_after_its_time_and_queues_its_successor(
    tenant_a: TenantWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    journy = Journy(tenant_a)
    for n in range(3):
        journy.track({"user": {"userId": f"u{n}"}}, "x", triggeredAt="2026-03-10T10:00:00Z")
    monkeypatch.setattr(processing, "CLAIM_BATCH", 1)
    monkeypatch.setattr(signals_tasks, "DRAIN_SECONDS", 0.0)
    hints: list[tuple[int, float, bool]] = []
    monkeypatch.setattr(signals_tasks, "processing_hint", _recorded(hints))

    assert dirty_entities_process_task(tenant_a.tenant.pk) == 1  # one round, then the time is up

    # The rest goes to a new run at the back of the queue, whatever the flag says (a task may have set it and gone).
    assert hints == [(tenant_a.tenant.pk, 0.0, True)]
    assert DirtyEntity.objects.for_tenant(tenant_a.tenant).count() == 2
    assert processing.dirty_entities_drain(tenant_id=tenant_a.tenant.pk, seconds=60) == processing.Drained(2)


def test_a_run_that_loses_the_tenant_between_rounds_stops_and_looks_again_shortly(
    tenant_a: TenantWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two worker processes never both drain one tenant: the second would alternate rounds with the first and
    leave evaluations and actions queued behind both. Whoever holds it (another run, an ingestion merge), a look a
    moment later (PROCESSING_RECHECK_SECONDS) makes sure the marks are not left waiting for the minutely sweep."""
    journy = Journy(tenant_a)
    for n in range(3):
        journy.track({"user": {"userId": f"u{n}"}}, "x", triggeredAt="2026-03-10T10:00:00Z")
    monkeypatch.setattr(processing, "CLAIM_BATCH", 1)
    answers = iter([True, False])  # free for the first round, then another run holds it
    monkeypatch.setattr(processing, "tenant_processing_lock_try", lambda tenant: next(answers))
    hints: list[tuple[int, float, bool]] = []
    monkeypatch.setattr(signals_tasks, "processing_hint", _recorded(hints))

    assert dirty_entities_process_task(tenant_a.tenant.pk) == 1

    assert hints == [(tenant_a.tenant.pk, signals_tasks.PROCESSING_RECHECK_SECONDS, False)]
    assert DirtyEntity.objects.for_tenant(tenant_a.tenant).count() == 2


def test_a_task_that_finds_a_run_holding_the_tenant_leaves_the_hand_over_to_it(
    tenant_a: TenantWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No look later (ADR 0025): the flag is set again without a task, so writes meanwhile queue none and the run,
    when it ends, sees that marks came while it ran and queues its successor at once."""
    tenant_id = tenant_a.tenant.pk
    signals_services.processing_hint_taken(tenant_id)
    token = signals_services.processing_draining_start(tenant_id)  # a run holds the tenant
    monkeypatch.setattr(processing, "tenant_processing_lock_try", lambda tenant: False)
    hints: list[tuple[int, float, bool]] = []
    monkeypatch.setattr(signals_tasks, "processing_hint", _recorded(hints))
    DirtyEntity.objects.for_tenant(tenant_a.tenant).create(entity_type="user", entity_id=1, marked_at=timezone.now())

    assert dirty_entities_process_task(tenant_id) == 0

    assert hints == []
    assert signals_services.processing_draining_end(tenant_id, token) is True  # the run queues its successor
    signals_services.processing_hint_taken(tenant_id)


def test_a_task_that_finds_the_run_just_ended_looks_again_itself(tenant_a: TenantWorld) -> None:
    """The run checks the flag after withdrawing its announcement; a task checks the announcement after setting the
    flag. Whichever comes second sees the other, so marks are never left to a run that already ended."""
    tenant_id = tenant_a.tenant.pk
    signals_services.processing_hint_taken(tenant_id)
    token = signals_services.processing_draining_start(tenant_id)
    assert signals_services.processing_draining_end(tenant_id, token) is False  # no write came while it ran

    assert signals_services.processing_hand_over_to_run(tenant_id) is False  # nobody to hand over to

    other = signals_services.processing_draining_start(tenant_id)  # a run that took the tenant between rounds
    assert signals_services.processing_draining_end(tenant_id, token) is False
    assert signals_services.processing_hand_over_to_run(tenant_id) is True  # the other run's announcement stayed
    assert signals_services.processing_draining_end(tenant_id, other) is True
    signals_services.processing_hint_taken(tenant_id)


def test_a_task_that_sees_the_run_end_while_handing_over_still_gets_its_look_queued(
    tenant_a: TenantWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run withdrew its announcement between the task's two checks (and may not have seen the flag): the task
    clears the flag it set, so its look is queued rather than taken for a task that waits."""
    tenant_id = tenant_a.tenant.pk
    signals_services.processing_hint_taken(tenant_id)
    token = signals_services.processing_draining_start(tenant_id)
    real = signals_services.redis_for(settings.REDIS_URL)

    class RunEndsBetweenTheChecks:
        def __init__(self) -> None:
            self.checks = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def exists(self, key: str) -> int:
            self.checks += 1
            if self.checks == 2:
                signals_services.processing_draining_end(tenant_id, token)  # the run ends, before the flag is seen
            return int(real.exists(key))

    monkeypatch.setattr(signals_services, "redis_for", lambda url: RunEndsBetweenTheChecks())
    assert signals_services.processing_hand_over_to_run(tenant_id) is False
    monkeypatch.undo()
    queued: list[tuple[tuple[int, ...], float | None]] = []
    monkeypatch.setattr(
        signals_tasks.dirty_entities_process_task,
        "apply_async",
        lambda args, retry=True, countdown=None: queued.append((args, countdown)),
    )

    signals_services.processing_hint(tenant_id, delay=signals_tasks.PROCESSING_RECHECK_SECONDS)

    assert queued == [((tenant_id,), signals_tasks.PROCESSING_RECHECK_SECONDS)]
    signals_services.processing_hint_taken(tenant_id)


def test_a_run_that_found_no_marks_left_queues_a_successor_if_a_write_came_meanwhile(
    tenant_a: TenantWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id = tenant_a.tenant.pk
    hints: list[tuple[int, float, bool]] = []
    monkeypatch.setattr(signals_tasks, "processing_hint", _recorded(hints))
    DirtyEntity.objects.for_tenant(tenant_a.tenant).create(entity_type="user", entity_id=1, marked_at=timezone.now())

    def a_write_meanwhile(tenant: Tenant, entities: list[tuple[str, int]]) -> None:
        signals_services.processing_hand_over_to_run(tenant_id)  # a write's task found this run holding the tenant

    monkeypatch.setattr(processing, "PROCESSORS", [a_write_meanwhile])

    assert dirty_entities_process_task(tenant_id) == 1
    assert hints == [(tenant_id, 0.0, True)]

    hints.clear()
    signals_services.processing_hint_taken(tenant_id)
    assert dirty_entities_process_task(tenant_id) == 0  # no marks, no write: nothing more
    assert hints == []


def test_marks_renewed_round_after_round_do_not_starve_the_others(
    tenant_a: TenantWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mark renewed during a round keeps its id; rounds go round the marks, so the ones behind get their turn."""
    journy = Journy(tenant_a)
    for n in range(4):
        journy.track({"user": {"userId": f"u{n}"}}, "x", triggeredAt="2026-03-10T10:00:00Z")
    monkeypatch.setattr(processing, "CLAIM_BATCH", 2)
    monkeypatch.setattr(processing, "_claim_after", {})
    rounds: list[list[tuple[str, int]]] = []

    def busy_users(tenant: Tenant, entities: list[tuple[str, int]]) -> None:
        rounds.append(sorted(entities))
        renewed = DirtyMarks()
        for entity_type, pk in entities:  # every entity a round sees has a new event meanwhile
            renewed.add(entity_type, pk)
        entities_mark_dirty(tenant=tenant, marks=renewed, now=timezone.now())

    processing.register(busy_users)
    for _ in range(3):
        processing.dirty_entities_drain(tenant_id=tenant_a.tenant.pk, seconds=0)  # one round each

    users = sorted(pk for (pk,) in EndUser.objects.for_tenant(tenant_a.tenant).values_list("pk"))
    assert [[pk for _type, pk in entities] for entities in rounds] == [users[:2], users[2:], users[:2]]


@pytest.mark.django_db(transaction=True)
def test_clearing_marks_never_waits_for_a_request_holding_one(tenant_a: TenantWorld) -> None:
    """A request locks its marks in its own order while it renews them: a round that waited for one could deadlock
    with it. The round leaves such a mark (it is being renewed) and clears the rest at once."""
    journy = Journy(tenant_a)
    for n in range(2):
        journy.track({"user": {"userId": f"u{n}"}}, "x", triggeredAt="2026-03-10T10:00:00Z")
    marks = list(DirtyEntity.objects.for_tenant(tenant_a.tenant).order_by("pk").values_list("pk", "marked_at"))
    holding, release = threading.Event(), threading.Event()

    def request_holding_the_first_mark() -> None:
        try:
            rls.tenant_enter(tenant_a.tenant.pk)
            with transaction.atomic():
                list(DirtyEntity.objects.for_tenant(tenant_a.tenant).filter(pk=marks[0][0]).select_for_update())
                holding.set()
                release.wait(20)
        finally:
            connection.close()

    holder = threading.Thread(target=request_holding_the_first_mark)
    holder.start()
    try:
        assert holding.wait(20)
        began = time.monotonic()
        with transaction.atomic():
            cleared = processing._marks_clear(tenant_a.tenant, marks)
        took = time.monotonic() - began
    finally:
        release.set()
        holder.join(30)

    assert cleared == 1
    assert took < 5
    assert list(DirtyEntity.objects.for_tenant(tenant_a.tenant).values_list("pk", flat=True)) == [marks[0][0]]
