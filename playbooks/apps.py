from typing import Any

from django.apps import AppConfig


def _changes_process_unscored(tenant: Any, entities: list[tuple[str, int]]) -> None:
    from playbooks.services import changes_process

    changes_process(tenant, entities, scores=False)


def _changes_process_scored(tenant: Any, entities: list[tuple[str, int]]) -> None:
    from playbooks.services import changes_process

    changes_process(tenant, entities, scores=True)


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
        # Playbooks that read no score after the rollups (10), committed before the rescore (100) starts; those
        # that read scores after it (ADR 0028).
        processing.register(_changes_process_unscored, order=50)
        processing.register(_changes_process_scored, order=200)
