"""The scores panel of the account and user pages: each score with grade, reasons and details, and its history."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.http import HttpRequest
from django.utils import timezone

from accounts.panels import Panel
from plgapp.charts import Series, line_chart
from plgapp.models import Tenant
from scoring.models import GRADE_LETTERS, Score, ScoreHistory

KINDS = {"account": ("conversion", "churn"), "user": ("health",)}
HISTORY_DAYS = 90


def held(points: list[tuple[datetime, float]]) -> list[tuple[datetime, float]]:
    """A score's recorded values as steps: each held until the next. History rows are recorded when a score moves
    (ADR 0026), so a line drawn straight from one to the next would show a slope that never was."""
    steps: list[tuple[datetime, float]] = []
    for moment, value in points:
        if steps and value != steps[-1][1]:
            steps.append((moment, steps[-1][1]))
        steps.append((moment, value))
    return steps


def score_panel(request: HttpRequest, tenant: Tenant, entity_type: str, entity: Any) -> Panel | None:
    kinds = KINDS.get(entity_type)
    if kinds is None:
        return None
    current = Score.objects.for_tenant(tenant).filter(entity_type=entity_type, entity_id=entity.pk, kind__in=kinds)
    scores = sorted(current, key=lambda score: kinds.index(score.kind))
    since = timezone.now() - timedelta(days=HISTORY_DAYS)
    recorded = ScoreHistory.objects.for_tenant(tenant).filter(entity_type=entity_type, entity_id=entity.pk,
                                                               kind__in=kinds)  # fmt: skip
    # The window's rows, and the latest row before it: the value the score held when the window opened.
    before = recorded.filter(computed_at__lt=since).order_by("kind", "-computed_at").distinct("kind")
    within = recorded.filter(computed_at__gte=since).order_by("computed_at")
    points: dict[str, list[tuple[datetime, float]]] = {kind: [] for kind in kinds}
    for kind, moment, value in [*before.values_list("kind", "computed_at", "value"),
                                *within.values_list("kind", "computed_at", "value")]:  # fmt: skip
        points[kind].append((max(moment, since), value))
    for score in scores:
        points[score.kind].append((max(score.computed_at, since), score.value))
    series = [Series(kind.title(), held(points[kind]), f"series-{n + 1}") for n, kind in enumerate(kinds)]
    chart = line_chart(series, title=f"{' and '.join(k.title() for k in kinds)} over {HISTORY_DAYS} days")
    rows = [
        {"score": score, "letter": GRADE_LETTERS.get(score.grade, ""), "details": score.details} for score in scores
    ]
    return Panel("Scores", "scoring/_score_panel.html", {"rows": rows, "chart": chart, "kinds": kinds}, "scores")
