from django.apps import AppConfig


class SignalsConfig(AppConfig):
    name = "signals"

    def ready(self) -> None:
        from signals import rollups  # noqa: F401 - registers the rollup processor (signals.processing)
