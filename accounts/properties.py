"""Point-in-time property merging, pure: a write applies to a key only if it is not older than the
write that set the key's current value. History (PropertyChange) records every write regardless."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class MergedProperties:
    properties: dict[str, Any]
    times: dict[str, str]
    changed: bool


def merge_properties(
    current: dict[str, Any], times: dict[str, str], updates: dict[str, Any], at: datetime
) -> MergedProperties:
    """Apply `updates` written at `at`; `None` deletes a key. Times are ISO strings (comparable in UTC)."""
    stamp = at.isoformat()
    properties = dict(current)
    new_times = dict(times)
    changed = False
    for key, value in updates.items():
        previous = new_times.get(key)
        if previous is not None and datetime.fromisoformat(previous) > at:
            continue  # a newer write already set this key
        new_times[key] = stamp
        if value is None:
            if key in properties:
                del properties[key]
                changed = True
        elif properties.get(key) != value or key not in properties:
            properties[key] = value
            changed = True
    return MergedProperties(properties=properties, times=new_times, changed=changed or new_times != times)


def combine_records(
    first: tuple[dict[str, Any], dict[str, str]], second: tuple[dict[str, Any], dict[str, str]]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Properties of two records that turned out to be one: per key, the later write wins."""
    properties, times = dict(first[0]), dict(first[1])
    for key, stamp in second[1].items():
        if key not in times or datetime.fromisoformat(stamp) >= datetime.fromisoformat(times[key]):
            times[key] = stamp
            if key in second[0]:
                properties[key] = second[0][key]
            else:
                properties.pop(key, None)
    for key, value in second[0].items():  # keys without a recorded time (should not happen) fill gaps
        properties.setdefault(key, value)
    return properties, times
