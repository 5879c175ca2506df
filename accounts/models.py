"""The tenant's customers and their people: accounts, users, memberships, and their history (DESIGN §5).

Current values live on the entity (`properties`, `stage`); `property_times` keeps, per property key,
the time of the write that set the current value, so an older write arriving late never overwrites a
newer one. Every write is also appended to PropertyChange / StageChange, so pages and features can
see what changed when.
"""

from __future__ import annotations

from typing import ClassVar

from django.db import models
from django.db.models import Q
from django.utils import timezone

from plgapp.models import TenantManager, TenantScopedModel


class EntityType(models.TextChoices):
    USER = "user", "User"
    ACCOUNT = "account", "Account"
    MEMBERSHIP = "membership", "Membership"
    EVENT = "event", "Event"


class PropertyType(models.TextChoices):
    TEXT = "text", "Text"
    NUMBER = "number", "Number"
    BOOLEAN = "boolean", "Boolean"
    DATETIME = "datetime", "Date and time"
    LIST = "list", "List of texts"


class Account(TenantScopedModel):
    """A customer company or workspace of the tenant, identified by accountId and/or domain."""

    external_id = models.CharField(max_length=255, null=True, blank=True)
    domain = models.CharField(max_length=255, null=True, blank=True)
    name = models.CharField(max_length=255, blank=True, default="")
    properties = models.JSONField(default=dict)
    property_times = models.JSONField(default=dict)
    stage = models.CharField(max_length=100, null=True, blank=True)
    stage_changed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects: ClassVar[TenantManager[Account]]

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "external_id"], condition=Q(external_id__isnull=False), name="account_external_id"
            ),
            models.UniqueConstraint(
                fields=["tenant", "domain"], condition=Q(domain__isnull=False), name="account_domain"
            ),
        ]
        indexes = [models.Index(fields=["tenant", "stage"], name="account_tenant_stage")]

    def __str__(self) -> str:
        return self.external_id or self.domain or f"account {self.pk}"


class EndUser(TenantScopedModel):
    """A user of the tenant's product ("user" in API and UI), identified by userId and/or email."""

    external_id = models.CharField(max_length=255, null=True, blank=True)
    email = models.CharField(max_length=320, null=True, blank=True, help_text="Stored lower-case.")
    properties = models.JSONField(default=dict)
    property_times = models.JSONField(default=dict)
    stage = models.CharField(max_length=100, null=True, blank=True)
    stage_changed_at = models.DateTimeField(null=True, blank=True)
    first_seen_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects: ClassVar[TenantManager[EndUser]]

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "external_id"], condition=Q(external_id__isnull=False), name="enduser_external_id"
            ),
            models.UniqueConstraint(fields=["tenant", "email"], condition=Q(email__isnull=False), name="enduser_email"),
        ]
        # Both unique keys are partial: a scan of one tenant's users (pages by id, a tenant's deletion) needs this.
        indexes = [models.Index(fields=["tenant", "id"], name="enduser_tenant_id")]

    def __str__(self) -> str:
        return self.external_id or self.email or f"user {self.pk}"


