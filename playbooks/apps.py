from typing import Any

from django.apps import AppConfig


def _changes_process(tenant: Any, entities: list[tuple[str, int]]) -> None:
    from playbooks.services import changes_process

    changes_process(tenant, entities)


class PlaybooksConfig(AppConfig):
    name = "playbooks"

    def ready(self) -> None:
        import importlib

        from django.conf import settings

        from playbooks import actions, connectors  # noqa: F401 - register the built-in action types

        for module in settings.PLAYBOOK_ACTION_MODULES:
            importlib.import_module(module)
        from accounts import panels
        from playbooks.panels import playbooks_panel
        from signals import processing

        panels.register(playbooks_panel, order=60)
        # After rollups (10) and scores (100): conditions read both.
        processing.register(_changes_process, order=200)
