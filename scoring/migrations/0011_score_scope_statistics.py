"""The planner is told how the score table's scope columns go together. A conversion score is always an account's,
and a tenant's share of the rows differs by kind, so PostgreSQL's default guess (the three columns independent)
put the rows of `tenant_id = … AND entity_type = 'account' AND kind = 'conversion'` at a few dozen out of 100,000.
With a few filters on top it then expected no row at all, took the PQA list's LIMIT for no help and read every
conversion score of the tenant in entity order to sort them (115-225 ms) instead of walking the conversion value
index from the top (1-2 ms). Most-common-value lists and dependencies over the three columns give it the real counts
(docs/benchmarks.md, sixteenth session). ANALYZE fills them now; autovacuum keeps them up to date."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("scoring", "0010_score_history_value")]

    operations = [
        migrations.RunSQL(
            "CREATE STATISTICS IF NOT EXISTS score_scope (mcv, dependencies) ON tenant_id, entity_type, kind FROM scoring_score;"
            " ANALYZE scoring_score",
            reverse_sql="DROP STATISTICS IF EXISTS score_scope",
        )
    ]
