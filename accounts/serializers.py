from __future__ import annotations

from typing import Any

from rest_framework import serializers

from accounts.models import Account, EndUser, Membership, PropertyDefinition


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
    scores = serializers.SerializerMethodField(help_text="Current scores by kind (filled by scoring).")

    def get_scores(self, obj: Any) -> dict[str, Any]:
        return {}


class AccountMembershipSerializer(_Scores, serializers.ModelSerializer[Membership]):
    user = UserBriefSerializer(source="end_user", read_only=True)

    class Meta:
        model = Membership
        fields = ["user", "properties", "joined_at", "left_at", "scores"]


class UserMembershipSerializer(_Scores, serializers.ModelSerializer[Membership]):
    account = AccountBriefSerializer(read_only=True)

    class Meta:
        model = Membership
        fields = ["account", "properties", "joined_at", "left_at", "scores"]


class AccountOutputSerializer(_IdMixin, _Scores, serializers.ModelSerializer[Account]):
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
