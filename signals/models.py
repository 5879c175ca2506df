"""Product events (DESIGN §5): what a user, an account, or a user in an account did, and when."""

from __future__ import annotations

from typing import ClassVar

from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Account, EndUser
from plgapp.models import Tenant, TenantManager, TenantScopedModel


class Event(TenantScopedModel):
    """One event. `device_id` keeps anonymous events until the device is linked to a user."""

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="+", editable=False, db_constraint=False, db_index=False
    )
    name = models.CharField(max_length=255)
    # No database-side foreign keys (ADR 0005): they halve the insert rate of the busiest table. No index on
    # either column alone either: each would be kept up to date on every insert (a tenth of ingestion's database
    # time) only to serve Django's cascade, which deletes by the column without the tenant. Instead the services
    # delete a user's or account's events themselves, by tenant (signals.services), which the tenant-led indexes
    # serve; merges move events explicitly; ids come from the resolver.
    end_user = models.ForeignKey(
        EndUser, null=True, blank=True, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False,
        db_index=False,
    )  # fmt: skip
    account = models.ForeignKey(
        Account, null=True, blank=True, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False,
        db_index=False,
    )  # fmt: skip
    device_id = models.CharField(max_length=255, null=True, blank=True)
    properties = models.JSONField(default=dict)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)
    message_id = models.CharField(max_length=255, null=True, blank=True)

    objects: ClassVar[TenantManager[Event]]

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "message_id"], condition=Q(message_id__isnull=False), name="event_message_id"
            ),
        ]
        indexes = [
            # Partial: an event of a user alone has no account (and one of an account alone no user); every query
            # names the account or user it looks for, which implies the condition. A quarter fewer entries to keep
            # up to date on every insert (ADR 0005, decision 11).
            models.Index(
                fields=["tenant", "account", "occurred_at"],
                condition=Q(account__isnull=False),
                name="event_account_time",
            ),
            models.Index(
                fields=["tenant", "end_user", "occurred_at"],
                condition=Q(end_user__isnull=False),
                name="event_user_time",
            ),
            models.Index(
                fields=["tenant", "device_id"],
                condition=Q(device_id__isnull=False, end_user__isnull=True),
                name="event_tenant_anonymous_device",
            ),
            BrinIndex(fields=["tenant", "occurred_at"], name="event_tenant_time_brin"),
        ]

    def __str__(self) -> str:
        return f"{self.name}@{self.occurred_at:%Y-%m-%d %H:%M}"


class DailyRollup(TenantScopedModel):
    """How many events of one name happened on one UTC day, at three levels (0 = none on that side):

    - account level `(account_id=A, end_user_id=0)`: every event with account A, whoever did it;
    - user level `(account_id=0, end_user_id=U)`: every event of user U, in whatever account;
    - pair level `(A, U)`: the events of user U in account A.

    Derived data, never written by ingestion: `signals.rollups` recomputes the buckets the dirty marks
    name from `signals_event` (so a rollup is always a plain GROUP BY of the raw events). Features read it.
    """

    account_id = models.BigIntegerField(default=0)
    end_user_id = models.BigIntegerField(default=0)
    name = models.CharField(max_length=255)
    day = models.DateField(help_text="UTC day of occurred_at.")
    count = models.IntegerField()

    objects: ClassVar[TenantManager[DailyRollup]]

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "account_id", "end_user_id", "name", "day"], name="dailyrollup_bucket"
            ),
        ]
        # The unique index serves account-level and account-wide reads; this one a user's rows in any account.
        indexes = [models.Index(fields=["tenant", "end_user_id", "day"], name="dailyrollup_tenant_user_day")]

    def __str__(self) -> str:
        return f"{self.account_id}/{self.end_user_id} {self.name}@{self.day}: {self.count}"


