from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"

    def ready(self) -> None:
        from accounts import links
        from integrations.links import hubspot_links

        links.register(hubspot_links)
