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


def _estimated_rows(sql: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql)
        (plan,) = cursor.fetchone()
    return int(plan[0]["Plan"]["Plan Rows"])


@pytest.mark.django_db(transaction=True)
def test_the_planner_knows_that_conversion_scores_are_accounts(tenant_a: TenantWorld) -> None:
    """Without statistics over the scope columns the planner multiplied the shares of `entity_type = 'account'` and
    `kind = 'conversion'` as if independent, expected a fraction of the tenant's conversion scores, and on the
    benchmark's tenant sorted all of them instead of walking the value index (migration scoring/0011)."""
    import psycopg2
    from django.conf import settings

    _scores(tenant_a)
    owner = settings.DATABASE_OWNER
    analyze = psycopg2.connect(
        dbname=connection.settings_dict["NAME"], user=owner["USER"], password=owner.get("PASSWORD") or None,
        host=owner.get("HOST") or None, port=owner.get("PORT") or None,
    )  # fmt: skip
    try:
        analyze.autocommit = True
        with analyze.cursor() as cursor:
            cursor.execute("ANALYZE scoring_score")
    finally:
        analyze.close()
    tenant_id = tenant_a.tenant.pk
    actual = Score.objects.for_tenant(tenant_a.tenant).filter(kind=ScoreKind.CONVERSION, entity_type="account").count()
    estimated = _estimated_rows(
        f"SELECT 1 FROM scoring_score WHERE tenant_id = {tenant_id} AND entity_type = 'account' AND kind = 'conversion'"  # noqa: S608
    )
    assert actual == 40
    assert estimated >= 0.8 * actual, f"estimated {estimated} rows of {actual}"
