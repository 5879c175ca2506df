"""Score models per tenant (DESIGN §10): configuration, model versions with metrics, current scores, history."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from django.db import models
from django.db.models import Q
from django.utils import timezone

from plgapp.models import Tenant, TenantManager, TenantScopedModel


class ScoreKind(models.TextChoices):
    CONVERSION = "conversion", "Conversion"
    CHURN = "churn", "Churn"
    HEALTH = "health", "Health"
    CHAMPION = "champion", "Champion"


GRADE_LETTERS = {5: "A", 4: "B", 3: "C", 2: "D", 1: "E"}  # grade 5: the top fifth


class ScoredEntity(models.TextChoices):
    ACCOUNT = "account", "Account"
    USER = "user", "User"
    MEMBERSHIP = "membership", "Membership"


ENTITY_OF_KIND = {
    ScoreKind.CONVERSION: ScoredEntity.ACCOUNT,
    ScoreKind.CHURN: ScoredEntity.ACCOUNT,
    ScoreKind.HEALTH: ScoredEntity.USER,
    ScoreKind.CHAMPION: ScoredEntity.MEMBERSHIP,
}


class ScoringSettings(TenantScopedModel):
    """The tenant's scoring settings (stages, key events, horizons…); defaults fill what is not set."""

    settings = models.JSONField(default=dict)
    updated_at = models.DateTimeField(default=timezone.now)

    objects: ClassVar[TenantManager[ScoringSettings]]

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant"], name="scoringsettings_tenant")]

    def __str__(self) -> str:
        return f"scoring config of tenant {self.tenant_id}"


class ModelStatus(models.TextChoices):
    TRAINING = "training", "Training"
    ACTIVE = "active", "Active"
    REJECTED = "rejected", "Rejected"  # trained, but not better than the rule baseline (or too few labels)
    FAILED = "failed", "Failed"
    RETIRED = "retired", "Retired"  # was active, replaced by a newer version


class ModelVersion(TenantScopedModel):
    """One trained (or attempted) model of a kind, with its evaluation; at most one active per kind."""

    kind = models.CharField(max_length=20, choices=ScoreKind.choices)
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=ModelStatus.choices, default=ModelStatus.TRAINING)
    algorithm = models.CharField(max_length=60, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    trained_at = models.DateTimeField(null=True, blank=True)
    scored_at = models.DateTimeField(null=True, blank=True)
    metrics = models.JSONField(default=dict)
    report = models.JSONField(default=dict, help_text="Calibration curve, feature importances, snapshots, notes.")
    artifact = models.BinaryField(null=True, blank=True, editable=False)
    error = models.TextField(blank=True, default="")

    objects: ClassVar[TenantManager[ModelVersion]]

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "kind", "version"], name="modelversion_kind_version"),
            models.UniqueConstraint(
                fields=["tenant", "kind"], condition=Q(status="active"), name="modelversion_one_active"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} v{self.version} ({self.status})"


