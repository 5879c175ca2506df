"""Which index serves which read of the score table (ADR 0024): conversion scores are in their own value index
only, every other kind's in the per-kind value index. A partial index serves a query only when the planner can
prove the query's rows lie inside it, so each read that must stay an index scan is checked against its plan (with
sequential scans off: the test tenant is tiny, and only whether an index *can* serve it is in question)."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Account
from scoring import services
from scoring.models import ENTITY_OF_KIND, Score, ScoreKind
from scoring.pqls import PqlFilters, pql_page
from tests.conftest import TenantWorld


def _scores(world: TenantWorld) -> None:
    now = timezone.now()
    rows = []
    for n in range(40):
        account = Account.objects.for_tenant(world.tenant).create(external_id=f"a{n}", name=f"A{n}", stage="Trial")
        for kind in ScoreKind:
            entity_id = account.pk if ENTITY_OF_KIND[kind] == "account" else 10_000 + n
            fields = {"kind": kind, "entity_type": ENTITY_OF_KIND[kind], "entity_id": entity_id, "value": n / 40}
            rows.append(Score(tenant=world.tenant, **fields, percentile=n, grade=1 + n // 8, computed_at=now))
    Score.objects.for_tenant(world.tenant).bulk_create(rows)


def _plan(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute("EXPLAIN " + sql)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("RESET enable_seqscan")
        cursor.execute("RESET enable_bitmapscan")
    return plan


def _percentile_count_sql(world: TenantWorld, kind: ScoreKind) -> str:
    """The statement that counts the stored scores below new ones (incremental rescoring's percentiles)."""
    stored = services._stored(world.tenant, kind, None)
    with CaptureQueriesContext(connection) as queries:
        services._ranks_among_stored(world.tenant, kind, stored.ids[:3], np.array([0.2, 0.5, 0.9]), stored)
    (statement,) = [query["sql"] for query in queries if "width_bucket" in query["sql"]]
    return statement


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "index"),
    [
        (ScoreKind.CONVERSION, "score_conversion_value"),
        (ScoreKind.CHURN, "score_kind_value"),
        (ScoreKind.HEALTH, "score_kind_value"),
        (ScoreKind.CHAMPION, "score_kind_value"),
    ],
)
def test_each_kinds_percentile_count_is_an_index_only_scan_of_its_value_index(
    tenant_a: TenantWorld, kind: ScoreKind, index: str
) -> None:
    _scores(tenant_a)
    plan = _plan(_percentile_count_sql(tenant_a, kind))
    assert f"Index Only Scan using {index} on scoring_score" in plan, plan


@pytest.mark.django_db
def test_the_pqa_list_walks_the_conversion_value_index(tenant_a: TenantWorld) -> None:
    _scores(tenant_a)
    with CaptureQueriesContext(connection) as queries:
        page = pql_page(tenant=tenant_a.tenant, filters=PqlFilters(), cursor=None, limit=10, now=timezone.now())
    assert len(page.rows) == 10
    (ranked,) = [query["sql"] for query in queries if "ORDER BY s.value" in query["sql"]]
    assert "score_conversion_value" in _plan(ranked)


@pytest.mark.django_db
def test_conversion_scores_are_not_in_the_per_kind_value_index(tenant_a: TenantWorld) -> None:
    _scores(tenant_a)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'scoring_score' "
            "AND indexname IN ('score_kind_value', 'score_conversion_value')"
        )
        definitions = dict(cursor.fetchall())
    assert "WHERE (NOT ((kind)::text = 'conversion'::text))" in definitions["score_kind_value"]
    assert "WHERE ((kind)::text = 'conversion'::text)" in definitions["score_conversion_value"]
