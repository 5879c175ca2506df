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


def size_segment(value: float, segments: list[dict[str, Any]]) -> dict[str, Any] | None:
    if math.isnan(value):
        return None
    for segment in segments:
        if segment.get("max") is None or value <= float(segment["max"]):
            return segment
    return None


def qualification(raw: RawFeatures, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Per account of `raw`: activation, each milestone reached or not, size segment, threshold, qualified."""
    sizes = settings["size_segments"]
    segments = list(sizes["segments"])
    strictest = max(float(segment["activation_threshold"]) for segment in segments)
    size_values = raw.numbers.get(f"prop:{sizes['property']}", np.full(len(raw.ids), np.nan))
    activation = raw.numbers.get("activation", np.full(len(raw.ids), np.nan))
    milestones = [milestone["name"] for milestone in settings.get("milestones", [])]
    columns = [raw.numbers.get(f"milestone:{name}", np.zeros(len(raw.ids))) for name in milestones]
    result = []
    for row in range(len(raw.ids)):
        segment = size_segment(float(size_values[row]), segments)
        threshold = float(segment["activation_threshold"]) if segment is not None else strictest
        value = float(activation[row])
        result.append({
            "activation": None if math.isnan(value) else round(value, 4),
            "milestones": [{"name": name, "reached": bool(column[row] >= 0.5)}
                           for name, column in zip(milestones, columns, strict=True)],
            "size_segment": segment["name"] if segment is not None else None,
            "activation_threshold": threshold,
            "product_qualified": (not math.isnan(value)) and value >= threshold,
        })  # fmt: skip
    return result
