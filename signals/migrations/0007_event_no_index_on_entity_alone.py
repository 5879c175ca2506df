"""Events lose their indexes on end_user_id and account_id alone (signals.models): the services delete a user's or
account's events by tenant, which the tenant-led indexes serve, instead of Django's cascade by the column alone."""

import django.db.models.deletion
from django.db import migrations, models

from plgapp.migration_ops import drop_column_index


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0005_dirty_entity_fields_changed"),
        ("signals", "0006_no_index_on_tenant_alone"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="event",
                    name="account",
                    field=models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="accounts.account",
                    ),
                ),
                migrations.AlterField(
                    model_name="event",
                    name="end_user",
                    field=models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="accounts.enduser",
                    ),
                ),
            ],
            database_operations=[
                drop_column_index("signals", "account_id", "event"),
                drop_column_index("signals", "end_user_id", "event"),
            ],
        ),
    ]
