"""A tenant's scoring settings: defaults, validation, merge. Pure (no Django), JSON in and out.

Shape (DESIGN §7, extended with milestones, size segments and champion weights):

    {"stages": {"trial": [...], "paying": [...], "churned": [...]},
     "key_events": [...],                      # empty = automatic: the tenant's most frequent events
     "excluded_properties": [...],             # property keys that must never be features
     "models": {"conversion": {"horizon_days": 30}, "churn": {"horizon_days": 30},
                "health": {"horizon_days": 14, "activity_events": []}},
     "milestones": [{"name", "event"?, "metric"?, "count", "within_hours"?}],
     "size_segments": {"property": "employees", "segments": [{"name", "max", "activation_threshold"}]},
     "champion": {"role_weights": {"owner": 1.0, ...}, "weights": {"share": .5, "role": .25, "health": .25}}}
"""

from __future__ import annotations

import copy
from typing import Any

MAX_HORIZON_DAYS = 365
MILESTONE_METRICS = ("event", "seats", "active_days", "key_events")

DEFAULTS: dict[str, Any] = {
    "stages": {
        "trial": ["Trial"],
        "paying": ["Customer", "Standard", "Pro", "Enterprise"],
        "churned": ["Churned"],
    },
    "key_events": [],
    "excluded_properties": [],
    "models": {
        "conversion": {"horizon_days": 30},
        "churn": {"horizon_days": 30},
        "health": {"horizon_days": 14, "activity_events": []},
    },
    # Generic milestones that need no event names; a tenant names its own (e.g. teammate_invited x3 in 72 h).
    "milestones": [
        {"name": "3 or more teammates", "metric": "seats", "count": 3},
        {
            "name": "Active on 3 or more days in the first 2 weeks",
            "metric": "active_days",
            "count": 3,
            "within_hours": 336,
        },
        {
            "name": "10 or more key events in the first 2 weeks",
            "metric": "key_events",
            "count": 10,
            "within_hours": 336,
        },
    ],
    # Seed guidance for product-qualified accounts: activation needed per company size.
    "size_segments": {
        "property": "employees",
        "segments": [
            {"name": "small", "max": 50, "activation_threshold": 0.75},
            {"name": "mid", "max": 500, "activation_threshold": 0.7},
            {"name": "large", "max": None, "activation_threshold": 0.4},
        ],
    },
    "champion": {
        "role_weights": {"owner": 1.0, "admin": 0.8, "billing": 0.6, "member": 0.4, "viewer": 0.2, "guest": 0.1},
        "weights": {"share": 0.5, "role": 0.25, "health": 0.25},
    },
}


class ConfigInvalid(ValueError):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


def defaults() -> dict[str, Any]:
    return copy.deepcopy(DEFAULTS)


def merged(stored: dict[str, Any] | None) -> dict[str, Any]:
    """The effective settings: stored values over the defaults, section by section."""
    result = defaults()
    for key, value in (stored or {}).items():
        if key == "models" and isinstance(value, dict):
            for kind, settings in value.items():
                if isinstance(settings, dict):
                    result["models"].setdefault(kind, {}).update(settings)
                else:  # not an object: kept as sent, so validation names it
                    result["models"][kind] = settings
        elif key in ("stages", "champion", "size_segments") and isinstance(value, dict):
            result[key].update(value)
        else:
            result[key] = value
    return result


def _names(value: Any, path: str, errors: dict[str, str], *, allow_empty: bool = True) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        errors[path] = "must be a list of non-empty strings"
        return []
    if not value and not allow_empty:
        errors[path] = "must name at least one"
    return [item.strip() for item in value]