class Score(TenantScopedModel):
    """The current score of one entity for one kind (probability, percentile, grade, reasons)."""

    kind = models.CharField(max_length=20, choices=ScoreKind.choices)
    entity_type = models.CharField(max_length=20, choices=ScoredEntity.choices)
    entity_id = models.BigIntegerField()
    value = models.FloatField()
    percentile = models.PositiveSmallIntegerField()
    grade = models.PositiveSmallIntegerField()
    reasons = models.JSONField(default=list)
    model_version = models.PositiveIntegerField(null=True, blank=True)
    rule_based = models.BooleanField(default=False)
    computed_at = models.DateTimeField()
    # Account kinds: {"activation", "milestones": [{"name", "reached"}], "size_segment", "activation_threshold",
    # "product_qualified"} — what a sales rep checks beside the probability (PQA = activation at the threshold
    # of the account's size segment).
    details = models.JSONField(default=dict, blank=True)
    # The value and grade of the entity's latest ScoreHistory row of this kind (NULL: none yet). A rescore records
    # a new row when the score has moved HISTORY_MIN_CHANGE from it or changed grade, so a slow drift is recorded
    # once it adds up, not lost between rescores that each move less.
    history_value = models.FloatField(null=True, blank=True, editable=False)
    history_grade = models.PositiveSmallIntegerField(null=True, blank=True, editable=False)

    objects: ClassVar[TenantManager[Score]]

    # The table is filled to half at most (fillfactor 50, migration 0009; Django has no Meta option for it): each
    # rescore rewrites every score, and a new version that fits on its old one's page and keeps its value is a HOT
    # update, touching none of the indexes (ADR 0026).
    class Meta:
        constraints = [
            # Entity first, kind last: the same index finds one score and every score of an entity (its page),
            # so the busiest write of scoring keeps one index fewer.
            models.UniqueConstraint(fields=["tenant", "entity_type", "entity_id", "kind"], name="score_entity"),
        ]
        indexes = [
            # Scores by value, per kind: percentile counts (an index-only scan of the kind's values), ranges.
            # Conversion's values have the index below instead: an upsert of a score pays for every index holding
            # its value, inserted at a random place (an update that moves the value is never HOT), and one value
            # index fewer took a third off a full rescore's conversion upsert (ADR 0024).
            models.Index(fields=["tenant", "kind", "value"], condition=~Q(kind="conversion"), name="score_kind_value"),
            # Conversion scores by value: the PQA list's order (scoring/pqls.py), accounts by conversion walked from a
            # keyset position and stopped after one page, and conversion's percentile counts. Only kind in the
            # condition (conversion scores accounts alone), so a query naming the kind alone can use it too.
            models.Index(
                fields=["tenant", "value", "entity_id"], condition=Q(kind="conversion"), name="score_conversion_value"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.entity_type} {self.entity_id}: {self.value:.2f}"

    def as_dict(self) -> dict[str, Any]:
        return score_dict(
            value=self.value, percentile=self.percentile, grade=self.grade, reasons=self.reasons,
            model_version=self.model_version, rule_based=self.rule_based, computed_at=self.computed_at,
            details=self.details,
        )  # fmt: skip


def score_dict(*, value: float, percentile: int, grade: int, reasons: list[Any], model_version: int | None,
               rule_based: bool, computed_at: datetime | str, details: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """SCORE as the API shows it (DESIGN §7), from a Score or from the same columns read by plain SQL (which may
    hand over `computed_at` already written, scoring.pqls._iso_utc)."""
    return {
        "value": round(value, 4),
        "percentile": percentile,
        "grade": grade,
        "reasons": reasons,
        "model_version": model_version,
        "rule_based": rule_based,
        "computed_at": computed_at if isinstance(computed_at, str) else computed_at.isoformat().replace("+00:00", "Z"),
        **({"details": details} if details else {}),
    }


class ScoreHistory(TenantScopedModel):
    """Score values over time for charts: a row when a score is first computed, or has moved HISTORY_MIN_CHANGE
    from its latest row, or changed grade (a chart carries each value on until the next row: ADR 0026)."""

    # No database-side foreign key to the tenant (as signals_event's, ADR 0005): a full rescore appends a row per
    # score, and each row's deferred check at commit cost ~0.2 s of a 62,000-score write (ADR 0023). The tenant
    # door and row-level security bind tenant_id to the current tenant; Django's cascade deletes a tenant's history.
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="+", editable=False, db_constraint=False, db_index=False
    )
    kind = models.CharField(max_length=20, choices=ScoreKind.choices)
    entity_type = models.CharField(max_length=20, choices=ScoredEntity.choices)
    entity_id = models.BigIntegerField()
    value = models.FloatField()
    grade = models.PositiveSmallIntegerField()
    model_version = models.PositiveIntegerField(null=True, blank=True)
    computed_at = models.DateTimeField()

    objects: ClassVar[TenantManager[ScoreHistory]]

    class Meta:
        indexes = [
            models.Index(
                fields=["tenant", "entity_type", "entity_id", "kind", "computed_at"], name="scorehistory_entity"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.entity_type} {self.entity_id} @ {self.computed_at:%Y-%m-%d}: {self.value:.2f}"


class LeadOutcome(models.TextChoices):
    DONE = "done", "Done"  # worked: contacted, meeting booked …
    DISQUALIFIED = "disqualified", "Disqualified"  # not a fit: student, competitor, duplicate …


class LeadDisposition(TenantScopedModel):
    """A sales rep's quick action on a PQA: the account leaves the PQL list until `hidden_until` (a cooldown),
    then comes back if it still qualifies. The newest row per account is the one that counts."""

    id = models.BigAutoField(primary_key=True)
    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    outcome = models.CharField(max_length=20, choices=LeadOutcome.choices)
    reason = models.CharField(max_length=500, blank=True, default="")
    hidden_until = models.DateTimeField()
    created_by = models.ForeignKey("plgapp.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    objects: ClassVar[TenantManager[LeadDisposition]]

    class Meta:
        indexes = [models.Index(fields=["tenant", "account", "hidden_until"], name="leaddisposition_account")]

    def __str__(self) -> str:
        return f"{self.outcome} {self.account_id} until {self.hidden_until:%Y-%m-%d}"
