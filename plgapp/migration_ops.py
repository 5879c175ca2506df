"""Operations shared by migrations."""

from __future__ import annotations

from typing import Any

from django.db import migrations


def drop_tenant_index(app_label: str, *model_names: str) -> migrations.RunPython:
    """Drop the index Django made for the tenant foreign key alone (every tenant table leads its own indexes with
    tenant_id). Only the index: altering the field in the database would drop and re-add the foreign key, checking
    every row of the biggest tables again while they are locked."""
    return drop_column_index(app_label, "tenant_id", *model_names)


def drop_column_index(app_label: str, column: str, *model_names: str) -> migrations.RunPython:
    """Drop the index Django made for a foreign key column alone, by the name Django gave it (reversible)."""

    def run(apps: Any, schema_editor: Any, template: str) -> None:
        for model_name in model_names:
            table = apps.get_model(app_label, model_name)._meta.db_table
            name = schema_editor._create_index_name(table, [column])  # the name Django gave it
            schema_editor.execute(template.format(name=schema_editor.quote_name(name), table=table, column=column))

    drop, create = "DROP INDEX IF EXISTS {name}", "CREATE INDEX IF NOT EXISTS {name} ON {table} ({column})"
    return migrations.RunPython(
        lambda apps, schema_editor: run(apps, schema_editor, drop),
        lambda apps, schema_editor: run(apps, schema_editor, create),
    )
