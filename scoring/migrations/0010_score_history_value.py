"""Each score keeps the value and grade of its latest history row: history rows are recorded when a score moves
from those, no longer once a day for every score (ADR 0026). NULL until the next rescore records one."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("scoring", "0009_score_fillfactor"),
    ]

    operations = [
        migrations.AddField(
            model_name="score",
            name="history_grade",
            field=models.PositiveSmallIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="score",
            name="history_value",
            field=models.FloatField(blank=True, editable=False, null=True),
        ),
    ]
