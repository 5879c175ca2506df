"""Who is scored for each kind, and labelled training rows over weekly point-in-time snapshots.

- conversion: accounts in a trial stage at the snapshot; label = reached a paying stage within the horizon.
- churn: accounts in a paying stage; label = reached a churned stage within the horizon.
- health: users seen before the snapshot; label = active (configured activity events, or any) within it.

A snapshot is labelled only once its horizon has fully passed, so no label is ever half-known.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import numpy as np

from accounts.models import EntityType
from scoring.config import stage_group
from scoring.models import ENTITY_OF_KIND, ScoreKind
from signals.features import (
    FeatureSpec,
    History,
    RawFeatures,
    account_features,
    snapshot_day,
    user_features,
    visible_before,
)
from signals.signal_features import signal_features

MAX_SNAPSHOTS = 52
SNAPSHOT_STEP_DAYS = 7
STAGE_GROUP_OF_KIND: dict[str, tuple[str, str]] = {
    ScoreKind.CONVERSION: ("trial", "paying"),
    ScoreKind.CHURN: ("paying", "churned"),
}


def midnight(at: datetime) -> datetime:
    return datetime.combine(at.astimezone(UTC).date(), time(0), tzinfo=UTC)


def horizon_days(settings: dict[str, Any], kind: str) -> int:
    return int(settings["models"].get(kind, {}).get("horizon_days", 30))


def eligible(history: History, settings: dict[str, Any], kind: str, at: datetime, candidates: list[int]) -> list[int]:
    """The entities of `candidates` that a score of `kind` is about at instant `at`."""
    if kind in STAGE_GROUP_OF_KIND:
        wanted = STAGE_GROUP_OF_KIND[kind][0]
        stages = history.stages_as_of(EntityType.ACCOUNT, np.asarray(candidates, dtype=np.int64), at).tolist()
        # a tenant has a handful of stage names, and many accounts
        groups = {stage: stage_group(settings, stage) for stage in set(stages)}
        return [pk for pk, stage in zip(candidates, stages, strict=True) if groups[stage] == wanted]
    if kind == ScoreKind.HEALTH:
        cutoff = visible_before(history, at)
        first = history.first_day.lookup(EntityType.USER, np.asarray(candidates, dtype=np.int64), cutoff)
        return [pk for pk, day in zip(candidates, first.tolist(), strict=True) if day < cutoff]
    raise ValueError(f"no dataset for {kind}")


def labels(history: History, settings: dict[str, Any], kind: str, at: datetime, ids: list[int]) -> np.ndarray:
    """1 where the outcome of `kind` happened in (at, at + horizon]."""
    horizon = timedelta(days=horizon_days(settings, kind))
    if kind in STAGE_GROUP_OF_KIND:
        target = STAGE_GROUP_OF_KIND[kind][1]
        result = np.zeros(len(ids), dtype=int)
        for n, pk in enumerate(ids):
            for changed_at, to_stage in history.stages.get((EntityType.ACCOUNT, pk), ()):
                if at <= changed_at < at + horizon and stage_group(settings, to_stage) == target:
                    result[n] = 1
                    break
        return result
    if kind == ScoreKind.HEALTH:
        rollups = history.user_rollups
        cutoff = snapshot_day(at)
        wanted = set(settings["models"]["health"].get("activity_events") or rollups.names)
        names = np.array([rollups.names[i] in wanted for i in range(len(rollups.names))], dtype=bool)
        if not len(rollups.count):
            return np.zeros(len(ids), dtype=int)
        mask = (rollups.day >= cutoff) & (rollups.day < cutoff + horizon.days) & names[rollups.name]
        active = set(rollups.entity[mask].tolist())
        return np.array([1 if pk in active else 0 for pk in ids], dtype=int)
    raise ValueError(f"no labels for {kind}")


def features(
    history: History, settings: dict[str, Any], kind: str, at: datetime, ids: list[int], key_events: list[str]
) -> RawFeatures:
    """Features of `ids` at `at`, with the tenant's signals (`settings["signals"]`, attached by the services)."""
    if kind == ScoreKind.HEALTH:
        raw = user_features(history, ids, at, settings, key_events)
    else:
        raw = account_features(history, ids, at, settings, key_events)
    signal_features(raw, history, ENTITY_OF_KIND[ScoreKind(kind)], at, settings.get("signals", ()))
    return raw


@dataclass
class Dataset:
    tables: list[RawFeatures]
    labels: np.ndarray
    snapshot_of_row: np.ndarray  # date ordinal of each row's snapshot
    snapshots: list[datetime]

    def matrix(self, spec: FeatureSpec) -> np.ndarray:
        return np.vstack([spec.matrix(table) for table in self.tables]) if self.tables else np.zeros((0, 0))


def training_set(
    history: History,
    settings: dict[str, Any],
    kind: str,
    now: datetime,
    candidates: list[int],
    key_events: list[str],
    earliest: datetime | None,
) -> Dataset:
    """Rows of every weekly snapshot whose horizon has passed, newest first back to the earliest data."""
    last = midnight(now) - timedelta(days=horizon_days(settings, kind))
    tables, all_labels, snapshot_rows, snapshots = [], [], [], []
    for k in range(MAX_SNAPSHOTS):
        at = last - timedelta(days=SNAPSHOT_STEP_DAYS * k)
        if earliest is not None and at <= earliest + timedelta(days=SNAPSHOT_STEP_DAYS):
            break
        ids = eligible(history, settings, kind, at, candidates)
        if not ids:
            continue
        tables.append(features(history, settings, kind, at, ids, key_events))
        all_labels.append(labels(history, settings, kind, at, ids))
        snapshot_rows.append(np.full(len(ids), at.date().toordinal()))
        snapshots.append(at)
    if not tables:
        return Dataset([], np.zeros(0, dtype=int), np.zeros(0, dtype=np.int64), [])
    return Dataset(
        tables=tables[::-1],
        labels=np.concatenate(all_labels[::-1]),
        snapshot_of_row=np.concatenate(snapshot_rows[::-1]),
        snapshots=snapshots[::-1],
    )
