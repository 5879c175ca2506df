"""Score pages are filled to half at most: every rescore rewrites each score, and the new version then fits on the
old one's page. Most scores keep their value from one rescore to the next (a tree model's probability moves only
when a feature crosses a split), and an update that changes no indexed column and stays on its page is a HOT
update: no entry in any of the table's indexes. Rows already stored move to half-filled pages as they are next
rewritten (ADR 0026)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("scoring", "0008_score_value_indexes_by_kind")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE scoring_score SET (fillfactor = 50)",
            reverse_sql="ALTER TABLE scoring_score RESET (fillfactor)",
        )
    ]
