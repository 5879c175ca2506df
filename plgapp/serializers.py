from __future__ import annotations

from typing import Any

from rest_framework import serializers

from plgapp.models import KEY_KIND_CHOICES, ApiKey, Tenant


class TenantOutputSerializer(serializers.ModelSerializer[Tenant]):
    class Meta:
        model = Tenant
        fields = ["slug", "name", "created_at"]


class ApiKeyOutputSerializer(serializers.ModelSerializer[ApiKey]):
    id = serializers.CharField(read_only=True)
    created_by = serializers.SerializerMethodField()
    is_active = serializers.BooleanField(read_only=True)

    class Meta:
        model = ApiKey
        fields = ["id", "name", "kind", "prefix", "is_active", "created_at", "created_by", "last_used_at", "revoked_at"]

    def get_created_by(self, api_key: ApiKey) -> str | None:
        return api_key.created_by.email if api_key.created_by else None


class ApiKeyCreatedOutputSerializer(ApiKeyOutputSerializer):
    key = serializers.CharField(read_only=True, help_text="The key itself. Shown once: it is not stored.")

    class Meta(ApiKeyOutputSerializer.Meta):
        fields = [*ApiKeyOutputSerializer.Meta.fields, "key"]


class ApiKeyCreateInputSerializer(serializers.Serializer[None]):
    name = serializers.CharField(max_length=100, trim_whitespace=True)
    kind = serializers.ChoiceField(choices=KEY_KIND_CHOICES)


class ErrorDetailSerializer(serializers.Serializer[Any]):
    code = serializers.CharField()
    message = serializers.CharField()
    # The metaclass moves declared fields off the class, so this does not shadow Serializer.fields at run time.
    fields = serializers.DictField(  # type: ignore[assignment]
        required=False, help_text="Invalid input: a message per field (dotted paths)."
    )


class ErrorOutputSerializer(serializers.Serializer[Any]):
    """The error envelope of the management API (DESIGN §7), described for the OpenAPI schema."""

    error = ErrorDetailSerializer()
