from django.apps import AppConfig


class SignalsConfig(AppConfig):
    name = "signals"

    def ready(self) -> None:
        from accounts import panels
        from signals import rollups  # noqa: F401 - registers the rollup processor (signals.processing)
        from signals.panels import timeline_panel

        panels.register(timeline_panel, order=50)
