"""Transparent rule-based scores: what a tenant gets before it has enough labels to train a model, and the
baseline every trained model must beat. Each score is a weighted mean of a few 0-1 components; a
component's reason weight is how far it lifts or lowers this entity against the average one. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

Transform = Callable[[np.ndarray], np.ndarray]


def _rank(values: np.ndarray) -> np.ndarray:
    clean = np.where(np.isnan(values), -np.inf, values)
    if len(clean) <= 1:
        return np.full(len(clean), 0.5)
    return (rankdata(clean, method="average") - 1) / (len(clean) - 1)


def _as_is(values: np.ndarray) -> np.ndarray:
    return np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0)


def _recency(days: float) -> Transform:
    return lambda values: np.exp(-np.nan_to_num(values, nan=3650.0) / days)


def _staleness(days: float) -> Transform:
    return lambda values: np.clip(np.nan_to_num(values, nan=3650.0) / days, 0.0, 1.0)


def _falling(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(2.0 * np.nan_to_num(values, nan=0.0)))


def _inverse(transform: Transform) -> Transform:
    return lambda values: 1.0 - transform(values)


@dataclass(frozen=True)
class Component:
    feature: str
    weight: float
    transform: Transform


RULES: dict[str, Sequence[Component]] = {
    # Intensity over totals: a trial's totals mostly tell its age, and a trial that has not converted after
    # weeks rarely does; how busy it is per day, how fast its team grows and whether activity is rising do tell.
    "conversion": (
        Component("events_per_day", 0.30, _rank),
        Component("key_events_per_seat_day", 0.10, _rank),
        Component("seats_per_week", 0.20, _rank),
        Component("trend_30d", 0.10, _rank),
        Component("age_days", 0.20, _recency(30)),
        Component("days_since_last_active", 0.10, _recency(7)),
    ),
    "churn": (
        Component("events_30d", 0.35, _inverse(_rank)),
        Component("trend_30d", 0.25, _falling),
        Component("days_since_last_active", 0.25, _staleness(30)),
        Component("active_seat_share", 0.15, _inverse(_as_is)),
    ),
    "health": (
        Component("days_since_last_active", 0.50, _recency(7)),
        Component("events_7d", 0.30, _rank),
        Component("active_days_30d", 0.20, _rank),
    ),
}


def signal_components(describe: dict[str, dict[str, Any]], kind: str) -> list[Component]:
    """The tenant's signals weighted for `kind` (from the feature descriptions signal features carry): each
    counts by its rank among the entities scored; a negative weight means more of it lowers the score."""
    components = []
    for name, about in sorted(describe.items()):
        weight = float(about.get("weights", {}).get(kind, 0.0)) if about.get("kind") == "signal" else 0.0
        if weight:
            components.append(Component(name, abs(weight), _rank if weight > 0 else _inverse(_rank)))
    return components


@dataclass
class RuleScores:
    values: np.ndarray
    features: list[str]
    contributions: np.ndarray  # rows x components


def rule_scores(kind: str, numbers: dict[str, np.ndarray], size: int, extra: Sequence[Component] = ()) -> RuleScores:
    """Score `size` entities from their raw feature numbers; `extra` adds the tenant's weighted signals."""
    components = [*RULES[kind], *extra]
    usable = [c for c in components if c.feature in numbers]
    if not usable or not size:
        return RuleScores(np.full(size, 0.5), [], np.zeros((size, 0)))
    total = sum(c.weight for c in usable)
    parts = np.column_stack([c.transform(np.asarray(numbers[c.feature], dtype=float)) for c in usable])
    weights = np.array([c.weight for c in usable]) / total
    values = parts @ weights
    contributions = (parts - parts.mean(axis=0)) * weights
    return RuleScores(values=np.clip(values, 0.0, 1.0), features=[c.feature for c in usable],
                      contributions=contributions)  # fmt: skip