class Membership(TenantScopedModel):
    """An EndUser in an Account, with relationship properties (e.g. role: Owner here, Member elsewhere)."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="memberships")
    end_user = models.ForeignKey(EndUser, on_delete=models.CASCADE, related_name="memberships")
    properties = models.JSONField(default=dict)
    property_times = models.JSONField(default=dict)
    joined_at = models.DateTimeField()
    left_at = models.DateTimeField(null=True, blank=True)
    state_changed_at = models.DateTimeField(help_text="Time of the add/remove call that set joined/left.")

    objects: ClassVar[TenantManager[Membership]]

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "account", "end_user"], name="membership_account_user"),
        ]
        indexes = [models.Index(fields=["tenant", "end_user"], name="membership_tenant_user")]

    def __str__(self) -> str:
        return f"{self.end_user_id} in {self.account_id}"

    @property
    def is_active(self) -> bool:
        return self.left_at is None


class DeviceLink(TenantScopedModel):
    """An anonymous device id that turned out to be this user (POST /link, Segment alias)."""

    device_id = models.CharField(max_length=255)
    end_user = models.ForeignKey(EndUser, on_delete=models.CASCADE, related_name="device_links")
    linked_at = models.DateTimeField(default=timezone.now)

    objects: ClassVar[TenantManager[DeviceLink]]

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "device_id"], name="devicelink_device")]
        indexes = [models.Index(fields=["tenant", "end_user"], name="devicelink_tenant_user")]

    def __str__(self) -> str:
        return f"{self.device_id} -> {self.end_user_id}"


class StageChange(TenantScopedModel):
    entity_type = models.CharField(max_length=20, choices=EntityType.choices)
    entity_id = models.BigIntegerField()
    from_stage = models.CharField(max_length=100, null=True, blank=True)
    to_stage = models.CharField(max_length=100, null=True, blank=True)
    changed_at = models.DateTimeField()

    objects: ClassVar[TenantManager[StageChange]]

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "entity_type", "entity_id", "changed_at"], name="stagechange_entity"),
            models.Index(fields=["tenant", "to_stage", "changed_at"], name="stagechange_to_stage"),
        ]

    def __str__(self) -> str:
        return f"{self.entity_type} {self.entity_id}: {self.from_stage} -> {self.to_stage}"


class PropertyChange(TenantScopedModel):
    """Append-only history of account, user and membership properties (value null = deleted)."""

    entity_type = models.CharField(max_length=20, choices=EntityType.choices)
    entity_id = models.BigIntegerField()
    key = models.CharField(max_length=255)
    value = models.JSONField(null=True)
    changed_at = models.DateTimeField()

    objects: ClassVar[TenantManager[PropertyChange]]

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "entity_type", "entity_id", "key", "changed_at"], name="propchange_entity"),
        ]

    def __str__(self) -> str:
        return f"{self.entity_type} {self.entity_id}.{self.key}@{self.changed_at:%Y-%m-%d}"


class PropertyDefinition(TenantScopedModel):
    """The data catalogue: every property key seen per entity type, with the type it was first seen with."""

    entity_type = models.CharField(max_length=20, choices=EntityType.choices)
    key = models.CharField(max_length=255)
    type = models.CharField(max_length=20, choices=PropertyType.choices)
    first_seen_at = models.DateTimeField(default=timezone.now)

    objects: ClassVar[TenantManager[PropertyDefinition]]

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "entity_type", "key"], name="propertydefinition_key"),
        ]

    def __str__(self) -> str:
        return f"{self.entity_type}.{self.key}: {self.type}"


class DirtyEntity(TenantScopedModel):
    """An entity whose data changed and awaits downstream processing (rollups, scores, playbooks).

    Written in the same transaction as the change, so a lost Celery hint or a Redis outage loses
    nothing: the periodic sweep picks these rows up.
    """

    entity_type = models.CharField(max_length=20, choices=EntityType.choices)
    entity_id = models.BigIntegerField()
    marked_at = models.DateTimeField(default=timezone.now)
    # UTC days of the events whose daily rollups this entity needs recomputed (signals.rollups); widened
    # by every re-mark, null when only properties or memberships changed (no rollup work).
    first_day = models.DateField(null=True, blank=True)
    last_day = models.DateField(null=True, blank=True)
    # False while the entity's only changes are events on it (its fields, properties, memberships and identity
    # as they were): playbooks then re-check only conditions that read those events (ADR 0019). A re-mark can
    # only set it.
    fields_changed = models.BooleanField(default=True, db_default=True)

    objects: ClassVar[TenantManager[DirtyEntity]]

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "entity_type", "entity_id"], name="dirtyentity_entity"),
        ]
        # No index on marked_at: re-marking an entity then stays a HOT update (no index to maintain),
        # which matters because every ingestion request re-marks what it touched.

    def __str__(self) -> str:
        return f"{self.entity_type} {self.entity_id}"