def _number(value: Any, path: str, errors: dict[str, str], *, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        errors[path] = f"must be a number from {low:g} to {high:g}"
        return low
    return float(value)


def validate(raw: Any) -> dict[str, Any]:
    """Validate a whole settings document (as PUT sends it); returns the effective settings."""
    if not isinstance(raw, dict):
        raise ConfigInvalid({"body": "must be a JSON object"})
    unknown = set(raw) - set(DEFAULTS)
    errors: dict[str, str] = dict.fromkeys(sorted(unknown), "is not a setting")
    settings = merged({key: value for key, value in raw.items() if key not in unknown})

    stages = settings["stages"]
    if not isinstance(stages, dict) or set(stages) != {"trial", "paying", "churned"}:
        errors["stages"] = "must have exactly trial, paying and churned"
    else:
        seen: dict[str, str] = {}  # stage names match case-insensitively (stage_group)
        for group in ("trial", "paying", "churned"):
            for name in _names(stages[group], f"stages.{group}", errors, allow_empty=False):
                if name.lower() in seen and seen[name.lower()] != group:
                    errors[f"stages.{group}"] = f"{name!r} is already a {seen[name.lower()]} stage"
                seen[name.lower()] = group
    _names(settings["key_events"], "key_events", errors)
    _names(settings["excluded_properties"], "excluded_properties", errors)

    models = settings["models"]
    if not isinstance(models, dict):
        errors["models"] = "must be an object"
    else:
        for kind in ("conversion", "churn", "health"):
            section = models.get(kind)
            if not isinstance(section, dict):
                errors[f"models.{kind}"] = "must be an object"
                continue
            path = f"models.{kind}.horizon_days"
            horizon = _number(section.get("horizon_days"), path, errors, low=1, high=MAX_HORIZON_DAYS)
            if path not in errors and not horizon.is_integer():
                errors[path] = f"must be a whole number of days from 1 to {MAX_HORIZON_DAYS}"
            extra = set(section) - {"horizon_days", "activity_events"}
            if extra or ("activity_events" in section and kind != "health"):
                errors[f"models.{kind}"] = "only horizon_days" + (" and activity_events" if kind == "health" else "")
            if kind == "health":
                _names(section.get("activity_events", []), "models.health.activity_events", errors)
        if set(models) - {"conversion", "churn", "health"}:
            errors["models"] = "only conversion, churn and health have settings"

    milestones = settings["milestones"]
    if not isinstance(milestones, list):
        errors["milestones"] = "must be a list"
    else:
        for n, milestone in enumerate(milestones):
            path = f"milestones.{n}"
            if not isinstance(milestone, dict) or not str(milestone.get("name", "")).strip():
                errors[path] = "must be an object with a name"
                continue
            metric = milestone.get("metric", "event")
            if metric not in MILESTONE_METRICS:
                errors[f"{path}.metric"] = f"must be one of {', '.join(MILESTONE_METRICS)}"
            if metric == "event" and not isinstance(milestone.get("event"), str):
                errors[f"{path}.event"] = "names the event to count"
            _number(milestone.get("count"), f"{path}.count", errors, low=1, high=1_000_000)
            if milestone.get("within_hours") is not None:
                _number(milestone["within_hours"], f"{path}.within_hours", errors, low=1, high=24 * MAX_HORIZON_DAYS)

    segments = settings["size_segments"]
    if not isinstance(segments, dict) or not isinstance(segments.get("property"), str):
        errors["size_segments"] = "must name a numeric account property and its segments"
    else:
        items = segments.get("segments")
        if not isinstance(items, list) or not items:
            errors["size_segments.segments"] = "must be a non-empty list"
        else:
            previous = 0.0
            for n, segment in enumerate(items):
                path = f"size_segments.segments.{n}"
                if not isinstance(segment, dict) or not str(segment.get("name", "")).strip():
                    errors[path] = "must be an object with a name"
                    continue
                _number(segment.get("activation_threshold"), f"{path}.activation_threshold", errors, low=0, high=1)
                bound = segment.get("max")
                last = n == len(items) - 1
                if bound is None and not last:
                    errors[f"{path}.max"] = "only the last segment may be open-ended"
                elif bound is not None:
                    value = _number(bound, f"{path}.max", errors, low=0, high=1e12)
                    if value <= previous and n:
                        errors[f"{path}.max"] = "segments must be in increasing size"
                    previous = value

    champion = settings["champion"]
    weights = champion.get("weights") if isinstance(champion, dict) else None
    if not isinstance(weights, dict) or set(weights) != {"share", "role", "health"}:
        errors["champion.weights"] = "must have share, role and health"
    else:
        for key, value in weights.items():
            _number(value, f"champion.weights.{key}", errors, low=0, high=1)
    role_weights = champion.get("role_weights") if isinstance(champion, dict) else None
    if not isinstance(role_weights, dict):
        errors["champion.role_weights"] = "must map role names to weights from 0 to 1"
    else:
        for key, value in role_weights.items():
            _number(value, f"champion.role_weights.{key}", errors, low=0, high=1)
        champion["role_weights"] = {str(k).strip().lower(): v for k, v in role_weights.items()}
    if errors:
        raise ConfigInvalid(errors)
    return settings


def stage_group(settings: dict[str, Any], stage: str | None) -> str | None:
    """ "trial", "paying", "churned" or None for a stage name (case-insensitive)."""
    if stage is None:
        return None
    wanted = stage.strip().lower()
    for group, names in settings["stages"].items():
        if any(name.lower() == wanted for name in names):
            return str(group)
    return None
