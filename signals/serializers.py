from __future__ import annotations

from typing import Any

from rest_framework import serializers

from accounts.models import PropertyDefinition, PropertyType
from signals.models import Event, Signal, SignalEntity, SignalKind
from signals.signal_features import MAX_WINDOW_DAYS


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


SIGNAL_FIELDS = ["id", "key", "name", "description", "entity_type", "kind", "event", "window_days", "property",
                 "equals", "numerator", "denominator", "weights", "created_at", "updated_at"]  # fmt: skip
WEIGHT_KINDS = {"account": ("conversion", "churn"), "user": ("health",)}
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    SignalKind.EVENT_COUNT: ("event", "window_days"),
    SignalKind.PROPERTY: ("property", "equals"),
    SignalKind.RATIO: ("numerator", "denominator"),
}
NUMERIC_TYPES = {PropertyType.NUMBER, PropertyType.BOOLEAN}


class SignalSerializer(serializers.ModelSerializer[Signal]):
    """A signal definition; the fields a kind does not use must be left empty (they are reported if not)."""

    id = serializers.SerializerMethodField()
    key = serializers.RegexField(
        r"^[a-z0-9][a-z0-9_]{0,63}$",
        error_messages={"invalid": "key is 1-64 lower-case letters, digits and underscores, starting with a letter "
                                   "or digit."},
        help_text="Stable identifier (the feature is signal:<key>); cannot change once created.",
    )  # fmt: skip
    window_days = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_WINDOW_DAYS)
    equals = serializers.JSONField(
        required=False, allow_null=True, help_text="property signals: 1 when the property has this value, else 0."
    )
    weights = serializers.DictField(
        child=serializers.FloatField(min_value=-1, max_value=1),
        required=False,
        help_text='Weight in the rule-based score per kind, -1..1: {"conversion": 0.3} (account signals: '
        "conversion, churn; user signals: health).",
    )

    class Meta:
        model = Signal
        fields = SIGNAL_FIELDS
        read_only_fields = ["id", "created_at", "updated_at"]
        validators: list[Any] = []  # the unique key is per tenant: checked by the save (tenant door), not DRF

    def get_id(self, obj: Signal) -> str:
        return str(obj.pk)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        instance: Signal | None = self.instance
        merged = {field: getattr(instance, field) for field in SIGNAL_FIELDS if instance is not None}
        merged.update(attrs)
        errors: dict[str, str] = {}
        if instance is not None and "key" in attrs and attrs["key"] != instance.key:
            errors["key"] = "key cannot change (trained models and playbooks refer to it); create a new signal."
        kind = merged.get("kind")
        entity_type = merged.get("entity_type") or SignalEntity.ACCOUNT
        used = KIND_FIELDS.get(str(kind), ())
        for other_kind, fields in KIND_FIELDS.items():
            for field in fields:
                if other_kind != kind and field not in used and merged.get(field) not in (None, ""):
                    errors[field] = f"{field} is not used by {kind} signals; leave it empty."
        tenant = self.context["tenant"]
        if kind == SignalKind.EVENT_COUNT:
            if not str(merged.get("event") or "").strip():
                errors["event"] = "event_count signals name the event to count."
            if merged.get("window_days") is None:
                errors["window_days"] = f"event_count signals count over a window of 1 to {MAX_WINDOW_DAYS} days."
        elif kind == SignalKind.PROPERTY:
            self._property(tenant, entity_type, "property", merged, errors, numeric=merged.get("equals") is None)
            if isinstance(merged.get("equals"), dict | list):
                errors["equals"] = "equals is one text, number or boolean value."
        elif kind == SignalKind.RATIO:
            self._property(tenant, entity_type, "numerator", merged, errors, numeric=True)
            self._property(tenant, entity_type, "denominator", merged, errors, numeric=True)
            if merged.get("numerator") and merged.get("numerator") == merged.get("denominator"):
                errors["denominator"] = "a ratio of a property to itself is always 1."
        allowed = WEIGHT_KINDS[entity_type]
        for weight_kind in merged.get("weights") or {}:
            if weight_kind not in allowed:
                errors["weights"] = f"{entity_type} signals weigh in {' and '.join(allowed)} scores, not {weight_kind}."
        if errors:
            raise serializers.ValidationError(errors)
        return attrs

    @staticmethod
    def _property(tenant: Any, entity_type: str, field: str, merged: dict[str, Any], errors: dict[str, str], *,
                  numeric: bool) -> None:  # fmt: skip
        key = str(merged.get(field) or "").strip()
        if not key:
            errors[field] = f"name the {entity_type} property ({field})."
            return
        if key == "stage":
            errors[field] = "the stage is what scores predict; it cannot be a signal."
            return
        known = (
            PropertyDefinition.objects.for_tenant(tenant)
            .filter(entity_type=entity_type, key=key)
            .values_list("type", flat=True)
            .first()
        )
        if numeric and known is not None and known not in NUMERIC_TYPES:
            errors[field] = f"{key!r} is a {known} property; use a number or boolean property (or set equals)."
