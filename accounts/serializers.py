from __future__ import annotations

from typing import Any

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


class _Scores(serializers.Serializer[Any]):
    """`scores`: {kind: SCORE}, fetched once per page (the whole list the serializer renders), not per row."""

    scores = serializers.SerializerMethodField(help_text="Current scores by kind: {kind: SCORE} (DESIGN §7).")
    score_entity_type: str = ""

    def get_scores(self, obj: Any) -> dict[str, Any]:
        context: dict[str, Any] = self.context  # type: ignore[assignment]  # DRF's context is a plain dict
        cache: dict[str, dict[int, dict[str, Any]]] = context.setdefault("_scores", {})
        if self.score_entity_type not in cache:
            siblings = getattr(self.parent, "instance", None) if self.parent is not None else None
            rows = list(siblings) if isinstance(siblings, list | tuple) else [obj]
            ids = [row.pk for row in rows if hasattr(row, "pk")] or [obj.pk]
            found = scores_for(obj.tenant_id, self.score_entity_type, ids)
            cache[self.score_entity_type] = {pk: found.get(pk, {}) for pk in ids}
        scores = cache[self.score_entity_type].get(obj.pk)
        if scores is None:  # not on the page fetched (e.g. a nested list): fetch this one
            scores = scores_for(obj.tenant_id, self.score_entity_type, [obj.pk]).get(obj.pk, {})
        return scores


class AccountMembershipSerializer(_Scores, serializers.ModelSerializer[Membership]):
    score_entity_type = "membership"
    user = UserBriefSerializer(source="end_user", read_only=True)

    class Meta:
        model = Membership
        fields = ["user", "properties", "joined_at", "left_at", "scores"]


class UserMembershipSerializer(_Scores, serializers.ModelSerializer[Membership]):
    score_entity_type = "membership"
    account = AccountBriefSerializer(read_only=True)

    class Meta:
        model = Membership
        fields = ["account", "properties", "joined_at", "left_at", "scores"]


class AccountOutputSerializer(_IdMixin, _Scores, serializers.ModelSerializer[Account]):
    score_entity_type = "account"

    class Meta:
        model = Account
        fields = ["id", "external_id", "domain", "name", "stage", "stage_changed_at", "properties", "created_at",
                  "updated_at", "scores"]  # fmt: skip


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


class UserDetailOutputSerializer(UserOutputSerializer):
    memberships = UserMembershipSerializer(many=True, read_only=True)

    class Meta(UserOutputSerializer.Meta):
        fields = [*UserOutputSerializer.Meta.fields, "memberships"]


class PropertyDefinitionOutputSerializer(serializers.ModelSerializer[PropertyDefinition]):
    class Meta:
        model = PropertyDefinition
        fields = ["entity_type", "key", "type", "first_seen_at"]
