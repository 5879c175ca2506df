from __future__ import annotations

from typing import Any

from rest_framework import serializers

from integrations.models import Connection, ConnectionMode, Provider, SandboxCall
from integrations.services import credential_hints


class ConnectionCreateInputSerializer(serializers.Serializer[Any]):
    provider = serializers.ChoiceField(choices=Provider.choices)
    name = serializers.CharField(max_length=100)
    mode = serializers.ChoiceField(choices=ConnectionMode.choices, default=ConnectionMode.LIVE)
    credentials = serializers.DictField(required=False, default=dict, help_text="Never returned.")
    settings = serializers.DictField(required=False, default=dict)


class ConnectionOutputSerializer(serializers.ModelSerializer[Connection]):
    credentials = serializers.SerializerMethodField(help_text="Each key with the last characters of its value.")

    class Meta:
        model = Connection
        fields = ["id", "provider", "name", "mode", "status", "last_error", "last_checked_at", "account_name",
                  "settings", "credentials", "created_at"]  # fmt: skip

    def get_credentials(self, connection: Connection) -> dict[str, str]:
        return credential_hints(connection)


class SandboxCallOutputSerializer(serializers.ModelSerializer[SandboxCall]):
    class Meta:
        model = SandboxCall
        fields = ["id", "connection", "operation", "request", "run_id", "created_at"]
