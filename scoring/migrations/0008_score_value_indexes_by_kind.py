"""Conversion scores leave the per-kind value index: their own value index (the PQA list's order) serves their
percentile counts as well, and a full rescore's conversion upsert pays for one value index fewer (ADR 0024). Built
concurrently under new names before the old ones go, so scoring is never blocked and queries are never without an
index."""

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False  # CREATE / DROP INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("plgapp", "0003_no_index_on_tenant_alone"),
        ("scoring", "0007_scorehistory_no_db_foreign_key"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="score",
            index=models.Index(
                condition=models.Q(("kind", "conversion"), _negated=True),
                fields=["tenant", "kind", "value"],
                name="score_kind_value",
            ),
        ),
        AddIndexConcurrently(
            model_name="score",
            index=models.Index(
                condition=models.Q(("kind", "conversion")),
                fields=["tenant", "value", "entity_id"],
                name="score_conversion_value",
            ),
        ),
        RemoveIndexConcurrently(model_name="score", name="score_tenant_kind_value"),
        RemoveIndexConcurrently(model_name="score", name="score_conversion_rank"),
    ]
