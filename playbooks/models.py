"""Playbooks (DESIGN §5, §9): definitions with immutable versions, enrollments, and the action outbox."""

from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from plgapp.models import TenantManager, TenantScopedModel


class PlaybookObject(models.TextChoices):
    ACCOUNT = "account", "Account"
    USER = "user", "User"


class PlaybookStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused"
    ARCHIVED = "archived", "Archived"


class InFlightPolicy(models.TextChoices):
    KEEP = "keep", "Keep running enrollments on their version"
    EXIT = "exit", "Exit running enrollments"


class Playbook(TenantScopedModel):
    name = models.CharField(max_length=200)
    object = models.CharField(max_length=10, choices=PlaybookObject.choices)
    status = models.CharField(max_length=10, choices=PlaybookStatus.choices, default=PlaybookStatus.DRAFT)
    current_version = models.ForeignKey(
        "PlaybookVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")  # fmt: skip
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    activated_at = models.DateTimeField(null=True, blank=True)

    objects: ClassVar[TenantManager[Playbook]]

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="playbook_tenant_name_unique")]
        indexes = [models.Index(fields=["tenant", "status"], name="playbook_tenant_status")]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


class PlaybookVersion(TenantScopedModel):
    """An immutable definition (DESIGN §9 JSON). Publishing creates a new one; enrollments pin theirs."""

    playbook = models.ForeignKey(Playbook, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    definition = models.JSONField()
    in_flight_policy = models.CharField(max_length=10, choices=InFlightPolicy.choices, default=InFlightPolicy.KEEP)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")  # fmt: skip
    created_at = models.DateTimeField(default=timezone.now)

    objects: ClassVar[TenantManager[PlaybookVersion]]

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "playbook", "number"], name="playbookversion_number_unique")
        ]

    def __str__(self) -> str:
        return f"{self.playbook_id} v{self.number}"


class EnrollmentGroup(models.TextChoices):
    TREATMENT = "treatment", "Treatment"
    CONTROL = "control", "Control (holdout)"


class EnrollmentStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    GOAL_REACHED = "goal_reached", "Goal reached"
    TIMED_OUT = "timed_out", "Timed out"
    EXITED = "exited", "Exited"


class Enrollment(TenantScopedModel):
    """One entity's pass through a playbook. At most one active per (playbook, entity): a partial unique index,
    never check-then-insert; `sequence` numbers re-entries."""

    playbook = models.ForeignKey(Playbook, on_delete=models.CASCADE, related_name="enrollments")
    version = models.ForeignKey(PlaybookVersion, on_delete=models.PROTECT, related_name="enrollments")
    entity_id = models.BigIntegerField(help_text="Account or end user id (the playbook's object).")
    sequence = models.PositiveIntegerField(default=1)
    group = models.CharField(max_length=10, choices=EnrollmentGroup.choices)
    status = models.CharField(max_length=20, choices=EnrollmentStatus.choices, default=EnrollmentStatus.ACTIVE)
    entered_at = models.DateTimeField()
    deadline_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    exit_reason = models.CharField(max_length=200, blank=True, default="")

    objects: ClassVar[TenantManager[Enrollment]]

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "playbook", "entity_id"], condition=Q(status="active"), name="enrollment_one_active"
            ),
            models.UniqueConstraint(fields=["tenant", "playbook", "entity_id", "sequence"], name="enrollment_sequence"),
        ]
        indexes = [
            models.Index(fields=["tenant", "deadline_at"], condition=Q(status="active"), name="enrollment_due"),
            models.Index(fields=["tenant", "playbook", "status"], name="enrollment_playbook_status"),
        ]

    def __str__(self) -> str:
        return f"{self.playbook_id}:{self.entity_id}#{self.sequence} {self.status}"


class ActionPhase(models.TextChoices):
    MAIN = "main", "Main actions"
    GOAL = "goal", "Goal reached"
    TIMEOUT = "timeout", "Goal not reached"


class RunStatus(models.TextChoices):
    WAITING = "waiting", "Waiting for the action it targets the users of"
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed (will retry)"
    DEAD = "dead", "Dead (gave up)"
    SUPPRESSED = "suppressed", "Suppressed (holdout)"
    SKIPPED = "skipped", "Skipped"


DUE_STATUSES = (RunStatus.PENDING, RunStatus.FAILED)


class ActionRun(TenantScopedModel):
    """The outbox: one row per action per enrollment, phase and target user. The idempotency key is unique,
    so an action is queued at most once however often evaluation runs."""

    enrollment = models.ForeignKey(Enrollment, on_delete=models.CASCADE, related_name="runs")
    playbook = models.ForeignKey(Playbook, on_delete=models.CASCADE, related_name="runs")
    phase = models.CharField(max_length=10, choices=ActionPhase.choices)
    action_id = models.CharField(max_length=100)
    action_type = models.CharField(max_length=100)
    end_user_id = models.BigIntegerField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=255)
    depends_on = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="dependents")
    status = models.CharField(max_length=12, choices=RunStatus.choices, default=RunStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    request = models.JSONField(default=dict, blank=True)
    response = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    objects: ClassVar[TenantManager[ActionRun]]

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "idempotency_key"], name="actionrun_idempotency_key"),
        ]
        indexes = [
            models.Index(fields=["tenant", "next_attempt_at"], condition=Q(status__in=["pending", "failed"]),
                         name="actionrun_due"),
            models.Index(fields=["tenant", "lease_until"], condition=Q(status="sending"), name="actionrun_leased"),
            models.Index(fields=["tenant", "playbook", "status"], name="actionrun_playbook_status"),
            models.Index(fields=["tenant", "enrollment", "phase"], name="actionrun_enrollment_phase"),
        ]  # fmt: skip

    def __str__(self) -> str:
        return f"{self.idempotency_key} {self.status}"


def idempotency_key(enrollment_id: int, phase: str, action_id: str, end_user_id: int | None) -> str:
    return f"{enrollment_id}:{phase}:{action_id}:{end_user_id if end_user_id is not None else '-'}"
