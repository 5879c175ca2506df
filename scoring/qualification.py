"""Product-qualified accounts (PQA): activation against the threshold of the account's size segment. Pure.

Seed guidance (issue 4): small companies should reach ~75% of the milestones before sales calls, mid-size
60-80%, large 25-50% — big accounts are worth a call on less evidence. An account whose size is unknown is
held to the strictest threshold, so a missing property never makes an account look qualified.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from signals.features import RawFeatures


def qualification(raw: RawFeatures, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Per account of `raw`: activation, each milestone reached or not, size segment, threshold, qualified.
    Worked out column by column; accounts with the same outcome share one dict, to be read, not changed."""
    size = len(raw.ids)
    sizes = settings["size_segments"]
    segments = list(sizes["segments"])
    strictest = max(float(segment["activation_threshold"]) for segment in segments)
    size_values = np.asarray(raw.numbers.get(f"prop:{sizes['property']}", np.full(size, np.nan)), dtype=float)
    activation = np.asarray(raw.numbers.get("activation", np.full(size, np.nan)), dtype=float)
    milestones = [milestone["name"] for milestone in settings.get("milestones", [])]
    # Each account's segment: the first whose max its size does not exceed (none for an unknown size).
    segment_of = np.full(size, -1, dtype=np.int64)
    for n, segment in enumerate(segments):
        fits = True if segment.get("max") is None else size_values <= float(segment["max"])
        segment_of[(segment_of < 0) & ~np.isnan(size_values) & fits] = n
    names = [segment["name"] for segment in segments] + [None]
    thresholds = np.array([float(segment["activation_threshold"]) for segment in segments] + [strictest])
    known = ~np.isnan(activation)
    qualified = (known & (activation >= np.where(known, thresholds[segment_of], np.inf))).tolist()
    reached = np.column_stack(
        [np.asarray(raw.numbers.get(f"milestone:{name}", np.zeros(size))) >= 0.5 for name in milestones]
        or [np.zeros(size, dtype=bool)]
    )[:, : len(milestones)]
    # Accounts repeat a handful of outcomes (activation is a share of the milestones): one dict per outcome, shared.
    outcomes: dict[tuple[Any, ...], dict[str, Any]] = {}
    result = []
    for value, segment, is_qualified, row in zip(
        activation.tolist(), segment_of.tolist(), qualified, map(tuple, reached.tolist()), strict=True
    ):
        key = (value if value == value else None, segment, is_qualified, row)  # NaN: never equal to itself
        found = outcomes.get(key)
        if found is None:
            found = outcomes[key] = {
                "activation": None if math.isnan(value) else round(value, 4),
                "milestones": [{"name": name, "reached": hit} for name, hit in zip(milestones, row, strict=True)],
                "size_segment": names[segment],
                "activation_threshold": float(thresholds[segment]),
                "product_qualified": is_qualified,
            }
        result.append(found)
    return result
