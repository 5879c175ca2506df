"""The scores panel of the account and user pages: each score with grade, reasons and details, and its history."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.http import HttpRequest
from django.utils import timezone

from accounts.panels import Panel
from plgapp.charts import Series, line_chart
from plgapp.models import Tenant
from scoring.models import GRADE_LETTERS, Score, ScoreHistory

KINDS = {"account": ("conversion", "churn"), "user": ("health",)}
HISTORY_DAYS = 90


def score_panel(request: HttpRequest, tenant: Tenant, entity_type: str, entity: Any) -> Panel | None:
    kinds = KINDS.get(entity_type)
    if kinds is None:
        return None
    current = Score.objects.for_tenant(tenant).filter(entity_type=entity_type, entity_id=entity.pk, kind__in=kinds)
    scores = sorted(current, key=lambda score: kinds.index(score.kind))
    since = timezone.now() - timedelta(days=HISTORY_DAYS)
    history = (
        ScoreHistory.objects.for_tenant(tenant)
        .filter(entity_type=entity_type, entity_id=entity.pk, kind__in=kinds, computed_at__gte=since)
        .order_by("computed_at")
        .values_list("kind", "computed_at", "value")
    )
    points: dict[str, list[Any]] = {kind: [] for kind in kinds}
    for kind, moment, value in history:
        points[kind].append((moment, value))
    series = [Series(kind.title(), points[kind], f"series-{n + 1}") for n, kind in enumerate(kinds)]
    chart = line_chart(series, title=f"{' and '.join(k.title() for k in kinds)} over {HISTORY_DAYS} days")
    rows = [
        {"score": score, "letter": GRADE_LETTERS.get(score.grade, ""), "details": score.details} for score in scores
    ]
    return Panel("Scores", "scoring/_score_panel.html", {"rows": rows, "chart": chart, "kinds": kinds}, "scores")