class AccountSeries(TenantScopedModel):
    """The account-level daily rollups of one account's recent days, packed in one value: what a full rescore
    reads instead of aggregating millions of rollup rows (docs/adr/0022-account-series.md).

    Derived data, like the rollups it copies: `signals.rollups` rewrites an account's series whenever it
    recomputes any of that account's rollups, from its account-level rows on days >= `since` (the account's
    latest day with a row minus SERIES_DAYS), and deletes it with them; an account without such rows has none.
    `packed` is (event name id, day ordinal, count) per account-level row, big-endian int8 + int4 + int4
    (PostgreSQL's `int8send` / `int4send`); names are `EventName` ids."""

    account_id = models.BigIntegerField()
    since = models.DateField(help_text="The series holds every account-level rollup row of this day and after.")
    packed = models.BinaryField()

    objects: ClassVar[TenantManager[AccountSeries]]

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "account_id"], name="accountseries_account")]

    def __str__(self) -> str:
        return f"series of account {self.account_id} since {self.since}"


class PairActivity(TenantScopedModel):
    """The latest day a user did something in an account: the latest day of their pair-level rollup rows. What
    active seats are counted from: a member was active in the 30 days before day D iff its latest day lies in
    [D - 30, D), when no latest day is D or later (docs/adr/0022-account-series.md).

    Derived data, like the rollups: `signals.rollups` rewrites the pairs whose rows it recomputed or forgot, from
    those rows, in the same transaction; a pair without rows has none."""

    account_id = models.BigIntegerField()
    end_user_id = models.BigIntegerField()
    last_day = models.DateField()

    objects: ClassVar[TenantManager[PairActivity]]

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "account_id", "end_user_id"], name="pairactivity_pair")
        ]
        # The recent pairs of a tenant, and its latest day of all (active seats).
        indexes = [models.Index(fields=["tenant", "last_day"], name="pairactivity_tenant_last_day")]

    def __str__(self) -> str:
        return f"user {self.end_user_id} in account {self.account_id} on {self.last_day}"


class EventName(TenantScopedModel):
    """Every event name a tenant's rollups have held, with the first day it happened: the data catalogue's
    list of events, without a DISTINCT over the rollups (seconds on a big tenant). Written with the rollups
    (`signals.rollups`); never removed, a name once seen stays pickable."""

    name = models.CharField(max_length=255)
    first_day = models.DateField()

    objects: ClassVar[TenantManager[EventName]]

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="eventname_tenant_name")]

    def __str__(self) -> str:
        return self.name


class SignalKind(models.TextChoices):
    EVENT_COUNT = "event_count", "Event count in a window"
    PROPERTY = "property", "Property value"
    RATIO = "ratio", "Ratio of two properties"


class SignalEntity(models.TextChoices):
    ACCOUNT = "account", "Account"
    USER = "user", "User"


class Signal(TenantScopedModel):
    """A named, tenant-defined feature (DESIGN §10): what a marketer means by "engaged", in their own terms.

    - event_count: how many `event` events in the `window_days` days before the snapshot;
    - property: a property's value as of the snapshot (numbers, booleans as 0/1; with `equals`, 1 when the
      property has that value, else 0);
    - ratio: `numerator` / `denominator` properties as of the snapshot (e.g. storage used / storage limit).

    Every signal is a model feature (`signal:<key>`); `weights` ({kind: -1..1}) make it count in the
    transparent rule-based score of that kind (negative: more of it lowers the score).
    """

    key = models.SlugField(max_length=64, help_text="Stable identifier; the feature is named signal:<key>.")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    entity_type = models.CharField(max_length=10, choices=SignalEntity.choices, default=SignalEntity.ACCOUNT)
    kind = models.CharField(max_length=20, choices=SignalKind.choices)
    event = models.CharField(max_length=255, blank=True, default="")
    window_days = models.PositiveSmallIntegerField(null=True, blank=True)
    property = models.CharField(max_length=255, blank=True, default="")
    equals = models.JSONField(null=True, blank=True)
    numerator = models.CharField(max_length=255, blank=True, default="")
    denominator = models.CharField(max_length=255, blank=True, default="")
    weights = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects: ClassVar[TenantManager[Signal]]

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "key"], name="signal_tenant_key_unique")]

    def __str__(self) -> str:
        return f"{self.key} ({self.kind})"

    def as_definition(self) -> dict[str, object]:
        """What feature building needs (plain data: features are pure)."""
        return {
            "key": self.key, "name": self.name, "entity_type": self.entity_type, "kind": self.kind,
            "event": self.event, "window_days": self.window_days, "property": self.property,
            "equals": self.equals, "numerator": self.numerator, "denominator": self.denominator,
            "weights": dict(self.weights or {}),
        }  # fmt: skip
