from __future__ import annotations

from rest_framework import serializers

from signals.models import Event


class EventOutputSerializer(serializers.ModelSerializer[Event]):
    id = serializers.SerializerMethodField()
    user = serializers.SerializerMethodField()
    account = serializers.SerializerMethodField()

    class Meta:
        model = Event
        fields = [
            "id",
            "name",
            "user",
            "account",
            "device_id",
            "properties",
            "occurred_at",
            "received_at",
            "message_id",
        ]

    def get_id(self, event: Event) -> str:
        return str(event.pk)

    def get_user(self, event: Event) -> str | None:
        return str(event.end_user_id) if event.end_user_id else None

    def get_account(self, event: Event) -> str | None:
        return str(event.account_id) if event.account_id else None
