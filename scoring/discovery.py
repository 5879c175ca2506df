"""Signal discovery (DESIGN §10): for each candidate feature, how those who converted (churned, stayed
active) differ from those who did not — means, spread, a significance test, lift — ranked, so marketers
choose value metrics with evidence. Built from the same labelled snapshots as training.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score

from plgapp.models import Tenant
from scoring.datasets import training_set
from scoring.reasons import PEERS
from signals.features import FeatureSpec, key_events_of, load_history

MAX_FEATURES = 60


def _stats(values: np.ndarray) -> dict[str, float | None]:
    if not len(values):
        return {"mean": None, "median": None, "std": None}
    return {
        "mean": round(float(np.mean(values)), 4),
        "median": round(float(np.median(values)), 4),
        "std": round(float(np.std(values)), 4),
    }


def feature_evidence(x: np.ndarray, y: np.ndarray, columns: list[str]) -> list[dict[str, Any]]:
    """One row per column, strongest evidence first (pure)."""
    rows: list[dict[str, Any]] = []
    base = float(y.mean()) if len(y) else 0.0
    for n, column in enumerate(columns):
        values = x[:, n]
        known = ~np.isnan(values)
        v, labels = values[known], y[known]
        positive, negative = v[labels == 1], v[labels == 0]
        if len(positive) < 2 or len(negative) < 2 or np.all(v == v[0]):
            continue
        p_value = float(mannwhitneyu(positive, negative, alternative="two-sided").pvalue)
        auc = float(roc_auc_score(labels, v))
        high = v > np.median(v)
        if not high.any() or high.all():
            high = v >= np.median(v)
        rate_high = float(labels[high].mean()) if high.any() else math.nan
        rows.append(
            {
                "feature": column,
                "positive": _stats(positive),
                "negative": _stats(negative),
                "p_value": p_value,
                "auc": round(auc, 4),
                "direction": "+" if auc >= 0.5 else "-",
                "lift_above_median": round(rate_high / base, 3) if base > 0 and rate_high == rate_high else None,
                "rows_known": int(known.sum()),
            }
        )
    rows.sort(key=lambda row: (-abs(row["auc"] - 0.5), row["p_value"]))
    return rows[:MAX_FEATURES]


def discovery_report(*, tenant: Tenant, kind: str, now: datetime) -> dict[str, Any]:
    from scoring.services import _candidates, _earliest, working_settings

    settings = working_settings(tenant=tenant)
    history = load_history(tenant)
    key_events = key_events_of(history, settings["key_events"])
    dataset = training_set(history, settings, kind, now, _candidates(tenant, kind), key_events, _earliest(tenant))
    if not dataset.tables:
        return {"kind": kind, "rows": 0, "positives": 0, "features": [],
                "note": "no labelled snapshot yet: the history is shorter than the horizon"}  # fmt: skip
    spec = FeatureSpec.fit(dataset.tables)
    x, y = dataset.matrix(spec), dataset.labels
    return {
        "kind": kind,
        "positive_label": PEERS.get(kind, "positive"),
        "rows": len(y),
        "positives": int(y.sum()),
        "snapshots": [at.date().isoformat() for at in dataset.snapshots],
        "features": feature_evidence(x, y, spec.columns),
    }
