from django.apps import AppConfig


class PlgappConfig(AppConfig):
    name = "plgapp"
    verbose_name = "Tenancy core"

    def ready(self) -> None:
        from plgapp import checks, schema  # noqa: F401 - registers the deploy check and the OpenAPI auth extensions
