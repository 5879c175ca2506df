from __future__ import annotations

from typing import Any

from rest_framework import serializers

from playbooks.models import ActionRun, Enrollment, InFlightPolicy, Playbook, PlaybookVersion


class _Id(serializers.Serializer[Any]):
    id = serializers.SerializerMethodField()

    def get_id(self, obj: Any) -> str:
        return str(obj.pk)


class PlaybookOutputSerializer(_Id, serializers.ModelSerializer[Playbook]):
    version = serializers.SerializerMethodField()
    definition = serializers.SerializerMethodField()

    class Meta:
        model = Playbook
        fields = ["id", "name", "object", "status", "version", "definition", "created_at", "updated_at",
                  "activated_at"]  # fmt: skip

    def get_version(self, obj: Playbook) -> int | None:
        return obj.current_version.number if obj.current_version is not None else None

    def get_definition(self, obj: Playbook) -> dict[str, Any] | None:
        return obj.current_version.definition if obj.current_version is not None else None


class PlaybookCreateInputSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=200)
    definition = serializers.JSONField()


class PlaybookPublishInputSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=200, required=False)
    definition = serializers.JSONField()
    in_flight_policy = serializers.ChoiceField(choices=InFlightPolicy.choices, default=InFlightPolicy.KEEP)


class PreviewInputSerializer(serializers.Serializer[Any]):
    entry = serializers.JSONField(required=False, help_text="A condition to preview instead of the saved entry.")
    sample = serializers.IntegerField(required=False, min_value=0, max_value=100, default=10)


class VersionOutputSerializer(_Id, serializers.ModelSerializer[PlaybookVersion]):
    class Meta:
        model = PlaybookVersion
        fields = ["id", "number", "definition", "in_flight_policy", "created_at"]


class EnrollmentOutputSerializer(_Id, serializers.ModelSerializer[Enrollment]):
    entity_id = serializers.SerializerMethodField()
    version = serializers.IntegerField(source="version.number")

    class Meta:
        model = Enrollment
        fields = ["id", "entity_id", "sequence", "version", "group", "status", "entered_at", "deadline_at",
                  "ended_at", "exit_reason"]  # fmt: skip

    def get_entity_id(self, obj: Enrollment) -> str:
        return str(obj.entity_id)


class ActionRunOutputSerializer(_Id, serializers.ModelSerializer[ActionRun]):
    enrollment_id = serializers.SerializerMethodField()
    user_id = serializers.SerializerMethodField()

    class Meta:
        model = ActionRun
        fields = ["id", "enrollment_id", "phase", "action_id", "action_type", "user_id", "status", "attempts",
                  "next_attempt_at", "request", "response", "error", "created_at", "updated_at",
                  "completed_at"]  # fmt: skip

    def get_enrollment_id(self, obj: ActionRun) -> str:
        return str(obj.enrollment_id)

    def get_user_id(self, obj: ActionRun) -> str | None:
        return str(obj.end_user_id) if obj.end_user_id is not None else None
