from __future__ import annotations

from typing import Any

from django.db.models.manager import BaseManager
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import Account, EndUser, Membership, PropertyDefinition
from accounts.scores_hook import scores_for


class _IdMixin(serializers.Serializer[Any]):
    id = serializers.SerializerMethodField()

    def get_id(self, obj: Any) -> str:
        return str(obj.pk)


class UserBriefSerializer(_IdMixin, serializers.ModelSerializer[EndUser]):
    class Meta:
        model = EndUser
        fields = ["id", "external_id", "email"]


class AccountBriefSerializer(_IdMixin, serializers.ModelSerializer[Account]):
    class Meta:
        model = Account
        fields = ["id", "external_id", "name"]


class ReasonSerializer(serializers.Serializer[Any]):
    """One reason of a score (DESIGN §7); describes the API, reasons are rendered as stored."""

    feature = serializers.CharField()
    text = serializers.CharField(help_text='For people, against peers: "report_built: 42 in 30 days — 4.1x …".')
    direction = serializers.ChoiceField(choices=[("+", "raises the score"), ("-", "lowers the score")])
    weight = serializers.FloatField(help_text="How much it moved the score.")


class ScoreSerializer(serializers.Serializer[Any]):
    """SCORE of DESIGN §7: the shape of each value of `scores` (describes the API; scores are rendered as stored)."""

    value = serializers.FloatField(help_text="Probability from 0 to 1.")
    percentile = serializers.IntegerField(min_value=1, max_value=100, help_text="Within the tenant, same kind.")
    grade = serializers.IntegerField(min_value=1, max_value=5, help_text="Quintile of the percentile.")
    reasons = ReasonSerializer(many=True)
    model_version = serializers.IntegerField(allow_null=True, help_text="The model version; null when none scored it.")
    rule_based = serializers.BooleanField(help_text="A transparent rule-based score (no model with enough labels).")
    computed_at = serializers.DateTimeField()
    details = serializers.DictField(
        required=False, help_text="Account kinds: activation, milestones, size segment, product_qualified."
    )


class _ScoresListSerializer(serializers.ListSerializer[Any]):
    """A list of scored rows (a page, or an account's memberships): the scores of all its rows in one query."""

    def to_representation(self, data: Any) -> list[Any]:
        rows = list(data.all() if isinstance(data, BaseManager) else data)
        child: Any = self.child
        ids = [row.pk for row in rows if row.pk not in child.score_cache()]
        if ids:
            found = scores_for(rows[0].tenant_id, child.score_entity_type, ids)
            child.score_cache().update({pk: found.get(pk, {}) for pk in ids})
        return [child.to_representation(row) for row in rows]


class _Scores(serializers.Serializer[Any]):
    """`scores`: {kind: SCORE}, fetched once per list (a page or a nested list), not once per row: every Meta
    of a subclass names `list_serializer_class = _ScoresListSerializer`."""

    scores = serializers.SerializerMethodField(help_text="Current scores by kind: {kind: SCORE} (DESIGN §7).")
    score_entity_type: str = ""

    def score_cache(self) -> dict[int, dict[str, Any]]:
        context: dict[str, Any] = self.context  # type: ignore[assignment]  # DRF's context is a plain dict
        cache: dict[int, dict[str, Any]] = context.setdefault("_scores", {}).setdefault(self.score_entity_type, {})
        return cache

    @extend_schema_field(serializers.DictField(child=ScoreSerializer()))
    def get_scores(self, obj: Any) -> dict[str, Any]:
        cache = self.score_cache()
        if obj.pk not in cache:  # a single object (a detail)
            cache[obj.pk] = scores_for(obj.tenant_id, self.score_entity_type, [obj.pk]).get(obj.pk, {})
        return cache[obj.pk]


class AccountMembershipSerializer(_Scores, serializers.ModelSerializer[Membership]):
    score_entity_type = "membership"
    user = UserBriefSerializer(source="end_user", read_only=True)

    class Meta:
        model = Membership
        fields = ["user", "properties", "joined_at", "left_at", "scores"]
        list_serializer_class = _ScoresListSerializer


class UserMembershipSerializer(_Scores, serializers.ModelSerializer[Membership]):
    score_entity_type = "membership"
    account = AccountBriefSerializer(read_only=True)

    class Meta:
        model = Membership
        fields = ["account", "properties", "joined_at", "left_at", "scores"]
        list_serializer_class = _ScoresListSerializer


class AccountOutputSerializer(_IdMixin, _Scores, serializers.ModelSerializer[Account]):
    score_entity_type = "account"

    class Meta:
        model = Account
        fields = ["id", "external_id", "domain", "name", "stage", "stage_changed_at", "properties", "created_at",
                  "updated_at", "scores"]  # fmt: skip
        list_serializer_class = _ScoresListSerializer


class AccountDetailOutputSerializer(AccountOutputSerializer):
    memberships = AccountMembershipSerializer(many=True, read_only=True)
    enrollments = serializers.SerializerMethodField(help_text="Playbook enrollments (filled by playbooks).")

    class Meta(AccountOutputSerializer.Meta):
        fields = [*AccountOutputSerializer.Meta.fields, "memberships", "enrollments"]

    def get_enrollments(self, obj: Account) -> list[Any]:
        return []


class UserOutputSerializer(_IdMixin, _Scores, serializers.ModelSerializer[EndUser]):
    score_entity_type = "user"

    class Meta:
        model = EndUser
        fields = ["id", "external_id", "email", "stage", "stage_changed_at", "properties", "first_seen_at",
                  "last_seen_at", "created_at", "scores"]  # fmt: skip
        list_serializer_class = _ScoresListSerializer


class UserDetailOutputSerializer(UserOutputSerializer):
    memberships = UserMembershipSerializer(many=True, read_only=True)

    class Meta(UserOutputSerializer.Meta):
        fields = [*UserOutputSerializer.Meta.fields, "memberships"]


class PropertyDefinitionOutputSerializer(serializers.ModelSerializer[PropertyDefinition]):
    class Meta:
        model = PropertyDefinition
        fields = ["entity_type", "key", "type", "first_seen_at"]
