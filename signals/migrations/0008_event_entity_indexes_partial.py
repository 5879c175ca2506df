"""The events' indexes by account and by user become partial: rows without an account (or without a user) are not
indexed, as no query looks for them by that column (ADR 0005, decision 11). Built concurrently under new names
before the old ones go, so ingestion is never blocked and queries are never without an index."""

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False  # CREATE / DROP INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("signals", "0007_event_no_index_on_entity_alone"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="event",
            index=models.Index(
                condition=models.Q(("account__isnull", False)),
                fields=["tenant", "account", "occurred_at"],
                name="event_account_time",
            ),
        ),
        AddIndexConcurrently(
            model_name="event",
            index=models.Index(
                condition=models.Q(("end_user__isnull", False)),
                fields=["tenant", "end_user", "occurred_at"],
                name="event_user_time",
            ),
        ),
        RemoveIndexConcurrently(model_name="event", name="event_tenant_account_time"),
        RemoveIndexConcurrently(model_name="event", name="event_tenant_user_time"),
    ]
