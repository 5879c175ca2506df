"""Tenant-defined signals (signals.models.Signal) as point-in-time features, from a loaded History.

Each signal becomes the number column `signal:<key>` of an account or user feature table: event counts read
rollup days strictly before the snapshot's day, properties their value set strictly before the snapshot
instant — the same rule as every other feature (signals.features). Pure: plain data in, arrays out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np

from signals.features import History, RawFeatures, Rollups, entity_slots, property_column, visible_before

MAX_WINDOW_DAYS = 90  # scoring loads rollups this far back (and more): a longer window would read a partial count


def signal_features(
    raw: RawFeatures, history: History, entity_type: str, at: datetime, signals: Sequence[dict[str, Any]]
) -> None:
    """Add a `signal:<key>` column to `raw` for each signal about `entity_type` ("account" or "user")."""
    mine = [signal for signal in signals if signal["entity_type"] == entity_type]
    if not mine:
        return
    ids = raw.ids
    rollups = history.account_rollups if entity_type == "account" else history.user_rollups
    for signal in mine:
        name = f"signal:{signal['key']}"
        if signal["kind"] == "event_count":
            column = _event_count(
                rollups, ids, visible_before(history, at), signal["event"], int(signal["window_days"])
            )
        elif signal["kind"] == "property" and signal.get("equals") is not None:
            values = property_column(history, entity_type, signal["property"], ids, at).tolist()
            column = np.array([_property_value(value, signal["equals"]) for value in values], dtype=float)
        elif signal["kind"] == "property":
            column = _numbers(history, entity_type, signal["property"], ids, at)
        else:
            top = _numbers(history, entity_type, signal["numerator"], ids, at)
            bottom = _numbers(history, entity_type, signal["denominator"], ids, at)
            with np.errstate(divide="ignore", invalid="ignore"):
                column = np.where(bottom == 0, math.nan, top / bottom)  # NaN on either side stays NaN
        raw.numbers[name] = column.astype(float)
        raw.describe[name] = {
            "kind": "signal",
            "signal_kind": signal["kind"],
            "label": signal["name"],
            "weights": dict(signal.get("weights") or {}),
        }


def _event_count(rollups: Rollups, ids: np.ndarray, cutoff: int, event: str, window: int) -> np.ndarray:
    counts = np.zeros(len(ids))
    if not len(rollups.count) or event not in rollups.names or not len(ids):
        return counts
    n = rollups.names.index(event)
    mask = (rollups.name == n) & (rollups.day < cutoff) & (rollups.day >= cutoff - window)
    slots = entity_slots(rollups.entity[mask], np.asarray(ids, dtype=np.int64))
    keep = slots >= 0
    np.add.at(counts, slots[keep], rollups.count[mask][keep])
    return counts


def _numbers(history: History, entity_type: str, key: str, ids: np.ndarray, at: datetime) -> np.ndarray:
    """`_number` of a property's values as of `at`, on the whole column: numbers and booleans (1 / 0) as floats,
    anything else or a non-finite number NaN."""
    values = property_column(history, entity_type, key, ids, at, "number")
    return np.where(np.isfinite(values), values, math.nan)


def _property_value(value: Any, equals: Any) -> float:
    """1 where the value equals `equals` (texts regardless of case and surrounding spaces), 0 where it does not,
    NaN where the property is not set."""
    if value is None:
        return math.nan
    if isinstance(value, str) and isinstance(equals, str):
        return 1.0 if value.strip().lower() == equals.strip().lower() else 0.0
    return 1.0 if value == equals else 0.0
