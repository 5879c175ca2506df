"""Reasons for people: turn a feature's value (and how far it moved a score) into a sentence against peers.

    "report_created: 42 in 30 days — 4.1x the median of converted trials"
    "no activity for 12 days"
Pure: no Django.
"""

from __future__ import annotations

import math
from typing import Any

PEERS = {
    "conversion": "converted trials",
    "churn": "accounts that churned",
    "health": "users active in the following weeks",
}
MAX_REASONS_PER_DIRECTION = 3
UNKNOWN = {  # what a missing value means, where it means something
    "active_seat_share": "no teammates yet",
    "role_share": "no teammates yet",
    "activation": "no activation milestones set",
    "quota_ratio": "no usage limit known",
    "quota_days_left": "no usage limit known",
    "key_event_share": "no activity in 30 days",
}
MIN_WEIGHT = 0.005
RATES = {  # per day of observed life (up to 30) and per teammate
    "events_per_day": "{} events a day",
    "events_per_seat_day": "{} events per teammate a day",
    "key_events_per_seat_day": "{} key events per teammate a day",
    "seats_per_week": "{} teammates joined per week",
}


def _number(value: float) -> str:
    if math.isnan(value):
        return "unknown"
    if abs(value - round(value)) < 1e-9:
        return f"{round(value):,}"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}".rstrip("0").rstrip(".")


def _versus(value: float, median: float | None, peers: str) -> str:
    if median is None or math.isnan(median):
        return ""
    if median > 0 and value > 0:
        ratio = value / median
        if 0.9 <= ratio <= 1.1:
            return f" — about the median of {peers}"
        return f" — {ratio:.1f}x the median of {peers}"
    return f" (median of {peers}: {_number(median)})"


def render(name: str, value: float, describe: dict[str, Any], *, median: float | None, peers: str) -> str:
    """One sentence for a feature `name` (a column or a category group) with the entity's `value`."""
    kind = describe.get("kind", "")
    if isinstance(value, float) and not math.isfinite(value) and kind != "property_text":
        return UNKNOWN.get(kind, f"{describe.get('label') or describe.get('property') or name}: unknown")
    if kind == "count":
        event, window = describe["event"], describe["window"]
        if value <= 0:
            return f"no {event} in {window} days" + _versus(0, median, peers)
        return f"{event}: {_number(value)} in {window} days" + _versus(value, median, peers)
    if kind == "days_since_last_active":
        if value >= 3650:
            return "never active"
        if value < 1:
            return "active today"
        if value <= 1:
            return "active yesterday"
        return f"no activity for {_number(value)} days"
    if kind == "active_days_30d":
        return f"active on {_number(value)} of the last 30 days" + _versus(value, median, peers)
    if kind in ("events_30d", "key_events", "events_7d"):
        window = {"events_30d": 30, "events_7d": 7}.get(kind, describe.get("window", 30))
        what = "key events" if kind == "key_events" else "events"
        return f"{_number(value)} {what} in {window} days" + _versus(value, median, peers)
    if kind == "events_prev_30d":
        return f"{_number(value)} events in the 30 days before the last 30"
    if kind == "trend_30d":
        factor = math.exp(min(value, 50.0))
        if factor >= 1.1:
            return f"activity up {factor:.1f}x on the previous 30 days"
        if factor <= 0.9:
            return f"activity down {round((1 - factor) * 100)}% on the previous 30 days"
        return "activity steady over the last 60 days"
    if kind == "seats":
        return f"{_number(value)} teammates" + _versus(value, median, peers)
    if kind == "active_seats_30d":
        return f"{_number(value)} active teammates in 30 days" + _versus(value, median, peers)
    if kind == "active_seat_share":
        return f"{round(value * 100)}% of teammates active in 30 days"
    if kind == "role_share":
        return f"{describe['role']}s are {round(value * 100)}% of the team"
    if kind == "milestone":
        return f"{'reached' if value >= 0.5 else 'not yet'}: {describe['milestone']}"
    if kind == "activation":
        return f"activation {round(value * 100)}%"
    if kind == "age_days":
        return "first active today" if value < 1 else f"first active {_number(value)} days ago"
    if kind in RATES:
        return RATES[kind].format(_number(value)) + _versus(value, median, peers)
    if kind in ("key_event_share", "active_day_share"):
        what = "key events are {}% of the activity" if kind == "key_event_share" else "active on {}% of days"
        return what.format(round(value * 100))
    if kind == "quota_ratio":
        return f"{describe['quota'].strip('_')} at {round(value * 100)}% of its limit"
    if kind == "quota_days_left":
        quota = describe["quota"].strip("_")
        if value >= 365:
            return f"{quota} limit not in sight at the current rate"
        if value <= 0:
            return f"{quota} limit reached"
        return f"{quota} limit reached in ~{_number(value)} days at the current rate"
    if kind == "accounts":
        return f"member of {_number(value)} account{'s' if value != 1 else ''}"
    if kind == "role_weight":
        return f"role weight {value:.1f}"
    if kind.startswith("property_"):
        key = describe["property"]
        if kind == "property_boolean":
            return f"{key}: {'yes' if value >= 0.5 else 'no'}"
        if kind == "property_datetime":
            return f"{key}: {_number(value)} days ago"
        if kind == "property_text":
            return f"{key}: {describe.get('value', 'other')}"
        return f"{key}: {_number(value)}" + _versus(value, median, peers)
    if kind == "signal":
        label = describe.get("label", name)
        if describe.get("signal_kind") == "ratio" and not math.isnan(value):
            return f"{label}: {round(value * 100)}%" + _versus(value, median, peers)
        if describe.get("signal_kind") == "event_count" and value <= 0:
            return f"{label}: none" + _versus(0, median, peers)
        return f"{label}: {_number(value)}" + _versus(value, median, peers)
    return f"{name}: {_number(value)}"


def pick(
    candidates: list[tuple[str, float, str]],
) -> list[dict[str, Any]]:
    """The strongest reasons: (feature, weight, text) -> up to 3 positive and 3 negative, strongest first."""
    positive = sorted((c for c in candidates if c[1] >= MIN_WEIGHT), key=lambda c: -c[1])
    negative = sorted((c for c in candidates if c[1] <= -MIN_WEIGHT), key=lambda c: c[1])
    chosen = positive[:MAX_REASONS_PER_DIRECTION] + negative[:MAX_REASONS_PER_DIRECTION]
    if not chosen and candidates:  # an entity just like its peers still gets its strongest reason
        chosen = [max(candidates, key=lambda c: abs(c[1]))]
    return [
        {"feature": feature, "text": text, "direction": "+" if weight >= 0 else "-", "weight": round(weight, 3)}
        for feature, weight, text in sorted(chosen, key=lambda c: -abs(c[1]))
    ]
